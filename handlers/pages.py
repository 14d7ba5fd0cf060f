"""The operations of tag ``Pages``: HTML for people in a browser.

Each handler unpacks the request, makes one call into the domain (the
``Links`` service, or ``extauth.pages.views`` that gathers from it) and
answers a rendered page or a redirect. Errors are raised as usual; the error
handler renders them as pages for these operations.
"""

from __future__ import annotations

from typing import Any

from connexion.context import scope
from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, RedirectResponse, Response

from extauth import pages
from extauth.errors import NotFoundError, UnauthorizedError
from extauth.pages import views
from handlers import service
from handlers.security import SESSION_NAME, first_cookie


def _page(text: str, status: int = 200) -> Response:
    return HTMLResponse(text, status_code=status, headers=pages.SECURITY_HEADERS)


def _see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})


def _refuse_cross_site() -> None:
    headers = Headers(scope=scope)
    pages.refuse_cross_site(headers.get("origin"), headers.get("sec-fetch-site"),
                            headers.get("host"), service().settings.base_url())


async def _opens_a_session(token: str) -> bool:
    """Whether ``token`` opens a session (a stale cookie does not: sign in again)."""
    try:
        await service().authenticate(token)
    except UnauthorizedError:
        return False
    return True


async def login_page(redirect: str | None = None) -> Response:
    """The sign-in form; a browser already signed in goes straight on."""
    cookie = first_cookie(Headers(scope=scope).get("cookie", ""))
    if cookie and await _opens_a_session(cookie):
        return _see_other(pages.after_sign_in(redirect))
    return _page(pages.render("login.html", redirect=pages.after_sign_in(redirect)))


async def sign_in(body: dict[str, Any]) -> Response:
    """Check the form's token; set the session cookie, or show the form again."""
    _refuse_cross_site()
    target = pages.after_sign_in(body.get("redirect"))
    token = str(body.get("token") or "").strip()
    links = service()
    try:
        await links.authenticate(token)
    except UnauthorizedError as err:
        return _page(pages.render("login.html", redirect=target, error=err), err.status)
    response = _see_other(target)
    response.set_cookie(SESSION_NAME, token, httponly=True, samesite="lax", path="/",
                        secure=pages.secure_cookie(links.settings.base_url()))
    return response


async def sign_out(body: dict[str, Any] | None = None) -> Response:
    """Clear the session cookie."""
    _refuse_cross_site()
    response = _see_other(pages.SIGN_IN)
    response.delete_cookie(SESSION_NAME, path="/", httponly=True, samesite="lax",
                           secure=pages.secure_cookie(service().settings.base_url()))
    return response


async def external_auth_page(token_info: dict[str, Any]) -> Response:
    """Every provider and the caller's link with it."""
    session = token_info["session"]
    providers = await views.overview(service(), session)
    return _page(pages.render("list.html", providers=providers, user_name=session.user_name))


async def external_auth_provider_page(externalauth: str, token_info: dict[str, Any],
                                      redirected: bool = False) -> Response:
    """One provider: linked, or the way to link it."""
    session = token_info["session"]
    view = await views.provider_view(service(), session, externalauth)
    return _page(pages.render("provider.html", view=view, redirected=redirected,
                              user_name=session.user_name))


async def asset(name: str) -> Response:
    """A static file of the pages (stylesheet, script)."""
    found = pages.asset(name)
    if found is None:
        raise NotFoundError("Route not found.")
    return Response(found.body, media_type=found.content_type,
                    headers={"Cache-Control": "public, max-age=3600",
                             "X-Content-Type-Options": "nosniff"})
