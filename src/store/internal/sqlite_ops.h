#pragma once
// Internal to src/store: the body of each Store operation, run on the backend thread inside the
// batch transaction and the operation's own savepoint. A body that returns an error is rolled
// back to its savepoint; a body that returns a value is kept (and committed with its batch).
//
// Bodies never log, and their error messages carry no user data (names, ids, keys, content).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "store/internal/dedup_index.h"
#include "store/internal/queue_index.h"
#include "store/internal/sqlite_db.h"
#include "store/store.h"

namespace parley::store::internal {

// Changes to the gauges in Stats made by an operation; applied only once committed.
struct StatsDelta {
  std::int64_t accounts = 0;
  std::int64_t envelopes = 0;
  std::int64_t bytes = 0;
};

// State of the backend that operations read and advance, owned by the backend thread.
struct Backend {
  Backend(std::size_t dedup_entries, std::uint64_t seed)
      : dedup_capacity(dedup_entries), dedup(dedup_entries, seed) {}
  std::int64_t next_seq = 1;        // the seq (and server-id prefix) of the next envelope
  std::int64_t stored_next_seq = 1; // next_seq as committed in the meta table
  std::int64_t legacy_max_seq = 0;  // envelopes up to here predate schema v3 (see migrations.cc)
  bool legacy_rows = false;         // some of them may still be queued
  std::size_t dedup_capacity;
  DedupIndex dedup;
  QueueIndex queues;  // every non-empty device queue (see queue_index.h)
};

struct Tx {
  Db& db;
  Backend& backend;
  StatsDelta delta;
  // Dedup keys recorded in memory by this transaction, undone if it does not commit.
  std::vector<std::pair<std::uint64_t, std::int64_t>> dedup_added;
};

struct Unit {};

Result<Account> op_create_account(Tx& tx, const NewAccount& account);
Result<std::optional<Account>> op_find_account(Tx& tx, const std::string& folded_name);
Result<Unit> op_create_invite(Tx& tx, const std::string& token, std::int64_t expires_ms);

Result<std::uint32_t> op_upload_keys(Tx& tx, std::int64_t account_id, std::uint32_t device_id,
                                     const std::optional<SignedPreKey>& signed_pre_key,
                                     const std::vector<PreKey>& pre_keys);
Result<std::uint32_t> op_pre_key_count(Tx& tx, std::int64_t account_id, std::uint32_t device_id);
Result<std::vector<Bundle>> op_take_bundles(Tx& tx, std::int64_t account_id,
                                            std::uint32_t device_id);

Result<SendOutcome> op_store_messages(Tx& tx, const SendBatch& batch);
Result<std::vector<QueuedEnvelope>> op_fetch_queue(Tx& tx, std::int64_t account_id,
                                                   std::uint32_t device_id, std::int64_t after_seq,
                                                   std::size_t limit);
Result<std::uint32_t> op_ack(Tx& tx, std::int64_t account_id, std::uint32_t device_id,
                             const std::vector<Bytes>& server_ids);

Result<Unit> op_create_attachment(Tx& tx, const Attachment& attachment);
Result<std::optional<Attachment>> op_find_attachment(Tx& tx, const std::string& id);
Result<Unit> op_set_attachment_progress(Tx& tx, const std::string& id, std::uint64_t have);

Result<std::vector<std::string>> op_expire(Tx& tx, std::int64_t now_ms, std::int64_t max_age_ms,
                                           std::int64_t dedup_ms);

// Gauges at open: accounts, and the queued envelopes and bytes of a loaded `backend`.
Result<StatsDelta> read_gauges(Db& db, const Backend& backend);
// Writes next_seq to the meta table if it moved (inside the batch transaction, before COMMIT).
Status save_next_seq(Db& db, Backend& backend);
// Fills `backend` at open: the next seq, the legacy marker, the newest dedup keys and the
// queue index (one pass over the envelopes table).
Status load_backend(Db& db, Backend& backend);

}  // namespace parley::store::internal
