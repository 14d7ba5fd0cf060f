"""``extauth ...``: serve the API and manage users, tokens and config.

Library errors become ``click.ClickException`` here (exit 1); usage errors
exit 2. Machine-readable output (a new token) goes to stdout, everything
meant for a person to stderr.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import sys
from typing import Any

import click

from extauth import sessions
from extauth.crypto import Cipher
from extauth.settings import ConfigError, Settings, load_settings
from extauth.store import DuplicateError, Store, StoreError

_SECRET_PARAMS = re.compile(r"((?:coder_session_token|access_token|code|state)=)[^&\s]*")


class RedactFilter(logging.Filter):
    """Masks session tokens and codes in the query strings of access-log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_PARAMS.sub(r"\1****", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


def _log_config() -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": "extauth.cli.RedactFilter"}}
    config["handlers"]["access"]["filters"] = ["redact"]
    config["loggers"]["extauth"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise click.ClickException(f"config: {exc}") from None


def _store(db: str | None) -> Store:
    settings = _settings(db_path=db, providers=())
    store = Store(settings.db_path, Cipher(settings.encryption_keys))
    try:
        store.migrate()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    return store


def _err(text: str) -> None:
    click.echo(text, err=True)


db_option = click.option(
    "--db", metavar="PATH", help="SQLite database file [env EXTAUTH_DB; default ./extauth.db]"
)
config_option = click.option(
    "--config",
    metavar="PATH",
    help="Provider config file [env EXTAUTH_CONFIG; default ./extauth.yaml when present]",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="extauth")
def main() -> None:
    """extauth: link users' accounts to external OAuth providers and keep their tokens.

    Serves Coder's external-auth API under /api/v2, from openapi.yaml.
    """


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
    settings = _settings(host=host, port=port, db_path=db, config=config,
                         access_url=access_url, workers=workers, demo=demo or None)
    store = _store(str(settings.db_path))
    if demo:
        _demo_walkthrough(settings, store)
    elif not settings.providers:
        _err("extauth: no provider is configured (see --config, CODER_EXTERNAL_AUTH_0_*); "
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
        "EXTAUTH_DB": str(settings.db_path),
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

Try every operation:

  curl -s {h} {api}                      # providers and your links
  curl -s {h} {api}/demo/device          # start a device flow
  # open the verification_uri it printed, enter the user_code, approve; then:
  curl -s -X POST {h} -H 'Content-Type: application/json' \\
       -d '{{"device_code":"<device_code from above>"}}' {api}/demo/device
  curl -s {h} {api}/demo                 # authenticated: true, with the user
  curl -s -X DELETE {h} {api}/demo       # unlink and revoke

API reference: {base}/api/v2/ui/
""")


@main.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.argument("name")
@click.option("--lifetime", metavar="DURATION", help="Token lifetime, e.g. 30d or 12h")
@db_option
def users_create(name: str, lifetime: str | None, db: str | None) -> None:
    """Create user NAME and print a new session token (only the token, on stdout)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise click.BadParameter(
            "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            param_hint="NAME",
        )
    store = _store(db)
    span = _lifetime(lifetime)
    try:
        user = store.create_user(name)
    except DuplicateError as exc:
        raise click.ClickException(
            f"{exc}; create a token for it with 'extauth tokens create'") from None
    click.echo(sessions.create_token(store, user, span))
    _err(f"created user {name!r}; the line above is its session token")


@users.command("list")
@db_option
def users_list(db: str | None) -> None:
    """List users."""
    for user in _store(db).list_users():
        click.echo(f"{user.name}\tcreated {user.created_at:%Y-%m-%d %H:%M:%S}Z")


def _lifetime(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return sessions.parse_lifetime(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--lifetime") from None


@main.group()
def tokens() -> None:
    """Manage session tokens."""


@tokens.command("create")
@click.argument("name")
@click.option("--lifetime", metavar="DURATION", help="Token lifetime, e.g. 30d or 12h")
@db_option
def tokens_create(name: str, lifetime: str | None, db: str | None) -> None:
    """Create a session token for user NAME and print it on stdout."""
    store = _store(db)
    span = _lifetime(lifetime)
    user = store.get_user(name)
    if user is None:
        raise click.ClickException(f"no user named {name!r}; create it with 'extauth users create'")
    click.echo(sessions.create_token(store, user, span))


@tokens.command("list")
@click.argument("name")
@db_option
def tokens_list(name: str, db: str | None) -> None:
    """List the tokens of user NAME (ids and expiry; secrets are never stored)."""
    store = _store(db)
    user = store.get_user(name)
    if user is None:
        raise click.ClickException(f"no user named {name!r}")
    for key in store.api_keys_for_user(user.id):
        expiry = f"{key.expires_at:%Y-%m-%d %H:%M:%S}Z" if key.expires_at else "never"
        click.echo(f"{key.id}\tcreated {key.created_at:%Y-%m-%d %H:%M:%S}Z\texpires {expiry}")


@tokens.command("delete")
@click.argument("token_id", metavar="ID")
@db_option
def tokens_delete(token_id: str, db: str | None) -> None:
    """Delete the token with id ID (the 10 characters before the '-')."""
    if not _store(db).delete_api_key(token_id.split("-")[0]):
        raise click.ClickException(f"no token with id {token_id.split('-')[0]!r}")
    _err(f"deleted token {token_id.split('-')[0]}")


@main.group()
def providers() -> None:
    """Inspect provider configs."""


@providers.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text")
def providers_list(config: str | None, as_json: bool) -> None:
    """Show the effective provider configs after presets (secrets masked)."""
    settings = _settings(config=config)
    items = [p.masked() for p in settings.providers]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        _err("no provider is configured")
    for item in items:
        click.echo(f"{item['id']} ({item['type']})")
        for key, value in item.items():
            if key not in ("id", "type") and value not in ("", [], False):
                click.echo(f"  {key}: {' '.join(value) if isinstance(value, list) else value}")


@main.group()
def keys() -> None:
    """Encryption of tokens at rest (keys from EXTAUTH_ENCRYPTION_KEYS)."""


@keys.command("status")
@db_option
def keys_status(db: str | None) -> None:
    """Count the links stored under each key id."""
    store = _store(db)
    configured = store.cipher.key_ids()
    counts = store.key_counts()
    for kid in sorted(set(counts) | set(configured), key=lambda k: (k not in configured, k)):
        label = "plain" if kid == "" else kid
        role = ("primary" if configured and kid == configured[0] else
                "configured" if kid in configured else
                "not encrypted" if kid == "" else "MISSING: these links cannot be read")
        click.echo(f"{label}\t{counts.get(kid, 0)}\t{role}")


def _reseal(store: Store, batch: int, verb: str) -> None:
    total = failed = 0
    while True:
        done, bad = store.reseal_batch(batch)
        total += done
        if done == 0:
            failed = bad
            break
    _err(f"{verb} {total} link(s)")
    if failed:
        raise click.ClickException(
            f"{failed} link(s) are under a key that is not configured; add it to "
            "EXTAUTH_ENCRYPTION_KEYS and run this again")


@keys.command("rotate")
@db_option
@click.option("--batch", type=click.IntRange(min=1), default=100, show_default=True,
              help="Links re-encrypted per transaction")
def keys_rotate(db: str | None, batch: int) -> None:
    """Re-encrypt every link with the first key, in batches, while serving.

    Safe to interrupt and run again: it continues with what is left.
    """
    store = _store(db)
    if not store.cipher.keys:
        raise click.ClickException("no key is configured: set EXTAUTH_ENCRYPTION_KEYS")
    _reseal(store, batch, f"re-encrypted with key {store.cipher.primary_id}:")


@keys.command("decrypt")
@db_option
@click.option("--batch", type=click.IntRange(min=1), default=100, show_default=True)
def keys_decrypt(db: str | None, batch: int) -> None:
    """Store every link's tokens in plain text again (to stop using encryption)."""
    store = _store(db)
    _reseal(Store(store.path, Cipher(store.cipher.keys, write_plain=True)), batch, "decrypted")


@main.command()
@db_option
@click.option("--user", "user_name", metavar="NAME", help="Only this user's events")
@click.option("--provider", "provider_id", metavar="ID", help="Only this provider's events")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def audit(db: str | None, user_name: str | None, provider_id: str | None, limit: int) -> None:
    """Show the audit trail, newest first (never a token)."""
    for e in _store(db).audit_events(user_name, provider_id, limit):
        at = f"{e.at:%Y-%m-%d %H:%M:%S}Z" if e.at else ""
        click.echo("\t".join([at, e.user_name, e.provider_id, e.action, e.outcome,
                              e.request_id, e.detail]))


@main.group("config")
def config_group() -> None:
    """Check the configuration."""


@config_group.command("check")
@config_option
def config_check(config: str | None) -> None:
    """Validate the config; exit non-zero with a precise message on any error."""
    settings = _settings(config=config)
    _err(f"config OK: {len(settings.providers)} provider(s): "
         + (", ".join(p.id for p in settings.providers) or "none"))


@main.command()
@click.option("--output", "-o", metavar="PATH", default="docs/api.md", show_default=True,
              type=click.Path(dir_okay=False), help="Where the Markdown reference goes")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 if PATH differs from what would be generated")
def docs(output: str, check: bool) -> None:
    """Generate the Markdown API reference from openapi.yaml."""
    from pathlib import Path

    from extauth import apidocs

    path = Path(output)
    if check:
        if not apidocs.check(path):
            raise click.ClickException(
                f"{output} is not what openapi.yaml generates; run 'extauth docs'")
        _err(f"{output} is up to date")
        return
    changed = apidocs.write(path)
    _err(f"{'wrote' if changed else 'unchanged:'} {output}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
