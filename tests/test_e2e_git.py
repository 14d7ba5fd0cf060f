"""Real ``git`` clones a repository through extauth's credential helper.

The repository is served by git's own ``http-backend`` behind a small server
(``tests/git_server.py``) that demands HTTP Basic and lets a password in only
when panva's oidc-provider, with refresh token rotation on, accepts it as an
access token at its userinfo endpoint. extauth runs as users run it
(``extauth serve``); git is configured once with ``extauth setup-git`` in a
HOME of the test's own, and finds its token (an agent token) in the
environment only. ``GIT_TERMINAL_PROMPT=0``: git may never ask a person.
"""

from __future__ import annotations

import os
import selectors
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.git_server import GitServer, make_repository
from tests.live import LiveServer, cli
from tests.oidc_provider import OidcProvider

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
API = "/api/v2/external-auth"


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(tmp_path_factory.mktemp("oidc-git"), rotate_refresh=True).start()
    yield provider
    provider.stop()


class World:
    """extauth, the git host and a user's machine (HOME) configured with setup-git."""

    def __init__(self, tmp: Path, oidc: OidcProvider, wait: float = 0) -> None:
        self.oidc = oidc
        self.repos = tmp / "repos"
        self.repos.mkdir()
        make_repository(self.repos)
        self.git_host = GitServer(self.repos, oidc.endpoint("userinfo_endpoint")).start()
        config = oidc.provider_config(regex=rf"^http://127\.0\.0\.1:{self.git_host.port}/")
        self.extauth = LiveServer(tmp, [config]).start()
        self.session = self.extauth.token("alice")
        self.agent = cli("agents", "create", "alice", "--name", "laptop",
                         db=self.extauth.db).stdout.strip()
        self.home = tmp / "home"
        self.home.mkdir()
        self.env = {**os.environ, "HOME": str(self.home), "GIT_CONFIG_NOSYSTEM": "1",
                    "XDG_CONFIG_HOME": str(self.home / ".config"), "GIT_TERMINAL_PROMPT": "0",
                    "GIT_ASKPASS": "", "SSH_ASKPASS": "",
                    # git runs the helper from its own directory: this tree's extauth.
                    "PYTHONPATH": str(ROOT), "EXTAUTH_TOKEN": self.agent}
        self.env.pop("EXTAUTH_URL", None)
        setup = subprocess.run(
            [sys.executable, "-m", "extauth.cli", "setup-git", "--config",
             str(self.extauth.config), "--url", self.extauth.url,
             *(["--wait", f"{wait:g}"] if wait else [])],
            env=self.env, capture_output=True, text=True, timeout=60)
        assert setup.returncode == 0, setup.stderr
        self.work = tmp / "clones"
        self.work.mkdir()

    def close(self) -> None:
        self.extauth.stop()
        self.git_host.stop()

    @property
    def repo_url(self) -> str:
        return f"{self.git_host.base}/app.git"

    def clone(self, name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "clone", "-q", self.repo_url, name], cwd=self.work,
                              env=self.env, capture_output=True, text=True, timeout=120)

    def link(self) -> None:
        """The device flow, approved by the user on the provider's own pages."""
        with httpx.Client(base_url=self.extauth.url, timeout=15,
                          headers={"Coder-Session-Token": self.session}) as c:
            device = c.get(f"{API}/oidc/device").json()
            self.oidc.approve_device(device["user_code"], login="alice",
                                     verification_uri=device["verification_uri"])
            r = c.post(f"{API}/oidc/device", json={"device_code": device["device_code"]})
            assert r.status_code == 204, (r.text, self.extauth.output())

    def stored(self) -> tuple[str, str]:
        with sqlite3.connect(self.extauth.db) as conn:
            row = conn.execute("SELECT access_token, refresh_token FROM external_auth_links "
                               "WHERE provider_id = 'oidc'").fetchone()
        conn.close()
        return str(row[0]), str(row[1])

    def events(self, action: str) -> list[str]:
        out = cli("audit", "--provider", "oidc", db=self.extauth.db).stdout
        return [line.split("\t")[4] for line in out.splitlines()
                if line.split("\t")[3] == action]


@pytest.fixture
def world(tmp_path: Path, oidc: OidcProvider) -> Iterator[World]:
    w = World(tmp_path, oidc)
    yield w
    w.close()


def test_clone_with_a_linked_account(world: World) -> None:
    world.link()
    access, _ = world.stored()
    r = world.clone("app")
    assert r.returncode == 0, (r.stderr, world.extauth.output())
    assert (world.work / "app" / "README").read_text() == "cloned through extauth\n"
    assert set(world.git_host.accepted) == {access} and world.git_host.refused >= 1
    gitconfig = (world.home / ".gitconfig").read_text()
    assert access not in gitconfig and world.agent not in gitconfig
    assert world.events("token read") == ["agent"]


def test_clone_after_the_token_expired_refreshes_it_exactly_once(world: World) -> None:
    world.link()
    old_access, old_refresh = world.stored()
    with sqlite3.connect(world.extauth.db) as conn:
        conn.execute("UPDATE external_auth_links SET expires_at = '2020-01-01T00:00:00.000000Z'")
    conn.close()
    r = world.clone("app")
    assert r.returncode == 0, (r.stderr, world.extauth.output())
    access, refresh = world.stored()
    assert access != old_access and refresh != old_refresh  # rotated
    assert set(world.git_host.accepted) == {access}
    assert world.events("refresh") == ["ok"]
    # The grant survived the rotation: the provider still takes the new token.
    assert world.oidc.userinfo(access).status_code == 200


def test_clone_after_unlinking_fails_and_the_helper_says_where_to_link(world: World) -> None:
    world.link()
    assert world.clone("before").returncode == 0
    r = httpx.delete(f"{world.extauth.url}{API}/oidc",
                     headers={"Coder-Session-Token": world.session}, timeout=15)
    assert r.status_code == 200 and r.json() == {"token_revoked": True}
    accepted = len(world.git_host.accepted)
    r = world.clone("after")
    assert r.returncode != 0
    assert f"link your oidc account at {world.extauth.url}/external-auth/oidc" in r.stderr
    assert "terminal prompts disabled" in r.stderr
    assert len(world.git_host.accepted) == accepted
    assert not (world.work / "after").exists()


def test_a_waiting_clone_completes_once_the_device_flow_is_approved(
        tmp_path: Path, oidc: OidcProvider) -> None:
    world = World(tmp_path, oidc, wait=120)
    try:
        clone = subprocess.Popen(["git", "clone", "-q", world.repo_url, "app"], cwd=world.work,
                                 env=world.env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        assert clone.stderr is not None
        said = _read_until(clone.stderr, "(waiting)", timeout=60)
        assert f"{world.extauth.url}/external-auth/oidc (waiting)" in said, said
        assert clone.poll() is None  # still waiting
        world.link()
        assert clone.wait(timeout=60) == 0, said + clone.stderr.read().decode()
        clone.stderr.close()
        assert (world.work / "app" / "README").exists()
        access, _ = world.stored()
        assert set(world.git_host.accepted) == {access}
    finally:
        world.close()


def _read_until(stream: object, marker: str, timeout: float) -> str:
    """What a child wrote to ``stream`` up to the line holding ``marker``."""
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
        while marker.encode() not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                raise AssertionError(f"no {marker!r} within {timeout}s: {seen.decode()!r}")
            chunk = os.read(stream.fileno(), 4096)  # type: ignore[attr-defined]
            if not chunk:
                raise AssertionError(f"the stream ended before {marker!r}: {seen.decode()!r}")
            seen += chunk
    return seen.decode()
