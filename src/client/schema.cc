#include "client/internal/schema.h"

#include <iterator>
#include <string>

#include "client/internal/db.h"

namespace parley::client::internal {
namespace {

// Version 1: the initial schema. SQLCipher 3.4 is SQLite 3.15: no STRICT tables and no UPSERT,
// so types are enforced by CHECKs where they matter and writes use UPDATE-then-INSERT or
// INSERT OR REPLACE (the latter only on tables no foreign key points at).
constexpr const char* kSchemaV1 = R"sql(
-- The registered account: exactly one row once registered. Secrets are BLOBs (the whole file is
-- encrypted by SQLCipher).
CREATE TABLE account (
  id                INTEGER PRIMARY KEY CHECK (id = 1),
  name              TEXT    NOT NULL,
  server_address    TEXT    NOT NULL,
  server_host       TEXT    NOT NULL,
  server_port       TEXT    NOT NULL,
  server_pin        TEXT    NOT NULL,
  server_ws_path    TEXT    NOT NULL,
  device_id         INTEGER NOT NULL,
  registration_id   INTEGER NOT NULL,
  identity_private  BLOB    NOT NULL,                 -- 32-byte X25519 scalar
  auth_seed         BLOB    NOT NULL,                 -- 32-byte Ed25519 seed
  next_pre_key_id   INTEGER NOT NULL,
  signed_pre_key_id INTEGER NOT NULL
);

-- Peer device identities (the IdentityKeyStore) and what the user knows about them.
CREATE TABLE contacts (
  name             TEXT    NOT NULL,
  device_id        INTEGER NOT NULL,
  identity_key     BLOB    NOT NULL,                  -- 33-byte serialized public key
  verified         INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1)),
  identity_changed INTEGER NOT NULL DEFAULT 0 CHECK (identity_changed IN (0, 1)),
  first_seen_ms    INTEGER NOT NULL,
  PRIMARY KEY (name, device_id)
) WITHOUT ROWID;

-- Protocol records, serialized by src/protocol (each carries its own format version).
CREATE TABLE pre_keys (
  id     INTEGER PRIMARY KEY,
  record BLOB    NOT NULL
);
CREATE TABLE signed_pre_keys (
  id     INTEGER PRIMARY KEY,
  record BLOB    NOT NULL
);
CREATE TABLE sessions (
  name      TEXT    NOT NULL,
  device_id INTEGER NOT NULL,
  record    BLOB    NOT NULL,
  PRIMARY KEY (name, device_id)
) WITHOUT ROWID;
CREATE TABLE sender_keys (
  group_id      TEXT    NOT NULL,
  sender_name   TEXT    NOT NULL,
  sender_device INTEGER NOT NULL,
  record        BLOB    NOT NULL,
  PRIMARY KEY (group_id, sender_name, sender_device)
) WITHOUT ROWID;

-- Messages waiting to be sent, plaintext: they are encrypted at send time, so a retry after a
-- session change uses the current session.
CREATE TABLE outbox (
  id                 INTEGER PRIMARY KEY,
  client_message_id  BLOB    NOT NULL UNIQUE CHECK (length(client_message_id) = 16),
  recipient          TEXT    NOT NULL,
  payload            BLOB    NOT NULL,
  created_ms         INTEGER NOT NULL,
  attempts           INTEGER NOT NULL DEFAULT 0,
  next_attempt_ms    INTEGER NOT NULL
);
CREATE INDEX outbox_by_due ON outbox(next_attempt_ms);

-- The history log. server_id is NULL for outgoing messages; UNIQUE so that an envelope the
-- server delivers twice is stored once (NULLs never collide).
CREATE TABLE messages (
  id            INTEGER PRIMARY KEY,
  conversation  TEXT    NOT NULL,
  direction     TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
  sender_name   TEXT    NOT NULL,
  sender_device INTEGER NOT NULL,
  server_ms     INTEGER NOT NULL,
  local_ms      INTEGER NOT NULL,
  body          BLOB    NOT NULL,
  status        TEXT    NOT NULL CHECK (status IN ('sent', 'delivered', 'read', 'failed')),
  error         TEXT,
  server_id     BLOB    UNIQUE
);
CREATE INDEX messages_by_conversation ON messages(conversation, id);

CREATE TABLE groups (
  id         BLOB    PRIMARY KEY CHECK (length(id) = 16),
  name       TEXT    NOT NULL,
  created_ms INTEGER NOT NULL,
  left_group INTEGER NOT NULL DEFAULT 0 CHECK (left_group IN (0, 1))
) WITHOUT ROWID;
CREATE TABLE group_members (
  group_id BLOB NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
  member   TEXT NOT NULL,
  PRIMARY KEY (group_id, member)
) WITHOUT ROWID;
)sql";

// Version 2: which of our sender-key chains each group member device has been sent.
constexpr const char* kSchemaV2 = R"sql(
CREATE TABLE sender_key_shares (
  group_id BLOB    NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
  member   TEXT    NOT NULL,
  device   INTEGER NOT NULL,
  key_id   INTEGER NOT NULL,
  PRIMARY KEY (group_id, member, device)
) WITHOUT ROWID;
-- The sender's content timestamp of each message: receipts name messages by it.
ALTER TABLE messages ADD COLUMN content_ts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_by_content_ts ON messages(conversation, content_ts);
)sql";

// Version 3: when we left a group, so that a stale update sent before the others knew cannot
// put us back in.
constexpr const char* kSchemaV3 = R"sql(
ALTER TABLE groups ADD COLUMN left_ms INTEGER NOT NULL DEFAULT 0;
)sql";

// Version 4: duplicate envelopes are recognised by the server ids of the last
// kRecentEnvelopes messages (read into memory from the newest rows) instead of a UNIQUE index
// over every message ever received: a random-key index dirties a different page for nearly
// every message stored.
constexpr const char* kSchemaV4 = R"sql(
CREATE TABLE messages_v4 (
  id            INTEGER PRIMARY KEY,
  conversation  TEXT    NOT NULL,
  direction     TEXT    NOT NULL CHECK (direction IN ('in', 'out')),
  sender_name   TEXT    NOT NULL,
  sender_device INTEGER NOT NULL,
  server_ms     INTEGER NOT NULL,
  local_ms      INTEGER NOT NULL,
  body          BLOB    NOT NULL,
  status        TEXT    NOT NULL CHECK (status IN ('sent', 'delivered', 'read', 'failed')),
  error         TEXT,
  server_id     BLOB,
  content_ts    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO messages_v4 SELECT id, conversation, direction, sender_name, sender_device, server_ms,
  local_ms, body, status, error, server_id, content_ts FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v4 RENAME TO messages;
CREATE INDEX messages_by_conversation ON messages(conversation, id);
CREATE INDEX messages_by_content_ts ON messages(conversation, content_ts);
)sql";

// Version 5: the ways to reach the server (docs/cli.md "transports"). `direct` (the account's
// own server address) always exists; it can be disabled but not removed. `link` is the
// canonical link text of the other kinds; `last_result` is '' (never tried), 'ok', or the error
// of the last attempt; `preferred` marks the last winner of a race (at most one row).
constexpr const char* kSchemaV5 = R"sql(
CREATE TABLE transports (
  id              INTEGER PRIMARY KEY,
  kind            TEXT    NOT NULL CHECK (kind IN ('direct', 'socks5', 'http', 'bridge', 'pt')),
  link            TEXT    NOT NULL,
  pt_binary       TEXT    NOT NULL DEFAULT '',
  enabled         INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
  preferred       INTEGER NOT NULL DEFAULT 0 CHECK (preferred IN (0, 1)),
  last_result     TEXT    NOT NULL DEFAULT '',
  last_attempt_ms INTEGER NOT NULL DEFAULT 0,
  last_success_ms INTEGER NOT NULL DEFAULT 0,
  UNIQUE (kind, link)
);
INSERT INTO transports (id, kind, link) VALUES (1, 'direct', '');
)sql";

struct Migration {
  std::int32_t version;  // user_version after this migration
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, kSchemaV1},
    {2, kSchemaV2},
    {3, kSchemaV3},
    {4, kSchemaV4},
    {5, kSchemaV5},
};

Result<std::int32_t> user_version(Db& db) {
  PARLEY_ASSIGN_OR_RETURN(Stmt stmt, db.prepare("PRAGMA user_version", "read schema version"));
  PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
  if (!row) return make_error(ErrorCode::kIo, "client store: read schema version: no row");
  return static_cast<std::int32_t>(stmt.column_int(0));
}

// Applies `m` if the database is exactly one version behind it, all in one transaction.
Status apply(Db& db, const Migration& m) {
  PARLEY_ASSIGN_OR_RETURN(Transaction tx, Transaction::begin(db));
  // Read under the write lock: a second process opening the same profile skips what the first
  // one applied.
  PARLEY_ASSIGN_OR_RETURN(std::int32_t version, user_version(db));
  if (version > latest_schema_version()) {
    return make_error(ErrorCode::kUnimplemented,
                      "client store: the profile schema (version " + std::to_string(version) +
                          ") is newer than this client supports (version " +
                          std::to_string(latest_schema_version()) + "); upgrade parley");
  }
  if (version >= m.version) return tx.commit();
  if (version != m.version - 1) {
    return make_error(ErrorCode::kInternal, "client store: migrations are not consecutive");
  }
  PARLEY_TRY(db.exec(m.sql, "apply migration " + std::to_string(m.version)));
  PARLEY_TRY(db.exec("PRAGMA user_version = " + std::to_string(m.version), "set schema version"));
  return tx.commit();
}

}  // namespace

std::int32_t latest_schema_version() { return kMigrations[std::size(kMigrations) - 1].version; }

Status migrate(Db& db) {
  for (const Migration& m : kMigrations) PARLEY_TRY(apply(db, m));
  return Status::ok();
}

}  // namespace parley::client::internal
