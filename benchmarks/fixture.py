"""The benchmark's fixture: the provider config and the seeded databases.

Everything the servers are compared on: four providers at the fake provider
(``fake``, ``fake2``, ``fake3`` validated at ``/user``, ``slow`` at
``/slow/user``), and a database with the bench users, their session tokens
and links (SQLite or PostgreSQL), or, for scenario 6, 100,000 users and
1,000,000 links (SQLite).
"""

from __future__ import annotations

import socket
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from extauth import sessions
from extauth.store import is_postgres, open_store, utcnow
from extauth.store._copy import TABLES

ROOT = Path(__file__).resolve().parent.parent
API = "/api/v2/external-auth"
HANDOFF = "/api/v2/workspaceagents/me/external-auth"
PROVIDER_DELAY = 0.020
SLOW_DELAY = 2.0
LINKED = ("fake", "fake2", "fake3")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(path: Path, provider_url: str) -> None:
    """Three linked providers (fake, fake2, fake3) and ``slow``, all at the fake provider."""

    def provider(pid: str, validate: str) -> dict[str, Any]:
        return {
            "id": pid,
            "type": "fake-oauth",
            "client_id": "bench-client",
            "client_secret": "bench-secret-5f3a9c",
            "auth_url": f"{provider_url}/authorize",
            "token_url": f"{provider_url}/token",
            "validate_url": f"{provider_url}{validate}",
            "device_flow": True,
            "device_code_url": f"{provider_url}/device/code",
            "revoke_url": f"{provider_url}/revoke",
            "scopes": ["repo", "read:user"],
        }

    providers = [provider(pid, "/user") for pid in LINKED]
    providers.append(provider("slow", "/slow/user"))
    path.write_text(yaml.safe_dump({"external_auth": providers}))


def seed(db: Path | str, bulk_users: int = 0, bulk_links: int = 0) -> dict[str, str]:
    """A migrated database (a SQLite file, or a ``postgresql://`` URL) with the
    bench users; returns name -> token (session tokens, and the linked user's
    agent token as ``agent``).

    With ``bulk_*`` (SQLite only), first fill it with that many users (each with
    an API key) and links in total (counting the bench users' ones), inserted
    with ``executemany`` in one transaction straight through sqlite3.
    """
    store = open_store(db)
    store.migrate()
    if bulk_users and is_postgres(db):
        raise ValueError("the bulk fixture is written for SQLite")
    bench = {"list": LINKED, "nolink": (), "linked": ("fake",), "device": (), "slow": ("slow",),
             "bad": ()}
    if bulk_users:
        n_bulk = bulk_users - len(bench)
        remaining = bulk_links - sum(len(v) for v in bench.values())
        now = store._ts(utcnow())  # type: ignore[attr-defined]  # SQLite's own format
        expires = store._ts(utcnow() + timedelta(days=30))  # type: ignore[attr-defined]
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO users (id, name, created_at) VALUES (?, ?, ?)",
            ((i, f"user{i:06d}", now) for i in range(1, n_bulk + 1)),
        )
        conn.executemany(
            "INSERT INTO api_keys (id, user_id, secret_hash, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, NULL)",
            ((f"k{i:09d}", i, sessions.hash_secret(f"s{i}"), now) for i in range(1, n_bulk + 1)),
        )
        per_user, extra = divmod(remaining, n_bulk)

        def links() -> Any:
            for i in range(1, n_bulk + 1):
                for k in range(per_user + (1 if i <= extra else 0)):
                    yield (i, f"p{k}", f"gho_{i:06d}_{k}", f"ghr_{i:06d}_{k}", expires, now, now)

        conn.executemany(
            "INSERT INTO external_auth_links (user_id, provider_id, access_token, "
            "refresh_token, expires_at, extra, refresh_failure_reason, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, '{}', '', ?, ?)",
            links(),
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.close()
    tokens: dict[str, str] = {}
    expires_at = utcnow() + timedelta(days=30)
    for name, providers in bench.items():
        user = store.create_user(f"bench-{name}")
        tokens[name] = sessions.create_token(store, user)
        for pid in providers:
            store.upsert_link(user.id, pid, f"gho_bench_{name}_{pid}", f"ghr_bench_{name}_{pid}",
                              expires_at)
    if not bulk_users:  # ten users in all
        for i in range(10 - len(bench)):
            user = store.create_user(f"filler{i}")
            sessions.create_token(store, user)
            store.upsert_link(user.id, "fake", f"gho_filler{i}", "", expires_at)
    # The linked user's agent token: the hand-off reads the same link as scenario 3.
    linked = store.get_user("bench-linked")
    assert linked is not None
    tokens["agent"] = sessions.create_agent_token(store, linked, "bench")
    # A token with a real key id and a wrong secret: the 401 path that reads the DB.
    key_id = tokens["bad"].split("-")[0]
    tokens["bad"] = f"{key_id}-{'x' * sessions.SECRET_LENGTH}"
    store.close()
    return tokens


def db_counts(db: Path | str) -> dict[str, int]:
    store = open_store(db)
    tables = {t.name: t for t in TABLES}
    try:
        return {name: store.table_count(tables[name])
                for name in ("users", "api_keys", "external_auth_links")}
    finally:
        store.close()
