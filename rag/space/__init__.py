"""What only a running Space has: per-browser-session collections and their build line, in-Space builds, and
keeping a build (publish to the visitor's repo, duplicate the Space, serve it). Sits above the pipeline.
"""

from rag.space.sessions import SessionRegistry, SessionState

__all__ = ["SessionRegistry", "SessionState"]
