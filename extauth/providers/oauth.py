"""The OAuth client: device authorization and exchange, validation, app
installations and revocation, against one configured provider. Requests and
answers are httpx's ``Request`` and ``Response``; ``transport`` sends them.

Every call is bounded by the client's timeout. What the provider answers is
turned into values (``DeviceAuthorization``, ``TokenSet``, ``TokenCheck``,
``Revocation``) or into errors:

    OAuthError                 the provider answered an OAuth ``error`` (even on HTTP 200)
    ProviderRateLimitedError   HTTP 429 (or a rate-limited 403): retry later
    ProviderError              timeout, network failure, 5xx, or an answer we cannot use

No token or client secret ever appears in an error's text.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

import httpx

from extauth import metrics
from extauth.errors import ProviderError, ProviderRateLimitedError, clip
from extauth.providers import transport
from extauth.settings import ProviderConfig

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_RETRY_AFTER = 60
_SNIPPET = 200
# RFC 6749 5.2: error codes are %x20-21 / %x23-5B / %x5D-7E.
_CODE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F) if chr(c) not in '"\\')
_CODE_LIMIT = 64

log = logging.getLogger("extauth.providers")


class OAuthError(Exception):
    """The provider answered with an OAuth error code (RFC 6749 5.2, RFC 8628 3.5)."""

    def __init__(
        self, code: str, description: str = "", interval: int | None = None, status: int = 0
    ) -> None:
        super().__init__(code)
        self.code = code
        self.description = description
        self.interval = interval
        self.status = status

    def __str__(self) -> str:
        """The code, and the provider's description of it when there is one."""
        return f"{self.code}: {self.description}" if self.description else self.code


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    expires_in: int
    interval: int


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int | None
    # The token response's values for the provider's ``extra_token_keys``.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ProviderUser:
    id: int
    login: str
    avatar_url: str
    profile_url: str
    name: str


@dataclass(frozen=True)
class TokenCheck:
    """The provider's verdict on an access token."""

    valid: bool
    user: ProviderUser | None = None
    reason: str = ""


@dataclass(frozen=True)
class Installation:
    id: int
    account: ProviderUser
    configure_url: str


@dataclass(frozen=True)
class Revocation:
    revoked: bool
    error: str = ""


def _scrub(text: str, secrets: tuple[str, ...], limit: int = _SNIPPET) -> str:
    """Provider text fit to show: one line, at most ``limit`` characters, with
    every secret of the call (tokens, codes, verifier, client secret) masked.
    A provider may echo what it was sent, at any length."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "****")
    return clip(text, limit)


def _snippet(resp: httpx.Response, secrets: tuple[str, ...]) -> str:
    return _scrub(resp.text, secrets)


def _code(value: Any, secrets: tuple[str, ...]) -> str:
    """An OAuth error code as clients poll on it: RFC 6749's characters, short."""
    code = "".join(c for c in _str(value) if c in _CODE_CHARS)
    return _scrub(code, secrets, _CODE_LIMIT)


def parse_body(resp: httpx.Response) -> dict[str, Any] | None:
    """A JSON object, or a form-encoded one (GitHub without ``Accept: json``)."""
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        pairs = parse_qs(resp.text, keep_blank_values=True)
        return {k: v[0] for k, v in pairs.items()}
    try:
        value = json.loads(resp.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def retry_after_seconds(resp: httpx.Response) -> int:
    """Seconds to wait, from Retry-After (seconds or date) or X-RateLimit-Reset (epoch)."""
    value = resp.headers.get("retry-after", "").strip()
    if value.isdigit():
        return max(1, int(value))
    if value:
        parsed = email.utils.parsedate_to_datetime(value) if "," in value else None
        if parsed is not None:
            return max(1, int(parsed.timestamp() - time.time()))
    reset = resp.headers.get("x-ratelimit-reset", "").strip()
    if reset.isdigit():
        return max(1, int(int(reset) - time.time()))
    return DEFAULT_RETRY_AFTER


def is_rate_limited(resp: httpx.Response) -> bool:
    """429, or a 403 that carries rate-limit headers (GitHub's secondary limits)."""
    if resp.status_code == 429:
        return True
    if resp.status_code != 403:
        return False
    h = resp.headers
    return (
        h.get("x-ratelimit-remaining") == "0"
        or h.get("ratelimit-remaining") == "0"
        or "retry-after" in h
    )


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return default


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_user(data: dict[str, Any]) -> ProviderUser | None:
    """The provider-side user, from GitHub-style or OpenID Connect userinfo fields."""
    login = next(
        (
            _str(data.get(k))
            for k in ("login", "username", "preferred_username", "nickname", "sub")
            if _str(data.get(k))
        ),
        "",
    )
    user = ProviderUser(
        id=_int(data.get("id")),
        login=login,
        avatar_url=_str(data.get("avatar_url")) or _str(data.get("picture")),
        profile_url=_str(data.get("html_url"))
        or _str(data.get("web_url"))
        or _str(data.get("profile")),
        name=_str(data.get("name")),
    )
    return user if (user.login or user.name or user.id) else None


class OAuthClient:
    """Calls to providers over one long-lived connection pool."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.http = transport.Transport(timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- plumbing ---------------------------------------------------------------

    async def _call(self, p: ProviderConfig, kind: str, request: httpx.Request,
                    secrets: tuple[str, ...]) -> httpx.Response:
        """Send one provider request, timed and counted (``metrics.KINDS``); a
        provider that does not answer, fails (5xx) or rate-limits is logged as a
        warning, its text scrubbed. Transport errors are raised as they are."""
        started = time.perf_counter()
        try:
            resp = await self.http.send(request)
        except httpx.HTTPError as exc:
            metrics.provider_call(p.id, kind, 0, time.perf_counter() - started)
            why = (f"no answer within {self.timeout:g}s"
                   if isinstance(exc, httpx.TimeoutException)
                   else _scrub(f"{type(exc).__name__}: {exc}", secrets))
            log.warning("provider %r did not answer the %s call: %s", p.id, kind, why,
                        extra={"provider": p.id, "kind": kind, "status_code": 0, "error": why})
            raise
        metrics.provider_call(p.id, kind, resp.status_code, time.perf_counter() - started,
                              resp.headers)
        if resp.status_code >= 500 or is_rate_limited(resp):
            trouble = "is rate limiting" if is_rate_limited(resp) else "failed"
            log.warning("provider %r %s the %s call: HTTP %d", p.id, trouble, kind,
                        resp.status_code,
                        extra={"provider": p.id, "kind": kind, "status_code": resp.status_code,
                               "error": _snippet(resp, secrets)})
        return resp

    async def _send(
        self, p: ProviderConfig, what: str, kind: str, request: httpx.Request,
        secrets: tuple[str, ...] = (),
    ) -> httpx.Response:
        try:
            return await self._call(p, kind, request, secrets)
        except httpx.TimeoutException:
            raise ProviderError(
                message=f"Provider {p.id!r} did not answer the {what} within {self.timeout:g}s.",
                detail=f"timeout calling {request.url.copy_with(query=None)}",
            ) from None
        except httpx.HTTPError as exc:
            raise ProviderError(
                message=f"Could not reach provider {p.id!r} for the {what}.",
                detail=_scrub(f"{type(exc).__name__}: {exc}", secrets),
            ) from None

    def _client_auth(
        self, p: ProviderConfig, data: dict[str, str], style: str
    ) -> httpx.Auth | None:
        """Authenticate the client (RFC 6749 2.3.1): Basic, the secret in the body,
        or (``client_id`` style, GitHub's device endpoints) the id alone."""
        if p.client_secret and style == "basic":
            return httpx.BasicAuth(quote(p.client_id, safe=""), quote(p.client_secret, safe=""))
        data["client_id"] = p.client_id
        if p.client_secret and style == "post":
            data["client_secret"] = p.client_secret
        return None

    def _post_form(
        self,
        p: ProviderConfig,
        url: str,
        data: dict[str, str],
        style: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Request:
        auth = self._client_auth(p, data, style or p.token_auth)
        request = transport.request(
            "POST", url, data=data, headers={"Accept": "application/json", **(headers or {})}
        )
        if auth is not None:
            request = next(auth.sync_auth_flow(request))
        return request

    def _rate_limited(self, p: ProviderConfig, what: str, resp: httpx.Response) -> Exception:
        seconds = retry_after_seconds(resp)
        return ProviderRateLimitedError(
            message=f"Provider {p.id!r} is rate limiting the {what}. "
            f"Try again in {seconds} seconds.",
            detail=f"the provider answered HTTP {resp.status_code}",
            headers={"Retry-After": str(seconds)},
        )

    def _oauth_answer(
        self, p: ProviderConfig, what: str, resp: httpx.Response, secrets: tuple[str, ...]
    ) -> dict[str, Any]:
        """The JSON of an OAuth endpoint's answer; raise on errors of any kind."""
        body = parse_body(resp)
        if body is not None and _str(body.get("error")):
            raise OAuthError(
                _code(body["error"], secrets),
                _scrub(_str(body.get("error_description")), secrets),
                _int(body.get("interval")) or None,
                resp.status_code,
            )
        if is_rate_limited(resp):
            raise self._rate_limited(p, what, resp)
        if resp.status_code != 200:
            raise ProviderError(
                message=f"Provider {p.id!r} failed the {what} with HTTP {resp.status_code}.",
                detail=_snippet(resp, secrets),
                upstream_status=resp.status_code,
            )
        if body is None:
            ctype = resp.headers.get("content-type", "none")
            raise ProviderError(
                message=f"Provider {p.id!r} answered the {what} with something that is not "
                "a JSON object.",
                detail=f"content type {ctype}",
            )
        return body

    # -- device flow (RFC 8628) ---------------------------------------------------

    async def device_authorize(self, p: ProviderConfig) -> DeviceAuthorization:
        what = "device authorization"
        data = {"scope": " ".join(p.scopes)} if p.scopes else {}
        request = self._post_form(p, p.device_code_url, data, self._device_style(p))
        secrets = (p.client_secret,)
        resp = await self._send(p, what, "device", request, secrets)
        try:
            body = self._oauth_answer(p, what, resp, secrets)
        except OAuthError as exc:
            raise ProviderError(
                message=f"Failed to authorize device with provider {p.id!r}.",
                detail=str(exc),
            ) from None
        device = DeviceAuthorization(
            device_code=_str(body.get("device_code")),
            user_code=_str(body.get("user_code")),
            verification_uri=_str(body.get("verification_uri"))
            or _str(body.get("verification_url")),
            expires_in=_int(body.get("expires_in")),
            interval=_int(body.get("interval"), 5) or 5,
        )
        missing = [k for k in ("device_code", "user_code", "verification_uri")
                   if not getattr(device, k)]
        if missing:
            raise ProviderError(
                message=f"Provider {p.id!r} answered the {what} without {missing[0]!r}.",
                detail=f"fields present: {', '.join(sorted(body)) or 'none'}",
            )
        return device

    async def device_exchange(self, p: ProviderConfig, device_code: str) -> TokenSet:
        """Poll the token endpoint once; ``OAuthError`` carries pending/slow_down/..."""
        what = "device code exchange"
        data = {"grant_type": DEVICE_GRANT, "device_code": device_code}
        request = self._post_form(p, p.token_url, data, self._device_style(p))
        return await self._token_call(p, what, "device", request,
                                      (p.client_secret, device_code))

    @staticmethod
    def _device_style(p: ProviderConfig) -> str:
        return "client_id" if p.device_auth == "client_id" else p.token_auth

    # -- authorization code (RFC 6749 4.1, RFC 7636) ------------------------------

    def authorize_url(
        self, p: ProviderConfig, redirect_uri: str, state: str, challenge: str | None
    ) -> str:
        """Where to send the browser; the auth URL's own query parameters are kept."""
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("client_id", p.client_id),
            ("redirect_uri", redirect_uri),
            ("response_type", "Assertion" if p.exchange == "azure-assertion" else "code"),
            ("state", state),
            ("access_type", "offline"),
        ]
        if p.scopes:
            params.append(("scope", " ".join(p.scopes)))
        if challenge:
            params += [("code_challenge", challenge), ("code_challenge_method", "S256")]
        params += list(p.auth_params)
        url = httpx.URL(p.auth_url)
        return str(url.copy_merge_params(params))

    async def exchange_code(
        self, p: ProviderConfig, code: str, redirect_uri: str, verifier: str | None
    ) -> TokenSet:
        """Trade an authorization code for tokens, in the provider's dialect."""
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if verifier:
            data["code_verifier"] = verifier
        request = self._token_endpoint_request(
            p, data, ("urn:ietf:params:oauth:grant-type:jwt-bearer", code), redirect_uri)
        return await self._token_call(p, "code exchange", "exchange", request,
                                      (p.client_secret, code, verifier or ""))

    # -- refresh (RFC 6749 6) ------------------------------------------------------------

    async def refresh(self, p: ProviderConfig, refresh_token: str, redirect_uri: str) -> TokenSet:
        """Trade a refresh token for a new token pair (``refresh_token`` may be empty
        in the answer: the caller keeps the old one)."""
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if p.auth_params and p.scopes:
            data["scope"] = " ".join(p.scopes)  # Entra wants the scopes again
        request = self._token_endpoint_request(
            p, data, ("refresh_token", refresh_token), redirect_uri)
        return await self._token_call(p, "token refresh", "refresh", request,
                                      (p.client_secret, refresh_token))

    def _token_endpoint_request(
        self, p: ProviderConfig, data: dict[str, str], assertion: tuple[str, str],
        redirect_uri: str,
    ) -> httpx.Request:
        """A token endpoint request in the provider's dialect: standard, Azure DevOps'
        JWT assertion (``assertion`` is its grant type and value), or JFrog's secret
        as a Bearer header."""
        if p.exchange == "azure-assertion":
            # Azure DevOps: the grant and the client secret travel as JWT assertions.
            form = {
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": p.client_secret,
                "grant_type": assertion[0],
                "assertion": assertion[1],
                "redirect_uri": redirect_uri,
            }
            return transport.request(
                "POST", p.token_url, data=form, headers={"Accept": "application/json"})
        data = {**data, **dict(p.auth_params)}
        if p.exchange == "bearer-secret":
            return self._post_form(p, p.token_url, data, "client_id",
                                   {"Authorization": f"Bearer {p.client_secret}"})
        return self._post_form(p, p.token_url, data)

    async def _token_call(self, p: ProviderConfig, what: str, kind: str,
                          request: httpx.Request, secrets: tuple[str, ...]) -> TokenSet:
        resp = await self._send(p, what, kind, request, secrets)
        return self._token_set(p, what, self._oauth_answer(p, what, resp, secrets))

    def _token_set(self, p: ProviderConfig, what: str, body: dict[str, Any]) -> TokenSet:
        access = _str(body.get("access_token"))
        if not access:
            raise ProviderError(
                message=f"Provider {p.id!r} answered the {what} without an access token.",
                detail=f"fields present: {', '.join(sorted(body)) or 'none'}",
            )
        expires_in = _int(body.get("expires_in"))
        return TokenSet(
            access_token=access,
            refresh_token=_str(body.get("refresh_token")),
            expires_in=expires_in if expires_in > 0 else None,
            extra={k: body[k] for k in p.extra_token_keys if k in body},
        )

    # -- validation and installations ---------------------------------------------

    async def validate(self, p: ProviderConfig, access_token: str) -> TokenCheck:
        """Ask the validate URL about a token. No validate URL: valid."""
        if not p.validate_url:
            return TokenCheck(valid=True)
        what = "token validation"
        request = transport.request(
            "GET",
            p.validate_url,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        secrets = (access_token, p.client_secret)
        resp = await self._send(p, what, "validate", request, secrets)
        if resp.status_code == 200:
            body = parse_body(resp)
            return TokenCheck(valid=True, user=parse_user(body) if body else None)
        if resp.status_code == 401:
            return TokenCheck(valid=False, reason="the provider rejected the token (HTTP 401)")
        if is_rate_limited(resp):
            # A rate-limited answer says nothing about the token: keep trusting it.
            return TokenCheck(valid=True, reason="the provider is rate limiting validation")
        if resp.status_code == 403:
            return TokenCheck(valid=False, reason="the provider rejected the token (HTTP 403)")
        raise ProviderError(
            message=f"Failed to validate token with provider {p.id!r}: "
            f"it answered HTTP {resp.status_code}.",
            detail=_snippet(resp, secrets),
        )

    async def installations(
        self, p: ProviderConfig, access_token: str
    ) -> tuple[bool, list[Installation]]:
        """GitHub App installations visible to the token; any failure: (False, [])."""
        if not p.app_installations_url:
            return False, []
        request = transport.request(
            "GET",
            p.app_installations_url,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        try:
            resp = await self._call(p, "installations", request, (access_token, p.client_secret))
        except httpx.HTTPError:
            return False, []
        body = parse_body(resp) if resp.status_code == 200 else None
        if body is None or not isinstance(body.get("installations"), list):
            return False, []
        found = []
        for item in body["installations"]:
            if not isinstance(item, dict) or not isinstance(item.get("account"), dict):
                continue
            account = parse_user(item["account"])
            if account is None:
                continue
            found.append(Installation(_int(item.get("id")), account, _str(item.get("html_url"))))
        return True, found

    # -- revocation (RFC 7009) ---------------------------------------------------------

    async def revoke(self, p: ProviderConfig, access_token: str, refresh_token: str) -> Revocation:
        """Revoke the grant: the refresh token if any, else the access token."""
        if not p.revoke_url:
            return Revocation(revoked=False)
        if p.revoke_style == "github":
            # GitHub: "delete an app authorization"; success is 204 and only 204.
            request = transport.request(
                "DELETE",
                p.revoke_url,
                json={"access_token": access_token},
                headers={"Accept": "application/vnd.github+json",
                         "X-GitHub-Api-Version": "2022-11-28"},
            )
            request = next(httpx.BasicAuth(p.client_id, p.client_secret).sync_auth_flow(request))
            success = 204
        else:
            if refresh_token:
                data = {"token": refresh_token, "token_type_hint": "refresh_token"}
            else:
                data = {"token": access_token, "token_type_hint": "access_token"}
            request = self._post_form(p, p.revoke_url, data)
            success = 200
        secrets = (access_token, refresh_token, p.client_secret)
        try:
            resp = await self._call(p, "revoke", request, secrets)
        except httpx.TimeoutException:
            return Revocation(False, f"failed to revoke token: no answer within {self.timeout:g}s")
        except httpx.HTTPError as exc:
            return Revocation(
                False, _scrub(f"failed to revoke token: {type(exc).__name__}: {exc}", secrets)
            )
        body = parse_body(resp) if resp.status_code == success else None
        if body is not None and body.get("ok") is False:
            # Slack answers 200 {"ok": false, "error": "..."} when it did not revoke.
            return Revocation(False, f"failed to revoke token: {_code(body.get('error'), secrets)}")
        if resp.status_code == success:
            return Revocation(revoked=True)
        return Revocation(
            False, f"failed to revoke token: {resp.status_code} {_snippet(resp, secrets)}".strip()
        )
