#pragma once
// The input of fuzz_session: a script of WebSocket messages from up to two clients to parleyd's
// session logic, with the points where the server may catch up. make_seeds.cc writes its seeds
// with SessionInput; fuzz_session.cc reads them.
//
//   input  = config step*
//   config = 1 byte. Bits 0-1: registration 0 open, 1 invite (the token kSessionInvite exists),
//            2 and 3 proof of work at difficulty kSessionPowDifficulty. Bit 2: queue_max_count 4
//            (else 10,000). Bit 3: max_inflight_requests 2 (else 64). Bit 4: ip_request_burst 8
//            (else 2,000).
//   step   = op(1) length(2, big-endian) payload(length); a step cut short by the end of the
//            input ends the script.
//   op & 3 = 0: the payload is one binary WebSocket message on connection (op >> 2) & 1, which
//               is opened first (and sent its challenge) if it is not open;
//            1: the client closes that connection;
//            2: settle: run the server's thread and the store until neither has work left;
//               with bit 2 set, the server starts draining first (as on SIGTERM);
//            3: the clock moves on by `length` seconds (the payload is empty); with bit 2
//               set, the store then expires what is older than kSessionExpiryAgeMs, as
//               parleyd's housekeeping does (with the configured age).
//
// A fuzzer cannot forge a signature, so the harness supplies what a real client would:
// - a Register or Login whose challenge_signature is empty is signed over the connection's
//   challenge with the harness's device key (a Register whose auth_public_key is empty gets
//   that key);
// - a server id of 1 byte k in an acknowledgement (Request.ack or Frame.ack) becomes the
//   k-th (modulo their number) server id pushed to that connection so far.
// Everything else reaches the server as the fuzzer wrote it.

#include <cstdint>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "wire/frame.h"

namespace parley::fuzz {

inline constexpr std::uint8_t kSessionOpen = 0;
inline constexpr std::uint8_t kSessionInviteOnly = 1;
inline constexpr std::uint8_t kSessionPow = 2;
inline constexpr std::uint8_t kSessionSmallQueues = 1 << 2;
inline constexpr std::uint8_t kSessionFewInflight = 1 << 3;
inline constexpr std::uint8_t kSessionSmallBurst = 1 << 4;
inline constexpr std::string_view kSessionInvite = "fuzz-invite-token";
inline constexpr std::uint32_t kSessionPowDifficulty = 2;
inline constexpr std::int64_t kSessionExpiryAgeMs = 3600 * 1000;

enum class SessionOp : std::uint8_t { kMessage = 0, kClose = 1, kSettle = 2, kAdvance = 3 };

// Writes a fuzz_session input (the seeds).
class SessionInput {
 public:
  explicit SessionInput(std::uint8_t config) : bytes_{config} {}

  void message(int connection, wire::Frame frame) {
    raw(connection, *wire::encode_frame(frame, wire::Padding::kNone));
  }
  void raw(int connection, std::string_view bytes) {
    step(SessionOp::kMessage, connection, bytes.size());
    append(bytes_, as_bytes(bytes));
  }
  void close(int connection) { step(SessionOp::kClose, connection, 0); }
  void settle() { step(SessionOp::kSettle, 0, 0); }
  void drain_and_settle() { step(SessionOp::kSettle, 1, 0); }
  void advance(std::uint16_t seconds) { step(SessionOp::kAdvance, 0, seconds); }
  void advance_and_expire(std::uint16_t seconds) { step(SessionOp::kAdvance, 1, seconds); }

  const Bytes& bytes() const { return bytes_; }

 private:
  void step(SessionOp op, int connection, std::size_t length) {
    bytes_.push_back(static_cast<std::uint8_t>(static_cast<int>(op) | (connection & 1) << 2));
    bytes_.push_back(static_cast<std::uint8_t>(length >> 8));
    bytes_.push_back(static_cast<std::uint8_t>(length));
  }

  Bytes bytes_;
};

}  // namespace parley::fuzz
