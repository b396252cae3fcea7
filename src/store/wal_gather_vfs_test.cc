// The WAL-gathering VFS (internal/wal_gather_vfs.h) on real SQLite files: a commit's frames
// reach the file in one write, every other connection sees exactly what was committed, a
// transaction that spilled and rolled back leaves nothing behind, and a write that fails fails
// its commit and publishes nothing, also when the disk is full for a moment only.
#include "store/internal/wal_gather_vfs.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include "store/internal/sqlite_db.h"

namespace parley::store::internal {
namespace {

namespace fs = std::filesystem;

// A full disk, for a moment: the VFS under test wraps the default VFS it finds when it is first
// used, and this file makes that one a copy of SQLite's own whose WAL files fail one chosen
// write with SQLITE_FULL (what the default VFS returns on ENOSPC), or one chosen sync with an
// I/O error; every other write and sync, and everything else, is SQLite's. It is registered before
// main, so before the first Db::open; until a test arms it, it changes nothing.
namespace full_disk {

int g_fail_in = 0;   // the WAL write that fails: 1 = the next one; 0 = none
int g_failures = 0;  // failures made so far
int g_fail_sync_in = 0;  // the WAL sync that fails with an I/O error: 1 = the next one
sqlite3_vfs* g_real = nullptr;
const sqlite3_io_methods* g_real_io = nullptr;
sqlite3_io_methods g_io;
sqlite3_vfs g_vfs;

int write(sqlite3_file* file, const void* p, int n, sqlite3_int64 offset) {
  if (g_fail_in > 0 && --g_fail_in == 0) {
    ++g_failures;
    return SQLITE_FULL;
  }
  return g_real_io->xWrite(file, p, n, offset);
}

int sync(sqlite3_file* file, int flags) {
  if (g_fail_sync_in > 0 && --g_fail_sync_in == 0) return SQLITE_IOERR_FSYNC;
  return g_real_io->xSync(file, flags);
}

int open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* file, int flags, int* out) {
  const int rc = g_real->xOpen(g_real, name, file, flags, out);
  if (rc != SQLITE_OK || (flags & SQLITE_OPEN_WAL) == 0 || file->pMethods == nullptr) return rc;
  if (g_real_io == nullptr) {
    g_real_io = file->pMethods;
    g_io = *g_real_io;
    g_io.xWrite = write;
    g_io.xSync = sync;
  }
  if (file->pMethods == g_real_io) file->pMethods = &g_io;
  return rc;
}

// The base of the VFS under test. (Registering initialises SQLite, so Db::open's
// sqlite3_config of memory statistics is refused in this test: it changes nothing here.)
const bool g_registered = [] {
  g_real = sqlite3_vfs_find(nullptr);
  if (g_real == nullptr) return false;
  g_vfs = *g_real;
  g_vfs.pNext = nullptr;
  g_vfs.zName = "parley-test-full-disk";
  g_vfs.xOpen = open;
  return sqlite3_vfs_register(&g_vfs, /*makeDflt=*/1) == SQLITE_OK;
}();

}  // namespace full_disk

class WalGatherVfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "parley-walgather-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = (fs::path(dir_) / "db.sqlite").string();
  }
  void TearDown() override {
    // Every commit of the test was written at its commit frame, none by the check.
    EXPECT_EQ(wal_gather_counts().late, 0u);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::unique_ptr<Db> open() {
    auto db = Db::open(path_);
    EXPECT_TRUE(db.has_value()) << db.error().message();
    return db.has_value() ? std::move(db).value() : nullptr;
  }

  static std::int64_t query_int(Db& db, const char* sql) {
    auto stmt = db.prepare(sql, "query");
    if (!stmt.has_value()) return -1;
    auto row = stmt->step();
    return row.has_value() && *row ? stmt->column_int(0) : -1;
  }

  static std::string integrity(Db& db) {
    auto stmt = db.prepare("PRAGMA integrity_check", "integrity");
    if (!stmt.has_value()) return "prepare failed";
    auto row = stmt->step();
    return row.has_value() && *row ? stmt->column_text(0) : "no row";
  }

  // Inserts `rows` rows of `bytes` random bytes into the transaction that is open.
  static Status add_rows(Db& db, int rows, int bytes) {
    for (int i = 0; i < rows; ++i) {
      auto stmt = db.prepare("INSERT INTO t (v) VALUES (randomblob(?))", "insert");
      if (!stmt.has_value()) return stmt.error();
      stmt->bind(1, bytes);
      PARLEY_TRY(stmt->run());
    }
    return Status::ok();
  }

  // The same in a transaction of their own.
  static Status insert(Db& db, int rows, int bytes) {
    PARLEY_TRY(db.run("BEGIN", "begin"));
    if (Status s = add_rows(db, rows, bytes); !s.is_ok()) {
      static_cast<void>(db.run("ROLLBACK", "rollback"));
      return s;
    }
    return db.run("COMMIT", "commit");
  }

  // Creates the table, with `rows` rows of `bytes` bytes committed.
  static Status create(Db& db, int rows, int bytes) {
    PARLEY_TRY(db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)", "create"));
    return insert(db, rows, bytes);
  }

  // Opens a transaction that adds `rows` rows of `bytes` bytes through a 20-page cache, so that
  // it spills frames to the WAL before it ends.
  static Status spill(Db& db, int rows, int bytes) {
    PARLEY_TRY(db.exec("PRAGMA cache_size=20", "cache"));
    PARLEY_TRY(db.run("BEGIN", "begin"));
    return add_rows(db, rows, bytes);
  }

  std::string dir_;
  std::string path_;
};

TEST_F(WalGatherVfsTest, ACommitsFramesAreWrittenTogetherAndSeenByAnotherConnection) {
  auto writer = open();
  auto reader = open();
  ASSERT_TRUE(writer && reader);
  ASSERT_NE(wal_gather_vfs(), nullptr);  // registered by Db::open
  ASSERT_TRUE(create(*writer, 0, 0).is_ok());

  // About 150 pages of rows: under SQLite's own writes, 300 calls (a header and a page each).
  const WalGatherCounts before = wal_gather_counts();
  const Status inserted = insert(*writer, 3000, 200);
  ASSERT_TRUE(inserted.is_ok()) << inserted.message();
  const WalGatherCounts after = wal_gather_counts();
  const std::uint64_t gathered = after.gathered - before.gathered;
  const std::uint64_t written = after.written - before.written;
  EXPECT_GE(gathered, 300u);
  EXPECT_LE(written, 6u);  // 150 frames of 4,120 bytes, in writes of up to 128 KiB
  EXPECT_EQ(query_int(*reader, "SELECT count(*) FROM t"), 3000);

  // Under synchronous=NORMAL (no sync at commit) the frames are still in the file before the
  // commit is published: a fresh connection sees the rows, and so does a reopen.
  ASSERT_TRUE(writer->exec("PRAGMA synchronous=NORMAL", "normal").is_ok());
  ASSERT_TRUE(insert(*writer, 10, 200).is_ok());
  EXPECT_EQ(query_int(*reader, "SELECT count(*) FROM t"), 3010);
  auto third = open();
  ASSERT_TRUE(third);
  EXPECT_EQ(query_int(*third, "SELECT count(*) FROM t"), 3010);
  EXPECT_EQ(integrity(*third), "ok");
}

// A transaction that spilled frames and rolled back leaves only what was committed: another
// connection commits where the spilled frames were, then the first redoes its transaction and
// commits over the same place. (SQLite reads a page back from the WAL during this rollback,
// which writes the spilled frames while this connection still holds the write lock; the next
// test makes a rollback that reads nothing back.)
TEST_F(WalGatherVfsTest, ASpilledTransactionRolledBackLeavesOnlyWhatWasCommitted) {
  auto writer = open();
  auto other = open();
  ASSERT_TRUE(writer && other);
  ASSERT_TRUE(create(*writer, 10, 100).is_ok());
  // A page a row, 40 rows through the 20-page cache: about 25 frames spill, under the 128 KiB
  // written at once.
  ASSERT_TRUE(spill(*writer, 40, 3000).is_ok());
  EXPECT_EQ(query_int(*writer, "SELECT count(*) FROM t"), 50);
  ASSERT_TRUE(writer->run("ROLLBACK", "rollback").is_ok());
  EXPECT_EQ(query_int(*other, "SELECT count(*) FROM t"), 10);
  ASSERT_TRUE(insert(*other, 40, 300).is_ok());  // its frames start where the spilled ones did
  EXPECT_EQ(query_int(*writer, "SELECT count(*) FROM t"), 50);
  ASSERT_TRUE(insert(*writer, 2000, 500).is_ok());  // redone, spilling past 128 KiB
  EXPECT_EQ(query_int(*other, "SELECT count(*) FROM t"), 2050);
  EXPECT_EQ(integrity(*other), "ok");
  writer.reset();
  other.reset();
  auto fresh = open();
  ASSERT_TRUE(fresh);
  EXPECT_EQ(query_int(*fresh, "SELECT count(*) FROM t"), 2050);
  EXPECT_EQ(query_int(*fresh, "SELECT sum(length(v)) FROM t"), 10 * 100 + 40 * 300 + 2000 * 500);
  EXPECT_EQ(integrity(*fresh), "ok");
}

// The same on an empty WAL, where the rollback reads nothing back from it (SQLite undoes pages
// from the database file), so the spilled frames are still gathered when the write lock is
// released: they are dropped there, never written later (the writer's next read of its WAL
// would otherwise write them over the frames the other connection committed meanwhile).
TEST_F(WalGatherVfsTest, WhatARolledBackTransactionGatheredIsNeverWritten) {
  auto writer = open();
  auto other = open();
  ASSERT_TRUE(writer && other);
  ASSERT_TRUE(create(*writer, 10, 100).is_ok());
  ASSERT_TRUE(writer->exec("PRAGMA wal_checkpoint(TRUNCATE)", "truncate").is_ok());
  ASSERT_EQ(fs::file_size(path_ + "-wal"), 0u);
  // About 25 frames spilled, all still gathered: the file holds only the WAL's header (32
  // bytes, which SQLite syncs before the first frame).
  ASSERT_TRUE(spill(*writer, 40, 3000).is_ok());
  ASSERT_EQ(fs::file_size(path_ + "-wal"), 32u);
  ASSERT_TRUE(writer->run("ROLLBACK", "rollback").is_ok());
  EXPECT_EQ(fs::file_size(path_ + "-wal"), 32u);
  ASSERT_TRUE(insert(*other, 40, 300).is_ok());
  EXPECT_EQ(query_int(*writer, "SELECT count(*) FROM t"), 50);
  EXPECT_EQ(query_int(*other, "SELECT count(*) FROM t"), 50);
  writer.reset();
  other.reset();
  auto fresh = open();
  ASSERT_TRUE(fresh);
  EXPECT_EQ(query_int(*fresh, "SELECT sum(length(v)) FROM t"), 10 * 100 + 40 * 300);
  EXPECT_EQ(integrity(*fresh), "ok");
}

// Every place a commit's write can fail, under both sync modes, fails that commit cleanly: the
// limit on the file's size is moved a quarter frame at a time across commits of about 36
// frames (past the 128 KiB at which gathered bytes are written, so the commit frame can land
// on that boundary), and half a frame at a time across a transaction that spills and then
// changes spilled pages (SQLite then rewrites the frames' checksums at the commit, its commit
// header last, with no page after it), until it fits. Every commit that succeeds was written
// at its commit frame, none later by the check. Each attempt starts on a fresh database; a child
// process, since the limit is per process, and any abort() shows as its death.
TEST_F(WalGatherVfsTest, AWriteFailingAnywhereInACommitFailsItCleanly) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    const std::uint64_t late = wal_gather_counts().late;  // what earlier tests left
    int attempt = 0;
    for (const char* mode : {"PRAGMA synchronous=NORMAL", "PRAGMA synchronous=FULL"}) {
      for (const bool rewrite : {false, true}) {
        // The spilling transaction writes about 80 frames: past that limit it commits.
        const std::uintmax_t last = rewrite ? 90 * 4120 : 40 * 4120;
        const std::uintmax_t step = rewrite ? 2060 : 1030;
        for (std::uintmax_t extra = 0; extra <= last; extra += step, ++attempt) {
          const std::string path = dir_ + "/sweep" + std::to_string(attempt) + ".sqlite";
          auto writer = Db::open(path);
          auto reader = Db::open(path);
          if (!writer.has_value() || !reader.has_value()) ::_exit(20);
          Db& w = **writer;
          if (!create(w, 2, 100).is_ok() || !w.exec(mode, "mode").is_ok()) {
            ::_exit(21);
          }
          if (rewrite && !w.exec("PRAGMA cache_size=10", "cache").is_ok()) ::_exit(22);
          rlimit lim{fs::file_size(path + "-wal") + extra, RLIM_INFINITY};
          if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(23);
          bool ok = false;
          if (!rewrite) {
            ok = insert(w, 36, 3000).is_ok();  // a row a page
          } else if (w.run("BEGIN", "begin").is_ok()) {
            ok = add_rows(w, 60, 3000).is_ok();
            ok = ok && w.exec("UPDATE t SET v = randomblob(3000) WHERE id <= 12", "update").is_ok();
            ok = ok && w.run("COMMIT", "commit").is_ok();
            if (!ok) static_cast<void>(w.run("ROLLBACK", "rollback"));
          }
          lim.rlim_cur = RLIM_INFINITY;
          if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(24);
          const std::int64_t want = ok ? (rewrite ? 62 : 38) : 2;
          if (query_int(**reader, "SELECT count(*) FROM t") != want) ::_exit(25);
          if (integrity(**reader) != "ok") ::_exit(26);
          if (!insert(w, 1, 100).is_ok()) ::_exit(27);  // the connection still writes
          if (query_int(**reader, "SELECT count(*) FROM t") != want + 1) ::_exit(28);
          if (wal_gather_counts().late != late) ::_exit(29);  // each commit written at its frame
        }
      }
    }
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child's step that failed (see the exit codes above)";
}

// In a child process (the file-size limit is per process): a commit whose gathered write is
// refused by the kernel fails, publishes nothing, and a later commit within the limit succeeds.
TEST_F(WalGatherVfsTest, ACommitWhoseWriteFailsFailsAndPublishesNothing) {
  {
    auto db = open();
    ASSERT_TRUE(db);
    ASSERT_TRUE(create(*db, 10, 100).is_ok());
  }
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);  // a write past the limit fails with EFBIG instead
    auto writer = Db::open(path_);
    auto reader = Db::open(path_);
    if (!writer.has_value() || !reader.has_value()) ::_exit(10);
    const std::uintmax_t wal = fs::file_size(path_ + "-wal");
    rlimit lim{std::max<std::uintmax_t>(wal, fs::file_size(path_)) + 4096, RLIM_INFINITY};
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(11);
    // About 50 KB, so its frames are gathered until its commit frame: they cannot all be
    // written within the limit. Under synchronous=FULL, then NORMAL, where no sync follows the
    // frames and the commit would be published next.
    for (const char* mode : {"PRAGMA synchronous=FULL", "PRAGMA synchronous=NORMAL"}) {
      if (!(*writer)->exec(mode, "mode").is_ok()) ::_exit(18);
      if (insert(**writer, 100, 500).is_ok()) ::_exit(12);
      if (query_int(**reader, "SELECT count(*) FROM t") != 10) ::_exit(13);
      if (query_int(**writer, "SELECT count(*) FROM t") != 10) ::_exit(14);
      if (integrity(**reader) != "ok") ::_exit(15);
    }
    lim.rlim_cur = RLIM_INFINITY;
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(19);
    if (!insert(**writer, 5, 100).is_ok()) ::_exit(16);
    if (query_int(**reader, "SELECT count(*) FROM t") != 15) ::_exit(17);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child's step that failed (see the exit codes above)";
  auto db = open();
  ASSERT_TRUE(db);
  EXPECT_EQ(query_int(*db, "SELECT count(*) FROM t"), 15);
  EXPECT_EQ(integrity(*db), "ok");
}

// A disk full for one write, wherever it falls in a transaction that spills frames and then
// changes spilled pages, fails that transaction and nothing else: the transaction commits
// everything it did or nothing, the database stays whole, and the connection writes again.
// The case this pins: the failed write is of frames gathered before a read of a spilled page,
// so SQLite sees SQLITE_FULL from a read and undoes only the statement, while the transaction
// goes on with frames in its WAL index that never reached the file. Every later write and sync
// of the transaction must then fail too, or its commit is published over the missing frames
// (the next write, unlike under a file-size limit, would succeed). In a child process, since an
// abort() must show as its death.
TEST_F(WalGatherVfsTest, ADiskFullForOneWriteFailsOnlyTheTransactionItHit) {
  ASSERT_TRUE(full_disk::g_registered);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    bool statement_undone_alone = false;  // the case above was met
    const std::uint64_t late = wal_gather_counts().late;  // what earlier tests left
    bool completed = false;               // a transaction that met no failure
    for (int n = 1; n <= 200 && !completed; ++n) {
      const std::string path = dir_ + "/full" + std::to_string(n) + ".sqlite";
      auto writer = Db::open(path);
      auto reader = Db::open(path);
      if (!writer.has_value() || !reader.has_value()) ::_exit(30);
      Db& w = **writer;
      if (!w.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER UNIQUE, v BLOB);"
                  "INSERT INTO t VALUES (1, 1, printf('%03000d', 1)), (2, 2, printf('%03000d', 2))",
                  "create")
               .is_ok() ||
          !w.exec("PRAGMA cache_size=10", "cache").is_ok()) {
        ::_exit(31);
      }
      const int failures = full_disk::g_failures;
      full_disk::g_fail_in = n;
      // A page a row: about 60 frames, gathered, some spilled before the commit. Then a
      // statement that changes many of those rows (a unique column: SQLite keeps a statement
      // journal for it, so a SQLITE_FULL undoes only the statement) reads spilled pages back.
      std::set<int> added;
      bool updated = false;
      bool committed = false;
      if (w.run("BEGIN", "begin").is_ok()) {
        for (int id = 3; id <= 62 && w.in_transaction(); ++id) {
          auto stmt = w.prepare("INSERT INTO t VALUES (?1, ?1, printf('%03000d', ?1))", "insert");
          if (!stmt.has_value()) ::_exit(32);
          stmt->bind(1, id);
          if (stmt->run().is_ok()) added.insert(id);
        }
        if (w.in_transaction()) {
          updated = w.exec(
                         "UPDATE t SET k = k + 1000000, v = printf('%03000d', id + 7) "
                         "WHERE id <= 40",
                         "update")
                        .is_ok();
          if (!updated && w.in_transaction()) statement_undone_alone = true;
        }
        committed = w.in_transaction() && w.run("COMMIT", "commit").is_ok();
        if (w.in_transaction()) static_cast<void>(w.run("ROLLBACK", "rollback"));
      }
      full_disk::g_fail_in = 0;
      completed = full_disk::g_failures == failures;
      if (completed && !(committed && updated && added.size() == 60)) ::_exit(33);
      // What a reader sees: the transaction whole, or none of it.
      if (!committed) {
        added.clear();
        updated = false;
      }
      const auto rows = static_cast<std::int64_t>(2 + added.size());
      std::int64_t changed = 0;
      for (int id = 1; id <= 40; ++id) changed += updated && (id <= 2 || added.count(id)) ? 1 : 0;
      const char* kBadRows =
          "SELECT count(*) FROM t WHERE k % 1000000 != id OR "
          "v IS NOT printf('%03000d', CASE WHEN k >= 1000000 THEN id + 7 ELSE id END)";
      const auto check = [&](Db& r, std::int64_t want_rows) {
        if (query_int(r, "SELECT count(*) FROM t") != want_rows) ::_exit(35);
        if (query_int(r, "SELECT count(*) FROM t WHERE k >= 1000000") != changed) ::_exit(36);
        if (query_int(r, kBadRows) != 0) ::_exit(37);
        if (integrity(r) != "ok") ::_exit(38);
      };
      check(**reader, rows);
      // The connection that met the failure writes again.
      if (!w.exec("INSERT INTO t VALUES (100, 100, printf('%03000d', 100))", "again").is_ok()) {
        ::_exit(39);
      }
      // All of it again from connections opened afresh: the last to close checkpointed the
      // WAL into the database file, which is read now.
      writer->reset();
      reader->reset();
      auto fresh = Db::open(path);
      if (!fresh.has_value()) ::_exit(34);
      check(**fresh, rows + 1);
      if (wal_gather_counts().late != late) ::_exit(40);
    }
    if (!completed) ::_exit(41);               // the transaction never got past its failures
    if (!statement_undone_alone) ::_exit(42);  // the case this test is for never came up
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child's step that failed (see the exit codes above)";
}

// A WAL sync that fails (an I/O error, which the kernel reports once) fails its commit and
// every later one on that connection, also once syncs work again: a later sync could succeed
// over writes the failed one lost, and what it committed would be lost with them. Reads go on.
// A connection opened afresh (parleyd restarted) writes again.
TEST_F(WalGatherVfsTest, AFailedWalSyncFailsEveryLaterCommitOfTheConnection) {
  auto db = open();
  ASSERT_TRUE(db);
  ASSERT_TRUE(create(*db, 4, 100).is_ok());
  const std::uint64_t before = wal_gather_counts().sync_failures;
  full_disk::g_fail_sync_in = 1;
  EXPECT_FALSE(insert(*db, 2, 100).is_ok());
  EXPECT_EQ(full_disk::g_fail_sync_in, 0) << "no WAL sync was made";
  EXPECT_EQ(wal_gather_counts().sync_failures, before + 1);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(insert(*db, 2, 100).is_ok()) << i;
  EXPECT_EQ(query_int(*db, "SELECT COUNT(*) FROM t"), 4);
  db.reset();

  auto again = open();
  ASSERT_TRUE(again);
  // The commit whose sync failed is found whole in the WAL (its frames were written before the
  // sync; here the data even reached the file): a commit reported failed can be there after a
  // restart, and the store's client message ids make a resend of it a duplicate. Nothing after
  // it was written.
  const std::int64_t rows = query_int(*again, "SELECT COUNT(*) FROM t");
  EXPECT_EQ(rows, 6);
  ASSERT_TRUE(insert(*again, 2, 100).is_ok());
  EXPECT_EQ(query_int(*again, "SELECT COUNT(*) FROM t"), rows + 2);
  EXPECT_EQ(integrity(*again), "ok");
}

}  // namespace
}  // namespace parley::store::internal
