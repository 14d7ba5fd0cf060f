"""The token checks behind the security schemes of ``openapi.yaml``.

The spec declares four alternative ways to send the token (cookie, query
parameter, ``Coder-Session-Token`` header, ``Authorization: Bearer``).
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

SESSION_NAME = "coder_session_token"
HEADER_NAME = "Coder-Session-Token"


def pick_token(request: ConnexionRequest) -> tuple[str | None, str]:
    """The token and where it came from: cookie, then query parameter, then
    header, then ``Authorization: Bearer``."""
    # As Coder: the first non-empty value of each source, sources in this order.
    for value, source in (
        (_first_cookie(request.headers.get("cookie", "")), "cookie"),
        (next((v for v in request.query_params.getlist(SESSION_NAME) if v), None), "query"),
        (request.headers.get(HEADER_NAME), "header"),
    ):
        if value:
            return value, source
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "bearer"
    return None, ""


def _first_cookie(header: str) -> str | None:
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
    value, source = pick_token(request)
    if value is None:
        raise OAuthProblem(detail="No authorization token provided")
    links: Links = request.scope["state"]["links"]
    session = await links.authenticate(value)
    info: dict[str, Any] = {"sub": str(session.user_id), "session": session}
    if source == "query":
        # The web flow turns a token given once in the URL into a cookie, so
        # that the browser's return from the provider is authenticated.
        info["query_token"] = value
    return info


@picks_its_own_token
async def agent_or_session_token(token: str | None, request: ConnexionRequest) -> dict[str, Any]:
    """The token hand-off's token-info function: the caller behind an agent token
    or a session token, picked in Coder's order, or 401."""
    value, _ = pick_token(request)
    if value is None:
        raise OAuthProblem(detail="No authorization token provided")
    handoff: TokenHandoff = request.scope["state"]["handoff"]
    session = await handoff.authenticate(value)
    return {"sub": str(session.user_id), "session": session}
