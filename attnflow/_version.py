"""The installed version of attnflow (from the package metadata)."""

import importlib.metadata

try:
    __version__ = importlib.metadata.version("attnflow")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"
