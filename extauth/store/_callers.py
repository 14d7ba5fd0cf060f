"""A caller's credential and what the request reads, in one statement.

Most requests check who is calling and then read that user's links. Asked
one after the other, that is two trips to the database (two round trips on
PostgreSQL); here the key (or agent token) is joined with the links, so a
request makes one. The links of a key whose secret then fails the check are
read for nothing and dropped by the caller (``extauth.sessions``); nothing of
them leaves the process.
"""

from __future__ import annotations

from extauth.store._base import Row, _dt, utcnow
from extauth.store._links import LINK_FIELDS, LinksQueries
from extauth.store.records import AgentToken, ApiKey, Link

# The link's own columns keep their names, so that rows decode as links do.
_LINK = ", ".join(f"l.{name} AS {name}" for name in LINK_FIELDS)
_KEY = (f"SELECT k.id AS key_id, k.user_id AS key_user_id, u.name AS key_user_name, "
        f"k.secret_hash AS key_secret_hash, k.created_at AS key_created_at, "
        f"k.expires_at AS key_expires_at, {_LINK} "
        "FROM api_keys k JOIN users u ON u.id = k.user_id "
        "LEFT JOIN external_auth_links l ON l.user_id = k.user_id")
_AGENT = (f"SELECT a.id AS agent_id, a.user_id AS agent_user_id, u.name AS agent_user_name, "
          f"a.name AS agent_name, a.created_at AS agent_created_at, "
          f"a.expires_at AS agent_expires_at, {_LINK} "
          "FROM agent_tokens a JOIN users u ON u.id = a.user_id "
          "LEFT JOIN external_auth_links l ON l.user_id = a.user_id")


def _api_key(row: Row) -> ApiKey:
    return ApiKey(row["key_id"], row["key_user_id"], row["key_user_name"],
                  row["key_secret_hash"], _dt(row["key_created_at"]) or utcnow(),
                  _dt(row["key_expires_at"]))


def _agent(row: Row) -> AgentToken:
    return AgentToken(id=row["agent_id"], user_id=row["agent_user_id"],
                      user_name=row["agent_user_name"], name=row["agent_name"],
                      created_at=_dt(row["agent_created_at"]) or utcnow(),
                      expires_at=_dt(row["agent_expires_at"]))


class CallersQueries(LinksQueries):
    def _with_links(self, select: str, where: str, key: str,
                    provider_id: str | None) -> list[Row]:
        """The rows of ``select`` (one per link of its user, or one with empty link
        columns when the user has none), for ``key`` and, when given, one provider."""
        if provider_id is None:
            return self._rows(f"{select} WHERE {where} ORDER BY l.provider_id", [key])
        return self._rows(f"{select} AND l.provider_id = ? WHERE {where}", [provider_id, key])

    def _links_of(self, rows: list[Row]) -> list[Link]:
        return [self._link(r) for r in rows if r["provider_id"] is not None]

    def api_key_and_links(self, key_id: str, provider_id: str | None = None
                          ) -> tuple[ApiKey | None, list[Link]]:
        """A session key, and its user's links (only the link to ``provider_id``,
        when given), in provider order."""
        rows = self._with_links(_KEY, "k.id = ?", key_id, provider_id)
        return (_api_key(rows[0]), self._links_of(rows)) if rows else (None, [])

    def agent_token_and_links(self, token_hash: str, provider_id: str | None = None
                              ) -> tuple[AgentToken | None, list[Link]]:
        """The agent token whose secret hashes to ``token_hash``, and its user's
        links (only the link to ``provider_id``, when given)."""
        rows = self._with_links(_AGENT, "a.token_hash = ?", token_hash, provider_id)
        return (_agent(rows[0]), self._links_of(rows)) if rows else (None, [])
