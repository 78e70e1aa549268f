"""``python -m bitsearch`` = the ``bitsearch`` command."""

import sys

from bitsearch.cli import main

sys.exit(main())
