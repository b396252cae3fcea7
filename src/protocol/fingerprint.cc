#include "protocol/fingerprint.h"

#include <cstdio>
#include <utility>

#include "base/secret_bytes.h"
#include "crypto/primitives.h"
#include "signal/fingerprint.pb.h"

namespace parley::protocol {

namespace {

constexpr std::size_t kScannableSize = 32;
constexpr std::size_t kChunkCount = 6;
constexpr std::size_t kChunkBytes = 5;

// libsignal NumericFingerprintGenerator.getFingerprint (FINGERPRINT_VERSION = 0). The result is
// 64 bytes for iterations >= 1 (and the 35+ byte input itself for 0, as libsignal).
Bytes logical_fingerprint(std::uint32_t iterations, ByteView stable_id,
                          const crypto::PublicKey& identity) {
  const Bytes key = identity.serialize();
  Bytes hash(2 + key.size() + stable_id.size());
  hash[0] = 0x00;  // FINGERPRINT_VERSION, 2 bytes big-endian
  hash[1] = 0x00;
  std::copy(key.begin(), key.end(), hash.begin() + 2);
  std::copy(stable_id.begin(), stable_id.end(), hash.begin() + 2 + static_cast<std::ptrdiff_t>(key.size()));
  for (std::uint32_t i = 0; i < iterations; ++i) {
    append(hash, key);
    const crypto::Sha512Digest digest = crypto::sha512(hash);
    hash.assign(digest.begin(), digest.end());
  }
  return hash;
}

// DisplayableFingerprint.getDisplayStringFor: six 5-digit groups.
std::string display_digits(const Bytes& h) {
  std::string out;
  out.reserve(kChunkCount * kChunkBytes);
  for (std::size_t c = 0; c < kChunkCount; ++c) {
    std::uint64_t v = 0;
    for (std::size_t b = 0; b < kChunkBytes; ++b) v = (v << 8) | h[c * kChunkBytes + b];
    char buf[8];
    std::snprintf(buf, sizeof buf, "%05u", static_cast<unsigned>(v % 100000));
    out += buf;
  }
  return out;
}

}  // namespace

NumericFingerprint create_fingerprint(std::uint32_t iterations, ByteView local_stable_id,
                                      const crypto::PublicKey& local_identity,
                                      ByteView remote_stable_id,
                                      const crypto::PublicKey& remote_identity) {
  const Bytes local = logical_fingerprint(iterations, local_stable_id, local_identity);
  const Bytes remote = logical_fingerprint(iterations, remote_stable_id, remote_identity);
  std::string local_text = display_digits(local);
  std::string remote_text = display_digits(remote);
  std::string display =
      local_text <= remote_text ? local_text + remote_text : remote_text + local_text;

  signal::fingerprint::CombinedFingerprints p;
  p.set_version(kScannableFingerprintVersion);
  p.mutable_local_fingerprint()->set_content(local.data(), kScannableSize);
  p.mutable_remote_fingerprint()->set_content(remote.data(), kScannableSize);
  return NumericFingerprint(std::move(display), to_bytes(p.SerializeAsString()));
}

Result<bool> NumericFingerprint::compare_scanned(ByteView scanned) const {
  signal::fingerprint::CombinedFingerprints theirs;
  if (scanned.size() > 1024 ||
      !theirs.ParseFromArray(scanned.data(), static_cast<int>(scanned.size()))) {
    return make_error(ErrorCode::kMalformed, "scanned fingerprint does not parse");
  }
  if (!theirs.has_version() || !theirs.has_local_fingerprint() ||
      !theirs.has_remote_fingerprint() || theirs.version() != kScannableFingerprintVersion) {
    return make_error(ErrorCode::kBadVersion, "scanned fingerprint has another version");
  }
  signal::fingerprint::CombinedFingerprints ours;
  if (!ours.ParseFromArray(scannable_payload_.data(),
                           static_cast<int>(scannable_payload_.size()))) {
    return make_error(ErrorCode::kInternal, "own fingerprint does not parse");
  }
  // Evaluate both comparisons (no short circuit) so timing does not reveal which half differs.
  const bool local_ok = constant_time_equal(as_bytes(ours.local_fingerprint().content()),
                                            as_bytes(theirs.remote_fingerprint().content()));
  const bool remote_ok = constant_time_equal(as_bytes(ours.remote_fingerprint().content()),
                                             as_bytes(theirs.local_fingerprint().content()));
  return static_cast<bool>(local_ok & remote_ok);
}

}  // namespace parley::protocol
