"""``python -m vidlight``: the command line, as ``vidlight``."""

from vidlight.cli import main

if __name__ == "__main__":
    main(prog_name="vidlight")
