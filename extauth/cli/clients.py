"""The clients: commands that ask a running extauth for a token and hand it on.

``access-token`` prints it, ``git-credential`` is a git credential helper
(git's ``key=value`` protocol on stdin and stdout), and ``setup-git`` points
git at that helper for the configured providers' hosts. They find the server
in ``--url``, ``EXTAUTH_URL`` or Coder's ``CODER_AGENT_URL``, and authenticate
with ``--token``, ``EXTAUTH_TOKEN``, ``--token-file`` or Coder's
``CODER_AGENT_TOKEN`` (an agent token or a session token), so a workspace set
up for Coder needs nothing new. No command writes a token anywhere: git's
configuration names the helper and, at most, a token file only its owner can
read.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import httpx

from extauth.cli._base import cli_settings, config_option, main, say

DEFAULT_URL = "http://127.0.0.1:8080"
ENDPOINT = "/api/v2/workspaceagents/me/external-auth"
ZERO_TIME = "0001-01-01T00:00:00Z"
# A listen request waits up to the server's EXTAUTH_LISTEN_SECONDS (55 by default).
LISTEN_READ_TIMEOUT = 120.0
BACKOFF = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
# Answers worth asking again for: the wait ran out, the provider or we had a hiccup.
RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


class ClientError(click.ClickException):
    """extauth answered an error, or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Answer:
    """The hand-off's answer (``ExternalAuthResponse``)."""

    access_token: str = field(repr=False)
    token_extra: Any = field(repr=False)
    url: str
    type: str
    username: str
    password: str = field(repr=False)
    expires: datetime | None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Answer:
        expires = str(body.get("expires") or ZERO_TIME)
        return cls(
            access_token=str(body.get("access_token") or ""),
            token_extra=body.get("token_extra"),
            url=str(body.get("url") or ""),
            type=str(body.get("type") or ""),
            username=str(body.get("username") or ""),
            password=str(body.get("password") or ""),
            expires=None if expires == ZERO_TIME else datetime.fromisoformat(expires),
        )


def read_token_file(path: Path) -> str:
    """The token in ``path``, refused when anyone but its owner may read the file."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise click.ClickException(f"token file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise click.ClickException(
            f"token file {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
            f"make it private: chmod 600 {shlex.quote(str(path))}")
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise click.ClickException(f"token file {path} is empty")
    return token


class HandoffClient:
    """Asks one extauth server's token hand-off endpoint."""

    def __init__(self, url: str, token: str) -> None:
        self.base = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base,
            headers={"Coder-Session-Token": token, "Accept": "application/json"},
            timeout=httpx.Timeout(10.0, read=LISTEN_READ_TIMEOUT),
        )

    def close(self) -> None:
        self.http.close()

    def ask(self, provider_id: str = "", match: str = "", listen: bool = False,
            within: float | None = None) -> Answer:
        """One request (given up after ``within`` seconds, if set); ``ClientError``
        for any answer but 200."""
        # Both keys, one empty, as Coder's agents send them.
        params = {"id": provider_id, "match": match}
        if listen:
            params["listen"] = "true"
        read = LISTEN_READ_TIMEOUT if within is None else min(LISTEN_READ_TIMEOUT, within)
        try:
            r = self.http.get(ENDPOINT, params=params,
                              timeout=httpx.Timeout(10.0, read=max(read, 0.1)))
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach extauth at {self.base}: {exc}") from None
        if r.status_code == 200:
            return Answer.from_json(r.json())
        try:
            body = r.json()
            text = str(body.get("message") or f"HTTP {r.status_code}")
            if body.get("detail"):
                text += f" ({body['detail']})"
        except (ValueError, AttributeError):
            text = f"HTTP {r.status_code}"
        raise ClientError(f"extauth answered {r.status_code}: {text}", r.status_code)

    def wait(self, provider_id: str = "", match: str = "",
             seconds: float | None = None) -> Answer | None:
        """Long-poll until the user has linked; None when ``seconds`` ran out first."""
        deadline = None if seconds is None else time.monotonic() + seconds
        failing = ""
        for delay in _backoff():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            try:
                answer = self.ask(provider_id, match, listen=True, within=left)
            except ClientError as exc:
                if exc.status and exc.status not in RETRY_STATUSES:
                    raise
                if exc.status == 408:  # the server's wait ran out: ask again at once
                    continue
                if deadline is not None and time.monotonic() >= deadline:
                    return None  # our own wait ran out during the request
                if exc.message != failing:  # say it once, not at every try
                    failing = exc.message
                    say(f"extauth: {failing}; asking again")
                time.sleep(_capped(delay, deadline))
                continue
            if answer.access_token:
                return answer
        return None


def _backoff() -> Iterator[float]:
    yield from BACKOFF
    while True:
        yield BACKOFF[-1]


def _capped(delay: float, deadline: float | None) -> float:
    return delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic()))


def _client(url: str | None, token: str | None, token_file: Path | None) -> HandoffClient:
    base = url or os.environ.get("CODER_AGENT_URL") or DEFAULT_URL
    if token is not None and token_file is not None:
        raise click.UsageError("--token and --token-file both give a token: pass one")
    # What the command line names wins over the environment.
    if token_file is not None:
        token = read_token_file(token_file)
    token = token or os.environ.get("EXTAUTH_TOKEN") or os.environ.get("CODER_AGENT_TOKEN")
    if not token:
        raise click.UsageError(
            "no token: pass --token or --token-file, or set EXTAUTH_TOKEN (or CODER_AGENT_TOKEN)")
    return HandoffClient(base, token)


url_option = click.option(
    "--url", envvar="EXTAUTH_URL", metavar="URL",
    help=f"extauth's base URL [env EXTAUTH_URL, CODER_AGENT_URL; default {DEFAULT_URL}]")
token_option = click.option(
    "--token", metavar="TOKEN",
    help="An agent token or session token [env EXTAUTH_TOKEN, CODER_AGENT_TOKEN]")
token_file_option = click.option(
    "--token-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
    help="Read the token from PATH (only its owner may read it)")


# -- access-token ----------------------------------------------------------------------


def _dig(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise click.ClickException(f"the token's extra data has no {path!r}")
    return value


@main.command("access-token")
@click.argument("provider_id", metavar="ID")
@click.option("--extra", metavar="PATH",
              help="Print this dotted path of the token's extra data instead, e.g. authed_user.id")
@click.option("--wait", is_flag=True, help="When not linked yet, wait until the user has linked")
@url_option
@token_option
@token_file_option
def access_token(provider_id: str, extra: str | None, wait: bool, url: str | None,
                 token: str | None, token_file: Path | None) -> None:
    """Print the access token for provider ID.

    When the user has not linked (or the link is no longer valid), print the
    URL where they link and exit 1; with --wait, wait for them instead.
    """
    client = _client(url, token, token_file)
    try:
        answer = client.ask(provider_id=provider_id)
        if not answer.access_token and wait:
            say(f"Link your {answer.type} account at {answer.url} ; waiting...")
            answer = client.wait(provider_id=provider_id) or answer
    finally:
        client.close()
    if not answer.access_token:
        click.echo(answer.url)
        sys.exit(1)
    if extra is None:
        click.echo(answer.access_token)
        return
    value = _dig(answer.token_extra, extra)
    click.echo(value if isinstance(value, str) else json.dumps(value))


# -- git-credential --------------------------------------------------------------------


def read_credential(lines: Iterable[str]) -> dict[str, str]:
    """git's credential description: ``key=value`` lines up to a blank line."""
    attrs: dict[str, str] = {}
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            break
        key, sep, value = line.partition("=")
        if sep:
            attrs[key] = value
    return attrs


@main.command("git-credential")
@click.argument("action", type=click.Choice(["get", "store", "erase"]))
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), default=0.0,
              metavar="SECONDS",
              help="When not linked yet, wait up to SECONDS for the user to link [0]")
@url_option
@token_option
@token_file_option
def git_credential(action: str, wait_seconds: float, url: str | None, token: str | None,
                   token_file: Path | None) -> None:
    """A git credential helper: answers 'get' with the token of the provider whose
    regex matches the URL. Configure it with 'extauth setup-git'.

    No provider matches: nothing, so git asks its next helper. Not linked: the
    URL where the user links, on stderr, then nothing (or, with --wait, the
    token once they have). 'store' and 'erase' do nothing: the tokens live in
    extauth.
    """
    attrs = read_credential(sys.stdin)
    if action != "get":
        return
    protocol, host = attrs.get("protocol", ""), attrs.get("host", "")
    if protocol not in ("http", "https") or not host:
        return
    # Without a path (git sends one only with useHttpPath) the URL's path is "/".
    target = f"{protocol}://{host}/{attrs.get('path', '')}"
    client = _client(url, token, token_file)
    try:
        try:
            answer = client.ask(match=target)
        except ClientError as exc:
            if exc.status != 404:  # 404: no provider for this URL, not ours to answer
                say(f"extauth: {exc.message}")
            return
        if not answer.access_token:
            say(f"extauth: to use {protocol}://{host}, link your {answer.type} account at "
                f"{answer.url}" + (" (waiting)" if wait_seconds else " and try again."))
            if not wait_seconds:
                return
            try:
                found = client.wait(match=target, seconds=wait_seconds)
            except ClientError as exc:
                say(f"extauth: {exc.message}")
                return
            if found is None:
                say(f"extauth: not linked within {wait_seconds:g} seconds")
                return
            answer = found
    finally:
        client.close()
    # Coder's conventions leave the password empty for most types (the token is
    # the username); servers that read the password get the token there too.
    click.echo(f"username={answer.username}")
    click.echo(f"password={answer.password or answer.access_token}")
    if answer.expires is not None:
        click.echo(f"password_expiry_utc={int(answer.expires.timestamp())}")


# -- setup-git --------------------------------------------------------------------------

# What may follow the host in a provider's regex for it to mean "any path".
_ANY_PATH = {"", "$", "/", "/$", ".*", ".*$", "/.*", "/.*$", "(/.*)?", "(/.*)?$",
             "(?:/.*)?", "(?:/.*)?$", "(/.*)", "(/.*)$"}
_SCHEMES = [("(https?://)?", ("https",)), ("(?:https?://)?", ("https",)),
            ("https?://", ("https", "http")), ("(https://)?", ("https",)),
            ("https://", ("https",)), ("(http://)?", ("http",)), ("http://", ("http",))]
_HOST = re.compile(r"(?:[A-Za-z0-9-]|\\\.|:(?=\d))+")


def git_urls(regex: str) -> tuple[list[str], bool]:
    """The URLs (scheme and host) a provider's regex is about, and whether it
    also tells paths apart (then git must send the path). ([], False) when
    the host is not written out literally."""
    rest = regex.removeprefix("^")
    schemes: tuple[str, ...] = ("https",)
    for prefix, named in _SCHEMES:
        if rest.startswith(prefix):
            rest, schemes = rest[len(prefix):], named
            break
    host = _HOST.match(rest)
    if host is None:
        return [], False
    tail = rest[host.end():]
    if tail and not tail.startswith(("/", "(/", "(?:/", "$", ".*")):
        return [], False  # the host goes on as a pattern (alternatives, classes, ...)
    name = host.group(0).replace("\\.", ".")
    if "." not in name and not name.startswith("localhost"):
        return [], False
    return [f"{scheme}://{name}" for scheme in schemes], tail not in _ANY_PATH


def _helper_command(url: str | None, token_file: Path | None,
                    wait: float) -> str:
    """How git runs this helper: an absolute path first, so git takes it as is."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "extauth" and argv0.is_file():
        command = [str(argv0.resolve())]
    else:
        command = [sys.executable, "-m", "extauth.cli"]
    command.append("git-credential")
    if url:
        command += ["--url", url]
    if token_file is not None:
        command += ["--token-file", str(token_file.resolve())]
    if wait:
        command += ["--wait", f"{wait:g}"]
    return shlex.join(command)


def _git_config(scope: str, *args: str, ok: tuple[int, ...] = (0,)) -> None:
    try:
        result = subprocess.run(["git", "config", f"--{scope}", *args],
                                capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise click.ClickException("git is not installed (no 'git' on PATH)") from None
    if result.returncode not in ok:
        raise click.ClickException(f"git config {' '.join(args[:2])} failed: "
                                   f"{result.stderr.strip()}")


@main.command("setup-git")
@click.option("--global", "scope", flag_value="global", default=True,
              help="In your global git config (~/.gitconfig) [default]")
@click.option("--local", "scope", flag_value="local",
              help="In the current repository's config only")
@click.option("--url", envvar="EXTAUTH_URL", metavar="URL",
              help="extauth's base URL, written into the helper's command "
                   "[env EXTAUTH_URL; else the helper reads EXTAUTH_URL or CODER_AGENT_URL]")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="The helper reads its token from PATH (only its owner may read it); "
                   "without it, from EXTAUTH_TOKEN or CODER_AGENT_TOKEN when git runs")
@click.option("--wait", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="The helper waits up to SECONDS for the user to link [0]")
@config_option
def setup_git(scope: str, url: str | None, token_file: Path | None, wait: float,
              config: str | None) -> None:
    """Make git ask extauth for the passwords of the configured providers' hosts.

    For each provider whose regex names a host, writes
    credential.<scheme>://<host>.helper (after an empty entry, so that no other
    helper answers for that host first), and useHttpPath where the regex also
    tells paths apart. No token is written: the helper reads it when git runs.
    """
    if token_file is not None:
        read_token_file(token_file)  # refuse a file others may read, now
    providers = cli_settings(config=config).providers
    urls: dict[str, bool] = {}
    for p in providers:
        found, by_path = git_urls(p.regex)
        if not found:
            say(f"provider {p.id!r}: its regex {p.regex!r} names no host; skipped")
        for u in found:
            # Two providers on one host are told apart by the path, too.
            urls[u] = by_path or u in urls
    if not urls:
        raise click.ClickException(
            "no configured provider has a regex naming a host (see --config)")
    helper = _helper_command(url, token_file, wait)
    for u, by_path in urls.items():
        key = f"credential.{u}"
        _git_config(scope, "--unset-all", f"{key}.helper", ok=(0, 5))
        _git_config(scope, "--add", f"{key}.helper", "")
        _git_config(scope, "--add", f"{key}.helper", helper)
        if by_path:
            _git_config(scope, f"{key}.useHttpPath", "true")
        say(f"git ({scope}): {u} asks extauth" + (" (with the path)" if by_path else ""))
