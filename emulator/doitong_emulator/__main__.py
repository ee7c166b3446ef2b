"""``python -m doitong_emulator``: the same as ``doitong-emulator``."""

from __future__ import annotations

import sys

from doitong_emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
