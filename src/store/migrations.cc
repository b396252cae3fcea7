#include "store/migrations.h"

#include <string>

#include "store/internal/sqlite_db.h"

namespace parley::store {
namespace {

// Version 1: the initial schema. STRICT tables reject values of the wrong type.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE accounts (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, even after deletion
  name        TEXT    NOT NULL,                    -- as registered
  folded_name TEXT    NOT NULL UNIQUE,             -- case-folded by the server: the unique key
  created_ms  INTEGER NOT NULL
) STRICT;

CREATE TABLE devices (
  account_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
  device_id       INTEGER NOT NULL,
  registration_id INTEGER NOT NULL,
  auth_public_key BLOB    NOT NULL,                -- Ed25519
  identity_key    BLOB    NOT NULL,
  spk_id          INTEGER NOT NULL,
  spk_public      BLOB    NOT NULL,
  spk_signature   BLOB    NOT NULL,
  created_ms      INTEGER NOT NULL,
  PRIMARY KEY (account_id, device_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE pre_keys (
  account_id INTEGER NOT NULL,
  device_id  INTEGER NOT NULL,
  key_id     INTEGER NOT NULL,
  public_key BLOB    NOT NULL,
  PRIMARY KEY (account_id, device_id, key_id),
  FOREIGN KEY (account_id, device_id) REFERENCES devices(account_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- One row per queued envelope. seq is AUTOINCREMENT: strictly increasing and never reused, so
-- it is the delivery order of every device queue.
CREATE TABLE envelopes (
  seq           INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id    INTEGER NOT NULL,
  device_id     INTEGER NOT NULL,
  server_id     BLOB    NOT NULL,
  timestamp_ms  INTEGER NOT NULL,
  source        TEXT    NOT NULL,
  source_device INTEGER NOT NULL,
  type          INTEGER NOT NULL,
  content       BLOB    NOT NULL,
  size          INTEGER NOT NULL,                  -- bytes counted against the queue limit
  stored_ms     INTEGER NOT NULL                   -- server clock when stored: drives expiry
) STRICT;
CREATE INDEX envelopes_by_device ON envelopes(account_id, device_id, seq);
CREATE INDEX envelopes_by_server_id ON envelopes(server_id);
CREATE INDEX envelopes_by_age ON envelopes(stored_ms);

-- Per-device queue totals, updated in the same transaction as envelopes, so that limit checks
-- are O(1). Invariant: count/bytes equal COUNT(*)/SUM(size) of the device's envelopes.
CREATE TABLE queue_counters (
  account_id INTEGER NOT NULL,
  device_id  INTEGER NOT NULL,
  count      INTEGER NOT NULL,
  bytes      INTEGER NOT NULL,
  PRIMARY KEY (account_id, device_id),
  FOREIGN KEY (account_id, device_id) REFERENCES devices(account_id, device_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE TABLE dedup (
  sender_account      INTEGER NOT NULL,
  sender_device       INTEGER NOT NULL,
  destination_account INTEGER NOT NULL,
  client_message_id   BLOB    NOT NULL,
  created_ms          INTEGER NOT NULL,
  PRIMARY KEY (sender_account, sender_device, destination_account, client_message_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX dedup_by_age ON dedup(created_ms);

CREATE TABLE invites (
  token      TEXT    PRIMARY KEY,
  expires_ms INTEGER NOT NULL,
  used       INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;

CREATE TABLE attachments (
  id         TEXT    PRIMARY KEY,                  -- 32 hex chars
  token_hash BLOB    NOT NULL,                     -- SHA-256 of the upload bearer token
  account_id INTEGER NOT NULL,
  size       INTEGER NOT NULL,
  have       INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX attachments_by_expiry ON attachments(expires_ms);
)sql";

// Version 2: account recovery (a user who lost a device re-registers the name with the
// recovery code shown at registration; only its SHA-256 is kept).
constexpr const char* kSchemaV2 = R"sql(
ALTER TABLE accounts ADD COLUMN recovery_hash BLOB;
)sql";

// Version 3: write volume. Every index whose key is random (envelopes by server id, dedup keys)
// made each operation dirty a different B-tree page, so every commit wrote megabytes of WAL.
// - envelopes: the store assigns seq (the rowid: an insert appends to the table) and writes it
//   into the first 8 bytes of the server id, so an ack deletes by primary key; the server-id
//   and age indexes go (expiry walks each queue from its oldest envelope instead).
//   Measured with parley-bench-store: clustering the table by (account, device, seq) made
//   draining a queue 5x cheaper but enqueueing 2x dearer (an insert into the middle of a B-tree
//   of 250-byte rows dirties and splits pages); enqueueing is the figure with a goal.
// - dedup: an append-only log (rowid order = insertion order); the store looks keys up in an
//   in-memory index built from it at open, and verifies a hit against the row.
// - meta: next_seq (the next seq to hand out, written with every batch that stores envelopes,
//   so a seq is not reused after the newest envelopes were deleted; but this migration takes it
//   from the largest seq left in envelopes, so seqs of version 2 envelopes acknowledged above it
//   are handed out again: harmless, docs/storage.md "Schema" says why) and legacy_max_seq
//   (envelopes up to it were stored before version 3: their server ids do not carry their seq,
//   so an ack of one looks within the device's queue).
constexpr const char* kSchemaV3 = R"sql(
CREATE TABLE meta (
  key   TEXT    PRIMARY KEY,
  value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO meta (key, value) SELECT 'legacy_max_seq', IFNULL(MAX(seq), 0) FROM envelopes;
INSERT INTO meta (key, value) SELECT 'next_seq', IFNULL(MAX(seq), 0) + 1 FROM envelopes;

CREATE TABLE envelopes_v3 (
  seq           INTEGER PRIMARY KEY,               -- assigned by the store, increasing
  account_id    INTEGER NOT NULL,
  device_id     INTEGER NOT NULL,
  server_id     BLOB    NOT NULL,                  -- big-endian seq (8 bytes) || 8 random bytes
  timestamp_ms  INTEGER NOT NULL,
  source        TEXT    NOT NULL,
  source_device INTEGER NOT NULL,
  type          INTEGER NOT NULL,
  content       BLOB    NOT NULL,
  size          INTEGER NOT NULL,
  stored_ms     INTEGER NOT NULL
) STRICT;
INSERT INTO envelopes_v3 SELECT seq, account_id, device_id, server_id, timestamp_ms, source,
  source_device, type, content, size, stored_ms FROM envelopes ORDER BY seq;
DROP TABLE envelopes;
ALTER TABLE envelopes_v3 RENAME TO envelopes;
CREATE INDEX envelopes_by_device ON envelopes(account_id, device_id, seq);

CREATE TABLE dedup_v3 (
  id                  INTEGER PRIMARY KEY,
  sender_account      INTEGER NOT NULL,
  sender_device       INTEGER NOT NULL,
  destination_account INTEGER NOT NULL,
  client_message_id   BLOB    NOT NULL,
  created_ms          INTEGER NOT NULL
) STRICT;
INSERT INTO dedup_v3 (sender_account, sender_device, destination_account, client_message_id,
  created_ms) SELECT sender_account, sender_device, destination_account, client_message_id,
  created_ms FROM dedup ORDER BY created_ms;
DROP TABLE dedup;
ALTER TABLE dedup_v3 RENAME TO dedup;
CREATE INDEX dedup_by_age ON dedup(created_ms);
)sql";

// Version 4: the store keeps every device queue in memory (which seqs, their sizes), rebuilt
// from the envelopes table at open (store/internal/queue_index.h). The index by device and the
// counter rows go: each commit rewrote the pages of every device it touched, about 2.4 page
// writes per message.
constexpr const char* kSchemaV4 = R"sql(
DROP INDEX envelopes_by_device;
DROP TABLE queue_counters;
)sql";

// Version 5: fewer page writes per message (docs/storage.md, "Write volume").
// - acked: an acknowledgement records the envelope's seq here (a small table: a page or two
//   per commit) instead of deleting the envelope's row, which dirtied one page per acknowledged
//   envelope (their rows lie among those of every other device). The store deletes the rows of
//   the oldest acknowledged envelopes a run at a time, and their seqs from this table; at open it
//   finishes what a crash interrupted (sqlite_ops.h, delete_acked).
// - dedup_by_age goes: the dedup log is in insertion order, so its expired keys are a prefix
//   of it (expiry deletes by rowid), and the index cost a page write per commit.
constexpr const char* kSchemaV5 = R"sql(
CREATE TABLE acked (
  seq INTEGER PRIMARY KEY
) STRICT;
DROP INDEX dedup_by_age;
)sql";

// Version 6: per-account attachment quota. create_attachment sums the declared sizes of the
// account's unexpired attachments before it inserts one; this index covers that query (account,
// then expiry, with the size), so the sum reads only the account's own entries.
constexpr const char* kSchemaV6 = R"sql(
CREATE INDEX attachments_by_account ON attachments(account_id, expires_ms, size);
)sql";

// Version 7: what each account's attachments take (bytes by their declared sizes, and slots),
// kept by triggers on every insert, update and delete, so that create_attachment reads one row
// (the sum over attachments_by_account cost a request 50-80 ms at a million one-byte slots).
// attachments_by_account stays: it finds the account's expired rows not yet deleted. (No
// INSERT OR REPLACE on attachments: its delete fires no trigger without recursive_triggers.)
constexpr const char* kSchemaV7 = R"sql(
CREATE TABLE attachment_usage (
  account_id INTEGER PRIMARY KEY,
  bytes INTEGER NOT NULL,
  slots INTEGER NOT NULL
) STRICT;
INSERT INTO attachment_usage (account_id, bytes, slots)
  SELECT account_id, SUM(size), COUNT(*) FROM attachments GROUP BY account_id;
CREATE TRIGGER attachment_usage_insert AFTER INSERT ON attachments BEGIN
  INSERT INTO attachment_usage (account_id, bytes, slots) VALUES (NEW.account_id, NEW.size, 1)
    ON CONFLICT (account_id) DO UPDATE SET bytes = bytes + NEW.size, slots = slots + 1;
END;
CREATE TRIGGER attachment_usage_delete AFTER DELETE ON attachments BEGIN
  UPDATE attachment_usage SET bytes = bytes - OLD.size, slots = slots - 1
    WHERE account_id = OLD.account_id;
  DELETE FROM attachment_usage WHERE account_id = OLD.account_id AND slots <= 0;
END;
CREATE TRIGGER attachment_usage_update AFTER UPDATE OF account_id, size ON attachments BEGIN
  UPDATE attachment_usage SET bytes = bytes - OLD.size, slots = slots - 1
    WHERE account_id = OLD.account_id;
  DELETE FROM attachment_usage WHERE account_id = OLD.account_id AND slots <= 0;
  INSERT INTO attachment_usage (account_id, bytes, slots) VALUES (NEW.account_id, NEW.size, 1)
    ON CONFLICT (account_id) DO UPDATE SET bytes = bytes + NEW.size, slots = slots + 1;
END;
)sql";

constexpr Migration kMigrations[] = {
    {1, kSchemaV1}, {2, kSchemaV2}, {3, kSchemaV3}, {4, kSchemaV4},
    {5, kSchemaV5}, {6, kSchemaV6}, {7, kSchemaV7},
};

Result<std::int32_t> user_version(internal::Db& db) {
  PARLEY_ASSIGN_OR_RETURN(internal::Stmt stmt, db.prepare("PRAGMA user_version", "read schema version"));
  PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
  if (!row) return make_error(ErrorCode::kIo, "store: read schema version: no row");
  return static_cast<std::int32_t>(stmt.column_int(0));
}

}  // namespace

std::span<const Migration> migrations() { return kMigrations; }

std::int32_t latest_schema_version() { return kMigrations[std::size(kMigrations) - 1].version; }

Status migrate(internal::Db& db) {
  for (const Migration& m : migrations()) {
    // BEGIN IMMEDIATE takes the write lock first, so two processes opening the same file cannot
    // both apply a migration: the second re-reads the version under the lock and skips it.
    PARLEY_TRY(db.exec("BEGIN IMMEDIATE", "begin migration"));
    Result<std::int32_t> version = user_version(db);
    if (!version.has_value()) {
      db.exec("ROLLBACK", "rollback migration").ignore();
      return version.error();
    }
    if (*version > latest_schema_version()) {
      db.exec("ROLLBACK", "rollback migration").ignore();
      return make_error(ErrorCode::kUnimplemented,
                        "store: the database schema (version " + std::to_string(*version) +
                            ") is newer than this server supports (version " +
                            std::to_string(latest_schema_version()) + "); upgrade parleyd");
    }
    if (*version >= m.version) {
      PARLEY_TRY(db.exec("COMMIT", "commit migration"));
      continue;
    }
    if (*version != m.version - 1) {
      db.exec("ROLLBACK", "rollback migration").ignore();
      return make_error(ErrorCode::kInternal, "store: migrations are not numbered consecutively");
    }
    Status s = db.exec(m.sql, "apply migration " + std::to_string(m.version));
    if (s.is_ok()) {
      std::string set = "PRAGMA user_version = " + std::to_string(m.version);
      s = db.exec(set.c_str(), "set schema version");
    }
    if (s.is_ok()) s = db.exec("COMMIT", "commit migration");
    if (!s.is_ok()) {
      db.exec("ROLLBACK", "rollback migration").ignore();
      return s;
    }
  }
  return Status::ok();
}

}  // namespace parley::store
