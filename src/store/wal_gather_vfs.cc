#include "store/internal/wal_gather_vfs.h"

#include <sqlite3.h>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>

namespace parley::store::internal {
namespace {

constexpr const char* kName = "parley-wal-gather";
constexpr int kFrameHeader = 24;  // a WAL frame's header, written before its page
// The most the default VFS writes in one call (its seekAndWriteFd masks a length with 0x1ffff):
// gathered bytes are written out before they would pass it.
constexpr std::size_t kMaxGathered = 0x1ffff;

std::atomic<std::uint64_t> g_gathered{0};
std::atomic<std::uint64_t> g_written{0};
std::atomic<std::uint64_t> g_late{0};
std::atomic<std::uint64_t> g_sync_failures{0};

// Our part of every file this VFS opens. SQLite allocates szOsFile bytes for it: this struct,
// then the default VFS's file, which `real` points to.
struct File {
  sqlite3_file base;  // first: SQLite sees a File as a sqlite3_file
  sqlite3_file* real;
  bool wal;
  File* db;   // a WAL: its connection's database file (if that is ours)
  File* log;  // a database file: its connection's WAL file while that is open
  // A WAL's gathered bytes (kMaxGathered allocated at its first write): what SQLite asked to
  // write at [start, start + size).
  unsigned char* data;
  std::size_t size;
  sqlite3_int64 start;
  bool commit_page_next;  // the last write was the header of a commit frame
  bool after_read;        // the last operation on this WAL was a read
  std::size_t page_bytes;  // the last page written (until then the largest SQLite allows)
  // Gathered bytes failed to reach the file. SQLite does not always undo what they held: a
  // full disk met while reading back a spilled frame rolls back only the statement that read
  // it, and a failed xFileSize or xTruncate is only logged. So, until the write transaction
  // ends, every write and sync of this WAL fails too, and no commit of it can be published.
  bool failed;
  // A sync of this WAL failed. The kernel may have dropped writes it could not make and says so
  // once: a later sync can succeed over the hole, and a commit after it would be acknowledged
  // yet lost with the hole in a crash (PostgreSQL's "fsyncgate", 2018). So every later write
  // and sync of this WAL fails until the file is closed: parleyd stores nothing more until it
  // is restarted, and SQLite's recovery then reads the WAL afresh.
  bool sync_failed;
};

constexpr std::size_t kFileBytes = (sizeof(File) + 15) & ~std::size_t{15};
constexpr std::size_t kLargestPage = 65536;

sqlite3_vfs* real_vfs(sqlite3_vfs* vfs) { return static_cast<sqlite3_vfs*>(vfs->pAppData); }
File* as_file(sqlite3_file* f) { return reinterpret_cast<File*>(f); }
const sqlite3_io_methods* real_io(File* f) { return f->real->pMethods; }

// Writes out what `f` gathered. The bytes are dropped either way; a failure is remembered
// (see `failed`).
int flush(File* f) {
  if (f->size == 0) return SQLITE_OK;
  const int n = static_cast<int>(f->size);
  f->size = 0;
  g_written.fetch_add(1, std::memory_order_relaxed);
  const int rc = real_io(f)->xWrite(f->real, f->data, n, f->start);
  if (rc != SQLITE_OK) f->failed = true;
  return rc;
}

// Forgets what `f` gathered without writing it: when the write transaction ends (or the file
// closes) what is still gathered belongs to a transaction that was rolled back, since a
// commit's frames are written at its commit frame. Written later, those bytes could land over
// frames that another connection committed at the same offsets meanwhile.
void drop(File* f) {
  f->size = 0;
  f->commit_page_next = false;
  f->failed = false;
}

int write_through(File* f, const void* p, int n, sqlite3_int64 offset) {
  g_written.fetch_add(1, std::memory_order_relaxed);
  return real_io(f)->xWrite(f->real, p, n, offset);
}

int gather(File* f, const void* p, int n, sqlite3_int64 offset) {
  if (f->failed || f->sync_failed) return SQLITE_IOERR_WRITE;
  const auto bytes = static_cast<std::size_t>(n);
  const bool after_read = std::exchange(f->after_read, false);
  const bool header = n == kFrameHeader;
  // Bytes 4..7 of a frame header: the database size in pages after a commit, else zero.
  const auto* h = static_cast<const unsigned char*>(p);
  const bool commit_header = header && (h[4] | h[5] | h[6] | h[7]) != 0;
  const bool commit_page = !header && f->commit_page_next;  // once in, the commit is written
  f->commit_page_next = commit_header;
  // A commit frame's header is gathered only with room for its page behind it, so that the
  // two are written together at the page.
  const std::size_t room = commit_header ? bytes + f->page_bytes : bytes;
  if (f->size > 0 &&
      (offset != f->start + static_cast<sqlite3_int64>(f->size) || f->size + room > kMaxGathered)) {
    if (int rc = flush(f); rc != SQLITE_OK) return rc;
  }
  if (bytes > kMaxGathered) return write_through(f, p, n, offset);  // larger than any page
  if (f->data == nullptr) {  // the first write: a WAL that is only read never allocates
    f->data = static_cast<unsigned char*>(std::malloc(kMaxGathered));
    if (f->data == nullptr) return write_through(f, p, n, offset);
  }
  if (f->size == 0) f->start = offset;
  std::memcpy(f->data + f->size, p, bytes);
  f->size += bytes;
  g_gathered.fetch_add(1, std::memory_order_relaxed);
  if (!header && bytes >= 512 && bytes <= kLargestPage) f->page_bytes = bytes;

  if (commit_page) return flush(f);
  // SQLite re-checksumming a transaction's frames (walRewriteChecksums, after it wrote over a
  // frame of the same transaction) reads each frame and writes its header alone, the commit
  // frame's last: no page follows that one.
  if (commit_header && after_read) return flush(f);
  return SQLITE_OK;
}

// ---- io methods: the WAL's writes are gathered; the rest is forwarded ----------------------

int x_close(sqlite3_file* file) {
  File* f = as_file(file);
  drop(f);  // SQLite may close a WAL without holding any lock
  if (f->wal && f->db != nullptr && f->db->log == f) f->db->log = nullptr;
  if (!f->wal && f->log != nullptr) f->log->db = nullptr;
  const int rc = real_io(f)->xClose(f->real);
  std::free(f->data);
  f->data = nullptr;
  return rc;
}

int x_read(sqlite3_file* file, void* p, int n, sqlite3_int64 offset) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  f->after_read = f->wal;
  return real_io(f)->xRead(f->real, p, n, offset);
}

int x_write(sqlite3_file* file, const void* p, int n, sqlite3_int64 offset) {
  File* f = as_file(file);
  if (f->wal && n > 0) return gather(f, p, n, offset);
  return real_io(f)->xWrite(f->real, p, n, offset);
}

int x_truncate(sqlite3_file* file, sqlite3_int64 size) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f)->xTruncate(f->real, size);
}

int x_sync(sqlite3_file* file, int flags) {
  File* f = as_file(file);
  if (f->sync_failed) return SQLITE_IOERR_FSYNC;
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  if (f->failed) return SQLITE_IOERR_WRITE;
  const int rc = real_io(f)->xSync(f->real, flags);
  // (A database file's failed sync is not kept: SQLite then leaves the checkpoint undone, and
  // the next one copies the same pages from the WAL again before it syncs.)
  if (rc != SQLITE_OK && f->wal) {
    f->sync_failed = true;
    g_sync_failures.fetch_add(1, std::memory_order_relaxed);
  }
  return rc;
}

int x_file_size(sqlite3_file* file, sqlite3_int64* size) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f)->xFileSize(f->real, size);
}

int x_lock(sqlite3_file* file, int level) {
  File* f = as_file(file);
  return real_io(f)->xLock(f->real, level);
}

int x_unlock(sqlite3_file* file, int level) {
  File* f = as_file(file);
  return real_io(f)->xUnlock(f->real, level);
}

int x_check_reserved_lock(sqlite3_file* file, int* out) {
  File* f = as_file(file);
  return real_io(f)->xCheckReservedLock(f->real, out);
}

int x_file_control(sqlite3_file* file, int op, void* arg) {
  File* f = as_file(file);
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f)->xFileControl(f->real, op, arg);
}

int x_sector_size(sqlite3_file* file) {
  File* f = as_file(file);
  return real_io(f)->xSectorSize(f->real);
}

int x_device_characteristics(sqlite3_file* file) {
  File* f = as_file(file);
  return real_io(f)->xDeviceCharacteristics(f->real);
}

int x_shm_map(sqlite3_file* file, int page, int page_size, int extend, void volatile** out) {
  File* f = as_file(file);
  if (real_io(f)->iVersion < 2 || real_io(f)->xShmMap == nullptr) return SQLITE_IOERR_SHMMAP;
  return real_io(f)->xShmMap(f->real, page, page_size, extend, out);
}

int x_shm_lock(sqlite3_file* file, int offset, int n, int flags) {
  File* f = as_file(file);
  // Slot 0 is the WAL's write lock (WAL_WRITE_LOCK in SQLite's wal.c): released, the write
  // transaction is over.
  constexpr int kReleased = SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE;
  if (offset == 0 && (flags & kReleased) == kReleased && f->log != nullptr) drop(f->log);
  if (real_io(f)->iVersion < 2 || real_io(f)->xShmLock == nullptr) return SQLITE_IOERR_SHMLOCK;
  return real_io(f)->xShmLock(f->real, offset, n, flags);
}

// SQLite calls this between writing the wal-index header's two copies, so a reader sees the
// new header only after it returns: whatever this connection gathered must be in the WAL file.
void x_shm_barrier(sqlite3_file* file) {
  File* f = as_file(file);
  if (f->log != nullptr && (f->log->size > 0 || f->log->failed)) {
    g_late.fetch_add(1, std::memory_order_relaxed);
    if (flush(f->log) != SQLITE_OK || f->log->failed) {
      std::fputs(
          "parleyd: store: a WAL write failed where SQLite cannot be told; stopping so "
          "that no reader sees a frame that is not on disk\n",
          stderr);
      std::abort();
    }
  }
  if (real_io(f)->iVersion >= 2 && real_io(f)->xShmBarrier != nullptr) {
    real_io(f)->xShmBarrier(f->real);
  }
}

int x_shm_unmap(sqlite3_file* file, int delete_flag) {
  File* f = as_file(file);
  if (real_io(f)->iVersion < 2 || real_io(f)->xShmUnmap == nullptr) return SQLITE_OK;
  return real_io(f)->xShmUnmap(f->real, delete_flag);
}

int x_fetch(sqlite3_file* file, sqlite3_int64 offset, int n, void** out) {
  File* f = as_file(file);
  if (real_io(f)->iVersion < 3 || real_io(f)->xFetch == nullptr) {
    *out = nullptr;  // no memory map: SQLite reads instead
    return SQLITE_OK;
  }
  if (int rc = flush(f); rc != SQLITE_OK) return rc;
  return real_io(f)->xFetch(f->real, offset, n, out);
}

int x_unfetch(sqlite3_file* file, sqlite3_int64 offset, void* p) {
  File* f = as_file(file);
  if (real_io(f)->iVersion < 3 || real_io(f)->xUnfetch == nullptr) return SQLITE_OK;
  return real_io(f)->xUnfetch(f->real, offset, p);
}

const sqlite3_io_methods kIo = {
    3,
    x_close,
    x_read,
    x_write,
    x_truncate,
    x_sync,
    x_file_size,
    x_lock,
    x_unlock,
    x_check_reserved_lock,
    x_file_control,
    x_sector_size,
    x_device_characteristics,
    x_shm_map,
    x_shm_lock,
    x_shm_barrier,
    x_shm_unmap,
    x_fetch,
    x_unfetch,
};

// ---- the VFS: xOpen wraps the file; everything else is the default VFS's --------------------

int x_open(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* file, int flags, int* out) {
  File* f = new (file) File{};
  f->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + kFileBytes);
  f->wal = (flags & SQLITE_OPEN_WAL) != 0;
  f->page_bytes = kLargestPage;
  const int rc = real_vfs(vfs)->xOpen(real_vfs(vfs), name, f->real, flags, out);
  // SQLite calls xClose when pMethods is set, even after a failed open.
  f->base.pMethods = f->real->pMethods != nullptr ? &kIo : nullptr;
  if (rc != SQLITE_OK || !f->wal || name == nullptr) return rc;
  sqlite3_file* db = sqlite3_database_file_object(name);
  if (db != nullptr && db->pMethods == &kIo) {
    f->db = as_file(db);
    f->db->log = f;
  }
  return rc;
}

int x_delete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  return real_vfs(vfs)->xDelete(real_vfs(vfs), name, sync_dir);
}
int x_access(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
  return real_vfs(vfs)->xAccess(real_vfs(vfs), name, flags, out);
}
int x_full_pathname(sqlite3_vfs* vfs, const char* name, int n, char* out) {
  return real_vfs(vfs)->xFullPathname(real_vfs(vfs), name, n, out);
}
void* x_dl_open(sqlite3_vfs* vfs, const char* name) {
  return real_vfs(vfs)->xDlOpen(real_vfs(vfs), name);
}
void x_dl_error(sqlite3_vfs* vfs, int n, char* out) {
  real_vfs(vfs)->xDlError(real_vfs(vfs), n, out);
}
void (*x_dl_sym(sqlite3_vfs* vfs, void* handle, const char* symbol))(void) {
  return real_vfs(vfs)->xDlSym(real_vfs(vfs), handle, symbol);
}
void x_dl_close(sqlite3_vfs* vfs, void* handle) { real_vfs(vfs)->xDlClose(real_vfs(vfs), handle); }
int x_randomness(sqlite3_vfs* vfs, int n, char* out) {
  return real_vfs(vfs)->xRandomness(real_vfs(vfs), n, out);
}
int x_sleep(sqlite3_vfs* vfs, int micros) { return real_vfs(vfs)->xSleep(real_vfs(vfs), micros); }
int x_current_time(sqlite3_vfs* vfs, double* out) {
  return real_vfs(vfs)->xCurrentTime(real_vfs(vfs), out);
}
int x_get_last_error(sqlite3_vfs* vfs, int n, char* out) {
  return real_vfs(vfs)->xGetLastError(real_vfs(vfs), n, out);
}
int x_current_time_int64(sqlite3_vfs* vfs, sqlite3_int64* out) {
  return real_vfs(vfs)->xCurrentTimeInt64(real_vfs(vfs), out);
}

sqlite3_vfs g_vfs;
const char* g_registered = nullptr;

void register_vfs() {
  sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
  // The default VFS on Linux ("unix") is version 3; the forwarders below need version 2's
  // xCurrentTimeInt64, and this VFS offers no system-call overrides.
  if (real == nullptr || real->iVersion < 2) return;
  g_vfs.iVersion = 2;
  g_vfs.szOsFile = static_cast<int>(kFileBytes) + real->szOsFile;
  g_vfs.mxPathname = real->mxPathname;
  g_vfs.zName = kName;
  g_vfs.pAppData = real;
  g_vfs.xOpen = x_open;
  g_vfs.xDelete = x_delete;
  g_vfs.xAccess = x_access;
  g_vfs.xFullPathname = x_full_pathname;
  g_vfs.xDlOpen = x_dl_open;
  g_vfs.xDlError = x_dl_error;
  g_vfs.xDlSym = x_dl_sym;
  g_vfs.xDlClose = x_dl_close;
  g_vfs.xRandomness = x_randomness;
  g_vfs.xSleep = x_sleep;
  g_vfs.xCurrentTime = x_current_time;
  g_vfs.xGetLastError = x_get_last_error;
  g_vfs.xCurrentTimeInt64 = x_current_time_int64;
  if (sqlite3_vfs_register(&g_vfs, /*makeDflt=*/0) == SQLITE_OK) g_registered = kName;
}

}  // namespace

const char* wal_gather_vfs() {
  static std::once_flag once;
  std::call_once(once, register_vfs);
  return g_registered;
}

WalGatherCounts wal_gather_counts() {
  return {g_gathered.load(std::memory_order_relaxed), g_written.load(std::memory_order_relaxed),
          g_late.load(std::memory_order_relaxed), g_sync_failures.load(std::memory_order_relaxed)};
}

}  // namespace parley::store::internal
