// LocalStore: transactions, the identity store, the account and contacts.
#include "client/local_store.h"

#include <string>
#include <utility>

#include "client/internal/db.h"

namespace parley::client {

using internal::Stmt;
using protocol::ProtocolAddress;

LocalStore::LocalStore(Profile& profile, const Clock& clock, Rng& rng)
    : db_(profile.db()), clock_(clock), rng_(rng) {}

// ---- Transactions -------------------------------------------------------------------------------

Status LocalStore::run_in_transaction(const std::function<Status()>& body) {
  // Keeps depth_ right on every return path.
  struct Level {
    explicit Level(int& d) : depth(d) { ++depth; }
    ~Level() { --depth; }
    int& depth;
  };
  if (depth_ == 0) {
    PARLEY_ASSIGN_OR_RETURN(internal::Transaction tx, internal::Transaction::begin(db_));
    Status s;
    {
      Level level(depth_);
      s = body();
    }
    if (!s.is_ok()) {
      recent_.reset();
      return s;  // the Transaction rolls back as it goes out of scope
    }
    Status committed = tx.commit();
    if (!committed.is_ok()) recent_.reset();
    return committed;
  }
  const std::string name = "parley_sp" + std::to_string(depth_);
  PARLEY_TRY(db_.exec("SAVEPOINT " + name, "open savepoint"));
  Status s;
  {
    Level level(depth_);
    s = body();
  }
  if (!s.is_ok()) {
    // ROLLBACK TO undoes this level's writes but keeps the savepoint open; RELEASE closes it.
    db_.exec("ROLLBACK TO " + name + "; RELEASE " + name, "roll back savepoint").ignore();
    recent_.reset();
    return s;
  }
  return db_.exec("RELEASE " + name, "release savepoint");
}

// ---- Account ------------------------------------------------------------------------------------

Status LocalStore::save_account(const Account& a) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt,
      db_.prepare("INSERT OR REPLACE INTO account (id, name, server_address, server_host, "
                  "server_port, server_pin, server_ws_path, device_id, registration_id, "
                  "identity_private, auth_seed, next_pre_key_id, signed_pre_key_id) "
                  "VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                  "save account"));
  if (a.auth.secret_key.size() != 64) {
    return make_error(ErrorCode::kInvalidArgument, "account: malformed auth key");
  }
  // libsodium's Ed25519 secret key is seed || public key: the seed alone restores both.
  const ByteView auth_seed = a.auth.secret_key.view().first(32);
  stmt.bind_text(1, a.name)
      .bind_text(2, a.server_address)
      .bind_text(3, a.server_host)
      .bind_text(4, a.server_port)
      .bind_text(5, a.server_pin)
      .bind_text(6, a.server_ws_path)
      .bind(7, a.device_id)
      .bind(8, a.registration_id)
      .bind_blob(9, a.identity.private_key.bytes().view())
      .bind_blob(10, auth_seed)
      .bind(11, a.next_pre_key_id)
      .bind(12, a.signed_pre_key_id);
  return stmt.run();
}

Result<Account> LocalStore::load_account() {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt,
      db_.prepare("SELECT name, server_address, server_host, server_port, server_pin, "
                  "server_ws_path, device_id, registration_id, identity_private, auth_seed, "
                  "next_pre_key_id, signed_pre_key_id FROM account WHERE id = 1",
                  "load account"));
  PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
  if (!row) return make_error(ErrorCode::kNotRegistered, "this profile has no account yet");
  Account a;
  a.name = stmt.column_text(0);
  a.server_address = stmt.column_text(1);
  a.server_host = stmt.column_text(2);
  a.server_port = stmt.column_text(3);
  a.server_pin = stmt.column_text(4);
  a.server_ws_path = stmt.column_text(5);
  a.device_id = static_cast<std::uint32_t>(stmt.column_int(6));
  a.registration_id = static_cast<std::uint32_t>(stmt.column_int(7));
  SecretBytes identity = stmt.column_secret(8);
  SecretBytes seed = stmt.column_secret(9);
  a.next_pre_key_id = static_cast<std::uint32_t>(stmt.column_int(10));
  a.signed_pre_key_id = static_cast<std::uint32_t>(stmt.column_int(11));
  auto kp = crypto::KeyPair::from_private(identity.view());
  if (!kp.has_value()) return make_error(ErrorCode::kMalformed, "account: bad identity key");
  a.identity = std::move(kp).value();
  auto auth = crypto::Ed25519KeyPair::from_seed(seed.view());
  if (!auth.has_value()) return make_error(ErrorCode::kMalformed, "account: bad auth key");
  a.auth = std::move(auth).value();
  return a;
}

// ---- IdentityKeyStore ---------------------------------------------------------------------------

Result<crypto::KeyPair> LocalStore::identity_key_pair() {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("SELECT identity_private FROM account WHERE id = 1", "load identity"));
  PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
  if (!row) return make_error(ErrorCode::kNotRegistered, "this profile has no identity key yet");
  SecretBytes scalar = stmt.column_secret(0);
  auto kp = crypto::KeyPair::from_private(scalar.view());
  if (!kp.has_value()) return make_error(ErrorCode::kMalformed, "account: bad identity key");
  return kp;
}

Result<std::uint32_t> LocalStore::local_registration_id() {
  PARLEY_ASSIGN_OR_RETURN(Stmt stmt, db_.prepare("SELECT registration_id FROM account WHERE id = 1",
                                                 "load registration id"));
  PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
  if (!row) return make_error(ErrorCode::kNotRegistered, "this profile has no account yet");
  return static_cast<std::uint32_t>(stmt.column_int(0));
}

Result<std::optional<crypto::PublicKey>> LocalStore::get_identity(const ProtocolAddress& address) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("SELECT identity_key FROM contacts WHERE name = ?1 AND device_id = ?2",
                             "load contact identity"));
  stmt.bind_text(1, address.name).bind(2, address.device_id);
  PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
  if (!row) return std::optional<crypto::PublicKey>();
  auto key = crypto::PublicKey::deserialize(stmt.column_blob(0));
  if (!key.has_value()) return make_error(ErrorCode::kMalformed, "contacts: bad identity key");
  return std::optional<crypto::PublicKey>(*key);
}

Result<bool> LocalStore::is_trusted_identity(const ProtocolAddress& address,
                                             const crypto::PublicKey& identity,
                                             protocol::Direction) {
  // Trust on first use; afterwards only the recorded key (a changed key stays untrusted until
  // save_identity records it).
  PARLEY_ASSIGN_OR_RETURN(std::optional<crypto::PublicKey> known, get_identity(address));
  return !known.has_value() || *known == identity;
}

Result<bool> LocalStore::save_identity(const ProtocolAddress& address,
                                       const crypto::PublicKey& identity) {
  bool replaced = false;
  Status s = run_in_transaction([&]() -> Status {
    PARLEY_ASSIGN_OR_RETURN(std::optional<crypto::PublicKey> known, get_identity(address));
    if (known.has_value() && *known == identity) return Status::ok();
    if (!known.has_value()) {
      PARLEY_ASSIGN_OR_RETURN(Stmt ins,
                              db_.prepare("INSERT INTO contacts (name, device_id, identity_key, "
                                          "first_seen_ms) VALUES (?1, ?2, ?3, ?4)",
                                          "add contact"));
      ins.bind_text(1, address.name)
          .bind(2, address.device_id)
          .bind_blob(3, identity.serialize())
          .bind(4, clock_.now_ms());
      return ins.run();
    }
    replaced = true;
    PARLEY_ASSIGN_OR_RETURN(Stmt upd,
                            db_.prepare("UPDATE contacts SET identity_key = ?3, verified = 0, "
                                        "identity_changed = 0 WHERE name = ?1 AND device_id = ?2",
                                        "replace contact identity"));
    upd.bind_text(1, address.name).bind(2, address.device_id).bind_blob(3, identity.serialize());
    return upd.run();
  });
  if (!s.is_ok()) return s;
  return replaced;
}

// ---- Contacts -----------------------------------------------------------------------------------

Status LocalStore::mark_identity_changed(const ProtocolAddress& address) {
  PARLEY_ASSIGN_OR_RETURN(Stmt stmt,
                          db_.prepare("UPDATE contacts SET identity_changed = 1, verified = 0 "
                                      "WHERE name = ?1 AND device_id = ?2",
                                      "mark identity changed"));
  stmt.bind_text(1, address.name).bind(2, address.device_id);
  PARLEY_TRY(stmt.run());
  if (db_.changes() == 0) return make_error(ErrorCode::kNotFound, "no such contact");
  return Status::ok();
}

Status LocalStore::trust_contact(const ProtocolAddress& address, const crypto::PublicKey& identity,
                                 bool verified) {
  return run_in_transaction([&]() -> Status {
    Result<bool> saved = save_identity(address, identity);
    if (!saved.has_value()) return saved.error();
    PARLEY_ASSIGN_OR_RETURN(Stmt stmt,
                            db_.prepare("UPDATE contacts SET verified = ?3, identity_changed = 0 "
                                        "WHERE name = ?1 AND device_id = ?2",
                                        "trust contact"));
    stmt.bind_text(1, address.name).bind(2, address.device_id).bind(3, verified ? 1 : 0);
    return stmt.run();
  });
}

Result<bool> LocalStore::identity_changed(const std::string& name) {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("SELECT 1 FROM contacts WHERE name = ?1 AND identity_changed = 1 "
                             "LIMIT 1",
                             "check identity change"));
  stmt.bind_text(1, name);
  return stmt.step();
}

Result<std::vector<Contact>> LocalStore::list_contacts() {
  PARLEY_ASSIGN_OR_RETURN(
      Stmt stmt, db_.prepare("SELECT name, device_id, identity_key, verified, identity_changed, "
                             "first_seen_ms FROM contacts ORDER BY name, device_id",
                             "list contacts"));
  std::vector<Contact> out;
  for (;;) {
    PARLEY_ASSIGN_OR_RETURN(bool row, stmt.step());
    if (!row) break;
    auto key = crypto::PublicKey::deserialize(stmt.column_blob(2));
    if (!key.has_value()) return make_error(ErrorCode::kMalformed, "contacts: bad identity key");
    Contact c;
    c.address =
        ProtocolAddress{stmt.column_text(0), static_cast<std::uint32_t>(stmt.column_int(1))};
    c.identity_key = *key;
    c.verified = stmt.column_int(3) != 0;
    c.identity_changed = stmt.column_int(4) != 0;
    c.first_seen_ms = stmt.column_int(5);
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace parley::client
