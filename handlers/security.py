"""The session-token check behind every security scheme of ``openapi.yaml``.

The spec declares four alternative ways to send the token (cookie, query
parameter, ``Coder-Session-Token`` header, ``Authorization: Bearer``).
Whichever scheme connexion tries, the token is picked in Coder's order, so a
request carrying several gets the same answer whatever the order of schemes.
"""

from __future__ import annotations

from typing import Any

from connexion.exceptions import OAuthProblem
from connexion.lifecycle import ConnexionRequest

from extauth._connexion import picks_its_own_token
from extauth.links import Links
from extauth.logs import note_user

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
    note_user(session.user_id)
    info: dict[str, Any] = {"sub": str(session.user_id), "session": session}
    if source == "query":
        # The web flow turns a token given once in the URL into a cookie, so
        # that the browser's return from the provider is authenticated.
        info["query_token"] = value
    return info
