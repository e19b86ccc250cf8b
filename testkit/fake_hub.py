"""One fake Hugging Face Hub for every test: in-memory repos behind huggingface_hub's real signatures and errors.

Why: hand-written fakes drift from huggingface_hub. They accept arguments the real client refuses, ignore the
ones it honours, and never answer with the Hub's errors, so a test can pass against a Hub that does not exist.
Here every call is first bound against the real function's signature (``inspect.signature(...).bind``: a wrong
or missing argument is the same TypeError) and repo ids are validated as huggingface_hub validates them; then it
is answered as the Hub answers: huggingface_hub's own return types (CommitInfo, RepoFile / RepoFolder,
DatasetInfo, RepoUrl, SpaceVariable) and its own exceptions, made by feeding an HTTP response to huggingface_hub's
``hf_raise_for_status`` (RepositoryNotFoundError for a missing or invisible repo, RevisionNotFoundError,
RemoteEntryNotFoundError, 403 without write rights, 409 for an existing repo or branch, 412 for a stale
``parent_commit``).

Scope: what rag/ and ui/ call (``HfApi`` and ``snapshot_download``, see HUB_MODULES); any other HfApi method
raises NotImplementedError naming it, so a new call fails loudly until it is modelled here. The Hub is modelled
as reachable (HF_HUB_OFFLINE does not apply; ``local_files_only=True`` reads the cache with the real function).
Tokens: ``add_user`` returns one; a call without a token uses HF_TOKEN, then the token of ``login`` (what
``hf auth login`` stores). A private repo is visible to its owner only.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import itertools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any, NoReturn

import httpx2  # the HTTP library huggingface_hub's errors are built on
import huggingface_hub
import pytest
import yaml
from huggingface_hub import SpaceVariable, constants
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.hf_api import DatasetInfo, ModelInfo, RepoFile, RepoFolder, SpaceInfo, _resolve_repo_visibility
from huggingface_hub.utils import filter_repo_objects, hf_raise_for_status, validate_repo_id

MAIN = constants.DEFAULT_REVISION
ENDPOINT = constants.ENDPOINT
HUB_MODULES = ("rag.collection.hub", "rag.space.publish")  # where rag imports the Hub client (checked by a test)
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub stores files from 10 MB up, and every binary file, in LFS
STALE_PARENT = "A commit has happened since. Please refresh and try again."
INFO_TYPES = {"model": ModelInfo, "dataset": DatasetInfo, "space": SpaceInfo}
_REAL_SNAPSHOT_DOWNLOAD = huggingface_hub.snapshot_download  # kept for local_files_only: reading the cache is real


def http_error(status: int, method: str, url: str, message: str, code: str | None = None) -> NoReturn:
    """Raise what huggingface_hub raises when the Hub answers ``status`` (same class, same message)."""
    headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
    response = httpx2.Response(status, request=httpx2.Request(method, url), headers=headers, json={"error": message})
    hf_raise_for_status(response)
    raise AssertionError(f"hf_raise_for_status accepted HTTP {status}")


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(data: bytes) -> bytes:
    return b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (
        hashlib.sha256(data).hexdigest().encode(), len(data))


@dataclass
class Commit:
    """One commit: its oid, its parent's and the full file set it holds."""

    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    """A repo on the fake Hub: commits, branches, visibility and, for a Space, variables and hardware."""

    repo_id: str
    repo_type: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    hardware: str | None = None
    sdk: str | None = None

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]

    @property
    def url(self) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        return f"{ENDPOINT}/{prefix}{self.repo_id}"

    def resolve(self, revision: str | None) -> str | None:
        """The commit oid a branch name or (short) commit sha names, else None."""
        revision = revision or MAIN
        if revision in self.branches:
            return self.branches[revision]
        found = [oid for oid in self.commits if len(revision) >= 7 and oid.startswith(revision.lower())]
        return found[0] if len(found) == 1 else None

    def files(self, revision: str | None = None) -> dict[str, bytes]:
        """The files at a branch or commit (KeyError when there is none)."""
        return self.commits[self.resolve(revision) or ""].files

    def history(self, revision: str | None = None) -> list[Commit]:
        """The commits reachable from ``revision``, newest first."""
        chain, oid = [], self.resolve(revision)
        while oid:
            chain.append(self.commits[oid])
            oid = chain[-1].parent
        return chain

    def is_lfs(self, path: str, data: bytes) -> bool:
        """Stored in LFS: a binary or large file, or one matching an ``filter=lfs`` pattern of .gitattributes."""
        attributes = self.files().get(".gitattributes", b"").decode(errors="replace").splitlines()
        patterns = [line.split()[0] for line in attributes if "filter=lfs" in line]
        if b"\0" in data[:8192] or len(data) >= LFS_MIN_SIZE:
            return True
        return bool(patterns) and bool(list(filter_repo_objects([path], allow_patterns=patterns)))

    def tree(self, revision: str | None, path: str | None, recursive: bool) -> list[RepoFile | RepoFolder] | None:
        """list_repo_tree's answer: the files and folders below ``path`` (direct children unless recursive)."""
        files = self.files(revision)
        folders = {str(parent) for name in files for parent in PurePosixPath(name).parents if str(parent) != "."}
        base = (path or "").strip("/")
        if base and base not in folders:
            return None
        prefix = f"{base}/" if base else ""
        below = sorted(p for p in [*files, *folders] if p.startswith(prefix))
        below = below if recursive else [p for p in below if "/" not in p[len(prefix):]]
        return [self._folder(p, files) if p in folders else self._file(p, files[p]) for p in below]

    def _file(self, path: str, data: bytes) -> RepoFile:
        if not self.is_lfs(path, data):
            return RepoFile(type="file", path=path, size=len(data), oid=_git_oid(data))
        pointer = _lfs_pointer(data)
        lfs = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": len(pointer)}
        return RepoFile(type="file", path=path, size=len(data), oid=_git_oid(pointer), lfs=lfs)

    @staticmethod
    def _folder(path: str, files: dict[str, bytes]) -> RepoFolder:
        inside = "".join(f"{p}:{_git_oid(d)}" for p, d in sorted(files.items()) if p.startswith(path + "/"))
        return RepoFolder(type="directory", path=path, oid=hashlib.sha1(inside.encode()).hexdigest())


class FakeHub:
    """The Hub's state (users, tokens, repos) and its server-side rules; ``HfApi`` is its client class."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.tokens: dict[str, tuple[str, bool]] = {}  # token -> (user name, may write)
        self.stored_token: str | None = None
        self.calls: list[tuple[str, dict[str, Any]]] = []  # (function, the arguments as passed), in call order
        self.rewrite_upload: Callable[[str, bytes], bytes] | None = None  # what the Hub stores instead of the bytes sent
        self._interleaved: dict[str, list[Callable[[], Any]]] = {}
        self._counter = itertools.count()
        from testkit.fake_hub_api import api_class  # the client side, bound to this hub

        self.HfApi = api_class(self)

    # -- set-up, as the tests see it ------------------------------------------------------------------------

    def add_user(self, name: str, token: str | None = None, write: bool = True) -> str:
        """Register a user; returns their token (``write=False``: a read-only token)."""
        token = token or f"hf_fake_{name}_{len(self.tokens)}"
        self.tokens[token] = (name, write)
        return token

    def login(self, name: str) -> str:
        """``hf auth login`` as ``name``: calls without a token (and no HF_TOKEN) use this one."""
        self.stored_token = self.add_user(name)
        return self.stored_token

    def seed(self, repo_id: str, files: dict[str, bytes], repo_type: str = "dataset", private: bool = False,
             **space: Any) -> Repo:
        """A repo that already exists on the Hub (no token needed), its main branch holding ``files``."""
        repo = self.new_repo(repo_id, repo_type, private, **space)
        self.commit(repo, MAIN, {**repo.files(), **files}, "Upload files")
        return repo

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        """The stored repo (KeyError when the Hub has none)."""
        return self.repos[(repo_type, repo_id)]

    def api(self, token: str | None = None) -> Any:
        """An ``HfApi(token=token)`` talking to this hub."""
        return self.HfApi(token=token)

    def interleave(self, function: str, action: Callable[[], Any]) -> None:
        """Run ``action`` once, just before the next ``function`` call is answered: another client acting between
        two calls of the one under test (e.g. a second push landing between a push's read of the head and its commit)."""
        self._interleaved.setdefault(function, []).append(action)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Replace huggingface_hub where rag imports it (HUB_MODULES) by this hub's client and snapshot_download."""
        fakes = {"HfApi": self.HfApi, "snapshot_download": self.snapshot_download}
        for module_name in HUB_MODULES:
            module = importlib.import_module(module_name)
            for name in set(fakes) & set(vars(module)):
                monkeypatch.setattr(module, name, fakes[name])

    # -- server side --------------------------------------------------------------------------------------

    def received(self, function: str, arguments: dict[str, Any]) -> None:
        """Record a bound call, then let an interleaved client act before it is answered."""
        self.calls.append((function, arguments))
        for action in self._interleaved.pop(function, []):
            action()

    def token_for(self, explicit: str | bool | None, default: str | bool | None = None) -> str | None:
        """The token a call sends: its own, the client's, else HF_TOKEN, else the stored login (False: none)."""
        token = default if explicit is None else explicit
        if token is False:
            return None
        if token is None or token is True:
            return os.environ.get("HF_TOKEN") or self.stored_token
        return token

    def user(self, token: str | None, method: str, url: str, required: bool = False) -> tuple[str, bool] | None:
        """The (user, may write) a token belongs to; an unknown token is a 401, as is none where one is required."""
        if token is None:
            if required:
                http_error(401, method, url, "Invalid username or password.")
            return None
        if token not in self.tokens:
            http_error(401, method, url, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def readable(self, repo_type: str, repo_id: str, token: str | None, method: str, url: str) -> Repo:
        """The repo if this token may see it; a missing or private one is RepositoryNotFoundError (401/404)."""
        who = self.user(token, method, url)
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and (who is None or who[0] != repo.owner)):
            http_error(404 if who else 401, method, url, "Repository not found", code="RepoNotFound")
        return repo

    def writable(self, repo_type: str, repo_id: str, token: str | None, method: str, url: str) -> Repo:
        """The repo if this token may push to it: the owner's token with write access, else 401/403."""
        repo = self.readable(repo_type, repo_id, token, method, url)
        name, write = self.user(token, method, url, required=True) or ("", False)
        if name != repo.owner or not write:
            http_error(403, method, url, f"You don't have the rights to write to {repo_type} {repo_id}")
        return repo

    def may_create(self, namespace: str, token: str | None, method: str, url: str) -> bool:
        """Whether this token may create a repo under ``namespace`` (401 without a token)."""
        name, write = self.user(token, method, url, required=True) or ("", False)
        return name == namespace and write

    def new_repo(self, repo_id: str, repo_type: str, private: bool, sdk: str | None = None,
                 hardware: str | None = None, variables: dict[str, str] | None = None) -> Repo:
        """Create a repo with the Hub's initial commit (.gitattributes on main)."""
        validate_repo_id(repo_id)
        repo = Repo(repo_id, repo_type, private, sdk=sdk, hardware=hardware, variables=dict(variables or {}))
        self.repos[(repo_type, repo_id)] = repo
        self.commit(repo, MAIN, {".gitattributes": GITATTRIBUTES}, "initial commit")
        return repo

    def commit(self, repo: Repo, branch: str, files: dict[str, bytes], message: str) -> Commit:
        """A new commit on ``branch`` holding ``files``, with a fresh oid."""
        parent = repo.branches.get(branch)
        digest = hashlib.sha1(f"{repo.repo_id}\0{parent}\0{message}\0{next(self._counter)}".encode())
        for path, data in sorted(files.items()):
            digest.update(f"{path}\0{_git_oid(data)}".encode())
        commit = Commit(digest.hexdigest(), parent, message, dict(files))
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def snapshot_download(self, *args: Any, **kwargs: Any) -> str:
        """huggingface_hub.snapshot_download: write the revision's files into the HF cache (or ``local_dir``)."""
        p = bind(huggingface_hub.snapshot_download, args, kwargs)
        self.received("snapshot_download", p.passed)
        if p.local_files_only or p.dry_run:
            return _REAL_SNAPSHOT_DOWNLOAD(*args, **kwargs)
        repo_type = p.repo_type or "model"
        url = f"{ENDPOINT}/api/{repo_type}s/{p.repo_id}/revision/{p.revision or MAIN}"
        repo = self.readable(repo_type, p.repo_id, self.token_for(p.token), "GET", url)
        oid = repo.resolve(p.revision) or http_error(404, "GET", url, "Invalid rev id", code="RevisionNotFound")
        files = repo.commits[oid].files
        if p.local_dir:
            folder = Path(p.local_dir)
        else:
            cache = Path(p.cache_dir or constants.HF_HUB_CACHE)
            root = cache / repo_folder_name(repo_id=p.repo_id, repo_type=repo_type)
            folder = root / "snapshots" / oid
            if (p.revision or MAIN) != oid:
                (root / "refs").mkdir(parents=True, exist_ok=True)
                (root / "refs" / (p.revision or MAIN)).write_text(oid)
        chosen = filter_repo_objects(sorted(files), allow_patterns=p.allow_patterns, ignore_patterns=p.ignore_patterns)
        for path in chosen:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(files[path])
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)



def bind(real: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> SimpleNamespace:
    """Bind a call as ``real`` would (TypeError on a wrong or missing argument) and validate its repo ids.

    Returns every parameter (defaults applied) as attributes, plus ``passed``: the arguments as the caller gave them.
    """
    bound = inspect.signature(real).bind(*args, **kwargs)
    passed = {k: v for k, v in bound.arguments.items() if k != "self"}
    for name in ("repo_id", "from_id", "to_id"):
        if passed.get(name) is not None:
            validate_repo_id(passed[name])
    bound.apply_defaults()
    return SimpleNamespace(**{k: v for k, v in bound.arguments.items() if k != "self"}, passed=passed)


def real_signature(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for a fake HfApi method: bind against ``HfApi.<name>``, record the call, then answer with ``p``."""
    real = getattr(huggingface_hub.HfApi, name)

    def decorate(answer: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(answer)
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            p = bind(real, (self, *args), kwargs)
            self.hub.received(name, p.passed)
            return answer(self, p)

        method.__signature__ = inspect.signature(real)  # what inspect and IDEs show is the real one
        return method

    return decorate


def now() -> str:
    """The Hub's timestamp format."""
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def visibility(p: SimpleNamespace) -> bool:
    """Whether ``private`` / ``visibility`` (resolved as huggingface_hub does, ValueError for both) make it private."""
    return _resolve_repo_visibility(private=p.private, visibility=p.visibility, repo_type=p.repo_type) == "private"


def space_variable(key: str, value: str, description: str | None = None) -> SpaceVariable:
    return SpaceVariable(key, {"value": value, "description": description, "updatedAt": now()})


def completed(value: Any) -> Future:
    """``run_as_future=True``: the answer as a finished Future."""
    future: Future = Future()
    future.set_result(value)
    return future


def validate_card(data: bytes) -> None:
    """The Hub refuses a README.md whose YAML front matter does not parse (huggingface_hub's ValueError)."""
    text = data.decode(errors="replace")
    if not text.startswith("---"):
        return
    try:
        yaml.safe_load(text.split("---", 2)[1])
    except yaml.YAMLError as exc:
        raise ValueError(f"Invalid metadata in README.md.\n- {str(exc).splitlines()[0]}") from None


@pytest.fixture()
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A fresh FakeHub installed where rag calls the Hub, with its own HF cache and no ambient HF_TOKEN."""
    hub = FakeHub()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "fake-hub-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub.install(monkeypatch)
    yield hub
