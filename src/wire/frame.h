#pragma once
// Framing helpers around the generated wire types (proto/wire/frame.proto).
//
// - decode_frame() parses one WebSocket message into a Frame, refusing oversize input
//   (kTooLarge) and bytes that do not parse (kMalformed).
// - encode_frame() serializes a Frame, padding it with zero bytes up to the next size in
//   kPaddingBuckets so that message lengths do not show on the wire. Zeros, not random bytes:
//   the frame travels inside TLS (no compression), so an observer sees only the length, and
//   random padding cost the server 2.3 % of its CPU (session 7's offline profile,
//   docs/benchmarks.md).
// Stateless; thread-safe.

#include <memory>
#include <string>

#include "base/bytes.h"
#include "base/result.h"
#include "wire/frame.pb.h"

namespace parley::wire {

// 2: Frame.ack (one-way acknowledgements) is accepted.
inline constexpr std::uint32_t kWireVersion = 2;
inline constexpr std::size_t kMaxFrameSize = 256 * 1024;
// The largest content of one message the server takes. The Envelope that carries it to a device
// (server id, timestamp, a source name of up to 32 characters, device, type, inside a Push or an
// EnvelopeBatch, and the padding field) must still fit in kMaxFrameSize: a device that cannot
// read an envelope gets it first again at every login, and its queue stops behind it.
inline constexpr std::size_t kEnvelopeOverheadBound = 512;
inline constexpr std::size_t kMaxMessageContent = kMaxFrameSize - kEnvelopeOverheadBound;

// Frames are padded to the smallest of these sizes that fits (larger frames to a multiple of
// the last one).
inline constexpr std::size_t kPaddingBuckets[] = {256, 1024, 4096, 16384};

Result<Frame> decode_frame(std::string_view bytes);
enum class Padding { kBuckets, kNone };  // kNone: tests of exact encodings only
std::shared_ptr<const std::string> encode_frame(Frame& frame, Padding padding = Padding::kBuckets);

// Sends libprotobuf's own log lines to spdlog: a complaint about input being parsed at debug
// level, any other at warn. By default libprotobuf writes them to stderr, and parsing a string
// field that is not UTF-8 writes one: so every such frame a peer sent put an unstructured line
// into parleyd's log, or into the client's terminal. The lines name no field values. A fatal one
// still aborts, as libprotobuf does after it. Call once, at start, before other threads run
// (libprotobuf's SetLogHandler is not thread-safe). Needs libprotobuf before 22, which removed
// SetLogHandler (Debian 12 has 3.21).
void route_protobuf_logs();

// The bytes a device signs to authenticate (both login and registration):
// "parley-auth-v1" || 0x00 || nonce(32) || name || 0x00 || device_id (4 bytes big-endian).
Bytes auth_transcript(ByteView nonce, std::string_view name, std::uint32_t device_id);

// Status codes carried in Response.status.
enum WireStatus : std::uint32_t {
  kStatusOk = 0,
  kStatusBadRequest = 400,
  kStatusUnauthorized = 401,
  kStatusForbidden = 403,
  kStatusNotFound = 404,
  kStatusConflict = 409,
  kStatusTooLarge = 413,
  kStatusRateLimited = 429,
  kStatusInternal = 500,
  kStatusUnavailable = 503,
};

}  // namespace parley::wire
