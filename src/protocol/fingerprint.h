#pragma once
// Safety numbers in Signal's numeric-fingerprint format (libsignal NumericFingerprintGenerator,
// DisplayableFingerprint, ScannableFingerprint version 1), byte-compatible with libsignal.
//
// For each party: h = 0x00 0x00 (fingerprint version) || identity key (33 bytes) || stable id;
// then `iterations` times h = SHA-512(h || identity key).
// - Display text: 60 digits. Each party's 30 digits are six 5-byte big-endian chunks of h,
//   each mod 100000, zero-padded to 5 digits; the lexicographically smaller half comes first,
//   so both parties see the same text.
// - Scannable payload (QR code): protobuf CombinedFingerprints{version = 1,
//   local.content = h_local[0..32), remote.content = h_remote[0..32)}.
// A NumericFingerprint is an immutable value; thread-safe to share once built.

#include <cstdint>
#include <string>
#include <utility>

#include "base/bytes.h"
#include "base/result.h"
#include "crypto/curve.h"

namespace parley::protocol {

// The iteration count Signal clients use (about 112 bits of work); must match across clients.
inline constexpr std::uint32_t kFingerprintIterations = 5200;
inline constexpr std::uint32_t kScannableFingerprintVersion = 1;

class NumericFingerprint {
 public:
  NumericFingerprint(std::string display_text, Bytes scannable_payload)
      : display_text_(std::move(display_text)), scannable_payload_(std::move(scannable_payload)) {}

  // 60 decimal digits, identical for both parties.
  const std::string& display_text() const { return display_text_; }
  // Our QR payload (differs between the parties: local and remote are swapped).
  const Bytes& scannable_payload() const { return scannable_payload_; }

  // Compares the payload scanned from the other party's screen with ours: true when its local
  // fingerprint equals our remote one and its remote equals our local (constant-time).
  // kMalformed when the payload does not parse; kBadVersion when it lacks a field or its
  // version is not kScannableFingerprintVersion (libsignal's version mismatch).
  Result<bool> compare_scanned(ByteView scanned) const;

 private:
  std::string display_text_;
  Bytes scannable_payload_;
};

// Computes the safety number between us (local) and a peer (remote). `*_stable_id` is the
// party's stable identifier bytes (libsignal: the phone number or service id as UTF-8).
NumericFingerprint create_fingerprint(std::uint32_t iterations, ByteView local_stable_id,
                                      const crypto::PublicKey& local_identity,
                                      ByteView remote_stable_id,
                                      const crypto::PublicKey& remote_identity);

}  // namespace parley::protocol
