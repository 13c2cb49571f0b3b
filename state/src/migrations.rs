//! Versioned schema migrations, tracked in `PRAGMA user_version`. Append new steps; never
//! edit a released one.

use std::path::Path;

use rusqlite::Connection;

use crate::error::{Result, StateError};

/// Each step brings the schema from version `i` to `i + 1`.
pub(crate) const STEPS: &[&str] = &[
    // 1: identities, grants, tokens, login attempts, settings, audit log.
    "
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE users (
        name          TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        password_changed_at INTEGER NOT NULL
    );
    CREATE TABLE groups (
        name        TEXT PRIMARY KEY,
        description TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO groups (name, description) VALUES
        ('dataread', 'may read public tables'),
        ('data-private', 'may read public and private tables'),
        ('data-ops', 'administrators: users, grants, jobs and all data');
    CREATE TABLE memberships (
        user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        group_name TEXT NOT NULL REFERENCES groups (name),
        PRIMARY KEY (user_name, group_name)
    );
    CREATE TABLE grants (
        group_name     TEXT NOT NULL REFERENCES groups (name),
        schema_name    TEXT NOT NULL,
        table_name     TEXT NOT NULL DEFAULT '*',
        row_filter     TEXT,
        hidden_columns TEXT NOT NULL DEFAULT '',
        created_at     INTEGER NOT NULL,
        created_by     TEXT NOT NULL,
        PRIMARY KEY (group_name, schema_name, table_name)
    );
    CREATE TABLE api_tokens (
        id           TEXT PRIMARY KEY,
        user_name    TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        label        TEXT NOT NULL,
        secret_hash  TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        last_used_at INTEGER,
        revoked_at   INTEGER
    );
    CREATE TABLE revoked_tokens (
        jti        TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE login_attempts (
        at        INTEGER NOT NULL,
        user_name TEXT NOT NULL,
        address   TEXT NOT NULL,
        ok        INTEGER NOT NULL
    );
    CREATE INDEX login_attempts_user ON login_attempts (user_name, at);
    CREATE INDEX login_attempts_address ON login_attempts (address, at);
    CREATE TABLE audit_log (
        id          INTEGER PRIMARY KEY,
        at_ms       INTEGER NOT NULL,
        user_name   TEXT NOT NULL,
        surface     TEXT NOT NULL,
        request_id  TEXT NOT NULL,
        sql         TEXT NOT NULL,
        tables      TEXT NOT NULL,
        rows        INTEGER NOT NULL,
        bytes       INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        outcome     TEXT NOT NULL,
        error       TEXT
    );
    CREATE INDEX audit_log_user ON audit_log (user_name, at_ms);

    -- identity_version changes with every change that affects who may do what, so servers
    -- can cache identities and reload only when it moves (also for changes made by the CLI).
    INSERT INTO settings (key, value) VALUES ('identity_version', '0');
    CREATE TRIGGER users_insert_bump AFTER INSERT ON users BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER users_update_bump AFTER UPDATE ON users BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER users_delete_bump AFTER DELETE ON users BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER memberships_insert_bump AFTER INSERT ON memberships BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER memberships_delete_bump AFTER DELETE ON memberships BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER grants_insert_bump AFTER INSERT ON grants BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER grants_update_bump AFTER UPDATE ON grants BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER grants_delete_bump AFTER DELETE ON grants BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER revoked_tokens_insert_bump AFTER INSERT ON revoked_tokens BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER api_tokens_insert_bump AFTER INSERT ON api_tokens BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER api_tokens_delete_bump AFTER DELETE ON api_tokens BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER api_tokens_update_bump AFTER UPDATE OF revoked_at ON api_tokens BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    ",
    // 2: connector sync state per table, and the run history of jobs.
    "
    CREATE TABLE sync_state (
        source        TEXT NOT NULL,
        table_id      TEXT NOT NULL,
        schema_name   TEXT NOT NULL,
        table_name    TEXT NOT NULL,
        strategy      TEXT NOT NULL,
        last_sync     INTEGER,
        last_attempt  INTEGER NOT NULL,
        rows          INTEGER NOT NULL DEFAULT 0,
        columns       INTEGER NOT NULL DEFAULT 0,
        bytes         INTEGER NOT NULL DEFAULT 0,
        uncompressed_bytes INTEGER NOT NULL DEFAULT 0,
        duration_ms   INTEGER NOT NULL DEFAULT 0,
        outcome       TEXT NOT NULL,
        error         TEXT,
        PRIMARY KEY (source, table_id)
    );
    CREATE TABLE job_runs (
        id           INTEGER PRIMARY KEY,
        job          TEXT NOT NULL,
        trigger_kind TEXT NOT NULL,
        started_ms   INTEGER NOT NULL,
        finished_ms  INTEGER,
        outcome      TEXT NOT NULL,
        summary      TEXT NOT NULL DEFAULT '',
        error        TEXT
    );
    CREATE INDEX job_runs_job ON job_runs (job, started_ms);
    ",
    // 3: table profiles.
    "
    CREATE TABLE profiles (
        schema_name  TEXT NOT NULL,
        table_name   TEXT NOT NULL,
        data_version TEXT NOT NULL,
        computed_at  INTEGER NOT NULL,
        duration_ms  INTEGER NOT NULL,
        profile      TEXT NOT NULL,
        stale        INTEGER NOT NULL DEFAULT 0,
        error        TEXT,
        PRIMARY KEY (schema_name, table_name)
    );
    ",
    // 4: analyst sync: file digests (by path, size and modification time) and per-user
    // settings.
    "
    CREATE TABLE file_digests (
        path      TEXT PRIMARY KEY,
        size      INTEGER NOT NULL,
        mtime_ns  INTEGER NOT NULL,
        sha256    TEXT NOT NULL
    );
    CREATE TABLE sync_settings (
        user_name  TEXT PRIMARY KEY,
        settings   TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    ",
    // 5: accounts. An account has a stable id (never reused), a username, an optional email
    // (unique, case-insensitive), a display name and picture, a state (invited, active,
    // disabled) and an optional password. Memberships, API tokens, sync settings and the audit
    // log are keyed by the id, so a changed email or a re-created username inherits nothing.
    // Every username-only account of version 4 becomes an active account with its password.
    "
    CREATE TABLE accounts (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        username      TEXT NOT NULL UNIQUE,
        email         TEXT UNIQUE COLLATE NOCASE,
        display_name  TEXT NOT NULL DEFAULT '',
        picture_url   TEXT,
        state         TEXT NOT NULL DEFAULT 'active'
                      CHECK (state IN ('invited', 'active', 'disabled')),
        password_hash TEXT,
        created_at    INTEGER NOT NULL,
        password_changed_at INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    INSERT INTO accounts (username, password_hash, created_at, password_changed_at, updated_at)
        SELECT name, password_hash, created_at, password_changed_at, created_at
        FROM users ORDER BY created_at, name;
    CREATE TABLE account_groups (
        account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        group_name TEXT NOT NULL REFERENCES groups (name),
        PRIMARY KEY (account_id, group_name)
    );
    INSERT INTO account_groups (account_id, group_name)
        SELECT a.id, m.group_name FROM memberships m JOIN accounts a ON a.username = m.user_name;
    CREATE TABLE account_tokens (
        id           TEXT PRIMARY KEY,
        account_id   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        label        TEXT NOT NULL,
        secret_hash  TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        last_used_at INTEGER,
        revoked_at   INTEGER
    );
    INSERT INTO account_tokens (id, account_id, label, secret_hash, created_at, expires_at,
                                last_used_at, revoked_at)
        SELECT t.id, a.id, t.label, t.secret_hash, t.created_at, t.expires_at, t.last_used_at,
               t.revoked_at
        FROM api_tokens t JOIN accounts a ON a.username = t.user_name;
    CREATE TABLE account_sync_settings (
        account_id INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
        settings   TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    INSERT INTO account_sync_settings (account_id, settings, updated_at)
        SELECT a.id, s.settings, s.updated_at
        FROM sync_settings s JOIN accounts a ON a.username = s.user_name;
    DROP TABLE sync_settings;
    DROP TABLE api_tokens;
    DROP TABLE memberships;
    DROP TABLE users;
    ALTER TABLE audit_log ADD COLUMN account_id INTEGER;
    UPDATE audit_log SET account_id = (SELECT id FROM accounts WHERE username = audit_log.user_name);
    CREATE INDEX audit_log_account ON audit_log (account_id, at_ms);

    -- Who changed which account, when and how (invite, disable, groups, …).
    CREATE TABLE account_changes (
        id         INTEGER PRIMARY KEY,
        at_ms      INTEGER NOT NULL,
        actor_id   INTEGER,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        account_id INTEGER,
        account    TEXT NOT NULL,
        detail     TEXT NOT NULL DEFAULT '',
        request_id TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX account_changes_account ON account_changes (account_id, at_ms);

    CREATE TRIGGER accounts_insert_bump AFTER INSERT ON accounts BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER accounts_update_bump AFTER UPDATE ON accounts BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER accounts_delete_bump AFTER DELETE ON accounts BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER account_groups_insert_bump AFTER INSERT ON account_groups BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER account_groups_delete_bump AFTER DELETE ON account_groups BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER account_tokens_insert_bump AFTER INSERT ON account_tokens BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER account_tokens_delete_bump AFTER DELETE ON account_tokens BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    CREATE TRIGGER account_tokens_update_bump AFTER UPDATE OF revoked_at ON account_tokens BEGIN
        UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    END;
    UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version';
    ",
    // 6: passwords by email: one-time set-up and reset links (only their SHA-256 is kept),
    // and the requests for them (rate limited per account and per client address).
    "
    CREATE TABLE password_tokens (
        token_hash TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        purpose    TEXT NOT NULL CHECK (purpose IN ('setup', 'reset')),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER
    );
    CREATE INDEX password_tokens_account ON password_tokens (account_id);
    CREATE TABLE password_requests (
        at      INTEGER NOT NULL,
        account TEXT NOT NULL,
        address TEXT NOT NULL
    );
    CREATE INDEX password_requests_account ON password_requests (account, at);
    CREATE INDEX password_requests_address ON password_requests (address, at);
    ",
    // 7: browser sessions: a public id, the SHA-256 of the cookie's secret and of the CSRF
    // token, idle and absolute expiry.
    "
    CREATE TABLE browser_sessions (
        id           TEXT PRIMARY KEY,
        account_id   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        secret_hash  TEXT NOT NULL,
        csrf_hash    TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        address      TEXT NOT NULL DEFAULT '',
        user_agent   TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX browser_sessions_account ON browser_sessions (account_id);
    ",
    // 8: OpenID Connect sign-ins under way: one row per authorization request, taken (and
    // deleted) by its callback, so a replayed `state` finds nothing.
    "
    CREATE TABLE oidc_flows (
        state_hash TEXT PRIMARY KEY,
        provider   TEXT NOT NULL,
        nonce      TEXT NOT NULL,
        verifier   TEXT NOT NULL,
        next       TEXT NOT NULL DEFAULT '/',
        created_at INTEGER NOT NULL
    );
    ",
    // 9: command-line sign-ins through the browser: a one-time code (its SHA-256) for an
    // account, redeemed with the PKCE verifier of its challenge.
    "
    CREATE TABLE login_codes (
        code_hash  TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        challenge  TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    ",
    // 10: analysts' pulls as the server saw them: a manifest fetch and the file requests
    // that follow it (times in Unix milliseconds).
    "
    CREATE TABLE analyst_pulls (
        id              INTEGER PRIMARY KEY,
        account_id      INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        started_at      INTEGER NOT NULL,
        last_at         INTEGER NOT NULL,
        tables          INTEGER NOT NULL DEFAULT 0,
        manifest_files  INTEGER NOT NULL DEFAULT 0,
        manifest_bytes  INTEGER NOT NULL DEFAULT 0,
        files_sent      INTEGER NOT NULL DEFAULT 0,
        bytes_sent      INTEGER NOT NULL DEFAULT 0,
        files_unchanged INTEGER NOT NULL DEFAULT 0,
        errors          INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT
    );
    CREATE INDEX analyst_pulls_account ON analyst_pulls (account_id, started_at);
    ",
    // 11: what a job run logged, kept with the run.
    "
    ALTER TABLE job_runs ADD COLUMN log TEXT NOT NULL DEFAULT '';
    ",
    // 12: push sources (webhooks): every accepted delivery, queued until processed (its raw
    // body is a file under `raw/<source>/events/`), unique per delivery id so a retried
    // delivery is recognised; and what was last written for each item (an issue).
    "
    CREATE TABLE push_events (
        id              INTEGER PRIMARY KEY,
        source          TEXT NOT NULL,
        delivery        TEXT NOT NULL,
        received_ms     INTEGER NOT NULL,
        event           TEXT NOT NULL,
        items           TEXT NOT NULL,
        raw_path        TEXT NOT NULL,
        state           TEXT NOT NULL DEFAULT 'queued',
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        error           TEXT,
        done_ms         INTEGER,
        UNIQUE (source, delivery)
    );
    CREATE INDEX push_events_queue ON push_events (source, state, next_attempt_ms);
    CREATE TABLE push_items (
        source     TEXT NOT NULL,
        item       TEXT NOT NULL,
        item_id    TEXT,
        partition  TEXT,
        version    TEXT,
        open       INTEGER NOT NULL DEFAULT 0,
        synced_ms  INTEGER,
        deleted_ms INTEGER,
        parked_ms  INTEGER,
        failures   INTEGER NOT NULL DEFAULT 0,
        error      TEXT,
        PRIMARY KEY (source, item)
    );
    ",
    // 13: notifications: analysts' alert scripts (the current version of each; the content
    // lives in a file named by its SHA-256), every run, the cooldown of each script, the
    // notifications sent, Telegram chats linked to accounts and the codes that link them,
    // and the desktop app's tokens.
    "
    CREATE TABLE notify_scripts (
        account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        name       TEXT NOT NULL,
        sha256     TEXT NOT NULL,
        bytes      INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        schedule   TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (account_id, name)
    );
    CREATE TABLE notify_runs (
        id          INTEGER PRIMARY KEY,
        account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        script      TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        trigger     TEXT NOT NULL,
        started_ms  INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL DEFAULT 0,
        exit_code   INTEGER,
        outcome     TEXT NOT NULL,
        reason      TEXT,
        stdout      TEXT NOT NULL DEFAULT '',
        stderr      TEXT NOT NULL DEFAULT '',
        notification TEXT,
        deliveries  TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX notify_runs_account ON notify_runs (account_id, script, id);
    CREATE TABLE notify_cooldowns (
        account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        script     TEXT NOT NULL,
        last_sent_ms INTEGER NOT NULL,
        cooldown_s INTEGER NOT NULL,
        PRIMARY KEY (account_id, script)
    );
    CREATE TABLE notifications (
        id         TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        script     TEXT NOT NULL,
        run_id     INTEGER,
        title      TEXT NOT NULL,
        message    TEXT NOT NULL,
        image      TEXT,
        data       TEXT NOT NULL DEFAULT '{}',
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX notifications_account ON notifications (account_id, created_ms);
    CREATE TABLE telegram_links (
        account_id INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
        chat_id    INTEGER,
        chat_name  TEXT NOT NULL DEFAULT '',
        linked_ms  INTEGER,
        unlinked_ms INTEGER,
        unlinked_reason TEXT
    );
    CREATE UNIQUE INDEX telegram_links_chat ON telegram_links (chat_id);
    CREATE TABLE telegram_codes (
        code_hash  TEXT PRIMARY KEY,
        chat_id    INTEGER NOT NULL,
        chat_name  TEXT NOT NULL DEFAULT '',
        expires_ms INTEGER NOT NULL
    );
    CREATE TABLE desktop_tokens (
        id         TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        label      TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    );
    ",
    // 14: corporate memory. Each account's notes (which version was last collected, and why
    // the last attempt failed), the knowledge items, which accounts' notes each came from (with
    // what the screen found there), votes, the audit of moderation and authors' reviews, the
    // collector's runs and the session transcripts stored centrally.
    "
    CREATE TABLE memory_notes (
        account_id      INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
        collected_sha256 TEXT,
        collected_ms    INTEGER,
        extractor       TEXT,
        attempted_ms    INTEGER,
        error           TEXT
    );
    CREATE TABLE memory_items (
        id           TEXT PRIMARY KEY,
        title        TEXT NOT NULL,
        content      TEXT NOT NULL,
        category     TEXT NOT NULL,
        tags         TEXT NOT NULL DEFAULT '[]',
        state        TEXT NOT NULL DEFAULT 'held'
                     CHECK (state IN ('published', 'held', 'retired')),
        pinned       INTEGER NOT NULL DEFAULT 0,
        extracted_ms INTEGER NOT NULL,
        updated_ms   INTEGER NOT NULL,
        edited_by    INTEGER REFERENCES accounts (id) ON DELETE SET NULL,
        edited_ms    INTEGER,
        retired_by   INTEGER REFERENCES accounts (id) ON DELETE SET NULL,
        retired_ms   INTEGER
    );
    CREATE INDEX memory_items_state ON memory_items (state, updated_ms);
    CREATE TABLE memory_sources (
        item_id    TEXT NOT NULL REFERENCES memory_items (id) ON DELETE CASCADE,
        account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        findings   TEXT NOT NULL DEFAULT '[]',
        private    INTEGER NOT NULL DEFAULT 0,
        released   INTEGER NOT NULL DEFAULT 0,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms  INTEGER NOT NULL,
        PRIMARY KEY (item_id, account_id)
    );
    CREATE INDEX memory_sources_account ON memory_sources (account_id);
    CREATE TABLE memory_votes (
        item_id    TEXT NOT NULL REFERENCES memory_items (id) ON DELETE CASCADE,
        account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        vote       INTEGER NOT NULL CHECK (vote IN (-1, 1)),
        voted_ms   INTEGER NOT NULL,
        PRIMARY KEY (item_id, account_id)
    );
    CREATE INDEX memory_votes_account ON memory_votes (account_id);
    CREATE TABLE memory_moderation (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id    TEXT NOT NULL,
        actor_id   INTEGER,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        detail     TEXT NOT NULL DEFAULT '',
        request_id TEXT NOT NULL DEFAULT '',
        at_ms      INTEGER NOT NULL
    );
    CREATE INDEX memory_moderation_item ON memory_moderation (item_id, id);
    CREATE TABLE memory_collections (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        started_ms  INTEGER NOT NULL,
        finished_ms INTEGER NOT NULL,
        accounts    INTEGER NOT NULL,
        changed     INTEGER NOT NULL,
        failed      INTEGER NOT NULL,
        extractor   TEXT NOT NULL
    );
    CREATE TABLE memory_transcripts (
        account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        sha256     TEXT NOT NULL,
        name       TEXT NOT NULL,
        bytes      INTEGER NOT NULL,
        stored_ms  INTEGER NOT NULL,
        PRIMARY KEY (account_id, sha256)
    );
    ",
    // 15: assistants (MCP). An API token may have a scope (none: the whole API; 'assistant':
    // only the MCP endpoint); an audit entry may name the MCP tool that ran it; the OAuth 2.1
    // clients that registered themselves (RFC 7591: public clients, their redirect URIs as a
    // JSON array, the address they registered from, for the rate limit) and the authorization
    // codes issued to them (only the code's SHA-256; single use: a second use finds `used_at`
    // set and revokes the token issued for the first, `token_id`).
    "
    ALTER TABLE account_tokens ADD COLUMN scope TEXT;
    ALTER TABLE audit_log ADD COLUMN tool TEXT;
    CREATE TABLE oauth_clients (
        client_id     TEXT PRIMARY KEY,
        client_name   TEXT NOT NULL,
        redirect_uris TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        last_used_at  INTEGER,
        address       TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX oauth_clients_address ON oauth_clients (address, created_at);
    CREATE INDEX oauth_clients_created ON oauth_clients (created_at);
    CREATE TABLE oauth_codes (
        code_hash      TEXT PRIMARY KEY,
        client_id      TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
        account_id     INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        redirect_uri   TEXT NOT NULL,
        code_challenge TEXT NOT NULL,
        scope          TEXT NOT NULL,
        resource       TEXT,
        created_at     INTEGER NOT NULL,
        expires_at     INTEGER NOT NULL,
        used_at        INTEGER,
        token_id       TEXT
    );
    CREATE INDEX oauth_codes_expires ON oauth_codes (expires_at);
    ",
];

pub(crate) fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let known = STEPS.len() as i64;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > known {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    for (i, step) in STEPS.iter().enumerate().skip(version as usize) {
        // One transaction per step: a crash leaves the previous version intact. IMMEDIATE
        // takes the write lock first, so two processes starting together migrate once.
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current > i as i64 {
            conn.execute_batch("COMMIT")?;
            continue;
        }
        let applied = conn
            .execute_batch(step)
            .and_then(|()| conn.pragma_update(None, "user_version", i as i64 + 1));
        match applied {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
        tracing::info!(version = i + 1, path = %path.display(), "state database migrated");
    }
    Ok(())
}
