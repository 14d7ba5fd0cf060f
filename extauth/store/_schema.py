"""The schema, as numbered migrations per database. Each runs once, in order,
in its own transaction. A change to the schema is a new migration in both
lists, written in each database's types."""

from __future__ import annotations


def _link_state(row: str) -> str:
    """A link row's state for ``link_counts``, from what its columns say for good
    (time-dependent states, such as expiry, cannot be kept by triggers)."""
    return f"CASE WHEN {row}.refresh_failure_reason = '' THEN 'active' ELSE 'refresh_failed' END"


def _count_link(row: str, change: str) -> str:
    return (f"INSERT INTO link_counts (provider_id, state, links) "
            f"VALUES ({row}.provider_id, {_link_state(row)}, {change}) "
            f"ON CONFLICT (provider_id, state) DO UPDATE SET links = link_counts.links + {change};")



# SQLite's history, from the first release on: files made by any earlier
# version are brought up to date step by step. Times are ISO 8601 text in
# UTC with microseconds, so that they sort as text.
SQLITE_MIGRATIONS: list[str] = [
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        secret_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT
    );
    CREATE INDEX api_keys_user_id ON api_keys(user_id);
    CREATE TABLE external_auth_links (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        provider_id TEXT NOT NULL,
        access_token TEXT NOT NULL,
        refresh_token TEXT NOT NULL DEFAULT '',
        expires_at TEXT,
        extra TEXT NOT NULL DEFAULT '{}',
        refresh_failure_reason TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (user_id, provider_id)
    ) WITHOUT ROWID;
    """,
    """
    CREATE TABLE oauth_states (
        state_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        provider_id TEXT NOT NULL,
        code_verifier TEXT NOT NULL DEFAULT '',
        redirect TEXT NOT NULL DEFAULT '',
        expires_at TEXT NOT NULL
    );
    CREATE INDEX oauth_states_expires_at ON oauth_states(expires_at);
    """,
    """
    ALTER TABLE external_auth_links ADD COLUMN token_key_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE external_auth_links ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE external_auth_links ADD COLUMN refresh_failed_at TEXT;
    ALTER TABLE external_auth_links ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE external_auth_links ADD COLUMN lease_until TEXT;
    CREATE INDEX external_auth_links_token_key_id ON external_auth_links(token_key_id);
    CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        user_id INTEGER,
        user_name TEXT NOT NULL DEFAULT '',
        provider_id TEXT NOT NULL DEFAULT '',
        action TEXT NOT NULL,
        outcome TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '',
        request_id TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_events_at ON audit_events(at);
    CREATE INDEX audit_events_user_id ON audit_events(user_id, at);
    CREATE INDEX audit_events_provider_id ON audit_events(provider_id, at);
    """,
    """
    ALTER TABLE external_auth_links ADD COLUMN token_lifetime INTEGER;
    ALTER TABLE external_auth_links ADD COLUMN refresh_retry_at TEXT;
    ALTER TABLE external_auth_links ADD COLUMN refresh_retry_reason TEXT NOT NULL DEFAULT '';
    CREATE TABLE provider_refusals (
        provider_id TEXT PRIMARY KEY,
        client_fingerprint TEXT NOT NULL,
        reason TEXT NOT NULL,
        failures INTEGER NOT NULL,
        refused_at TEXT NOT NULL,
        retry_at TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE pending_revocations (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL,
        user_name TEXT NOT NULL DEFAULT '',
        provider_id TEXT NOT NULL,
        access_token TEXT NOT NULL,
        refresh_token TEXT NOT NULL DEFAULT '',
        token_key_id TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL,
        created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        expires_at TEXT NOT NULL
    );
    CREATE INDEX pending_revocations_next_attempt_at ON pending_revocations(next_attempt_at);
    CREATE INDEX pending_revocations_user ON pending_revocations(user_id, provider_id);
    """,
    """
    CREATE TABLE device_authorizations (
        code_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        provider_id TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX device_authorizations_expires_at ON device_authorizations(expires_at);
    ALTER TABLE oauth_states ADD COLUMN verifier_key_id TEXT NOT NULL DEFAULT '';
    """,
    # Links per provider and state, kept by triggers, so that the metrics
    # listener reads a few rows per scrape instead of counting every link.
    f"""
    CREATE TABLE link_counts (
        provider_id TEXT NOT NULL,
        state TEXT NOT NULL,
        links INTEGER NOT NULL,
        PRIMARY KEY (provider_id, state)
    ) WITHOUT ROWID;
    INSERT INTO link_counts (provider_id, state, links)
        SELECT provider_id, {_link_state("external_auth_links")}, COUNT(*)
        FROM external_auth_links GROUP BY 1, 2;
    CREATE TRIGGER link_counts_insert AFTER INSERT ON external_auth_links BEGIN
        {_count_link("NEW", "1")}
    END;
    CREATE TRIGGER link_counts_delete AFTER DELETE ON external_auth_links BEGIN
        {_count_link("OLD", "-1")}
    END;
    CREATE TRIGGER link_counts_update
    AFTER UPDATE OF provider_id, refresh_failure_reason ON external_auth_links
    WHEN OLD.provider_id != NEW.provider_id
        OR (OLD.refresh_failure_reason = '') != (NEW.refresh_failure_reason = '')
    BEGIN
        {_count_link("OLD", "-1")}
        {_count_link("NEW", "1")}
    END;
""",
    """
    CREATE TABLE agent_tokens (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL DEFAULT '',
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        expires_at TEXT
    );
    CREATE INDEX agent_tokens_user_id ON agent_tokens(user_id);
    CREATE INDEX external_auth_links_updated_at ON external_auth_links(updated_at);
    """,
]




# PostgreSQL's history starts at the schema SQLite reached by its own steps:
# the same tables and columns, in PostgreSQL's types (times are timestamptz).
POSTGRES_MIGRATIONS: list[str] = [
    """
    CREATE TABLE users (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        secret_hash TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ
    );
    CREATE INDEX api_keys_user_id ON api_keys(user_id);
    CREATE TABLE external_auth_links (
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        provider_id TEXT NOT NULL,
        access_token TEXT NOT NULL,
        refresh_token TEXT NOT NULL DEFAULT '',
        expires_at TIMESTAMPTZ,
        extra TEXT NOT NULL DEFAULT '{}',
        refresh_failure_reason TEXT NOT NULL DEFAULT '',
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        token_key_id TEXT NOT NULL DEFAULT '',
        version BIGINT NOT NULL DEFAULT 1,
        refresh_failed_at TIMESTAMPTZ,
        lease_owner TEXT NOT NULL DEFAULT '',
        lease_until TIMESTAMPTZ,
        token_lifetime BIGINT,
        refresh_retry_at TIMESTAMPTZ,
        refresh_retry_reason TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (user_id, provider_id)
    );
    CREATE INDEX external_auth_links_token_key_id ON external_auth_links(token_key_id);
    CREATE TABLE oauth_states (
        state_hash TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        provider_id TEXT NOT NULL,
        code_verifier TEXT NOT NULL DEFAULT '',
        redirect TEXT NOT NULL DEFAULT '',
        expires_at TIMESTAMPTZ NOT NULL,
        verifier_key_id TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX oauth_states_expires_at ON oauth_states(expires_at);
    CREATE TABLE audit_events (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at TIMESTAMPTZ NOT NULL,
        user_id BIGINT,
        user_name TEXT NOT NULL DEFAULT '',
        provider_id TEXT NOT NULL DEFAULT '',
        action TEXT NOT NULL,
        outcome TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '',
        request_id TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_events_at ON audit_events(at);
    CREATE INDEX audit_events_user_id ON audit_events(user_id, at);
    CREATE INDEX audit_events_provider_id ON audit_events(provider_id, at);
    CREATE TABLE provider_refusals (
        provider_id TEXT PRIMARY KEY,
        client_fingerprint TEXT NOT NULL,
        reason TEXT NOT NULL,
        failures INTEGER NOT NULL,
        refused_at TIMESTAMPTZ NOT NULL,
        retry_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE pending_revocations (
        id TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL,
        user_name TEXT NOT NULL DEFAULT '',
        provider_id TEXT NOT NULL,
        access_token TEXT NOT NULL,
        refresh_token TEXT NOT NULL DEFAULT '',
        token_key_id TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TIMESTAMPTZ NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX pending_revocations_next_attempt_at ON pending_revocations(next_attempt_at);
    CREATE INDEX pending_revocations_user ON pending_revocations(user_id, provider_id);
    CREATE TABLE device_authorizations (
        code_hash TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        provider_id TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX device_authorizations_expires_at ON device_authorizations(expires_at);
    """,
    f"""
    CREATE TABLE link_counts (
        provider_id TEXT NOT NULL,
        state TEXT NOT NULL,
        links BIGINT NOT NULL,
        PRIMARY KEY (provider_id, state)
    );
    INSERT INTO link_counts (provider_id, state, links)
        SELECT provider_id, {_link_state("external_auth_links")}, COUNT(*)
        FROM external_auth_links GROUP BY 1, 2;
    CREATE FUNCTION count_links() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        -- An update moves a link from one count to another: the two rows are
        -- taken in one order, so that two updates moving links the opposite
        -- ways never wait for each other (a deadlock).
        IF TG_OP = 'UPDATE' AND (OLD.provider_id, {_link_state("OLD")})
                > (NEW.provider_id, {_link_state("NEW")}) THEN
            {_count_link("NEW", "1")}
            {_count_link("OLD", "-1")}
            RETURN NULL;
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            {_count_link("OLD", "-1")}
        END IF;
        IF TG_OP IN ('UPDATE', 'INSERT') THEN
            {_count_link("NEW", "1")}
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER link_counts_insert_delete AFTER INSERT OR DELETE ON external_auth_links
        FOR EACH ROW EXECUTE FUNCTION count_links();
    CREATE TRIGGER link_counts_update
        AFTER UPDATE OF provider_id, refresh_failure_reason ON external_auth_links
        FOR EACH ROW WHEN (OLD.provider_id IS DISTINCT FROM NEW.provider_id
            OR (OLD.refresh_failure_reason = '') IS DISTINCT FROM (NEW.refresh_failure_reason = ''))
        EXECUTE FUNCTION count_links();
""",
    """
    CREATE TABLE agent_tokens (
        id TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL DEFAULT '',
        token_hash TEXT NOT NULL UNIQUE,
        created_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ
    );
    CREATE INDEX agent_tokens_user_id ON agent_tokens(user_id);
    CREATE INDEX external_auth_links_updated_at ON external_auth_links(updated_at);
    """,
]
