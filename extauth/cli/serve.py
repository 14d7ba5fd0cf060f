"""``extauth serve``: the API under uvicorn, with the access log masked."""

from __future__ import annotations

import copy
import logging
import os
from typing import Any
from urllib.parse import unquote_plus

import click

from extauth import sessions
from extauth.cli._base import cli_settings, config_option, db_option, main, say, store_for
from extauth.settings import Settings
from extauth.store import Store

# Query parameters whose values never reach a log line: the session token in
# both of Coder's names, and the OAuth values a browser carries back.
SECRET_PARAMS = frozenset({
    "coder_session_token", "access_token", "code", "state", "device_code", "refresh_token",
    "client_secret", "code_verifier",
})


def redact_query(target: str) -> str:
    """A request target with the values of secret query parameters masked. Names
    are compared as the server reads them (percent-decoded), so an encoded name
    is masked too; the rest of the line stays as it was sent."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        if eq and unquote_plus(name) in SECRET_PARAMS:
            part = f"{name}=****"
        parts.append(part)
    return f"{path}?{'&'.join(parts)}"


class RedactFilter(logging.Filter):
    """Masks session tokens and codes in the query strings of access-log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def _log_config() -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "extauth.cli.serve.RedactFilter"}}
    config["handlers"]["access"]["filters"] = ["redact"]
    config["loggers"]["extauth"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


@main.command()
@click.option("--host", help="Address to listen on [env EXTAUTH_HOST; default 127.0.0.1]")
@click.option("--port", type=int, help="Port to listen on [env EXTAUTH_PORT; default 8080]")
@db_option
@config_option
@click.option(
    "--access-url", help="Public base URL, used for callback URLs [env EXTAUTH_ACCESS_URL]"
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="uvicorn worker processes (SQLite in WAL mode makes several safe)")
@click.option("--access-log/--no-access-log", default=None,
              help="Log every request (token query parameters masked) "
                   "[env EXTAUTH_ACCESS_LOG; default on]")
@click.option("--demo", is_flag=True,
              help="Also serve a built-in demo OAuth provider as provider 'demo', create user "
                   "'demo' and print a session token with curl lines to try every operation.")
def serve(
    host: str | None,
    port: int | None,
    db: str | None,
    config: str | None,
    access_url: str | None,
    workers: int,
    access_log: bool | None,
    demo: bool,
) -> None:
    """Serve the API with uvicorn."""
    import uvicorn

    if demo and workers > 1:
        raise click.UsageError("--demo keeps its provider in memory and runs one worker only")
    settings = cli_settings(host=host, port=port, database=db, config=config,
                         access_url=access_url, workers=workers, demo=demo or None)
    store = store_for(settings)
    for problem in settings.config_warnings():
        say(f"extauth: warning: {problem}")
    if demo:
        _demo_walkthrough(settings, store)
    elif not settings.providers:
        say("extauth: no provider is configured (see --config, CODER_EXTERNAL_AUTH_0_*); "
             "try 'extauth serve --demo'")
    if access_log is None:
        access_log = os.environ.get("EXTAUTH_ACCESS_LOG", "true").lower() not in (
            "false", "0", "no", "off")
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": _log_config(),
        "access_log": access_log,
        "server_header": False,
        "timeout_graceful_shutdown": 5,
    }
    if workers == 1:
        from extauth.app import create_app

        uvicorn.run(create_app(settings), **common)
        return
    # Workers are new processes: hand them the settings through the environment.
    os.environ.update({
        "EXTAUTH_DB": settings.database,
        "EXTAUTH_HOST": settings.host,
        "EXTAUTH_PORT": str(settings.port),
        "EXTAUTH_ACCESS_URL": settings.access_url,
    })
    if config:
        os.environ["EXTAUTH_CONFIG"] = config
    uvicorn.run("extauth.app:create_app_from_env", factory=True, workers=workers, **common)


def _demo_walkthrough(settings: Settings, store: Store) -> None:
    user = store.get_user("demo") or store.create_user("demo")
    token = sessions.create_token(store, user)
    base = settings.base_url()
    api = f"{base}/api/v2/external-auth"
    h = '-H "Coder-Session-Token: $TOKEN"'
    click.echo(f"""
extauth demo: provider 'demo' is a built-in stand-in OAuth server, not a real one.
Session token for user 'demo' (new on every start):

  export TOKEN={token}

In a browser: open {base}/login, paste the token above as "Session token",
sign in, then "Link" the demo provider.

Or with curl, every operation:

  curl -s {h} {api}                      # providers and your links
  curl -s {h} {api}/demo/device          # start a device flow
  # open the verification_uri it printed, enter the user_code, approve; then:
  curl -s -X POST {h} -H 'Content-Type: application/json' \\
       -d '{{"device_code":"<device_code from above>"}}' {api}/demo/device
  curl -s {h} {api}/demo                 # authenticated: true, with the user
  curl -s -X DELETE {h} {api}/demo       # unlink and revoke

API reference: {base}/api/v2/ui/
""")
