"""What the pages show, gathered from the ``Links`` service for one caller.

Nothing here renders or speaks HTTP: the handlers hand these values to the
templates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from extauth.links import Links, LinkState
from extauth.providers.oauth import Installation, ProviderUser
from extauth.sessions import Session
from extauth.settings import ProviderConfig


@dataclass(frozen=True)
class ProviderView:
    """One provider as the caller sees it on a page."""

    provider: ProviderConfig
    linked: bool = False
    authenticated: bool = False
    validate_error: str = ""
    user: ProviderUser | None = None
    installations: list[Installation] = field(default_factory=list)
    app_installable: bool = False
    # Why the provider could not be asked about a stored link (it may be fine).
    unreachable: str = ""

    @property
    def id(self) -> str:
        return self.provider.id

    @property
    def display_name(self) -> str:
        return self.provider.display_name or self.provider.id

    @property
    def icon_url(self) -> str:
        """The display icon when it is an image the browser can fetch ("" otherwise:
        Coder's own ``/icon/...`` and ``/emojis/...`` paths are its frontend's)."""
        icon = self.provider.display_icon
        parts = urlsplit(icon)
        if parts.scheme in ("https", "data") or icon.startswith("/assets/"):
            return icon
        return ""

    @property
    def initial(self) -> str:
        """A letter standing in for an icon."""
        return (self.display_name.strip()[:1] or "?").upper()

    @property
    def device(self) -> bool:
        return self.provider.device_flow

    @property
    def web(self) -> bool:
        return bool(self.provider.auth_url)

    @property
    def callback_path(self) -> str:
        return f"/external-auth/{self.provider.id}/callback"


async def overview(links: Links, session: Session) -> list[ProviderView]:
    """Every configured provider, with the caller's link as the list validated it
    (every linked provider asked at once), and the provider-side user."""
    states = {s.link.provider_id: s for s in await links.list_links(session)}
    return [_listed(p, states.get(p.id)) for p in links.settings.providers]


def _listed(p: ProviderConfig, state: LinkState | None) -> ProviderView:
    if state is None:
        return ProviderView(p)
    if state.unchecked:
        # One provider down must not take the whole page with it.
        return ProviderView(p, linked=True, unreachable=state.validate_error)
    return ProviderView(p, linked=True, authenticated=state.authenticated,
                        validate_error=state.validate_error, user=state.user)


async def provider_view(links: Links, session: Session, provider_id: str) -> ProviderView:
    """One provider: validated at the provider when linked, with the provider-side
    user and app installations; why not, when the link is not valid."""
    p, state = await links.link_state(session, provider_id)
    if state is None or not state.authenticated:
        return _listed(p, state)
    installable, installations = await links.app_installations(p, state.link)
    return ProviderView(p, linked=True, authenticated=True, user=state.user,
                        installations=installations, app_installable=installable)
