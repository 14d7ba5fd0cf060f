"""``extauth db copy``: move a deployment to another database."""

from __future__ import annotations

import click

from extauth.cli._base import cli_settings, main, say, store_for
from extauth.cli._progress import progress
from extauth.store import Store
from extauth.store._copy import TABLES


@main.group()
def db() -> None:
    """The database as a whole."""


def _opened(where: str) -> Store:
    return store_for(cli_settings(database=where, providers=()))


@db.command("copy")
@click.option("--from", "source", metavar="PATH|URL", required=True,
              help="The database to copy from (a SQLite file, or postgresql://...)")
@click.option("--to", "target", metavar="PATH|URL", required=True,
              help="The database to copy to (created or migrated first)")
@click.option("--batch", type=click.IntRange(min=1), default=500, show_default=True,
              help="Rows per transaction")
def db_copy(source: str, target: str, batch: int) -> None:
    """Copy users, session and agent tokens, links, pending revocations and the
    audit trail from one database to another, then check the counts.

    Encrypted tokens are copied as they are: serve the new database with the same
    EXTAUTH_ENCRYPTION_KEYS. Stop the servers on the old database first (or copy
    again afterwards: a copy goes on where the last one stopped, and rows already
    copied are kept).
    """
    if source == target:
        raise click.UsageError("--from and --to name the same database")
    src, dst = _opened(source), _opened(target)
    differ = []
    for table in TABLES:
        total = src.table_count(table)
        before = dst.table_count(table)
        with progress(f"copying {table.name}", total) as advance:
            for rows in src.rows_after(table, dst.last_key(table), batch):
                dst.insert_rows(table, rows)
                advance(len(rows))
        copied, now = dst.table_count(table) - before, dst.table_count(table)
        say(f"{table.name}: {copied} copied, {now} of {total} there")
        if now != total:
            differ.append(f"{table.name} ({now} there, {total} in the source)")
    if differ:
        raise click.ClickException(
            "the counts differ: " + ", ".join(differ) + "; was the source changed during the "
            "copy, or did the target hold other rows? Run the copy again to take the rest")
    say(f"copied {src.where} to {dst.where}")
