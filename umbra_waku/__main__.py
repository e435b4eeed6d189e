"""``python -m umbra_waku``: the umbra-waku command line (see :mod:`umbra_waku.cli`)."""

import sys

from umbra_waku.cli import main

if __name__ == "__main__":
    sys.exit(main())
