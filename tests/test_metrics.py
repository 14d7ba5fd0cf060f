"""Prometheus metrics: rate-limit headers, the link counts the database keeps,
and a real scrape of ``extauth serve --workers 2 --metrics-address`` after a
device flow and a refresh."""

from __future__ import annotations

import math
import signal
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from extauth.links import expires_at
from extauth.metrics import rate_limit
from extauth.store import Store, open_store
from extauth.store._schema import SQLITE_MIGRATIONS
from tests.conftest import sql
from tests.fake_provider import FakeProvider
from tests.live import LiveServer, free_port

NOW = 1_700_000_000.0
API = "/api/v2/external-auth"


# -- rate limits from the providers' headers --------------------------------------------


@pytest.mark.parametrize("headers, status, expected", [
    # GitHub: a Unix time
    ({"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4999",
      "X-RateLimit-Reset": "1700003600"}, 200, (4999.0, 1700003600.0)),
    # GitLab: the same names without X-, a Unix time
    ({"RateLimit-Limit": "600", "RateLimit-Remaining": "12", "RateLimit-Reset": "1700000060"},
     200, (12.0, 1700000060.0)),
    # the IETF draft: seconds from now
    ({"RateLimit-Remaining": "0", "RateLimit-Reset": "30"}, 429, (0.0, NOW + 30)),
    # a rate-limited 403 still says how much is left
    ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000100"}, 403, (0.0, 1700000100.0)),
])
def test_rate_limit_headers_are_read(headers: dict[str, str], status: int,
                                     expected: tuple[float, float]) -> None:
    assert rate_limit(headers, status, NOW) == expected


def test_rate_limit_without_a_reset_has_none() -> None:
    found = rate_limit({"X-RateLimit-Remaining": "7"}, 200, NOW)
    assert found is not None and found[0] == 7.0 and math.isnan(found[1])


@pytest.mark.parametrize("headers, status", [
    ({}, 200),
    ({"X-RateLimit-Remaining": "lots"}, 200),
    # GitHub answers zeros on endpoints without a limit
    ({"X-RateLimit-Limit": "0", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0"}, 200),
    # unauthenticated calls have a limit of their own at GitHub
    ({"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59"}, 401),
])
def test_rate_limit_is_none_when_the_answer_says_nothing_usable(headers: dict[str, str],
                                                               status: int) -> None:
    assert rate_limit(headers, status, NOW) is None


# -- link counts kept by the database ---------------------------------------------------


def test_link_counts_follow_every_change_of_a_link(database: str, store_at) -> None:
    store: Store = store_at(database)
    store.migrate()
    alice, bob = store.create_user("alice"), store.create_user("bob")
    assert store.link_counts() == {}
    store.upsert_link(alice.id, "github", "a1", "r1", expires_at(3600))
    store.upsert_link(bob.id, "github", "b1", "r2", expires_at(3600))
    store.upsert_link(bob.id, "gitlab", "b2", "", None)
    assert store.link_counts() == {("github", "active"): 2, ("gitlab", "active"): 1}
    link = store.get_link(alice.id, "github")
    assert link is not None
    # a refresh replaces tokens: no change of state
    link = store.replace_tokens(link, "a2", "r3", expires_at(3600))
    assert link is not None
    assert store.link_counts()[("github", "active")] == 2
    store.record_refresh_failure(link, "invalid_grant")
    assert store.link_counts() == {("github", "active"): 1, ("github", "refresh_failed"): 1,
                                   ("gitlab", "active"): 1}
    # linking again clears the failure
    store.upsert_link(alice.id, "github", "a3", "r4", expires_at(3600))
    assert store.link_counts()[("github", "refresh_failed")] == 0
    assert store.link_counts()[("github", "active")] == 2
    store.delete_link(bob.id, "gitlab")
    assert store.link_counts()[("gitlab", "active")] == 0
    # deleting a user deletes their links (ON DELETE CASCADE): counted too
    sql(store, "DELETE FROM users WHERE id = ?", (bob.id,))
    assert store.link_counts() == {("github", "active"): 1, ("github", "refresh_failed"): 0,
                                   ("gitlab", "active"): 0}
    rows = sql(store, "SELECT provider_id, CASE WHEN refresh_failure_reason = '' "
               "THEN 'active' ELSE 'refresh_failed' END AS state, COUNT(*) AS n "
               "FROM external_auth_links GROUP BY 1, 2")
    assert {(r["provider_id"], r["state"]): r["n"] for r in rows} == {
        k: v for k, v in store.link_counts().items() if v}


def test_links_moving_between_counts_both_ways_at_once_never_deadlock(database: str,
                                                                     store_at) -> None:
    """Failing one link's refresh while another is linked again moves them between
    the same two count rows in opposite directions, from several writers."""
    store: Store = store_at(database)
    store.migrate()
    users = [store.create_user(f"u{i}") for i in range(8)]
    for user in users:
        store.upsert_link(user.id, "github", "a", "r", expires_at(3600))

    def churn(user_id: int) -> int:
        writer = store_at(database)
        for _ in range(15):
            link = writer.get_link(user_id, "github")
            assert link is not None
            writer.record_refresh_failure(link, "invalid_grant")
            writer.upsert_link(user_id, "github", "a", "r", expires_at(3600))
        writer.close_thread()
        return user_id

    with ThreadPoolExecutor(len(users)) as pool:
        assert sorted(pool.map(churn, [u.id for u in users])) == [u.id for u in users]
    assert store.link_counts() == {("github", "active"): 8, ("github", "refresh_failed"): 0}


def test_the_migration_counts_the_links_already_stored(tmp_path: Path) -> None:
    """A database from before the counts: its links are counted when it migrates."""
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                 "applied_at TEXT NOT NULL)")
    counts = next(i for i, m in enumerate(SQLITE_MIGRATIONS) if "link_counts" in m)
    for version, script in enumerate(SQLITE_MIGRATIONS[:counts], start=1):
        for statement in script.split(";"):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, '2026-01-01')", [version])
    conn.execute("INSERT INTO users (id, name, created_at) VALUES (1, 'alice', 'x')")
    for provider, reason in (("github", ""), ("gitlab", ""), ("gitea", "invalid_grant")):
        conn.execute("INSERT INTO external_auth_links (user_id, provider_id, access_token, "
                     "refresh_failure_reason, created_at, updated_at) "
                     "VALUES (1, ?, 't', ?, 'x', 'x')", [provider, reason])
    conn.close()
    store = open_store(db)
    assert store.migrate() == len(SQLITE_MIGRATIONS)
    assert store.link_counts() == {("github", "active"): 1, ("gitlab", "active"): 1,
                                   ("gitea", "refresh_failed"): 1}


# -- a real scrape ----------------------------------------------------------------------


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.live
def test_a_scrape_sees_both_workers_after_a_device_flow_and_a_refresh(
        tmp_path: Path, fake: FakeProvider) -> None:
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    server = LiveServer(tmp_path, [fake.config()], "--workers", "2",
                        "--metrics-address", f"127.0.0.1:{port}").start()
    try:
        before = _scrape(metrics_url)
        token = server.token()
        with httpx.Client(base_url=server.url, headers={"Coder-Session-Token": token},
                          timeout=10) as c:
            device = c.get(f"{API}/fake/device").json()
            assert c.post(f"{API}/fake/device",
                          json={"device_code": device["device_code"]}).status_code == 400
            fake.approve(device["device_code"])
            assert c.post(f"{API}/fake/device",
                          json={"device_code": device["device_code"]}).status_code == 204
            # the token expires: the next get refreshes it, then validates it
            store = open_store(server.db)
            user = store.get_user("alice")
            assert user is not None
            link = store.get_link(user.id, "fake")
            assert link is not None
            store.upsert_link(user.id, "fake", link.access_token, link.refresh_token,
                              expires_at(-60))
            assert c.get(f"{API}/fake").json()["authenticated"] is True
            assert fake.refreshes == 1
        # new connections, so that both workers answer some of them
        for _ in range(20):
            assert httpx.get(f"{server.url}/healthz", headers={"Connection": "close"}).is_success
        after = _scrape(metrics_url)

        def moved(name: str, **labels: str) -> float:
            return _value(after, name, **labels) - _value(before, name, **labels)

        assert moved("extauth_http_requests_total", operation="healthz", status="200") == 20
        assert moved("extauth_http_requests_total",
                     operation="get_external_auth_device_by_id", status="200") == 1
        assert moved("extauth_http_requests_total",
                     operation="post_external_auth_device_by_id", status="400") == 1
        assert moved("extauth_http_requests_total",
                     operation="post_external_auth_device_by_id", status="204") == 1
        assert moved("extauth_http_request_duration_seconds_count",
                     operation="get_external_auth_by_id") == 1
        assert moved("extauth_provider_requests_total",
                     provider="fake", kind="device", status_code="200") == 2
        assert moved("extauth_provider_requests_total",
                     provider="fake", kind="device", status_code="400") == 1
        assert moved("extauth_provider_requests_total",
                     provider="fake", kind="refresh", status_code="200") == 1
        assert moved("extauth_provider_requests_total",
                     provider="fake", kind="validate", status_code="200") == 1
        assert moved("extauth_provider_request_duration_seconds_count",
                     provider="fake", kind="refresh") == 1
        assert moved("extauth_refresh_total", provider="fake", outcome="ok") == 1
        assert _value(after, "extauth_links", provider="fake", state="active") == 1
        assert _value(after, "extauth_provider_rate_limit_remaining", provider="fake") == 4999
        assert _value(after, "extauth_provider_rate_limit_reset_timestamp_seconds",
                      provider="fake") % 3600 == 0
        text = httpx.get(metrics_url).text
        secrets = [token, token[11:], device["device_code"], *fake.access, *fake.refresh,
                   fake.CLIENT_SECRET, "alice", fake.url]
        assert not [s for s in secrets if s in text]
        # never on the API's port
        assert httpx.get(f"{server.url}/metrics").status_code == 404
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(metrics_url)
    finally:
        server.stop()
