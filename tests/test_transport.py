"""How provider requests travel (``extauth/providers/transport.py``), against
the fake provider on 127.0.0.1: what is sent, and what is made of answers
that are compressed, redirected, or never come."""

from __future__ import annotations

import gzip
import json
import socket
from urllib.parse import urlencode

from tests.conftest import Api, link
from tests.fake_provider import Answer, FakeProvider

FAKE = "/api/v2/external-auth/fake"
USER = {"id": 7, "login": "gzipped", "name": "G"}


def test_compressed_answers_are_decoded(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake)
    fake.script("validate", Answer(raw=gzip.compress(json.dumps(USER).encode()),
                                   content_type="application/json",
                                   headers={"Content-Encoding": "gzip"}))
    body = api.get(FAKE, headers=headers).json()
    assert (body["authenticated"], body["user"]["login"]) == (True, "gzipped")
    assert "gzip" in fake.seen("validate")[-1].headers["accept-encoding"]


def test_redirects_are_not_followed(api: Api, fake: FakeProvider) -> None:
    headers = api.login()
    link(api, fake)
    fake.script("validate", Answer(status=302, headers={"Location": f"{fake.url}/user"}))
    r = api.get(FAKE, headers=headers)
    assert r.status_code == 502
    assert "HTTP 302" in r.json()["message"]
    assert len(fake.seen("validate")) == 1


def test_an_unreachable_provider_is_named(make_api, fake: FakeProvider) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    api = make_api(fake.config(validate_url=f"http://127.0.0.1:{closed}/user"))
    headers = api.login()
    link(api, fake)
    r = api.get(FAKE, headers=headers)
    assert r.status_code == 502
    assert r.json()["message"] == "Could not reach provider 'fake' for the token validation."
    assert "ConnectError" in r.json()["detail"]


def test_form_requests_are_sent_as_built(api: Api, fake: FakeProvider) -> None:
    assert api.get(f"{FAKE}/device", headers=api.login()).status_code == 200
    seen = fake.seen("device")[0]
    assert seen.headers["user-agent"] == "extauth"
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.headers["host"] == f"127.0.0.1:{fake.port}"
    assert seen.headers["accept"] == "application/json"
    assert seen.headers["content-length"] == str(len(urlencode(seen.form)))
    assert seen.headers["authorization"].startswith("Basic ")  # the client, authenticated


def test_the_environments_proxy_is_used(make_api, fake: FakeProvider, monkeypatch) -> None:
    # The provider's host does not resolve: only the proxy (the fake itself,
    # which takes the absolute-form request) can answer.
    monkeypatch.setenv("HTTP_PROXY", fake.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    api = make_api(fake.config(validate_url="http://provider.invalid/user"))
    headers = api.login()
    link(api, fake)
    body = api.get(FAKE, headers=headers).json()
    assert body["authenticated"] is True
    assert len(fake.seen("validate")) == 1


def test_no_proxy_is_honoured(make_api, fake: FakeProvider, monkeypatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    api = make_api(fake.config())
    headers = api.login()
    link(api, fake)
    assert api.get(FAKE, headers=headers).json()["authenticated"] is True
