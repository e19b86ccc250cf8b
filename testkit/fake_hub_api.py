"""The client side of testkit.fake_hub: an ``HfApi`` whose methods take the real signatures and answer from a FakeHub.

Each method is bound against ``huggingface_hub.HfApi``'s own (``real_signature``), checks what huggingface_hub checks
locally (ValueErrors for an empty commit message, a bad ``parent_commit``, an unknown repo type), then asks the hub.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import huggingface_hub
from huggingface_hub import CommitOperationAdd, CommitOperationCopy, CommitOperationDelete, constants
from huggingface_hub.errors import LocalTokenNotFoundError
from huggingface_hub.hf_api import CommitInfo, DuplicatedRepoUrl, RepoFile, RepoFolder, RepoUrl

from testkit.fake_hub import (ENDPOINT, INFO_TYPES, MAIN, STALE_PARENT, FakeHub, Repo, bind, completed, http_error,
                              now, real_signature, space_variable, validate_card, visibility)


class FakeHfApi:
    """``huggingface_hub.HfApi`` on a FakeHub; ``api_class(hub)`` makes the class bound to one hub."""

    hub: FakeHub

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        p = bind(huggingface_hub.HfApi.__init__, (self, *args), kwargs)
        self.hub.received("HfApi", p.passed)
        self.token, self.endpoint = p.token, p.endpoint or ENDPOINT

    def __getattr__(self, name: str) -> Any:
        if hasattr(huggingface_hub.HfApi, name):
            raise NotImplementedError(f"the fake Hub does not model HfApi.{name} yet: add it to testkit/fake_hub_api.py")
        raise AttributeError(name)

    def _token(self, explicit: str | bool | None) -> str | None:
        return self.hub.token_for(explicit, self.token)

    @staticmethod
    def _url(repo_type: str | None, repo_id: str, *tail: str) -> str:
        return "/".join([f"{ENDPOINT}/api/{repo_type or 'model'}s/{repo_id}", *tail])

    @real_signature("whoami")
    def whoami(self, p: Any) -> dict:
        token = self.token if p.token is None else p.token
        if token is False:
            raise ValueError("Cannot use `token=False` with `whoami` method as it requires authentication.")
        token = self._token(None if token is True else token)
        if token is None:
            raise LocalTokenNotFoundError("Token is required to call the /whoami-v2 endpoint, but no token found.")
        name, write = self.hub.user(token, "GET", f"{ENDPOINT}/api/whoami-v2") or ("", False)
        return {"type": "user", "name": name, "auth": {"accessToken": {"role": "write" if write else "read"}}}

    @real_signature("create_repo")
    def create_repo(self, p: Any) -> RepoUrl:
        repo_type = p.repo_type or "model"
        if repo_type == "space" and p.space_sdk not in constants.SPACES_SDK_TYPES:
            raise ValueError("No space_sdk provided. `create_repo` expects space_sdk to be one of "
                             f"{constants.SPACES_SDK_TYPES} when repo_type is 'space'`")
        token, url = self._token(p.token), f"{ENDPOINT}/api/repos/create"
        user = self.hub.user(token, "POST", url, required=True)
        repo_id = p.repo_id if "/" in p.repo_id else f"{user[0]}/{p.repo_id}"
        existing = self.hub.repos.get((repo_type, repo_id))
        if not self.hub.may_create(repo_id.split("/")[0], token, "POST", url):
            if p.exist_ok and existing:  # huggingface_hub then checks the repo is visible and returns its URL
                return RepoUrl(self.hub.readable(repo_type, repo_id, token, "GET", self._url(repo_type, repo_id)).url)
            http_error(403, "POST", url, f"You don't have the rights to create a {repo_type} under this namespace")
        if existing:
            if p.exist_ok:
                return RepoUrl(existing.url, endpoint=ENDPOINT)
            http_error(409, "POST", url, f"You already created this {repo_type} repo")
        variables = {v["key"]: v["value"] for v in p.space_variables or []}
        repo = self.hub.new_repo(repo_id, repo_type, visibility(p), p.space_sdk, p.space_hardware, variables)
        return RepoUrl(repo.url, endpoint=ENDPOINT)

    @real_signature("create_branch")
    def create_branch(self, p: Any) -> None:
        url = self._url(p.repo_type, p.repo_id, "branch", p.branch)
        repo = self.hub.writable(p.repo_type or "model", p.repo_id, self._token(p.token), "POST", url)
        if p.branch in repo.branches:
            if not p.exist_ok:
                http_error(409, "POST", url, "Reference already exists")
            return
        start = repo.resolve(p.revision) or http_error(404, "POST", url, "Invalid rev id", code="RevisionNotFound")
        repo.branches[p.branch] = start

    def _info(self, repo_type: str, p: Any) -> Any:
        url = self._url(repo_type, p.repo_id, "revision", p.revision or MAIN)
        repo = self.hub.readable(repo_type, p.repo_id, self._token(p.token), "GET", url)
        oid = repo.resolve(p.revision) or http_error(404, "GET", url, "Invalid rev id", code="RevisionNotFound")
        siblings = [{"rfilename": path} for path in sorted(repo.commits[oid].files)]
        return INFO_TYPES[repo_type](id=repo.repo_id, author=repo.owner, sha=oid, private=repo.private,
                                     siblings=siblings, lastModified=now())

    @real_signature("repo_info")
    def repo_info(self, p: Any) -> Any:
        return self._info(p.repo_type or "model", p)

    @real_signature("model_info")
    def model_info(self, p: Any) -> Any:
        return self._info("model", p)

    @real_signature("dataset_info")
    def dataset_info(self, p: Any) -> Any:
        return self._info("dataset", p)

    @real_signature("space_info")
    def space_info(self, p: Any) -> Any:
        return self._info("space", p)

    @real_signature("list_repo_tree")
    def list_repo_tree(self, p: Any) -> Iterator[RepoFile | RepoFolder]:
        url = self._url(p.repo_type, p.repo_id, "tree", p.revision or MAIN, *([p.path_in_repo] if p.path_in_repo else []))

        def pages() -> Iterator[RepoFile | RepoFolder]:  # lazy, as the real one: errors come with the first entry
            repo = self.hub.readable(p.repo_type or "model", p.repo_id, self._token(p.token), "GET", url)
            if repo.resolve(p.revision) is None:
                http_error(404, "GET", url, "Invalid rev id", code="RevisionNotFound")
            entries = repo.tree(p.revision, p.path_in_repo, p.recursive)
            if entries is None:
                http_error(404, "GET", url, "Entry not found", code="EntryNotFound")
            yield from entries

        return pages()

    @real_signature("list_repo_files")
    def list_repo_files(self, p: Any) -> list[str]:
        url = self._url(p.repo_type, p.repo_id, "tree", p.revision or MAIN)
        repo = self.hub.readable(p.repo_type or "model", p.repo_id, self._token(p.token), "GET", url)
        oid = repo.resolve(p.revision) or http_error(404, "GET", url, "Invalid rev id", code="RevisionNotFound")
        return sorted(repo.commits[oid].files)

    @real_signature("create_commit")
    def create_commit(self, p: Any) -> Any:
        operations = list(p.operations)
        _check_commit_arguments(p, operations)
        branch = p.revision or MAIN
        url = self._url(p.repo_type, p.repo_id, "commit", branch)
        repo = self.hub.writable(p.repo_type or "model", p.repo_id, self._token(p.token), "POST", url)
        if branch not in repo.branches:
            http_error(404, "POST", url, "Invalid rev id", code="RevisionNotFound")
        head = repo.branches[branch]
        if p.parent_commit is not None and not head.startswith(p.parent_commit.lower()):
            http_error(412, "POST", url, STALE_PARENT)
        files = self._apply(repo, operations, dict(repo.commits[head].files), url)
        oid = head if files == repo.commits[head].files else self.hub.commit(repo, branch, files, p.commit_message).oid
        for op in operations:
            if isinstance(op, CommitOperationAdd):
                op._is_committed = True
        info = CommitInfo(commit_url=f"{repo.url}/commit/{oid}", commit_message=p.commit_message,
                          commit_description=p.commit_description or "", oid=oid, _endpoint=ENDPOINT)
        return completed(info) if p.run_as_future else info

    def _apply(self, repo: Repo, operations: list, files: dict[str, bytes], url: str) -> dict[str, bytes]:
        """The file set after the operations, in order, as the Hub applies them."""
        for op in operations:
            if isinstance(op, CommitOperationAdd):
                with op.as_file() as handle:
                    data = handle.read()
                if op.path_in_repo == "README.md":
                    validate_card(data)
                rewrite = self.hub.rewrite_upload
                files[op.path_in_repo] = rewrite(op.path_in_repo, data) if rewrite else data
            elif isinstance(op, CommitOperationCopy):
                source = repo.files(op.src_revision)
                if op.src_path_in_repo not in source:
                    http_error(404, "POST", url, "Entry not found", code="EntryNotFound")
                files[op.path_in_repo] = source[op.src_path_in_repo]
            elif isinstance(op, CommitOperationDelete):
                folder = op.path_in_repo.rstrip("/") + "/"
                gone = ([k for k in files if k.startswith(folder)] if op.is_folder
                        else [op.path_in_repo] if op.path_in_repo in files else [])
                if not gone:
                    http_error(404, "POST", url, "A file with this name doesn't exist", code="EntryNotFound")
                for path in gone:
                    del files[path]
        return files

    @real_signature("duplicate_repo")
    def duplicate_repo(self, p: Any) -> DuplicatedRepoUrl:
        if p.repo_type not in constants.REPO_TYPES:
            raise ValueError("Invalid repo type")
        repo_type, token = p.repo_type or "model", self._token(p.token)
        url = self._url(repo_type, p.from_id, "duplicate")
        source = self.hub.readable(repo_type, p.from_id, token, "POST", url)
        name, _ = self.hub.user(token, "POST", url, required=True) or ("", False)
        target = p.to_id if p.to_id and "/" in p.to_id else f"{name}/{p.to_id or p.from_id.split('/')[-1]}"
        if not self.hub.may_create(target.split("/")[0], token, "POST", url):
            http_error(403, "POST", url, f"You don't have the rights to create a {repo_type} under this namespace")
        if (repo_type, target) in self.hub.repos and not p.exist_ok:
            http_error(409, "POST", url, f"You already created this {repo_type} repo")
        variables = {v["key"]: v["value"] for v in p.space_variables or []} if repo_type == "space" else {}
        repo = self.hub.new_repo(target, repo_type, visibility(p), source.sdk,
                                 p.space_hardware if repo_type == "space" else None, variables)
        self.hub.commit(repo, MAIN, dict(source.files()), f"Duplicate from {p.from_id}")
        result = DuplicatedRepoUrl(repo.url, endpoint=ENDPOINT)
        result.files_copy_pending = False
        return result

    @real_signature("add_space_variable")
    def add_space_variable(self, p: Any) -> dict[str, Any]:
        url = f"{ENDPOINT}/api/spaces/{p.repo_id}/variables"
        repo = self.hub.writable("space", p.repo_id, self._token(p.token), "POST", url)
        repo.variables[p.key] = p.value
        return {key: space_variable(key, value, p.description if key == p.key else None)
                for key, value in repo.variables.items()}

    @real_signature("get_space_variables")
    def get_space_variables(self, p: Any) -> dict[str, Any]:
        url = f"{ENDPOINT}/api/spaces/{p.repo_id}/variables"
        repo = self.hub.readable("space", p.repo_id, self._token(p.token), "GET", url)
        return {key: space_variable(key, value) for key, value in repo.variables.items()}


def _check_commit_arguments(p: Any, operations: list) -> None:
    """What huggingface_hub's create_commit refuses before it sends anything."""
    if p.parent_commit is not None and not constants.REGEX_COMMIT_OID.fullmatch(p.parent_commit):
        raise ValueError("`parent_commit` is not a valid commit OID. It must match the following regex: "
                         f"{constants.REGEX_COMMIT_OID}")
    if not p.commit_message:
        raise ValueError("`commit_message` can't be empty, please pass a value.")
    if (p.repo_type or "model") not in constants.REPO_TYPES_WITH_KERNEL:
        raise ValueError(f"Invalid repo type, must be one of {constants.REPO_TYPES_WITH_KERNEL}")
    for op in operations:
        if isinstance(op, CommitOperationAdd) and op._is_committed:
            raise ValueError(f"CommitOperationAdd {op} has already being committed and cannot be reused.")


def api_class(hub: FakeHub) -> type[FakeHfApi]:
    """A class named HfApi whose instances talk to ``hub``."""
    return type("HfApi", (FakeHfApi,), {"hub": hub, "__doc__": FakeHfApi.__doc__,
                                        "__signature__": inspect.signature(huggingface_hub.HfApi)})
