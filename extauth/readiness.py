"""Readiness: whether this process can serve, not merely whether it runs.

``/healthz`` says the process and its database answer (cheap, for liveness).
``/readyz`` says more, each check a few index lookups whatever the size of
the database:

- the database answers;
- its schema is the one this server's migrations make (an older server after
  a newer one migrated the database is not ready, nor is one not migrated);
- the configured encryption keys decrypt the stored tokens: for each
  configured key, one link stored under it decrypts, and when links are
  encrypted, at least one is under a configured key. A link left under a key
  that was dropped after a rotation does not make the server unready (it
  reports so itself); a server started without the keys its links need does.
"""

from __future__ import annotations

import logging
import sqlite3

from extauth.errors import UnavailableError
from extauth.store import Store, StoreError

log = logging.getLogger("extauth.readiness")
NOT_READY = "The service is not ready."


def problem(store: Store) -> str:
    """Why the server is not ready, or "" when it is. Blocking: run off the loop."""
    try:
        store.ping()
        version = store.schema_version()
    except (sqlite3.Error, StoreError) as exc:
        log.warning("not ready: %s", exc)
        return "the database does not answer; the server's log says more"
    latest = store.latest_version
    if version < latest:
        return (f"the database schema is at version {version}, this server needs "
                f"{latest}; it migrates the database when it starts")
    if version > latest:
        return (f"the database schema is at version {version}, newer than this server's "
                f"{latest}: a newer extauth migrated it")
    configured = store.cipher.key_ids()
    sampled = False
    for key_id in configured:
        link = store.sealed_link(key_id)
        if link is not None and link.decrypt_error:
            return f"a link under key {key_id} does not decrypt: {link.decrypt_error}"
        sampled = sampled or link is not None
    if not sampled:
        found = store.any_sealed_key_id()
        if found is not None:
            return (f"links are encrypted with key {found}, which is not configured "
                    "(EXTAUTH_ENCRYPTION_KEYS)")
    return ""


def check(store: Store) -> None:
    """Raise ``UnavailableError`` (503) saying why, unless the server is ready."""
    why = problem(store)
    if why:
        raise UnavailableError(NOT_READY, detail=why)
