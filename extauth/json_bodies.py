"""Request bodies in JSON, answered as Coder answers them.

``JSONBodyValidator`` plugs into connexion through its public validator
protocol (``validator_map``: connexion builds it with the keyword arguments
below, then calls ``wrap_receive``) and uses nothing else of connexion's, so
both the app built from extauth's cheaper classes and the stock one
(``extauth._connexion.asgi_app``) use it.
"""

from __future__ import annotations

import json
from typing import Any

from connexion.json_schema import Draft4RequestValidator
from jsonschema import Draft4Validator, ValidationError
from starlette.types import Message, Receive, Scope

from extauth.errors import BadRequestError, Validation


class JSONBodyValidator:
    """JSON request bodies, answered as Coder does: ``Request body must be valid
    JSON.`` for anything that is not JSON text (RFC 8259, UTF-8), ``Validation
    failed.`` with one entry per field for a body its schema refuses. The
    schema's validator is compiled once per schema, not per request.
    """

    def __init__(self, *, schema: dict[str, Any], required: bool = False,
                 nullable: bool = False, **_: Any) -> None:
        self.schema_validator = _compiled_body_schema(schema)
        self.required = required
        self.nullable = nullable

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        """Read the whole body, check it, and hand the same messages on."""
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        raw = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if raw or self.required:
            self.validate(raw)
        return _replay(messages, receive), scope

    def validate(self, raw: bytes) -> Any:
        """The body's JSON value, or ``BadRequestError`` with Coder's message."""
        if not raw:
            raise BadRequestError("Request body must be valid JSON.", detail="the body is empty")
        try:
            value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
            # A lone surrogate ("\ud800") parses, but is not text: refuse it here
            # rather than fail when the value is sent on.
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeError:
            raise BadRequestError(
                "Request body must be valid JSON.", detail="the body is not valid UTF-8 text"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise BadRequestError("Request body must be valid JSON.",
                                  detail=_clip(str(exc))) from None
        if value is None and self.nullable:
            return value
        errors = sorted(self.schema_validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            raise BadRequestError(
                "Validation failed.",
                validations=[_validation(e) for e in errors[:10]],
            )
        return value


_BODY_SCHEMAS: dict[int, tuple[dict[str, Any], Any]] = {}
_CLIP = 200


def _compiled_body_schema(schema: dict[str, Any]) -> Any:
    # Keyed by identity: the spec's schemas live as long as the app.
    entry = _BODY_SCHEMAS.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = (schema, Draft4RequestValidator(schema,
                                                format_checker=Draft4Validator.FORMAT_CHECKER))
        _BODY_SCHEMAS[id(schema)] = entry
    return entry[1]


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive channel that gives ``messages`` again, then what ``receive`` gives."""
    queue = list(messages)

    async def replay() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replay


def _clip(text: str) -> str:
    """Error texts quote the offending value: never echo a huge one back."""
    return text if len(text) <= _CLIP else text[:_CLIP] + "..."


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _validation(error: ValidationError) -> Validation:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next(
            (n for n in error.validator_value if n not in error.instance), "body"
        )
        return Validation(".".join([*path, missing]), f"{missing!r} is required")
    return Validation(_clip(".".join(path)) or "body", _clip(error.message))
