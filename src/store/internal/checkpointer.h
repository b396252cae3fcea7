#pragma once
// Internal to src/store: Checkpointer, the WAL checkpoints on a thread and connection of their
// own.
//
// Why: a checkpoint copies the WAL's pages into the database and syncs both files. Run by the
// writer (SQLite's automatic checkpoint, inside a COMMIT), it stopped every store operation for
// its whole length: 80–170 ms every 64 MiB of WAL on the benchmark machine
// (docs/benchmarks.md, session 12). A PASSIVE
// checkpoint on another connection runs beside the writer instead: WAL mode lets the writer
// append while pages it wrote earlier are copied.
//
// The writer still checkpoints itself, between passes, once the WAL reaches its bound
// (SqliteOptions::writer_checkpoint_frames): under steady writes a pass never finds the WAL
// fully copied with no new frames, so SQLite never starts it over, and it would grow without
// end. By then the passes have copied most of it, so the writer's checkpoint is short.
//
// When: the writer's WAL hook reports the WAL's size after every commit (wal_grew). A pass
// starts once the WAL holds `start_frames` frames and has grown by a quarter of that since the
// last pass: while the writer keeps appending, the WAL cannot start over (SQLite restarts it
// only when every frame has been copied and a new write begins), and passes every few frames
// would copy the same hot pages again and again.
//
// Threading: wal_grew is called on the writer's thread, the counters from any thread, stop()
// and the destructor from the owner's; the passes run on the checkpointer's own.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "base/result.h"
#include "store/internal/sqlite_db.h"

namespace parley::store::internal {

class Checkpointer {
 public:
  // Opens a connection of its own to the database at `path` (already in WAL mode).
  static Result<std::unique_ptr<Checkpointer>> start(const std::string& path, int start_frames);
  ~Checkpointer();  // stop()s
  // Stops the thread (after the pass in progress) and closes the connection; the counters stay
  // readable. Idempotent; wal_grew does nothing afterwards.
  void stop();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // The WAL now holds `frames` frames (from the writer's WAL hook).
  void wal_grew(int frames);

  // A pass is running now (the writer need not try one of its own: it would find it busy).
  bool running() const { return running_.load(std::memory_order_relaxed); }
  std::uint64_t passes() const { return passes_.load(std::memory_order_relaxed); }
  std::uint64_t failed_passes() const { return failed_.load(std::memory_order_relaxed); }

 private:
  Checkpointer(std::unique_ptr<Db> db, int start_frames);
  void loop();

  std::unique_ptr<Db> db_;  // used only by thread_ (closed by stop() after joining it)
  const int start_frames_;
  // The WAL's size at the end of the last pass (0: none since the WAL started over).
  std::atomic<int> last_pass_frames_{0};
  std::atomic<bool> running_{false};
  std::atomic<std::uint64_t> passes_{0};
  std::atomic<std::uint64_t> failed_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  bool wanted_ = false;  // guarded by mu_
  bool stop_ = false;    // guarded by mu_
  std::thread thread_;
};

}  // namespace parley::store::internal
