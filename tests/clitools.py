"""What the CLI tests share."""

from attnflow.cli import main


def run_cli(argv, capsys):
    """`attnflow <argv>` in this process: `(exit status, captured stdout and stderr)`."""
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr()
