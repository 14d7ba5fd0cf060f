"""Refresh against panva's oidc-provider with refresh token rotation on: the
provider revokes the whole grant when a rotated-out refresh token is used
again, so a second refresh racing the first would lose the link."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from extauth.store import open_store
from tests.live import LiveServer
from tests.oidc_provider import OidcProvider

pytestmark = pytest.mark.e2e
API = "/api/v2/external-auth"
N = 20


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(tmp_path_factory.mktemp("oidc-rot"), rotate_refresh=True).start()
    yield provider
    provider.stop()


def _link_by_device_flow(server: LiveServer, oidc: OidcProvider, token: str) -> None:
    with httpx.Client(base_url=server.url, headers={"Coder-Session-Token": token},
                      timeout=15) as c:
        device = c.get(f"{API}/oidc/device").json()
        oidc.approve_device(device["user_code"], login="alice",
                            verification_uri=device["verification_uri"])
        r = c.post(f"{API}/oidc/device", json={"device_code": device["device_code"]})
        assert r.status_code == 204, (r.text, server.output())


@pytest.mark.parametrize("workers", ["1", "2"])
def test_concurrent_requests_refresh_once_against_a_rotating_provider(
    tmp_path: Path, rotating: OidcProvider, workers: str
) -> None:
    server = LiveServer(tmp_path, [rotating.provider_config()], "--workers", workers).start()
    try:
        token = server.token("alice")
        _link_by_device_flow(server, rotating, token)
        store = open_store(server.db)
        before = store.get_link(1, "oidc")
        assert before is not None and before.refresh_token
        store.db.execute("UPDATE external_auth_links SET expires_at = "
                         "'2020-01-01T00:00:00.000000Z'")

        def get(i: int) -> bool:
            path = f"{API}/oidc" if i % 2 else API
            r = httpx.get(f"{server.url}{path}", headers={"Coder-Session-Token": token},
                          timeout=30)
            assert r.status_code == 200, r.text
            body = r.json()
            return bool(body["authenticated"] if "authenticated" in body
                        else body["links"][0]["authenticated"])

        with ThreadPoolExecutor(N) as pool:
            assert list(pool.map(get, range(N))) == [True] * N
        refreshes = [e for e in store.audit_events(provider_id="oidc") if e.action == "refresh"]
        assert [(e.outcome) for e in refreshes] == ["ok"]
        after = store.get_link(1, "oidc")
        assert after is not None and after.refresh_token != before.refresh_token
        # the grant survived: the new access token works at the provider itself
        assert rotating.userinfo(after.access_token).status_code == 200
        store.close()
    finally:
        server.stop()
