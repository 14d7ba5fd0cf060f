"""HTTP <-> domain: one module per OpenAPI tag, functions named after operationIds.

Handlers unpack arguments, call one domain function and shape the JSON. They
open no database, call no provider and build no error body.
"""

from __future__ import annotations

from connexion.context import scope

from extauth.links import Links


def service() -> Links:
    """The ``Links`` service, from the lifespan state (``connexion.request``
    would build a new request object on every access)."""
    links: Links = scope["state"]["links"]
    return links
