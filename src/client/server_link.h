#pragma once
// ServerLink: one authenticated conversation with parleyd over the wire protocol
// (docs/protocol.md, section 8), blocking, with every wait bounded.
//
// connect() opens the pinned TLS + WebSocket connection and reads the challenge; register_device()
// or login() authenticate it; call() sends a request and waits for its response, keeping pushes
// (envelopes, queue-empty) that arrive meanwhile for next_push().
// Not thread-safe: one thread drives a link.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "crypto/primitives.h"
#include "transport/client.h"
#include "wire/frame.h"
#include "wire/invite.h"

namespace parley::client {

using std::chrono::milliseconds;

class ServerLink {
 public:
  // kPermissionDenied on a certificate pin mismatch; kIo/kUnavailable when unreachable.
  static Result<std::unique_ptr<ServerLink>> connect(const wire::Invite& server,
                                                     milliseconds timeout = milliseconds(10000));
  // The same over any route: `options` as given (its connect_timeout also bounds the wait for
  // the challenge). Links may be opened on other threads and handed over.
  static Result<std::unique_ptr<ServerLink>> connect(const transport::ClientOptions& options);
  ~ServerLink();

  const wire::Challenge& challenge() const { return challenge_; }

  // Signs the challenge with `auth` (registration solves the proof of work when asked).
  Result<wire::Response> register_device(wire::RegisterRequest request,
                                         const crypto::Ed25519KeyPair& auth,
                                         const std::string& folded_name);
  Result<wire::LoginResult> login(const std::string& folded_name, std::uint32_t device_id,
                                  const crypto::Ed25519KeyPair& auth);

  // Assigns the id, sends, and waits for the matching response.
  Result<wire::Response> call(wire::Request request, milliseconds timeout = milliseconds(15000));
  // Whether the server takes one-way acknowledgements (Frame.ack: wire_version >= 2).
  bool one_way_acks() const { return challenge_.wire_version() >= 2; }
  // Sends a one-way acknowledgement; no response comes (an ack the server cannot take closes
  // the connection).
  Status ack_one_way(wire::AckRequest ack);
  // The next push, waiting up to `timeout` (zero: only one that has already arrived);
  // kUnavailable when none came in time, kIo when the connection closed.
  Result<wire::Push> next_push(milliseconds timeout);

  void close();

 private:
  explicit ServerLink(std::unique_ptr<transport::BlockingWsClient> ws) : ws_(std::move(ws)) {}
  Result<wire::Frame> next_frame(milliseconds timeout);

  std::unique_ptr<transport::BlockingWsClient> ws_;
  wire::Challenge challenge_;
  std::deque<wire::Push> pushes_;
  std::uint64_t next_id_ = 1;
};

// One way to reach the server, for LinkRace.
struct LinkCandidate {
  std::string label;  // for error messages ("direct", "socks5://...")
  // Produces the connection options; runs on the candidate's own thread and may block (a
  // pluggable transport starting). Must be thread-safe with the other candidates' prepare.
  std::function<Result<transport::ClientOptions>()> prepare;
};

// Races candidates to the server (happy-eyeballs style): candidate 0 starts at once, each next
// one `stagger` after the previous started, or at once when every started candidate failed.
// The first to complete the handshake (TLS, WebSocket, challenge) wins; a later one that also
// completes is closed; candidates not started by then never start.
//
// Threads: one per started candidate (at most kMaxCandidates), each bounded by its options'
// connect_timeout. wait() returns as soon as there is a winner; the losers still connecting
// finish in the background, and the destructor joins them (so it may block up to their
// timeouts). Thread-safe: wait(), finished() and results() may be called from one other thread
// (the owner's).
class LinkRace {
 public:
  static constexpr std::size_t kMaxCandidates = 8;

  LinkRace(std::vector<LinkCandidate> candidates, milliseconds stagger);
  ~LinkRace();
  LinkRace(const LinkRace&) = delete;
  LinkRace& operator=(const LinkRace&) = delete;

  struct Winner {
    std::size_t index = 0;
    std::unique_ptr<ServerLink> link;
    transport::ClientOptions options;  // what it connected with (attachments use the same route)
  };
  // The winner, or the failure of all: a lone candidate's own error, else kUnavailable (or the
  // code they all share) naming each candidate's error.
  Result<Winner> wait();
  // True once every thread has ended (results() is then final).
  bool finished();
  // Waits for every thread to end (idempotent; the owner's thread only).
  void join();
  // Lets the threads run on unjoined. The object must then never be destroyed (the owner leaks
  // it): for a process about to exit.
  void detach();
  // Per candidate: none while it runs or if it never started; ok; or its error.
  std::vector<std::optional<Status>> results();

 private:
  void run(std::size_t i);

  std::vector<LinkCandidate> candidates_;
  milliseconds stagger_;
  std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_:
  std::size_t next_start_ = 0;  // the next candidate allowed to start
  std::chrono::steady_clock::time_point last_start_;
  std::size_t running_ = 0;
  std::size_t ended_ = 0;
  std::optional<std::size_t> winner_;
  std::unique_ptr<ServerLink> winner_link_;
  transport::ClientOptions winner_options_;
  bool taken_ = false;
  std::vector<std::optional<Status>> results_;
  std::vector<std::thread> threads_;
};

// A response's status as a Status: 0 -> ok; otherwise the closest ErrorCode with the server's
// message, prefixed by `what`.
Status response_status(const wire::Response& response, std::string_view what);

}  // namespace parley::client
