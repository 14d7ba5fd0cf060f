"""Log lines: text for people, JSON lines for machines, each with what is
known about the request it belongs to.

Every line of the server (uvicorn's, extauth's, the access log) goes through
one formatter, chosen by ``extauth serve --log-format``:

    text   INFO:     <message> request_id=... operation=... user_id=... provider=...
    json   {"time": "...Z", "level": "info", "logger": "...", "message": "...",
            "request_id": "...", "operation": "...", "status": 200, "duration_ms": 1.2,
            "user_id": 1, "provider": "github", ...}

What a request is known to be (its operationId, the provider of its path, the
user once authenticated) lives in a ``RequestInfo`` that the outermost ASGI
layer sets for each request; ``ContextFilter`` copies it, and the request id,
onto every record logged while the request runs, including from tasks the
request started (a refresh). Levels mean something: info for what goes as
planned, warning for a provider that fails, rate-limits or refuses (and a
refresh that failed for good, with the provider's error), error with a
traceback for our own bugs.

Nothing secret is logged: query strings are masked by ``redact_query``,
provider text is scrubbed by the OAuth client before it is logged, and audit
details never carry a token.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote_plus

from uvicorn.logging import DefaultFormatter

from extauth.settings import LOG_FORMATS

# Query parameters whose values never reach a log line: the session token in
# both of Coder's names, and the OAuth values a browser carries back.
SECRET_PARAMS = frozenset({
    "coder_session_token", "access_token", "code", "state", "device_code", "refresh_token",
    "client_secret", "code_verifier",
})

# Structured fields a record may carry (``extra=``), in the order JSON lines
# show them. The access line states method, path, status and duration in its
# message, so text lines do not repeat them.
FIELDS = ("request_id", "operation", "method", "path", "status", "duration_ms", "client",
          "user_id", "provider", "kind", "status_code", "action", "outcome", "error")
_IN_ACCESS_MESSAGE = frozenset({"method", "path", "status", "duration_ms", "client"})
TEXT_FIELDS = tuple(f for f in FIELDS if f not in _IN_ACCESS_MESSAGE)

# What an audit event's outcome says about the service: failures of the
# provider (or of its answer about our client or a token) are warnings.
_WARNING_OUTCOMES = {
    ("refresh", "transient"), ("refresh", "refused"), ("refresh", "permanent"),
    ("revoke", "failed"), ("revoke", "expired"),
}

log = logging.getLogger("extauth.events")


def redact_query(target: str) -> str:
    """A request target with the values of secret query parameters masked. Names
    are compared as the server reads them (percent-decoded), so an encoded name
    is masked too; the rest of the line stays as it was sent."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if eq and unquote_plus(name) in SECRET_PARAMS:
            part = f"{name}=****"
        elif eq and unquote_plus(name) == "redirect":
            # Where the sign-in page sends the browser back to, with its own
            # query: a callback's code and state, encoded once more.
            inner = unquote_plus(value)
            masked = redact_query(inner)
            if masked != inner:
                part = f"{name}={quote(masked, safe='/*')}"
        parts.append(part)
    return f"{path}?{'&'.join(parts)}"


# -- what is known about the request being served -----------------------------------


@dataclass
class RequestInfo:
    """What a request is known to be; filled in as it is served. Shared by
    reference, so that tasks started by the request see what is learnt later."""

    operation: str = ""
    provider: str = ""
    user_id: int | None = None


# The request id (``X-Request-Id`` when sane, else new), set by the edge.
REQUEST_ID: ContextVar[str] = ContextVar("extauth_request_id", default="")
REQUEST: ContextVar[RequestInfo | None] = ContextVar("extauth_request", default=None)


def note_user(user_id: int) -> None:
    """The request being served is this user's."""
    info = REQUEST.get()
    if info is not None:
        info.user_id = user_id


class ContextFilter(logging.Filter):
    """Adds the request id, operation, provider and user of the request being
    served to every record that does not carry them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        request_id = REQUEST_ID.get()
        if request_id and not fields.get("request_id"):
            record.request_id = request_id
        info = REQUEST.get()
        if info is not None:
            for name in ("operation", "provider", "user_id"):
                value = getattr(info, name)
                if value not in ("", None) and fields.get(name) in ("", None):
                    fields[name] = value
        return True


# -- formatters ---------------------------------------------------------------------


def _fields(record: logging.LogRecord, names: tuple[str, ...]) -> dict[str, Any]:
    found = record.__dict__
    return {name: found[name] for name in names if found.get(name) not in (None, "")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request's
    fields, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record, FIELDS),
        }
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(DefaultFormatter):
    """uvicorn's own line (``INFO:     message``), with the request's fields
    appended as ``name=value``."""

    def __init__(self, use_colors: bool | None = None) -> None:
        super().__init__("%(levelprefix)s %(message)s", use_colors=use_colors)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        extra = " ".join(f"{name}={_text(value)}"
                         for name, value in _fields(record, TEXT_FIELDS).items())
        return f"{line} {extra}" if extra else line


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c in text for c in ' "=\n') else text


def formatter(name: str) -> logging.Formatter:
    """The formatter for ``--log-format NAME``."""
    if name not in LOG_FORMATS:
        raise ValueError(f"log format {name!r} is not one of {', '.join(LOG_FORMATS)}")
    return JsonFormatter() if name == "json" else TextFormatter()


# -- domain events ------------------------------------------------------------------


def audit_event(action: str, outcome: str, provider_id: str, user_id: int | None,
                detail: str) -> None:
    """One line for an event of the audit trail (a link, a refresh's outcome,
    an unlink, a revocation), at the level its outcome deserves."""
    level = logging.WARNING if (action, outcome) in _WARNING_OUTCOMES else logging.INFO
    extra = {"action": action, "outcome": outcome, "provider": provider_id, "user_id": user_id}
    if detail:
        log.log(level, "%s %s: %s", action, outcome, detail, extra=extra)
    else:
        log.log(level, "%s %s", action, outcome, extra=extra)
