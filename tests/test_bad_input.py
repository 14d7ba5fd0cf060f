"""A bad-input corpus of our own, beyond the fuzzer and tests/test_errors.py.

Every request here is malformed, ambiguous or hostile. Each must be answered
with a status that openapi.yaml declares for its operation (or, for a path
that is no operation, 404 ``Route not found.``), in Coder's ``Response`` shape
with a clear message; never a 500; and nothing stored may change: users, API
keys, links and pending web authorizations are compared row by row before and
after. Most run in-process; what depends on the HTTP server itself (chunked
bodies, raw paths the test client would normalize, raw header bytes) runs
against ``extauth serve`` too.

Where the server picks one of several credentials, the expectations are
Coder's own (coderd/httpmw ``APITokenFromRequest``): cookie, then query
parameter, then header, each only when non-empty, and for a repeated name the
first value (Go's ``Cookie``, ``Query().Get``, ``Header.Get``).
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from extauth.app import load_spec
from extauth.errors import NOT_FOUND, SIGNED_OUT
from extauth.sessions import MISSING_DETAIL
from tests.conftest import Api, link, sql
from tests.fake_provider import Answer, FakeProvider
from tests.live import LiveServer

SPEC = load_spec()
API = "/api/v2/external-auth"
DEVICE = f"{API}/fake/device"
JSON = {"Content-Type": "application/json"}
INVALID_JSON = "Request body must be valid JSON."
VALIDATION = "Validation failed."
EXCHANGE_FAILED = "Failed to exchange device code."
ROUTE_NOT_FOUND = "Route not found."
# A well-formed token whose id exists nowhere.
UNKNOWN_TOKEN = "AAAAAAAAAA-BBBBBBBBBBBBBBBBBBBBBB"

# operation name -> (method, path template, a concrete path for provider 'fake')
OPERATIONS = {
    "list": ("get", API, API),
    "get": ("get", f"{API}/{{externalauth}}", f"{API}/fake"),
    "delete": ("delete", f"{API}/{{externalauth}}", f"{API}/fake"),
    "device": ("get", f"{API}/{{externalauth}}/device", f"{API}/fake/device"),
    "exchange": ("post", f"{API}/{{externalauth}}/device", f"{API}/fake/device"),
    "callback": ("get", "/external-auth/{externalauth}/callback", "/external-auth/fake/callback"),
    "health": ("get", "/healthz", "/healthz"),
}
WITH_ID = [name for name, (_, template, _) in OPERATIONS.items() if "{externalauth}" in template]


def declared(operation: str) -> set[int]:
    method, template, _ = OPERATIONS[operation]
    return {int(code) for code in SPEC["paths"][template][method]["responses"]}


def coder_error(r: httpx.Response | Any, operation: str | None, *statuses: int) -> dict[str, Any]:
    """``r`` is an error answer: a status declared for ``operation`` (one of
    ``statuses`` if given) and Coder's ``Response`` body."""
    status = r.status_code
    text = r.text
    assert 400 <= status < 500, f"{status}: {text[:500]}"
    if operation is not None:
        allowed = sorted(declared(operation))
        assert status in allowed, (
            f"{status} is not declared for {operation} ({allowed}): {text[:300]}")
    if statuses:
        assert status in statuses, f"{status}, expected {statuses}: {text[:300]}"
    assert r.headers.get("content-type") == "application/json", r.headers.get("content-type")
    body = json.loads(text)
    assert isinstance(body, dict) and set(body) <= {"message", "detail", "validations"}, body
    assert isinstance(body["message"], str) and body["message"].strip(), body
    assert len(text) < 2048, f"an error answer of {len(text)} bytes: {text[:300]}..."
    return body  # type: ignore[no-any-return]


# -- nothing stored changes ----------------------------------------------------------

TABLES = ("users", "api_keys", "external_auth_links", "oauth_states")


def snapshot(execute: Callable[[str], Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted((tuple(r.values()) for r in execute(f"SELECT * FROM {t}")), key=repr)
            for t in TABLES}


@contextmanager
def unchanged(execute: Callable[[str], Any]) -> Iterator[None]:
    before = snapshot(execute)
    yield
    after = snapshot(execute)
    for table in TABLES:
        assert after[table] == before[table], f"table {table} changed"


@pytest.fixture
def alice(api: Api, fake: FakeProvider) -> dict[str, str]:
    """Alice's session headers; she is linked to 'fake', and bob has a token too."""
    headers = api.login("alice")
    api.login("bob")
    link(api, fake, "alice")
    return headers


def db(api: Api) -> Callable[[str], Any]:
    return lambda statement: sql(api, statement)


# -- JSON bodies --------------------------------------------------------------------------

MALFORMED = {
    # Coder: "Request body must be valid JSON." (EOF), not connexion's "RequestBody is required".
    "empty": b"",
    "truncated object": b'{"device_code": "ab',
    "truncated after key": b'{"device_code"',
    "truncated after colon": b'{"device_code":',
    "only an opening brace": b"{",
    "only an opening bracket": b"[",
    "unterminated string": b'"abc',
    "single quotes": b"{'device_code': 'x'}",
    "bare key": b'{device_code: "x"}',
    "trailing comma": b'{"device_code": "x",}',
    "missing colon": b'{"device_code" "x"}',
    "comment": b'// hello\n{"device_code": "x"}',
    "two documents": b'{"device_code": "x"} {"device_code": "y"}',
    "extra closing brace": b'{"device_code": "x"}}',
    "whitespace only": b"   \n\t ",
    "byte order mark": b'\xef\xbb\xbf{"device_code": "x"}',
    "invalid UTF-8 byte": b'{"device_code": "\xff"}',
    "overlong UTF-8": b'{"device_code": "\xc0\xaf"}',
    "truncated UTF-8 sequence": b'{"device_code": "\xe2\x82"}',
    "CESU-8 surrogate bytes": b'{"device_code": "\xed\xa0\x80"}',
    "UTF-16": '{"device_code": "x"}'.encode("utf-16"),
    "UTF-32": '{"device_code": "x"}'.encode("utf-32"),
    "Latin-1 byte": '{"device_code": "caf\u00e9"}'.encode("latin-1"),
    # Not JSON (RFC 8259 has no such literals), though Python's parser takes them.
    "NaN literal": b'{"device_code": "x", "n": NaN}',
    "Infinity literal": b'{"device_code": "x", "n": Infinity}',
    "-Infinity literal": b'{"device_code": "x", "n": -Infinity}',
    "objects nested 5000 deep": b'{"device_code": "x", "a": ' + b'{"a": ' * 5000 + b"1"
                                + b"}" * 5000 + b"}",
    "device_code nested 5000 deep": b'{"device_code": ' + b"[" * 5000 + b"]" * 5000 + b"}",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_body_that_is_not_json_is_400_invalid_json(
    api: Api, fake: FakeProvider, alice: dict[str, str], raw: bytes
) -> None:
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, **JSON}, content=raw)
    body = coder_error(r, "exchange", 400)
    assert body["message"] == INVALID_JSON, body
    assert body.get("detail"), body
    assert fake.requests == []


LONE_SURROGATES = {
    "high": b'{"device_code": "\\ud800"}',
    "low": b'{"device_code": "\\udfff"}',
    "inside a string": b'{"device_code": "dc_\\ud83dx"}',
    "reversed pair": b'{"device_code": "\\ude00\\ud83d"}',
}


@pytest.mark.parametrize("raw", LONE_SURROGATES.values(), ids=LONE_SURROGATES.keys())
def test_an_escaped_lone_surrogate_is_400_not_500(
    api: Api, fake: FakeProvider, alice: dict[str, str], raw: bytes
) -> None:
    """``\\ud800`` is valid JSON text, but no Unicode string: it cannot be sent
    to the provider (form-encoding it as UTF-8 fails)."""
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, **JSON}, content=raw)
    body = coder_error(r, "exchange", 400)
    assert body["message"] in (INVALID_JSON, VALIDATION), body
    assert fake.requests == []


def _issued(api: Api, fake: FakeProvider, headers: dict[str, str], code: str) -> None:
    """Have the fake issue ``code`` to a device flow the caller starts."""
    fake.script("device", Answer(json={"device_code": code, "user_code": "U",
                                       "verification_uri": f"{fake.url}/device",
                                       "expires_in": 900, "interval": 5}))
    assert api.get(DEVICE, headers=headers).json()["device_code"] == code


def test_a_surrogate_pair_is_a_character(api: Api, fake: FakeProvider,
                                         alice: dict[str, str]) -> None:
    _issued(api, fake, alice, "dc_\U0001f511")
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, **JSON},
                     content=b'{"device_code": "dc_\\ud83d\\udd11"}')
    assert coder_error(r, "exchange", 400) == {"message": EXCHANGE_FAILED,
                                               "detail": "invalid_grant"}
    assert fake.seen("token")[0].form["device_code"] == "dc_\U0001f511"


NOT_OBJECTS = {"number": b"42", "negative float": b"-1.5e3", "empty array": b"[]",
               "array": b'["dc"]', "string": b'"dc"', "true": b"true", "false": b"false",
               "null": b"null", "null with spaces": b" null \n"}


@pytest.mark.parametrize("raw", NOT_OBJECTS.values(), ids=NOT_OBJECTS.keys())
def test_json_that_is_not_an_object_fails_validation(
    api: Api, fake: FakeProvider, alice: dict[str, str], raw: bytes
) -> None:
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, **JSON}, content=raw)
    body = coder_error(r, "exchange", 400)
    assert body["message"] == VALIDATION, body
    assert [v["field"] for v in body["validations"]] == ["body"], body
    assert fake.requests == []


WRONG_FIELDS = {
    "device_code a number": b'{"device_code": 5}',
    "device_code null": b'{"device_code": null}',
    "device_code an array": b'{"device_code": ["dc"]}',
    "device_code an object": b'{"device_code": {"code": "dc"}}',
    "device_code true": b'{"device_code": true}',
    "device_code empty": b'{"device_code": ""}',
    "no device_code": b"{}",
    "misspelt": b'{"devicecode": "dc"}',
    "wrong case": b'{"DEVICE_CODE": "dc"}',
    # The value is echoed nowhere: a 50 KB array gets a short answer.
    "device_code a 50 KB array": json.dumps({"device_code": list(range(9000))}).encode(),
    "device_code a 50 KB object": json.dumps(
        {"device_code": {f"k{i}": "v" for i in range(4000)}}).encode(),
}


@pytest.mark.parametrize("raw", WRONG_FIELDS.values(), ids=WRONG_FIELDS.keys())
def test_a_wrong_device_code_fails_validation_naming_the_field(
    api: Api, fake: FakeProvider, alice: dict[str, str], raw: bytes
) -> None:
    assert len(raw) < api.settings.max_body_bytes
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, **JSON}, content=raw)
    body = coder_error(r, "exchange", 400)
    assert body["message"] == VALIDATION, body
    assert [v["field"] for v in body["validations"]] == ["device_code"], body
    assert fake.requests == []


def test_duplicate_keys_the_last_one_wins_as_in_coder(
    api: Api, fake: FakeProvider, alice: dict[str, str]
) -> None:
    """RFC 8259 leaves duplicate names undefined; Go's decoder, like Python's,
    keeps the last."""
    _issued(api, fake, alice, "dc_last")
    fake.requests.clear()
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, **JSON},
                     content=b'{"device_code": "dc_first", "device_code": ""}')
        assert coder_error(r, "exchange", 400)["message"] == VALIDATION
        assert fake.requests == []
        r = api.post(DEVICE, headers={**alice, **JSON},
                     content=b'{"device_code": "", "device_code": "dc_last"}')
        assert coder_error(r, "exchange", 400) == {"message": EXCHANGE_FAILED,
                                                   "detail": "invalid_grant"}
    assert [s.form["device_code"] for s in fake.seen("token")] == ["dc_last"]


def test_a_nul_in_the_device_code_reaches_nothing_stored(
    api: Api, fake: FakeProvider, alice: dict[str, str]
) -> None:
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, **JSON}, content=b'{"device_code": "dc\\u0000x"}')
    assert coder_error(r, "exchange", 400) == {"message": EXCHANGE_FAILED,
                                               "detail": "invalid_grant"}


# -- sizes ---------------------------------------------------------------------------------

LIMIT = 1024


@pytest.fixture
def small(make_api: Any, fake: FakeProvider) -> tuple[Api, dict[str, str]]:
    """The app with a 1 KiB body limit; alice linked to 'fake'."""
    api = make_api(fake.config(), max_body_bytes=LIMIT)
    headers = api.login("alice")
    link(api, fake, "alice")
    return api, headers


def _body_of(size: int) -> bytes:
    """A JSON body of exactly ``size`` bytes."""
    prefix, suffix = b'{"device_code": "', b'"}'
    return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix


def test_a_body_of_exactly_the_limit_is_read(small: tuple[Api, dict[str, str]],
                                             fake: FakeProvider) -> None:
    api, alice = small
    raw = _body_of(LIMIT)
    assert len(raw) == LIMIT
    r = api.post(DEVICE, headers={**alice, **JSON}, content=raw)
    assert coder_error(r, "exchange", 400)["message"] == EXCHANGE_FAILED


def test_one_byte_over_the_limit_is_413(small: tuple[Api, dict[str, str]],
                                        fake: FakeProvider) -> None:
    api, alice = small
    raw = _body_of(LIMIT + 1)
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, **JSON}, content=raw)
    body = coder_error(r, "exchange", 413)
    assert body == {"message": "Request body is too large.",
                    "detail": f"the limit is {LIMIT} bytes"}
    assert fake.requests == []


def _chunks(raw: bytes, size: int = 100) -> Iterator[bytes]:
    for i in range(0, len(raw), size):
        yield raw[i:i + size]


def test_a_chunked_body_within_the_limit_is_read(small: tuple[Api, dict[str, str]],
                                                 fake: FakeProvider) -> None:
    """Without Content-Length (Transfer-Encoding: chunked) a body is still a body."""
    api, alice = small
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, **JSON}, content=_chunks(b'{"device_code": "dc"}'))
    assert coder_error(r, "exchange", 400) == {"message": EXCHANGE_FAILED,
                                               "detail": "invalid_grant"}


def test_a_chunked_body_over_the_limit_is_413(small: tuple[Api, dict[str, str]],
                                              fake: FakeProvider) -> None:
    api, alice = small
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, **JSON}, content=_chunks(_body_of(50 * LIMIT)))
    body = coder_error(r, "exchange", 413)
    assert body["message"] == "Request body is too large.", body
    assert fake.requests == []


@pytest.mark.parametrize("operation", ["list", "health"])
def test_an_oversize_body_on_an_operation_without_one_gets_a_declared_status(
    small: tuple[Api, dict[str, str]], fake: FakeProvider, operation: str
) -> None:
    api, alice = small
    method, _, path = OPERATIONS[operation]
    with unchanged(db(api)):
        r = api.request(method, path, headers={**alice, "Content-Type": "text/plain"},
                        content=b"x" * (2 * LIMIT))
    assert r.status_code in declared(operation), (
        f"{r.status_code} is not declared for {operation}: {r.text[:200]}")


# -- content types ----------------------------------------------------------------------------

MULTIPART = (b'--xyz\r\nContent-Disposition: form-data; name="device_code"\r\n\r\ndc\r\n'
             b"--xyz--\r\n")
UNSUPPORTED = {
    "form": ("application/x-www-form-urlencoded", b"device_code=dc"),
    "multipart": ("multipart/form-data; boundary=xyz", MULTIPART),
    "multipart without boundary": ("multipart/form-data", MULTIPART),
    "JSON:API": ("application/vnd.api+json", b'{"device_code": "dc"}'),
    "json-patch": ("application/json-patch+json", b'{"device_code": "dc"}'),
    "jsonx": ("application/jsonx", b'{"device_code": "dc"}'),
    "xml": ("application/xml", b"<device_code>dc</device_code>"),
    "a wildcard": ("*/*", b'{"device_code": "dc"}'),
    "garbage": (";;;", b'{"device_code": "dc"}'),
}


@pytest.mark.parametrize("ctype, raw", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_a_body_not_sent_as_json_is_415(api: Api, fake: FakeProvider, alice: dict[str, str],
                                        ctype: str, raw: bytes) -> None:
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, "Content-Type": ctype}, content=raw)
    body = coder_error(r, "exchange", 415)
    assert body["message"] == "Unsupported Content-Type.", body
    assert "application/json" in body["detail"], body
    assert fake.requests == []


JSON_SPELLINGS = ["application/json; charset=utf-8", "APPLICATION/JSON",
                  "Application/Json; Charset=UTF-8", "application/json;charset=latin-1"]


@pytest.mark.parametrize("ctype", JSON_SPELLINGS)
def test_json_however_spelt_is_read_as_json(api: Api, fake: FakeProvider,
                                            alice: dict[str, str], ctype: str) -> None:
    """Media types are case-insensitive (RFC 9110 8.3.1); an ASCII body is the
    same text in any of these charsets."""
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, "Content-Type": ctype},
                     content=b'{"device_code": "dc"}')
    assert coder_error(r, "exchange", 400) == {"message": EXCHANGE_FAILED,
                                               "detail": "invalid_grant"}


def test_a_body_without_content_type_is_415_or_read_as_json(
    api: Api, fake: FakeProvider, alice: dict[str, str]
) -> None:
    with unchanged(db(api)):
        r = api.post(DEVICE, headers=alice, content=b'{"device_code": "dc"}')
    body = coder_error(r, "exchange", 400, 415)
    assert body["message"] in ("Unsupported Content-Type.", EXCHANGE_FAILED), body


def test_a_body_in_a_charset_other_than_utf8_is_refused(
    api: Api, fake: FakeProvider, alice: dict[str, str]
) -> None:
    with unchanged(db(api)):
        r = api.post(DEVICE, headers={**alice, "Content-Type": "application/json; charset=utf-16"},
                     content='{"device_code": "dc"}'.encode("utf-16"))
    coder_error(r, "exchange", 400, 415)
    assert fake.requests == []


BODYLESS_CONTENT_TYPES = {
    "multipart without boundary": ("multipart/form-data", b""),
    "multipart, garbage": ("multipart/form-data; boundary=xyz", b"garbage"),
    "form, bad escapes": ("application/x-www-form-urlencoded", b"a=%zz&&="),
    "text": ("text/plain", b"hello"),
}


@pytest.mark.parametrize("ctype, raw", BODYLESS_CONTENT_TYPES.values(),
                         ids=BODYLESS_CONTENT_TYPES.keys())
@pytest.mark.parametrize("operation", ["list", "delete", "health"])
def test_a_content_type_on_an_operation_without_a_body_changes_nothing(
    api: Api, fake: FakeProvider, alice: dict[str, str], operation: str, ctype: str,
    raw: bytes
) -> None:
    """The answer is the one the request gets without the header and body."""
    method, _, path = OPERATIONS[operation]
    if operation == "delete":
        path = f"{API}/github"  # no such provider: the link to 'fake' must stay
    with unchanged(db(api)):
        plain = api.request(method, path, headers=alice)
        r = api.request(method, path, headers={**alice, "Content-Type": ctype}, content=raw)
    assert r.status_code in declared(operation), (
        f"{r.status_code} is not declared for {operation}: {r.text[:200]}")
    assert r.status_code == plain.status_code, r.text[:200]


# -- path ids ----------------------------------------------------------------------------------

ODD_IDS = {
    "encoded slash": "a%2Fb",
    "encoded slash into another route": "fake%2Fdevice",
    "only an encoded slash": "%2F",
    "lowercase encoded slash": "fake%2f",
    # (A double-encoded slash, fake%252Fdevice, is tested on the live server:
    # the in-process test client decodes the path twice.)
    "encoded dot-dot": "%2e%2e",
    "encoded dot": "%2E",
    "NUL": "%00",
    "NUL inside": "fa%00ke",
    "NUL after": "fake%00",
    "newline": "fake%0A",
    "space after": "fake%20",
    "space before": "%20fake",
    "plus": "fake+",
    "semicolon": "fake;x=1",
    "dot after": "fake.",
    "extension": "fake.json",
    "upper case": "FAKE",
    "accented": "caf%C3%A9",
    "emoji": "%F0%9F%94%91",
    "invalid UTF-8": "%ff",
    "overlong UTF-8": "%C0%AF",
    "fullwidth letters": "%EF%BD%86%EF%BD%81%EF%BD%8B%EF%BD%85",
    "10 KB": "x" * 10_000,
    "10 KB of UTF-8": "%C3%A9" * 1_700,
}


def problems_with(check: Callable[[], None], label: str, found: list[str]) -> None:
    """Run one check of a corpus; note its failure under ``label`` and go on."""
    try:
        check()
    except AssertionError as exc:
        found.append(f"{label}: {str(exc).splitlines()[0]}")


@pytest.mark.parametrize("operation", WITH_ID)
def test_an_odd_provider_id_is_404(api: Api, fake: FakeProvider, alice: dict[str, str],
                                   operation: str) -> None:
    """Every id of the corpus, on every operation with one: 404, and DELETE
    leaves alice's link to 'fake' alone, POST calls no provider."""
    method, template, _ = OPERATIONS[operation]
    kwargs: dict[str, Any] = {"json": {"device_code": "dc"}} if method == "post" else {}
    found: list[str] = []
    for name, provider_id in ODD_IDS.items():
        def check(provider_id: str = provider_id) -> None:
            path = template.replace("{externalauth}", provider_id)
            with unchanged(db(api)):
                r = api.request(method, path, headers=alice, follow_redirects=False, **kwargs)
            body = coder_error(r, operation, 404)
            assert body["message"] in (NOT_FOUND, ROUTE_NOT_FOUND), body
            assert fake.requests == [], fake.requests
        problems_with(check, name, found)
    assert not found, "\n".join(found)


TRAILING_SLASHES = [f"{API}/", f"{API}/fake/", f"{API}/fake/device/", "/healthz/",
                    "/external-auth/fake/callback/"]


@pytest.mark.parametrize("path", TRAILING_SLASHES)
def test_a_trailing_slash_is_an_unknown_route(api: Api, alice: dict[str, str],
                                              path: str) -> None:
    """README: unknown routes are 404 ``Route not found.``, in Coder's shape."""
    token = alice["Coder-Session-Token"]
    with unchanged(db(api)):
        r = api.get(path, params={"coder_session_token": token}, follow_redirects=False)
    assert coder_error(r, None, 404) == {"message": ROUTE_NOT_FOUND}
    assert not [k for k, v in r.headers.items() if token in v], dict(r.headers)


# -- credentials -------------------------------------------------------------------------------


def _token_shapes(valid: str) -> dict[str, tuple[str, str | tuple[str, ...]]]:
    """name -> (token, the detail it must get, or one of several)."""
    key_id, secret = valid.split("-")
    parts = "Invalid API key format: incorrect amount of API key parts"
    id_length = "Invalid API key format: invalid API key ID length"
    secret_length = "Invalid API key format: invalid API key secret length"
    return {
        "empty": ("", MISSING_DETAIL),
        "spaces": ("   ", parts),
        "one part": (key_id + secret, parts),
        "three parts": (f"{key_id}-{secret}-x", parts),
        "only a dash": ("-", id_length),
        "short id": (f"{key_id[:9]}-{secret}", id_length),
        "long id": (f"{key_id}x-{secret}", id_length),
        "short secret": (f"{key_id}-{secret[:21]}", secret_length),
        "long secret": (f"{key_id}-{secret}x", secret_length),
        "leading space": (f" {valid}", id_length),
        "trailing space": (f"{valid} ", secret_length),
        "unknown id": (UNKNOWN_TOKEN, "API key is invalid."),
        "wrong secret": (f"{key_id}-{'x' * 22}", "API key secret is invalid."),
        "secret in another case": (f"{key_id}-{secret.swapcase()}", "API key secret is invalid."),
        # 10 + 22 characters, which are 20 + 44 bytes of UTF-8 in a header or
        # cookie (read as Latin-1) and 10 + 22 characters in a query parameter.
        # (A cookie parser may drop such a cookie: then none was sent.)
        "non-ASCII": ("\u00e9" * 10 + "-" + "\u00e9" * 22,
                      ("API key is invalid.", id_length, MISSING_DETAIL)),
        "10 KB": ("x" * 10_000, parts),
        "10 KB in two parts": ("x" * 5_000 + "-" + "y" * 5_000, id_length),
        "newline": (f"{valid}\n", secret_length),
        "NUL": (f"{key_id}-{secret[:21]}\x00", "API key secret is invalid."),
    }


def _send_token(api: Api, source: str, token: str, method: str, path: str) -> Any:
    if source == "header":
        return api.request(method, path, headers=[(b"Coder-Session-Token", token.encode())])
    if source == "bearer":
        return api.request(method, path, headers=[(b"Authorization", f"Bearer {token}".encode())])
    if source == "query":
        return api.request(method, path, params={"coder_session_token": token})
    return api.request(method, path, headers=[(b"Cookie",
                                               f"coder_session_token={token}".encode())])


# What each way of sending cannot carry: header values have no newline or NUL
# and lose surrounding spaces; cookie values have no spaces, newlines or NUL; a
# bearer token is trimmed.
NOT_SENDABLE = {
    "header": {"newline", "NUL", "leading space", "trailing space", "spaces"},
    "bearer": {"newline", "NUL", "leading space", "trailing space", "empty", "spaces"},
    "cookie": {"newline", "NUL", "spaces", "leading space", "trailing space"},
    "query": set(),
}


@pytest.mark.parametrize("source", ["header", "cookie", "query", "bearer"])
def test_a_malformed_token_is_401_and_unlinks_nothing(
    api: Api, fake: FakeProvider, alice: dict[str, str], source: str
) -> None:
    """Every token shape of the corpus, sent each way: 401 with Coder's detail
    for it, the Bearer challenge, and alice's link to 'fake' still there."""
    found: list[str] = []
    for shape, (token, detail) in _token_shapes(alice["Coder-Session-Token"]).items():
        if shape in NOT_SENDABLE[source]:
            continue

        def check(token: str = token, detail: str | tuple[str, ...] = detail) -> None:
            with unchanged(db(api)):
                r = _send_token(api, source, token, "DELETE", f"{API}/fake")
            body = coder_error(r, "delete", 401)
            assert body["message"] == SIGNED_OUT, body
            assert body.get("detail", "").startswith(detail), body  # type: ignore[arg-type]
            assert r.headers["www-authenticate"].startswith("Bearer"), r.headers
            assert fake.requests == [], fake.requests
        problems_with(check, shape, found)
    assert not found, "\n".join(found)


def _cookie(*values: str) -> tuple[bytes, bytes]:
    return (b"Cookie", "; ".join(f"coder_session_token={v}" for v in values).encode())


def _query(*values: str) -> str:
    return "&".join(f"coder_session_token={v}" for v in values)


EMPTY_THEN_VALID = {
    "empty cookie, valid header": (["cookie"], "header"),
    "empty query, valid header": (["query"], "header"),
    "empty cookie, valid query": (["cookie"], "query"),
    "empty header, valid bearer": (["header"], "bearer"),
    "empty cookie, query and header, valid bearer": (["cookie", "query", "header"], "bearer"),
    "empty everything else, valid access_token": (["cookie", "query", "header"], "access_token"),
}


def _credentials(pairs: list[tuple[str, str]]) -> tuple[list[tuple[bytes, bytes]], str]:
    """Headers and a query string carrying each (where, value)."""
    headers: list[tuple[bytes, bytes]] = []
    params: list[str] = []
    for where, value in pairs:
        if where == "header":
            headers.append((b"Coder-Session-Token", value.encode()))
        elif where == "bearer":
            headers.append((b"Authorization", f"Bearer {value}".encode()))
        elif where == "cookie":
            headers.append(_cookie(value))
        elif where == "access_token":
            params.append(f"access_token={value}")
        else:
            params.append(_query(value))
    return headers, "&".join(params)


@pytest.mark.parametrize("empty, valid", EMPTY_THEN_VALID.values(), ids=EMPTY_THEN_VALID.keys())
def test_an_empty_credential_does_not_hide_the_next_one(
    api: Api, alice: dict[str, str], empty: list[str], valid: str
) -> None:
    """Coder reads the cookie, the query parameter or the header only when it is
    not empty: a ``coder_session_token=`` left over in a browser hides nothing."""
    token = alice["Coder-Session-Token"]
    headers, query = _credentials([*((where, "") for where in empty), (valid, token)])
    with unchanged(db(api)):
        r = api.get(f"{API}?{query}", headers=headers)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("first_valid", [True, False], ids=["valid first", "invalid first"])
@pytest.mark.parametrize("source", ["header", "cookie", "query"])
def test_a_repeated_credential_the_first_value_decides(
    api: Api, alice: dict[str, str], source: str, first_valid: bool
) -> None:
    """Two values under one name: Coder (Go's Header.Get, Cookie, Query().Get)
    takes the first, whatever the second."""
    token = alice["Coder-Session-Token"]
    values = [token, UNKNOWN_TOKEN] if first_valid else [UNKNOWN_TOKEN, token]
    with unchanged(db(api)):
        if source == "header":
            r = api.get(API, headers=[(b"Coder-Session-Token", v.encode()) for v in values])
        elif source == "cookie":
            r = api.get(API, headers=[_cookie(*values)])
        else:
            r = api.get(f"{API}?{_query(*values)}")
    if first_valid:
        assert r.status_code == 200, r.text
    else:
        assert coder_error(r, "list", 401)["detail"] == "API key is invalid."


@pytest.mark.parametrize("valid_where, invalid_where", [
    ("header", "cookie"), ("header", "query"), ("bearer", "header"), ("query", "cookie"),
    ("cookie", "query"), ("header", "bearer"), ("query", "header"),
    ("bearer", "access_token"), ("access_token", "bearer"), ("access_token", "query"),
    ("header", "access_token"),
])
def test_conflicting_credentials_coders_order_decides(
    api: Api, fake: FakeProvider, alice: dict[str, str], valid_where: str, invalid_where: str
) -> None:
    """Cookie, then query parameter, then header, then bearer, then the
    access_token query parameter (README): the first present decides, and a bad
    one there is a 401 whatever follows."""
    headers, query = _credentials([(valid_where, alice["Coder-Session-Token"]),
                                   (invalid_where, UNKNOWN_TOKEN)])
    order = ["cookie", "query", "header", "bearer", "access_token"]
    with unchanged(db(api)):
        r = api.request("DELETE", f"{API}/github?{query}", headers=headers)
    if order.index(valid_where) < order.index(invalid_where):
        assert coder_error(r, "delete", 404)["message"] == NOT_FOUND
    else:
        assert coder_error(r, "delete", 401)["detail"] == "API key is invalid."


# -- the live server: what the HTTP server itself decides ------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory,
         _fake_server: FakeProvider) -> Iterator[tuple[LiveServer, str]]:
    """``extauth serve`` with a 1 KiB body limit; alice linked to 'fake'."""
    server = LiveServer(tmp_path_factory.mktemp("bad-input"), [_fake_server.config()],
                        env={"EXTAUTH_MAX_BODY_BYTES": str(LIMIT)}).start()
    try:
        token = server.token("alice")
        headers = {"Coder-Session-Token": token}
        code = httpx.get(f"{server.url}{DEVICE}", headers=headers).json()["device_code"]
        _fake_server.approve(code)
        r = httpx.post(f"{server.url}{DEVICE}", headers=headers, json={"device_code": code})
        assert r.status_code == 204, r.text
        yield server, token
    finally:
        server.stop()


def _live_db(server: LiveServer) -> Callable[[str], Any]:
    def execute(sql: str) -> Any:
        with sqlite3.connect(f"file:{server.db}?mode=ro", uri=True) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(sql).fetchall()]
    return execute


class Raw:
    """An answer to a request written byte by byte."""

    def __init__(self, data: bytes) -> None:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_code = int(lines[0].split(" ")[1])
        self.headers = {k.strip().lower(): v.strip()
                        for k, _, v in (line.partition(":") for line in lines[1:])}
        self.text = body.decode("utf-8", "replace")


def raw(server: LiveServer, method: str, target: str, headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
        body: bytes | list[bytes] | None = None) -> Raw:
    """Send exactly this request line (``target`` as UTF-8 bytes), these headers
    and this body (a list is sent chunked, without Content-Length)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
             "Connection: close", *(f"{k}: {v}" for k, v in headers)]
    if isinstance(body, list):
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in body) + b"0\r\n\r\n"
    elif body is not None:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    else:
        payload = b""
    request = "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + payload
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(request)
        data = b""
        for _ in range(10_000):  # bounded: the server closes the connection
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return Raw(data)


@pytest.mark.live
def test_live_chunked_body_within_the_limit_is_read(live: tuple[LiveServer, str]) -> None:
    server, token = live
    with unchanged(_live_db(server)):
        r = raw(server, "POST", DEVICE, [("Coder-Session-Token", token), *JSON.items()],
                [b'{"device_', b'code": "dc"}'])
    assert coder_error(r, "exchange", 400) == {"message": EXCHANGE_FAILED,
                                               "detail": "invalid_grant"}


@pytest.mark.live
def test_live_chunked_body_over_the_limit_is_413(live: tuple[LiveServer, str]) -> None:
    server, token = live
    chunks = [b'{"device_code": "'] + [b"x" * 1000] * 100 + [b'"}']
    with unchanged(_live_db(server)):
        r = raw(server, "POST", DEVICE, [("Coder-Session-Token", token), *JSON.items()], chunks)
    assert coder_error(r, "exchange", 413)["message"] == "Request body is too large."


LIVE_PATHS = {
    "dot": (f"{API}/.", "get"),
    "dot-dot": (f"{API}/..", "get"),
    "dot-dot into another provider": (f"{API}/github/../fake", None),
    "dot-dot out of the API": (f"{API}/../../../healthz", None),
    "empty segment": (f"{API}//fake", None),
    "empty segment before device": (f"{API}/fake//device", None),
    "encoded slash": (f"{API}/fake%2Fdevice", None),
    "encoded dot-dot": (f"{API}/%2e%2e/fake", None),
    "backslash": (f"{API}/fake%5Cdevice", "get"),
    "NUL": (f"{API}/fake%00", "get"),
    "double-encoded slash": (f"{API}/fake%252Fdevice", "get"),
    # (Raw non-ASCII bytes in the request line never reach the app: uvicorn
    # answers 400 "Invalid HTTP request received." itself.)
    "10 KB": (f"{API}/{'x' * 10_000}", "get"),
    "absolute form": (f"http://evil.example{API}/nope", "get"),
}


@pytest.mark.live
@pytest.mark.parametrize("path, operation", LIVE_PATHS.values(), ids=LIVE_PATHS.keys())
def test_live_raw_paths_are_404_and_delete_nothing(
    live: tuple[LiveServer, str], path: str, operation: str | None
) -> None:
    """Paths as sent, which a client library would normalize first. DELETE on
    each must not reach alice's link to 'fake'."""
    server, token = live
    with unchanged(_live_db(server)):
        for method in ("GET", "DELETE"):
            r = raw(server, method, path, [("Coder-Session-Token", token)])
            op = None if operation is None else ("delete" if method == "DELETE" else operation)
            body = coder_error(r, op, 404)
            assert body["message"] in (NOT_FOUND, ROUTE_NOT_FOUND), body


ID_LENGTH = "Invalid API key format: invalid API key ID length"
LIVE_TOKENS = {
    # Header bytes are read as Latin-1: 20 bytes of UTF-8 are a 20-character id.
    "UTF-8 bytes": ("\u00e9" * 10 + "-" + "x" * 22, ID_LENGTH),
    "UTF-8 bytes, 10 of them": ("\u00e9" * 5 + "-" + "x" * 22, "API key is invalid."),
    "10 KB": ("x" * 10_000, "Invalid API key format: incorrect amount of API key parts"),
    "tab inside": ("AAAAA\tAAAA-" + "x" * 22, "API key is invalid."),
}


@pytest.mark.live
@pytest.mark.parametrize("token, detail", LIVE_TOKENS.values(), ids=LIVE_TOKENS.keys())
def test_live_raw_header_bytes_are_401(live: tuple[LiveServer, str], token: str,
                                       detail: str) -> None:
    server, _ = live
    with unchanged(_live_db(server)):
        r = raw(server, "DELETE", f"{API}/fake", [("Coder-Session-Token", token)])
    body = coder_error(r, "delete", 401)
    assert body["detail"].startswith(detail), body


@pytest.mark.live
def test_live_repeated_header_the_first_value_decides(live: tuple[LiveServer, str]) -> None:
    server, token = live
    with unchanged(_live_db(server)):
        ok = raw(server, "GET", API, [("Coder-Session-Token", token),
                                      ("Coder-Session-Token", UNKNOWN_TOKEN)])
        bad = raw(server, "GET", API, [("Coder-Session-Token", UNKNOWN_TOKEN),
                                       ("Coder-Session-Token", token)])
    assert ok.status_code == 200, ok.text
    assert coder_error(bad, "list", 401)["detail"] == "API key is invalid."


@pytest.mark.live
def test_live_server_logged_no_traceback(live: tuple[LiveServer, str]) -> None:
    server, _ = live
    raw(server, "GET", "/healthz")
    assert "Traceback" not in server.output(), server.output()[-3000:]

