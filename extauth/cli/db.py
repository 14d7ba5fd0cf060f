"""``extauth db copy``: move a deployment to another database."""

from __future__ import annotations

import click

from extauth import store as stores
from extauth.cli._base import db_option, main, open_store, say
from extauth.cli._progress import progress
from extauth.store import Store
from extauth.store._copy import TABLES


@main.group()
def db() -> None:
    """The database as a whole."""


@db.command("migrate")
@db_option
def db_migrate(db: str | None) -> None:
    """Bring the database's tables up to this version (serve does it at start)."""
    store = open_store(db)
    say(f"{store.where} is at schema version {store.schema_version()}")


def _source(where: str) -> Store:
    """The database to copy from, as it is: never created, never migrated."""
    if not stores.is_postgres(where) and not stores.sqlite_path(where).is_file():
        raise click.ClickException(f"--from: no database file at {where}")
    src = stores.open_store(where)
    click.get_current_context().call_on_close(src.close)
    version = src.schema_version()
    if version < src.latest_version:
        raise click.ClickException(
            f"--from: the database is at schema version {version}, this extauth copies "
            f"version {src.latest_version}: run 'extauth db migrate --db {src.where}' first")
    if version > src.latest_version:
        raise click.ClickException(
            f"--from: the database is at schema version {version}, newer than this "
            f"extauth's {src.latest_version}: copy with the newer extauth")
    return src


def _check_resumable(src: Store, dst: Store) -> None:
    """A target that holds rows must hold the start of the source's, as an
    interrupted copy leaves it: anything else would mix two deployments."""
    foreign = []
    for table in TABLES:
        first, last = dst.first_key(table), dst.last_key(table)
        if first is None or last is None:
            continue
        held = dst.table_count(table)
        same = all(dst.row_at(table, key) == src.row_at(table, key) for key in (first, last))
        if not same or src.first_key(table) != first or src.count_through(table, last) != held:
            foreign.append(f"{table.name} ({held} row(s))")
    if foreign:
        raise click.ClickException(
            "--to already holds rows that are not the source's: " + ", ".join(foreign)
            + "; copy into an empty database")


@db.command("copy")
@click.option("--from", "source", metavar="PATH|URL", required=True,
              help="The database to copy from (a SQLite file, or postgresql://...)")
@click.option("--to", "target", metavar="PATH|URL", required=True,
              help="The database to copy to (created or migrated first; empty, or "
                   "holding what an interrupted copy from the same source left)")
@click.option("--batch", type=click.IntRange(min=1), default=500, show_default=True,
              help="Rows per transaction")
def db_copy(source: str, target: str, batch: int) -> None:
    """Copy users, session and agent tokens, links, pending revocations and the
    audit trail from one database to another, then check the counts.

    Stop the servers on the source first: rows written during the copy may be
    missed. Encrypted tokens are copied as they are: serve the new database with
    the same EXTAUTH_ENCRYPTION_KEYS. A copy that stopped part-way goes on where
    it stopped when run again, as long as the source has not changed.
    """
    if source == target:
        raise click.UsageError("--from and --to name the same database")
    src = _source(source)
    dst = open_store(target)
    _check_resumable(src, dst)
    differ = []
    for table in TABLES:
        total = src.table_count(table)
        before = dst.table_count(table)
        with progress(f"copying {table.name}", total) as advance:
            for rows in src.rows_after(table, dst.last_key(table), batch):
                dst.insert_rows(table, rows)
                advance(len(rows))
        now = dst.table_count(table)
        say(f"{table.name}: {now - before} copied, {now} of {total} there")
        if now != total:
            differ.append(f"{table.name} ({now} there, {total} in the source)")
    if differ:
        raise click.ClickException(
            "the counts differ: " + ", ".join(differ) + "; the source changed during the "
            "copy: stop its servers and copy again into an empty database")
    say(f"copied {src.where} to {dst.where}")
