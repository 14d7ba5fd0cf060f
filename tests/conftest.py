"""Fixtures: a real SQLite file per test, the fake provider on 127.0.0.1, and
the ASGI app in-process with response validation on."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # starlette warns that its test client will move from httpx to httpx2.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from extauth import sessions
from extauth.app import create_app
from extauth.crypto import Cipher
from extauth.settings import Settings, build_provider
from extauth.store import Store
from tests.fake_provider import FakeProvider


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[FakeProvider]:
    fake = FakeProvider().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(_fake_server: FakeProvider) -> FakeProvider:
    """The fake provider, with fresh state for this test."""
    f = _fake_server
    f.requests.clear()
    f.scripts.clear()
    f.devices.clear()
    f.access.clear()
    f.refresh.clear()
    f.revoked.clear()
    f.codes.clear()
    f.grant_of.clear()
    f.used_refresh.clear()
    f.refresh_delay = 0.0
    f.expires_in = 3600
    f.auto_approve = False
    f.max_in_flight = 0
    return f


class Api:
    """The app under test, in-process, plus its database."""

    def __init__(self, client: TestClient, store: Store, settings: Settings) -> None:
        self.client = client
        self.store = store
        self.settings = settings

    def login(self, name: str = "alice") -> dict[str, str]:
        """Create user ``name`` (once) and return headers with a fresh session token."""
        user = self.store.get_user(name) or self.store.create_user(name)
        return {"Coder-Session-Token": sessions.create_token(self.store, user)}

    def user_id(self, name: str) -> int:
        user = self.store.get_user(name)
        assert user is not None
        return user.id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture(params=[False, True], ids=["fast", "stock"])
def make_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Build an ``Api`` from raw provider configs and settings overrides.

    Every in-process test runs twice: through extauth's cheaper connexion
    classes, and through connexion's own (``EXTAUTH_STOCK_CONNEXION=1``).
    """
    opened: list[TestClient] = []

    def make(*raw_providers: dict[str, Any], **overrides: Any) -> Api:
        providers = tuple(build_provider(raw, f"test[{i}]") for i, raw in enumerate(raw_providers))
        settings = Settings(
            db_path=tmp_path / "extauth.db",
            providers=providers,
            validate_responses=True,
            provider_timeout=overrides.pop("provider_timeout", 2.0),
            stock_connexion=request.param,
            **overrides,
        )
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return Api(client, Store(settings.db_path, Cipher(settings.encryption_keys)), settings)

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Any, fake: FakeProvider) -> Api:
    """The app with one provider, ``fake``, pointing at the fake provider."""
    result: Api = make_api(fake.config())
    return result


def link(api: Api, fake: FakeProvider, user: str = "alice", provider: str = "fake",
         expires_in: int | None = 3600) -> tuple[str, str]:
    """Store a link for ``user`` holding fresh tokens issued by the fake."""
    from extauth.links import expires_at

    access, refresh = fake.issue()
    api.store.upsert_link(api.user_id(user), provider, access, refresh, expires_at(expires_in))
    return access, refresh
