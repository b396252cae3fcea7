#include <algorithm>
#include <functional>
#include <limits>
#include <map>
#include <span>
#include <utility>

#include "base/saturating.h"
#include "base/secret_bytes.h"
#include "store/internal/sqlite_ops.h"

namespace parley::store::internal {
namespace {

constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();

Status not_found(const char* what) { return make_error(ErrorCode::kNotFound, what); }

std::int64_t i64(std::uint64_t v) {
  return v > static_cast<std::uint64_t>(kInt64Max) ? kInt64Max : static_cast<std::int64_t>(v);
}
std::uint32_t u32(std::int64_t v) { return static_cast<std::uint32_t>(v); }

// ---- shared helpers ---------------------------------------------------------------------------

constexpr std::size_t kServerIdSize = 16;

// A server id is the seq (8 bytes, big-endian) and 8 random bytes: the queue index keeps those
// as the envelope's tag, which an acknowledgement must name too. (An id of another size has
// tag 0.)
std::uint64_t server_id_tag(ByteView id) {
  std::uint64_t tag = 0;
  if (id.size() != kServerIdSize) return tag;
  for (std::size_t i = 8; i < kServerIdSize; ++i) tag = (tag << 8) | id[i];
  return tag;
}

// Whether dedup row `row` (0: none) holds exactly the key of `batch`.
Result<bool> dedup_row_matches(Tx& tx, std::int64_t row, const SendBatch& batch) {
  if (row == 0) return false;
  PARLEY_ASSIGN_OR_RETURN(
      Stmt s, tx.db.prepare("SELECT 1 FROM dedup WHERE id = ?1 AND sender_account = ?2 AND "
                            "sender_device = ?3 AND destination_account = ?4 AND "
                            "client_message_id = ?5",
                            "check dedup"));
  s.bind(1, row).bind(2, batch.sender_account).bind(3, batch.sender_device);
  s.bind(4, batch.destination_account).bind_blob(5, batch.client_message_id);
  return s.step();
}

// The device's registration id, or nullopt when the account has no such device.
Result<std::optional<std::uint32_t>> device_registration(Tx& tx, std::int64_t account_id,
                                                         std::uint32_t device_id) {
  PARLEY_ASSIGN_OR_RETURN(Stmt s, tx.db.prepare("SELECT registration_id FROM devices WHERE "
                                                "account_id = ?1 AND device_id = ?2",
                                                "look up device"));
  s.bind(1, account_id).bind(2, device_id);
  PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
  if (!row) return std::optional<std::uint32_t>();
  return std::optional<std::uint32_t>(u32(s.column_int(0)));
}

Result<std::uint32_t> count_pre_keys(Tx& tx, std::int64_t account_id, std::uint32_t device_id) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt s, tx.db.prepare("SELECT COUNT(*) FROM pre_keys WHERE account_id = ?1 AND device_id = ?2",
                            "count prekeys"));
  s.bind(1, account_id).bind(2, device_id);
  PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
  return row ? u32(s.column_int(0)) : 0u;
}

Status insert_pre_keys(Tx& tx, std::int64_t account_id, std::uint32_t device_id,
                       const std::vector<PreKey>& pre_keys) {
  for (const PreKey& k : pre_keys) {
    PARLEY_ASSIGN_OR_RETURN(
        Stmt s, tx.db.prepare("INSERT OR REPLACE INTO pre_keys (account_id, device_id, key_id, "
                              "public_key) VALUES (?1, ?2, ?3, ?4)",
                              "store prekey"));
    s.bind(1, account_id).bind(2, device_id).bind(3, k.id).bind_blob(4, k.public_key);
    PARLEY_TRY(s.run());
  }
  return Status::ok();
}

// Inserts the new account's (or the recovered account's) device and its prekeys.
Status insert_device(Tx& tx, std::int64_t account_id, const NewAccount& a) {
  Device d = a.device;
  if (d.created_ms == 0) d.created_ms = a.now_ms;
  PARLEY_ASSIGN_OR_RETURN(
      Stmt dev, tx.db.prepare("INSERT INTO devices (account_id, device_id, registration_id, "
                              "auth_public_key, identity_key, spk_id, spk_public, spk_signature, "
                              "created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                              "insert device"));
  dev.bind(1, account_id)
      .bind(2, d.device_id)
      .bind(3, d.registration_id)
      .bind_blob(4, d.auth_public_key)
      .bind_blob(5, d.identity_key)
      .bind(6, d.signed_pre_key.id)
      .bind_blob(7, d.signed_pre_key.public_key)
      .bind_blob(8, d.signed_pre_key.signature)
      .bind(9, d.created_ms);
  PARLEY_TRY(dev.run());
  return insert_pre_keys(tx, account_id, d.device_id, a.pre_keys);
}

// Takes envelope `seq` (whose row is gone) off queue `key` in the index and off the gauges.
void forget_envelope(Tx& tx, QueueKey key, std::int64_t seq) {
  if (auto size = tx.backend.queues.remove(key, seq)) {
    tx.delta.envelopes -= 1;
    tx.delta.bytes -= *size;
  }
}

// Deletes envelope `seq` of queue `key` from the table and forgets it.
Status delete_envelope(Tx& tx, QueueKey key, std::int64_t seq) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt s, tx.db.prepare("DELETE FROM envelopes WHERE seq = ?1", "delete queued envelope"));
  s.bind(1, seq);
  PARLEY_TRY(s.run());
  forget_envelope(tx, key, seq);
  return Status::ok();
}

Result<std::vector<Device>> load_devices(Tx& tx, std::int64_t account_id) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt s, tx.db.prepare("SELECT device_id, registration_id, auth_public_key, identity_key, "
                            "spk_id, spk_public, spk_signature, created_ms FROM devices "
                            "WHERE account_id = ?1 ORDER BY device_id",
                            "load devices"));
  s.bind(1, account_id);
  std::vector<Device> out;
  for (;;) {
    PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
    if (!row) break;
    Device d;
    d.device_id = u32(s.column_int(0));
    d.registration_id = u32(s.column_int(1));
    d.auth_public_key = s.column_blob(2);
    d.identity_key = s.column_blob(3);
    d.signed_pre_key.id = u32(s.column_int(4));
    d.signed_pre_key.public_key = s.column_blob(5);
    d.signed_pre_key.signature = s.column_blob(6);
    d.created_ms = s.column_int(7);
    out.push_back(std::move(d));
  }
  return out;
}

// Replaces every device of an account by `a.device`: the old devices' queues and prekeys go
// (their envelopes were encrypted to keys that no longer exist).
Status recover_account(Tx& tx, std::int64_t account_id, const NewAccount& a) {
  for (const QueueKey& key : tx.backend.queues.queues_of(account_id)) {
    // The emptied queue leaves the index when the batch commits (QueueIndex::settle).
    for (std::int64_t seq : tx.backend.queues.after(key, 0, SIZE_MAX)) {
      PARLEY_TRY(delete_envelope(tx, key, seq));
    }
  }
  for (const char* sql : {"DELETE FROM pre_keys WHERE account_id = ?1",
                          "DELETE FROM devices WHERE account_id = ?1"}) {
    PARLEY_ASSIGN_OR_RETURN(Stmt del, tx.db.prepare(sql, "clear recovered account"));
    del.bind(1, account_id);
    PARLEY_TRY(del.run());
  }
  {
    PARLEY_ASSIGN_OR_RETURN(
        Stmt upd, tx.db.prepare("UPDATE accounts SET recovery_hash = ?2 WHERE id = ?1",
                                "rotate recovery hash"));
    upd.bind(1, account_id);
    if (a.recovery_hash.empty()) {
      upd.bind_null(2);
    } else {
      upd.bind_blob(2, a.recovery_hash);
    }
    PARLEY_TRY(upd.run());
  }
  return insert_device(tx, account_id, a);
}

SendOutcome outcome(SendOutcome::Kind kind, std::string limit = {}, std::uint32_t device = 0) {
  SendOutcome o;
  o.kind = kind;
  o.limit = std::move(limit);
  o.device_id = device;
  return o;
}

SendOutcome device_changed(std::uint32_t device, bool gone) {
  SendOutcome o;
  o.kind = SendOutcome::Kind::kDeviceChanged;
  o.device_id = device;
  o.device_gone = gone;
  return o;
}

}  // namespace

// ---- accounts ---------------------------------------------------------------------------------

Result<Account> op_create_account(Tx& tx, const NewAccount& a) {
  if (a.folded_name.empty()) return make_error(ErrorCode::kInvalidArgument, "store: empty name");

  if (!a.invite_token.empty()) {
    PARLEY_ASSIGN_OR_RETURN(
        Stmt use, tx.db.prepare("UPDATE invites SET used = 1 WHERE token = ?1 AND used = 0 AND "
                                "expires_ms > ?2",
                                "use invite"));
    use.bind_text(1, a.invite_token).bind(2, a.now_ms);
    PARLEY_TRY(use.run());
    if (tx.db.changes() != 1) {
      return make_error(ErrorCode::kPermissionDenied, "store: invite unknown, used or expired");
    }
  }

  {
    PARLEY_ASSIGN_OR_RETURN(
        Stmt taken, tx.db.prepare("SELECT id, name, recovery_hash FROM accounts WHERE "
                                  "folded_name = ?1",
                                  "check name"));
    taken.bind_text(1, a.folded_name);
    PARLEY_ASSIGN_OR_RETURN(bool row, taken.step());
    if (row) {
      const Bytes stored = taken.column_is_null(2) ? Bytes() : taken.column_blob(2);
      if (a.recover_with_hash.empty() || stored.empty() ||
          !constant_time_equal(stored, a.recover_with_hash)) {
        return make_error(ErrorCode::kAlreadyExists, "store: name taken");
      }
      Account out;
      out.id = taken.column_int(0);
      out.name = taken.column_text(1);
      PARLEY_TRY(recover_account(tx, out.id, a));
      Device d = a.device;
      if (d.created_ms == 0) d.created_ms = a.now_ms;
      out.devices.push_back(std::move(d));
      out.recovered = true;
      PARLEY_ASSIGN_OR_RETURN(out.pre_key_count, count_pre_keys(tx, out.id, a.device.device_id));
      return out;
    }
  }
  // A recovery code proves ownership of a name that exists; it never creates one (the server
  // asks for no invitation or proof of work with it).
  if (!a.recover_with_hash.empty()) {
    return not_found("store: no account by that name to recover");
  }

  PARLEY_ASSIGN_OR_RETURN(
      Stmt ins, tx.db.prepare("INSERT INTO accounts (name, folded_name, created_ms, "
                              "recovery_hash) VALUES (?1, ?2, ?3, ?4)",
                              "insert account"));
  ins.bind_text(1, a.name).bind_text(2, a.folded_name).bind(3, a.now_ms);
  if (a.recovery_hash.empty()) {
    ins.bind_null(4);
  } else {
    ins.bind_blob(4, a.recovery_hash);
  }
  PARLEY_TRY(ins.run());
  Account out;
  out.id = tx.db.last_insert_rowid();
  out.name = a.name;

  PARLEY_TRY(insert_device(tx, out.id, a));
  Device d = a.device;
  if (d.created_ms == 0) d.created_ms = a.now_ms;
  out.devices.push_back(std::move(d));
  PARLEY_ASSIGN_OR_RETURN(out.pre_key_count, count_pre_keys(tx, out.id, a.device.device_id));
  tx.delta.accounts += 1;
  return out;
}

Result<std::optional<Account>> op_find_account(Tx& tx, const std::string& folded_name) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt s, tx.db.prepare("SELECT id, name FROM accounts WHERE folded_name = ?1", "find account"));
  s.bind_text(1, folded_name);
  PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
  if (!row) return std::optional<Account>();
  Account a;
  a.id = s.column_int(0);
  a.name = s.column_text(1);
  PARLEY_ASSIGN_OR_RETURN(a.devices, load_devices(tx, a.id));
  return std::optional<Account>(std::move(a));
}

Result<Unit> op_create_invite(Tx& tx, const std::string& token, std::int64_t expires_ms) {
  if (token.empty()) return make_error(ErrorCode::kInvalidArgument, "store: empty invite token");
  PARLEY_ASSIGN_OR_RETURN(
      Stmt s, tx.db.prepare("INSERT INTO invites (token, expires_ms, used) VALUES (?1, ?2, 0) "
                            "ON CONFLICT (token) DO NOTHING",
                            "insert invite"));
  s.bind_text(1, token).bind(2, expires_ms);
  PARLEY_TRY(s.run());
  if (tx.db.changes() != 1) return make_error(ErrorCode::kAlreadyExists, "store: invite exists");
  return Unit{};
}

// ---- keys -------------------------------------------------------------------------------------

Result<UploadKeysOutcome> op_upload_keys(Tx& tx, std::int64_t account_id, std::uint32_t device_id,
                                         const Bytes& auth_public_key,
                                         const std::optional<SignedPreKey>& spk,
                                         const std::vector<PreKey>& pre_keys) {
  {
    PARLEY_ASSIGN_OR_RETURN(
        Stmt s, tx.db.prepare("SELECT 1 FROM devices WHERE account_id = ?1 AND device_id = ?2 AND "
                              "auth_public_key = ?3",
                              "look up device by key"));
    s.bind(1, account_id).bind(2, device_id).bind_blob(3, auth_public_key);
    PARLEY_ASSIGN_OR_RETURN(bool exists, s.step());
    if (!exists) return not_found("store: no such device");
  }
  // Its own savepoint, so that a refusal undoes its writes alone (an error leaves it to the
  // batch's rollback).
  PARLEY_TRY(tx.db.run("SAVEPOINT upload_keys", "savepoint upload_keys"));
  if (spk.has_value()) {
    PARLEY_ASSIGN_OR_RETURN(
        Stmt s, tx.db.prepare("UPDATE devices SET spk_id = ?3, spk_public = ?4, spk_signature = ?5 "
                              "WHERE account_id = ?1 AND device_id = ?2",
                              "replace signed prekey"));
    s.bind(1, account_id).bind(2, device_id).bind(3, spk->id).bind_blob(4, spk->public_key);
    s.bind_blob(5, spk->signature);
    PARLEY_TRY(s.run());
  }
  PARLEY_TRY(insert_pre_keys(tx, account_id, device_id, pre_keys));
  PARLEY_ASSIGN_OR_RETURN(std::uint32_t n, count_pre_keys(tx, account_id, device_id));
  // Bounded, so that no account can fill the disk with prekeys (the upload is rolled back).
  const bool over_cap = n > kMaxStoredPreKeys;
  if (over_cap) PARLEY_TRY(tx.db.run("ROLLBACK TO upload_keys", "roll back upload_keys"));
  PARLEY_TRY(tx.db.run("RELEASE upload_keys", "release upload_keys"));
  return UploadKeysOutcome{over_cap ? 0 : n, over_cap};
}

Result<std::uint32_t> op_pre_key_count(Tx& tx, std::int64_t account_id, std::uint32_t device_id) {
  PARLEY_ASSIGN_OR_RETURN(std::optional<std::uint32_t> device,
                          device_registration(tx, account_id, device_id));
  if (!device) return not_found("store: no such device");
  return count_pre_keys(tx, account_id, device_id);
}

Result<std::vector<Bundle>> op_take_bundles(Tx& tx, std::int64_t account_id,
                                            std::uint32_t device_id) {
  PARLEY_ASSIGN_OR_RETURN(std::vector<Device> devices, load_devices(tx, account_id));
  std::vector<Bundle> out;
  for (Device& d : devices) {
    if (device_id != 0 && d.device_id != device_id) continue;
    Bundle b;
    b.device_id = d.device_id;
    b.registration_id = d.registration_id;
    b.identity_key = std::move(d.identity_key);
    b.signed_pre_key = std::move(d.signed_pre_key);
    // The lowest-numbered prekey, deleted in this same operation: a key is handed out at most
    // once, since every operation runs on the one backend connection.
    PARLEY_ASSIGN_OR_RETURN(
        Stmt take, tx.db.prepare("DELETE FROM pre_keys WHERE account_id = ?1 AND device_id = ?2 AND "
                                 "key_id = (SELECT MIN(key_id) FROM pre_keys WHERE account_id = ?1 "
                                 "AND device_id = ?2) RETURNING key_id, public_key",
                                 "take prekey"));
    take.bind(1, account_id).bind(2, d.device_id);
    PARLEY_ASSIGN_OR_RETURN(bool row, take.step());
    if (row) b.pre_key = PreKey{u32(take.column_int(0)), take.column_blob(1)};
    out.push_back(std::move(b));
  }
  if (out.empty()) return not_found("store: no such account or device");
  return out;
}

// ---- queues -----------------------------------------------------------------------------------

Result<SendOutcome> op_store_messages(Tx& tx, const SendBatch& batch) {
  if (batch.deliveries.empty()) {
    return make_error(ErrorCode::kInvalidArgument, "store: a send without deliveries");
  }
  const std::string& sender = batch.deliveries.front().envelope.source;
  for (const Delivery& d : batch.deliveries) {
    if (d.envelope.server_id.size() != kServerIdSize) {
      return make_error(ErrorCode::kInvalidArgument, "store: a server id must be 16 bytes");
    }
    if (d.envelope.content.size() > static_cast<std::size_t>(QueueIndex::kMaxSize)) {
      return make_error(ErrorCode::kInvalidArgument, "store: an envelope over 2 GiB");
    }
    if (d.envelope.source != sender) {
      return make_error(ErrorCode::kInvalidArgument, "store: a send's envelopes name two sources");
    }
  }
  const bool dedup = !batch.client_message_id.empty();
  std::uint64_t key_hash = 0;
  if (dedup) {
    key_hash = tx.backend.dedup.hash(batch.sender_account, batch.sender_device,
                                     batch.destination_account, batch.client_message_id);
    PARLEY_ASSIGN_OR_RETURN(bool seen, dedup_row_matches(tx, tx.backend.dedup.find(key_hash), batch));
    if (seen) return outcome(SendOutcome::Kind::kDuplicate);
  }

  // What this send adds to each device queue (a device may appear more than once), and the
  // registration id its deliveries were checked against.
  struct Add {
    std::int64_t count = 0;
    std::int64_t bytes = 0;
    std::uint32_t registration_id = 0;
  };
  std::map<std::pair<std::int64_t, std::uint32_t>, Add> adds;
  for (const Delivery& d : batch.deliveries) {
    Add& add = adds[{d.account_id, d.device_id}];
    if (add.count > 0 && add.registration_id != d.registration_id) {
      return make_error(ErrorCode::kInvalidArgument,
                        "store: deliveries to one device name two registration ids");
    }
    add.count += 1;
    add.bytes += static_cast<std::int64_t>(d.envelope.content.size());
    add.registration_id = d.registration_id;
  }

  // Each device is checked, and then every limit, before anything is written. The devices table
  // is read only for a queue the index holds no registration id for (an empty one, mostly): a
  // recovery that replaces a device empties its queue.
  for (const auto& [key, add] : adds) {
    const QueueKey queue{key.first, key.second};
    std::uint32_t known = tx.backend.queues.registration(queue);
    if (known == 0) {
      PARLEY_ASSIGN_OR_RETURN(std::optional<std::uint32_t> reg,
                              device_registration(tx, key.first, key.second));
      if (!reg) return device_changed(key.second, true);
      known = *reg;
    }
    if (known != add.registration_id) return device_changed(key.second, false);
  }
  for (const auto& [key, add] : adds) {
    const QueueIndex::Totals queued = tx.backend.queues.totals({key.first, key.second});
    if (queued.count + add.count > static_cast<std::int64_t>(batch.limits.max_count)) {
      return outcome(SendOutcome::Kind::kQueueFull, "count", key.second);
    }
    if (queued.bytes + add.bytes > i64(batch.limits.max_bytes)) {
      return outcome(SendOutcome::Kind::kQueueFull, "bytes", key.second);
    }
    if (batch.sender_account == batch.destination_account) continue;  // its own devices
    const QueueIndex::Totals held =
        tx.backend.queues.sender_totals({key.first, key.second}, sender);
    if (held.count + add.count > static_cast<std::int64_t>(batch.limits.max_sender_count)) {
      return outcome(SendOutcome::Kind::kQueueFull, "sender_count", key.second);
    }
    if (held.bytes + add.bytes > i64(batch.limits.max_sender_bytes)) {
      return outcome(SendOutcome::Kind::kQueueFull, "sender_bytes", key.second);
    }
  }

  if (dedup) {
    PARLEY_ASSIGN_OR_RETURN(
        Stmt s, tx.db.prepare("INSERT INTO dedup (sender_account, sender_device, "
                              "destination_account, client_message_id, created_ms) "
                              "VALUES (?1, ?2, ?3, ?4, ?5)",
                              "insert dedup key"));
    s.bind(1, batch.sender_account).bind(2, batch.sender_device);
    s.bind(3, batch.destination_account).bind_blob(4, batch.client_message_id);
    s.bind(5, batch.now_ms);
    PARLEY_TRY(s.run());
    const std::int64_t row = tx.db.last_insert_rowid();
    tx.backend.dedup.insert(key_hash, row, batch.now_ms);
    tx.dedup_added.emplace_back(key_hash, row);
  }

  SendOutcome stored;
  stored.seqs.reserve(batch.deliveries.size());
  stored.server_ids.reserve(batch.deliveries.size());
  for (const Delivery& d : batch.deliveries) {
    const Envelope& e = d.envelope;
    // Seqs burnt by a rolled-back operation leave gaps; they are never handed out twice.
    const std::int64_t seq = tx.backend.next_seq++;
    Bytes server_id = e.server_id;
    for (int i = 0; i < 8; ++i) {
      server_id[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(
          static_cast<std::uint64_t>(seq) >> (56 - 8 * i));
    }
    PARLEY_ASSIGN_OR_RETURN(
        Stmt s, tx.db.prepare("INSERT INTO envelopes (seq, account_id, device_id, server_id, "
                              "timestamp_ms, source, source_device, type, content, size, "
                              "stored_ms) VALUES (?11, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                              "insert envelope"));
    s.bind(1, d.account_id).bind(2, d.device_id).bind_blob(3, server_id);
    s.bind(4, e.timestamp_ms).bind_text(5, e.source).bind(6, e.source_device).bind(7, e.type);
    s.bind_blob(8, e.content).bind(9, static_cast<std::int64_t>(e.content.size()));
    s.bind(10, batch.now_ms).bind(11, seq);
    PARLEY_TRY(s.run());
    const auto size = static_cast<std::int64_t>(e.content.size());
    tx.backend.queues.append({d.account_id, d.device_id}, seq, size, server_id_tag(server_id),
                             sender);
    tx.delta.envelopes += 1;
    tx.delta.bytes += size;
    stored.seqs.push_back(seq);
    stored.server_ids.push_back(std::move(server_id));
  }
  for (const auto& [key, add] : adds) {
    tx.backend.queues.remember_registration({key.first, key.second}, add.registration_id);
  }
  return stored;
}

Result<std::vector<QueuedEnvelope>> op_fetch_queue(Tx& tx, std::int64_t account_id,
                                                   std::uint32_t device_id, std::int64_t after_seq,
                                                   std::size_t limit, std::size_t max_bytes) {
  const QueueKey key{account_id, device_id};
  std::vector<QueuedEnvelope> out;
  std::size_t bytes = 0;
  for (std::int64_t seq : tx.backend.queues.after(key, after_seq, limit)) {
    if (bytes >= max_bytes) break;
    PARLEY_ASSIGN_OR_RETURN(
        Stmt s, tx.db.prepare("SELECT server_id, timestamp_ms, source, source_device, type, "
                              "content FROM envelopes WHERE seq = ?1",
                              "fetch envelope"));
    s.bind(1, seq);
    PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
    if (!row) {
      forget_envelope(tx, key, seq);  // deleted behind the store's back (another process)
      continue;
    }
    QueuedEnvelope q;
    q.seq = seq;
    q.envelope.server_id = s.column_blob(0);
    q.envelope.timestamp_ms = s.column_int(1);
    q.envelope.source = s.column_text(2);
    q.envelope.source_device = u32(s.column_int(3));
    q.envelope.type = u32(s.column_int(4));
    q.envelope.content = s.column_blob(5);
    bytes = saturating_add(bytes, q.envelope.content.size());
    out.push_back(std::move(q));
  }
  return out;
}

namespace {

// Writes `seqs` into the acked table, sixteen rows a statement while that many are left (a
// statement per row cost more than its insert).
Status record_acked(Db& db, std::span<const std::int64_t> seqs) {
  constexpr std::size_t kRows = 16;
  while (seqs.size() >= kRows) {
    PARLEY_ASSIGN_OR_RETURN(
        Stmt s,
        db.prepare("INSERT OR IGNORE INTO acked (seq) VALUES (?1), (?2), (?3), (?4), (?5), (?6), "
                   "(?7), (?8), (?9), (?10), (?11), (?12), (?13), (?14), (?15), (?16)",
                   "record acknowledgements"));
    for (std::size_t i = 0; i < kRows; ++i) s.bind(static_cast<int>(i + 1), seqs[i]);
    PARLEY_TRY(s.run());
    seqs = seqs.subspan(kRows);
  }
  for (std::int64_t seq : seqs) {
    PARLEY_ASSIGN_OR_RETURN(Stmt s, db.prepare("INSERT OR IGNORE INTO acked (seq) VALUES (?1)",
                                               "record acknowledgement"));
    s.bind(1, seq);
    PARLEY_TRY(s.run());
  }
  return Status::ok();
}

}  // namespace

Result<std::uint32_t> op_ack(Tx& tx, std::int64_t account_id, std::uint32_t device_id,
                             const std::vector<Bytes>& server_ids) {
  const QueueKey key{account_id, device_id};
  std::uint32_t count = 0;
  const std::size_t first_acked = tx.acked_added.size();
  for (const Bytes& id : server_ids) {
    bool taken = false;
    if (id.size() == kServerIdSize) {
      // The first 8 bytes are the seq. The index says whether this device's queue holds it
      // with the id's other 8 bytes (so the whole id and the device are checked without reading
      // the row), and tells an envelope already acknowledged (its row may still be there) from
      // one still queued. The seq goes to the acked table (below) and the row is deleted later
      // with others (delete_acked).
      std::uint64_t seq = 0;
      for (std::size_t i = 0; i < 8; ++i) seq = (seq << 8) | id[i];
      const auto s64 = static_cast<std::int64_t>(seq & 0x7fffffffffffffffull);
      if (tx.backend.queues.contains(key, s64, server_id_tag(id))) {
        forget_envelope(tx, key, s64);
        tx.acked_added.push_back(s64);
        taken = true;
      }
    }
    if (!taken && tx.backend.legacy_rows) {
      // An envelope stored before schema v3 has a random id: look among the device's queued
      // envelopes from then, and delete it at once (there are few, and they only get fewer).
      for (std::int64_t seq : tx.backend.queues.after(key, 0, SIZE_MAX)) {
        if (seq > tx.backend.legacy_max_seq) break;
        PARLEY_ASSIGN_OR_RETURN(
            Stmt s, tx.db.prepare("DELETE FROM envelopes WHERE seq = ?1 AND server_id = ?2 "
                                  "RETURNING seq",
                                  "delete legacy envelope"));
        s.bind(1, seq).bind_blob(2, id);
        PARLEY_ASSIGN_OR_RETURN(taken, s.step());
        if (taken) {
          forget_envelope(tx, key, seq);
          break;
        }
      }
    }
    if (taken) ++count;
  }
  PARLEY_TRY(
      record_acked(tx.db, std::span<const std::int64_t>(tx.acked_added).subspan(first_acked)));
  return count;
}

namespace {

// False (and the transaction to be rolled back) when the acked table's range holds a seq that
// is not in `seqs`.
Result<bool> delete_acked_range_in_tx(Db& db, std::span<const std::int64_t> seqs) {
  // `seqs` are the acked table's smallest, in order: each statement takes the whole range at
  // once (a statement per envelope cost more than deleting its row). The envelopes' rows are
  // found by primary key from the acked table's range; if that range holds any seq that is not
  // in `seqs`, the count below tells, and the caller rolls back.
  PARLEY_ASSIGN_OR_RETURN(
      Stmt rows,
      db.prepare("DELETE FROM envelopes WHERE seq IN (SELECT seq FROM acked WHERE seq <= ?1)",
                 "delete acknowledged envelopes"));
  rows.bind(1, seqs.back());
  PARLEY_TRY(rows.run());
  PARLEY_ASSIGN_OR_RETURN(
      Stmt log, db.prepare("DELETE FROM acked WHERE seq <= ?1", "forget acknowledgements"));
  log.bind(1, seqs.back());
  PARLEY_TRY(log.run());
  return db.changes() == static_cast<std::int64_t>(seqs.size());
}

// The same one seq at a time: only what `seqs` names.
Status delete_acked_each_in_tx(Db& db, std::span<const std::int64_t> seqs) {
  for (std::int64_t seq : seqs) {
    PARLEY_ASSIGN_OR_RETURN(Stmt rows, db.prepare("DELETE FROM envelopes WHERE seq = ?1",
                                                  "delete acknowledged envelope"));
    rows.bind(1, seq);
    PARLEY_TRY(rows.run());
    PARLEY_ASSIGN_OR_RETURN(
        Stmt log, db.prepare("DELETE FROM acked WHERE seq = ?1", "forget acknowledgement"));
    log.bind(1, seq);
    PARLEY_TRY(log.run());
  }
  return Status::ok();
}

// Runs `body` between BEGIN IMMEDIATE and COMMIT, rolling back on failure.
Status run_deletion_transaction(Db& db, const std::function<Status()>& body) {
  Status s = db.run("BEGIN IMMEDIATE", "begin deleting acknowledged envelopes");
  if (s.is_ok()) s = body();
  if (s.is_ok()) s = db.run("COMMIT", "commit deleting acknowledged envelopes");
  if (!s.is_ok() && db.in_transaction()) db.exec("ROLLBACK", "rollback").ignore();
  return s;
}

}  // namespace

Status delete_acked(Db& db, std::span<const std::int64_t> seqs) {
  if (seqs.empty()) return Status::ok();
  bool mismatch = false;
  Status s = run_deletion_transaction(db, [&]() -> Status {
    PARLEY_ASSIGN_OR_RETURN(bool matched, delete_acked_range_in_tx(db, seqs));
    mismatch = !matched;
    return matched ? Status::ok()
                   : make_error(ErrorCode::kInternal, "store: the acked table holds other seqs");
  });
  // A seq in the table that memory does not hold (put there behind the store's back, e.g. by a
  // restored file) would fail every run by range, and the list would grow until a restart:
  // these seqs are deleted one by one instead, and that seq stays for the next open.
  if (mismatch) {
    s = run_deletion_transaction(db, [&] { return delete_acked_each_in_tx(db, seqs); });
  }
  return s;
}

// ---- attachments ------------------------------------------------------------------------------

Result<AttachmentOutcome> op_create_attachment(Tx& tx, const Attachment& a, AttachmentQuota quota) {
  if (a.have > a.size) return make_error(ErrorCode::kInvalidArgument, "store: have > size");
  {
    // One row, kept by triggers (schema v7): every attachment not yet deleted.
    PARLEY_ASSIGN_OR_RETURN(
        Stmt s, tx.db.prepare("SELECT bytes, slots FROM attachment_usage WHERE account_id = ?1",
                              "read attachment usage"));
    s.bind(1, a.account_id);
    PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
    std::uint64_t used = row ? static_cast<std::uint64_t>(s.column_int(0)) : 0;
    std::uint64_t slots = row ? static_cast<std::uint64_t>(s.column_int(1)) : 0;
    const auto over = [&] {
      if (a.size > quota.bytes || used > quota.bytes - a.size) return AttachmentOutcome::kOverQuota;
      if (slots >= quota.count) return AttachmentOutcome::kTooMany;
      return AttachmentOutcome::kCreated;
    };
    if (over() != AttachmentOutcome::kCreated) {
      // Attachments past their expiry by the quota's clock (the one they are served and
      // deleted by) do not count, also before expire() deletes them. They are few or none:
      // those an expire() that failed, or has not yet run since the start, left. Read by the
      // covering index attachments_by_account.
      PARLEY_ASSIGN_OR_RETURN(
          Stmt e, tx.db.prepare("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM attachments WHERE "
                                "account_id = ?1 AND expires_ms <= ?2",
                                "sum expired attachments"));
      e.bind(1, a.account_id).bind(2, quota.now_ms);
      PARLEY_ASSIGN_OR_RETURN(bool expired, e.step());
      if (expired) {
        used -= std::min(used, static_cast<std::uint64_t>(e.column_int(0)));
        slots -= std::min(slots, static_cast<std::uint64_t>(e.column_int(1)));
      }
    }
    // Results, not errors: an error would roll the whole group commit back and run it again
    // operation by operation, and a client at its quota may ask again and again.
    if (const AttachmentOutcome o = over(); o != AttachmentOutcome::kCreated) return o;
  }
  PARLEY_ASSIGN_OR_RETURN(
      Stmt s, tx.db.prepare("INSERT INTO attachments (id, token_hash, account_id, size, have, "
                            "created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                            "ON CONFLICT (id) DO NOTHING",
                            "insert attachment"));
  s.bind_text(1, a.id).bind_blob(2, a.upload_token_hash).bind(3, a.account_id);
  s.bind(4, i64(a.size)).bind(5, i64(a.have)).bind(6, a.created_ms).bind(7, a.expires_ms);
  PARLEY_TRY(s.run());
  if (tx.db.changes() != 1) return make_error(ErrorCode::kAlreadyExists, "store: attachment exists");
  return AttachmentOutcome::kCreated;
}

Result<std::optional<Attachment>> op_find_attachment(Tx& tx, const std::string& id) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt s, tx.db.prepare("SELECT token_hash, account_id, size, have, created_ms, expires_ms "
                            "FROM attachments WHERE id = ?1",
                            "find attachment"));
  s.bind_text(1, id);
  PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
  if (!row) return std::optional<Attachment>();
  Attachment a;
  a.id = id;
  a.upload_token_hash = s.column_blob(0);
  a.account_id = s.column_int(1);
  a.size = static_cast<std::uint64_t>(s.column_int(2));
  a.have = static_cast<std::uint64_t>(s.column_int(3));
  a.created_ms = s.column_int(4);
  a.expires_ms = s.column_int(5);
  return std::optional<Attachment>(std::move(a));
}

Result<std::uint64_t> op_set_attachment_progress(Tx& tx, const std::string& id,
                                                 std::uint64_t have) {
  // Progress only moves forward: a connection cut late, after another finished the upload,
  // reports less than is recorded, and that must not make a complete attachment incomplete.
  // (SQLite returns the row even when MAX keeps the value.)
  PARLEY_ASSIGN_OR_RETURN(
      Stmt s, tx.db.prepare("UPDATE attachments SET have = MAX(have, ?2) WHERE id = ?1 AND "
                            "size >= ?2 RETURNING have",
                            "update attachment"));
  s.bind_text(1, id).bind(2, i64(have));
  PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
  if (row) {
    const std::uint64_t recorded = static_cast<std::uint64_t>(s.column_int(0));
    PARLEY_TRY(s.run());  // to the statement's end, so that the update is complete
    return recorded;
  }
  PARLEY_ASSIGN_OR_RETURN(std::optional<Attachment> a, op_find_attachment(tx, id));
  if (!a.has_value()) return not_found("store: no such attachment");
  return make_error(ErrorCode::kInvalidArgument, "store: progress beyond the attachment size");
}

// ---- housekeeping -----------------------------------------------------------------------------

namespace {

// now_ms - age_ms, or the lowest time there is: a reading near the bottom of the range must not
// wrap round to one that would delete everything.
std::int64_t older_than(std::int64_t now_ms, std::int64_t age_ms) {
  return saturating_sub(now_ms, age_ms);
}

}  // namespace

Result<std::vector<std::string>> op_expire(Tx& tx, std::int64_t now_ms, std::int64_t max_age_ms,
                                           std::int64_t dedup_ms) {
  {
    // Kept for the next start's housekeeping clock (Store::expiry_clock_at_open_ms).
    PARLEY_ASSIGN_OR_RETURN(Stmt s, tx.db.prepare("INSERT OR REPLACE INTO meta (key, value) "
                                                  "VALUES ('expiry_clock', ?1)",
                                                  "save the expiry clock"));
    s.bind(1, now_ms);
    PARLEY_TRY(s.run());
  }
  {
    // Each queue from its oldest envelope: seq order is storage order, so the expired ones are
    // a prefix (a clock step backwards only delays some until the next run).
    for (const QueueKey& key : tx.backend.queues.non_empty()) {
      bool young = false;
      std::int64_t after = 0;
      while (!young) {
        const std::vector<std::int64_t> seqs = tx.backend.queues.after(key, after, 256);
        if (seqs.empty()) break;
        for (std::int64_t seq : seqs) {
          PARLEY_ASSIGN_OR_RETURN(
              Stmt s, tx.db.prepare("DELETE FROM envelopes WHERE seq = ?1 AND stored_ms < ?2 "
                                    "RETURNING seq",
                                    "expire envelope"));
          s.bind(1, seq).bind(2, older_than(now_ms, max_age_ms));
          PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
          if (!row) {
            young = true;
            break;
          }
          forget_envelope(tx, key, seq);
          after = seq;
        }
      }
    }
  }
  {
    // The log is in insertion order: the expired keys are the rows before the first young one
    // (found by a scan from the oldest that stops there). A row stored while the clock was set
    // back stays until the young ones before it expire, in the index below too.
    PARLEY_ASSIGN_OR_RETURN(
        Stmt s, tx.db.prepare("DELETE FROM dedup WHERE id < IFNULL((SELECT id FROM dedup WHERE "
                              "created_ms >= ?1 ORDER BY id LIMIT 1), (SELECT MAX(id) + 1 FROM "
                              "dedup))",
                              "expire dedup keys"));
    s.bind(1, older_than(now_ms, dedup_ms));
    PARLEY_TRY(s.run());
    // Forgetting in memory is safe even if this transaction rolls back: a key that is in the
    // table but not in the index only costs a duplicate being stored, never a lost message.
    tx.backend.dedup.expire(older_than(now_ms, dedup_ms));
  }
  if (tx.backend.legacy_rows) {
    PARLEY_ASSIGN_OR_RETURN(Stmt s, tx.db.prepare("SELECT 1 FROM envelopes WHERE seq <= ?1 LIMIT 1",
                                                  "look for legacy envelopes"));
    s.bind(1, tx.backend.legacy_max_seq);
    PARLEY_ASSIGN_OR_RETURN(bool any, s.step());
    // Applied to Backend::legacy_rows only once this commits: a rollback brings them back.
    if (!any) tx.legacy_rows_gone = true;
  }
  {
    PARLEY_ASSIGN_OR_RETURN(
        Stmt s, tx.db.prepare("DELETE FROM invites WHERE expires_ms <= ?1", "expire invites"));
    s.bind(1, now_ms);
    PARLEY_TRY(s.run());
  }
  std::vector<std::string> ids;
  PARLEY_ASSIGN_OR_RETURN(
      Stmt s, tx.db.prepare("DELETE FROM attachments WHERE expires_ms <= ?1 RETURNING id",
                            "expire attachments"));
  s.bind(1, now_ms);
  for (;;) {
    PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
    if (!row) break;
    ids.push_back(s.column_text(0));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

Result<StatsDelta> read_gauges(Db& db, const Backend& backend) {
  StatsDelta g;
  PARLEY_ASSIGN_OR_RETURN(Stmt s, db.prepare("SELECT COUNT(*) FROM accounts", "count accounts"));
  PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
  if (row) g.accounts = s.column_int(0);
  g.envelopes = backend.queues.all().count;
  g.bytes = backend.queues.all().bytes;
  return g;
}

Status save_next_seq(Tx& tx) {
  if (tx.backend.next_seq <= tx.backend.seq_bound) return Status::ok();
  const std::int64_t bound = tx.backend.next_seq + kSeqReserve;
  PARLEY_ASSIGN_OR_RETURN(
      Stmt s, tx.db.prepare("UPDATE meta SET value = ?1 WHERE key = 'next_seq'", "save next seq"));
  s.bind(1, bound);
  PARLEY_TRY(s.run());
  tx.seq_bound = bound;
  return Status::ok();
}

Status load_backend(Db& db, Backend& backend) {
  for (const char* key : {"next_seq", "legacy_max_seq"}) {
    PARLEY_ASSIGN_OR_RETURN(Stmt s, db.prepare("SELECT value FROM meta WHERE key = ?1", "read meta"));
    s.bind_text(1, key);
    PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
    if (!row) return make_error(ErrorCode::kIo, "store: the meta table lacks a row");
    (std::string_view(key) == "next_seq" ? backend.next_seq : backend.legacy_max_seq) =
        s.column_int(0);
  }
  backend.seq_bound = backend.next_seq;
  {
    PARLEY_ASSIGN_OR_RETURN(
        Stmt s, db.prepare("SELECT value FROM meta WHERE key = 'expiry_clock'", "read meta"));
    PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
    if (row) backend.expiry_clock_ms = s.column_int(0);
  }
  {
    // Acknowledged envelopes whose rows were not deleted yet when the store stopped.
    std::vector<std::int64_t> seqs;
    {
      PARLEY_ASSIGN_OR_RETURN(
          Stmt s, db.prepare("SELECT seq FROM acked ORDER BY seq", "read the acked table"));
      for (;;) {
        PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
        if (!row) break;
        seqs.push_back(s.column_int(0));
      }
    }
    if (!seqs.empty()) PARLEY_TRY(delete_acked(db, seqs));
  }
  {
    PARLEY_ASSIGN_OR_RETURN(Stmt s, db.prepare("SELECT 1 FROM envelopes WHERE seq <= ?1 LIMIT 1",
                                               "look for legacy envelopes"));
    s.bind(1, backend.legacy_max_seq);
    PARLEY_ASSIGN_OR_RETURN(bool any, s.step());
    backend.legacy_rows = any;
  }
  {
    PARLEY_ASSIGN_OR_RETURN(Stmt s, db.prepare("SELECT seq, account_id, device_id, size, "
                                               "server_id, source FROM envelopes ORDER BY seq",
                                               "load queues"));
    for (;;) {
      PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
      if (!row) break;
      if (!backend.queues.load_envelope({s.column_int(1), u32(s.column_int(2))}, s.column_int(0),
                                        s.column_int(3), server_id_tag(s.column_blob_view(4)),
                                        s.column_text(5))) {
        return make_error(ErrorCode::kIo, "store: an envelope row is corrupt (its size)");
      }
    }
  }
  // The newest keys, oldest first, so the index evicts in the same order as it would have.
  PARLEY_ASSIGN_OR_RETURN(
      Stmt s, db.prepare("SELECT id, sender_account, sender_device, destination_account, "
                         "client_message_id, created_ms FROM (SELECT * FROM dedup ORDER BY id "
                         "DESC LIMIT ?1) ORDER BY id",
                         "load dedup keys"));
  s.bind(1, i64(backend.dedup_capacity));
  for (;;) {
    PARLEY_ASSIGN_OR_RETURN(bool row, s.step());
    if (!row) break;
    const Bytes cmid = s.column_blob(4);
    backend.dedup.insert(backend.dedup.hash(s.column_int(1), u32(s.column_int(2)),
                                            s.column_int(3), cmid),
                         s.column_int(0), s.column_int(5));
  }
  return Status::ok();
}

}  // namespace parley::store::internal
