"""``python -m rag.finetune``: see rag.finetune.cli."""

import sys

from rag.finetune.cli import main

sys.exit(main())
