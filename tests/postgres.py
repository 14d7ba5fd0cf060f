"""A real PostgreSQL server for the tests: Debian's ``postgresql`` binaries,
a new cluster in a temp directory, on a free 127.0.0.1 port, stopped at the
end. The server refuses to run as root, so as root it runs as the
``postgres`` user (or ``nobody``). Each test gets a schema of its own."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.live import free_port, log_text, stop_process


def binaries() -> Path | None:
    """The directory of initdb and postgres (the newest installed), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    postgres = shutil.which("postgres")
    return Path(postgres).parent if postgres else None


def _unprivileged() -> dict[str, Any]:
    """Popen arguments that drop root, when we are root."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root, and neither 'postgres' nor 'nobody' exists")


class PostgresServer:
    """One cluster; ``url(schema)`` connects to its database with that schema first."""

    def __init__(self) -> None:
        bindir = binaries()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="extauth-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.as_user = _unprivileged()
        if self.as_user:
            os.chown(self.root, self.as_user["user"], self.as_user["group"])
        self.proc: subprocess.Popen[bytes] | None = None

    def _run(self, *args: str) -> None:
        subprocess.run([str(self.bindir / args[0]), *args[1:]], check=True,
                       capture_output=True, timeout=120, **self.as_user)

    def start(self, timeout: float = 30.0) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-U", "extauth", "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")
        with open(self.log, "ab") as log:
            if self.as_user:
                os.chown(self.log, self.as_user["user"], self.as_user["group"])
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(self.root),
                 # a throwaway cluster: durability buys nothing here
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=300"],
                stdout=log, stderr=subprocess.STDOUT, **self.as_user)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{log_text(self.log)}")
            try:
                with psycopg.connect(self.url(), connect_timeout=1):
                    return self
            except psycopg.OperationalError:  # not accepting connections yet
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgres did not start within {timeout}s:\n{log_text(self.log)}")

    def url(self, schema: str = "") -> str:
        base = f"postgresql://extauth@127.0.0.1:{self.port}/postgres"
        return f"{base}?options=-csearch_path%3D{schema}" if schema else base

    def environment(self, url: str) -> dict[str, str]:
        """libpq's PG* variables naming the same database and schema as ``url``."""
        schema = url.rpartition("search_path%3D")[2]
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": "extauth",
                "PGDATABASE": "postgres", "PGOPTIONS": f"-csearch_path={schema}"}

    def new_schema(self) -> str:
        """A fresh, empty schema; its URL."""
        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT is PostgreSQL's fast shutdown: SIGTERM would wait for every
            # client (a pool's connections) to leave first.
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            stop_process(self.proc)
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)
