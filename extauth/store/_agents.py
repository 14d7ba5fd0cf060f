"""Agent tokens: credentials bound to one user that open only the token hand-off."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from extauth.store._base import StoreBase, _dt, _ts, utcnow
from extauth.store.records import AgentToken


class AgentsStore(StoreBase):
    # -- agent tokens ---------------------------------------------------------------

    @staticmethod
    def _agent(row: Any) -> AgentToken:
        return AgentToken(id=row["id"], user_id=row["user_id"], user_name=row["user_name"],
                          name=row["name"], created_at=_dt(row["created_at"]) or utcnow(),
                          expires_at=_dt(row["expires_at"]))

    def _agent_rows(self, where: str, args: list[Any]) -> list[AgentToken]:
        cur = self.db.execute(
            "SELECT a.id AS id, a.user_id AS user_id, u.name AS user_name, a.name AS name, "
            "a.created_at AS created_at, a.expires_at AS expires_at "
            f"FROM agent_tokens a JOIN users u ON u.id = a.user_id {where} "
            "ORDER BY u.name, a.created_at",
            args,
        )
        names = [d[0] for d in cur.description]
        return [self._agent(dict(zip(names, row, strict=True))) for row in cur.fetchall()]

    def insert_agent_token(self, token_id: str, user_id: int, name: str, token_hash: str,
                           expires_at: datetime | None) -> None:
        self.db.execute(
            "INSERT INTO agent_tokens (id, user_id, name, token_hash, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [token_id, user_id, name, token_hash, _ts(utcnow()), _ts(expires_at)],
        )

    def agent_token_by_hash(self, token_hash: str) -> AgentToken | None:
        """The agent token whose secret hashes to ``token_hash`` (a unique index)."""
        found = self._agent_rows("WHERE a.token_hash = ?", [token_hash])
        return found[0] if found else None

    def agent_tokens(self, user_id: int | None = None) -> list[AgentToken]:
        """Every agent token, or one user's; never their secrets."""
        if user_id is None:
            return self._agent_rows("", [])
        return self._agent_rows("WHERE a.user_id = ?", [user_id])

    def delete_agent_token(self, token_id: str) -> bool:
        return self.db.execute("DELETE FROM agent_tokens WHERE id = ?", [token_id]).rowcount > 0
