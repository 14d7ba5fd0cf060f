"""The operator's commands: users, session tokens, agent tokens, providers,
keys, audit, config and the generated docs."""

from __future__ import annotations

import json
import re
from typing import Any

import click

from extauth import sessions
from extauth.cli._base import cli_settings, config_option, db_option, main, open_store, say
from extauth.crypto import Cipher
from extauth.store import DuplicateError, Store


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
    store = open_store(db)
    span = _lifetime(lifetime)
    try:
        user = store.create_user(name)
    except DuplicateError as exc:
        raise click.ClickException(
            f"{exc}; create a token for it with 'extauth tokens create'") from None
    click.echo(sessions.create_token(store, user, span))
    say(f"created user {name!r}; the line above is its session token")


@users.command("list")
@db_option
def users_list(db: str | None) -> None:
    """List users."""
    for user in open_store(db).list_users():
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
    store = open_store(db)
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
    store = open_store(db)
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
    if not open_store(db).delete_api_key(token_id.split("-")[0]):
        raise click.ClickException(f"no token with id {token_id.split('-')[0]!r}")
    say(f"deleted token {token_id.split('-')[0]}")


@main.group()
def agents() -> None:
    """Manage agent tokens: they open only the token hand-off endpoint."""


@agents.command("create")
@click.argument("name", metavar="USER")
@click.option("--name", "label", metavar="NAME", default="",
              help="What the token is for, e.g. the workspace's name")
@click.option("--lifetime", metavar="DURATION", help="Token lifetime, e.g. 30d or 12h")
@db_option
def agents_create(name: str, label: str, lifetime: str | None, db: str | None) -> None:
    """Create an agent token for USER and print it (a UUIDv4, only the token, on stdout).

    It reads USER's tokens through GET /api/v2/workspaceagents/me/external-auth,
    as Coder's workspace agents do, and opens nothing else.
    """
    store = open_store(db)
    span = _lifetime(lifetime)
    user = store.get_user(name)
    if user is None:
        raise click.ClickException(f"no user named {name!r}; create it with 'extauth users create'")
    click.echo(sessions.create_agent_token(store, user, label, span))


@agents.command("list")
@click.argument("name", metavar="[USER]", required=False)
@db_option
def agents_list(name: str | None, db: str | None) -> None:
    """List agent tokens, all or USER's (ids, names and expiry; never the token)."""
    store = open_store(db)
    user_id = None
    if name is not None:
        user = store.get_user(name)
        if user is None:
            raise click.ClickException(f"no user named {name!r}")
        user_id = user.id
    for agent in store.agent_tokens(user_id):
        expiry = f"{agent.expires_at:%Y-%m-%d %H:%M:%S}Z" if agent.expires_at else "never"
        click.echo(f"{agent.id}\t{agent.user_name}\t{agent.name or '-'}\t"
                   f"created {agent.created_at:%Y-%m-%d %H:%M:%S}Z\texpires {expiry}")


@agents.command("delete")
@click.argument("token_id", metavar="ID")
@db_option
def agents_delete(token_id: str, db: str | None) -> None:
    """Delete the agent token with id ID (from 'extauth agents list')."""
    if not open_store(db).delete_agent_token(token_id):
        raise click.ClickException(f"no agent token with id {token_id!r}")
    say(f"deleted agent token {token_id}")


@main.group()
def providers() -> None:
    """Inspect provider configs."""


@providers.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text")
def providers_list(config: str | None, as_json: bool) -> None:
    """Show the effective provider configs after presets (secrets masked)."""
    settings = cli_settings(config=config)
    items = [p.masked() for p in settings.providers]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        say("no provider is configured")
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
    store = open_store(db)
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
    say(f"{verb} {total} link(s)")
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
    store = open_store(db)
    if not store.cipher.keys:
        raise click.ClickException("no key is configured: set EXTAUTH_ENCRYPTION_KEYS")
    _reseal(store, batch, f"re-encrypted with key {store.cipher.primary_id}:")


@keys.command("decrypt")
@db_option
@click.option("--batch", type=click.IntRange(min=1), default=100, show_default=True)
def keys_decrypt(db: str | None, batch: int) -> None:
    """Store every link's tokens in plain text again (to stop using encryption)."""
    store = open_store(db)
    _reseal(Store(store.path, Cipher(store.cipher.keys, write_plain=True)), batch, "decrypted")


@main.command()
@db_option
@click.option("--user", "user_name", metavar="NAME", help="Only this user's events")
@click.option("--provider", "provider_id", metavar="ID", help="Only this provider's events")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def audit(db: str | None, user_name: str | None, provider_id: str | None, limit: int) -> None:
    """Show the audit trail, newest first (never a token)."""
    for e in open_store(db).audit_events(user_name, provider_id, limit):
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
    settings = cli_settings(config=config)
    say(f"config OK: {len(settings.providers)} provider(s): "
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
        say(f"{output} is up to date")
        return
    changed = apidocs.write(path)
    say(f"{'wrote' if changed else 'unchanged:'} {output}")
