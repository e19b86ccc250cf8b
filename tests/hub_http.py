"""A tiny Hugging Face Hub on 127.0.0.1 for tests: serves dataset repos from local folders and records every request.

It answers the few routes ``datasets`` / ``huggingface_hub`` use to open and stream a dataset repo (repo info,
file tree, paths-info, ``resolve`` with HTTP ranges), so a test can point ``HF_ENDPOINT`` at it and see which
``Authorization`` header each request carried. Nothing leaves the machine: the server listens on the loopback
interface only, and :func:`serve_hub` refuses (and records) any request an HTTP client sends to another host.

Access is modelled on the Hub: a public repo answers everyone; a private repo answers only a request carrying
one of its ``readers`` tokens, and otherwise 401; a gated repo answers 403 (``X-Error-Code: GatedRepo``); a
missing repo 404 (``X-Error-Code: RepoNotFound``). The answers differ on purpose, so a test can check that the
app does not turn them into different messages.
"""

from __future__ import annotations

import hashlib
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

SHA = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Repo:
    """A dataset repo served from ``folder``: ``private`` repos answer only ``readers``; ``gated`` ones nobody."""

    folder: Path
    private: bool = False
    gated: bool = False
    readers: tuple[str, ...] = ()


@dataclass
class FakeHub:
    """The served repos and, per request, (method, path, Authorization header or None)."""

    repos: dict[str, Repo]
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def authorizations(self) -> set[str | None]:
        """Every Authorization header value the Hub saw (None for requests without one)."""
        return {auth for _, _, auth in self.requests}


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _record(self) -> None:
        self.hub.requests.append((self.command, self.path, self.headers.get("Authorization")))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _refuse(self, repo: Repo | None) -> bool:
        """Answer 404/403/401 as the Hub would when the request may not read ``repo``; True when refused."""
        if repo is None:
            self._send(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
        elif repo.gated:
            self._send(403, b'{"error":"Access to this dataset is restricted"}', {"X-Error-Code": "GatedRepo"})
        elif repo.private and self.headers.get("Authorization", "").removeprefix("Bearer ") not in repo.readers:
            self._send(401, b'{"error":"Invalid credentials in Authorization header"}')
        else:
            return False
        return True

    def _route(self) -> tuple[str, Repo | None, str, str] | None:
        """(kind, repo, revision, path in repo) for the routes served, else None."""
        parts = unquote(urlsplit(self.path).path).strip("/").split("/")
        if parts[:2] == ["api", "datasets"] and len(parts) >= 4:
            repo_id, rest = "/".join(parts[2:4]), parts[4:]
            kind = rest[0] if rest else "info"
            revision = rest[1] if len(rest) > 1 else "main"
            return kind, self.hub.repos.get(repo_id), revision, "/".join(rest[2:])
        if parts[:1] == ["datasets"] and len(parts) >= 5 and parts[3] == "resolve":
            return "resolve", self.hub.repos.get("/".join(parts[1:3])), parts[4], "/".join(parts[5:])
        return None

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._record()
        route = self._route()
        if route is None:
            return self._send(404, b"not served")
        kind, repo, revision, path = route
        if self._refuse(repo):
            return None
        if kind in ("info", "revision"):
            return self._json(_info(repo))
        if kind == "tree":
            recursive = parse_qs(urlsplit(self.path).query).get("recursive") == ["true"]
            return self._json(_tree(repo.folder, path, recursive))
        if kind == "resolve":
            return self._file(repo.folder / path)
        return self._send(404, b"not served")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        self._record()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        route = self._route()
        if route is None or route[0] != "paths-info":
            return self._send(404, b"not served")
        if self._refuse(route[1]):
            return None
        paths = parse_qs(body).get("paths") or json.loads(body or "{}").get("paths", [])
        folder = route[1].folder
        return self._json([_entry(folder, folder / p) for p in paths if (folder / p).exists()])

    def _file(self, file: Path) -> None:
        if not file.is_file():
            return self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound"})
        data = file.read_bytes()
        headers = {"X-Repo-Commit": SHA, "ETag": f'"{_oid(file)}"', "Accept-Ranges": "bytes"}
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            start_text, _, end_text = wanted[6:].partition("-")
            start = int(start_text or 0)
            end = min(int(end_text) if end_text else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start:end + 1], headers)
        return self._send(200, data, headers)


def _oid(file: Path) -> str:
    return hashlib.sha1(file.read_bytes()).hexdigest()


def _entry(folder: Path, path: Path) -> dict:
    relative = path.relative_to(folder).as_posix()
    if path.is_dir():
        return {"type": "directory", "oid": SHA, "path": relative}
    return {"type": "file", "oid": _oid(path), "size": path.stat().st_size, "path": relative}


def _tree(folder: Path, path: str, recursive: bool) -> list[dict]:
    base = folder / path
    children = sorted(base.rglob("*") if recursive else base.iterdir())
    return [_entry(folder, child) for child in children]


def _info(repo: Repo) -> dict:
    files = sorted(p.relative_to(repo.folder).as_posix() for p in repo.folder.rglob("*") if p.is_file())
    return {"id": repo.folder.name, "_id": "0" * 24, "sha": SHA, "private": repo.private, "gated": False,
            "disabled": False, "downloads": 0, "likes": 0, "tags": [], "lastModified": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": name} for name in files]}


@contextmanager
def serve_hub(repos: dict[str, Repo], monkeypatch) -> Iterator[FakeHub]:
    """Serve ``repos`` on 127.0.0.1 and point huggingface_hub and datasets at it, online, for one test.

    ``HF_ENDPOINT`` is read once, at import, by both libraries (huggingface_hub.constants.ENDPOINT,
    datasets.config.HF_ENDPOINT), and so is offline mode; they are patched for the test only. Requests that
    an httpx client sends anywhere but this server (the dataset viewer's ``datasets-server.<host>``) are
    recorded and refused, so nothing leaves the machine.
    """
    import datasets.config
    from huggingface_hub import constants
    from huggingface_hub.utils import httpx  # the HTTP client library huggingface_hub (and datasets) use

    hub = FakeHub(repos)
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    original_send = httpx.Client.send

    def local_only(client, request, *args, **kwargs):
        if request.url.host != "127.0.0.1":
            hub.requests.append((request.method, str(request.url), request.headers.get("Authorization")))
            raise httpx.ConnectError("tests reach only the fake Hub", request=request)
        return original_send(client, request, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", local_only)
    for name, value in (("HF_ENDPOINT", hub.url), ("HF_HUB_OFFLINE", "0"), ("HF_DATASETS_OFFLINE", "0")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"})
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", hub.url)
    monkeypatch.setattr(datasets.config, "HUB_DATASETS_URL", hub.url + "/datasets/{repo_id}/resolve/{revision}/{path}")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", False)
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
