"""``python -m streamclf`` = the ``streamclf`` command."""

from streamclf.cli import console_main

console_main()
