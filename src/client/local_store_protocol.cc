// LocalStore: prekeys, signed prekeys, sessions and sender keys. Records are stored in the
// protocol's own serialization; the serialized copies hold private keys, so they are wiped.
#include <utility>

#include "client/internal/db.h"
#include "client/internal/wipe.h"
#include "client/local_store.h"

namespace parley::client {

using internal::Stmt;
using internal::WipeOnExit;
using protocol::ProtocolAddress;

namespace {

// Runs a single-row SELECT whose first column is a record BLOB; nullopt when there is no row.
// The returned bytes are wiped by the caller (WipeOnExit).
Result<std::optional<Bytes>> load_blob(Stmt& stmt) {
  PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
  if (!row) return std::optional<Bytes>();
  return std::optional<Bytes>(stmt.column_blob(0));
}

}  // namespace

// ---- PreKeyStore
// ----------------------------------------------------------------------------------

Result<protocol::PreKeyRecord> LocalStore::load_pre_key(std::uint32_t id) {
  PARLEY_ASSIGN_OR_RETURN(Stmt stmt,
                          db_.prepare("SELECT record FROM pre_keys WHERE id = ?1", "load prekey"));
  stmt.bind(1, id);
  PARLEY_ASSIGN_OR_RETURN(std::optional<Bytes> bytes, load_blob(stmt));
  if (!bytes) return make_error(ErrorCode::kUnknownPreKey, "unknown one-time prekey");
  WipeOnExit wipe(*bytes);
  return protocol::PreKeyRecord::deserialize(*bytes);
}

Status LocalStore::store_pre_key(const protocol::PreKeyRecord& record) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt,
      db_.prepare("INSERT OR REPLACE INTO pre_keys (id, record) VALUES (?1, ?2)", "store prekey"));
  Bytes bytes = record.serialize();
  WipeOnExit wipe(bytes);
  stmt.bind(1, record.id).bind_blob(2, bytes);
  return stmt.run();
}

Status LocalStore::remove_pre_key(std::uint32_t id) {
  PARLEY_ASSIGN_OR_RETURN(Stmt stmt,
                          db_.prepare("DELETE FROM pre_keys WHERE id = ?1", "remove prekey"));
  stmt.bind(1, id);
  return stmt.run();
}

// ---- SignedPreKeyStore --------------------------------------------------------------------------

Result<protocol::SignedPreKeyRecord> LocalStore::load_signed_pre_key(std::uint32_t id) {
  PARLEY_ASSIGN_OR_RETURN(Stmt stmt, db_.prepare("SELECT record FROM signed_pre_keys WHERE id = ?1",
                                                 "load signed prekey"));
  stmt.bind(1, id);
  PARLEY_ASSIGN_OR_RETURN(std::optional<Bytes> bytes, load_blob(stmt));
  if (!bytes) return make_error(ErrorCode::kUnknownSignedPreKey, "unknown signed prekey");
  WipeOnExit wipe(*bytes);
  return protocol::SignedPreKeyRecord::deserialize(*bytes);
}

Status LocalStore::store_signed_pre_key(const protocol::SignedPreKeyRecord& record) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("INSERT OR REPLACE INTO signed_pre_keys (id, record) VALUES (?1, ?2)",
                             "store signed prekey"));
  Bytes bytes = record.serialize();
  WipeOnExit wipe(bytes);
  stmt.bind(1, record.id).bind_blob(2, bytes);
  return stmt.run();
}

Status LocalStore::remove_signed_pre_key(std::uint32_t id) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("DELETE FROM signed_pre_keys WHERE id = ?1", "remove signed prekey"));
  stmt.bind(1, id);
  return stmt.run();
}

// ---- SessionStore -------------------------------------------------------------------------------

Result<std::optional<protocol::SessionRecord>> LocalStore::load_session(
    const ProtocolAddress& address) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("SELECT record FROM sessions WHERE name = ?1 AND device_id = ?2",
                             "load session"));
  stmt.bind_text(1, address.name).bind(2, address.device_id);
  PARLEY_ASSIGN_OR_RETURN(std::optional<Bytes> bytes, load_blob(stmt));
  if (!bytes) return std::optional<protocol::SessionRecord>();
  WipeOnExit wipe(*bytes);
  PARLEY_ASSIGN_OR_RETURN(protocol::SessionRecord record,
                          protocol::SessionRecord::deserialize(*bytes));
  return std::optional<protocol::SessionRecord>(std::move(record));
}

Status LocalStore::store_session(const ProtocolAddress& address, protocol::SessionRecord record) {
  PARLEY_ASSIGN_OR_RETURN(Stmt stmt,
                          db_.prepare("INSERT OR REPLACE INTO sessions (name, device_id, record) "
                                      "VALUES (?1, ?2, ?3)",
                                      "store session"));
  Bytes bytes = record.serialize();
  WipeOnExit wipe(bytes);
  stmt.bind_text(1, address.name).bind(2, address.device_id).bind_blob(3, bytes);
  return stmt.run();
}

// ---- SenderKeyStore -----------------------------------------------------------------------------

Result<std::optional<protocol::SenderKeyRecord>> LocalStore::load_sender_key(
    const protocol::SenderKeyName& name) {
  PARLEY_ASSIGN_OR_RETURN(Stmt stmt,
                          db_.prepare("SELECT record FROM sender_keys WHERE group_id = ?1 AND "
                                      "sender_name = ?2 AND sender_device = ?3",
                                      "load sender key"));
  stmt.bind_text(1, name.group_id).bind_text(2, name.sender.name).bind(3, name.sender.device_id);
  PARLEY_ASSIGN_OR_RETURN(std::optional<Bytes> bytes, load_blob(stmt));
  if (!bytes) return std::optional<protocol::SenderKeyRecord>();
  WipeOnExit wipe(*bytes);
  PARLEY_ASSIGN_OR_RETURN(protocol::SenderKeyRecord record,
                          protocol::SenderKeyRecord::deserialize(*bytes));
  return std::optional<protocol::SenderKeyRecord>(std::move(record));
}

Status LocalStore::store_sender_key(const protocol::SenderKeyName& name,
                                    const protocol::SenderKeyRecord& record) {
  PARLEY_ASSIGN_OR_RETURN(Stmt stmt,
                          db_.prepare("INSERT OR REPLACE INTO sender_keys (group_id, sender_name, "
                                      "sender_device, record) VALUES (?1, ?2, ?3, ?4)",
                                      "store sender key"));
  Bytes bytes = record.serialize();
  WipeOnExit wipe(bytes);
  stmt.bind_text(1, name.group_id)
      .bind_text(2, name.sender.name)
      .bind(3, name.sender.device_id)
      .bind_blob(4, bytes);
  return stmt.run();
}

}  // namespace parley::client
