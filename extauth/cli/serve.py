"""``extauth serve``: the API under uvicorn, its logs (text or JSON lines, the
access log masked), its metrics listener, and a clean stop on SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import logging.config
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import click

from extauth import metrics, sessions
from extauth.cli._base import cli_settings, config_option, db_option, main, store_for
from extauth.logs import SECRET_PARAMS, redact_query
from extauth.settings import LOG_FORMATS, Settings
from extauth.store import Store

__all__ = ["SECRET_PARAMS", "RedactFilter", "redact_query", "serve"]

log = logging.getLogger("extauth.serve")


class RedactFilter(logging.Filter):
    """Masks session tokens and codes in the query strings of access-log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def log_config(log_format: str, access_log: bool) -> dict[str, Any]:
    """Logging for the server and its workers: every line through one formatter
    (``text`` or ``json``), with the request's fields; the access log (one line per
    request, ``extauth.access``) on stdout, everything else on stderr."""
    formatter = {"()": "extauth.logs.JsonFormatter" if log_format == "json"
                 else "extauth.logs.TextFormatter"}
    stream = {"class": "logging.StreamHandler", "formatter": "default"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"context": {"()": "extauth.logs.ContextFilter"},
                    "redact": {"()": "extauth.cli.serve.RedactFilter"}},
        "handlers": {
            "default": {**stream, "stream": "ext://sys.stderr", "filters": ["context"]},
            "access": {**stream, "stream": "ext://sys.stdout", "filters": ["context", "redact"]},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            # extauth writes the access line itself (with duration, request id,
            # operation, user); uvicorn's own is off, masked should it be enabled.
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "extauth": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "extauth.access": {"handlers": ["access"], "propagate": False,
                               "level": "INFO" if access_log else "WARNING"},
        },
    }


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


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
@click.option("--log-format", type=click.Choice(LOG_FORMATS),
              help="Log lines as text or as JSON objects [env EXTAUTH_LOG_FORMAT; default text]")
@click.option("--metrics-address", metavar="HOST:PORT",
              help="Serve Prometheus metrics here, apart from the API "
                   "[env EXTAUTH_METRICS_ADDRESS; default: no metrics]")
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
    log_format: str | None,
    metrics_address: str | None,
    demo: bool,
) -> None:
    """Serve the API with uvicorn.

    SIGTERM (or Ctrl-C) stops it: no new connections, the requests and
    refreshes in flight get EXTAUTH_SHUTDOWN_SECONDS to finish, and it exits 0.
    """
    import uvicorn

    if demo and workers > 1:
        raise click.UsageError("--demo keeps its provider in memory and runs one worker only")
    settings = cli_settings(host=host, port=port, database=db, config=config,
                         access_url=access_url, workers=workers, demo=demo or None,
                         metrics_address=metrics_address, log_format=log_format,
                         access_log=access_log)
    # What this process says before uvicorn starts goes out in the same format.
    config_of_logs = log_config(settings.log_format, settings.access_log)
    logging.config.dictConfig(config_of_logs)
    store = store_for(settings)
    for problem in settings.config_warnings():
        log.warning("%s", problem)
    if demo:
        _demo_walkthrough(settings, store)
    elif not settings.providers:
        log.warning("no provider is configured (see --config, CODER_EXTERNAL_AUTH_0_*); "
                    "try 'extauth serve --demo'")
    store.close()  # migrated; the app opens its own
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": config_of_logs,
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": settings.shutdown_seconds,
    }
    with _metrics(settings):
        if workers == 1:
            from extauth.app import create_app

            # uvicorn stops gracefully on SIGTERM, then raises it again with the
            # handler it found: let that be an exit with status 0, not a kill.
            signal.signal(signal.SIGTERM, _stop)
            uvicorn.run(create_app(settings), **common)
            return
        # Workers are new processes: hand them the settings through the environment.
        os.environ.update({
            "EXTAUTH_DB": settings.database,
            "EXTAUTH_HOST": settings.host,
            "EXTAUTH_PORT": str(settings.port),
            "EXTAUTH_ACCESS_URL": settings.access_url,
            "EXTAUTH_METRICS_ADDRESS": settings.metrics_address,
        })
        if config:
            os.environ["EXTAUTH_CONFIG"] = config
        uvicorn.run("extauth.app:create_app_from_env", factory=True, workers=workers, **common)


@contextlib.contextmanager
def _metrics(settings: Settings) -> Iterator[None]:
    """The metrics listener for the whole server, when an address is configured."""
    if not settings.metrics_address:
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(metrics.listening(settings.metrics_address,
                                                  store_for(settings)))
        except OSError as exc:
            raise click.ClickException(
                f"cannot serve metrics on {settings.metrics_address}: {exc.strerror}") from None
        log.info("Prometheus metrics on http://%s/metrics", settings.metrics_address)
        yield


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
