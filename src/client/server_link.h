#pragma once
// ServerLink: one authenticated conversation with parleyd over the wire protocol
// (docs/protocol.md, section 8), blocking, with every wait bounded.
//
// connect() opens the pinned TLS + WebSocket connection and reads the challenge; register_device()
// or login() authenticate it; call() sends a request and waits for its response, keeping pushes
// (envelopes, queue-empty) that arrive meanwhile for next_push().
// Not thread-safe: one thread drives a link.

#include <chrono>
#include <deque>
#include <memory>
#include <string>

#include "base/result.h"
#include "base/rng.h"
#include "crypto/primitives.h"
#include "transport/client.h"
#include "wire/frame.h"
#include "wire/invite.h"

namespace parley::client {

using std::chrono::milliseconds;

class ServerLink {
 public:
  // kPermissionDenied on a certificate pin mismatch; kIo/kUnavailable when unreachable.
  static Result<std::unique_ptr<ServerLink>> connect(const wire::Invite& server, Rng& rng,
                                                     milliseconds timeout = milliseconds(10000));
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
  // The next push, waiting up to `timeout` (zero: only one that has already arrived);
  // kUnavailable when none came in time, kIo when the connection closed.
  Result<wire::Push> next_push(milliseconds timeout);

  void close();

 private:
  ServerLink(std::unique_ptr<transport::BlockingWsClient> ws, Rng& rng)
      : ws_(std::move(ws)), rng_(rng) {}
  Result<wire::Frame> next_frame(milliseconds timeout);

  std::unique_ptr<transport::BlockingWsClient> ws_;
  Rng& rng_;
  wire::Challenge challenge_;
  std::deque<wire::Push> pushes_;
  std::uint64_t next_id_ = 1;
};

// A response's status as a Status: 0 -> ok; otherwise the closest ErrorCode with the server's
// message, prefixed by `what`.
Status response_status(const wire::Response& response, std::string_view what);

}  // namespace parley::client
