#!/usr/bin/env python3
"""``python run_stream.py [--config FILE] [--source SRC] ...`` = ``streamclf run ...``."""

import sys

from streamclf.cli.main import console_main

if __name__ == "__main__":
    console_main(["run", *sys.argv[1:]])
