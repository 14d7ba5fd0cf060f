"""Log lines: one per request with what is known of it, one per provider
failure and per refresh outcome, at levels that mean something; the text and
JSON formats."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from extauth.logs import (
    REQUEST,
    REQUEST_ID,
    ContextFilter,
    JsonFormatter,
    RequestInfo,
    TextFormatter,
    formatter,
)
from extauth.observe import Operations
from tests.conftest import Api, expire, link, sql, started_device_code
from tests.fake_provider import Answer, FakeProvider

FAKE = "/api/v2/external-auth/fake"


def _records(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Records at INFO and up, with the request's fields as the server's handlers add them."""
    caplog.set_level(logging.INFO, logger="extauth")
    caplog.handler.addFilter(ContextFilter())
    return caplog


# -- the request line --------------------------------------------------------------------


def test_one_access_line_per_request_with_what_is_known(api: Api, fake: FakeProvider,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    headers = {**api.login(), "X-Request-Id": "req-7"}
    link(api, fake)
    assert api.get(FAKE, headers=headers).status_code == 200
    assert api.get("/api/v2/external-auth/nope", headers=headers).status_code == 404
    assert api.get("/no/such/route").status_code == 404
    first, unknown, no_route = _records(caplog, "extauth.access")
    fields = first.__dict__
    assert fields["request_id"] == "req-7"
    assert fields["operation"] == "get_external_auth_by_id"
    assert fields["provider"] == "fake"
    assert fields["user_id"] == api.user_id("alice")
    assert fields["status"] == 200 and fields["method"] == "GET" and fields["path"] == FAKE
    assert 0 < fields["duration_ms"] < 10_000
    assert first.levelno == logging.INFO
    assert first.getMessage().endswith(f'"GET {FAKE} HTTP/1.1" 200 {fields["duration_ms"]:.1f}ms')
    # a provider that is not configured is not named
    assert "provider" not in unknown.__dict__ and unknown.__dict__["status"] == 404
    assert no_route.__dict__["operation"] == "other"
    assert "user_id" not in no_route.__dict__


def test_the_access_line_masks_secret_query_values(api: Api,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    token = api.login()["Coder-Session-Token"]
    r = api.get("/api/v2/external-auth", params={"coder_session_token": token, "x": "1"})
    assert r.status_code == 200
    [line] = _records(caplog, "extauth.access")
    assert line.__dict__["path"] == "/api/v2/external-auth?coder_session_token=****&x=1"
    assert token not in line.getMessage()


def test_operations_are_the_specs_operation_ids() -> None:
    spec = {"paths": {"/a/{externalauth}/device": {
        "get": {"operationId": "handlers.x.get_device"},
        "post": {"operationId": "handlers.x.post_device"}}}}
    ops = Operations(spec, ["github"])
    assert ops.match("GET", "/a/github/device") == ("get_device", "github")
    assert ops.match("HEAD", "/a/github/device") == ("get_device", "github")
    assert ops.match("POST", "/a/other/device") == ("post_device", "")
    assert ops.match("DELETE", "/a/github/device") == ("other", "github")
    assert ops.match("GET", "/a/github/device/x") == ("other", "")


# -- provider failures, refresh outcomes, our own bugs -----------------------------------


def test_a_failing_provider_is_a_warning_with_its_text_scrubbed(
        make_api, fake: FakeProvider, caplog: pytest.LogCaptureFixture) -> None:
    api = make_api(fake.config(), refresh_retry_seconds=0)
    headers = api.login()
    _, refresh = link(api, fake, expires_in=-60)
    fake.script("token", Answer(status=503, text=f"down; you sent {refresh}"))
    assert api.get(FAKE, headers=headers).json()["authenticated"] is False
    [failure] = _records(caplog, "extauth.providers")
    assert failure.levelno == logging.WARNING
    assert failure.getMessage() == "provider 'fake' failed the refresh call: HTTP 503"
    assert failure.__dict__["kind"] == "refresh" and failure.__dict__["status_code"] == 503
    assert failure.__dict__["error"] == "down; you sent ****"
    [outcome] = _records(caplog, "extauth.events")
    assert outcome.levelno == logging.WARNING
    assert outcome.__dict__["outcome"] == "transient"
    assert all(refresh not in r.getMessage() and refresh not in str(r.__dict__)
               for r in caplog.records)


def test_a_provider_that_does_not_answer_is_a_warning(
        make_api, fake: FakeProvider, caplog: pytest.LogCaptureFixture) -> None:
    api = make_api(fake.config(), provider_timeout=0.3)
    headers = api.login()
    fake.script("device", Answer(delay=2, json={}))
    assert api.get(f"{FAKE}/device", headers=headers).status_code == 502
    [failure] = _records(caplog, "extauth.providers")
    assert failure.levelno == logging.WARNING
    assert failure.getMessage() == "provider 'fake' did not answer the device call: " \
                                   "no answer within 0.3s"
    assert failure.__dict__["status_code"] == 0
    assert failure.__dict__["operation"] == "get_external_auth_device_by_id"


def test_a_permanent_refresh_failure_is_a_warning_with_the_providers_error(
        api: Api, fake: FakeProvider, caplog: pytest.LogCaptureFixture) -> None:
    headers = api.login()
    link(api, fake, expires_in=-60)
    fake.script("token", Answer(status=400, json={"error": "invalid_grant",
                                                  "error_description": "token revoked"}))
    api.get(FAKE, headers=headers)
    [outcome] = _records(caplog, "extauth.events")
    assert outcome.levelno == logging.WARNING
    assert outcome.getMessage() == "refresh permanent: invalid_grant: token revoked"
    assert outcome.__dict__["provider"] == "fake"
    assert outcome.__dict__["user_id"] == api.user_id("alice")


def test_a_good_refresh_and_a_link_are_info(api: Api, fake: FakeProvider,
                                            caplog: pytest.LogCaptureFixture) -> None:
    headers = api.login()
    code = started_device_code(api, headers)
    fake.approve(code)
    assert api.post(f"{FAKE}/device", headers=headers,
                    json={"device_code": code}).status_code == 204
    expire(api)
    assert api.get(FAKE, headers=headers).json()["authenticated"] is True
    events = [(r.levelno, r.getMessage()) for r in _records(caplog, "extauth.events")]
    assert events == [(logging.INFO, "link device"), (logging.INFO, "refresh ok")]
    assert not _records(caplog, "extauth.providers")


def test_our_own_bug_is_an_error_with_a_traceback(api: Api,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    headers = api.login()
    # Break what the code relies on once the caller is known: the table of
    # device authorizations is gone.
    sql(api, "DROP TABLE device_authorizations")
    r = api.get("/api/v2/external-auth/fake/device", headers=headers)
    assert r.status_code == 500
    assert r.json() == {"message": "An internal server error occurred."}
    [bug] = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert bug.exc_info is not None and "device_authorizations" in str(bug.exc_info[1])
    line = json.loads(JsonFormatter().format(bug))
    assert line["level"] == "error" and "Traceback (most recent call last)" in line["traceback"]
    assert line["operation"] == "get_external_auth_device_by_id"
    assert line["user_id"] == api.user_id("alice")


# -- formats ---------------------------------------------------------------------------


def _record(msg: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("extauth.x", logging.WARNING, "f.py", 1, msg, args or ("you",),
                               None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_time_level_message_and_fields() -> None:
    line = json.loads(JsonFormatter().format(_record(
        request_id="r1", operation="op", status=502, duration_ms=1.5, user_id=3,
        provider="github", color_message="ignored")))
    assert line.pop("time").endswith("Z")
    assert line == {"level": "warning", "logger": "extauth.x", "message": "hello you",
                    "request_id": "r1", "operation": "op", "status": 502,
                    "duration_ms": 1.5, "user_id": 3, "provider": "github"}


def test_json_lines_carry_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert line["traceback"].endswith("ValueError: boom")
    assert "\n" not in JsonFormatter().format(record)


def test_text_lines_append_the_fields() -> None:
    text = TextFormatter(use_colors=False).format(_record(
        request_id="r1", user_id=3, provider="git hub", method="GET"))
    assert text == 'WARNING:  hello you request_id=r1 user_id=3 provider="git hub"'


def test_the_context_filter_adds_the_requests_fields() -> None:
    record = _record()
    REQUEST_ID.set("rid")
    REQUEST.set(RequestInfo(operation="op", provider="fake", user_id=9))
    try:
        assert ContextFilter().filter(record)
    finally:
        REQUEST_ID.set("")
        REQUEST.set(None)
    assert (record.request_id, record.operation, record.provider, record.user_id) == (  # type: ignore[attr-defined]
        "rid", "op", "fake", 9)


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="'xml' is not one of text, json"):
        formatter("xml")


def test_records_holding_secrets_never_show_them_in_their_repr() -> None:
    """A record logged with %r, or shown in a traceback's locals, names no secret."""
    from datetime import UTC, datetime

    from extauth.cli.clients import Answer as ClientAnswer
    from extauth.handoff import HandedToken
    from extauth.providers.oauth import DeviceAuthorization, TokenSet
    from extauth.settings import ProviderConfig
    from extauth.store.records import Link, OAuthState, PendingRevocation

    now = datetime.now(UTC)
    provider = ProviderConfig(id="gh", type="github", client_id="cid", client_secret="s3cret-cs")
    records = [
        provider,
        TokenSet("s3cret-at", "s3cret-rt", 60, {"id_token": "s3cret-id"}),
        DeviceAuthorization("s3cret-dc", "ABCD-EFGH", "https://x/device", 900, 5),
        HandedToken(provider, "s3cret-at", {"k": "s3cret-extra"}),
        Link(1, "gh", "s3cret-at", "s3cret-rt", None, now, now, {"k": "s3cret-extra"}),
        OAuthState(1, "gh", "s3cret-verifier", "/", now),
        PendingRevocation("r1", 1, "alice", "gh", "s3cret-at", "s3cret-rt", "unlink", now, 0,
                          now, "", now),
        ClientAnswer("s3cret-at", {"k": "s3cret-extra"}, "", "github", "oauth2", "s3cret-pw",
                     None),
    ]
    for record in records:
        assert "s3cret" not in repr(record), repr(record)
