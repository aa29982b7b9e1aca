#!/usr/bin/env python3
"""Entry point equivalent to the ``streamclf`` command: ``python run_stream.py COMMAND ...``."""

import sys

from streamclf.cli import main

if __name__ == "__main__":
    sys.exit(main())
