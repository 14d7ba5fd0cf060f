"""Liveness of the service and its database."""

from __future__ import annotations

from typing import Any

from handlers import service


async def healthz() -> dict[str, Any]:
    await service().ping()
    return {"status": "ok"}
