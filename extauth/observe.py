"""The outermost ASGI layer: what each request was, for the access log and the
metrics.

A request is named by the operationId of ``openapi.yaml`` it is for (the
function name, e.g. ``get_external_auth_by_id``), found from its method and
path, never by its raw path; a request for no operation (an unknown route, the
spec files, the Swagger UI) is ``other``. When it is answered, one access-log
line goes out (``extauth.access``: client, method, target with secret query
values masked, status, duration, and the request's id, operation, user and
provider) and the request metrics are updated.

A request still running when the shutdown grace period ends is cancelled by
the server; if nothing was sent yet, it is answered here with a 503 in
Coder's shape (the server would send a bare 500 and log a traceback, as for a
bug of ours).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Collection
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from extauth import metrics
from extauth.errors import UnavailableError
from extauth.logs import REQUEST, RequestInfo, redact_query

OTHER = "other"
# The keys of a spec's path item that are operations.
METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def path_pattern(path: str) -> re.Pattern[str]:
    """A spec path template as a regular expression over request paths, each
    ``{parameter}`` a named group of one segment."""
    return re.compile("^" + re.sub(r"\\\{([A-Za-z_][A-Za-z0-9_]*)\\\}", r"(?P<\1>[^/]+)",
                                   re.escape(path)) + "$")


access_log = logging.getLogger("extauth.access")
_STOPPING = UnavailableError(
    "The server is shutting down.",
    detail="the request did not finish within the shutdown grace period; try again")


class Operations:
    """Which operation of the spec a request is for, and the provider its path names."""

    def __init__(self, spec: dict[str, Any], providers: Collection[str]) -> None:
        self.providers = frozenset(providers)
        self.routes: list[tuple[re.Pattern[str], dict[str, str]]] = []
        for path, item in spec.get("paths", {}).items():
            by_method = {method.upper(): op["operationId"].rsplit(".", 1)[-1]
                         for method, op in item.items() if method in METHODS}
            if "GET" in by_method:
                by_method.setdefault("HEAD", by_method["GET"])
            self.routes.append((path_pattern(path), by_method))

    def match(self, method: str, path: str) -> tuple[str, str]:
        """(operation, provider id): ``other`` when no operation matches; the
        provider only when the path names a configured one."""
        for pattern, by_method in self.routes:
            found = pattern.match(path)
            if found is not None:
                provider = found.groupdict().get("externalauth", "")
                return (by_method.get(method, OTHER),
                        provider if provider in self.providers else "")
        return OTHER, ""


class Observed:
    """Times every HTTP request, then logs it and counts it."""

    def __init__(self, app: ASGIApp, operations: Operations) -> None:
        self.app = app
        self.operations = operations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        operation, provider = self.operations.match(scope["method"], scope["path"])
        info = RequestInfo(operation=operation, provider=provider)
        REQUEST.set(info)
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            if status:
                raise
            # Cancelled by the server at the end of its grace period: this ends
            # the request, with an answer.
            status = _STOPPING.status
            body = json.dumps(_STOPPING.body()).encode()
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
        except Exception:
            status = status or 500  # the server answers 500 for an app that raised
            raise
        finally:
            seconds = time.perf_counter() - started
            metrics.http_request(operation, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                _log_request(scope, status, seconds)


def _log_request(scope: Scope, status: int, seconds: float) -> None:
    target = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    target = redact_query(f"{target}?{query}" if query else target)
    client = scope.get("client")
    where = f"{client[0]}:{client[1]}" if client else "-"
    access_log.info('%s - "%s %s HTTP/%s" %d %.1fms', where, scope["method"], target,
                    scope.get("http_version", "1.1"), status, seconds * 1000, extra={
                        "client": where, "method": scope["method"], "path": target,
                        "status": status, "duration_ms": round(seconds * 1000, 3)})
