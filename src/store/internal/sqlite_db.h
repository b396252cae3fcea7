#pragma once
// Internal to src/store: a thin RAII wrapper over one sqlite3 connection with a cache of
// prepared statements. Only src/store includes this header (and sqlite3.h).
//
// Thread-safety: none. A Db is owned and used by exactly one thread (the store's backend thread,
// or the opening thread before that thread starts). Errors are returned as Status kIo whose
// message names the step and SQLite's generic error string, never a value from the database.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/bytes.h"
#include "base/result.h"

struct sqlite3;
struct sqlite3_stmt;

namespace parley::store::internal {

class Db;

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
  // The same bytes without a copy, valid until the next step() or the end of this borrow.
  ByteView column_blob_view(int index) const;
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
  // Opens (creating if missing) the database file and applies the connection PRAGMAs:
  // journal_mode=WAL, synchronous=FULL, foreign_keys=ON, busy_timeout.
  static Result<std::unique_ptr<Db>> open(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // A cached statement for `sql`; the cache is keyed by the text, which must outlive the Db
  // unchanged (string literals). `what` names the step in error messages. A statement is borrowed
  // by one Stmt at a time: preparing the same text while it is borrowed is a bug (kInternal).
  Result<Stmt> prepare(std::string_view sql, std::string_view what);
  // Runs one cached statement that returns no rows (BEGIN, SAVEPOINT, COMMIT...).
  Status run(std::string_view sql, std::string_view what);
  // Runs one or more statements without caching (migrations, PRAGMAs).
  Status exec(const char* sql, std::string_view what);

  std::int64_t last_insert_rowid() const;
  std::int64_t changes() const;
  // True while a transaction is open (false when SQLite rolled one back on its own).
  bool in_transaction() const;

  // A PASSIVE checkpoint: copies into the database what WAL frames it can without waiting for
  // the writer or blocking it. kIo when it fails (busy: another checkpoint is running).
  // `frames`: the frames in the WAL when it ran.
  Status checkpoint(int& frames);
  // After each commit of this connection, on its thread, calls `hook` with the frames now in
  // the WAL. This replaces SQLite's automatic checkpoints on this connection.
  void on_wal_commit(std::function<void(int)> hook);

  // The Status for a SQLite result code: kIo "store: <what>: <sqlite error string>".
  static Status error(int rc, std::string_view what);

 private:
  explicit Db(sqlite3* db) : db_(db) {}

  sqlite3* db_;
  std::function<void(int)> wal_hook_;
  struct Entry {
    sqlite3_stmt* stmt = nullptr;
    bool busy = false;
  };
  // Texts are hashed by address and length, not by their characters (hashing a statement's
  // text on every use cost more than binding its parameters); keys still compare by content.
  // The same text at two addresses just gets two entries.
  struct AddressHash {
    std::size_t operator()(std::string_view sql) const noexcept {
      return std::hash<const void*>()(sql.data()) ^ (sql.size() * 0x9E3779B97F4A7C15ull);
    }
  };
  std::unordered_map<std::string_view, Entry, AddressHash> cache_;
};

}  // namespace parley::store::internal
