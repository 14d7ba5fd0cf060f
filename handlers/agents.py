"""The operations of tag ``Agents``: the token hand-off, Coder's workspace-agent
endpoint and its legacy alias."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from connexion.context import receive, scope
from starlette.types import Receive

from extauth.errors import ClientClosedError
from extauth.handoff import HandedToken, TokenHandoff
from handlers import go_time

T = TypeVar("T")


def _service() -> TokenHandoff:
    handoff: TokenHandoff = scope["state"]["handoff"]
    return handoff


def _body(answer: HandedToken) -> dict[str, Any]:
    return {
        "access_token": answer.access_token,
        "token_extra": answer.token_extra,
        "url": answer.url,
        "type": answer.provider.type,
        "username": answer.username,
        "password": answer.password,
        "expires": go_time(answer.expires_at),
    }


async def _disconnected(messages: Receive) -> None:
    """Return when the client disconnects (a GET's empty body comes first)."""
    while (await messages())["type"] != "http.disconnect":
        continue


async def _unless_disconnected(work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result; cancelled as soon as the client disconnects."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, gone):
            pending.cancel()
        await asyncio.wait({task, gone})
    if task.cancelled():
        raise ClientClosedError()
    return task.result()


async def workspace_agent_external_auth(
    token_info: dict[str, Any],
    id: str | None = None,
    match: str | None = None,
    url: str | None = None,
    listen: str | None = None,
) -> dict[str, Any]:
    """The caller's token for a provider (by id, or by a URL its regex matches)."""
    work = _service().hand_off(token_info["caller"], id or "", match or url or "",
                               listen is not None)
    if listen is None:
        return _body(await work)
    return _body(await _unless_disconnected(work))


# The legacy path (Coder keeps it for old agents): the same operation.
workspace_agent_git_auth = workspace_agent_external_auth
