"""The exception types the library raises; their messages are written to be shown to a user."""

from __future__ import annotations


class RagError(Exception):
    """Base class: anything the Space can explain to its user in one sentence."""


class InvalidInput(RagError):
    """A query, an image or a parameter that cannot be served (empty text, not an image, bad k)."""


class CollectionError(RagError):
    """A collection that cannot be loaded or built: missing file, checksum, version, model mismatch."""
