// The SQLite backend: one thread owns the connection and group-commits queued operations.
//
// Loop: wait for operations; take up to max_batch of them; BEGIN IMMEDIATE; run them all in
// one transaction; COMMIT (with synchronous=FULL this fsyncs the WAL; a batch of acks and reads
// alone commits without an fsync, see ack() and Sync); only then run the callbacks of the batch.
// When an operation fails, everything is rolled back and the batch is run again with a SAVEPOINT
// per operation (RELEASE on success, ROLLBACK TO on error), so one failing operation leaves the
// others intact (run_batch(), below). If the transaction itself fails (BEGIN, a savepoint,
// COMMIT, or SQLite rolling the transaction back on its own after an I/O error), nothing of the
// batch is committed and every operation in it fails with kIo: no callback ever reports a write
// that is not durable.
//
// An acknowledgement records the envelope's seq in the acked table. Their rows are deleted later,
// the oldest ack_flush_run at a time (more if more than ack_flush_count would be left): after a
// batch while ack_flush_count or more wait, when the store is idle and the oldest has waited
// ack_flush_delay, and at close (delete_acked_rows(); docs/storage.md, "Write volume").

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/saturating.h"
#include "store/internal/checkpointer.h"
#include "store/internal/sqlite_db.h"
#include "store/internal/sqlite_ops.h"
#include "store/internal/sqlite_store.h"
#include "store/internal/wal_gather_vfs.h"
#include "store/migrations.h"
#include "store/store.h"

namespace parley::store {
namespace internal {
namespace {

// One queued operation: the body, then (after the commit) the callback.
class Op {
 public:
  virtual ~Op() = default;
  // Runs the body; false when it failed and must be rolled back to its savepoint.
  virtual bool run(Tx& tx) = 0;
  // Whether its commit must reach the disk before the callback (an fsync; see ack()).
  virtual bool synced() const = 0;
  // Replaces the outcome with a failure (the batch did not commit).
  virtual void fail(const Status& status) = 0;
  // Invokes the callback with the outcome. Called exactly once.
  virtual void finish() = 0;

  std::chrono::steady_clock::time_point queued_at;  // set by submit()
  std::size_t rows = 1;  // rows it may touch (a fetch: its page size; an ack: its ids)
};

template <typename T, typename Body>
class TypedOp final : public Op {
 public:
  TypedOp(Body body, Callback<T> done, bool synced)
      : body_(std::move(body)), done_(std::move(done)), synced_(synced) {}

  bool run(Tx& tx) override {
    result_.emplace(body_(tx));
    return result_->has_value();
  }
  bool synced() const override { return synced_; }
  void fail(const Status& status) override { result_.emplace(status); }
  void finish() override {
    if (!result_.has_value()) result_.emplace(make_error(ErrorCode::kInternal, "store: not run"));
    if (done_) done_(std::move(*result_));
  }

 private:
  Body body_;
  Callback<T> done_;
  const bool synced_;
  std::optional<Result<T>> result_;
};

Callback<Unit> adapt(Done done) {
  return [done = std::move(done)](Result<Unit> r) {
    if (done) done(r.status());
  };
}

class SqliteStore final : public Store {
 public:
  SqliteStore(std::unique_ptr<Db> db, std::unique_ptr<Checkpointer> checkpointer,
              const SqliteOptions& options, const StatsDelta& gauges,
              std::unique_ptr<Backend> backend)
      : options_(options),
        db_(std::move(db)),
        checkpointer_(std::move(checkpointer)),
        backend_(std::move(backend)),
        expiry_clock_at_open_ms_(backend_->expiry_clock_ms) {
    db_->on_wal_commit([this](int frames) { wal_grew(frames); });
    accounts_.store(static_cast<std::uint64_t>(gauges.accounts));
    envelopes_.store(static_cast<std::uint64_t>(gauges.envelopes));
    bytes_.store(static_cast<std::uint64_t>(gauges.bytes));
    thread_ = std::thread([this] {
      // Named for top, perf and /proc/PID/task (15 characters at most).
      ::pthread_setname_np(::pthread_self(), "parley-store");
      loop();
    });
    worker_id_ = thread_.get_id();
  }

  ~SqliteStore() override {
    if (std::this_thread::get_id() == worker_id_ && !joined_.load()) {
      // Destroying the store from one of its own callbacks: a contract violation (the Store
      // must outlive every callback) that would leave the thread running on freed memory.
      std::abort();
    }
    close();
  }

  void create_account(NewAccount account, Callback<Account> done) override {
    submit<Account>([a = std::move(account)](Tx& tx) { return op_create_account(tx, a); },
                    std::move(done));
  }
  void find_account(std::string folded_name, Callback<std::optional<Account>> done) override {
    submit<std::optional<Account>>(
        [n = std::move(folded_name)](Tx& tx) { return op_find_account(tx, n); }, std::move(done),
        Sync::kNo);
  }
  void create_invite(std::string token, std::int64_t expires_ms, Done done) override {
    submit<Unit>([t = std::move(token), expires_ms](
                     Tx& tx) { return op_create_invite(tx, t, expires_ms); },
                 adapt(std::move(done)));
  }

  void upload_keys(std::int64_t account_id, std::uint32_t device_id, Bytes auth_public_key,
                   std::optional<SignedPreKey> signed_pre_key, std::vector<PreKey> pre_keys,
                   Callback<std::uint32_t> done) override {
    submit<UploadKeysOutcome>(
        [account_id, device_id, auth = std::move(auth_public_key), spk = std::move(signed_pre_key),
         keys = std::move(pre_keys)](Tx& tx) {
          return op_upload_keys(tx, account_id, device_id, auth, spk, keys);
        },
        [done = std::move(done)](Result<UploadKeysOutcome> r) {
          if (!r) return done(r.error());
          if (r->over_cap) {
            return done(make_error(ErrorCode::kTooLarge, "store: a device keeps at most " +
                                                             std::to_string(kMaxStoredPreKeys) +
                                                             " one-time prekeys"));
          }
          done(r->count);
        });
  }
  void pre_key_count(std::int64_t account_id, std::uint32_t device_id,
                     Callback<std::uint32_t> done) override {
    submit<std::uint32_t>(
        [account_id, device_id](Tx& tx) { return op_pre_key_count(tx, account_id, device_id); },
        std::move(done), Sync::kNo);
  }
  void take_bundles(std::int64_t account_id, std::uint32_t device_id,
                    Callback<std::vector<Bundle>> done) override {
    submit<std::vector<Bundle>>(
        [account_id, device_id](Tx& tx) { return op_take_bundles(tx, account_id, device_id); },
        std::move(done));
  }

  void store_messages(SendBatch batch, Callback<SendOutcome> done) override {
    submit<SendOutcome>([b = std::move(batch)](Tx& tx) { return op_store_messages(tx, b); },
                        std::move(done));
  }
  void fetch_queue(std::int64_t account_id, std::uint32_t device_id, std::int64_t after_seq,
                   std::size_t limit, std::size_t max_bytes,
                   Callback<std::vector<QueuedEnvelope>> done) override {
    submit<std::vector<QueuedEnvelope>>(
        [=](Tx& tx) {
          return op_fetch_queue(tx, account_id, device_id, after_seq, limit, max_bytes);
        },
        [this, done = std::move(done)](Result<std::vector<QueuedEnvelope>> page) {
          if (page) {
            std::uint64_t bytes = 0;
            for (const auto& q : *page) bytes += q.envelope.content.size();
            fetched_envelopes_.fetch_add(page->size(), std::memory_order_relaxed);
            fetched_bytes_.fetch_add(bytes, std::memory_order_relaxed);
          }
          done(std::move(page));
        },
        Sync::kNo, limit);
  }
  void ack(std::int64_t account_id, std::uint32_t device_id, std::vector<Bytes> server_ids,
           Callback<std::uint32_t> done) override {
    // Not synced: losing a delete to a power cut only delivers the envelope again, and the
    // client drops it by its server id (docs/storage.md, "Durability").
    const std::size_t rows = std::max<std::size_t>(1, server_ids.size());
    submit<std::uint32_t>([account_id, device_id, ids = std::move(server_ids)](
                              Tx& tx) { return op_ack(tx, account_id, device_id, ids); },
                          std::move(done), Sync::kNo, rows);
  }

  void create_attachment(Attachment attachment, AttachmentQuota quota,
                         Callback<AttachmentOutcome> done) override {
    submit<AttachmentOutcome>(
        [a = std::move(attachment), quota](Tx& tx) { return op_create_attachment(tx, a, quota); },
        std::move(done));
  }
  void find_attachment(std::string id, Callback<std::optional<Attachment>> done) override {
    submit<std::optional<Attachment>>(
        [i = std::move(id)](Tx& tx) { return op_find_attachment(tx, i); }, std::move(done),
        Sync::kNo);
  }
  void set_attachment_progress(std::string id, std::uint64_t have,
                               Callback<std::uint64_t> done) override {
    submit<std::uint64_t>(
        [i = std::move(id), have](Tx& tx) { return op_set_attachment_progress(tx, i, have); },
        std::move(done));
  }

  void expire(std::int64_t now_ms, std::int64_t max_age_ms, std::int64_t dedup_ms,
              Callback<std::vector<std::string>> done) override {
    submit<std::vector<std::string>>(
        [=](Tx& tx) { return op_expire(tx, now_ms, max_age_ms, dedup_ms); }, std::move(done));
  }

  std::int64_t expiry_clock_at_open_ms() const override { return expiry_clock_at_open_ms_; }

  Stats stats() const override {
    Stats s;
    s.accounts = accounts_.load(std::memory_order_relaxed);
    s.queued_envelopes = envelopes_.load(std::memory_order_relaxed);
    s.queued_bytes = bytes_.load(std::memory_order_relaxed);
    s.commits = commits_.load(std::memory_order_relaxed);
    s.unsynced_commits = unsynced_commits_.load(std::memory_order_relaxed);
    s.committed_ops = committed_ops_.load(std::memory_order_relaxed);
    s.last_batch_size = last_batch_size_.load(std::memory_order_relaxed);
    s.acked_pending = acked_pending_.load(std::memory_order_relaxed);
    s.failed_ack_flushes = failed_ack_flushes_.load(std::memory_order_relaxed);
    s.fetched_envelopes = fetched_envelopes_.load(std::memory_order_relaxed);
    s.fetched_bytes = fetched_bytes_.load(std::memory_order_relaxed);
    s.failed_commits = failed_commits_.load(std::memory_order_relaxed);
    s.rerun_commits = rerun_commits_.load(std::memory_order_relaxed);
    s.checkpoints = checkpointer_->passes();
    s.failed_checkpoints = checkpointer_->failed_passes();
    s.writer_checkpoints = writer_checkpoints_.load(std::memory_order_relaxed);
    const WalGatherCounts wal = wal_gather_counts();
    s.wal_gathered_writes = wal.gathered;
    s.wal_writes = wal.written;
    s.wal_late_writes = wal.late;
    s.queue_wait = queue_wait_.snapshot();
    s.synced_commit = synced_commit_.snapshot();
    return s;
  }

  void close() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
    // From a callback (the backend thread itself) we cannot join: the loop drains and exits on
    // its own, and the destructor (on another thread) joins.
    if (std::this_thread::get_id() == worker_id_ && !joined_.load()) return;
    std::lock_guard<std::mutex> join_lock(join_mu_);
    if (thread_.joinable()) {
      thread_.join();
      joined_.store(true);
      checkpointer_->stop();
      db_.reset();  // the last connection: SQLite checkpoints the whole WAL and removes it
    }
  }

 private:
  // Whether an operation's commit must reach the disk before its callback. kNo: reads (they
  // change nothing, so an fsync would only sync other operations' writes, which need none)
  // and acknowledgements (ack()).
  //
  // The order of operations: kYes operations (writes: a send, a registration) run before kNo
  // operations queued earlier, and in the order submitted among themselves; kNo operations
  // likewise. A read can therefore only see newer data than when it was submitted, never
  // older, and a send does not wait behind a backlog of fetches (devices draining their
  // queues after an outage). Batches bound the rows their kNo operations may read
  // (max_batch_rows) and always take some of them, so neither kind waits for long.
  enum class Sync { kYes, kNo };

  template <typename T, typename Body>
  void submit(Body body, Callback<T> done, Sync sync = Sync::kYes, std::size_t rows = 1) {
    const auto now = std::chrono::steady_clock::now();
    Status refused;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) {
        refused = make_error(ErrorCode::kUnavailable, "store: closed");
      } else if (writes_.size() + others_.size() >= options_.max_pending) {
        refused = make_error(ErrorCode::kResourceExhausted, "store: too many pending operations");
      } else {
        auto& queue = sync == Sync::kYes ? writes_ : others_;
        queue.push_back(std::make_unique<TypedOp<T, Body>>(std::move(body), std::move(done),
                                                           sync == Sync::kYes));
        queue.back()->queued_at = now;
        queue.back()->rows = rows;
      }
    }
    if (!refused.is_ok()) {
      if (done) done(std::move(refused));
      return;
    }
    cv_.notify_one();
  }

  void loop() {
    std::vector<std::unique_ptr<Op>> batch;
    std::vector<std::unique_ptr<Op>> reads;
    batch.reserve(options_.max_batch);
    reads.reserve(options_.max_batch);
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        auto ready = [this] { return !writes_.empty() || !others_.empty() || closed_; };
        if (backend_->acked.empty()) {
          cv_.wait(lock, ready);
        } else if (!cv_.wait_until(lock, acked_since_ + options_.ack_flush_delay, ready)) {
          // Idle, and the oldest acknowledgement has waited long enough: delete a run, and
          // come back at once for the next while there is still nothing else to do.
          lock.unlock();
          delete_acked_rows();
          continue;
        }
        if (writes_.empty() && others_.empty()) break;  // closed and drained
        take_batch(batch);
      }
      split_reads(batch, reads);
      for (auto* part : {&batch, &reads}) {
        if (part->empty()) continue;
        const auto started = std::chrono::steady_clock::now();
        for (const auto& op : *part) queue_wait_.observe(started - op->queued_at);
        run_batch(*part, started);
        for (auto& op : *part) op->finish();
        part->clear();
      }
      if (backend_->acked.size() >= options_.ack_flush_count) delete_acked_rows();
    }
    // Closing: leave the acked table empty (open() would finish it otherwise).
    while (!backend_->acked.empty()) {
      if (!delete_acked_rows()) break;
    }
  }

  // Writes first, leaving a quarter of the batch to other operations when some wait; then
  // those in order while their rows stay within max_batch_rows. When both kinds wait, a batch
  // takes at least one of each, so neither starves.
  void take_batch(std::vector<std::unique_ptr<Op>>& batch) {
    const std::size_t room =
        std::min(others_.size(), std::max<std::size_t>(1, options_.max_batch / 4));
    const std::size_t for_writes = options_.max_batch > room ? options_.max_batch - room : 1;
    while (!writes_.empty() && batch.size() < for_writes) {
      batch.push_back(std::move(writes_.front()));
      writes_.pop_front();
    }
    std::size_t rows = 0;  // sums saturate: a fetch's rows are the caller's page size
    for (bool first = true; !others_.empty(); first = false) {
      const bool fits = batch.size() < options_.max_batch &&
                        saturating_add(rows, others_.front()->rows) <= options_.max_batch_rows;
      if (!first && !fits) break;
      rows = saturating_add(rows, others_.front()->rows);
      batch.push_back(std::move(others_.front()));
      others_.pop_front();
    }
  }

  // A batch whose reads and acknowledgements ask for more than max_rows_beside_writes rows
  // commits its writes first, on their own, and the rest after them in a second transaction:
  // the writes' callbacks (a sender waiting for its acknowledgement) then wait only for the
  // fsync, not for thousands of rows read beside them while devices drain their queues. A few
  // reads, the common case, stay in one commit with the writes. (The writes come first in a
  // batch: take_batch.)
  void split_reads(std::vector<std::unique_ptr<Op>>& batch,
                   std::vector<std::unique_ptr<Op>>& reads) const {
    std::size_t writes = 0;
    std::size_t rows = 0;
    for (const auto& op : batch) {
      if (op->synced()) {
        ++writes;
      } else {
        rows = saturating_add(rows, op->rows);
      }
    }
    if (writes == 0 || writes == batch.size() || rows <= options_.max_rows_beside_writes) return;
    reads.assign(std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(writes)),
                 std::make_move_iterator(batch.end()));
    batch.resize(writes);
  }

  // Deletes the rows of the oldest acknowledged envelopes, and their seqs from the acked table,
  // in one commit without an fsync: the acked table already holds them, so a lost delete is only
  // done again (at open). A run is ack_flush_run long, so that the sends queued behind it wait
  // little, or longer when acknowledgements come faster than that: no more than
  // ack_flush_count stay behind, so neither this list nor the table grows without bound.
  // False (and the seqs kept for a later run) when it failed.
  bool delete_acked_rows() {
    std::vector<std::int64_t>& acked = backend_->acked;
    if (acked.empty()) return true;
    const std::size_t over =
        acked.size() > options_.ack_flush_count ? acked.size() - options_.ack_flush_count : 0;
    const std::size_t n = std::min(acked.size(), std::max(options_.ack_flush_run, over));
    std::nth_element(acked.begin(), acked.begin() + static_cast<std::ptrdiff_t>(n - 1),
                     acked.end());
    std::sort(acked.begin(), acked.begin() + static_cast<std::ptrdiff_t>(n));
    Status s = set_synchronous(false);
    if (s.is_ok()) s = delete_acked(*db_, std::span<const std::int64_t>(acked.data(), n));
    if (!s.is_ok()) {
      failed_ack_flushes_.fetch_add(1, std::memory_order_relaxed);
      acked_since_ = std::chrono::steady_clock::now();  // not again at once
      return false;
    }
    acked.erase(acked.begin(), acked.begin() + static_cast<std::ptrdiff_t>(n));
    acked_pending_.store(acked.size(), std::memory_order_relaxed);
    commits_.fetch_add(1, std::memory_order_relaxed);
    unsynced_commits_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  // One group commit. First the whole batch runs in one transaction without savepoints:
  // a savepoint makes SQLite copy every page an operation touches into a statement journal,
  // which cost more than the operations themselves. Only when an operation fails (a full queue,
  // a taken name) is everything rolled back and the batch run again with a savepoint per
  // operation, so that the failing one is undone alone. Operations can run twice: they read
  // their inputs by reference and set their result afresh on every run.
  // `started`: when the batch was taken from the queue (its BEGIN follows at once).
  void run_batch(std::vector<std::unique_ptr<Op>>& batch,
                 std::chrono::steady_clock::time_point started) {
    Tx tx{*db_, *backend_, {}, {}, {}, 0, false};
    // A batch of acknowledgements and reads alone commits without an fsync (synchronous=NORMAL: WAL
    // frames written, not synced). The next synced commit, or a checkpoint, syncs them too:
    // the WAL is written in order, so no synced commit can outlive an earlier unsynced one (and
    // after a failed sync nothing more is written: wal_gather_vfs.h).
    const bool synced = std::any_of(batch.begin(), batch.end(),
                                    [](const std::unique_ptr<Op>& op) { return op->synced(); });
    Status failed = set_synchronous(synced);
    if (!failed.is_ok()) {
      failed_commits_.fetch_add(1, std::memory_order_relaxed);
      for (auto& op : batch) op->fail(failed);
      return;
    }
    Attempt a = attempt(tx, batch, /*isolate=*/false, failed);
    // A lone operation that failed keeps its error and has nothing to commit.
    if (a == Attempt::kOpFailed && batch.size() == 1) return;
    if (a == Attempt::kOpFailed) {
      rerun_commits_.fetch_add(1, std::memory_order_relaxed);
      tx.delta = {};
      a = attempt(tx, batch, /*isolate=*/true, failed);
    }
    if (a != Attempt::kCommitted) {
      failed_commits_.fetch_add(1, std::memory_order_relaxed);
      for (auto& op : batch) op->fail(failed);
      return;
    }
    if (tx.seq_bound != 0) backend_->seq_bound = tx.seq_bound;
    if (tx.legacy_rows_gone) backend_->legacy_rows = false;
    backend_->queues.settle();
    backend_->dedup.trim();
    if (!tx.acked_added.empty()) {
      if (backend_->acked.empty()) acked_since_ = std::chrono::steady_clock::now();
      backend_->acked.insert(backend_->acked.end(), tx.acked_added.begin(), tx.acked_added.end());
      acked_pending_.store(backend_->acked.size(), std::memory_order_relaxed);
    }
    accounts_.fetch_add(static_cast<std::uint64_t>(tx.delta.accounts), std::memory_order_relaxed);
    envelopes_.fetch_add(static_cast<std::uint64_t>(tx.delta.envelopes),
                         std::memory_order_relaxed);
    bytes_.fetch_add(static_cast<std::uint64_t>(tx.delta.bytes), std::memory_order_relaxed);
    commits_.fetch_add(1, std::memory_order_relaxed);
    if (synced) {
      synced_commit_.observe(std::chrono::steady_clock::now() - started);
    } else {
      unsynced_commits_.fetch_add(1, std::memory_order_relaxed);
    }
    committed_ops_.fetch_add(batch.size(), std::memory_order_relaxed);
    last_batch_size_.store(batch.size(), std::memory_order_relaxed);
  }

  // After each commit (the WAL hook, on the store thread): the checkpointer's turn, or ours
  // when it has fallen far behind.
  void wal_grew(int frames) {
    checkpointer_->wal_grew(frames);
    if (frames < options_.writer_checkpoint_frames || checkpointer_->running()) return;
    int ignored = 0;
    if (db_->checkpoint(ignored).is_ok()) {
      writer_checkpoints_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  Status set_synchronous(bool full) {
    if (full == synchronous_full_) return Status::ok();
    PARLEY_TRY(db_->exec(full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                         "set synchronous"));
    synchronous_full_ = full;
    return Status::ok();
  }

  enum class Attempt {
    kCommitted,  // every op ran (isolate: failed ops were rolled back alone) and it committed
    kOpFailed,   // without isolate only: an op failed, everything was rolled back
    kFailed,     // the transaction failed (`failed` says why); everything was rolled back
  };

  Attempt attempt(Tx& tx, std::vector<std::unique_ptr<Op>>& batch, bool isolate,
                  Status& failed) {
    bool op_failed = false;
    failed = db_->run("BEGIN IMMEDIATE", "begin transaction");
    for (auto& op : batch) {
      if (!failed.is_ok()) break;
      if (isolate) failed = db_->run("SAVEPOINT op", "savepoint");
      if (!failed.is_ok()) break;
      const StatsDelta before = tx.delta;
      const std::size_t dedup_mark = tx.dedup_added.size();
      const std::size_t queues_mark = tx.backend.queues.mark();
      const std::size_t acked_mark = tx.acked_added.size();
      const bool legacy_rows_gone = tx.legacy_rows_gone;
      if (op->run(tx)) {
        if (isolate) failed = db_->run("RELEASE op", "release savepoint");
      } else if (!isolate) {
        op_failed = true;
        break;
      } else {
        tx.delta = before;
        undo_dedup(tx, dedup_mark);
        tx.backend.queues.undo(queues_mark);
        tx.acked_added.resize(acked_mark);
        tx.legacy_rows_gone = legacy_rows_gone;
        failed = db_->run("ROLLBACK TO op", "roll back savepoint");
        if (failed.is_ok()) failed = db_->run("RELEASE op", "release savepoint");
      }
      // Some errors (I/O, disk full) make SQLite roll back the whole transaction.
      if (failed.is_ok() && !db_->in_transaction()) {
        failed = make_error(ErrorCode::kIo, "store: transaction rolled back by SQLite");
      }
    }
    if (failed.is_ok() && !op_failed) failed = save_next_seq(tx);
    if (failed.is_ok() && !op_failed) failed = db_->run("COMMIT", "commit");
    if (failed.is_ok() && !op_failed) return Attempt::kCommitted;
    if (db_->in_transaction()) db_->exec("ROLLBACK", "rollback").ignore();
    // (next_seq stays where it is: the seqs of a rolled-back attempt are burnt, never reused)
    undo_dedup(tx, 0);
    tx.backend.queues.undo(0);
    tx.acked_added.clear();
    tx.seq_bound = 0;
    tx.legacy_rows_gone = false;
    return failed.is_ok() ? Attempt::kOpFailed : Attempt::kFailed;
  }

  // Forgets the dedup keys recorded in memory from index `mark` on (their rows rolled back),
  // newest first (DedupIndex::erase).
  static void undo_dedup(Tx& tx, std::size_t mark) {
    for (std::size_t i = tx.dedup_added.size(); i > mark; --i) {
      tx.backend.dedup.erase(tx.dedup_added[i - 1].first, tx.dedup_added[i - 1].second);
    }
    tx.dedup_added.resize(mark);
  }

  const SqliteOptions options_;
  std::unique_ptr<Db> db_;  // used only by thread_ (and by close() after joining it)
  std::unique_ptr<Checkpointer> checkpointer_;  // stopped before db_ closes; counters stay
  std::unique_ptr<Backend> backend_;  // likewise
  const std::int64_t expiry_clock_at_open_ms_;

  std::mutex mu_;
  std::condition_variable cv_;
  // Operations waiting to run (submit()'s comment has their order); guarded by mu_.
  std::deque<std::unique_ptr<Op>> writes_;  // Sync::kYes
  std::deque<std::unique_ptr<Op>> others_;  // Sync::kNo
  bool closed_ = false;                    // guarded by mu_

  std::mutex join_mu_;  // serialises concurrent close() calls around join()
  std::thread thread_;                  // guarded by join_mu_ after construction
  std::thread::id worker_id_;           // set once in the constructor
  std::atomic<bool> joined_{false};

  std::atomic<std::uint64_t> accounts_{0};
  std::atomic<std::uint64_t> envelopes_{0};
  std::atomic<std::uint64_t> bytes_{0};
  std::atomic<std::uint64_t> commits_{0};
  std::atomic<std::uint64_t> unsynced_commits_{0};
  bool synchronous_full_ = true;  // the connection's setting (Db::open sets FULL); store thread
  std::atomic<std::uint64_t> committed_ops_{0};
  std::atomic<std::uint64_t> last_batch_size_{0};
  std::atomic<std::uint64_t> acked_pending_{0};
  std::atomic<std::uint64_t> failed_ack_flushes_{0};
  std::atomic<std::uint64_t> fetched_envelopes_{0};
  std::atomic<std::uint64_t> fetched_bytes_{0};
  std::atomic<std::uint64_t> failed_commits_{0};
  std::atomic<std::uint64_t> rerun_commits_{0};
  std::atomic<std::uint64_t> writer_checkpoints_{0};
  LatencyHistogram queue_wait_;     // each operation: from submit() to its batch's start
  LatencyHistogram synced_commit_;  // each synced group commit: BEGIN to the end of the fsync
  // When the oldest of backend_->acked was committed (store thread only).
  std::chrono::steady_clock::time_point acked_since_;
};

}  // namespace

std::int64_t wal_size_limit(const SqliteOptions& options) {
  constexpr std::int64_t kFrameBytes = 24 + 4096;  // a WAL frame: its header and a page
  const std::int64_t frames = options.writer_checkpoint_frames;
  return (frames + frames / 4) * kFrameBytes;
}

Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path,
                                                 const SqliteOptions& options) {
  if (options.max_batch == 0 || options.max_pending == 0 || options.dedup_entries == 0 ||
      options.ack_flush_run == 0 || options.checkpoint_frames <= 0 ||
      options.writer_checkpoint_frames <= 0) {
    return make_error(ErrorCode::kInvalidArgument, "store: batch and queue bounds must be > 0");
  }
  PARLEY_ASSIGN_OR_RETURN(std::unique_ptr<Db> db, Db::open(path));
  PARLEY_TRY(migrate(*db));
  const std::string limit = "PRAGMA journal_size_limit=" + std::to_string(wal_size_limit(options));
  PARLEY_TRY(db->exec(limit.c_str(), "set the WAL size limit"));
  std::uint64_t seed = 0;
  {
    std::random_device rd;
    seed = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }
  auto backend = std::make_unique<Backend>(options.dedup_entries, seed);
  PARLEY_TRY(load_backend(*db, *backend));
  PARLEY_ASSIGN_OR_RETURN(StatsDelta gauges, read_gauges(*db, *backend));
  PARLEY_ASSIGN_OR_RETURN(std::unique_ptr<Checkpointer> checkpointer,
                          Checkpointer::start(path, options.checkpoint_frames));
  return std::unique_ptr<Store>(
      new SqliteStore(std::move(db), std::move(checkpointer), options, gauges, std::move(backend)));
}

}  // namespace internal

Result<std::unique_ptr<Store>> open_sqlite_store(const std::string& path) {
  return internal::open_sqlite_store(path, internal::SqliteOptions{});
}

}  // namespace parley::store
