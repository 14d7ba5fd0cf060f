"""A database that stops answering: 503 with Coder's ``Response``, and
``/healthz`` says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from extauth import sessions
from extauth.app import create_app
from extauth.settings import Settings, build_provider
from extauth.store import open_store
from tests.conftest import TestClient
from tests.fake_provider import FakeProvider
from tests.postgres import PostgresServer


@pytest.mark.postgres
def test_a_database_that_is_down_is_503_and_healthz_says_so(fake: FakeProvider) -> None:
    server = PostgresServer().start()
    try:
        url = server.new_schema()
        settings = Settings(database=url, providers=(build_provider(fake.config(), "t"),),
                            validate_responses=True, db_timeout=1.0)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            store = open_store(url)
            headers = {"Coder-Session-Token": sessions.create_token(
                store, store.create_user("alice"))}
            store.close()
            assert client.get("/api/v2/external-auth", headers=headers).status_code == 200
            server.stop()
            for path in ("/api/v2/external-auth", "/healthz"):
                r = client.get(path, headers=headers)
                assert r.status_code == 503, (path, r.text)
                assert r.headers["content-type"] == "application/json"
                body = r.json()
                assert body["message"] == "The database is not reachable."
                assert "does not answer" in body["detail"]
                assert str(server.port) not in r.text  # where the database is: the log's
    finally:
        server.stop()


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:hunter2@db:5432/x", "postgresql://u:****@db:5432/x"),
    ("postgresql://u@db/x?password=hunter2&sslmode=require",
     "postgresql://u@db/x?password=****&sslmode=require"),
    ("postgresql://u@db/x?sslmode=require&sslpassword=hunter2",
     "postgresql://u@db/x?sslmode=require&sslpassword=****"),
    ("postgresql://", "postgresql://"),
])
def test_messages_never_show_a_database_password(url: str, shown: str) -> None:
    from extauth.store.postgres import redacted

    assert redacted(url) == shown


@pytest.mark.postgres
def test_connections_the_database_dropped_are_replaced_not_handed_out(
        postgres_server: PostgresServer) -> None:
    """After a restart or a failover the pool's idle connections are dead: the next
    query gets a new one instead of an error."""
    import psycopg

    store = open_store(postgres_server.new_schema())
    try:
        store.migrate()
        assert store.ping()
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE pid <> pg_backend_pid() AND application_name = ''"
                          " AND backend_type = 'client backend'")
        assert store.ping()
        assert store.create_user("after-the-restart").name == "after-the-restart"
    finally:
        store.close()


@pytest.mark.sqlite
def test_a_sqlite_file_locked_past_the_timeout_is_503(fake: FakeProvider, tmp_path: Path) -> None:
    """Another process holding the write lock longer than ``EXTAUTH_DB_TIMEOUT``:
    the caller gets the database's 503, not a 500."""
    import sqlite3

    path = tmp_path / "extauth.db"
    settings = Settings(database=str(path), providers=(build_provider(fake.config(), "t"),),
                        validate_responses=True, db_timeout=0.2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        store = open_store(path)
        headers = {"Coder-Session-Token": sessions.create_token(
            store, store.create_user("alice"))}
        store.close()
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock; readers go on (WAL)
        try:
            assert client.get("/api/v2/external-auth", headers=headers).status_code == 200
            # Starting a device flow records the grant: a write.
            r = client.get("/api/v2/external-auth/fake/device", headers=headers)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert r.status_code == 503, r.text
        assert r.json()["message"] == "The database is not reachable."
        assert str(path) not in r.text
        assert client.get("/api/v2/external-auth/fake/device",
                          headers=headers).status_code == 200
