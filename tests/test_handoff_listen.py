"""``listen``: the hand-off waits for the user to link, wakes on a write of that
link (at once when this process stored it, within a poll when another did),
shares one store read per second among all its waiters, gives up with 408,
and stops the moment its client disconnects, leaving nothing behind."""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from extauth import linkwatch, sessions
from extauth.handoff import TokenHandoff
from extauth.links import expires_at
from extauth.settings import Settings, build_provider
from extauth.store import open_store
from tests.conftest import Api, link
from tests.fake_provider import FakeProvider
from tests.served import EXECUTOR_NAME, EXECUTOR_THREADS, Served, wait_until

HANDOFF = "/api/v2/workspaceagents/me/external-auth"
API = "/api/v2/external-auth"


class Listener:
    """A listen request in a thread of its own (the test client blocks)."""

    def __init__(self, api: Api, headers: dict[str, str], **params: str) -> None:
        self.response: Any = None
        self.thread = threading.Thread(target=self._run, args=(api, headers, params))
        self.thread.start()

    def _run(self, api: Api, headers: dict[str, str], params: dict[str, str]) -> None:
        self.response = api.get(HANDOFF, params={"id": "fake", "listen": "", **params},
                                headers=headers)

    def result(self, timeout: float = 20.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the listener did not answer"
        return self.response


def handoff_of(api: Api) -> TokenHandoff:
    """The running app's hand-off service (its lifespan state)."""
    state: dict[str, Any] = api.client.app_state
    handoff: TokenHandoff = state["handoff"]
    return handoff


@pytest.fixture
def listening(make_api: Any, fake: FakeProvider) -> Api:
    result: Api = make_api(fake.config(), listen_seconds=30.0)
    return result


def test_listen_on_a_valid_link_answers_at_once(listening: Api, fake: FakeProvider) -> None:
    headers = listening.login()
    access, _ = link(listening, fake)
    r = Listener(listening, headers).result()
    assert r.status_code == 200 and r.json()["access_token"] == access
    assert handoff_of(listening).watcher.waiting == 0


def test_listen_answers_once_the_user_links_here(monkeypatch: pytest.MonkeyPatch,
                                                 make_api: Any, fake: FakeProvider) -> None:
    # No look at the database for an hour: only this process's own wake-up can answer.
    monkeypatch.setattr(linkwatch, "POLL_S", 3600.0)
    api = make_api(fake.config(), listen_seconds=30.0)
    headers = api.login()
    listener = Listener(api, headers)
    handoff = handoff_of(api)
    wait_until(lambda: handoff.waiting == 1, "the listener waits")
    device = api.get(f"{API}/fake/device", headers=headers).json()
    fake.approve(device["device_code"])
    assert api.post(f"{API}/fake/device", json={"device_code": device["device_code"]},
                    headers=headers).status_code == 204
    r = listener.result()
    assert r.status_code == 200, r.text
    stored = api.store.get_link(api.user_id("alice"), "fake")
    assert stored is not None and r.json()["access_token"] == stored.access_token
    assert r.headers["cache-control"] == "no-store"
    assert handoff.watcher.reads == 0 and handoff.watcher.waiting == 0


def test_listen_sees_a_link_another_process_wrote(listening: Api, fake: FakeProvider,
                                                  tmp_path: Path) -> None:
    headers = listening.login()
    listener = Listener(listening, headers)
    watcher = handoff_of(listening).watcher
    wait_until(lambda: handoff_of(listening).waiting == 1, "the listener waits")
    # Another worker's connection to the same file: nothing tells this process.
    other = open_store(listening.settings.database)
    access, refresh = fake.issue()
    other.upsert_link(listening.user_id("alice"), "fake", access, refresh, expires_at(3600))
    other.close()
    r = listener.result()
    assert r.status_code == 200 and r.json()["access_token"] == access
    assert watcher.reads >= 1


@pytest.mark.parametrize("value", ["", "true", "false", "0"])
def test_listen_with_any_value_waits_then_gives_up_with_408(
        make_api: Any, fake: FakeProvider, value: str) -> None:
    api = make_api(fake.config(), listen_seconds=0.3)
    r = Listener(api, api.login(), listen=value).result()
    assert r.status_code == 408
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {
        "message": "Provider 'fake' was not linked within 0.3 seconds.",
        "detail": "Link at http://127.0.0.1:8080/external-auth/fake, then ask again "
                  "(with listen to wait).",
    }


def test_without_listen_nothing_waits(listening: Api) -> None:
    r = listening.get(HANDOFF, params={"id": "fake"}, headers=listening.login())
    assert r.status_code == 200 and r.json()["access_token"] == ""
    assert handoff_of(listening).watcher.waiting == 0


def test_many_listeners_share_the_store_reads_and_ask_no_provider(
        listening: Api, fake: FakeProvider) -> None:
    users = [f"user{i}" for i in range(20)]
    headers = {u: listening.login(u) for u in users}
    watcher = handoff_of(listening).watcher
    started = time.monotonic()
    listeners = [Listener(listening, headers[u]) for u in users]
    wait_until(lambda: handoff_of(listening).waiting == len(users), "every listener waits")
    # Writes that do not concern them: another provider, another user.
    other = open_store(listening.settings.database)
    stranger = other.create_user("stranger")
    for _ in range(3):
        other.upsert_link(stranger.id, "fake", *fake.issue(), expires_at(3600))
        time.sleep(0.5)  # spread the writes over several of the watcher's looks
    for u in users:
        other.upsert_link(listening.user_id(u), "fake", *fake.issue(), expires_at(3600))
    other.close()
    for listener in listeners:
        assert listener.result().json()["access_token"]
    elapsed = time.monotonic() - started
    # Shared: never one per waiter, never more than four a second.
    assert watcher.reads <= elapsed / linkwatch.FASTEST_LOOK_S + 1, (watcher.reads, elapsed)
    # Each waiter validated its new link once; nothing was asked while they waited.
    assert len(fake.seen("validate")) == len(users)


def test_one_listener_costs_at_most_one_store_read_a_second(make_api: Any,
                                                             fake: FakeProvider) -> None:
    api = make_api(fake.config(), listen_seconds=2.5)
    started = time.monotonic()
    assert Listener(api, api.login()).result().status_code == 408
    elapsed = time.monotonic() - started
    reads = handoff_of(api).watcher.reads
    assert 1 <= reads <= elapsed / linkwatch.POLL_S + 1, (reads, elapsed)


def test_a_write_that_leaves_the_link_invalid_is_not_revalidated_over_and_over(
        listening: Api, fake: FakeProvider) -> None:
    headers = listening.login()
    access, _ = link(listening, fake)
    fake.revoked.add(access)  # the provider refuses it: the link page, then waiting
    listener = Listener(listening, headers)
    watcher = handoff_of(listening).watcher
    wait_until(lambda: len(fake.seen("validate")) == 1, "the provider is asked once")
    reads = watcher.reads
    wait_until(lambda: watcher.reads >= reads + 2, "the watcher looks twice more")
    assert len(fake.seen("validate")) == 1  # the link did not change: not asked again
    listening.store.upsert_link(listening.user_id("alice"), "fake", *fake.issue(),
                                expires_at(3600))
    r = listener.result()
    assert r.status_code == 200 and r.json()["access_token"]
    assert len(fake.seen("validate")) == 2


# -- a real server: clients that go away ------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, fake: FakeProvider) -> Iterator[tuple[Served, str]]:
    settings = Settings(database=str(tmp_path / "served.db"),
                        providers=(build_provider(fake.config(), "test"),),
                        listen_seconds=600.0)
    with Served(settings) as server:
        store = open_store(settings.database)
        token = sessions.create_agent_token(store, store.create_user("alice"))
        store.close()
        yield server, token


def requests_alive() -> int:
    """How many of uvicorn's request objects exist, after collecting the garbage."""
    gc.collect()
    return sum(isinstance(o, RequestResponseCycle) for o in gc.get_objects())


def own_threads() -> set[int]:
    """The threads of this process but served loops' executors (pools of fixed
    size, whose threads start as the work needs them)."""
    return {t.ident or 0 for t in threading.enumerate()
            if not t.name.startswith(EXECUTOR_NAME)}


def connect_and_drop(server: Served, token: str) -> None:
    """A listen request whose client goes away while it waits."""
    watcher = server.handoff.watcher
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"GET {HANDOFF}?id=fake&match=&listen=true HTTP/1.1\r\nHost: t\r\n"
                  f"Coder-Session-Token: {token}\r\n\r\n".encode())
        wait_until(lambda: server.handoff.waiting == 1, "the listener waits")
    wait_until(lambda: watcher.waiting == 0 and server.handoff.waiting == 0,
               "the listener stops when its client goes")


def test_a_listener_stops_when_its_client_disconnects(served: tuple[Served, str],
                                                      fake: FakeProvider) -> None:
    server, token = served
    connect_and_drop(server, token)
    # Linking now hands the token to nobody.
    store = open_store(server.settings.database)
    user = store.get_user("alice")
    assert user is not None
    store.upsert_link(user.id, "fake", *fake.issue(), expires_at(3600))
    wait_until(lambda: not server.handoff.watcher.running, "the watcher rests")
    assert [e for e in store.audit_events() if e.action == "token read"] == []
    assert fake.requests == []
    store.close()


def test_a_thousand_dropped_listeners_leave_no_task_thread_or_memory(
        served: tuple[Served, str]) -> None:
    server, token = served
    watcher = server.handoff.watcher
    for _ in range(200):  # warm up: caches, the executor's threads
        connect_and_drop(server, token)
    server.settle()
    wait_until(lambda: server.nudge() or requests_alive() == 0,
               "the warm-up's requests are freed")
    tasks, threads = server.tasks(), own_threads()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            connect_and_drop(server, token)
        server.settle()
        wait_until(lambda: server.nudge() or requests_alive() == 0,
                   "the dropped requests are freed")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert server.tasks() == tasks
    # No thread started since (one an earlier test left idle may have ended).
    started = {t.name for t in threading.enumerate() if (t.ident or 0) in own_threads() - threads}
    assert not started, started
    # The loop's executor (the database calls) keeps at most its fixed pool.
    pool = [t for t in threading.enumerate() if t.name.startswith(server.executor + "_")]
    assert len(pool) <= EXECUTOR_THREADS
    assert watcher.waiting == 0 and not server.handoff._orphans
    # One listener left behind would hold an event, a task and a request: kilobytes.
    assert grown < 256 * 1024, f"{grown} bytes more after 1000 listeners came and went"


def test_server_shutdown_ends_waiting_listeners(tmp_path: Path, fake: FakeProvider) -> None:
    settings = Settings(database=str(tmp_path / "served.db"),
                        providers=(build_provider(fake.config(), "test"),),
                        listen_seconds=600.0)
    server = Served(settings).__enter__()
    store = open_store(settings.database)
    token = sessions.create_agent_token(store, store.create_user("alice"))
    with contextlib.closing(socket.create_connection(("127.0.0.1", server.port))) as s:
        s.sendall(f"GET {HANDOFF}?id=fake&listen HTTP/1.1\r\nHost: t\r\n"
                  f"Coder-Session-Token: {token}\r\n\r\n".encode())
        wait_until(lambda: server.handoff.watcher.waiting == 1, "the listener waits")
        server.__exit__()
        assert not server.thread.is_alive()
