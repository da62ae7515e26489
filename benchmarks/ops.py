"""``python -m benchmarks.ops``: the same benchmark as ``adasparse bench ops``."""

import sys

from adasparse.bench.ops import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
