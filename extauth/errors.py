"""The error model: every failure the API reports is an ``ExtauthError``.

    ExtauthError                 status, message, detail, validations, headers
    ├── BadRequestError          400
    ├── UnauthorizedError        401, Coder's "signed out" message
    ├── CrossSiteError           403, a form posted from another site
    ├── NotFoundError            404, Coder's canned not-found message
    ├── WaitTimeoutError         408, a long poll ended without what it waited for
    ├── ConflictError            409, several things match where one must
    ├── PayloadTooLargeError     413
    ├── ProviderRateLimitedError 429 with Retry-After
    ├── ProviderError            502, the provider failed or answered garbage
    ├── ClientClosedError        499, the client left before the answer (never read)
    └── UnavailableError         503, our own database cannot be reached, or a
                                 provider's config leaves it unable to work

The HTTP layer turns any of them into Coder's ``Response`` body
``{"message", "detail", "validations"}``. Messages name what failed and never
carry a token or a client secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SIGNED_OUT = "You are signed out or your session has expired. Please sign in again to continue."
NOT_FOUND = "Resource not found or you do not have access to this resource"


def clip(text: str, limit: int = 200) -> str:
    """A text quoted in an error, on one line and at most ``limit`` characters:
    what a provider or a client sent may be of any length."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class Validation:
    """One field-level problem of a request."""

    field: str
    detail: str


@dataclass
class ExtauthError(Exception):
    """Base of every error the API answers with; carries its HTTP status."""

    message: str
    detail: str = ""
    validations: list[Validation] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 500

    def __str__(self) -> str:
        return f"{self.message} {self.detail}".strip()

    def body(self) -> dict[str, object]:
        """Coder's ``Response`` JSON for this error."""
        out: dict[str, object] = {"message": self.message}
        if self.detail:
            out["detail"] = self.detail
        if self.validations:
            out["validations"] = [{"field": v.field, "detail": v.detail} for v in self.validations]
        return out


@dataclass
class BadRequestError(ExtauthError):
    """The request is well-formed HTTP but cannot be carried out as asked."""

    status: int = 400


@dataclass
class UnauthorizedError(ExtauthError):
    """No valid session: missing, malformed, unknown, wrong or expired token."""

    message: str = SIGNED_OUT
    status: int = 401


@dataclass
class CrossSiteError(ExtauthError):
    """A form of our pages was posted from another site."""

    message: str = "Cross-site request refused."
    detail: str = "This form can only be sent from this site's own pages."
    status: int = 403


@dataclass
class NotFoundError(ExtauthError):
    """No such provider, or no link of the caller's for it."""

    message: str = NOT_FOUND
    status: int = 404


@dataclass
class WaitTimeoutError(ExtauthError):
    """A long poll ended without what it waited for; the client asks again."""

    status: int = 408


@dataclass
class ConflictError(ExtauthError):
    """The request matches several things where it must match one."""

    status: int = 409


@dataclass
class PayloadTooLargeError(ExtauthError):
    """The request body is larger than the server accepts."""

    status: int = 413


@dataclass
class ProviderRateLimitedError(ExtauthError):
    """The provider rate-limits us; the client should retry after a while."""

    status: int = 429


@dataclass
class ProviderError(ExtauthError):
    """The provider is down, too slow, or answered something we cannot use."""

    status: int = 502
    # The provider's HTTP status, when it answered at all.
    upstream_status: int = 0


@dataclass
class ClientClosedError(ExtauthError):
    """The client closed the connection before the answer; nobody reads this."""

    message: str = "The client closed the connection."
    status: int = 499


@dataclass
class UnavailableError(ExtauthError):
    """The service cannot do this now: its database is unreachable, or the
    provider asked for cannot work as configured."""

    status: int = 503


def database_unreachable() -> UnavailableError:
    """What a caller is told when the database does not answer: never where it is
    (the server's log says that)."""
    return UnavailableError("The database is not reachable.",
                            detail="it does not answer; the server's log says more")
