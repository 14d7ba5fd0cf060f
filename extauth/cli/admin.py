"""The operator's commands: users, session tokens, agent tokens, providers,
keys, audit, config and the generated docs."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import click

from extauth import sessions
from extauth import store as stores
from extauth.audit import Audit
from extauth.cli._base import (
    cli_settings,
    config_option,
    db_option,
    main,
    open_store,
    say,
    store_for,
)
from extauth.cli._progress import progress
from extauth.crypto import Cipher
from extauth.refresh import client_fingerprint
from extauth.settings import Settings
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
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text")
def providers_list(config: str | None, db: str | None, as_json: bool) -> None:
    """Show the effective provider configs after presets (secrets masked), and
    any provider that refuses our client's credentials (from the database,
    when it exists)."""
    settings = cli_settings(config=config, database=db)
    refused = _refusals(settings)
    items = [{**p.masked(), "client_refused": refused.get(p.id)} for p in settings.providers]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        say("no provider is configured")
    for item in items:
        click.echo(f"{item['id']} ({item['type'] or 'generic'})"
                   + (" UNUSABLE" if item["unusable"] else ""))
        for key, value in item.items():
            if key in ("notes", "warnings"):
                for line in value:
                    click.echo(f"  {key[:-1]}: {line}")
            elif key not in ("id", "type", "client_refused") and value not in ("", [], False):
                click.echo(f"  {key}: {' '.join(value) if isinstance(value, list) else value}")
        if item["client_refused"]:
            r = item["client_refused"]
            click.echo(f"  refusing our client since {r['since']}: {r['reason']} "
                       f"(next try {r['retry_at']})")


def _refusals(settings: Settings) -> dict[str, dict[str, str]]:
    """Current refusals of the configured clients, by provider id."""
    if not stores.is_postgres(settings.database) and not settings.db_path.exists():
        return {}
    store = store_for(settings)
    found = {}
    for refusal in store.provider_refusals():
        p = settings.provider(refusal.provider_id)
        if p is not None and refusal.client_fingerprint == client_fingerprint(p):
            found[p.id] = {"since": f"{refusal.refused_at:%Y-%m-%d %H:%M:%S}Z",
                           "reason": refusal.reason,
                           "retry_at": f"{refusal.retry_at:%Y-%m-%d %H:%M:%S}Z"}
    return found


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


def _reseal(store: Store, batch: int, verb: str, label: str) -> None:
    """Every batch, page after page: links that cannot be decrypted are passed
    over and named, so that the ones after them are still re-encrypted."""
    total = 0
    failed: list[tuple[int, str]] = []
    after: tuple[int, str] | None = (0, "")
    with progress(label, store.links_to_reseal()) as advance:
        while after is not None:
            done, bad, after = store.reseal_batch(batch, after)
            total += done
            failed += bad
            advance(done + len(bad))
    done, stuck = store.reseal_revocations()
    say(f"{verb} {total} link(s) and {done} pending revocation(s)")
    if stuck:
        say(f"  cannot decrypt: {stuck} pending revocation(s)")
    if failed:
        names = {u.id: u.name for u in store.list_users()}
        for user_id, provider_id in failed:
            say(f"  cannot decrypt: user {names.get(user_id, user_id)!r}, "
                f"provider {provider_id!r}")
        raise click.ClickException(
            f"{len(failed)} link(s) are under a key that is not configured; add it to "
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
    _reseal(store, batch, f"re-encrypted with key {store.cipher.primary_id}:",
            "re-encrypting links")


@keys.command("decrypt")
@db_option
@click.option("--batch", type=click.IntRange(min=1), default=100, show_default=True)
def keys_decrypt(db: str | None, batch: int) -> None:
    """Store every link's tokens in plain text again (to stop using encryption)."""
    settings = cli_settings(database=db, providers=())
    plain = Cipher(settings.encryption_keys, write_plain=True)
    _reseal(store_for(settings, plain), batch, "decrypted", "decrypting links")


@main.group(invoke_without_command=True)
@db_option
@click.option("--user", "user_name", metavar="NAME", help="Only this user's events")
@click.option("--provider", "provider_id", metavar="ID", help="Only this provider's events")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.pass_context
def audit(ctx: click.Context, db: str | None, user_name: str | None, provider_id: str | None,
          limit: int) -> None:
    """Show the audit trail, newest first (never a token); 'audit prune' deletes
    old events."""
    if ctx.invoked_subcommand is not None:
        if user_name or provider_id:
            raise click.UsageError("--user and --provider choose what the listing shows; "
                                   "'audit prune' deletes by age only")
        ctx.obj = db  # 'audit --db X prune' means prune X
        return
    for e in open_store(db).audit_events(user_name, provider_id, limit):
        at = f"{e.at:%Y-%m-%d %H:%M:%S}Z" if e.at else ""
        click.echo("\t".join([at, e.user_name, e.provider_id, e.action, e.outcome,
                              e.request_id, e.detail]))


@audit.command("prune")
@db_option
@click.option("--older-than", "days", type=click.IntRange(min=0), metavar="DAYS",
              help="Delete events older than this many days "
                   "[default: EXTAUTH_AUDIT_RETENTION_DAYS, 90]")
@click.pass_obj
def audit_prune(group_db: str | None, db: str | None, days: int | None) -> None:
    """Delete old audit events, in small batches (the server does it at start too)."""
    store = open_store(db or group_db)
    if days is None:
        days = cli_settings(providers=()).audit_retention_days
    trail = Audit(store, timedelta(days=days))
    before = trail.cutoff()
    with progress("deleting audit events", store.audit_events_before(before)) as advance:
        deleted = trail.purge(advance, before)
    say(f"deleted {deleted} audit event(s) older than {days} day(s)")


@main.command()
@db_option
def revocations(db: str | None) -> None:
    """Show revocations the providers have not confirmed yet (never a token).

    Each is retried by the server with a doubling backoff until the provider
    confirms or the record expires.
    """
    for r in open_store(db).pending_revocations():
        click.echo("\t".join([
            f"{r.created_at:%Y-%m-%d %H:%M:%S}Z", r.user_name, r.provider_id, r.reason,
            str(r.attempts), f"next {r.next_attempt_at:%Y-%m-%d %H:%M:%S}Z",
            f"expires {r.expires_at:%Y-%m-%d}", r.last_error]))


@main.group("config")
def config_group() -> None:
    """Check the configuration."""


@config_group.command("check")
@config_option
@click.option("--strict", is_flag=True,
              help="Also fail on keys extauth ignores and on providers that cannot work")
def config_check(config: str | None, strict: bool) -> None:
    """Validate the config; exit non-zero with a precise message on any error.

    Like Coder, extauth starts with keys it does not know (ignored, with a
    warning) and with providers that cannot work as configured (served as
    unusable); --strict refuses both.
    """
    settings = cli_settings(config=config)
    problems = settings.config_warnings()
    for problem in problems:
        say(f"warning: {problem}")
    if strict and problems:
        raise click.ClickException(f"config: {len(problems)} problem(s) above (--strict)")
    unusable = [p.id for p in settings.providers if p.unusable]
    say(f"config OK: {len(settings.providers)} provider(s): "
        + (", ".join(p.id for p in settings.providers) or "none")
        + (f" ({len(unusable)} unusable: {', '.join(unusable)})" if unusable else ""))


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
