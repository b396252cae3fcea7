#pragma once
// IoPool: the io_contexts that serve connections, each run by exactly one thread.
//
// A connection stays on one context for its whole life (ServerOptions::workers spreads them
// round-robin), so its handlers never run concurrently without a strand, and the hand-offs
// between threads that a shared multi-threaded io_context makes on every post and completion
// are gone. The caller's `main` context is the first of the pool: it also runs everything that
// is not a connection (the acceptor, the admin listener, signals, housekeeping).
//
// Threading: run() is called once, from the thread that is to run `main`. It returns when
// `main` runs out of work or is stopped; the other contexts are then stopped and their threads
// joined. Handlers still queued on them are destroyed with the pool, as an io_context's are.

#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

namespace parley::transport {

class IoPool {
 public:
  // `size` contexts in all (at least 1): `main` and size - 1 more, each with a thread in run().
  IoPool(boost::asio::io_context& main, unsigned size);
  ~IoPool();
  IoPool(const IoPool&) = delete;
  IoPool& operator=(const IoPool&) = delete;

  // Every context, `main` first. Stable for the pool's life.
  const std::vector<boost::asio::io_context*>& contexts() const { return all_; }

  void run();

 private:
  using Guard = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;
  void stop_others();  // releases, stops and joins the contexts other than main

  std::vector<std::unique_ptr<boost::asio::io_context>> extra_;
  std::vector<boost::asio::io_context*> all_;  // main first
  std::vector<Guard> guards_;  // keep the extra contexts running while they have no connection
  std::vector<std::thread> threads_;
};

}  // namespace parley::transport
