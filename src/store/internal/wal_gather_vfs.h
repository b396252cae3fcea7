#pragma once
// Internal to src/store: a SQLite VFS that writes each commit's WAL frames with one system call.
//
// SQLite writes a WAL frame as two pwrite calls (its 24-byte header, then the page), so a commit
// of 44 frames made 88 calls, each paying this machine's system-call and inode-update cost:
// about 3 µs a frame, against 0.2 µs when the same bytes go in one write (docs/benchmarks.md,
// session 23). This VFS wraps the default one ("unix") and changes one thing: writes to a WAL
// file that continue one another are gathered in memory and written together.
//
// When gathered bytes reach the file (in the order SQLite wrote them):
//   - at the page of a commit frame (a frame header whose "database size" field is set): inside
//     that xWrite, so a failure fails the commit through SQLite's own error path, before the
//     WAL is synced and before the commit is published in the wal-index. A commit header is
//     gathered only with room for its page behind it; one written right after a read is
//     written at once (SQLite rewriting a transaction's checksums rewrites headers alone);
//   - before any other operation on that WAL file (a read, a write that does not continue the
//     gathered bytes, sync, truncate, size, file control), and before they would pass the
//     128 KiB that the default VFS writes in one call.
// When they never do: what is still gathered when the write transaction ends (the database
// file's write lock on the WAL is released) or the WAL closes belongs to a transaction that was
// rolled back, and is dropped: written later, it could land over frames that another
// connection committed at the same offsets.
// A failed write of gathered bytes makes every later write and sync of that WAL fail until the
// write transaction ends, so no commit that might lean on the lost bytes can succeed: SQLite
// does not always roll back the whole transaction itself (a full disk met while reading back a
// spilled frame undoes only the statement that read it; a failed xFileSize or xTruncate is only
// logged).
// As a check, when the wal-index header is published (xShmBarrier of the database file, which
// SQLite calls between the header's two copies, so a reader sees the new header only after
// it): anything still gathered is written and counted (`late`); if that fails, or a write of
// this transaction failed, the process stops (abort) rather than publish a commit whose
// frames are not in the file. The tests assert that `late` stays zero: every commit they make,
// including failed and rewritten ones, is written at its commit frame.
// Not supported: locking_mode=EXCLUSIVE (SQLite then releases no write lock through xShmLock,
// so a rolled-back transaction's bytes would stay gathered). The store never sets it.
// A failed sync of a WAL makes every later write and sync of it fail until it is closed: the
// kernel reports a lost write-back once, so a later sync could succeed over a hole in the WAL
// (a database file's failed sync is left to SQLite, whose next checkpoint copies the same pages
// again). A full disk fails a write, not a sync, so it does not stop the store for good.
// Everything else is the default VFS's. Durability is unchanged: SQLite still syncs the WAL at
// each commit under synchronous=FULL, after the frames are written.
//
// Thread-safety: as SQLite's. A file is used by one connection; the counters are atomic.

#include <cstdint>

namespace parley::store::internal {

// The registered name of the VFS, for sqlite3_open_v2. Registers it on first use (not as the
// default VFS), which initialises SQLite: call it after any sqlite3_config. Null when the
// default VFS is missing or the registration failed.
const char* wal_gather_vfs();

// Process-wide counts since start, for tests and benchmarks.
struct WalGatherCounts {
  std::uint64_t gathered = 0;  // WAL writes by SQLite that were held in memory
  std::uint64_t written = 0;   // writes made to WAL files (each of one or more of those)
  // Commits published with bytes still gathered (or lost), which the check then wrote (or
  // stopped the process for). Zero unless SQLite writes a commit in a way this VFS does not
  // foresee; tests assert it.
  std::uint64_t late = 0;
  std::uint64_t sync_failures = 0;  // failed syncs of a WAL (each stops its file's writes)
};
WalGatherCounts wal_gather_counts();

}  // namespace parley::store::internal
