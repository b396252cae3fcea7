#include "store/internal/sqlite_db.h"

#include <sqlite3.h>

#include "store/internal/wal_gather_vfs.h"

#include <limits>
#include <mutex>
#include <utility>

namespace parley::store::internal {
namespace {

constexpr int kBusyTimeoutMs = 5000;

}  // namespace

// ---- Stmt -----------------------------------------------------------------------------------

Stmt::Stmt(Stmt&& other) noexcept
    : stmt_(std::exchange(other.stmt_, nullptr)), busy_(std::exchange(other.busy_, nullptr)),
      what_(other.what_), bind_rc_(other.bind_rc_) {}

Stmt::~Stmt() {
  if (stmt_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  if (busy_ != nullptr) *busy_ = false;
}

void Stmt::note_bind(int rc) {
  if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
}

Stmt& Stmt::bind(int index, std::int64_t value) {
  note_bind(sqlite3_bind_int64(stmt_, index, value));
  return *this;
}

Stmt& Stmt::bind_text(int index, std::string_view value) {
  if (value.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    note_bind(SQLITE_TOOBIG);
    return *this;
  }
  note_bind(sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()),
                              SQLITE_TRANSIENT));
  return *this;
}

Stmt& Stmt::bind_blob(int index, ByteView value) {
  if (value.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    note_bind(SQLITE_TOOBIG);
    return *this;
  }
  // A zero-length blob must still be a BLOB (not NULL): SQLite needs a non-null pointer.
  static const std::uint8_t kEmpty = 0;
  const void* data = value.empty() ? &kEmpty : value.data();
  note_bind(sqlite3_bind_blob(stmt_, index, data, static_cast<int>(value.size()),
                              SQLITE_TRANSIENT));
  return *this;
}

Stmt& Stmt::bind_null(int index) {
  note_bind(sqlite3_bind_null(stmt_, index));
  return *this;
}

Result<bool> Stmt::step() {
  if (bind_rc_ != SQLITE_OK) return Db::error(bind_rc_, what_);
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return Db::error(rc, what_);
}

Status Stmt::run() {
  for (;;) {
    Result<bool> r = step();
    if (!r.has_value()) return r.error();
    if (!*r) return Status::ok();
  }
}

std::int64_t Stmt::column_int(int index) const { return sqlite3_column_int64(stmt_, index); }

std::string Stmt::column_text(int index) const {
  const unsigned char* p = sqlite3_column_text(stmt_, index);
  int n = sqlite3_column_bytes(stmt_, index);
  if (p == nullptr || n <= 0) return {};
  return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
}

Bytes Stmt::column_blob(int index) const {
  const ByteView v = column_blob_view(index);
  return Bytes(v.begin(), v.end());
}

ByteView Stmt::column_blob_view(int index) const {
  const void* p = sqlite3_column_blob(stmt_, index);
  int n = sqlite3_column_bytes(stmt_, index);
  if (p == nullptr || n <= 0) return {};
  return ByteView(static_cast<const std::uint8_t*>(p), static_cast<std::size_t>(n));
}

bool Stmt::column_is_null(int index) const {
  return sqlite3_column_type(stmt_, index) == SQLITE_NULL;
}

// ---- Db -------------------------------------------------------------------------------------

Status Db::error(int rc, std::string_view what) {
  // sqlite3_errstr is the generic text for the code; it never contains values from the data.
  std::string msg = "store: ";
  msg.append(what);
  msg.append(": ");
  msg.append(sqlite3_errstr(rc));
  return make_error(ErrorCode::kIo, std::move(msg));
}

Result<std::unique_ptr<Db>> Db::open(const std::string& path) {
  // Before SQLite initialises: no memory statistics, which otherwise take a global mutex on
  // every allocation (each connection is used by one thread; nothing reads the statistics).
  static std::once_flag configured;
  std::call_once(configured, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
  sqlite3* raw = nullptr;
  // The default VFS, but each commit's WAL frames are written with one call
  // (internal/wal_gather_vfs.h); if that VFS could not be registered, the default itself.
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           wal_gather_vfs());
  if (rc != SQLITE_OK) {
    sqlite3_close_v2(raw);  // a handle is returned even on failure (or null: harmless)
    return error(rc, "open database");
  }
  std::unique_ptr<Db> db(new Db(raw));
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);

  // WAL: readers (backups) never block the writer; FULL: every COMMIT is fsynced, WAL included,
  // so an acknowledged write survives power loss, not only a process crash.
  {
    PARLEY_ASSIGN_OR_RETURN(Stmt wal, db->prepare("PRAGMA journal_mode=WAL", "set journal mode"));
    PARLEY_ASSIGN_OR_RETURN(bool row, wal.step());
    if (!row || wal.column_text(0) != "wal") {
      return make_error(ErrorCode::kIo, "store: the database does not support WAL mode");
    }
  }
  // temp_store=MEMORY keeps the statement journal of the per-operation savepoints in memory:
  // by default it spills to a file in /var/tmp past 64 KiB, which cost two pwrite calls for
  // every page an operation touched (most of the store's time, measured with
  // parley-bench-store). cache_size: 64 MiB of pages, so a batch's index pages stay cached.
  // journal_size_limit: the WAL is cut back to 64 MiB when it starts over (the store's writer
  // raises this above its checkpoint bound: wal_size_limit in internal/sqlite_store.h).
  // wal_autocheckpoint: a checkpoint every 16,384 pages (64 MiB) instead of
  // SQLite's 1,000: the index pages every commit rewrites are copied into the database once per
  // checkpoint, so fewer checkpoints mean far fewer writes (parley-bench-store: enqueue +19 %,
  // drain +50 %). Durability is unchanged: every COMMIT still syncs the WAL. (The store's own
  // connection replaces this with on_wal_commit and checkpoints on another thread:
  // internal/checkpointer.h. It applies to connections that write without it: migrations.)
  // secure_delete=ON: a deleted row (a delivered envelope: who wrote to whom and when, and
  // the ciphertext) is overwritten with zeros in its page, so the database file of a seized
  // server does not keep what was already delivered. Debian's SQLite has it on by default; it
  // is set here so that no other build turns it off. It costs nothing measurable here
  // (parley-bench-store, docs/benchmarks.md, session 17).
  PARLEY_TRY(
      db->exec("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; "
               "PRAGMA journal_size_limit=67108864; PRAGMA temp_store=MEMORY; "
               "PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint=16384; "
               "PRAGMA secure_delete=ON;",
               "set pragmas"));
  return db;
}

Db::~Db() {
  for (auto& [sql, entry] : cache_) sqlite3_finalize(entry.stmt);
  cache_.clear();
  sqlite3_close_v2(db_);
}

Result<Stmt> Db::prepare(std::string_view sql, std::string_view what) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      return error(rc, what);
    }
    it = cache_.emplace(sql, Entry{stmt, false}).first;
  }
  if (it->second.busy) return make_error(ErrorCode::kInternal, "store: statement already in use");
  it->second.busy = true;
  return Stmt(it->second.stmt, &it->second.busy, what);
}

Status Db::run(std::string_view sql, std::string_view what) {
  PARLEY_ASSIGN_OR_RETURN(Stmt stmt, prepare(sql, what));
  return stmt.run();
}

Status Db::exec(const char* sql, std::string_view what) {
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return error(rc, what);
  return Status::ok();
}

std::int64_t Db::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }
std::int64_t Db::changes() const { return sqlite3_changes64(db_); }
bool Db::in_transaction() const { return sqlite3_get_autocommit(db_) == 0; }

Status Db::checkpoint(int& frames) {
  int log = 0;
  int done = 0;
  const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
  frames = log;
  if (rc != SQLITE_OK) return error(rc, "checkpoint");
  return Status::ok();
}

void Db::on_wal_commit(std::function<void(int)> hook) {
  wal_hook_ = std::move(hook);
  sqlite3_wal_hook(
      db_,
      [](void* self, sqlite3*, const char*, int frames) {
        static_cast<Db*>(self)->wal_hook_(frames);
        return SQLITE_OK;
      },
      this);
}

}  // namespace parley::store::internal
