"""``python -m umbra_waku.bridge [OPTIONS]``: the same as ``umbra-waku bridge [OPTIONS]``."""

import sys

from umbra_waku.cli import main

if __name__ == "__main__":
    sys.exit(main(["bridge", *sys.argv[1:]]))
