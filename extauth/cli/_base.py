"""The ``extauth`` command group and what its commands share.

Library errors become ``click.ClickException`` at this boundary (exit 1);
usage errors exit 2. Machine-readable output (a new token) goes to stdout,
everything meant for a person to stderr.
"""

from __future__ import annotations

from typing import Any

import click

from extauth import store as stores
from extauth.crypto import Cipher
from extauth.settings import ConfigError, Settings, load_settings
from extauth.store import Store, StoreError


def cli_settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise click.ClickException(f"config: {exc}") from None


def store_for(settings: Settings, cipher: Cipher | None = None) -> Store:
    """The settings' database, migrated; a database that cannot be used exits 1."""
    try:
        store = stores.open_store(settings.database, cipher or Cipher(settings.encryption_keys),
                                  pool_size=settings.db_pool_size, timeout=settings.db_timeout)
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            ctx.call_on_close(store.close)
        store.migrate()
    except (StoreError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    return store


def open_store(db: str | None) -> Store:
    """The store of ``--db`` (or ``EXTAUTH_DB``), migrated."""
    return store_for(cli_settings(database=db, providers=()))


def say(text: str) -> None:
    click.echo(text, err=True)


db_option = click.option(
    "--db", metavar="PATH|URL",
    help="SQLite database file, or postgresql://user:pass@host/dbname "
         "[env EXTAUTH_DB; default ./extauth.db]",
)
config_option = click.option(
    "--config",
    metavar="PATH",
    help="Provider config file [env EXTAUTH_CONFIG; default ./extauth.yaml when present]",
)


class _Commands(click.Group):
    """A database that fails mid-command exits 1 with its message, as one that
    cannot be opened does, never with a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="extauth")
def main() -> None:
    """extauth: link users' accounts to external OAuth providers and keep their tokens.

    Serves Coder's external-auth API under /api/v2, from openapi.yaml.
    """
