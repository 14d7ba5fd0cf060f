"""The command-line clients against a real extauth on 127.0.0.1: ``access-token``,
``git-credential`` (git's protocol, and git itself asking through it) and
``setup-git`` (what it writes into git's config, and what it never writes)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from extauth import sessions
from extauth.cli import main
from extauth.cli.clients import git_urls
from extauth.links import expires_at
from extauth.settings import Settings, build_provider
from extauth.store import Store, open_store
from tests.fake_provider import FakeProvider
from tests.served import Served, wait_until

ROOT = Path(__file__).resolve().parents[1]
GIT_HOST = "git.example.com"
PROVIDERS = [
    {"regex": r"^https://git\.example\.com/"},
    {"id": "lab", "type": "gitlab", "regex": r"^https://lab\.example\.com(/.*)?$"},
    {"id": "chat", "type": "chat", "extra_token_keys": ["authed_user"]},
]


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env or {}, input=input,
                              catch_exceptions=False)


@pytest.fixture
def server(tmp_path: Path, fake: FakeProvider) -> Iterator[Served]:
    providers = tuple(build_provider(fake.config(**p), f"test[{i}]")
                      for i, p in enumerate(PROVIDERS))
    settings = Settings(database=str(tmp_path / "served.db"), providers=providers,
                        listen_seconds=1.0)
    with Served(settings) as served:
        yield served


@pytest.fixture
def store(server: Served) -> Iterator[Store]:
    s = open_store(server.settings.database)
    s.create_user("alice")
    yield s
    s.close()


@pytest.fixture
def agent(store: Store) -> str:
    user = store.get_user("alice")
    assert user is not None
    return sessions.create_agent_token(store, user, "ws")


def env_for(server: Served, token: str) -> dict[str, str]:
    return {"EXTAUTH_URL": server.url, "EXTAUTH_TOKEN": token}


def linked(store: Store, fake: FakeProvider, provider: str = "fake",
           expires_in: int | None = 3600, extra: dict[str, Any] | None = None) -> str:
    user = store.get_user("alice")
    assert user is not None
    access, refresh = fake.issue()
    store.upsert_link(user.id, provider, access, refresh, expires_at(expires_in), extra)
    return access


# -- access-token ------------------------------------------------------------------------


def test_access_token_prints_the_token(server: Served, store: Store, agent: str,
                                       fake: FakeProvider) -> None:
    access = linked(store, fake)
    r = run("access-token", "fake", env=env_for(server, agent))
    assert (r.exit_code, r.stdout) == (0, access + "\n")


def test_access_token_with_coders_agent_variables(server: Served, store: Store, agent: str,
                                                  fake: FakeProvider) -> None:
    access = linked(store, fake)
    r = run("access-token", "fake",
            env={"CODER_AGENT_URL": server.url + "/", "CODER_AGENT_TOKEN": agent})
    assert (r.exit_code, r.stdout) == (0, access + "\n")


def test_options_win_over_the_environment(server: Served, store: Store, agent: str,
                                          fake: FakeProvider) -> None:
    access = linked(store, fake)
    r = run("access-token", "fake", "--url", server.url, "--token", agent,
            env={"EXTAUTH_URL": "http://127.0.0.1:9", "EXTAUTH_TOKEN": "nope"})
    assert (r.exit_code, r.stdout) == (0, access + "\n")


def test_access_token_not_linked_prints_the_link_page_and_exits_1(
        server: Served, agent: str) -> None:
    r = run("access-token", "fake", env=env_for(server, agent))
    assert (r.exit_code, r.stdout) == (1, f"{server.url}/external-auth/fake\n")


def test_access_token_extra(server: Served, store: Store, agent: str,
                            fake: FakeProvider) -> None:
    linked(store, fake, "chat", extra={"authed_user": {"id": "U1", "scopes": ["a", "b"]}})
    env = env_for(server, agent)
    assert run("access-token", "chat", "--extra", "authed_user.id", env=env).stdout == "U1\n"
    assert run("access-token", "chat", "--extra", "authed_user.scopes.1",
               env=env).stdout == "b\n"
    assert run("access-token", "chat", "--extra", "authed_user",
               env=env).stdout == '{"id": "U1", "scopes": ["a", "b"]}\n'
    r = run("access-token", "chat", "--extra", "authed_user.nope", env=env)
    assert r.exit_code == 1 and "has no 'authed_user.nope'" in r.stderr


def test_access_token_wait_returns_once_linked(server: Served, store: Store, agent: str,
                                               fake: FakeProvider) -> None:
    result: list[Any] = []
    waiting = threading.Thread(target=lambda: result.append(
        run("access-token", "fake", "--wait", env=env_for(server, agent))))
    waiting.start()
    # Two of the server's one-second waits run out first: the client asks again.
    wait_until(lambda: server.handoff.watcher.reads >= 2, "the client waits a while")
    access = linked(store, fake)
    waiting.join(timeout=30)
    assert not waiting.is_alive()
    r = result[0]
    assert (r.exit_code, r.stdout) == (0, access + "\n")
    assert f"{server.url}/external-auth/fake" in r.stderr


@pytest.mark.parametrize("args, token, code, message", [
    (("access-token", "nope"), "agent", 1, "extauth answered 404: No external auth provider"),
    (("access-token", "fake"), "00000000-0000-4000-8000-000000000000", 1,
     "extauth answered 401: Workspace agent not authorized."),
    (("access-token", "fake"), "", 2, "no token: pass --token or --token-file"),
])
def test_access_token_errors(server: Served, agent: str, args: tuple[str, ...], token: str,
                             code: int, message: str) -> None:
    env = env_for(server, agent if token == "agent" else token)
    if not token:
        del env["EXTAUTH_TOKEN"]
    r = run(*args, env=env)
    assert r.exit_code == code and message in r.stderr, r.stderr
    assert agent not in r.stderr


def test_an_unreachable_server_is_said_so(agent: str) -> None:
    r = run("access-token", "fake", env={"EXTAUTH_URL": "http://127.0.0.1:9",
                                         "EXTAUTH_TOKEN": agent})
    assert r.exit_code == 1 and "cannot reach extauth at http://127.0.0.1:9" in r.stderr


def test_a_token_file_only_its_owner_reads(server: Served, store: Store, agent: str,
                                           fake: FakeProvider, tmp_path: Path) -> None:
    access = linked(store, fake)
    path = tmp_path / "token"
    path.write_text(agent + "\n")
    path.chmod(0o600)
    r = run("access-token", "fake", "--token-file", str(path), env={"EXTAUTH_URL": server.url})
    assert (r.exit_code, r.stdout) == (0, access + "\n")
    for mode in (0o640, 0o604, 0o660):
        path.chmod(mode)
        r = run("access-token", "fake", "--token-file", str(path),
                env={"EXTAUTH_URL": server.url})
        assert r.exit_code == 1 and "is readable by others" in r.stderr
        assert f"chmod 600 {path}" in r.stderr and access not in r.stdout
    path.chmod(0o600)
    # the file named on the command line wins over a token in the environment
    r = run("access-token", "fake", "--token-file", str(path),
            env={"EXTAUTH_URL": server.url, "EXTAUTH_TOKEN": "stale-token"})
    assert (r.exit_code, r.stdout) == (0, access + "\n")
    r = run("access-token", "fake", "--token-file", str(path), "--token", agent,
            env={"EXTAUTH_URL": server.url})
    assert r.exit_code == 2 and "--token and --token-file both give a token" in r.stderr
    path.write_text("\n")
    r = run("access-token", "fake", "--token-file", str(path), env={"EXTAUTH_URL": server.url})
    assert r.exit_code == 1 and "is empty" in r.stderr


# -- git-credential ---------------------------------------------------------------------------


def credential(server: Served, agent: str, action: str = "get", *extra: str,
               **attrs: str) -> Any:
    text = "".join(f"{k}={v}\n" for k, v in attrs.items()) + "\n"
    return run("git-credential", action, *extra, env=env_for(server, agent), input=text)


def test_git_credential_answers_with_the_token_and_its_expiry(
        server: Served, store: Store, agent: str, fake: FakeProvider) -> None:
    access = linked(store, fake)
    link = store.get_link(store.get_user("alice").id, "fake")  # type: ignore[union-attr]
    assert link is not None and link.expires_at is not None
    r = credential(server, agent, protocol="https", host=GIT_HOST, path="acme/app.git")
    assert r.exit_code == 0
    assert r.stdout == (f"username={access}\npassword={access}\n"
                        f"password_expiry_utc={int(link.expires_at.timestamp())}\n")


def test_git_credential_follows_coders_username_for_gitlab(
        server: Served, store: Store, agent: str, fake: FakeProvider) -> None:
    access = linked(store, fake, "lab", expires_in=None)
    r = credential(server, agent, protocol="https", host="lab.example.com")
    assert r.stdout == f"username=oauth2\npassword={access}\n"  # no expiry: none told


@pytest.mark.parametrize("attrs", [
    {"protocol": "https", "host": "elsewhere.example.com"},
    {"protocol": "ssh", "host": GIT_HOST},
    {"protocol": "https"},
])
def test_git_credential_stays_silent_when_it_is_not_ours(
        server: Served, store: Store, agent: str, fake: FakeProvider,
        attrs: dict[str, str]) -> None:
    linked(store, fake)
    r = credential(server, agent, **attrs)
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")


def test_git_credential_not_linked_says_where_to_link(server: Served, agent: str) -> None:
    r = credential(server, agent, protocol="https", host=GIT_HOST, path="a.git")
    assert (r.exit_code, r.stdout) == (0, "")
    assert r.stderr == (f"extauth: to use https://{GIT_HOST}, link your fake-oauth account at "
                        f"{server.url}/external-auth/fake and try again.\n")


def test_git_credential_wait_answers_once_linked(server: Served, store: Store, agent: str,
                                                 fake: FakeProvider) -> None:
    result: list[Any] = []
    waiting = threading.Thread(target=lambda: result.append(credential(
        server, agent, "get", "--wait", "60", protocol="https", host=GIT_HOST)))
    waiting.start()
    wait_until(lambda: server.handoff.waiting == 1, "the helper waits")
    access = linked(store, fake)
    waiting.join(timeout=30)
    assert not waiting.is_alive()
    r = result[0]
    assert r.exit_code == 0 and r.stdout.startswith(f"username={access}\npassword={access}\n")
    assert "(waiting)" in r.stderr


def test_git_credential_wait_gives_up_after_its_seconds(server: Served, agent: str) -> None:
    r = credential(server, agent, "get", "--wait", "1.5", protocol="https", host=GIT_HOST)
    assert (r.exit_code, r.stdout) == (0, "")
    assert "not linked within 1.5 seconds" in r.stderr


def test_git_credential_wait_is_its_own_not_the_servers(tmp_path: Path,
                                                        fake: FakeProvider) -> None:
    """The server would hold a listen request for a minute: the helper's own
    --wait ends it sooner."""
    settings = Settings(database=str(tmp_path / "long.db"), listen_seconds=60.0,
                        providers=(build_provider(fake.config(**PROVIDERS[0]), "test"),))
    with Served(settings) as server:
        store = open_store(settings.database)
        agent = sessions.create_agent_token(store, store.create_user("alice"))
        started = time.monotonic()
        r = credential(server, agent, "get", "--wait", "1", protocol="https", host=GIT_HOST)
        took = time.monotonic() - started
        store.close()
    assert (r.exit_code, r.stdout) == (0, "")
    assert r.stderr.endswith("extauth: not linked within 1 seconds\n"), r.stderr
    assert "asking again" not in r.stderr
    assert took < 30, took  # far from the server's minute


@pytest.mark.parametrize("action", ["store", "erase"])
def test_git_credential_store_and_erase_do_nothing(server: Served, store: Store, agent: str,
                                                   fake: FakeProvider, action: str) -> None:
    linked(store, fake)
    r = credential(server, agent, action, protocol="https", host=GIT_HOST,
                   username="x", password="y")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")
    assert [e for e in store.audit_events() if e.action == "token read"] == []


def test_git_credential_reports_a_refused_token_and_answers_nothing(server: Served) -> None:
    r = credential(server, "00000000-0000-4000-8000-000000000000", protocol="https",
                   host=GIT_HOST)
    assert (r.exit_code, r.stdout) == (0, "")
    assert "extauth answered 401: Workspace agent not authorized." in r.stderr


# -- setup-git ---------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A HOME of its own, so that --global writes there; no system config."""
    path = tmp_path / "home"
    path.mkdir()
    saved = {k: os.environ.get(k) for k in ("HOME", "GIT_CONFIG_NOSYSTEM", "XDG_CONFIG_HOME")}
    os.environ.update(HOME=str(path), GIT_CONFIG_NOSYSTEM="1",
                      XDG_CONFIG_HOME=str(path / ".config"))
    yield {"HOME": str(path), "GIT_CONFIG_NOSYSTEM": "1",
           "XDG_CONFIG_HOME": str(path / ".config")}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def git_config(*args: str, cwd: Path | None = None) -> list[str]:
    r = subprocess.run(["git", "config", *args], capture_output=True, text=True, cwd=cwd,
                       timeout=30)
    return r.stdout.splitlines()


def config_file(tmp_path: Path, fake: FakeProvider, providers: list[dict[str, Any]]) -> str:
    path = tmp_path / "extauth.yaml"
    path.write_text(yaml.safe_dump({"external_auth": [fake.config(**p) for p in providers]}))
    return str(path)


def test_setup_git_names_the_helper_for_each_host_and_writes_no_token(
        home: dict[str, str], tmp_path: Path, fake: FakeProvider, agent: str) -> None:
    config = config_file(tmp_path, fake, PROVIDERS)
    r = run("setup-git", "--config", config, "--url", "http://127.0.0.1:8123",
            env={"EXTAUTH_TOKEN": agent})
    assert r.exit_code == 0, r.stderr
    helpers = git_config("--global", "--get-all", f"credential.https://{GIT_HOST}.helper")
    assert helpers[0] == "" and len(helpers) == 2
    assert helpers[1].endswith("git-credential --url http://127.0.0.1:8123")
    assert git_config("--global", "--get-all", "credential.https://lab.example.com.helper") \
        == helpers
    assert "provider 'chat': its regex '' names no host; skipped" in r.stderr
    gitconfig = (Path(home["HOME"]) / ".gitconfig").read_text()
    assert agent not in gitconfig and "useHttpPath" not in gitconfig


def test_setup_git_twice_writes_the_same_entries(home: dict[str, str], tmp_path: Path,
                                                 fake: FakeProvider) -> None:
    config = config_file(tmp_path, fake, PROVIDERS)
    run("setup-git", "--config", config)
    first = (Path(home["HOME"]) / ".gitconfig").read_text()
    assert run("setup-git", "--config", config).exit_code == 0
    assert (Path(home["HOME"]) / ".gitconfig").read_text() == first


def test_setup_git_asks_for_the_path_where_the_regex_tells_paths_apart(
        home: dict[str, str], tmp_path: Path, fake: FakeProvider) -> None:
    config = config_file(tmp_path, fake, [
        {"id": "acme", "regex": r"^https://git\.example\.com/acme/"},
        {"id": "solo", "regex": r"^https://solo\.example\.com(/.*)?$"},
        {"id": "one", "regex": r"^https://shared\.example\.com/"},
        {"id": "two", "regex": r"^https://shared\.example\.com/"},
    ])
    assert run("setup-git", "--config", config).exit_code == 0
    assert git_config("--global", f"credential.https://{GIT_HOST}.useHttpPath") == ["true"]
    assert git_config("--global", "credential.https://shared.example.com.useHttpPath") \
        == ["true"]
    assert git_config("--global", "credential.https://solo.example.com.useHttpPath") == []


def test_setup_git_with_a_token_file(home: dict[str, str], tmp_path: Path,
                                     fake: FakeProvider, agent: str) -> None:
    config = config_file(tmp_path, fake, PROVIDERS[:1])
    token = tmp_path / "agent-token"
    token.write_text(agent)
    token.chmod(0o644)
    r = run("setup-git", "--config", config, "--token-file", str(token))
    assert r.exit_code == 1 and "is readable by others" in r.stderr
    assert not (Path(home["HOME"]) / ".gitconfig").exists()
    token.chmod(0o600)
    assert run("setup-git", "--config", config, "--token-file", str(token)).exit_code == 0
    [_, helper] = git_config("--global", "--get-all", f"credential.https://{GIT_HOST}.helper")
    assert helper.endswith(f"git-credential --token-file {token}")
    assert agent not in (Path(home["HOME"]) / ".gitconfig").read_text()


def test_setup_git_local_writes_the_repository_config(home: dict[str, str], tmp_path: Path,
                                                      fake: FakeProvider) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
    config = config_file(tmp_path, fake, PROVIDERS[:1])
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        assert run("setup-git", "--local", "--config", config).exit_code == 0
    finally:
        os.chdir(cwd)
    assert len(git_config("--local", "--get-all", f"credential.https://{GIT_HOST}.helper",
                          cwd=repo)) == 2
    assert not (Path(home["HOME"]) / ".gitconfig").exists()


def test_setup_git_without_any_host_fails(home: dict[str, str], tmp_path: Path,
                                          fake: FakeProvider) -> None:
    r = run("setup-git", "--config", config_file(tmp_path, fake, [{}]))
    assert r.exit_code == 1 and "no configured provider has a regex naming a host" in r.stderr


@pytest.mark.parametrize("regex, urls, by_path", [
    (r"^(https?://)?github\.com(/.*)?$", ["https://github.com"], False),
    (r"^https://gitlab\.example\.com/", ["https://gitlab.example.com"], False),
    (r"^http://127\.0\.0\.1:8123/.*$", ["http://127.0.0.1:8123"], False),
    (r"^https?://git\.example\.com", ["https://git.example.com", "http://git.example.com"],
     False),
    (r"^https://gitlab\.com/acme/", ["https://gitlab.com"], True),
    (r"dev\.azure\.com", ["https://dev.azure.com"], False),
    (r"^https://(a|b)\.example\.com/", [], False),
    (r"^https://[a-z]+\.example\.com/", [], False),
    (r"^https://git\.example\.(com|org)/", [], False),
    ("", [], False),
])
def test_git_urls_from_a_regex(regex: str, urls: list[str], by_path: bool) -> None:
    assert git_urls(regex) == (urls, by_path)


def test_git_itself_asks_through_the_helper(home: dict[str, str], tmp_path: Path,
                                            server: Served, store: Store, agent: str,
                                            fake: FakeProvider) -> None:
    """``git credential fill``: git runs the helper setup-git configured, with the
    token in the environment only."""
    access = linked(store, fake)
    config = config_file(tmp_path, fake, PROVIDERS[:1])
    assert run("setup-git", "--config", config, "--url", server.url).exit_code == 0
    env = {**os.environ, **home, "EXTAUTH_TOKEN": agent, "GIT_TERMINAL_PROMPT": "0",
           # git runs the helper elsewhere: it must import this tree's extauth.
           "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["git", "credential", "fill"], input=f"url=https://{GIT_HOST}/a.git\n\n",
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"username={access}\npassword={access}\n" in r.stdout
    assert sys.executable in git_config("--global", "--get-all",
                                        f"credential.https://{GIT_HOST}.helper")[1]
