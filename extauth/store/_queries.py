"""Every query of the store, written once for both databases."""

from __future__ import annotations

from extauth.store._agents import AgentsQueries
from extauth.store._audit import AuditQueries
from extauth.store._callers import CallersQueries
from extauth.store._copy import CopyQueries
from extauth.store._providers import ProvidersQueries
from extauth.store._revocations import RevocationsQueries
from extauth.store._users import UsersQueries


class Queries(UsersQueries, CallersQueries, RevocationsQueries, ProvidersQueries,
              AuditQueries, AgentsQueries, CopyQueries):
    """The queries by concept; a database's store adds its primitives."""
