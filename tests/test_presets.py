"""Provider presets from Coder-style env variables, and each provider quirk."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from extauth.providers.presets import ENTRA_RESOURCE
from extauth.settings import load_providers
from tests.conftest import Api, link, started_device_code
from tests.fake_provider import Answer, FakeProvider


def _env(ptype: str, **keys: str) -> dict[str, str]:
    env = {"CODER_EXTERNAL_AUTH_0_TYPE": ptype, "CODER_EXTERNAL_AUTH_0_CLIENT_ID": "cid"}
    env.update({f"CODER_EXTERNAL_AUTH_0_{k.upper()}": v for k, v in keys.items()})
    return env


def _load(ptype: str, **keys: str) -> dict[str, Any]:
    [p] = load_providers(None, _env(ptype, **keys))
    return p.masked()


def test_github() -> None:
    p = _load("github", client_secret="s")
    assert p["id"] == "github"
    assert p["auth_url"] == "https://github.com/login/oauth/authorize"
    assert p["token_url"] == "https://github.com/login/oauth/access_token"
    assert p["validate_url"] == "https://api.github.com/user"
    assert p["device_code_url"] == "https://github.com/login/device/code"
    assert p["app_installations_url"] == "https://api.github.com/user/installations"
    assert p["revoke_url"] == "https://api.github.com/applications/cid/grant"
    assert p["regex"] == r"^(https?://)?github\.com(/.*)?$"
    assert p["scopes"] == ["repo", "workflow"]
    assert (p["display_name"], p["display_icon"]) == ("GitHub", "/icon/github.svg")
    assert p["pkce_methods"] == ["S256"]
    assert p["notes"] == []


@pytest.mark.parametrize("auth_url, web, api", [
    ("https://git.corp.example/login/oauth/authorize", "https://git.corp.example",
     "https://git.corp.example/api/v3"),
    ("https://octo.ghe.com/login/oauth/authorize", "https://octo.ghe.com",
     "https://api.octo.ghe.com"),
])
def test_github_enterprise_derives_every_url_from_its_host(
    auth_url: str, web: str, api: str
) -> None:
    p = _load("github", auth_url=auth_url, device_flow="true")
    assert p["token_url"] == f"{web}/login/oauth/access_token"
    assert p["device_code_url"] == f"{web}/login/device/code"
    assert p["validate_url"] == f"{api}/user"
    assert p["app_installations_url"] == f"{api}/user/installations"
    assert p["revoke_url"] == f"{api}/applications/cid/grant"
    assert "github.com" not in p["regex"]
    assert "GitHub Enterprise" in p["notes"][0]


def test_explicit_keys_win_over_the_preset() -> None:
    p = _load("github", validate_url="https://proxy.example/user", scopes="repo")
    assert p["validate_url"] == "https://proxy.example/user"
    assert p["scopes"] == ["repo"]


@pytest.mark.parametrize("auth_url, host", [
    (None, "https://gitlab.com"),
    ("https://gitlab.corp.example/oauth/authorize", "https://gitlab.corp.example"),
])
def test_gitlab_cloud_and_self_hosted(auth_url: str | None, host: str) -> None:
    p = _load("gitlab", **({"auth_url": auth_url} if auth_url else {}))
    assert p["auth_url"] == f"{host}/oauth/authorize"
    assert p["token_url"] == f"{host}/oauth/token"
    assert p["validate_url"] == f"{host}/oauth/token/info"
    assert p["revoke_url"] == f"{host}/oauth/revoke"
    assert host.split("//")[1].replace(".", r"\.") in p["regex"]
    assert (p["display_name"], p["pkce_methods"]) == ("GitLab", ["S256"])


def test_bitbucket_alias_and_cloud() -> None:
    p = _load("bitbucket")
    assert (p["id"], p["type"]) == ("bitbucket", "bitbucket-cloud")
    assert p["token_url"] == "https://bitbucket.org/site/oauth2/access_token"
    assert p["validate_url"] == "https://api.bitbucket.org/2.0/user"
    assert p["revoke_url"] == ""
    assert (p["display_name"], p["pkce_methods"]) == ("BitBucket", ["none"])
    assert p["scopes"] == ["account", "repository:write"]


def test_bitbucket_server() -> None:
    p = _load("bitbucket-server", auth_url="https://bb.corp.example/rest/oauth2/latest/authorize")
    assert p["token_url"] == "https://bb.corp.example/rest/oauth2/latest/token"
    assert p["validate_url"] == (
        "https://bb.corp.example/rest/api/latest/inbox/pull-requests/count")
    assert p["scopes"] == ["PUBLIC_REPOS", "REPO_READ", "REPO_WRITE"]
    assert (p["display_name"], p["pkce_methods"]) == ("Bitbucket Server", ["none"])


def test_bitbucket_server_without_auth_url_is_unusable() -> None:
    """Coder starts with it (and fails when it is used): extauth starts, and says why."""
    [p] = load_providers(None, _env("bitbucket-server"))
    assert (p.id, p.token_url, p.validate_url) == ("bitbucket-server", "", "")
    assert "no token URL: set CODER_EXTERNAL_AUTH_0_AUTH_URL" in p.unusable


def test_azure_devops() -> None:
    p = _load("azure-devops")
    assert p["auth_url"] == "https://app.vssps.visualstudio.com/oauth2/authorize"
    assert p["token_url"] == "https://app.vssps.visualstudio.com/oauth2/token"
    assert p["validate_url"] == ""
    assert p["regex"] == r"^(https?://)?dev\.azure\.com(/.*)?$"
    assert (p["scopes"], p["pkce_methods"]) == (["vso.code_write"], ["none"])
    assert p["exchange"] == "azure-assertion"


def test_azure_devops_entra() -> None:
    p = _load("azure-devops-entra",
              auth_url="https://login.microsoftonline.com/tenant-1/oauth2/authorize")
    assert p["token_url"] == "https://login.microsoftonline.com/tenant-1/oauth2/token"
    assert p["auth_params"] == {"resource": ENTRA_RESOURCE}
    assert p["display_name"] == "Azure DevOps (Entra)"
    # Coder sends no PKCE here (a TODO in its source); Entra ID supports S256 (README).
    assert p["pkce_methods"] == ["S256"]


def test_gitea() -> None:
    p = _load("gitea")
    assert p["auth_url"] == "https://gitea.com/login/oauth/authorize"
    assert p["token_url"] == "https://gitea.com/login/oauth/access_token"
    assert p["validate_url"] == "https://gitea.com/login/oauth/userinfo"
    assert p["scopes"] == ["read:repository", "write:repository", "read:user"]
    p = _load("gitea", auth_url="https://git.corp.example/login/oauth/authorize")
    assert p["validate_url"] == "https://git.corp.example/login/oauth/userinfo"


def test_jfrog() -> None:
    p = _load("jfrog", auth_url="https://acme.jfrog.io/ui/authorize")
    assert p["token_url"] == "https://acme.jfrog.io/access/api/v1/integrations/cid/token"
    assert p["validate_url"] == "https://acme.jfrog.io/access/api/v1/system/ping"
    assert p["regex"] == ""
    assert (p["scopes"], p["pkce_methods"]) == (["applied-permissions/user"], ["none"])
    assert p["exchange"] == "bearer-secret"


def test_slack() -> None:
    p = _load("slack")
    assert p["token_url"] == "https://slack.com/api/oauth.v2.access"
    assert p["revoke_url"] == "https://slack.com/api/auth.revoke"
    assert p["extra_token_keys"] == ["authed_user"]
    assert p["pkce_methods"] == ["none"]


def test_unknown_type_is_generic_with_pkce() -> None:
    p = _load("forgejo-ish", token_url="https://f.example/token")
    assert (p["display_name"], p["display_icon"]) == ("forgejo-ish", "/emojis/1f511.png")
    assert p["pkce_methods"] == ["S256"] and p["exchange"] == "standard"


def test_type_is_case_insensitive() -> None:
    assert _load("GitHub")["type"] == "github"


def test_list_shows_the_effective_provider(make_api) -> None:  # type: ignore[no-untyped-def]
    [p] = load_providers(None, _env("gitlab"))
    api = make_api({"type": "gitlab", "client_id": "cid"})
    [listed] = api.get("/api/v2/external-auth", headers=api.login()).json()["providers"]
    assert listed == {"id": "gitlab", "type": "gitlab", "device": False,
                      "display_name": "GitLab", "display_icon": "/icon/gitlab.svg",
                      "allow_refresh": True, "allow_validate": True,
                      "supports_revocation": True, "code_challenge_methods_supported": ["S256"]}
    assert p.display_name == listed["display_name"]


# -- quirks, against the fake provider -------------------------------------------------


def _github_at_fake(fake: FakeProvider, **over: Any) -> dict[str, Any]:
    return fake.config(
        type="github", id="gh", revoke_url=f"{fake.url}/applications/{fake.CLIENT_ID}/grant",
        **over)


def test_github_device_requests_send_only_the_client_id(make_api, fake: FakeProvider) -> None:
    api = make_api(_github_at_fake(fake))
    headers = api.login()
    code = api.get("/api/v2/external-auth/gh/device", headers=headers).json()["device_code"]
    api.post("/api/v2/external-auth/gh/device", headers=headers, json={"device_code": code})
    for seen in fake.seen("device") + fake.seen("token"):
        assert seen.form["client_id"] == fake.CLIENT_ID
        assert "client_secret" not in seen.form and "authorization" not in seen.headers


def test_github_revocation_deletes_the_grant(make_api, fake: FakeProvider) -> None:
    api = make_api(_github_at_fake(fake))
    headers = api.login()
    access, _ = link(api, fake, provider="gh")
    assert api.delete("/api/v2/external-auth/gh", headers=headers).json() == {
        "token_revoked": True}
    [seen] = fake.seen("revoke")
    assert seen.method == "DELETE" and seen.json == {"access_token": access}
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(
        f"{fake.CLIENT_ID}:{fake.CLIENT_SECRET}".encode()).decode()
    assert seen.headers["accept"] == "application/vnd.github+json"
    assert access in fake.revoked


def test_github_revocation_counts_only_204(make_api, fake: FakeProvider) -> None:
    api = make_api(_github_at_fake(fake))
    headers = api.login()
    link(api, fake, provider="gh")
    fake.script("revoke", Answer(status=200, json={}))
    body = api.delete("/api/v2/external-auth/gh", headers=headers).json()
    assert body["token_revoked"] is False
    assert body["token_revocation_error"].startswith("failed to revoke token: 200")


def test_github_code_exchange_sends_the_secret_in_the_form(make_api, fake: FakeProvider) -> None:
    api = make_api(_github_at_fake(fake))
    headers = api.login()
    r = api.get("/external-auth/gh/callback", headers=headers, follow_redirects=False)
    back = urlsplit(httpx.get(r.headers["location"]).headers["location"])
    assert api.get(f"{back.path}?{back.query}", headers=headers,
                   follow_redirects=False).status_code == 307
    form = fake.seen("token")[0].form
    assert form["client_secret"] == fake.CLIENT_SECRET and "authorization" not in \
        fake.seen("token")[0].headers


def test_slow_down_interval_becomes_retry_after(api: Api, fake: FakeProvider) -> None:
    fake.script("token", Answer(form={"error": "slow_down", "interval": "10"}))
    headers = api.login()
    r = api.post("/api/v2/external-auth/fake/device", headers=headers,
                 json={"device_code": started_device_code(api, headers)})
    assert (r.status_code, r.json()["detail"]) == (400, "slow_down")
    assert r.headers["retry-after"] == "10"


def _authorize(api: Api, provider: str) -> dict[str, str]:
    r = api.get(f"/external-auth/{provider}/callback", headers=api.login(),
                follow_redirects=False)
    assert r.status_code == 307
    return {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}


def _exchange_with_code(api: Api, provider: str, state: str) -> httpx.Response:
    return api.get(f"/external-auth/{provider}/callback", headers=api.login(),
                   params={"code": "the-code", "state": state}, follow_redirects=False)


def test_azure_devops_exchanges_with_a_jwt_assertion(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(type="azure-devops", id="ado", pkce_methods=None))
    params = _authorize(api, "ado")
    assert params["response_type"] == "Assertion" and "code_challenge" not in params
    fake.script("token", Answer(json={"access_token": "ado-at", "refresh_token": "ado-rt",
                                      "expires_in": "3599"}))
    assert _exchange_with_code(api, "ado", params["state"]).status_code == 307
    form = fake.seen("token")[0].form
    assert form == {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": fake.CLIENT_SECRET,
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "assertion": "the-code",
        "redirect_uri": "http://127.0.0.1:8080/external-auth/ado/callback",
    }


def test_entra_sends_the_devops_resource(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(type="azure-devops-entra", id="entra"))
    params = _authorize(api, "entra")
    assert params["resource"] == ENTRA_RESOURCE
    fake.script("token", Answer(json={"access_token": "e-at"}))
    assert _exchange_with_code(api, "entra", params["state"]).status_code == 307
    assert fake.seen("token")[0].form["resource"] == ENTRA_RESOURCE


def test_jfrog_sends_the_secret_as_bearer_on_the_exchange(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(type="jfrog", id="jf"))
    params = _authorize(api, "jf")
    fake.script("token", Answer(json={"access_token": "jf-at"}))
    assert _exchange_with_code(api, "jf", params["state"]).status_code == 307
    seen = fake.seen("token")[0]
    assert seen.headers["authorization"] == f"Bearer {fake.CLIENT_SECRET}"
    assert "client_secret" not in seen.form


def test_slack_revocation_reads_ok_false(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(type="slack", id="sl"))
    headers = api.login()
    link(api, fake, provider="sl")
    fake.script("revoke", Answer(json={"ok": False, "error": "invalid_auth"}))
    body = api.delete("/api/v2/external-auth/sl", headers=headers).json()
    assert body == {"token_revoked": False,
                    "token_revocation_error": "failed to revoke token: invalid_auth; extauth "
                    "keeps trying until the provider confirms"}
