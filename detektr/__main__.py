"""`python -m detektr`: the same as the `detektr` command."""

import sys

from .cli import main

sys.exit(main())
