"""The token checks behind the security schemes of ``openapi.yaml``.

The spec declares five alternative ways to send the token (cookie, query
parameter, ``Coder-Session-Token`` header, ``Authorization: Bearer``, and
the ``access_token`` query parameter of OAuth clients).
Whichever scheme connexion tries, the token is picked in Coder's order, so a
request carrying several gets the same answer whatever the order of schemes.
Session tokens open every operation; agent tokens only the token hand-off
(its schemes name ``agent_or_session_token``).
"""

from __future__ import annotations

from typing import Any

from connexion.exceptions import OAuthProblem
from connexion.lifecycle import ConnexionRequest
from starlette.datastructures import QueryParams
from starlette.requests import Request

from extauth._connexion import operation_id, picks_its_own_token
from extauth.links import Links
from extauth.logs import note_user
from extauth.sessions import credential

SESSION_NAME = "coder_session_token"
ACCESS_TOKEN_NAME = "access_token"


def pick_token(request: ConnexionRequest | Request) -> tuple[str | None, str]:
    """The token and where it came from: cookie, then query parameter, then
    header, then ``Authorization: Bearer``, then the ``access_token`` query
    parameter."""
    # Read from the ASGI scope itself: every request passes here, and going
    # through the request's header and query objects cost more than the rest
    # of this function. As Starlette's, the first header of a name counts.
    headers: dict[bytes, bytes] = {}
    for name, value in request.scope["headers"]:
        if name in _TOKEN_HEADERS and name not in headers:
            headers[name] = value
    raw_query = request.scope.get("query_string", b"")
    query = QueryParams(raw_query) if raw_query else None
    # As Coder: the first non-empty value of each source, sources in this order.
    for value, source in (
        (first_cookie(_text(headers.get(b"cookie"))), "cookie"),
        (_first_query(query, SESSION_NAME), "query"),
        (_text(headers.get(b"coder-session-token")), "header"),
        (_bearer(_text(headers.get(b"authorization"))), "bearer"),
        (_first_query(query, ACCESS_TOKEN_NAME), "access_token"),
    ):
        if value:
            return value, source
    return None, ""


_TOKEN_HEADERS = frozenset({b"cookie", b"coder-session-token", b"authorization"})


def _text(value: bytes | None) -> str:
    return value.decode("latin-1") if value else ""


def _first_query(query: QueryParams | None, name: str) -> str | None:
    return next((v for v in query.getlist(name) if v), None) if query else None


def _bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def first_cookie(header: str) -> str | None:
    """The first non-empty ``coder_session_token`` cookie (Starlette keeps the last)."""
    for pair in header.split(";"):
        name, _, value = pair.strip().partition("=")
        if name == SESSION_NAME and value.strip('"'):
            return value.strip('"')
    return None


# Operations that look the token up themselves, in the same trip to the
# database as their own read: a session check here and the read in the
# operation would be two. None of them can fail request validation (no body,
# plain string parameters), so a token that does not open them is still what
# they answer first (tests/test_security.py holds both).
LOOKED_UP_BY_THE_OPERATION = frozenset({
    "handlers.external_auth.list_user_external_auths",
    "handlers.external_auth.get_external_auth_by_id",
})


@picks_its_own_token
async def session_token(token: str | None, request: ConnexionRequest) -> dict[str, Any]:
    """connexion's token-info function: the caller's session, or 401. Whichever
    scheme found ``token``, the token used is the one Coder would use. For the
    operations that look it up themselves, its shape is checked here and the
    rest is theirs (``token_info["caller"]``, a ``Credential``)."""
    value = _required_token(request)
    if operation_id(request.scope) in LOOKED_UP_BY_THE_OPERATION:
        return {"sub": None, "caller": credential(value)}
    links: Links = request.scope["state"]["links"]
    session = await links.authenticate(value)
    note_user(session.user_id)
    # A token in the query string authenticates this one request and nothing
    # more: turned into a cookie, it would let anyone who gets a browser to
    # open a link plant their own session there.
    return {"sub": str(session.user_id), "session": session}


@picks_its_own_token
async def agent_or_session_token(token: str | None, request: ConnexionRequest) -> dict[str, Any]:
    """The token hand-off's token-info function: an agent token or a session
    token, picked in Coder's order, its shape checked, or 401. The hand-off looks
    it up itself, with the link, in one trip (``token_info["caller"]``)."""
    return {"sub": None, "caller": credential(_required_token(request), agents=True)}


def _required_token(request: ConnexionRequest) -> str:
    value, _ = pick_token(request)
    if value is None:
        raise OAuthProblem(detail="No authorization token provided")
    return value
