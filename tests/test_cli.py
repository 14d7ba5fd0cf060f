"""The CLI: exit codes, what goes to stdout and stderr, and what is stored."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from extauth.cli import RedactFilter, main
from extauth.store._schema import SQLITE_MIGRATIONS
from tests.live import EXTAUTH
from tests.postgres import PostgresServer


def run(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)


@pytest.fixture
def db(database: str) -> str:
    """The CLI's --db: each test runs on a SQLite file and on PostgreSQL."""
    return database


def test_users_create_prints_only_the_token(db: str, store_at) -> None:
    r = run("users", "create", "alice", "--db", db)
    assert r.exit_code == 0
    token = r.stdout.strip()
    assert len(token) == 33 and token[10] == "-"
    assert "created user 'alice'" in r.stderr
    user = store_at(db).get_user("alice")
    assert user is not None
    [key] = store_at(db).api_keys_for_user(user.id)
    assert key.id == token[:10] and key.expires_at is None


def test_users_create_twice_fails_with_a_hint(db: str) -> None:
    run("users", "create", "alice", "--db", db)
    r = run("users", "create", "alice", "--db", db)
    assert r.exit_code == 1
    assert "user 'alice' already exists" in r.stderr and "tokens create" in r.stderr


def test_users_create_rejects_a_bad_name(db: str) -> None:
    r = run("users", "create", "no spaces", "--db", db)
    assert r.exit_code == 2
    assert "NAME" in r.stderr


def test_db_from_env(db: str, store_at) -> None:
    assert run("users", "create", "bob", env={"EXTAUTH_DB": db}).exit_code == 0
    assert store_at(db).get_user("bob") is not None


def test_tokens_create_list_delete(db: str) -> None:
    run("users", "create", "alice", "--db", db)
    r = run("tokens", "create", "alice", "--lifetime", "30d", "--db", db)
    assert r.exit_code == 0
    token = r.stdout.strip()
    listed = run("tokens", "list", "alice", "--db", db).stdout
    assert token[:10] in listed and token[11:] not in listed
    assert listed.count("\n") == 2 and "expires never" in listed
    r = run("tokens", "delete", token[:10], "--db", db)
    assert r.exit_code == 0
    assert token[:10] not in run("tokens", "list", "alice", "--db", db).stdout
    r = run("tokens", "delete", token[:10], "--db", db)
    assert r.exit_code == 1 and "no token with id" in r.stderr


@pytest.mark.parametrize("args, message", [
    (("tokens", "create", "ghost"), "no user named 'ghost'"),
    (("tokens", "list", "ghost"), "no user named 'ghost'"),
])
def test_tokens_for_unknown_user_fail(db: str, args: tuple[str, ...], message: str) -> None:
    r = run(*args, "--db", db)
    assert r.exit_code == 1 and message in r.stderr


def test_tokens_create_rejects_a_bad_lifetime(db: str) -> None:
    run("users", "create", "alice", "--db", db)
    r = run("tokens", "create", "alice", "--lifetime", "forever", "--db", db)
    assert r.exit_code == 2 and "--lifetime" in r.stderr


def test_providers_list_masks_secrets() -> None:
    env = {"CODER_EXTERNAL_AUTH_0_TYPE": "corp", "CODER_EXTERNAL_AUTH_0_CLIENT_ID": "cid",
           "CODER_EXTERNAL_AUTH_0_CLIENT_SECRET": "topsecret",
           "CODER_EXTERNAL_AUTH_0_TOKEN_URL": "https://x.example/token"}
    r = run("providers", "list", env=env)
    assert r.exit_code == 0
    assert "corp (corp)" in r.stdout and "token_url: https://x.example/token" in r.stdout
    assert "topsecret" not in r.stdout and "client_secret: ****" in r.stdout
    data = json.loads(run("providers", "list", "--json", env=env).stdout)
    assert data[0]["client_secret"] == "****"


def test_config_check_ok_and_failing(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("external_auth:\n  - {type: x, client_id: c, token_url: 'https://x/t'}\n")
    r = run("config", "check", "--config", str(good))
    assert r.exit_code == 0 and "1 provider(s): x" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("external_auth:\n  - {type: x, token_url: 'https://x/t'}\n")
    r = run("config", "check", "--config", str(bad))
    assert r.exit_code == 1
    assert "external_auth[0] (id 'x'): 'client_id' must be provided" in r.stderr


def test_serve_rejects_demo_with_several_workers(db: str) -> None:
    r = run("serve", "--demo", "--workers", "2", "--db", db)
    assert r.exit_code == 2 and "one worker" in r.stderr


def test_serve_stops_on_a_config_error(tmp_path: Path, db: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("external_auth:\n  - {type: x, token_url: 'https://x/t'}\n")
    r = run("serve", "--config", str(bad), "--db", db)
    assert r.exit_code == 1 and "'client_id' must be provided" in r.stderr


CODER_ENV = {
    # Coder starts with all of this: a key it does not know, and a Bitbucket
    # Server without the auth URL its other URLs are derived from.
    "CODER_EXTERNAL_AUTH_0_TYPE": "github", "CODER_EXTERNAL_AUTH_0_CLIENT_ID": "gh",
    "CODER_EXTERNAL_AUTH_0_MCP_URL": "https://api.githubcopilot.com/mcp/",
    "CODER_EXTERNAL_AUTH_1_TYPE": "bitbucket-server", "CODER_EXTERNAL_AUTH_1_CLIENT_ID": "bb",
}


def test_config_check_reports_what_coder_would_start_with() -> None:
    r = run("config", "check", env=CODER_ENV)
    assert r.exit_code == 0, r.stderr
    assert "warning: CODER_EXTERNAL_AUTH_0_MCP_URL (provider 'github')" in r.stderr
    assert ("warning: provider 'bitbucket-server' is unusable: it has no token URL: set "
            "CODER_EXTERNAL_AUTH_1_AUTH_URL") in r.stderr
    assert "2 provider(s): github, bitbucket-server (1 unusable: bitbucket-server)" in r.stderr


def test_config_check_strict_refuses_it() -> None:
    r = run("config", "check", "--strict", env=CODER_ENV)
    assert r.exit_code == 1
    assert "config: 2 problem(s) above (--strict)" in r.stderr
    assert "CODER_EXTERNAL_AUTH_0_MCP_URL" in r.stderr
    good = {k: v for k, v in CODER_ENV.items() if k.startswith("CODER_EXTERNAL_AUTH_0")
            and not k.endswith("MCP_URL")}
    assert run("config", "check", "--strict", env=good).exit_code == 0


def test_providers_list_shows_unusable_providers_and_ignored_keys() -> None:
    r = run("providers", "list", env=CODER_ENV)
    assert r.exit_code == 0
    assert "bitbucket-server (bitbucket-server) UNUSABLE" in r.stdout
    assert "  unusable: it has no token URL" in r.stdout
    assert "  warning: CODER_EXTERNAL_AUTH_0_MCP_URL (provider 'github')" in r.stdout
    [github, bitbucket] = json.loads(run("providers", "list", "--json", env=CODER_ENV).stdout)
    assert github["unusable"] == "" and len(github["warnings"]) == 1
    assert bitbucket["unusable"].startswith("it has no token URL")


def test_access_log_redacts_session_tokens() -> None:
    import logging

    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/api/v2/x?coder_session_token=abc-def&a=1",
                                "1.1", 200), None)
    assert RedactFilter().filter(record)
    assert record.getMessage() == (
        '127.0.0.1:5 - "GET /api/v2/x?coder_session_token=****&a=1 HTTP/1.1" 200')


@pytest.mark.parametrize("target, shown", [
    ("/x?coder%5Fsession%5Ftoken=abc-def&a=1", "/x?coder%5Fsession%5Ftoken=****&a=1"),
    ("/x?a=1&access_token=t0k3n", "/x?a=1&access_token=****"),
    ("/cb?code=c0de&state=st4te&redirect=%2Fw", "/cb?code=****&state=****&redirect=%2Fw"),
    ("/x?coder_session_token", "/x?coder_session_token"),
    ("/x", "/x"),
    # a callback's query carried back through the sign-in page, encoded once more
    ("/login?redirect=%2Fexternal-auth%2Fgh%2Fcallback%3Fcode%3Dc0de%26state%3Dst4te",
     "/login?redirect=/external-auth/gh/callback%3Fcode%3D****%26state%3D****"),
    ("/login?redirect=%2Flogin%3Fredirect%3D%252Fcb%253Fcode%253Dc0de",
     "/login?redirect=/login%3Fredirect%3D/cb%253Fcode%253D****"),
])
def test_access_log_redaction_reads_names_as_the_server_does(target: str, shown: str) -> None:
    from extauth.cli.serve import redact_query

    assert redact_query(target) == shown


def test_access_log_redacts_the_access_token_parameter() -> None:
    """Coder's fifth token source is a query parameter too: masked like the others."""
    import logging

    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET",
                                "/api/v2/external-auth?a=1&access_token=abc-def", "1.1", 200),
                               None)
    assert RedactFilter().filter(record)
    assert "abc-def" not in record.getMessage()
    assert "access_token=" in record.getMessage() and "a=1" in record.getMessage()


@pytest.mark.postgres
def test_a_bare_postgresql_url_takes_the_pg_variables(postgres_server: PostgresServer,
                                                      store_at) -> None:
    """--db postgresql:// with the standard PG* variables, as libpq reads them."""
    url = postgres_server.new_schema()
    env = {**os.environ, **postgres_server.environment(url)}
    r = subprocess.run([*EXTAUTH, "users", "create", "zed", "--db", "postgresql://"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert store_at(url).get_user("zed") is not None


# -- extauth db: migrate and copy -------------------------------------------------------


def _deployment(where: str, *names: str) -> None:
    for name in names:
        assert run("users", "create", name, "--db", where).exit_code == 0


def test_db_copy_refuses_a_target_holding_other_rows(db: str, tmp_path: Path, store_at) -> None:
    source = str(tmp_path / "source.db")
    _deployment(source, "alice", "bob")
    _deployment(db, "mallory")
    r = run("db", "copy", "--from", source, "--to", db)
    assert r.exit_code == 1
    assert "already holds rows that are not the source's: users (1 row(s))" in r.stderr
    assert [u.name for u in store_at(db).list_users()] == ["mallory"]


def test_db_copy_goes_on_where_an_interrupted_copy_stopped(db: str, tmp_path: Path,
                                                            store_at) -> None:
    source = str(tmp_path / "source.db")
    _deployment(source, "alice", "bob", "carol")
    from extauth.store._copy import TABLES

    target = store_at(db)
    target.migrate()
    users = TABLES[0]
    target.insert_rows(users, next(store_at(source).rows_after(users, None, 2)))
    r = run("db", "copy", "--from", source, "--to", db)
    assert r.exit_code == 0, r.stderr
    assert "users: 1 copied, 3 of 3 there" in r.stderr
    assert [u.name for u in target.list_users()] == ["alice", "bob", "carol"]


def test_db_copy_never_creates_nor_migrates_its_source(db: str, tmp_path: Path,
                                                       store_at) -> None:
    missing = tmp_path / "missing.db"
    r = run("db", "copy", "--from", str(missing), "--to", db)
    assert r.exit_code == 1 and f"--from: no database file at {missing}" in r.stderr
    assert not missing.exists()
    # a source one migration behind (as after an upgrade) is left as it is
    old = str(tmp_path / "old.db")
    latest = len(SQLITE_MIGRATIONS)
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                     "applied_at TEXT NOT NULL)")
        for version, script in enumerate(SQLITE_MIGRATIONS[:-1], start=1):
            conn.executescript(script)
            conn.execute("INSERT INTO schema_migrations VALUES (?, '2026-01-01')", [version])
        conn.execute("INSERT INTO users (name, created_at) VALUES ('alice', '2026-01-01')")
    conn.close()
    store = store_at(old)
    r = run("db", "copy", "--from", old, "--to", db)
    assert r.exit_code == 1
    assert (f"at schema version {latest - 1}, this extauth copies version {latest}: "
            f"run 'extauth db migrate --db {old}' first") in r.stderr
    assert store.schema_version() == latest - 1
    r = run("db", "migrate", "--db", old)
    assert r.exit_code == 0 and f"at schema version {latest}" in r.stderr
    assert run("db", "copy", "--from", old, "--to", db).exit_code == 0
    assert [u.name for u in store_at(db).list_users()] == ["alice"]
