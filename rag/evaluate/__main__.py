"""``python -m rag.evaluate``."""

import sys

from .cli import main

sys.exit(main())
