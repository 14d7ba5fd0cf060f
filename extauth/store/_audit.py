"""The audit trail's table."""

from __future__ import annotations

from datetime import datetime

from extauth.store._base import StoreBase, _dt, _ts, utcnow
from extauth.store.records import AuditEvent


class AuditStore(StoreBase):
    # -- the audit trail -------------------------------------------------------------------

    def insert_audit(self, *events: AuditEvent) -> None:
        """Store events, all in one transaction."""
        with self.immediate() as db:
            db.conn.executemany(
                "INSERT INTO audit_events (at, user_id, user_name, provider_id, action, "
                "outcome, detail, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [[_ts(e.at or utcnow()), e.user_id, e.user_name, e.provider_id, e.action,
                  e.outcome, e.detail[:500], e.request_id] for e in events],
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
        rows = self.db.execute(
            "SELECT action, outcome, user_id, user_name, provider_id, detail, request_id, at "
            f"FROM audit_events {clause} ORDER BY at DESC, id DESC LIMIT ?",
            [*args, limit],
        ).fetchall()
        return [AuditEvent(action=r[0], outcome=r[1], user_id=r[2], user_name=r[3],
                           provider_id=r[4], detail=r[5], request_id=r[6], at=_dt(r[7]))
                for r in rows]

    def purge_audit(self, before: datetime) -> int:
        return self.db.execute(
            "DELETE FROM audit_events WHERE at < ?", [_ts(before)]
        ).rowcount
