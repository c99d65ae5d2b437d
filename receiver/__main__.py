"""``python -m receiver``: the same command line as ``loaxa-receiver``."""

from receiver.cli import main

if __name__ == "__main__":
    main(prog_name="loaxa-receiver")
