"""A real HTTP server speaking the part of the Hugging Face Hub API that ``lovr push`` uses, for offline tests.

It listens on 127.0.0.1 in a background thread, so ``huggingface_hub.HfApi(endpoint=srv.endpoint)`` goes
through its real request code: ``create_repo``, ``list_repo_tree``, ``/api/validate-yaml``, ``preupload``
(which files are LFS, and the remote oid of each path so unchanged files are skipped), the git-LFS batch
API with the basic transfer (PUT of the bytes, sha256 and size checked), and the NDJSON ``commit``
endpoint. It is as strict as the service where it matters for the tests: every write needs a valid
``Authorization: Bearer`` token (401 otherwise), an LFS pointer in a commit must refer to uploaded bytes
(400 otherwise), unknown commit operations are rejected, and a commit's README must be valid YAML front
matter. Every request is recorded with the token it carried, and every commit with its operations, so a
test sees exactly what would have been published. The Xet storage protocol is not implemented: tests run
huggingface_hub with Xet disabled (``HF_HUB_DISABLE_XET``), i.e. its plain LFS upload path.

    with FakeHub(tokens={"hf_test"}) as hub:
        api = HfApi(endpoint=hub.endpoint, token="hf_test")
        ...
        hub.files("me/bench")   # {path: bytes} of the repo's head
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import yaml

LFS_EXTENSIONS = (".parquet", ".mp4", ".mkv", ".webm", ".mov", ".avi", ".png", ".jpg", ".jpeg", ".arrow")
LFS_MIN_BYTES = 10 * 1024 * 1024  # the Hub stores files above 10 MiB in LFS whatever their type


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file's content (what the Hub reports as a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class RecordedRequest:
    method: str
    path: str
    token: str | None


@dataclass
class Commit:
    repo_id: str
    summary: str
    token: str | None
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    oid: str = ""


@dataclass
class _Repo:
    repo_type: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    head: str = "0" * 40


class FakeHub:
    """The stand-in Hub; ``tokens``: the accepted write tokens."""

    def __init__(self, tokens: set[str] | None = None, user: str = "me") -> None:
        self.tokens = set(tokens or {"hf_test_token"})
        self.user = user
        self.repos: dict[str, _Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self.commits: list[Commit] = []
        self.lfs_uploads: list[str] = []  # oids whose bytes were PUT
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> FakeHub:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what the tests read ----------------------------------------------------------------------------
    def files(self, repo_id: str) -> dict[str, bytes]:
        """Path -> content of the repo's head (LFS files resolved to their bytes)."""
        return dict(self.repos[repo_id].files)

    def tokens_seen(self) -> set[str | None]:
        return {r.token for r in self.requests}

    # ---- the API --------------------------------------------------------------------------------------------
    def _repo(self, repo_type: str, repo_id: str) -> _Repo | None:
        repo = self.repos.get(repo_id)
        return repo if repo is not None and repo.repo_type == repo_type else None

    def create_repo(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name, org = body.get("name"), body.get("organization") or self.user
        rtype = body.get("type") or "model"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            return 400, {"error": f"invalid repo name {name!r}"}
        repo_id = f"{org}/{name}"
        url = f"{self.endpoint}/{'' if rtype == 'model' else rtype + 's/'}{repo_id}"
        with self._lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this repo", "url": url}
            private = bool(body.get("private")) or body.get("visibility") == "private"  # 1.x / 2.x clients
            self.repos[repo_id] = _Repo(rtype, private,
                                        {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"})
        return 200, {"url": url, "name": repo_id}

    def _file_entry(self, path: str, data: bytes) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data), "oid": git_blob_oid(data)}
        if self._is_lfs(path, data):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    @staticmethod
    def _dir_entry(path: str) -> dict[str, Any]:
        return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()}

    def tree(self, repo: _Repo, prefix: str, recursive: bool = True) -> list[dict[str, Any]]:
        """Entries under ``prefix``: every file (recursive, what uploads diff against), or the immediate
        children with their folders (what ``HfFileSystem.ls`` asks for)."""
        prefix = prefix.strip("/")
        out: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for path, data in sorted(repo.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            if recursive:
                out.append(self._file_entry(path, data))
                parts = rest.split("/")[:-1]
                dirs.update("/".join(filter(None, [prefix, *parts[: i + 1]])) for i in range(len(parts)))
            elif "/" in rest:
                dirs.add("/".join(filter(None, [prefix, rest.split("/", 1)[0]])))
            else:
                out.append(self._file_entry(path, data))
        return [self._dir_entry(d) for d in sorted(dirs)] + out

    def paths_info(self, repo: _Repo, paths: list[str]) -> list[dict[str, Any]]:
        out = []
        for p in paths:
            p = p.strip("/")
            if p in repo.files:
                out.append(self._file_entry(p, repo.files[p]))
            elif any(f.startswith(p + "/") for f in repo.files):
                out.append(self._dir_entry(p))
        return out

    @staticmethod
    def _is_lfs(path: str, data_or_sample: bytes, size: int | None = None) -> bool:
        size = len(data_or_sample) if size is None else size
        return path.lower().endswith(LFS_EXTENSIONS) or size >= LFS_MIN_BYTES or b"\0" in data_or_sample[:512]

    def preupload(self, repo: _Repo, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        files = body.get("files")
        if not isinstance(files, list):
            return 400, {"error": "files must be a list"}
        out = []
        for f in files:
            path, size = f.get("path"), f.get("size")
            if not isinstance(path, str) or not isinstance(size, int):
                return 400, {"error": "each file needs path and size"}
            sample = base64.b64decode(f.get("sample") or "")
            lfs = self._is_lfs(path, sample, size)
            old = repo.files.get(path)
            oid = None
            if old is not None:
                oid = hashlib.sha256(old).hexdigest() if self._is_lfs(path, old) else git_blob_oid(old)
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return 200, {"files": out, "commitOid": repo.head}

    def lfs_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("operation") != "upload" or body.get("hash_algo", "sha256") != "sha256":
            return 422, {"message": "only sha256 uploads are supported"}
        objects = []
        for o in body.get("objects") or []:
            oid, size = o.get("oid"), o.get("size")
            if not (isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid) and isinstance(size, int)):
                return 422, {"message": "malformed object"}
            obj: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.lfs_objects:  # already stored: no action, the client skips the upload
                obj["actions"] = {"upload": {"href": f"{self.endpoint}/__lfs/{oid}/{size}", "header": {}}}
            objects.append(obj)
        return 200, {"transfer": "basic", "objects": objects}

    def lfs_put(self, oid: str, size: int, data: bytes) -> tuple[int, dict[str, Any]]:
        if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
            return 400, {"error": "content does not match the announced oid/size"}
        with self._lock:
            self.lfs_objects[oid] = data
            self.lfs_uploads.append(oid)
        return 200, {}

    def commit(self, repo_id: str, repo: _Repo, lines: list[dict[str, Any]], token: str | None
               ) -> tuple[int, dict[str, Any]]:
        if not lines or lines[0].get("key") != "header":
            return 400, {"error": "the first line must be the commit header"}
        summary = (lines[0].get("value") or {}).get("summary") or ""
        if not summary:
            return 400, {"error": "empty commit message"}
        new = dict(repo.files)
        c = Commit(repo_id, summary, token)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path")
            if not isinstance(path, str) or path.startswith("/") or ".." in path.split("/"):
                return 400, {"error": f"invalid path {path!r}"}
            if key == "file":
                if value.get("encoding") != "base64":
                    return 400, {"error": "regular files must be base64"}
                new[path] = base64.b64decode(value["content"])
                c.added.append(path)
            elif key == "lfsFile":
                data = self.lfs_objects.get(value.get("oid", ""))
                if data is None or len(data) != value.get("size"):
                    return 400, {"error": f"LFS object of {path} was not uploaded"}
                new[path] = data
                c.added.append(path)
            elif key == "deletedFile":
                if path not in new:
                    return 400, {"error": f"cannot delete {path}: not in the repo"}
                del new[path]
                c.deleted.append(path)
            elif key == "deletedFolder":
                gone = [p for p in new if p.startswith(path.rstrip("/") + "/")]
                for p in gone:
                    del new[p]
                c.deleted.extend(gone)
            else:
                return 400, {"error": f"unknown commit operation {key!r}"}
        readme = new.get("README.md")
        if readme is not None and "README.md" in c.added:
            problem = validate_card(readme.decode("utf-8", "replace"))
            if problem:
                return 400, {"error": problem}
        with self._lock:
            repo.files = new
            repo.head = hashlib.sha1(f"{repo.head}{summary}{len(self.commits)}".encode()).hexdigest()
            c.oid = repo.head
            self.commits.append(c)
        return 200, {"commitUrl": f"{self.endpoint}/datasets/{repo_id}/commit/{repo.head}",
                     "commitOid": repo.head, "success": True}


def validate_card(text: str) -> str | None:
    """None when the card's YAML front matter parses to a mapping (as the Hub's validate-yaml demands)."""
    if not text.startswith("---"):
        return None
    parts = text.split("---", 2)
    if len(parts) < 3:
        return "unterminated YAML front matter"
    try:
        meta = yaml.safe_load(parts[1])
    except yaml.YAMLError as exc:
        return f"invalid YAML: {exc}"
    if meta is not None and not isinstance(meta, dict):
        return "YAML front matter must be a mapping"
    for cfg in (meta or {}).get("configs", []) or []:
        if not isinstance(cfg, dict) or "config_name" not in cfg:
            return "each configs entry needs a config_name"
    return None


_REPO_PATH = re.compile(r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/(?P<rest>.*)$")
_RESOLVE = re.compile(r"^/(?P<type>datasets|spaces)/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_LFS_BATCH = re.compile(r"^/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return  # never log (headers hold tokens)

        # ---- plumbing ----
        def _token(self) -> str | None:
            auth = self.headers.get("authorization") or ""
            return auth[7:] if auth.lower().startswith("bearer ") else None

        def _body(self) -> bytes:
            n = int(self.headers.get("content-length") or 0)
            return self.rfile.read(n) if n else b""

        def _send(self, status: int, obj: Any, ctype: str = "application/json") -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            if status >= 400 and isinstance(obj, dict) and "error" in obj:
                self.send_header("x-error-message", str(obj["error"])[:200])
            self.end_headers()
            if self.command != "HEAD":  # a HEAD answer has no body (one would corrupt the kept-alive connection)
                self.wfile.write(data)

        def _authorised(self, repo: _Repo | None = None, write: bool = True) -> bool:
            token = self._token()
            if token in hub.tokens:
                return True
            if not write and repo is not None and not repo.private and token is None:
                return True
            self._send(401, {"error": "Invalid credentials in Authorization header"})
            return False

        def _record(self) -> str:
            path = urlparse(self.path).path
            hub.requests.append(RecordedRequest(self.command, path, self._token()))
            return path

        # ---- verbs ----
        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            path = self._record()
            if _RESOLVE.match(path):
                return self._resolve(path)
            m = _REPO_PATH.match(path)
            if not m:
                return self._send(404, {"error": "not found"})
            repo_id, rtype = unquote(m.group("repo")), m.group("type")[:-1]
            repo = hub._repo(rtype, repo_id)
            if repo is None:
                return self._send(404, {"error": "Repository not found"})
            if not self._authorised(repo, write=False):
                return None
            rest = m.group("rest")
            if rest.startswith("tree/"):
                prefix = unquote(rest.split("/", 2)[2]) if rest.count("/") >= 2 else ""
                query = parse_qs(urlparse(self.path).query)
                recursive = (query.get("recursive") or ["true"])[0].lower() in ("1", "true")
                return self._send(200, hub.tree(repo, prefix, recursive))
            if rest.startswith("revision/"):
                return self._send(200, {"id": repo_id, "sha": repo.head, "private": repo.private,
                                        "siblings": [{"rfilename": p} for p in sorted(repo.files)]})
            return self._send(404, {"error": "not found"})

        def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
            self._resolve(self._record(), head=True)

        def _resolve(self, path: str, head: bool = False) -> None:
            """``/<type>s/<repo>/resolve/<rev>/<path>``: a file's bytes (HTTP Range honoured), as hf_hub_download
            and HfFileSystem read them; any revision serves the head (the stand-in keeps no history)."""
            m = _RESOLVE.match(path)
            repo = hub._repo(m.group("type")[:-1], unquote(m.group("repo"))) if m else None
            data = repo.files.get(unquote(m.group("path"))) if m and repo is not None else None
            if repo is None or data is None:
                return self._send(404, {"error": "Entry not found"})
            if not self._authorised(repo, write=False):
                return None
            start, end, status = 0, len(data) - 1, 200
            rng = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("range") or "")
            if rng and data:
                a, b = rng.groups()
                start, end = (int(a), min(int(b or len(data) - 1), len(data) - 1)) if a else (len(data) - int(b), end)
                status = 206
            body = data[start:end + 1]
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.send_header("accept-ranges", "bytes")
            self.send_header("x-repo-commit", repo.head)
            self.send_header("etag", f'"{git_blob_oid(data)}"')
            if hub._is_lfs(unquote(m.group("path")), data):
                self.send_header("x-linked-etag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("x-linked-size", str(len(data)))
            if status == 206:
                self.send_header("content-range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return None

        def do_PUT(self) -> None:  # noqa: N802 - stdlib naming
            path = self._record()
            m = re.fullmatch(r"/__lfs/([0-9a-f]{64})/(\d+)", path)
            if not m:
                return self._send(404, {"error": "not found"})
            status, obj = hub.lfs_put(m.group(1), int(m.group(2)), self._body())
            return self._send(status, obj)

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            path = self._record()
            raw = self._body()
            if path == "/api/repos/create":
                if not self._authorised():
                    return None
                return self._send(*hub.create_repo(json.loads(raw or b"{}")))
            if path == "/api/validate-yaml":
                body = json.loads(raw or b"{}")
                problem = validate_card(str(body.get("content") or ""))
                return self._send(400, {"error": problem}) if problem else self._send(200, {})
            m = _LFS_BATCH.match(path)
            if m:
                repo = hub._repo((m.group("type") or "models")[:-1], unquote(m.group("repo")))
                if repo is None:
                    return self._send(404, {"message": "Repository not found"})
                if not self._authorised():
                    return None
                status, obj = hub.lfs_batch(json.loads(raw or b"{}"))
                return self._send(status, obj, "application/vnd.git-lfs+json")
            m = _REPO_PATH.match(path)
            if not m:
                return self._send(404, {"error": "not found"})
            repo_id, rtype, rest = unquote(m.group("repo")), m.group("type")[:-1], m.group("rest")
            repo = hub._repo(rtype, repo_id)
            if repo is None:
                return self._send(404, {"error": "Repository not found"})
            if not self._authorised(repo, write=not rest.startswith("paths-info/")):
                return None
            if rest.startswith("paths-info/"):
                form = parse_qs(raw.decode("utf-8"))
                return self._send(200, hub.paths_info(repo, form.get("paths", [])))
            if rest.startswith("preupload/"):
                return self._send(*hub.preupload(repo, json.loads(raw or b"{}")))
            if rest.startswith("commit/"):
                if "create_pr" in parse_qs(urlparse(self.path).query):
                    return self._send(400, {"error": "pull requests are not supported by the stand-in"})
                lines = [json.loads(x) for x in raw.splitlines() if x.strip()]
                return self._send(*hub.commit(repo_id, repo, lines, self._token()))
            return self._send(404, {"error": "not found"})

    return Handler
