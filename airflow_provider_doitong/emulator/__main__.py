"""``python -m airflow_provider_doitong.emulator``: the same as ``doitong-emulator``."""

from __future__ import annotations

import sys

from airflow_provider_doitong.emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
