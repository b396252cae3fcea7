// The Extended ORPort handshake (transport/internal/ext_orport.h): what obfs4proxy's end of the
// connection sends, in pieces of any size. Input, as FuzzedDataProvider reads it: a flags byte
// and the piece sizes (one byte each) from the end, the client's bytes from the front.
//
// The cookie and the server nonce are fixed, so the harness can play an honest client: with
// flag bit 0 set it writes the right ClientHash over bytes 33..64 of the stream, whatever the
// input holds there, and the fuzzer reaches the commands. The committed seeds
// (fuzz/corpus/fuzz_ext_orport/) are written this way: a client's whole transcript with zeros
// for the hash, flag 1, and the piece sizes they name.
//
// Invariants: nothing crashes; a feed consumes at most its input, and all of it until done; once
// done, the client's address is set and valid, and later feeds consume nothing; an error stays,
// and a wrong ClientHash is answered with 0x00; an honest client is never refused, and the
// server's hash is the right one; feeding the same stream in one piece gives the same outcome,
// the same bytes to send and the same count of handshake bytes.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "crypto/primitives.h"
#include "fuzz_support.h"
#include "transport/internal/ext_orport.h"

using namespace parley;  // NOLINT: a fuzz target
using parley::transport::internal::ExtOrPortHandshake;
using parley::transport::internal::kExtOrPortCookieBytes;
using parley::transport::internal::kExtOrPortMaxHandshakeBytes;

namespace {

constexpr std::size_t kNonceEnd = 33;  // auth type (1), ClientNonce (32)
constexpr std::size_t kHashEnd = 65;   // then ClientHash (32)

const SecretBytes& cookie() {
  static const SecretBytes c{ByteView(Bytes(kExtOrPortCookieBytes, 0x42))};
  return c;
}
ExtOrPortHandshake::Nonce server_nonce() {
  ExtOrPortHandshake::Nonce n;
  n.fill(0x24);
  return n;
}

crypto::Sha256Digest hash(std::string_view label, ByteView client_nonce) {
  const ExtOrPortHandshake::Nonce sn = server_nonce();
  return crypto::hmac_sha256(cookie().view(), {as_bytes(label), client_nonce, ByteView(sn)});
}

// One handshake's outcome over a whole stream.
struct Outcome {
  std::optional<Status> error;
  Bytes out;                 // every step's out, then failure_reply()
  std::size_t consumed = 0;  // meaningful without an error
  bool done = false;
};

bool same_error(const Status& a, const Status& b) {
  return a.code() == b.code() && a.message() == b.message();
}

// Feeds `piece`, checking the per-feed invariants, and folds the result into `o`.
void feed(ExtOrPortHandshake& h, ByteView piece, Outcome& o) {
  auto step = h.feed(piece);
  if (!step) {
    const Status& s = step.error();
    PARLEY_FUZZ_CHECK(!s.is_ok() && !h.done());
    PARLEY_FUZZ_CHECK(s.message().rfind("ext-orport: ", 0) == 0);
    PARLEY_FUZZ_CHECK(s.code() == ErrorCode::kInvalidArgument ||
                      s.code() == ErrorCode::kPermissionDenied);
    if (o.error) {
      PARLEY_FUZZ_CHECK(same_error(*o.error, s));  // errors stay
    } else {
      o.error = s;
      append(o.out, h.failure_reply());
      if (s.code() == ErrorCode::kPermissionDenied) {
        PARLEY_FUZZ_CHECK(!h.failure_reply().empty() && h.failure_reply().back() == 0x00);
      }
    }
    return;
  }
  PARLEY_FUZZ_CHECK(!o.error);  // no success after an error
  PARLEY_FUZZ_CHECK(h.consumed() <= piece.size());
  PARLEY_FUZZ_CHECK(step->done == h.done());
  if (o.done) {
    PARLEY_FUZZ_CHECK(step->done && h.consumed() == 0 && step->out.empty());
  } else if (!step->done) {
    PARLEY_FUZZ_CHECK(h.consumed() == piece.size());
  } else {  // this feed finished the handshake: its reply ends with OKAY
    static const Bytes kOkay = {0x10, 0x00, 0x00, 0x00};
    PARLEY_FUZZ_CHECK(step->out.size() >= kOkay.size());
    PARLEY_FUZZ_CHECK(std::equal(kOkay.begin(), kOkay.end(), step->out.end() - 4));
  }
  if (step->done) {
    const std::string& ip = h.client_ip();
    const std::string& addr = h.client_address();
    PARLEY_FUZZ_CHECK(!ip.empty());
    const bool v6 = ip.find(':') != std::string::npos;
    PARLEY_FUZZ_CHECK(addr == (v6 ? "[" + ip + "]" : ip) + ":" + std::to_string(h.client_port()));
    PARLEY_FUZZ_CHECK(std::all_of(h.transport().begin(), h.transport().end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
    }));
  }
  append(o.out, step->out);
  o.consumed += h.consumed();
  o.done = step->done;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider fdp(data, size);
  const bool honest_hash = (fdp.ConsumeIntegral<std::uint8_t>() & 1) != 0;

  ExtOrPortHandshake h(cookie(), server_nonce());
  PARLEY_FUZZ_CHECK(h.greeting() == (Bytes{0x01, 0x00}));
  Outcome pieces;
  Bytes stream;  // what was fed, hash written in
  while (fdp.remaining_bytes() > 0) {
    const std::size_t n = fdp.ConsumeIntegral<std::uint8_t>();
    Bytes piece = fdp.ConsumeBytes<std::uint8_t>(n);
    const std::size_t start = stream.size();
    append(stream, piece);
    if (honest_hash && stream.size() > kNonceEnd && start < kHashEnd) {
      const crypto::Sha256Digest client_hash =
          hash("ExtORPort authentication client-to-server hash", ByteView(stream).subspan(1, 32));
      for (std::size_t at = std::max(start, kNonceEnd); at < std::min(stream.size(), kHashEnd);
           ++at) {
        stream[at] = piece[at - start] = client_hash[at - kNonceEnd];
      }
    }
    feed(h, piece, pieces);
  }
  // One more byte, once that changes nothing: errors stay, and done consumes nothing.
  if (pieces.error || pieces.done) feed(h, Bytes{0x00}, pieces);

  // The same stream in one piece: the same outcome.
  ExtOrPortHandshake whole_h(cookie(), server_nonce());
  Outcome whole;
  feed(whole_h, stream, whole);
  PARLEY_FUZZ_CHECK(whole.done == pieces.done);
  PARLEY_FUZZ_CHECK(whole.error.has_value() == pieces.error.has_value());
  if (whole.error) PARLEY_FUZZ_CHECK(same_error(*whole.error, *pieces.error));
  PARLEY_FUZZ_CHECK(whole.out == pieces.out);
  if (!whole.error) PARLEY_FUZZ_CHECK(whole.consumed == pieces.consumed);
  PARLEY_FUZZ_CHECK(whole.consumed <= kExtOrPortMaxHandshakeBytes);
  PARLEY_FUZZ_CHECK(whole_h.client_address() == h.client_address());
  PARLEY_FUZZ_CHECK(whole_h.transport() == h.transport());

  // The server's hash and nonce; an honest client is never refused.
  if (stream.size() >= kNonceEnd && stream[0] == 0x01) {
    const crypto::Sha256Digest server_hash =
        hash("ExtORPort authentication server-to-client hash", ByteView(stream).subspan(1, 32));
    const ExtOrPortHandshake::Nonce sn = server_nonce();
    PARLEY_FUZZ_CHECK(whole.out.size() >= 64);
    PARLEY_FUZZ_CHECK(std::equal(server_hash.begin(), server_hash.end(), whole.out.begin()));
    PARLEY_FUZZ_CHECK(std::equal(sn.begin(), sn.end(), whole.out.begin() + 32));
    if (stream.size() >= kHashEnd) {
      PARLEY_FUZZ_CHECK(whole.out.size() >= 65);
      // 0x01 for an honest client; otherwise 0x00, barring a guess of 256 bits.
      PARLEY_FUZZ_CHECK(whole.out[64] == 0x01 || (!honest_hash && whole.out[64] == 0x00));
      if (honest_hash) {
        PARLEY_FUZZ_CHECK(!whole.error || whole.error->code() != ErrorCode::kPermissionDenied);
      }
    }
  }
  if (fuzz::verbose() && whole.done) std::fprintf(stderr, "done: %s\n", h.client_address().c_str());
  return 0;
}
