"""Liveness of the service and its database."""

from __future__ import annotations

from typing import Any

from connexion import request

from extauth.links import Links


async def healthz() -> dict[str, Any]:
    links: Links = request.state.links
    await links.ping()
    return {"status": "ok"}
