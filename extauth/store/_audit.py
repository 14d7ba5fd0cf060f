"""The audit trail's table."""

from __future__ import annotations

from datetime import datetime

from extauth.store._base import StoreBase, _dt, utcnow
from extauth.store.records import AuditEvent


class AuditQueries(StoreBase):
    # -- the audit trail -------------------------------------------------------------------

    def insert_audit(self, *events: AuditEvent) -> None:
        """Store events, all in one transaction."""
        with self._transaction():
            for e in events:
                self._execute(
                    "INSERT INTO audit_events (at, user_id, user_name, provider_id, action, "
                    "outcome, detail, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [self._ts(e.at or utcnow()), e.user_id, e.user_name, e.provider_id,
                     e.action, e.outcome, e.detail[:500], e.request_id],
                )

    def audit_events(self, user_name: str | None = None, provider_id: str | None = None,
                     limit: int = 100) -> list[AuditEvent]:
        """The newest events first, optionally for one user and/or provider."""
        where, args = [], []
        if user_name is not None:
            where.append("user_name = ?")
            args.append(user_name)
        if provider_id is not None:
            where.append("provider_id = ?")
            args.append(provider_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._rows(
            "SELECT action, outcome, user_id, user_name, provider_id, detail, request_id, at "
            f"FROM audit_events {clause} ORDER BY at DESC, id DESC LIMIT ?",
            [*args, limit],
        )
        return [AuditEvent(action=r["action"], outcome=r["outcome"], user_id=r["user_id"],
                           user_name=r["user_name"], provider_id=r["provider_id"],
                           detail=r["detail"], request_id=r["request_id"], at=_dt(r["at"]))
                for r in rows]

    def audit_events_before(self, before: datetime) -> int:
        """How many events are older than ``before`` (a range of the time index)."""
        row = self._one("SELECT COUNT(*) AS n FROM audit_events WHERE at < ?",
                        [self._ts(before)])
        return int(row["n"]) if row else 0

    def purge_audit(self, before: datetime, batch: int = 1000) -> int:
        """Delete up to ``batch`` of the oldest events older than ``before``; return how
        many. Small transactions: the write lock is never held for long."""
        return self._execute(
            "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events "
            "WHERE at < ? ORDER BY at LIMIT ?)", [self._ts(before), batch])
