"""Rebuild the embedded default's base checkpoint (fsray/assets/base_l2_d64.pth).

Same as `fsray pretrain`; the corpus and the training loop live in fsray/commands/pretrain.py.
Usage: .venv/bin/python scripts/pretrain_base.py [--steps N] [--out PATH]
"""

import sys

from fsray.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
