"""What a failure to open or read a `datasets` source tells its user: the owner everything, a visitor one sentence.

For the owner's CLI the library's own message is kept (it names the file, the config, the split). A visitor
gets no existence oracle: a missing repo, a private one and a gated one answer the same sentence (the Hub's
404, 401 and 403 and `datasets`' texts for them differ), and no message echoes a server path (`datasets`
names the app's working folder when a name is neither local nor on the Hub).
"""

from __future__ import annotations

import re

from rag.errors import CollectionError, InvalidInput, RagError
from rag.ingest.spec import SourceSpec

_ACCESS_STATUS = (401, 403, 404)
_SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[^/\s'\"]+/)*[^/\s'\"]+")


def not_readable(spec: SourceSpec) -> str:
    """The one sentence for a visitor's dataset that is missing, private or gated (which of them is not said)."""
    who = "with your Hugging Face sign-in" if spec.hub_token else "without signing in"
    return (f"Dataset {spec.dataset!r} was not found on the Hugging Face Hub, or it cannot be read {who} "
            "(private or gated datasets need your own sign-in and access).")


def _is_access_error(exc: BaseException) -> bool:
    """A refusal or a not-found from the Hub or `datasets`, in any of the forms they take."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, (DatasetNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, FileNotFoundError,
                        PermissionError)):
        return True
    response = getattr(exc, "response", None)
    return isinstance(exc, HfHubHTTPError) and getattr(response, "status_code", None) in _ACCESS_STATUS


def _is_unreachable(exc: BaseException) -> bool:
    from huggingface_hub.utils import httpx  # the HTTP library huggingface_hub is built on (httpx2 in 2.4)

    return isinstance(exc, (ConnectionError, TimeoutError, httpx.TransportError))


def open_error(spec: SourceSpec, exc: BaseException) -> RagError:
    """The error to raise when opening ``spec``'s dataset failed with ``exc``."""
    where = f"(config {spec.config!r}, split {spec.split!r})"
    if not spec.visitor:
        return CollectionError(f"Could not load dataset {spec.dataset!r} {where}: {exc}")
    if _is_access_error(exc):
        return InvalidInput(not_readable(spec))
    if _is_unreachable(exc):
        return CollectionError("The Hugging Face Hub could not be reached to read the dataset; try again later.")
    if isinstance(exc, ValueError):  # a split or config the dataset does not have: only said once it can be read
        return InvalidInput(f"Could not load dataset {spec.dataset!r} {where}: {_SERVER_PATH.sub('…', str(exc))}")
    return CollectionError(f"Could not load dataset {spec.dataset!r} {where} ({type(exc).__name__}).")


def read_error(spec: SourceSpec, position: int, exc: BaseException) -> RagError:
    """The error to raise when reading ``spec``'s dataset stopped at row ``position`` with ``exc``."""
    if not spec.visitor:
        return CollectionError(
            f"Reading dataset {spec.dataset!r} stopped at row {position}: {exc}. Run again with --resume "
            "to continue from the rows already saved."
        )
    if _is_access_error(exc):
        return InvalidInput(not_readable(spec))
    return CollectionError(f"Reading dataset {spec.dataset!r} stopped at row {position} ({type(exc).__name__}); "
                           "try the build again.")
