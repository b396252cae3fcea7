#pragma once
// A SOCKS5 proxy for the client's transport tests, on 127.0.0.1 port 0: it accepts any CONNECT
// (with no authentication or RFC 1929 user/password, whatever the client offers) and forwards
// the stream to one fixed loopback port, whatever address the client asked for. So a profile
// whose direct address is dead can still reach the server through it, and a test can cut or
// freeze every relayed connection to play a censor.
//
// One thread accepts, one thread relays each connection; every wait is bounded (poll with a
// short period), and the destructor stops and joins them all. Thread-safe.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace parley::testing {

class SocksForwarder {
 public:
  // Listens at once; forwards every CONNECT to 127.0.0.1:`upstream_port`. With `plain`, there
  // is no SOCKS5 at all: every connection is forwarded as it is (a TCP relay, e.g. the direct
  // address of a profile).
  explicit SocksForwarder(std::uint16_t upstream_port, bool plain = false);
  ~SocksForwarder();
  SocksForwarder(const SocksForwarder&) = delete;
  SocksForwarder& operator=(const SocksForwarder&) = delete;

  std::uint16_t port() const { return port_; }
  // CONNECTs relayed so far.
  int connections() const { return connections_.load(); }
  // Closes every relayed connection now (like a censor's reset); new ones still work.
  void cut_all();
  // Stops moving bytes, for good, on every connection open now, without closing them (a link
  // that freezes silently, like a censor's "16 KB then stall"); new ones still work.
  void freeze_open();

 private:
  void accept_loop();
  void relay(int client);

  std::uint16_t upstream_;
  bool plain_;
  std::uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  // Each connection remembers the epoch it started in; cut_all() and freeze_open() act on the
  // connections of earlier epochs.
  std::atomic<std::uint64_t> epoch_{0};
  std::atomic<std::uint64_t> cut_before_{0};
  std::atomic<std::uint64_t> frozen_before_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> relays_;  // guarded by mu_
};

}  // namespace parley::testing
