"""The pages for people (tag ``Pages``), in-process: sign-in, the session cookie,
redirects to sign in, the HTML of each page and its headers.

What a browser does with them (scripts, clicks, the keyboard) is
``test_pages_browser.py``.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from extauth.pages import CONTENT_SECURITY_POLICY, is_cross_site, sign_in_url
from tests.conftest import Api, link, sql
from tests.fake_provider import Answer, FakeProvider

HTML = "text/html; charset=utf-8"


def _token(api: Api, name: str = "alice") -> str:
    return api.login(name)["Coder-Session-Token"]


def _cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"coder_session_token={token}"}


def _is_page(r: httpx.Response, status: int = 200) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == HTML
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    return r.text


# -- sign in -----------------------------------------------------------------------------


def test_the_sign_in_page_has_the_form(api: Api) -> None:
    text = _is_page(api.get("/login", params={"redirect": "/external-auth/fake"}))
    assert '<label for="token">Session token</label>' in text
    assert 'type="password"' in text
    assert '<button type="submit" class="primary">Sign in</button>' in text
    assert '<input type="hidden" name="redirect" value="/external-auth/fake">' in text


def test_the_sign_in_page_keeps_only_a_same_site_redirect(api: Api) -> None:
    text = _is_page(api.get("/login", params={"redirect": "https://evil.example//x"}))
    assert 'name="redirect" value="/external-auth"' in text


def test_signing_in_sets_the_session_cookie_and_goes_on(api: Api) -> None:
    token = _token(api)
    r = api.post("/login", data={"token": token, "redirect": "/external-auth/fake?x=1"},
                 follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/external-auth/fake?x=1"
    [cookie] = r.headers.get_list("set-cookie")
    attributes = [a.strip().lower() for a in cookie.split(";")]
    assert attributes[0] == f"coder_session_token={token}".lower()
    assert {"httponly", "samesite=lax", "path=/"} <= set(attributes)
    assert "secure" not in attributes, "the access URL is plain http"
    assert api.get("/api/v2/external-auth", headers=_cookie(token)).status_code == 200


def test_the_cookie_is_secure_when_the_access_url_is_https(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(), access_url="https://extauth.example")
    r = api.post("/login", data={"token": _token(api)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/external-auth"
    assert "secure" in [a.strip().lower() for a in r.headers["set-cookie"].split(";")]


@pytest.mark.parametrize("redirect", ["https://evil.example/x", "//evil.example/x",
                                      "javascript:alert(1)", ""])
def test_signing_in_never_leaves_the_site(api: Api, redirect: str) -> None:
    r = api.post("/login", data={"token": _token(api), "redirect": redirect},
                 follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] in ("/external-auth", "/x")


@pytest.mark.parametrize("token, detail", [
    ("wrong", "Invalid API key format: incorrect amount of API key parts, expected 2 got 1"),
    ("0123456789-" + "x" * 22, "API key is invalid."),
    ("", 'Cookie "coder_session_token" or query parameter must be provided.'),
])
def test_a_wrong_token_shows_the_form_again_with_coders_message(
    api: Api, token: str, detail: str
) -> None:
    r = api.post("/login", data={"token": token, "redirect": "/external-auth/fake"},
                 follow_redirects=False)
    text = _is_page(r, 401)
    assert "set-cookie" not in r.headers
    assert "You are signed out or your session has expired." in text
    assert detail.replace('"', "&#34;") in text
    assert 'role="alert"' in text and "Session token" in text
    assert 'name="redirect" value="/external-auth/fake"' in text
    if token:
        assert token not in text


def test_a_missing_token_field_is_a_400_page(api: Api) -> None:
    text = _is_page(api.post("/login", data={"redirect": "/x"}), 400)
    assert "Invalid request." in text and "&#39;token&#39; is a required property" in text


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "http://testserver"},
])
def test_a_cross_site_sign_in_is_refused(api: Api, headers: dict[str, str]) -> None:
    """Otherwise any site could sign a visitor in as its own user (the planting
    attack, through the form)."""
    r = api.post("/login", data={"token": _token(api, "mallory")}, headers=headers,
                 follow_redirects=False)
    text = _is_page(r, 403)
    assert "Cross-site request refused." in text
    assert "set-cookie" not in r.headers


@pytest.mark.parametrize("headers", [
    {"Origin": "http://testserver"},
    {"Origin": "http://127.0.0.1:8080"},  # the access URL
    {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"},
    {"Sec-Fetch-Site": "none"},
    {},  # not a browser: curl
])
def test_a_same_site_sign_in_is_accepted(api: Api, headers: dict[str, str]) -> None:
    r = api.post("/login", data={"token": _token(api)}, headers=headers,
                 follow_redirects=False)
    assert r.status_code == 303, r.text


@pytest.mark.parametrize("origin, fetch_site, host, cross", [
    ("http://a.example", None, "a.example", False),
    ("http://a.example:8080", None, "a.example", True),
    ("https://public.example", None, "10.0.0.1:8080", False),
    ("http://b.example", None, None, True),
    (None, "same-origin", "a.example", False),
    ("http://a.example", "cross-site", "a.example", True),
    (None, None, None, False),
])
def test_is_cross_site(origin: str | None, fetch_site: str | None, host: str | None,
                       cross: bool) -> None:
    assert is_cross_site(origin, fetch_site, host, "https://public.example") is cross


def test_the_sign_in_page_sends_a_signed_in_browser_on(api: Api) -> None:
    r = api.get("/login", params={"redirect": "/external-auth/fake"},
                headers=_cookie(_token(api)), follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/external-auth/fake")
    stale = _cookie("0123456789-" + "x" * 22)
    _is_page(api.get("/login", headers=stale, follow_redirects=False))


def test_signing_out_clears_the_cookie(api: Api) -> None:
    r = api.post("/logout", headers=_cookie(_token(api)), follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith('coder_session_token="";') and "max-age=0" in cookie
    r = api.post("/logout", headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert r.status_code == 403 and "set-cookie" not in r.headers


# -- no session: to the sign-in page -------------------------------------------------------


@pytest.mark.parametrize("path", ["/external-auth", "/external-auth/fake",
                                  "/external-auth/no-such-provider"])
def test_a_page_without_a_session_sends_the_browser_to_sign_in(api: Api, path: str) -> None:
    for headers in ({}, _cookie("0123456789-" + "x" * 22)):
        r = api.get(path, params={"redirected": "true"}, headers=headers,
                    follow_redirects=False)
        assert r.status_code == 303, r.text
        assert r.headers["location"] == sign_in_url(path, "redirected=true")
        back = parse_qs(urlsplit(r.headers["location"]).query)["redirect"][0]
        assert back == f"{path}?redirected=true"


def test_sign_in_url_drops_tokens_from_the_way_back() -> None:
    assert sign_in_url("/external-auth/x", "coder_session_token=t&access_token=u&a=1") == (
        "/login?redirect=/external-auth/x%3Fa%3D1")
    assert sign_in_url("/external-auth", "") == "/login?redirect=/external-auth"


def test_a_token_in_the_query_opens_a_page_once_and_sets_no_cookie(api: Api) -> None:
    r = api.get("/external-auth", params={"coder_session_token": _token(api)})
    text = _is_page(r)
    assert "set-cookie" not in r.headers
    assert "External authentication" in text


# -- the pages ------------------------------------------------------------------------------


def test_the_list_page_shows_every_provider_and_the_callers_links(
    make_api, fake: FakeProvider
) -> None:
    api = make_api(fake.config(display_name="Fake Git"),
                   fake.config(id="other", display_name="Other <Git>",
                               display_icon="https://icons.example/o.svg"))
    token = _token(api)
    access, refresh = link(api, fake)
    text = _is_page(api.get("/external-auth", headers=_cookie(token)))
    assert "<title>External authentication · extauth</title>" in text
    assert "<h1>External authentication</h1>" in text
    assert "Signed in as <b>alice</b>" in text
    assert '<a href="/external-auth/fake">Fake Git</a>' in text
    assert "Linked as <b>octocat</b>" in text  # validated at the provider
    assert "Other &lt;Git&gt;" in text and "Other <Git>" not in text
    assert '<img class="icon" src="https://icons.example/o.svg"' in text
    assert "Not linked" in text
    assert 'data-action="unlink"' in text
    assert '<script src="/assets/pages.js" defer></script>' in text
    for secret in (access, refresh, token, FakeProvider.CLIENT_SECRET):
        assert secret not in text


def test_the_list_page_shows_a_links_validate_error(api: Api, fake: FakeProvider) -> None:
    token = _token(api)
    link(api, fake, expires_in=None)
    sql(api, "UPDATE external_auth_links SET access_token = ''")
    text = _is_page(api.get("/external-auth", headers=_cookie(token)))
    assert "Linked, but not usable: The link holds no access token; link again." in text


def test_a_provider_down_does_not_take_the_list_page_with_it(api: Api,
                                                            fake: FakeProvider) -> None:
    token = _token(api)
    link(api, fake)
    fake.script("validate", *[Answer(status=503, text="down")] * 2)
    text = _is_page(api.get("/external-auth", headers=_cookie(token)))
    assert ("Linked, but the token could not be checked: Failed to validate token with "
            "provider &#39;fake&#39;: it answered HTTP 503.") in text


def test_the_provider_page_of_a_linked_provider(api: Api, fake: FakeProvider) -> None:
    token = _token(api)
    access, refresh = link(api, fake)
    text = _is_page(api.get("/external-auth/fake", headers=_cookie(token)))
    assert "<h1>Authenticated with fake-oauth</h1>" in text
    assert "as <b>octocat</b>" in text
    assert 'data-action="unlink"' in text
    assert access not in text and refresh not in text


def test_the_provider_page_shows_app_installations(make_api, fake: FakeProvider) -> None:
    api = make_api(fake.config(type="github", app_install_url="https://gh.example/apps/x/new",
                               revoke_url=None))
    token = _token(api)
    link(api, fake)
    fake.script("installations", Answer(json={"installations": [{
        "id": 7, "html_url": "https://gh.example/settings/installations/7",
        "account": {"id": 9, "login": "octo-org", "avatar_url": "", "html_url": "", "name": ""},
    }]}))
    text = _is_page(api.get("/external-auth/fake", headers=_cookie(token)))
    assert "<h2>App installations</h2>" in text
    assert "<b>octo-org</b>" in text
    assert 'href="https://gh.example/settings/installations/7"' in text
    assert 'href="https://gh.example/apps/x/new"' in text


def test_the_provider_page_of_a_device_flow_provider_not_linked(api: Api) -> None:
    text = _is_page(api.get("/external-auth/fake", headers=_cookie(_token(api))))
    assert "<h1>Link fake-oauth</h1>" in text
    assert '<button type="button" class="primary" data-action="device-start">Link</button>' in text
    assert 'href="/external-auth/fake/callback">Link in this browser instead</a>' in text
    assert "Try again" in text and "Copy" in text


def test_the_provider_page_of_a_web_flow_provider_not_linked(make_api,
                                                             fake: FakeProvider) -> None:
    api = make_api(fake.config(device_flow=False, device_code_url=None))
    text = _is_page(api.get("/external-auth/fake", params={"redirected": "true"},
                            headers=_cookie(_token(api))))
    assert '<a class="button primary" href="/external-auth/fake/callback">Link</a>' in text
    assert 'data-action="device-start"' not in text
    assert "sent you back, but the link is not usable yet" in text


def test_an_unknown_provider_is_a_404_page_with_the_api_message(api: Api) -> None:
    headers = _cookie(_token(api))
    text = _is_page(api.get("/external-auth/nope", headers=headers), 404)
    message = api.get("/api/v2/external-auth/nope", headers=headers).json()["message"]
    assert f"<h1>{message}</h1>" in text


def test_a_bad_parameter_is_a_400_page(api: Api) -> None:
    r = api.get("/external-auth/fake", params={"redirected": "perhaps"},
                headers=_cookie(_token(api)))
    assert "Invalid request." in _is_page(r, 400)


def test_a_provider_down_shows_the_link_unchecked_on_its_page(api: Api,
                                                               fake: FakeProvider) -> None:
    """Not an error page: the person still sees the link and can unlink or link
    again."""
    token = _token(api)
    link(api, fake)
    fake.script("validate", *[Answer(status=503, text="down")] * 2)
    before = len(fake.requests)
    text = _is_page(api.get("/external-auth/fake", headers=_cookie(token)))
    assert ("Linked, but the token could not be checked: Failed to validate token with "
            "provider &#39;fake&#39;: it answered HTTP 503.") in text
    assert "<h1>Link fake-oauth</h1>" in text and 'data-action="unlink"' in text
    assert len(fake.requests) - before == 1  # the validation, and nothing more


def test_a_wrong_method_on_a_page_is_a_405_page(api: Api) -> None:
    r = api.delete("/external-auth", headers=_cookie(_token(api)))
    assert r.headers["allow"] == "GET, HEAD"
    assert "Method not allowed." in _is_page(r, 405)


# -- assets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, ctype", [("style.css", "text/css; charset=utf-8"),
                                         ("pages.js", "text/javascript; charset=utf-8")])
def test_the_assets_are_served(api: Api, name: str, ctype: str) -> None:
    r = api.get(f"/assets/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == ctype
    assert r.headers["cache-control"].startswith("public")
    assert r.content


@pytest.mark.parametrize("name", ["nope.css", "..%2fapp.py", "__init__.py", "login.html"])
def test_an_unknown_asset_is_404(api: Api, name: str) -> None:
    r = api.get(f"/assets/{name}")
    assert r.status_code == 404
    assert r.json()["message"] == "Route not found."
