#pragma once
// Internal to src/store: the body of each Store operation, run on the backend thread inside the
// batch transaction and the operation's own savepoint. A body that returns an error is rolled
// back to its savepoint; a body that returns a value is kept (and committed with its batch).
//
// Bodies never log, and their error messages carry no user data (names, ids, keys, content).

#include <cstdint>
#include <optional>
#include <span>
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
  std::int64_t next_seq = 1;  // the seq (and server-id prefix) of the next envelope
  // The meta table's next_seq: no seq at or above it has been handed out. It is written
  // kSeqReserve ahead of next_seq, so most commits leave the meta page alone; a restart skips
  // the rest of the reserve (seqs need only increase, not be dense).
  std::int64_t seq_bound = 1;
  std::int64_t legacy_max_seq = 0;  // envelopes up to here predate schema v3 (see migrations.cc)
  bool legacy_rows = false;         // some of them may still be queued
  // The meta table's expiry_clock as read at open: the now_ms of the last expiry committed
  // before (0: none). Not kept up to date after.
  std::int64_t expiry_clock_ms = 0;
  std::size_t dedup_capacity;
  DedupIndex dedup;
  QueueIndex queues;  // every non-empty device queue (see queue_index.h)
  // Seqs of acknowledged envelopes whose rows are still in the table (their seqs are in the
  // committed `acked` table, no longer in `queues`), in no particular order.
  std::vector<std::int64_t> acked;
};

// How far ahead of next_seq the meta table's bound is written.
inline constexpr std::int64_t kSeqReserve = 4096;

struct Tx {
  Db& db;
  Backend& backend;
  StatsDelta delta;
  // Dedup keys recorded in memory by this transaction, undone if it does not commit.
  std::vector<std::pair<std::uint64_t, std::int64_t>> dedup_added;
  // Seqs this transaction added to the acked table; added to Backend::acked once it commits.
  std::vector<std::int64_t> acked_added;
  // The bound save_next_seq wrote, adopted as Backend::seq_bound once the transaction commits.
  std::int64_t seq_bound = 0;
  // op_expire found no legacy envelope left: Backend::legacy_rows is cleared once the
  // transaction commits (until then an ack still looks for them).
  bool legacy_rows_gone = false;
};

struct Unit {};

Result<Account> op_create_account(Tx& tx, const NewAccount& account);
Result<std::optional<Account>> op_find_account(Tx& tx, const std::string& folded_name);
Result<Unit> op_create_invite(Tx& tx, const std::string& token, std::int64_t expires_ms);

// The device's count of one-time prekeys after an upload, or the upload's refusal (over
// kMaxStoredPreKeys), which wrote nothing: a result, not an error, because an error rolls the
// whole group commit back and runs it again operation by operation, and a client at the cap may
// upload again and again.
struct UploadKeysOutcome {
  std::uint32_t count = 0;
  bool over_cap = false;
};
Result<UploadKeysOutcome> op_upload_keys(Tx& tx, std::int64_t account_id, std::uint32_t device_id,
                                         const Bytes& auth_public_key,
                                         const std::optional<SignedPreKey>& signed_pre_key,
                                         const std::vector<PreKey>& pre_keys);
Result<std::uint32_t> op_pre_key_count(Tx& tx, std::int64_t account_id, std::uint32_t device_id);
Result<std::vector<Bundle>> op_take_bundles(Tx& tx, std::int64_t account_id,
                                            std::uint32_t device_id);

Result<SendOutcome> op_store_messages(Tx& tx, const SendBatch& batch);
Result<std::vector<QueuedEnvelope>> op_fetch_queue(Tx& tx, std::int64_t account_id,
                                                   std::uint32_t device_id, std::int64_t after_seq,
                                                   std::size_t limit, std::size_t max_bytes);
Result<std::uint32_t> op_ack(Tx& tx, std::int64_t account_id, std::uint32_t device_id,
                             const std::vector<Bytes>& server_ids);

Result<AttachmentOutcome> op_create_attachment(Tx& tx, const Attachment& attachment,
                                               AttachmentQuota quota);
Result<std::optional<Attachment>> op_find_attachment(Tx& tx, const std::string& id);
Result<std::uint64_t> op_set_attachment_progress(Tx& tx, const std::string& id, std::uint64_t have);

Result<std::vector<std::string>> op_expire(Tx& tx, std::int64_t now_ms, std::int64_t max_age_ms,
                                           std::int64_t dedup_ms);

// Gauges at open: accounts, and the queued envelopes and bytes of a loaded `backend`.
Result<StatsDelta> read_gauges(Db& db, const Backend& backend);
// Writes a new bound to the meta table (into tx.seq_bound) when next_seq has reached the
// stored one (inside the batch transaction, before COMMIT).
Status save_next_seq(Tx& tx);
// Deletes the rows of the acknowledged envelopes `seqs`, and the seqs from the acked table, in
// one transaction of its own (rolled back on failure). Also run at open, for those a stop left
// behind. `seqs` must be the acked table's smallest seqs in ascending order (every one up to the
// last); kInternal, and nothing deleted, when the table holds others in that range.
Status delete_acked(Db& db, std::span<const std::int64_t> seqs);
// Fills `backend` at open: the next seq, the legacy marker, the newest dedup keys and the
// queue index (one pass over the envelopes table). First deletes the envelopes that the acked
// log names (their deletion was pending when the store last stopped).
Status load_backend(Db& db, Backend& backend);

}  // namespace parley::store::internal
