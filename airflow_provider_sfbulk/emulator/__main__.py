"""``python -m airflow_provider_sfbulk.emulator``."""

from __future__ import annotations

import sys

from airflow_provider_sfbulk.emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
