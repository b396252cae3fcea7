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
//     WAL is synced and before the commit is published in the wal-index;
//   - before any other operation on that WAL file (a read, a write that does not continue the
//     gathered bytes, sync, truncate, size, file control, close), and before they would pass
//     the 128 KiB that the default VFS writes in one call;
//   - as a check, when the wal-index header is published (xShmBarrier of the database file,
//     which SQLite calls between the header's two copies, so a reader sees the new header only
//     after it): if anything is still gathered then, it is written; if that fails, or if
//     gathered bytes failed to reach the file in a call whose error SQLite may ignore (it only
//     logs a failed xFileSize or xTruncate when it trims the WAL), the process stops (abort)
//     rather than publish a commit whose frames are not in the file. Neither happens unless
//     SQLite changes how it writes frames, since each commit's frames are written at its commit
//     frame.
// Everything else is the default VFS's. Durability is unchanged: SQLite still syncs the WAL at
// each commit under synchronous=FULL, after the frames are written.
//
// Thread-safety: as SQLite's. A file is used by one connection; the counters are atomic.

#include <cstdint>

namespace parley::store::internal {

// The registered name of the VFS, for sqlite3_open_v2. Registers it on first use (not as the
// default VFS). Null when the default VFS is missing or the registration failed.
const char* wal_gather_vfs();

// Process-wide counts since start, for tests and benchmarks.
struct WalGatherCounts {
  std::uint64_t gathered = 0;  // WAL writes by SQLite that were held in memory
  std::uint64_t written = 0;   // writes made to WAL files (each of one or more of those)
};
WalGatherCounts wal_gather_counts();

}  // namespace parley::store::internal
