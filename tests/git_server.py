"""git's smart HTTP protocol on 127.0.0.1, served by git's own ``git http-backend``
(a CGI program) behind a small server that stands for a provider's git host:
every request must carry HTTP Basic credentials, and the password is let in
only when the OAuth provider accepts it as an access token (its userinfo
endpoint answers 200 to ``Authorization: Bearer <password>``).

``accepted`` lists the tokens let in, in order; ``refused`` counts the requests
turned away (401), so that tests see which token git brought.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx

GIT_HTTP_BACKEND = "http-backend"
# What git's credential helper is told: a fixed realm.
CHALLENGE = 'Basic realm="extauth e2e git"'


def make_repository(root: Path, name: str = "app.git") -> Path:
    """A bare repository ``name`` under ``root`` with one commit (README)."""
    work = root / "work"
    env = {**os.environ, "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.com",
           "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.com",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(root)}

    def git(*args: str, cwd: Path | None = None) -> None:
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                       timeout=60)

    git("init", "-q", "-b", "main", str(work))
    (work / "README").write_text("cloned through extauth\n")
    git("add", "README", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    bare = root / name
    git("clone", "-q", "--bare", str(work), str(bare))
    return bare


class GitServer:
    """``git http-backend`` for the repositories under ``root``, behind Basic auth
    checked at ``userinfo_url``."""

    def __init__(self, root: Path, userinfo_url: str) -> None:
        self.root = root
        self.userinfo_url = userinfo_url
        self.accepted: list[str] = []
        self.refused = 0
        self.lock = threading.Lock()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.http.daemon_threads = True
        self.port = self.http.server_address[1]
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GitServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def token_ok(self, token: str) -> bool:
        if not token:
            return False
        r = httpx.get(self.userinfo_url, headers={"Authorization": f"Bearer {token}"},
                      timeout=10)
        return r.status_code == 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return  # the tests read `accepted` and `refused` instead

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _credentials(self) -> tuple[str, str]:
                scheme, _, value = self.headers.get("Authorization", "").partition(" ")
                if scheme.lower() != "basic":
                    return "", ""
                try:
                    user, _, password = base64.b64decode(value).decode().partition(":")
                except ValueError:
                    return "", ""
                return user, password

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _serve(self) -> None:
                body = self._body()
                user, password = self._credentials()
                if not server.token_ok(password):
                    with server.lock:
                        server.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", CHALLENGE)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with server.lock:
                    server.accepted.append(password)
                url = urlsplit(self.path)
                env = {
                    "PATH": os.environ.get("PATH", ""),
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "HOME": str(server.root),
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": url.path,
                    "QUERY_STRING": url.query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": user,
                    "REMOTE_ADDR": self.client_address[0],
                }
                for header in ("Git-Protocol", "Content-Encoding"):
                    if self.headers.get(header):
                        env["HTTP_" + header.upper().replace("-", "_")] = self.headers[header]
                cgi = subprocess.run(["git", GIT_HTTP_BACKEND], input=body, env=env,
                                     capture_output=True, timeout=60)
                head, _, payload = cgi.stdout.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = cgi.stdout.partition(b"\n\n")
                status, headers = 200, []
                for line in head.decode("latin-1").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
