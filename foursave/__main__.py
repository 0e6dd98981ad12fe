"""``python -m foursave`` is the ``foursave`` command."""

import sys

from foursave.cli import main

sys.exit(main())
