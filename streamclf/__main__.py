"""``python -m streamclf`` = the ``streamclf`` command."""

from streamclf.cli.main import console_main

console_main()
