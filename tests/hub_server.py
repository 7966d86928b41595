"""A minimal Hugging Face hub HTTP API over local folders, for the test suite's replica (``python hub_server.py ROOT
PORT``): repository info, tree listings and file downloads, with the headers and error codes the real
``huggingface_hub`` client reads (``X-Repo-Commit``, ``ETag``, ``X-Error-Code``); and, as raw.githubusercontent.com
does, plain files of GitHub repositories at a commit, under ``/releases/{owner}/{name}/{commit}/{path}`` (GET and
HEAD, 404 for anything else).

Why not a package: olah 0.5.4 (a self-hosted hub mirror) serves local git repositories offline, but answers the
revision-less repository info and every missing optional file (``added_tokens.json``, ...) with 401 "repository
not found" where the hub says 404 "entry not found", so transformers cannot load a model through it;
hf-local-hub 3.0.0's server is a Go binary that its wheel does not ship.

``ROOT/{models,datasets}/{owner}/{name}/`` holds each repository's files; its one revision is ``main``, whose commit
id is a hash of the files. ``ROOT/releases/{owner}/{name}/{commit}/`` holds a GitHub repository's files at a commit.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

ROOT = Path(".")
API = re.compile(r"^/api/(models|datasets)/([^/]+/[^/]+)(?:/revision/([^/]+))?/?$")
TREE = re.compile(r"^/api/(models|datasets)/([^/]+/[^/]+)/tree/([^/]+)/?(.*)$")
RESOLVE = re.compile(r"^/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
RELEASE = re.compile(r"^/releases/([^/]+/[^/]+/[0-9a-f]{40}/.+)$")


def _oid(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id, as the hub's oid


@cache
def _commit(repo_dir: Path) -> str:
    digest = hashlib.sha1()
    for f in sorted(p for p in repo_dir.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(repo_dir)}:{_oid(f)}".encode())
    return digest.hexdigest()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet: the tests read the clients' behaviour, not the server's log
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None):
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload, headers: dict | None = None):
        self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, code: str, message: str):
        self._send(404, json.dumps({"error": message}).encode(), {"X-Error-Code": code, "X-Error-Message": message,
                                                                  "Content-Type": "application/json"})

    def _repo(self, kind: str, repo: str, revision: str | None):
        folder = ROOT / kind / repo
        if not folder.is_dir():
            self._error("RepoNotFound", "Repository not found")
            return None
        if revision not in (None, "main", _commit(folder)):
            self._error("RevisionNotFound", "Revision not found")
            return None
        return folder

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlparse(self.path)
        path = unquote(url.path)
        if match := API.match(path):
            kind, repo, revision = match.groups()
            if (folder := self._repo(kind, repo, revision)) is not None:
                files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
                self._json({"id": repo, "_id": repo, "sha": _commit(folder), "private": False, "gated": False,
                            "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                            "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                            "siblings": [{"rfilename": f} for f in files]})
        elif match := TREE.match(path):
            kind, repo, revision, sub = match.groups()
            if (folder := self._repo(kind, repo, revision)) is not None:
                self._tree(folder, sub.strip("/"), parse_qs(url.query).get("recursive", ["false"])[0] == "true")
        elif match := RESOLVE.match(path):
            dataset, repo, revision, name = match.groups()
            if (folder := self._repo("datasets" if dataset else "models", repo, revision)) is not None:
                self._file(folder, name)
        elif (match := RELEASE.match(path)) and ".." not in match.group(1).split("/"):
            target = ROOT / "releases" / match.group(1)
            if target.is_file():
                self._send(200, target.read_bytes(), {"Content-Type": "text/plain; charset=utf-8"})
            else:
                self._send(404, b"404: Not Found", {"Content-Type": "text/plain; charset=utf-8"})
        else:
            self._error("EntryNotFound", f"no route for {path}")

    def _tree(self, folder: Path, sub: str, recursive: bool):
        base = folder / sub
        if not base.is_dir():
            return self._error("EntryNotFound", f"{sub} does not exist")
        entries = sorted(base.rglob("*") if recursive else base.iterdir())
        self._json([{"type": "file", "oid": _oid(p), "size": p.stat().st_size, "path": str(p.relative_to(folder))}
                    if p.is_file() else {"type": "directory", "oid": "0" * 40, "size": 0,
                                         "path": str(p.relative_to(folder))} for p in entries])

    def _file(self, folder: Path, name: str):
        target = folder / name
        if not target.is_file():
            return self._error("EntryNotFound", f"{name} does not exist")
        data = target.read_bytes()
        headers = {"X-Repo-Commit": _commit(folder), "ETag": f'"{_oid(target)}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if (ranged := re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))):
            start, end = int(ranged.group(1)), int(ranged.group(2) or len(data) - 1)
            self.send_response(206)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start:end + 1]
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return None
        return self._send(200, data, headers)


def main() -> None:
    global ROOT
    ROOT = Path(sys.argv[1])
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()


if __name__ == "__main__":
    main()
