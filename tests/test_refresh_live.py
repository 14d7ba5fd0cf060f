"""Refresh under real concurrency: many requests, two workers, two processes,
and a server killed mid-request, against a provider that rotates refresh
tokens and revokes the grant when an old one is presented again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from extauth.links import expires_at
from extauth.store import open_store
from tests.fake_provider import Answer, FakeProvider
from tests.live import LiveServer

pytestmark = pytest.mark.live
FAKE = "/api/v2/external-auth/fake"
N = 24


def _seed_expired(server: LiveServer, fake: FakeProvider, user: str = "alice") -> str:
    """A session token for ``user``, whose stored link to ``fake`` has expired."""
    token = server.token(user)
    store = open_store(server.db)
    found = store.get_user(user)
    assert found is not None
    access, refresh = fake.issue()
    store.upsert_link(found.id, "fake", access, refresh, expires_at(-60))
    store.close()
    return token


def _hammer(urls: list[str], token: str) -> list[dict]:
    def one(url: str) -> dict:
        r = httpx.get(url, headers={"Coder-Session-Token": token}, timeout=30)
        assert r.status_code == 200, r.text
        body: dict = r.json()
        return body

    with ThreadPoolExecutor(N) as pool:
        return list(pool.map(one, urls))


def _assert_one_refresh_and_working(fake: FakeProvider, server_url: str, token: str,
                                    results: list[dict], refreshes: int = 1) -> None:
    assert [r["authenticated"] for r in results] == [True] * len(results)
    assert fake.refreshes == refreshes
    # the link works afterwards: the stored token validates at the provider
    after = httpx.get(f"{server_url}{FAKE}", headers={"Coder-Session-Token": token}).json()
    assert after["authenticated"] is True


def _delay_refresh(fake: FakeProvider, seconds: float) -> None:
    """Answer refreshes after ``seconds``, like a slow provider, so that requests
    really overlap."""
    fake.refresh_delay = seconds


@pytest.fixture
def one_server(tmp_path: Path, fake: FakeProvider) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path, [fake.config()]).start()
    yield s
    s.stop()


def test_many_concurrent_requests_refresh_once(one_server: LiveServer,
                                               fake: FakeProvider) -> None:
    token = _seed_expired(one_server, fake)
    _delay_refresh(fake, 0.3)
    urls = [f"{one_server.url}{FAKE}" if i % 2 else f"{one_server.url}/api/v2/external-auth"
            for i in range(N)]
    results = _hammer(urls, token)
    gets = [r for r in results if "authenticated" in r]
    lists = [link for r in results if "links" in r for link in r["links"]]
    assert [r["authenticated"] for r in gets + lists] == [True] * N
    assert fake.refreshes == 1
    assert httpx.get(f"{one_server.url}{FAKE}",
                     headers={"Coder-Session-Token": token}).json()["authenticated"] is True


def test_two_workers_refresh_once(tmp_path: Path, fake: FakeProvider) -> None:
    server = LiveServer(tmp_path, [fake.config()], "--workers", "2").start()
    try:
        token = _seed_expired(server, fake)
        _delay_refresh(fake, 0.3)
        results = _hammer([f"{server.url}{FAKE}"] * N, token)
        _assert_one_refresh_and_working(fake, server.url, token, results)
    finally:
        server.stop()


def test_two_processes_on_one_database_refresh_once(tmp_path: Path,
                                                    fake: FakeProvider) -> None:
    first = LiveServer(tmp_path, [fake.config()]).start()
    second = LiveServer(tmp_path, [fake.config()]).start()
    try:
        assert first.db == second.db
        token = _seed_expired(first, fake)
        _delay_refresh(fake, 0.3)
        urls = [f"{s.url}{FAKE}" for s in (first, second)] * (N // 2)
        results = _hammer(urls, token)
        _assert_one_refresh_and_working(fake, first.url, token, results)
    finally:
        first.stop()
        second.stop()


def test_a_server_killed_after_the_refresh_leaves_a_working_link(
    tmp_path: Path, fake: FakeProvider
) -> None:
    server = LiveServer(tmp_path, [fake.config()]).start()
    token = _seed_expired(server, fake)
    # The provider answers the refresh at once, then hangs on validation: the
    # server is killed while it waits, between the provider's answer and its own.
    fake.script("validate", Answer(delay=30, json={}))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.get, f"{server.url}{FAKE}",
                              headers={"Coder-Session-Token": token}, timeout=60)
        deadline = time.monotonic() + 20
        while not fake.seen("validate"):
            assert time.monotonic() < deadline, "the server never validated"
            time.sleep(0.02)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
        with pytest.raises(httpx.TransportError):
            pending.result(timeout=30)
    assert fake.refreshes == 1
    fake.scripts["validate"].clear()
    restarted = LiveServer(tmp_path, [fake.config()]).start()
    try:
        body = httpx.get(f"{restarted.url}{FAKE}", headers={"Coder-Session-Token": token}).json()
        assert body["authenticated"] is True
        assert fake.refreshes == 1  # the stored pair was fresh: no second refresh
    finally:
        restarted.stop()


def test_a_refresh_dripping_past_the_timeout_is_never_run_twice_at_once(
    tmp_path: Path, fake: FakeProvider
) -> None:
    """Two workers, and a provider that answers the first refresh by dripping its
    body for seconds: the call ends at the deadline, the lease outlives it, and
    the other worker never presents the refresh token meanwhile."""
    server = LiveServer(tmp_path, [fake.config()], "--workers", "2",
                        env={"EXTAUTH_PROVIDER_TIMEOUT": "0.5",
                             "EXTAUTH_REFRESH_RETRY_SECONDS": "2"}).start()
    try:
        token = _seed_expired(server, fake)
        dripped = {"access_token": "never-stored", "refresh_token": "never-stored-r",
                   "expires_in": 3600}
        fake.script("token", Answer(json=dripped, drip=0.05))  # about 4 s of body
        results = _hammer([f"{server.url}{FAKE}"] * N, token)
        assert fake.refreshes == 2  # the dripping one, cut off, then one answered
        # The second call came once the first was cut at its 0.5 s deadline, not
        # while it dripped (two at once would arrive milliseconds apart; the
        # margin is for the way there). The fake's own in-flight count would see
        # the first call until it notices the caller left: its scheduling.
        first, second = (s.at for s in fake.seen("token"))
        assert second - first >= 0.4, f"the second call came {second - first:.3f}s after"
        _assert_one_refresh_and_working(fake, server.url, token, results, refreshes=2)
        trail = [(e.action, e.outcome) for e in open_store(server.db).audit_events()]
        assert ("refresh", "superseded") not in trail
    finally:
        server.stop()
