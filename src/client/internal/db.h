#pragma once
// Internal to src/client: a thin RAII wrapper over one SQLCipher connection, with a cache of
// prepared statements and a transaction guard. Only src/client includes this header (and
// <sqlcipher/sqlite3.h>); the client never links the server's SQLite wrapper, because SQLCipher
// exports the same symbols as SQLite.
//
// Thread-safety: none. A Db is owned and used by one thread at a time. Errors are Status values
// whose message names the step and SQLite's generic error string, never a value from the
// database:
//   kAlreadyExists     a UNIQUE or PRIMARY KEY constraint failed;
//   kUnavailable       the database is locked by another connection (after the busy timeout);
//   kResourceExhausted the disk is full;
//   kIo                anything else (I/O, corruption, a wrong key, a failed constraint).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/bytes.h"
#include "base/result.h"
#include "base/secret_bytes.h"

struct sqlite3;
struct sqlite3_stmt;

namespace parley::client::internal {

// A borrowed, cached statement. Resets it and clears its bindings when destroyed, so the next
// user starts clean. Valid only while its Db is alive; not copyable.
class Stmt {
 public:
  Stmt(sqlite3_stmt* stmt, bool* busy, std::string_view what)
      : stmt_(stmt), busy_(busy), what_(what) {}
  Stmt(Stmt&& other) noexcept;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt();

  // Binding (1-based). A failed bind is remembered and reported by step()/run().
  Stmt& bind(int index, std::int64_t value);
  Stmt& bind_text(int index, std::string_view value);
  Stmt& bind_blob(int index, ByteView value);
  Stmt& bind_null(int index);

  // One step: true when a row is available, false when done.
  Result<bool> step();
  // Steps to completion, ignoring rows.
  Status run();

  std::int64_t column_int(int index) const;
  std::string column_text(int index) const;
  Bytes column_blob(int index) const;
  // Copies a BLOB straight into zeroizing memory (no intermediate Bytes).
  SecretBytes column_secret(int index) const;
  bool column_is_null(int index) const;

 private:
  void note_bind(int rc);

  sqlite3_stmt* stmt_;
  bool* busy_;  // the cache entry's in-use flag, cleared when this borrow ends
  std::string_view what_;
  int bind_rc_ = 0;  // SQLITE_OK
};

class Db {
 public:
  // Opens (creating if missing) the database file. No PRAGMA is run: the caller must key the
  // connection (set_key) before anything reads the file, then call configure().
  static Result<std::unique_ptr<Db>> open(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Keys the connection with a raw 32-byte key (PRAGMA key = "x'<hex>'": SQLCipher uses it as
  // the page key directly, without its own KDF). The hex text is built and wiped here.
  Status set_key(const SecretBytes& key);
  // Re-encrypts the whole database under `key` (PRAGMA rekey), same raw-key form.
  Status rekey(const SecretBytes& key);
  // Reads sqlite_master: false when the key does not decrypt the file (SQLITE_NOTADB), which is
  // how SQLCipher reports a wrong key. Reads nothing else and writes nothing.
  Result<bool> key_opens_database();
  // Applies the connection settings: journal_mode=WAL, synchronous=FULL, foreign_keys=ON.
  Status configure();

  // A cached statement for `sql`; the cache is keyed by the text, which must outlive the Db
  // (string literals). `what` names the step in error messages. A statement is borrowed by one
  // Stmt at a time: preparing the same text while it is borrowed is a bug (kInternal).
  Result<Stmt> prepare(std::string_view sql, std::string_view what);
  // Runs one or more statements without caching (migrations, PRAGMAs, savepoints).
  Status exec(const std::string& sql, std::string_view what);

  std::int64_t last_insert_rowid() const;
  int changes() const;
  // True while a transaction is open (false when SQLite rolled one back on its own).
  bool in_transaction() const;

  // The Status for a SQLite result code (see the mapping at the top of this file).
  static Status error(int rc, std::string_view what);

 private:
  explicit Db(sqlite3* db) : db_(db) {}
  Status run_key_pragma(const char* pragma, const SecretBytes& key, std::string_view what);

  sqlite3* db_;
  struct Entry {
    sqlite3_stmt* stmt = nullptr;
    bool busy = false;
  };
  std::unordered_map<std::string_view, Entry> cache_;
};

// BEGIN IMMEDIATE on construction (through begin()), ROLLBACK on destruction unless committed.
// IMMEDIATE takes the write lock up front, so a transaction never fails half-way with
// SQLITE_BUSY when it first writes. Not nestable: LocalStore layers savepoints on top.
class Transaction {
 public:
  static Result<Transaction> begin(Db& db);
  Transaction(Transaction&& other) noexcept;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction();

  // COMMIT. On failure the transaction is rolled back (by the destructor) and the error returned.
  Status commit();

 private:
  explicit Transaction(Db* db) : db_(db) {}
  Db* db_;  // null once committed or moved from
};

}  // namespace parley::client::internal
