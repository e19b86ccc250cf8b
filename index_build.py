#!/usr/bin/env python
"""Build, verify and publish a searchable image collection: ``python index_build.py --help`` lists the flags.

The command lives in rag.ingest.cli, so that an installed package has it too, as the ``rag-build`` console script
(pyproject.toml); this file runs the same parser and main(), with the same output and exit codes.
"""

from __future__ import annotations

import sys

from rag.ingest.cli import main, make_source, parse_args, verify

__all__ = ["main", "make_source", "parse_args", "verify"]

if __name__ == "__main__":
    sys.exit(main())
