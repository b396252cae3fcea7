#include "store/internal/checkpointer.h"

#include <pthread.h>

#include <utility>

namespace parley::store::internal {

Result<std::unique_ptr<Checkpointer>> Checkpointer::start(const std::string& path,
                                                          int start_frames) {
  PARLEY_ASSIGN_OR_RETURN(std::unique_ptr<Db> db, Db::open(path));
  return std::unique_ptr<Checkpointer>(new Checkpointer(std::move(db), start_frames));
}

Checkpointer::Checkpointer(std::unique_ptr<Db> db, int start_frames)
    : db_(std::move(db)), start_frames_(start_frames) {
  thread_ = std::thread([this] {
    ::pthread_setname_np(::pthread_self(), "parley-ckpt");
    loop();
  });
}

Checkpointer::~Checkpointer() { stop(); }

void Checkpointer::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  db_.reset();
}

void Checkpointer::wal_grew(int frames) {
  int last = last_pass_frames_.load(std::memory_order_relaxed);
  if (frames < last) {  // the WAL started over
    last = 0;
    last_pass_frames_.store(0, std::memory_order_relaxed);
  }
  if (frames < start_frames_ || frames - last < start_frames_ / 4) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (wanted_ || stop_) return;
    wanted_ = true;
  }
  cv_.notify_one();
}

void Checkpointer::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return wanted_ || stop_; });
      if (stop_) return;
      wanted_ = false;
    }
    int frames = 0;
    running_.store(true, std::memory_order_relaxed);
    const bool ok = db_->checkpoint(frames).is_ok();
    running_.store(false, std::memory_order_relaxed);
    if (ok) {
      last_pass_frames_.store(frames, std::memory_order_relaxed);
      passes_.fetch_add(1, std::memory_order_relaxed);
    } else {
      // Busy, most likely (a backup, or the writer's own); the next commit asks again.
      failed_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

}  // namespace parley::store::internal
