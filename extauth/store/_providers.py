"""What is known of providers themselves: a refusal of our client's credentials."""

from __future__ import annotations

from datetime import timedelta

from extauth.store._base import Row, StoreBase, _dt, utcnow
from extauth.store.records import ProviderRefusal


class ProvidersQueries(StoreBase):
    def _refusal(self, row: Row) -> ProviderRefusal:
        return ProviderRefusal(
            provider_id=row["provider_id"],
            client_fingerprint=row["client_fingerprint"],
            reason=row["reason"],
            failures=row["failures"],
            refused_at=_dt(row["refused_at"]) or utcnow(),
            retry_at=_dt(row["retry_at"]) or utcnow(),
        )

    def provider_refusal(self, provider_id: str) -> ProviderRefusal | None:
        row = self._one("SELECT * FROM provider_refusals WHERE provider_id = ?", [provider_id])
        return self._refusal(row) if row else None

    def provider_refusals(self) -> list[ProviderRefusal]:
        rows = self._rows("SELECT * FROM provider_refusals ORDER BY provider_id")
        return [self._refusal(r) for r in rows]

    def record_provider_refusal(self, provider_id: str, fingerprint: str, reason: str,
                                backoff: timedelta, longest: timedelta) -> ProviderRefusal:
        """Note that the provider refused the client config ``fingerprint``; the wait
        before asking again doubles with each refusal of the same config."""
        now = utcnow()
        with self._transaction():
            row = self._one(f"SELECT * FROM provider_refusals WHERE provider_id = ?"
                            f"{self.for_update}", [provider_id])
            known = self._refusal(row) if row else None
            same = known is not None and known.client_fingerprint == fingerprint
            failures = known.failures + 1 if same and known is not None else 1
            since = known.refused_at if same and known is not None else now
            wait = min(backoff * 2 ** min(failures - 1, 16), longest)
            self._execute(
                "INSERT INTO provider_refusals (provider_id, client_fingerprint, reason, "
                "failures, refused_at, retry_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (provider_id) DO UPDATE SET "
                "client_fingerprint = excluded.client_fingerprint, reason = excluded.reason, "
                "failures = excluded.failures, refused_at = excluded.refused_at, "
                "retry_at = excluded.retry_at",
                [provider_id, fingerprint, reason[:400], failures, self._ts(since),
                 self._ts(now + wait)],
            )
        return ProviderRefusal(provider_id, fingerprint, reason[:400], failures, since,
                               now + wait)

    def clear_provider_refusal(self, provider_id: str) -> None:
        self._execute("DELETE FROM provider_refusals WHERE provider_id = ?", [provider_id])
