"""The audit trail: what happened to whose link, when, in which request; never a token."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from extauth.audit import REQUEST_ID, Audit
from extauth.cli import main
from extauth.sessions import Session
from extauth.store import AuditEvent, Store, utcnow
from extauth.store.sqlite import SQLiteStore
from tests.conftest import Api, expire, link, sql, started_device_code
from tests.fake_provider import Answer, FakeProvider

FAKE = "/api/v2/external-auth/fake"


def _trail(api: Api) -> list[tuple[str, str, str, str]]:
    return [(e.user_name, e.provider_id, e.action, e.outcome)
            for e in reversed(api.store.audit_events())]


def test_link_refresh_validate_unlink_and_revoke_are_recorded(api: Api, fake: FakeProvider) -> None:
    headers = {**api.login(), "X-Request-Id": "req-42"}
    fake.script("token", Answer(json={"access_token": "gho_AUDIT_AT", "refresh_token": "ghr_RT",
                                      "expires_in": 60}))
    code = started_device_code(api, headers)
    assert api.post(f"{FAKE}/device", headers=headers,
                    json={"device_code": code}).status_code == 204
    expire(api)
    fake.access["x"] = "octocat"
    fake.script("token", Answer(json={"access_token": "gho_AUDIT_AT2", "expires_in": 3600}))
    fake.script("validate", Answer(status=401, json={"message": "Bad credentials"}))
    assert api.get(FAKE, headers=headers).json()["authenticated"] is False
    assert api.delete(FAKE, headers=headers).json() == {"token_revoked": True}
    assert _trail(api) == [
        ("alice", "fake", "link", "device"),
        ("alice", "fake", "refresh", "ok"),
        ("alice", "fake", "validate", "invalid"),
        ("alice", "fake", "unlink", ""),
        ("alice", "fake", "revoke", "ok"),
    ]
    events = api.store.audit_events()
    assert {e.request_id for e in events} == {"req-42"}
    assert all(e.user_id == api.user_id("alice") for e in events)
    rows = sql(api, "SELECT * FROM audit_events")
    assert not [r for r in rows if "AUDIT_AT" in repr(r) or "ghr_RT" in repr(r)
                or code in repr(r)]


def test_refresh_failures_are_recorded_with_their_class(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(), refresh_retry_seconds=0.1)
    alice, bob = api.login("alice"), api.login("bob")
    link(api, fake, user="alice", expires_in=-60)
    link(api, fake, user="bob", expires_in=-60)
    fake.script("token", Answer(status=503, text="down"))
    api.get(FAKE, headers=alice)
    fake.script("token", Answer(status=400, json={"error": "invalid_grant"}))
    api.get(FAKE, headers=bob)
    assert _trail(api)[-2:] == [("alice", "fake", "refresh", "transient"),
                                ("bob", "fake", "refresh", "permanent")]
    assert api.store.audit_events()[0].detail == "invalid_grant"


def test_a_request_id_is_made_when_none_or_a_bad_one_is_given(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake)
    api.delete(FAKE, headers={**headers, "X-Request-Id": "bad id\twith spaces"})
    ids = {e.request_id for e in api.store.audit_events()}
    assert len(ids) == 1 and len(ids.pop()) == 16


def test_retention_purges_old_events(api: Api) -> None:
    api.store.insert_audit(AuditEvent("link", at=utcnow() - timedelta(days=100)))
    api.store.insert_audit(AuditEvent("link", at=utcnow() - timedelta(days=10)))
    assert api.store.purge_audit(utcnow() - timedelta(days=90)) == 1
    assert len(api.store.audit_events()) == 1


def test_audit_command_filters(api: Api, fake: FakeProvider) -> None:
    for name in ("alice", "bob"):
        headers = api.login(name)
        link(api, fake, user=name)
        api.delete(FAKE, headers=headers)
    r = CliRunner().invoke(main, ["audit", "--db", api.settings.database, "--user", "bob",
                                  "--provider", "fake"], catch_exceptions=False)
    assert r.exit_code == 0
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all("\tbob\tfake\t" in line for line in lines)
    assert lines[0].split("\t")[3:5] == ["revoke", "ok"]


class CountingStore(SQLiteStore):
    """The real store, counting the events of each write it is asked for."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[int] = []

    def insert_audit(self, *events: AuditEvent) -> None:
        self.writes.append(len(events))
        super().insert_audit(*events)


def _audit(tmp_path: Path) -> tuple[CountingStore, Audit]:
    store = CountingStore(tmp_path / "audit.db")
    store.migrate()
    return store, Audit(store, timedelta(days=1))


async def _record(audit: Audit, store: Store, i: int) -> int:
    """Record event ``i`` in request ``req-i``; how many events are stored then."""
    REQUEST_ID.set(f"req-{i}")
    await audit.record(Session(1, "alice", f"key{i}"), "fake", "token read", "agent", f"n{i}")
    return len(store.audit_events(limit=1000))


def test_events_of_one_turn_are_written_together_before_anyone_returns(tmp_path: Path) -> None:
    store, audit = _audit(tmp_path)

    async def many() -> list[int]:
        return await asyncio.gather(*(_record(audit, store, i) for i in range(50)))

    # All 50 went in one write, and each caller returned once its event was stored.
    assert asyncio.run(many()) == [50] * 50
    assert store.writes == [50]
    events = store.audit_events(limit=100)
    assert sorted((e.request_id, e.detail) for e in events) == sorted(
        (f"req-{i}", f"n{i}") for i in range(50))


def test_a_caller_that_goes_away_does_not_lose_the_others_events(tmp_path: Path) -> None:
    store, audit = _audit(tmp_path)

    async def one_cancelled() -> None:
        tasks = [asyncio.ensure_future(_record(audit, store, i)) for i in range(10)]
        await asyncio.sleep(0)  # every one has queued its event
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(one_cancelled())
    assert len(store.audit_events()) == 10


def test_an_audit_failure_does_not_fail_the_caller(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    store, audit = _audit(tmp_path)
    store.db.execute("DROP TABLE audit_events")

    async def record() -> None:
        await audit.record(Session(1, "alice", "key"), "fake", "token read", "agent")

    asyncio.run(record())  # no exception
    assert "cannot record 1 audit event(s): token read/agent" in caplog.text
