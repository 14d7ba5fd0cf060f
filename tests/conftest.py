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
from extauth.store import Store, open_store
from tests.fake_provider import FakeProvider
from tests.postgres import PostgresServer


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
    f.require_client_secret = False
    f.most_in_flight.clear()
    f.expires_in = 3600
    f.auto_approve = False
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of the app in-process run on a SQLite file through extauth's cheaper
    connexion classes and through connexion's own (``EXTAUTH_STOCK_CONNEXION=1``),
    and on PostgreSQL; store tests on both stores. Tests marked ``sqlite`` read
    the database file itself and do not run on PostgreSQL."""
    if "database" in metafunc.fixturenames:
        kinds = ["sqlite"]
        if "make_api" in metafunc.fixturenames:
            kinds.append("sqlite-stock")
        if metafunc.definition.get_closest_marker("sqlite") is None:
            kinds.append("postgres")
        metafunc.parametrize("database", kinds, indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run, started when a test first needs it."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the test's store lives: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.new_schema()
    return str(tmp_path / "extauth.db")


@pytest.fixture
def make_api(request: pytest.FixtureRequest, database: str) -> Iterator[Any]:
    """Build an ``Api`` from raw provider configs and settings overrides."""
    stock = request.node.callspec.params["database"] == "sqlite-stock"
    opened: list[TestClient] = []
    stores: list[Store] = []

    def make(*raw_providers: dict[str, Any], **overrides: Any) -> Api:
        providers = tuple(build_provider(raw, f"test[{i}]") for i, raw in enumerate(raw_providers))
        settings = Settings(
            database=database,
            providers=providers,
            validate_responses=True,
            provider_timeout=overrides.pop("provider_timeout", 2.0),
            stock_connexion=stock,
            **overrides,
        )
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        store = open_store(settings.database, Cipher(settings.encryption_keys))
        stores.append(store)
        return Api(client, store, settings)

    yield make
    for client in opened:
        client.__exit__(None, None, None)
    for store in stores:
        store.close()


@pytest.fixture
def store_at() -> Iterator[Any]:
    """Open stores by ``--db`` value, closed when the test ends (a PostgreSQL
    store holds a pool of connections and its threads)."""
    opened: list[Store] = []

    def open_(where: str | Path, cipher: Cipher | None = None) -> Store:
        store = open_store(where, cipher)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def sql(target: Api | Store, statement: str, params: tuple[Any, ...] = ()
        ) -> list[dict[str, Any]]:
    """Run SQL on a test's database, whichever it is (tests poke at rows)."""
    store = target.store if isinstance(target, Api) else target
    return store._rows(statement, params)  # type: ignore[attr-defined, no-any-return]


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


def expire(api: Api, user: str = "alice", provider: str = "fake") -> None:
    """Make a stored link's token expired a minute ago, tokens unchanged."""
    from extauth.links import expires_at

    stored = api.store.get_link(api.user_id(user), provider)
    assert stored is not None
    api.store.upsert_link(stored.user_id, provider, stored.access_token, stored.refresh_token,
                          expires_at(-60), stored.extra)


def started_device_code(api: Api, headers: dict[str, str], provider: str = "fake") -> str:
    """Start a device flow as the caller of ``headers``; its device code."""
    r = api.get(f"/api/v2/external-auth/{provider}/device", headers=headers)
    assert r.status_code == 200, r.text
    code: str = r.json()["device_code"]
    return code
