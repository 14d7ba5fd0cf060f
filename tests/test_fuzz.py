"""The fuzz tier: schemathesis checks that the server keeps openapi.yaml's contract.

``extauth serve`` runs in a subprocess on a free 127.0.0.1 port (response
validation on, a real SQLite file, a real session token) with two providers
served by the fake provider: ``fake`` (device flow; codes approved as issued)
and ``github`` (web flow only; the id the spec's examples use). schemathesis
loads the spec the server serves and runs, per operation, its three
case-generating phases (``examples`` from the spec, ``coverage`` of boundary,
missing and invalid values, methods and content types, ``fuzzing`` with
Hypothesis) and then the stateful phase through the spec's OpenAPI links
(device start -> exchange -> get / delete). Every built-in check runs on every
response, with three of ours: ``coder_error_shape``, ``no_secret_leaks`` and
``no_existence_oracle``. The pages (tag ``Pages``) are fuzzed like the rest:
their errors are HTML pages, and without a session they answer 303 to the
sign-in page, both as the spec declares.

Authentication. The spec offers four alternative schemes (cookie, query
parameter, header, bearer) and the server picks Coder's order, cookie > query >
header > bearer, so a random value generated for the cookie or the query
parameter would override the valid header and turn every request into a 401.
Our auth provider (``_SessionAuth``) puts the real token in
``Coder-Session-Token`` and replaces any value schemathesis generated for the
cookie, the query parameter or ``Authorization`` with the same real token:
whichever the server picks is valid, and requests carrying the token in
several places are fuzzed too. schemathesis leaves alone the credentials a
*negative* case is about (it then sends no real token at all), which is how it
tests that bad credentials are refused; ``ignored_auth`` also replays
successful requests without credentials and with wrong ones.

Deterministic by default: a fixed seed and a modest number of examples. A
longer local campaign (``EXTAUTH_FUZZ_STATS=1`` prints the cases per operation
and phase, and the statuses seen):

    EXTAUTH_FUZZ_EXAMPLES=500 EXTAUTH_FUZZ_SEED=7 EXTAUTH_FUZZ_STATS=1 \\
        .venv/bin/python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation

from extauth.sessions import ID_LENGTH
from tests.fake_provider import FakeProvider
from tests.live import LiveServer

pytestmark = [pytest.mark.fuzz]

EXAMPLES = int(os.environ.get("EXTAUTH_FUZZ_EXAMPLES", "50"))
SEED = int(os.environ.get("EXTAUTH_FUZZ_SEED", "20240917"))
# Stateful scenarios (each up to STATEFUL_STEPS requests) scale with the budget.
STATEFUL_SCENARIOS = max(10, EXAMPLES)
STATEFUL_STEPS = 8
STATEFUL_ROUNDS = 3
# Unauthenticated probe pairs per operation and phase for ``no_existence_oracle``.
ORACLE_PROBES = max(4, EXAMPLES // 5)

SPEC_URL = "/api/v2/openapi.json"
SESSION_HEADER = "Coder-Session-Token"
SESSION_NAME = "coder_session_token"
NO_SUCH_PROVIDER = "no-such-provider"

OP_LIST = "GET /api/v2/external-auth"
OP_GET = "GET /api/v2/external-auth/{externalauth}"
OP_DELETE = "DELETE /api/v2/external-auth/{externalauth}"
OP_DEVICE = "GET /api/v2/external-auth/{externalauth}/device"
OP_EXCHANGE = "POST /api/v2/external-auth/{externalauth}/device"
OP_CALLBACK = "GET /external-auth/{externalauth}/callback"
OP_LEGACY_CALLBACK = "GET /gitauth/{externalauth}/callback"
CALLBACKS = (OP_CALLBACK, OP_LEGACY_CALLBACK)
OP_AGENT = "GET /api/v2/workspaceagents/me/external-auth"
OP_GITAUTH = "GET /api/v2/workspaceagents/me/gitauth"
OP_HEALTH = "GET /healthz"
OP_LOGIN_PAGE = "GET /login"
OP_SIGN_IN = "POST /login"
OP_SIGN_OUT = "POST /logout"
OP_PAGE_LIST = "GET /external-auth"
OP_PAGE_PROVIDER = "GET /external-auth/{externalauth}"
OP_ASSET = "GET /assets/{name}"
OPERATIONS = (OP_LIST, OP_GET, OP_DELETE, OP_DEVICE, OP_EXCHANGE, *CALLBACKS, OP_AGENT,
              OP_GITAUTH, OP_HEALTH, OP_LOGIN_PAGE, OP_SIGN_IN, OP_SIGN_OUT, OP_PAGE_LIST,
              OP_PAGE_PROVIDER, OP_ASSET)
HANDOFF_OPS = (OP_AGENT, OP_GITAUTH)
# A URL the regex of provider 'fake' matches, for the hand-off's `match`.
FAKE_GIT_URL = "https://git.example.test/acme/app.git"
# How long a hand-off `listen` waits on the campaign's server before its 408.
LISTEN_SECONDS = "0.2"
# Pages answer people: their errors are HTML pages (``x-extauth-page``).
PAGES = (OP_LOGIN_PAGE, OP_SIGN_IN, OP_SIGN_OUT, OP_PAGE_LIST, OP_PAGE_PROVIDER)
# Without a session these send the browser to sign in: 303 to /login?redirect=.
SIGN_IN_FIRST = (*CALLBACKS, OP_PAGE_LIST, OP_PAGE_PROVIDER)
GENERATING_PHASES = ("examples", "coverage", "fuzzing")

# Every check schemathesis 4.32 ships. ``object_level_authorization`` needs
# several configured identities owning objects with ids; this API has none (a
# link is addressed through the caller's own session), so it stays silent, and
# run_stateful's model checks the isolation it would. ``max_response_time``
# is well above the provider timeout (5 s): it catches a hang.
BUILTIN_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
    "object_level_authorization",
)
MAX_RESPONSE_TIME = 10.0
POSITIVE_DEFAULT = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
NEGATIVE_DEFAULT = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429",
                    "5xx"]
# Without a valid session these send the browser to sign in (303), whatever
# else is wrong with the request: the session is checked first, as for the
# API's 401.
SIGNED_OUT_REJECTION = {"negative_data_rejection": {
    "expected-statuses": [*NEGATIVE_DEFAULT, "303"]}}


def schemathesis_config(seed: int = SEED, examples: int = EXAMPLES) -> SchemathesisConfig:
    """The campaign's configuration, in code (no schemathesis.toml)."""
    return SchemathesisConfig.from_dict({
        "seed": seed,
        "request-timeout": 15,
        "generation": {
            "mode": "all",
            "max-examples": examples,
            "deterministic": True,
            "database": "none",
        },
        "phases": {
            "examples": {"enabled": True, "fill-missing": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": True, "max-steps": STATEFUL_STEPS},
        },
        "checks": {
            **{name: {"enabled": True} for name in BUILTIN_CHECKS},
            "max_response_time": MAX_RESPONSE_TIME,
        },
        "operations": [
            {
                # A schema-valid device code the provider does not know is
                # refused by the provider (invalid_grant), and provider 'github'
                # has no device flow: both are 400 with Coder's messages ("Failed
                # to exchange device code." with the OAuth error code in
                # `detail`; "Git auth provider does not support device flow."),
                # as the spec documents for this operation.
                "include-name": OP_EXCHANGE,
                "checks": {"positive_data_acceptance": {
                    "expected-statuses": [*POSITIVE_DEFAULT, "400"]}},
            },
            {
                # Provider 'github' has no device flow: 400 "Git auth device flow
                # not supported.", documented for this operation.
                "include-name": OP_DEVICE,
                "checks": {"positive_data_acceptance": {
                    "expected-statuses": [*POSITIVE_DEFAULT, "400"]}},
            },
            {
                # The callback answers a schema-valid `error=` with 400
                # "Encountered error in oidc process: ...", and a `code` without
                # `state` with 400 "State must be provided.", both documented
                # (Coder's behaviour).
                "include-name": list(CALLBACKS),
                "checks": {"positive_data_acceptance": {
                    "expected-statuses": [*POSITIVE_DEFAULT, "400"]},
                    **SIGNED_OUT_REJECTION},
            },
            {
                "include-name": [OP_PAGE_LIST, OP_PAGE_PROVIDER],
                "checks": SIGNED_OUT_REJECTION,
            },
            {
                # The token hand-off: neither or both of `id` and `match` is 400
                # ("'url' or 'id' must be provided!"), and `listen` on a provider
                # the caller has not linked ends in 408 once the server's wait
                # is over: both documented, both Coder's contract.
                "include-name": list(HANDOFF_OPS),
                "checks": {"positive_data_acceptance": {
                    "expected-statuses": [*POSITIVE_DEFAULT, "400", "408"]}},
            },
            {
                # These read the caller's status with a provider, which deleting
                # the caller's link does not remove: after the DELETE, GET
                # answers 200 with `authenticated: false` and a device flow can
                # start again (Coder's contract), where use_after_free expects
                # 404. run_stateful checks the stronger property instead: every
                # answer agrees with a model of the caller's links.
                "include-name": [OP_GET, OP_DEVICE],
                "checks": {"use_after_free": {"enabled": False}},
            },
        ],
    })


# -- the campaigns in progress ----------------------------------------------------------


@dataclass
class Campaign:
    """What our checks know about one run (live or in-process)."""

    name: str
    token: str
    fake: FakeProvider
    list_links: Callable[[], set[str]]
    cases: Counter[tuple[str, str]] = field(default_factory=Counter)
    statuses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    probes: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (operation, phase, status, message) of every error answer
    errors: set[tuple[str, str, int, str]] = field(default_factory=set)
    issued: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)

    def secrets(self) -> set[str]:
        """The session secret, every token the fake provider issued, its client secret."""
        with self.lock:
            self.issued.update(self.fake.access)
            self.issued.update(self.fake.refresh)
            return {self.token[ID_LENGTH + 1:], FakeProvider.CLIENT_SECRET, *self.issued}


# Keyed by the loaded schema's raw document, which every clone shares.
CAMPAIGNS: dict[int, Campaign] = {}


def _campaign(case: Case) -> Campaign | None:
    return CAMPAIGNS.get(id(case.operation.schema.raw_schema))


def _phase(case: Case) -> str:
    return case.meta.phase.name.value if case.meta is not None else "explicit"


# -- our checks ------------------------------------------------------------------------


@schemathesis.check
def coder_error_shape(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every error is Coder's ``Response``: JSON, a string ``message``, and only
    ``message``/``detail``/``validations``; a page's error is an HTML page
    (titled with that message). (3xx are documented redirects, without a body;
    HEAD answers carry none.)"""
    if _campaign(case) is None or response.status_code < 400 or response.request.method == "HEAD":
        return None
    ctype = response.headers.get("content-type", [""])[0]
    if case.operation.label in PAGES and ctype.startswith("text/html"):
        text = response.content.decode("utf-8")
        assert "<h1>" in text and "content-security-policy" in response.headers, (
            f"{response.status_code} page without a heading or a CSP: {text[:200]!r}")
        return None
    assert ctype.split(";")[0].strip() == "application/json", (
        f"{response.status_code} answered with content type {ctype!r}, not application/json")
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(
            f"{response.status_code} body is not JSON: {response.content[:200]!r}") from None
    assert isinstance(body, dict), f"{response.status_code} body is not an object: {body!r}"
    assert isinstance(body.get("message"), str) and body["message"], (
        f"{response.status_code} body has no string message: {body!r}")
    extra = set(body) - {"message", "detail", "validations"}
    assert not extra, f"{response.status_code} body has keys beyond Coder's Response: {extra}"
    return None


def _session_cookie_from_sign_in(response: Response, case: Case, value: str) -> bool:
    """The one place a token may come back: signing in sets the session cookie
    to the token of the form (documented: ``Set-Cookie`` on its 303)."""
    if case.operation.label != OP_SIGN_IN or response.status_code != 303:
        return False
    try:
        jar: SimpleCookie = SimpleCookie(value)
    except CookieError:
        return False
    morsel = jar.get(SESSION_NAME)
    sent = case.body.get("token") if isinstance(case.body, dict) else None
    return len(jar) == 1 and morsel is not None and morsel.value == sent


def _without_the_handed_token(case: Case, response: Response, campaign: Campaign) -> str:
    """The body, less the one thing the token hand-off may answer: the caller's
    access token, in ``access_token``, ``username`` and ``password``. A refresh
    token, anywhere, stays a leak."""
    body = response.content.decode("utf-8", "replace")
    if case.operation.label not in HANDOFF_OPS or response.status_code != 200:
        return body
    answer = json.loads(body)
    with campaign.lock:
        access = set(campaign.fake.access)
    for key in ("access_token", "username", "password"):
        if answer.get(key) in access:
            answer[key] = ""
    return json.dumps(answer)


@schemathesis.check
def no_secret_leaks(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """No body or header carries the session secret, a token the provider issued
    or the client secret."""
    campaign = _campaign(case)
    if campaign is None:
        return None
    secrets = campaign.secrets()
    body = _without_the_handed_token(case, response, campaign)
    for secret in secrets:
        assert secret not in body, f"the response body contains a secret ({secret[:4]}...)"
    for name, values in response.headers.items():
        for value in values:
            if name == "set-cookie" and _session_cookie_from_sign_in(response, case, value):
                continue
            for secret in secrets:
                assert secret not in value, f"header {name} contains a secret ({secret[:4]}...)"
    return None


def _unauthenticated(case: Case, provider_id: str) -> Case:
    headers = case.headers.copy()
    for name in [n for n in headers
                 if n.lower() in (SESSION_HEADER.lower(), "authorization", "cookie")]:
        del headers[name]
    query = {k: v for k, v in case.query.items() if k != SESSION_NAME}
    cookies = {k: v for k, v in case.cookies.items() if k != SESSION_NAME}
    probe = case.derive(headers=headers, query=query, cookies=cookies)
    probe.path_parameters = {**case.path_parameters, "externalauth": provider_id}
    return probe


def _send(ctx: CheckContext, case: Case, probe: Case) -> Response:
    kwargs = dict(ctx.internals.transport_kwargs or {})
    for key in ("headers", "cookies", "params", "auth"):
        kwargs.pop(key, None)
    if case.operation.app is not None:
        kwargs.setdefault("app", case.operation.app)
    return case.operation.schema.transport.send(probe, **kwargs)


@schemathesis.check
def no_existence_oracle(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Without credentials, an existing provider (linked, even) and one that does
    not exist get the same status and body, the request being otherwise equal."""
    campaign = _campaign(case)
    if campaign is None or "externalauth" not in (case.path_parameters or {}):
        return None
    key = (case.operation.label, _phase(case))
    with campaign.lock:
        if campaign.probes[key] >= ORACLE_PROBES:
            return None
        campaign.probes[key] += 1
    answers = []
    for provider_id in ("fake", NO_SUCH_PROVIDER):
        r = _send(ctx, case, _unauthenticated(case, provider_id))
        location = (r.headers.get("location") or [""])[0]
        if 300 <= r.status_code < 400:
            # The only redirect without a session: to sign in, and back here.
            assert (case.operation.label in SIGN_IN_FIRST and r.status_code == 303
                    and location.startswith("/login?redirect=")), (
                f"an unauthenticated request for provider {provider_id!r} was answered "
                f"{r.status_code} to {location!r}")
        assert not 200 <= r.status_code < 300, (
            f"an unauthenticated request for provider {provider_id!r} was answered "
            f"{r.status_code}")
        # An answer may repeat the path it was asked (405's detail does, the way
        # back from sign-in does): that is the request echoed, not knowledge of
        # the provider.
        answers.append((r.status_code, r.content.replace(provider_id.encode(), b"{id}"),
                        location.replace(provider_id, "{id}"),
                        r.headers.get("content-type"), r.headers.get("www-authenticate")))
    assert answers[0] == answers[1], (
        "without credentials, provider 'fake' and a nonexistent provider answer differently: "
        f"{answers[0][0]} {answers[0][1][:200]!r} vs {answers[1][0]} {answers[1][1][:200]!r}")
    return None


@schemathesis.check
def count_cases(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Not a check: counts the cases per operation and phase, and the statuses."""
    campaign = _campaign(case)
    if campaign is not None:
        with campaign.lock:
            campaign.cases[(case.operation.label, _phase(case))] += 1
            campaign.statuses[(case.operation.label, _phase(case), response.status_code)] += 1
            if response.status_code >= 400:
                try:
                    message = str(json.loads(response.content).get("message"))
                except (ValueError, AttributeError):
                    message = ""
                campaign.errors.add((case.operation.label, _phase(case), response.status_code,
                                     message))
    return None


# -- auth and the ids under test ---------------------------------------------------------


def _install_auth(schema: Any, token: str) -> None:
    @schema.auth(refresh_interval=None)
    class _SessionAuth:
        """The real token in the header, and in every other scheme the case uses."""

        def get(self, case: Case, context: Any) -> str:
            return token

        def set(self, case: Case, data: str, context: Any) -> None:
            label = case.operation.label
            if label == OP_SIGN_IN and isinstance(case.body, dict) and isinstance(
                    case.body.get("token"), str):
                # Half the generated sign-in forms carry the real token (chosen
                # by the drawn one, as deterministic as the draw): the others
                # reach the form's 401, these its 303 and cookie.
                if zlib.crc32(case.body["token"].encode("utf-8", "surrogatepass")) % 2:
                    case.body["token"] = data
            if label in (OP_HEALTH, OP_LOGIN_PAGE, OP_SIGN_IN, OP_SIGN_OUT, OP_ASSET):
                return  # `security: []`
            case.headers[SESSION_HEADER] = data
            if SESSION_NAME in case.query:
                case.query[SESSION_NAME] = data
            if SESSION_NAME in case.cookies:
                case.cookies[SESSION_NAME] = data
            if "Authorization" in case.headers:
                case.headers["Authorization"] = f"Bearer {data}"


def _install_id_routing(schema: Any) -> None:
    """Send most cases to the configured providers: a random id is almost always
    404, which would leave the handlers behind it unfuzzed. The choice hashes the
    drawn id, so it is as deterministic as the draw. Negative ids, and coverage
    cases about the id itself, keep theirs."""

    @schema.hook("map_case")
    def route(context: Any, case: Case) -> Case:
        if case.operation.label in HANDOFF_OPS:
            return _route_handoff(case)
        drawn = (case.path_parameters or {}).get("externalauth")
        if not isinstance(drawn, str) or case.meta is None:
            return case
        if case.meta.is_negative_at(ParameterLocation.PATH):
            return case
        if getattr(case.meta.phase.data, "parameter", None) == "externalauth":
            return case
        bucket = zlib.crc32(drawn.encode("utf-8", "surrogatepass")) % 4
        if bucket in (0, 1):
            case.path_parameters["externalauth"] = "fake"
        elif bucket == 2:
            case.path_parameters["externalauth"] = "github"
        return case


def _route_handoff(case: Case) -> Case:
    """Most hand-off cases ask as Coder's agents do, for a configured provider:
    by id (with an empty match) or by a URL the regex of 'fake' matches (with an
    empty id). Negative cases, and coverage cases about a query parameter, keep
    what was drawn."""
    if case.meta is None or case.meta.is_negative_at(ParameterLocation.QUERY):
        return case
    if getattr(case.meta.phase.data, "parameter", None) in ("id", "match", "url", "listen"):
        return case
    query = dict(case.query or {})
    drawn = str(query.get("id", query.get("match", "")))
    bucket = zlib.crc32(drawn.encode("utf-8", "surrogatepass")) % 4
    query.pop("url", None)
    if bucket == 0:
        query.update(id="fake", match="")
    elif bucket == 1:
        query.update(id="", match=FAKE_GIT_URL)
    elif bucket == 2:
        query.update(id="github", match="")
    case.query = query
    return case


def _providers(fake: FakeProvider) -> list[dict[str, Any]]:
    return [
        fake.config(regex=r"^https://git\.example\.test/"),
        # Web flow only, and the id of the spec's examples.
        fake.config(id="github", device_flow=False, device_code_url=None),
    ]


def _prepare(schema: Any, campaign: Campaign) -> Any:
    _install_auth(schema, campaign.token)
    _install_id_routing(schema)
    CAMPAIGNS[id(schema.raw_schema)] = campaign
    return schema


def _finish(config: pytest.Config, schema: Any, campaign: Campaign) -> None:
    CAMPAIGNS.pop(id(schema.raw_schema), None)
    if os.environ.get("EXTAUTH_FUZZ_STATS") or config.get_verbosity() > 0:
        _report(config, campaign)


def _report(config: pytest.Config, c: Campaign) -> None:
    lines = [
        "",
        f"fuzz campaign '{c.name}': seed {SEED}, {EXAMPLES} examples, "
        f"{time.monotonic() - c.started:.1f}s",
    ]
    phases = [p for p in (*GENERATING_PHASES, "stateful") if any(k[1] == p for k in c.cases)]
    lines.append(f"{'operation':<50}" + "".join(f"{p:>10}" for p in phases) + "  statuses")
    for label in OPERATIONS:
        counts = "".join(f"{c.cases[(label, p)]:>10}" for p in phases)
        seen: Counter[int] = Counter()
        for (lbl, _, status), n in c.statuses.items():
            if lbl == label:
                seen[status] += n
        lines.append(f"{label:<50}{counts}  "
                     + " ".join(f"{s}x{n}" for s, n in sorted(seen.items())))
    lines.append(f"{'oracle probe pairs':<50}" + "".join(
        f"{sum(n for (_, p), n in c.probes.items() if p == phase):>10}" for phase in phases))
    lines.append(f"{'total':<50}" + "".join(
        f"{sum(n for (_, p), n in c.cases.items() if p == phase):>10}" for phase in phases))
    capture = config.pluginmanager.get_plugin("capturemanager")
    writer = config.pluginmanager.get_plugin("terminalreporter")
    if writer is None:
        return
    if capture is not None:
        with capture.global_and_fixture_disabled():
            for line in lines:
                writer.write_line(line)
    else:
        for line in lines:
            writer.write_line(line)


def assert_everything_reached(c: Campaign) -> None:
    """Checked, not hoped: each operation got cases in each generating phase, and
    reached its handler's success (a random id would only ever see 404)."""
    missing = [(label, phase) for label in OPERATIONS for phase in GENERATING_PHASES
               if c.cases[(label, phase)] == 0]
    assert not missing, f"no cases generated for {missing}"
    wanted = {OP_LIST: 200, OP_GET: 200, OP_DEVICE: 200, OP_CALLBACK: 307,
              OP_LEGACY_CALLBACK: 307, OP_HEALTH: 200, OP_LOGIN_PAGE: 200, OP_SIGN_IN: 303,
              OP_SIGN_OUT: 303, OP_PAGE_LIST: 200, OP_PAGE_PROVIDER: 200, OP_ASSET: 200,
              OP_AGENT: 200, OP_GITAUTH: 200}
    for label, status in wanted.items():
        reached = sum(n for (lbl, phase, s), n in c.statuses.items()
                      if lbl == label and s == status and phase in GENERATING_PHASES)
        assert reached, f"{label} never answered {status}: {c.statuses}"
    # Only the stateful phase holds a device code the provider knows, and a
    # link to delete; here the exchange reaches the provider, which refuses.
    for label, status, message in [
        (OP_EXCHANGE, 400, "Failed to exchange device code."),
        (OP_DEVICE, 400, "Git auth device flow not supported."),
        (OP_DELETE, 404, "Resource not found or you do not have access to this resource"),
        (OP_CALLBACK, 400, "State must be provided."),
        (OP_LEGACY_CALLBACK, 400, "State must be provided."),
        (OP_AGENT, 400, "'url' or 'id' must be provided!"),
        (OP_AGENT, 408, "Provider 'fake' was not linked within 0.2 seconds."),
    ]:
        assert any(e[0] == label and e[1] in GENERATING_PHASES and e[2:] == (status, message)
                   for e in c.errors), f"{label} never answered {status} {message!r}"


@pytest.fixture(autouse=True)
def _approve_device_codes(_fake_server: FakeProvider) -> Iterator[None]:
    """The session's fake provider approves device codes as issued, during this
    module's tests only (the function-scoped ``fake`` fixture resets it)."""
    _fake_server.auto_approve = True
    yield
    _fake_server.auto_approve = False


@pytest.fixture(autouse=True)
def _pytest9_node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32.5's ``from_fixture`` reads and rewrites ``node._nodeid``
    (to name each operation's subtest), which pytest 9 no longer has."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


# -- the live server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory,
                _fake_server: FakeProvider) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("fuzz-live"), _providers(_fake_server),
                        env={"EXTAUTH_LISTEN_SECONDS": LISTEN_SECONDS}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live_campaign(live_server: LiveServer, _fake_server: FakeProvider) -> Campaign:
    token = live_server.token()

    def list_links() -> set[str]:
        r = requests.get(f"{live_server.url}/api/v2/external-auth",
                         headers={SESSION_HEADER: token}, timeout=10)
        assert r.status_code == 200, r.text
        return {link["provider_id"] for link in r.json()["links"]}

    return Campaign("live", token, _fake_server, list_links)


@pytest.fixture(scope="module")
def live_schema(live_server: LiveServer, live_campaign: Campaign,
                request: pytest.FixtureRequest) -> Iterator[Any]:
    schema = schemathesis.openapi.from_url(live_server.url + SPEC_URL,
                                           config=schemathesis_config())
    yield _prepare(schema, live_campaign)
    _finish(request.config, schema, live_campaign)


live = schemathesis.pytest.from_fixture("live_schema")


@pytest.mark.live
@live.parametrize()
def test_live_contract(case: Case) -> None:
    case.call_and_validate()


@pytest.mark.live
def test_live_contract_reached_everything(live_schema: Any, live_campaign: Campaign) -> None:
    assert_everything_reached(live_campaign)


@pytest.mark.live
def test_live_stateful_links(live_schema: Any, live_campaign: Campaign) -> None:
    steps: list[Step] = []
    # A round explores at random, so a seed may end its scenarios before the
    # whole chain ran; a few more rounds (bounded, seeded) complete it.
    # The stateful phase follows the spec's links, which the pages have none of
    # (each is fuzzed in the phases above): left in, they would only thin out
    # the scenarios that walk device start -> exchange -> get / delete.
    api = live_schema.exclude(tag="Pages")
    for round_ in range(STATEFUL_ROUNDS):
        steps += run_stateful(api, live_campaign, seed=SEED + round_)
        if links_not_followed(steps) is None:
            break
    problem = links_not_followed(steps)
    assert problem is None, problem


@pytest.mark.live
@pytest.mark.parametrize("operation", [OP_GET, OP_DEVICE])
def test_live_404_is_described_as_the_server_answers(live_server: LiveServer,
                                                      operation: str) -> None:
    """For a configured provider the caller has no link with, these answer 200
    (``authenticated: false``; a new device authorization): the 404 they declare
    can only mean "no such provider", and its description must say so."""
    token = live_server.token("carol")  # a user with no link
    method, path = operation.split(" ", 1)
    r = requests.request(method, live_server.url + path.replace("{externalauth}", "fake"),
                         headers={SESSION_HEADER: token}, timeout=10)
    assert r.status_code == 200, r.text
    spec = requests.get(live_server.url + SPEC_URL, timeout=10).json()
    response = spec["paths"][path][method.lower()]["responses"]["404"]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    assert "no link" not in response["description"], (
        f"{operation} declares 404 as {response['description']!r}, but without a link it "
        "answers 200")


@pytest.mark.live
def test_live_server_stayed_healthy(live_server: LiveServer, live_schema: Any) -> None:
    """After the campaign: still answering, and no traceback in its log."""
    assert requests.get(f"{live_server.url}/healthz", timeout=10).status_code == 200
    log = live_server.output()
    assert "Traceback" not in log, log[-4000:]
    assert "does not conform to openapi.yaml" not in log, log[-4000:]


# -- stateful: through the spec's OpenAPI links --------------------------------------------


@dataclass
class Step:
    """One request of a stateful scenario."""

    label: str
    link: str | None
    status: int
    case_id: str
    parent_id: str | None
    body: Any
    response: Any


def check_against_model(linked: set[str], label: str, provider: str | None, status: int,
                        body: Any) -> None:
    """Every answer agrees with what the caller's links are; keep them up to date."""
    if label == OP_EXCHANGE and status == 204:
        linked.add(str(provider))
    elif label == OP_DELETE and status == 200:
        assert provider in linked, f"DELETE of {provider!r} answered 200 without a link"
        linked.discard(str(provider))
    elif label == OP_DELETE and status == 404:
        assert provider not in linked, f"DELETE of linked {provider!r} answered 404"
    elif label == OP_GET and status == 200:
        assert body["authenticated"] is (provider in linked), (
            f"GET {provider!r}: authenticated {body['authenticated']}, linked: {sorted(linked)}")
    elif label == OP_LIST and status == 200:
        listed = {link["provider_id"] for link in body["links"]}
        assert listed == linked, f"the list has links {sorted(listed)}, expected {sorted(linked)}"
    elif label in HANDOFF_OPS and status == 200:
        handed = bool(body["access_token"])
        assert handed is (provider in linked), (
            f"the hand-off for {provider!r} answered a token: {handed}, linked: {sorted(linked)}")


def _provider_of(case: Case) -> str | None:
    """The provider a case is about: its path's, or the hand-off's by id or match."""
    if case.operation.label in HANDOFF_OPS:
        query = case.query or {}
        if query.get("id"):
            return str(query["id"])
        return "fake" if str(query.get("match") or query.get("url") or "").startswith(
            "https://git.example.test/") else None
    return (case.path_parameters or {}).get("externalauth")


def run_stateful(schema: Any, campaign: Campaign, seed: int = SEED) -> list[Step]:
    """Run the stateful phase; return its steps in order. Each answer to the real
    token is also checked against a model of the caller's links."""
    steps: list[Step] = []
    linked = campaign.list_links()

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def step(self, input: Any) -> Any:
            output = super().step(input)
            case, transition = input.case, input.transition
            try:
                parsed = json.loads(output.response.content) if output.response.content else None
            except ValueError:
                parsed = None
            if case.headers.get(SESSION_HEADER) == campaign.token:
                check_against_model(linked, case.operation.label, _provider_of(case),
                                    output.response.status_code, parsed)
            steps.append(Step(
                label=case.operation.label,
                link=transition.id if transition is not None else None,
                status=output.response.status_code,
                case_id=case.id,
                parent_id=transition.parent_id if transition is not None else None,
                body=case.body if isinstance(case.body, (dict, list, str)) else None,
                response=parsed,
            ))
            return output

    hypothesis.seed(seed)(Machine)
    Machine.run(settings=hypothesis.settings(
        max_examples=STATEFUL_SCENARIOS,
        stateful_step_count=STATEFUL_STEPS,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    ))
    assert linked == campaign.list_links()
    return steps


def links_not_followed(steps: list[Step]) -> str | None:
    """Why device start -> exchange -> get / delete did not run through the spec's
    links, the device code carried by ExchangeDeviceCode's ``requestBody``; None
    when it did."""
    by_id = {s.case_id: s for s in steps}
    exchanges = [s for s in steps if s.link and "ExchangeDeviceCode" in s.link]
    if not exchanges:
        return "the stateful run never followed link ExchangeDeviceCode"
    carried = [s for s in exchanges
               if s.parent_id in by_id and isinstance(s.body, dict)
               and isinstance(by_id[s.parent_id].response, dict)
               and s.body.get("device_code") == by_id[s.parent_id].response.get("device_code")]
    if not carried:
        return ("ExchangeDeviceCode was followed, but no request body carried the device_code "
                "of the device start's answer: schemathesis did not honour the link's "
                f"requestBody (bodies sent: {[s.body for s in exchanges][:5]})")
    linked = [s for s in carried if s.status == 204]
    if not linked:
        return f"no exchange of a carried device code reached 204: {[s.status for s in carried]}"
    linked_ids = {s.case_id for s in linked}
    gets = [s for s in steps if s.link and "GetExternalAuth" in s.link
            and s.parent_id in linked_ids]
    deletes = [s for s in steps if s.link and "DeleteExternalAuth" in s.link
               and s.parent_id in linked_ids]
    if not any(s.status == 200 and s.response.get("authenticated") is True for s in gets):
        return ("link GetExternalAuth was not followed to a linked provider after a 204: "
                f"{[(s.status, s.response) for s in gets][:3]}")
    if not any(s.status == 200 and s.response == {"token_revoked": True} for s in deletes):
        return ("link DeleteExternalAuth was not followed to a revocation after a 204: "
                f"{[(s.status, s.response) for s in deletes][:3]}")
    return None
