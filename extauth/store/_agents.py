"""Agent tokens: credentials bound to one user that open only the token hand-off."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from extauth.store._base import Row, StoreBase, _dt, utcnow
from extauth.store.records import AgentToken

_AGENT = ("SELECT a.id AS id, a.user_id AS user_id, u.name AS user_name, a.name AS name, "
          "a.created_at AS created_at, a.expires_at AS expires_at "
          "FROM agent_tokens a JOIN users u ON u.id = a.user_id")


def _agent(row: Row) -> AgentToken:
    return AgentToken(id=row["id"], user_id=row["user_id"], user_name=row["user_name"],
                      name=row["name"], created_at=_dt(row["created_at"]) or utcnow(),
                      expires_at=_dt(row["expires_at"]))


class AgentsQueries(StoreBase):
    def _agents(self, where: str, args: list[Any]) -> list[AgentToken]:
        return [_agent(r) for r in self._rows(f"{_AGENT} {where} ORDER BY u.name, a.created_at",
                                              args)]

    def insert_agent_token(self, token_id: str, user_id: int, name: str, token_hash: str,
                           expires_at: datetime | None) -> None:
        self._execute(
            "INSERT INTO agent_tokens (id, user_id, name, token_hash, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [token_id, user_id, name, token_hash, self._ts(utcnow()), self._ts(expires_at)],
        )

    def agent_token_by_hash(self, token_hash: str) -> AgentToken | None:
        """The agent token whose secret hashes to ``token_hash`` (a unique index)."""
        found = self._agents("WHERE a.token_hash = ?", [token_hash])
        return found[0] if found else None

    def agent_tokens(self, user_id: int | None = None) -> list[AgentToken]:
        """Every agent token, or one user's; never their secrets."""
        if user_id is None:
            return self._agents("", [])
        return self._agents("WHERE a.user_id = ?", [user_id])

    def delete_agent_token(self, token_id: str) -> bool:
        return self._execute("DELETE FROM agent_tokens WHERE id = ?", [token_id]) > 0
