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

from extauth._connexion import picks_its_own_token
from extauth.handoff import TokenHandoff
from extauth.links import Links
from extauth.logs import note_user

SESSION_NAME = "coder_session_token"
HEADER_NAME = "Coder-Session-Token"
ACCESS_TOKEN_NAME = "access_token"


def pick_token(request: ConnexionRequest) -> tuple[str | None, str]:
    """The token and where it came from: cookie, then query parameter, then
    header, then ``Authorization: Bearer``, then the ``access_token`` query
    parameter."""
    # As Coder: the first non-empty value of each source, sources in this order.
    for value, source in (
        (first_cookie(request.headers.get("cookie", "")), "cookie"),
        (_first_query(request, SESSION_NAME), "query"),
        (request.headers.get(HEADER_NAME), "header"),
        (_bearer(request.headers.get("authorization", "")), "bearer"),
        (_first_query(request, ACCESS_TOKEN_NAME), "access_token"),
    ):
        if value:
            return value, source
    return None, ""


def _first_query(request: ConnexionRequest, name: str) -> str | None:
    return next((v for v in request.query_params.getlist(name) if v), None)


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


@picks_its_own_token
async def session_token(token: str | None, request: ConnexionRequest) -> dict[str, Any]:
    """connexion's token-info function: the caller's session, or 401. Whichever
    scheme found ``token``, the token used is the one Coder would use."""
    value, _ = pick_token(request)
    if value is None:
        raise OAuthProblem(detail="No authorization token provided")
    links: Links = request.scope["state"]["links"]
    session = await links.authenticate(value)
    note_user(session.user_id)
    # A token in the query string authenticates this one request and nothing
    # more: turned into a cookie, it would let anyone who gets a browser to
    # open a link plant their own session there.
    return {"sub": str(session.user_id), "session": session}


@picks_its_own_token
async def agent_or_session_token(token: str | None, request: ConnexionRequest) -> dict[str, Any]:
    """The token hand-off's token-info function: the caller behind an agent token
    or a session token, picked in Coder's order, or 401."""
    value, _ = pick_token(request)
    if value is None:
        raise OAuthProblem(detail="No authorization token provided")
    handoff: TokenHandoff = request.scope["state"]["handoff"]
    session = await handoff.authenticate(value)
    note_user(session.user_id)
    return {"sub": str(session.user_id), "session": session}
