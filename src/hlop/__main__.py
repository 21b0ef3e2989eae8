"""``python -m hlop``: the command line (what ``torchrun ... -m hlop train`` starts)."""

import sys

from hlop.tools.cli import main

sys.exit(main())
