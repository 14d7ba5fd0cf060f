"""Liveness and readiness of the service."""

from __future__ import annotations

from typing import Any

from handlers import service


async def healthz() -> dict[str, Any]:
    await service().ping()
    return {"status": "ok"}


async def readyz() -> dict[str, Any]:
    await service().ready()
    return {"status": "ok"}
