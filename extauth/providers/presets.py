"""Defaults that a provider's ``type`` fills in; explicit keys always win.

The table follows Coder's presets. Types whose URLs depend on where the
server runs (GitLab self-hosted, Bitbucket Server, Gitea, JFrog, GitHub
Enterprise, Azure DevOps via Entra) derive them from the host of
``auth_url``. Any other type is a generic OAuth 2.0 server: every URL must be
configured, and PKCE S256 is used unless ``pkce_methods`` says otherwise.

Besides Coder's keys, a preset sets how we talk to that provider
(``token_auth``, ``device_auth``, ``exchange``, ``revoke_style``,
``auth_params``); these are not configurable, they are the provider's quirks.
``notes`` records what was derived, for ``extauth providers list``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

# Legacy type names and what they mean today.
ALIASES = {"bitbucket": "bitbucket-cloud"}

# Types whose token URL is derived from the host (or path) of ``auth_url``.
DERIVES_TOKEN_URL = frozenset({"github", "gitlab", "bitbucket-server", "gitea", "jfrog",
                               "azure-devops-entra"})

ENTRA_RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798"
GITHUB_HOST = "github.com"


def _host_regex(host: str) -> str:
    return rf"^(https?://)?{re.escape(host)}(/.*)?$"


def _origin(url: str) -> tuple[str, str]:
    """(``scheme://host[:port]``, host) of a URL, or ("", "") when it has none."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return "", ""
    return f"{parts.scheme}://{parts.netloc}", parts.hostname or ""


STATIC: dict[str, dict[str, Any]] = {
    "github": {
        "display_name": "GitHub",
        "display_icon": "/icon/github.svg",
        "scopes": ("repo", "workflow"),
        "pkce_methods": ("S256",),
        "token_auth": "post",
        "device_auth": "client_id",
        "revoke_style": "github",
    },
    "gitlab": {
        "display_name": "GitLab",
        "display_icon": "/icon/gitlab.svg",
        "scopes": ("write_repository", "read_api"),
        "pkce_methods": ("S256",),
    },
    "bitbucket-cloud": {
        "auth_url": "https://bitbucket.org/site/oauth2/authorize",
        "token_url": "https://bitbucket.org/site/oauth2/access_token",
        "validate_url": "https://api.bitbucket.org/2.0/user",
        "regex": _host_regex("bitbucket.org"),
        "display_name": "BitBucket",
        "display_icon": "/icon/bitbucket.svg",
        "scopes": ("account", "repository:write"),
        "pkce_methods": ("none",),
    },
    "bitbucket-server": {
        "display_name": "Bitbucket Server",
        "display_icon": "/icon/bitbucket.svg",
        "scopes": ("PUBLIC_REPOS", "REPO_READ", "REPO_WRITE"),
        "pkce_methods": ("none",),
    },
    "azure-devops": {
        "auth_url": "https://app.vssps.visualstudio.com/oauth2/authorize",
        "token_url": "https://app.vssps.visualstudio.com/oauth2/token",
        "regex": _host_regex("dev.azure.com"),
        "display_name": "Azure DevOps",
        "display_icon": "/icon/azure-devops.svg",
        "scopes": ("vso.code_write",),
        "pkce_methods": ("none",),
        "exchange": "azure-assertion",
    },
    "azure-devops-entra": {
        "regex": _host_regex("dev.azure.com"),
        "display_name": "Azure DevOps (Entra)",
        "display_icon": "/icon/azure-devops.svg",
        "pkce_methods": ("S256",),
        "auth_params": (("resource", ENTRA_RESOURCE),),
    },
    "gitea": {
        "auth_url": "https://gitea.com/login/oauth/authorize",
        "display_name": "Gitea",
        "display_icon": "/icon/gitea.svg",
        "scopes": ("read:repository", "write:repository", "read:user"),
        "pkce_methods": ("S256",),
    },
    "jfrog": {
        "display_name": "JFrog Artifactory",
        "display_icon": "/icon/jfrog.svg",
        "scopes": ("applied-permissions/user",),
        "pkce_methods": ("none",),
        "exchange": "bearer-secret",
    },
    "slack": {
        "auth_url": "https://slack.com/oauth/v2/authorize",
        "token_url": "https://slack.com/api/oauth.v2.access",
        "revoke_url": "https://slack.com/api/auth.revoke",
        "display_name": "Slack",
        "display_icon": "/icon/slack.svg",
        "extra_token_keys": ("authed_user",),
        "pkce_methods": ("none",),
    },
}

GENERIC: dict[str, Any] = {"pkce_methods": ("S256",)}


def _github(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """github.com, or GitHub Enterprise when ``auth_url`` points at another host.

    Coder keeps github.com's device, installations and revoke URLs for an
    Enterprise host; a token from one host is then sent to the other. Here
    every URL follows the host of ``auth_url``.
    """
    origin, host = _origin(values.get("auth_url", ""))
    notes: list[str] = []
    if not host or host == GITHUB_HOST:
        web, api = "https://github.com", "https://api.github.com"
    else:
        web = origin
        # GHE.com (data residency) serves its API at api.<host>; GHES at /api/v3.
        api = f"https://api.{host}" if host.endswith(".ghe.com") else f"{origin}/api/v3"
        notes.append(f"GitHub Enterprise at {host}: URLs derived from auth_url's host")
    out: dict[str, Any] = {
        "auth_url": f"{web}/login/oauth/authorize",
        "token_url": f"{web}/login/oauth/access_token",
        "device_code_url": f"{web}/login/device/code",
        "validate_url": f"{api}/user",
        "app_installations_url": f"{api}/user/installations",
        "regex": _host_regex(host or GITHUB_HOST),
    }
    if values.get("client_id"):
        out["revoke_url"] = f"{api}/applications/{values['client_id']}/grant"
    return out, notes


def _host_derived(values: dict[str, Any], paths: dict[str, str],
                  default_origin: str = "") -> tuple[dict[str, Any], list[str]]:
    """URLs built from the origin of ``auth_url`` (or a default origin)."""
    origin, host = _origin(values.get("auth_url", ""))
    if not origin:
        if not default_origin:
            return {}, ["auth_url is not set: no URL could be derived"]
        origin, host = _origin(default_origin)
    out: dict[str, Any] = {key: origin + path for key, path in paths.items()}
    out["regex"] = _host_regex(host)
    return out, [f"URLs derived from {host}"] if paths else []


def _dynamic(ptype: str, values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    if ptype == "github":
        return _github(values)
    if ptype == "gitlab":
        derived, notes = _host_derived(values, {
            "auth_url": "/oauth/authorize",
            "token_url": "/oauth/token",
            "validate_url": "/oauth/token/info",
            "revoke_url": "/oauth/revoke",
        }, default_origin="https://gitlab.com")
        return derived, [] if derived["regex"] == _host_regex("gitlab.com") else notes
    if ptype == "bitbucket-server":
        return _host_derived(values, {
            "token_url": "/rest/oauth2/latest/token",
            "validate_url": "/rest/api/latest/inbox/pull-requests/count",
        })
    if ptype == "gitea":
        return _host_derived(values, {
            "token_url": "/login/oauth/access_token",
            "validate_url": "/login/oauth/userinfo",
        }, default_origin="https://gitea.com")
    if ptype == "jfrog":
        if not values.get("client_id"):
            return {}, []
        derived, notes = _host_derived(values, {
            "token_url": f"/access/api/v1/integrations/{values['client_id']}/token",
            "validate_url": "/access/api/v1/system/ping",
        })
        derived.pop("regex", None)  # Artifactory serves every kind of URL: no default regex
        return derived, notes
    if ptype == "azure-devops-entra":
        auth = values.get("auth_url", "")
        if auth.endswith("/authorize"):
            return {"token_url": auth[: -len("authorize")] + "token"}, [
                "token_url derived from auth_url"]
        return {}, ["auth_url must be https://login.microsoftonline.com/<tenant>/oauth2/authorize"]
    return {}, []


def apply_preset(values: dict[str, Any]) -> dict[str, Any]:
    """Return ``values`` with the defaults of its type filled in where unset."""
    out = dict(values)
    ptype = out["type"] = ALIASES.get(out["type"], out["type"])
    derived, notes = _dynamic(ptype, out)
    defaults = {**STATIC.get(ptype, GENERIC), **derived}
    for key, value in defaults.items():
        if not out.get(key):
            out[key] = value
    if notes:
        out["notes"] = tuple(notes)
    return out
