"""HTTP <-> domain: one module per OpenAPI tag, functions named after operationIds.

Handlers unpack arguments, call one domain function and shape the JSON. They
open no database, call no provider and build no error body.
"""

from __future__ import annotations

from datetime import datetime

from connexion.context import scope

from extauth.links import Links

# Coder's "never expires": Go's zero time.
ZERO_TIME = "0001-01-01T00:00:00Z"


def go_time(value: datetime | None) -> str:
    """A time as Coder's JSON writes it; None is Go's zero time."""
    if value is None:
        return ZERO_TIME
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def service() -> Links:
    """The ``Links`` service, from the lifespan state (``connexion.request``
    would build a new request object on every access)."""
    links: Links = scope["state"]["links"]
    return links
