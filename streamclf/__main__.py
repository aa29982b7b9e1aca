"""``python -m streamclf`` = the ``streamclf`` command."""

import sys

from streamclf.cli import main

sys.exit(main())
