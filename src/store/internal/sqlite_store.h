#pragma once
// Internal to src/store: tuning knobs of the SQLite backend, exposed for tests.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "base/result.h"
#include "store/store.h"

namespace parley::store::internal {

struct SqliteOptions {
  // Most operations in one transaction (one group commit).
  std::size_t max_batch = 1024;
  // Most rows the reads and acknowledgements of one batch may ask for (a fetch counts its page
  // size, an ack its ids, any other operation 1; a batch takes at least one): a batch of
  // fetches stays short,
  // so that a send queued behind it waits little (SqliteStore::submit has the order).
  std::size_t max_batch_rows = 8192;
  // When a batch's reads and acknowledgements ask for more rows than this, its writes commit
  // first on their own, and the rest in a second transaction (SqliteStore::split_reads).
  std::size_t max_rows_beside_writes = 1024;
  // Most operations queued and not yet run. A submission beyond it fails at once with
  // kResourceExhausted (callback run on the submitting thread). The server bounds in-flight
  // requests per connection, so reaching this means the disk cannot keep up: shed load.
  std::size_t max_pending = 100000;
  // Most dedup keys indexed in memory (an estimated 60 bytes each): a resend is recognised while its
  // key is among the newest this many and within the dedup window.
  std::size_t dedup_entries = 1 << 20;
  // Acknowledged envelopes wait in the acked table (schema v5); their rows are deleted the
  // oldest ack_flush_run at a time (or as many as leave ack_flush_count), after each batch
  // while ack_flush_count or more wait, or once the store is idle and the oldest has waited
  // ack_flush_delay. Rows stored together are acknowledged at about the same time, so a run of
  // the oldest shares pages.
  std::size_t ack_flush_count = 1024;
  std::size_t ack_flush_run = 128;
  std::chrono::milliseconds ack_flush_delay{1000};
  // WAL checkpoints run on a thread of their own (internal/checkpointer.h) once the WAL holds
  // checkpoint_frames pages. The WAL starts over only after a checkpoint that leaves nothing
  // to copy, which passes beside a busy writer never do: once it holds writer_checkpoint_frames
  // the writer itself checkpoints (and waits) whenever no pass runs, which bounds the file.
  int checkpoint_frames = 16384;         // 64 MiB of 4 KiB pages
  int writer_checkpoint_frames = 32768;  // 128 MiB
};

// The writer's journal_size_limit for these options: the WAL's size at writer_checkpoint_frames
// pages of 4 KiB, and a quarter more. SQLite cuts the WAL back to this limit at the first commit
// after it starts over; the WAL reaches the writer's bound before every start-over under steady
// writes, so a limit below it made the store thread truncate tens of MiB each time: 25–33 ms at
// 10,000 messages/s (333 ms once under a drain storm), the largest stall behind the p99
// (docs/benchmarks.md, session 23). With the limit above it the file keeps its size.
std::int64_t wal_size_limit(const SqliteOptions& options);

Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path,
                                                 const SqliteOptions& options);

}  // namespace parley::store::internal
