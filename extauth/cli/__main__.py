"""``python -m extauth.cli``."""

import sys

from extauth.cli import main

sys.exit(main())
