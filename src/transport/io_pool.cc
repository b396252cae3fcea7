#include "transport/io_pool.h"

#include <pthread.h>

#include <algorithm>
#include <string>

namespace parley::transport {

IoPool::IoPool(boost::asio::io_context& main, unsigned size) {
  all_.push_back(&main);
  for (unsigned i = 1; i < std::max(1u, size); ++i) {
    // Concurrency hint 1: one thread runs it (others only post to it).
    extra_.push_back(std::make_unique<boost::asio::io_context>(1));
    all_.push_back(extra_.back().get());
    guards_.emplace_back(extra_.back()->get_executor());
  }
}

IoPool::~IoPool() { stop_others(); }

void IoPool::run() {
  for (auto& c : extra_) {
    threads_.emplace_back([ctx = c.get(), n = threads_.size() + 1] {
      // Named for top, perf and /proc/PID/task; the caller's thread runs context 0.
      const std::string name = "parley-io-" + std::to_string(n);
      ::pthread_setname_np(::pthread_self(), name.c_str());
      ctx->run();
    });
  }
  all_.front()->run();
  stop_others();
}

void IoPool::stop_others() {
  for (auto& g : guards_) g.reset();
  for (auto& c : extra_) c->stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

}  // namespace parley::transport
