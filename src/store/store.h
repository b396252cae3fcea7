#pragma once
// Server storage: accounts, devices, prekeys, per-device durable queues, invites, attachments.
//
// Every operation is asynchronous: it is queued, executed by the backend, and its callback is
// invoked exactly once with the result, on a backend thread (callers post back to their own
// strand). The SQLite backend runs all operations on one thread and group-commits: the writes of
// many operations share one transaction and one fsync, and no callback of a write runs before
// its transaction is durably committed (synchronous=FULL in WAL mode). Each operation is
// isolated (a savepoint): one failing operation never affects the others in its batch.
// Order: writes run and complete in the order submitted; so do reads and acknowledgements
// among themselves. Between the two kinds there is no order (writes go first, docs/storage.md):
// a read or an ack may run after a write submitted later than it, and also before one submitted
// earlier when more writes wait than fit in a batch. A read sees everything committed before it
// was submitted, never older data.
//
// Thread-safety: all methods may be called from any thread. The Store must outlive every
// callback (do not destroy it from one); close() drains the queue first. An operation refused
// before it is queued (after close(): kUnavailable; too many pending operations:
// kResourceExhausted) has its callback invoked at once, on the calling thread.
//
// The store treats keys and message contents as opaque bytes; the server layer validates them.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/histogram.h"
#include "base/result.h"

namespace parley::store {

template <typename T>
using Callback = std::function<void(Result<T>)>;
using Done = std::function<void(Status)>;

// One-time prekeys a device may keep (a client tops up to about a hundred).
inline constexpr std::uint32_t kMaxStoredPreKeys = 1000;
// fetch_queue's max_bytes for a page bounded by its count alone.
inline constexpr std::size_t kNoByteLimit = SIZE_MAX;

struct PreKey {
  std::uint32_t id = 0;
  Bytes public_key;
};

struct SignedPreKey {
  std::uint32_t id = 0;
  Bytes public_key;
  Bytes signature;
};

struct Device {
  std::uint32_t device_id = 1;
  std::uint32_t registration_id = 0;
  Bytes auth_public_key;  // Ed25519, 32 bytes
  Bytes identity_key;     // 33 bytes
  SignedPreKey signed_pre_key;
  std::int64_t created_ms = 0;
};

struct Account {
  std::int64_t id = 0;
  std::string name;         // as registered
  std::vector<Device> devices;
  bool recovered = false;   // create_account replaced the devices of an existing account
  std::uint32_t pre_key_count = 0;  // create_account: the new device's one-time prekeys
};

struct NewAccount {
  std::string name;
  std::string folded_name;  // the unique key (case-folded by the server)
  Device device;
  std::vector<PreKey> pre_keys;
  std::string invite_token;  // non-empty: must be an unused, unexpired invite; consumed
  std::int64_t now_ms = 0;
  // SHA-256 of the account's recovery code (empty: the account cannot be recovered).
  Bytes recovery_hash;
  // Non-empty: recover the account of that name when this equals its stored recovery hash —
  // its devices are replaced by `device` (with `pre_keys`), the old device's queue and prekeys
  // are deleted, and the recovery hash becomes `recovery_hash`. kNotFound when no account has
  // the name: a recovery never creates an account.
  Bytes recover_with_hash;
};

struct Bundle {
  std::uint32_t device_id = 0;
  std::uint32_t registration_id = 0;
  Bytes identity_key;
  SignedPreKey signed_pre_key;
  std::optional<PreKey> pre_key;  // handed out at most once, ever
};

struct Envelope {
  // 16 bytes. store_messages() takes 16 random bytes and replaces the first 8 with the
  // big-endian queue seq (so an ack finds the envelope by primary key); the ids it stored are
  // in SendOutcome::server_ids.
  Bytes server_id;
  std::int64_t timestamp_ms = 0;
  std::string source;
  std::uint32_t source_device = 0;
  std::uint32_t type = 0;
  Bytes content;
};

struct QueueLimits {
  std::uint32_t max_count = 10000;
  std::uint64_t max_bytes = 64ull * 1024 * 1024;
  std::int64_t max_age_ms = 30ll * 24 * 3600 * 1000;
  // What one sender (by its envelopes' source) may hold of a device's queue, so that one sender
  // cannot fill it for everyone. Not applied to an account's sends to its own devices.
  std::uint32_t max_sender_count = UINT32_MAX;
  std::uint64_t max_sender_bytes = UINT64_MAX;
};

struct Delivery {
  std::int64_t account_id = 0;
  std::uint32_t device_id = 0;
  // The device's registration id as the sender was told it: a device replaced since then (a
  // recovery makes device 1 anew) holds another, and the send is refused (kDeviceChanged).
  std::uint32_t registration_id = 0;
  Envelope envelope;
};

// One send (to one destination account): all deliveries are stored, or none. Every delivery's
// envelope names the same source (the sender).
struct SendBatch {
  std::int64_t sender_account = 0;
  std::uint32_t sender_device = 0;
  Bytes client_message_id;      // dedup key with the sender and destination; empty: no dedup
  std::int64_t destination_account = 0;
  std::vector<Delivery> deliveries;
  QueueLimits limits;
  std::int64_t now_ms = 0;
};

struct SendOutcome {
  // kDeviceChanged: a delivery names a device that no longer exists (device_gone) or now holds
  // another registration id, as after a recovery that committed once the sender had been checked
  // against the devices it knew. Nothing is stored.
  enum class Kind { kStored, kDuplicate, kQueueFull, kDeviceChanged } kind = Kind::kStored;
  // kQueueFull: "count" or "bytes" (the queue's), or "sender_count" or "sender_bytes" (what
  // the sender may hold of it).
  std::string limit;
  std::uint32_t device_id = 0;  // kQueueFull: the device whose queue is full; kDeviceChanged: the
                                // first device found replaced or gone
  bool device_gone = false;     // kDeviceChanged: the device no longer exists
  std::vector<std::int64_t> seqs;  // kStored: the queue seq of each delivery, in batch order
  std::vector<Bytes> server_ids;   // kStored: the server id of each delivery, in batch order
};

struct QueuedEnvelope {
  std::int64_t seq = 0;  // increasing per device: the delivery order
  Envelope envelope;
};

enum class AttachmentOutcome { kCreated, kOverQuota, kTooMany };

// What one account's attachments may take: their declared sizes in all, and how many. Those
// whose expires_ms is `now_ms` or earlier do not count: the time by which expiry deletes them
// (the server's expiry clock, which lags the system clock by its downtime; they are served
// until it passes).
struct AttachmentQuota {
  std::uint64_t bytes = 0;
  std::uint64_t count = 0;
  std::int64_t now_ms = 0;
};

struct Attachment {
  std::string id;             // 32 hex chars
  Bytes upload_token_hash;    // SHA-256 of the bearer token
  std::int64_t account_id = 0;
  std::uint64_t size = 0;
  std::uint64_t have = 0;
  std::int64_t created_ms = 0;
  std::int64_t expires_ms = 0;
};

struct Stats {
  std::uint64_t accounts = 0;
  std::uint64_t queued_envelopes = 0;
  std::uint64_t queued_bytes = 0;
  std::uint64_t commits = 0;           // transactions committed since start
  std::uint64_t unsynced_commits = 0;  // of them, batches of acks and reads alone: no fsync
  std::uint64_t committed_ops = 0;     // operations in them (ops/commit = batch size)
  std::uint64_t last_batch_size = 0;
  // Acknowledged envelopes whose rows wait to be deleted together (docs/storage.md).
  std::uint64_t acked_pending = 0;
  std::uint64_t failed_ack_flushes = 0;  // deletions of them that failed (retried later)
  // Envelopes read from queues for delivery (fetch_queue's pages), and their contents' bytes.
  std::uint64_t fetched_envelopes = 0;
  std::uint64_t fetched_bytes = 0;
  // Group commits that failed as a whole (an I/O error, a full disk): every operation in them
  // failed, and nothing of them was stored.
  std::uint64_t failed_commits = 0;
  // Group commits run a second time, an operation at a time, because one operation in them
  // failed (each costs the batch twice; a refusal the client can repeat must not cause one).
  std::uint64_t rerun_commits = 0;
  // WAL checkpoints beside the writer, those that failed (busy), and those the writer had to run
  // itself because the others fell behind.
  std::uint64_t checkpoints = 0;
  std::uint64_t failed_checkpoints = 0;
  std::uint64_t writer_checkpoints = 0;
  // The WAL's writes (internal/wal_gather_vfs.h), process-wide: SQLite's writes to WAL files,
  // the writes made of them, and commits whose bytes were still gathered when they were
  // published (zero unless a SQLite release writes frames in a way the store does not expect).
  std::uint64_t wal_gathered_writes = 0;
  std::uint64_t wal_writes = 0;
  std::uint64_t wal_late_writes = 0;
  // Where a write's time goes in the store: waiting for its group commit to start (every
  // operation), and the commits that sync, from BEGIN to the end of the fsync.
  LatencyHistogram::Snapshot queue_wait;
  LatencyHistogram::Snapshot synced_commit;
};

class Store {
 public:
  virtual ~Store() = default;

  // Accounts. kAlreadyExists when the folded name is taken; kPermissionDenied when the invite
  // token is unknown, used or expired.
  virtual void create_account(NewAccount account, Callback<Account> done) = 0;
  virtual void find_account(std::string folded_name, Callback<std::optional<Account>> done) = 0;
  virtual void create_invite(std::string token, std::int64_t expires_ms, Done done) = 0;

  // Keys. Replaces the signed prekey if given; adds one-time prekeys (ids already present are
  // replaced). Returns how many one-time prekeys remain for the device; kTooLarge, and nothing
  // changes, when that would be more than kMaxStoredPreKeys. `auth_public_key` names
  // the device as its session authenticated it: when the device has since been replaced (a
  // recovery makes device 1 anew with another key), kNotFound and nothing changes, so a
  // session of the replaced device cannot put its keys on the new one.
  virtual void upload_keys(std::int64_t account_id, std::uint32_t device_id, Bytes auth_public_key,
                           std::optional<SignedPreKey> signed_pre_key, std::vector<PreKey> pre_keys,
                           Callback<std::uint32_t> done) = 0;
  virtual void pre_key_count(std::int64_t account_id, std::uint32_t device_id,
                             Callback<std::uint32_t> done) = 0;
  // Bundles of every device of the account (or one when device_id != 0); each one-time prekey
  // is removed as it is handed out, so concurrent fetches never get the same one.
  virtual void take_bundles(std::int64_t account_id, std::uint32_t device_id,
                            Callback<std::vector<Bundle>> done) = 0;

  // Queues. Stores every delivery of the batch in one transaction after checking the dedup key,
  // that each device exists with the delivery's registration id, and the per-device limits
  // (count, bytes); kDuplicate, kDeviceChanged and kQueueFull store nothing.
  virtual void store_messages(SendBatch batch, Callback<SendOutcome> done) = 0;
  // Envelopes queued for a device with seq > after_seq, oldest first: at most `limit`, and none
  // after the one whose contents bring the page's to `max_bytes` (so a page holds at least one
  // envelope when any is queued, and at most max_bytes plus one envelope's contents). The bytes
  // bound keeps a page of large envelopes from being read whole when the device's delivery
  // window takes only a few of them (kNoByteLimit: none).
  virtual void fetch_queue(std::int64_t account_id, std::uint32_t device_id, std::int64_t after_seq,
                           std::size_t limit, std::size_t max_bytes,
                           Callback<std::vector<QueuedEnvelope>> done) = 0;
  // Deletes the device's envelopes with these server ids; returns how many were deleted. The
  // delete survives a crash of the process at once, but a power cut only from the next synced
  // commit on (a batch of acks and reads alone is not fsynced): an envelope acknowledged just
  // before a power cut may be delivered again, and the client drops it by its server id.
  virtual void ack(std::int64_t account_id, std::uint32_t device_id, std::vector<Bytes> server_ids,
                   Callback<std::uint32_t> done) = 0;

  // Attachments (metadata; the bytes are files the server manages).
  // Creates an attachment unless the account's unexpired attachments (expires_ms after
  // quota.now_ms, also before expire() deletes the others), counted by their declared sizes,
  // and this one would exceed `quota.bytes` (kOverQuota), or the account holds `quota.count` of
  // them already (kTooMany); then nothing is stored. The check and the insert
  // are one operation, so concurrent creations cannot both pass it. kAlreadyExists when the id
  // is taken; kInvalidArgument when have > size.
  virtual void create_attachment(Attachment attachment, AttachmentQuota quota,
                                 Callback<AttachmentOutcome> done) = 0;
  virtual void find_attachment(std::string id, Callback<std::optional<Attachment>> done) = 0;
  // Records that the attachment's file holds `have` bytes, and returns what is recorded after:
  // progress only moves forward, so less than is recorded (a stale connection's report, after
  // another finished) changes nothing and succeeds with the larger figure. kNotFound (no such
  // attachment), kInvalidArgument (beyond its size).
  virtual void set_attachment_progress(std::string id, std::uint64_t have,
                                       Callback<std::uint64_t> done) = 0;

  // Housekeeping: deletes envelopes older than max_age, dedup keys older than dedup_ms, expired
  // invites and attachments (returns the expired attachment ids so their files can be removed).
  // `now_ms` is kept with what it deleted; see expiry_clock_at_open_ms.
  virtual void expire(std::int64_t now_ms, std::int64_t max_age_ms, std::int64_t dedup_ms,
                      Callback<std::vector<std::string>> done) = 0;
  // The now_ms of the last expire() committed before this store was opened; 0 if none ever
  // was. Housekeeping's clock continues from it (ExpiryClock, base/clock.h).
  virtual std::int64_t expiry_clock_at_open_ms() const = 0;

  virtual Stats stats() const = 0;
  // Runs every queued operation, then stops the backend. Further calls fail with kUnavailable.
  virtual void close() = 0;
};

// Opens (creating and migrating as needed) the SQLite database at `path`.
Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path);

}  // namespace parley::store
