"""The audit trail: what happened to whose link, when, in which request; never a token."""

from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner

from extauth.cli import main
from extauth.store import AuditEvent, utcnow
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
