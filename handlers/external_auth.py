"""The five operations of tag ``Git``: Coder's external-auth API."""

from __future__ import annotations

from typing import Any

from starlette.responses import RedirectResponse, Response

from extauth.errors import BadRequestError, clip
from extauth.links import LinkState, ProviderState
from extauth.providers.oauth import ProviderUser
from extauth.sessions import Session
from extauth.settings import ProviderConfig
from handlers import go_time, service


def _user(user: ProviderUser) -> dict[str, Any]:
    return {
        "id": user.id,
        "login": user.login,
        "avatar_url": user.avatar_url,
        "profile_url": user.profile_url,
        "name": user.name,
    }


def _provider(p: ProviderConfig) -> dict[str, Any]:
    out = {
        "id": p.id,
        "type": p.type,
        "device": p.device_flow,
        "display_name": p.display_name,
        "display_icon": p.display_icon,
        "allow_refresh": not p.no_refresh,
        "allow_validate": bool(p.validate_url),
        "supports_revocation": bool(p.revoke_url),
        "code_challenge_methods_supported": list(p.pkce_methods),
    }
    if p.unusable:
        out["unusable"] = p.unusable
    return out


def _link(state: LinkState) -> dict[str, Any]:
    link = state.link
    return {
        "provider_id": link.provider_id,
        "created_at": go_time(link.created_at),
        "updated_at": go_time(link.updated_at),
        "has_refresh_token": bool(link.refresh_token),
        "expires": go_time(link.expires_at),
        "authenticated": state.authenticated,
        "validate_error": state.validate_error,
    }


def _external_auth(state: ProviderState) -> dict[str, Any]:
    p = state.provider
    return {
        "authenticated": state.authenticated,
        "device": p.device_flow,
        "display_name": p.display_name,
        "supports_revocation": bool(p.revoke_url),
        "user": _user(state.user) if state.user else None,
        "app_installable": state.app_installable,
        "installations": [
            {"id": i.id, "account": _user(i.account), "configure_url": i.configure_url}
            for i in state.installations
        ],
        "app_install_url": p.app_install_url,
    }


async def list_user_external_auths(token_info: dict[str, Any]) -> dict[str, Any]:
    links = service()
    states = await links.list_links(token_info["caller"])
    return {
        "providers": [_provider(p) for p in links.settings.providers],
        "links": [_link(s) for s in states],
    }


async def get_external_auth_by_id(externalauth: str, token_info: dict[str, Any]) -> dict[str, Any]:
    state = await service().status(token_info["caller"], externalauth)
    return _external_auth(state)


async def delete_external_auth_user_link_by_id(
    externalauth: str, token_info: dict[str, Any]
) -> dict[str, Any]:
    result = await service().unlink(token_info["session"], externalauth)
    body: dict[str, Any] = {"token_revoked": result.token_revoked}
    if result.token_revocation_error:
        body["token_revocation_error"] = result.token_revocation_error
    return body


async def get_external_auth_device_by_id(
    externalauth: str, token_info: dict[str, Any]
) -> dict[str, Any]:
    device = await service().start_device(token_info["session"], externalauth)
    return {
        "device_code": device.device_code,
        "user_code": device.user_code,
        "verification_uri": device.verification_uri,
        "expires_in": device.expires_in,
        "interval": device.interval,
    }


async def post_external_auth_device_by_id(
    externalauth: str, body: dict[str, Any], token_info: dict[str, Any]
) -> Response:
    await service().exchange_device(token_info["session"], externalauth, body["device_code"])
    return Response(status_code=204)


async def external_auth_callback(
    externalauth: str,
    token_info: dict[str, Any],
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
    error_description: str | None = None,
    error_uri: str | None = None,
    redirect: str | None = None,
) -> Response:
    """The web flow: send the browser to the provider, or take its answer back."""
    links = service()
    session: Session = token_info["session"]
    if error:
        detail = " ".join(x for x in (error_description, error_uri) if x)
        raise BadRequestError(f"Encountered error in oidc process: {clip(error, 64)}",
                              detail=clip(detail))
    if not code:  # Coder reads it with Query().Get: empty is absent
        target = await links.start_web(session, externalauth, redirect)
    else:
        _, target = await links.finish_web(session, externalauth, code, state)
    return RedirectResponse(target, status_code=307)


# Coder's legacy path, /gitauth/{id}/callback: the same flow. Its own operationId
# (connexion keeps per-operation state by operationId), the same function.
legacy_gitauth_callback = external_auth_callback
