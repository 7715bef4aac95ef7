"""The names the command line offers as choices, importable without JAX, so that `--help` and a
bad option are answered before anything heavy is imported. The tables they name (`fields.MODELS`,
the studies' weights, the concentration sweep's initial tokens) are checked against them in the
tests."""

# every model of `fields.MODELS`, in its order
MODELS = ("SA", "USA", "PreLN", "PeriLN", "nGPT", "Sinkhorn", "CausalSA", "Hardmax", "MultiHead")
# the models with a closed-form kernel (`fields.KINDS`)
CLOSED_FORM = ("SA", "USA")
# the weight ensembles of `phase_diagram`
WEIGHTS = ("identity", "ginibre_psd", "goe_psd", "ginibre_qk", "goe_qk", "ginibre_qk_published")
# the initial tokens of `concentration`
INITS = ("ball", "gaussian")
