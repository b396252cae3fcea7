// Fuzzes NumericFingerprint::compare_scanned, which parses a QR payload scanned from another
// device's screen. Invariants: no crash; Bob's real payload matches Alice's safety number; a
// payload that matches Alice's view (her remote half first) can never also match Bob's.

#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"

namespace parley::fuzz {
namespace {

void run(ByteView input) {
  static const FingerprintPair kPair = [] {
    FingerprintPair p = make_fingerprint_pair();
    auto ok = p.alice.compare_scanned(p.bob.scannable_payload());
    PARLEY_FUZZ_CHECK(ok.has_value() && *ok);
    return p;
  }();
  auto alice_view = kPair.alice.compare_scanned(input);
  auto bob_view = kPair.bob.compare_scanned(input);
  // Parsing does not depend on whose fingerprint compares.
  PARLEY_FUZZ_CHECK(alice_view.has_value() == bob_view.has_value());
  if (!alice_view) {
    PARLEY_FUZZ_CHECK(alice_view.error().code() == bob_view.error().code());
    return;
  }
  PARLEY_FUZZ_CHECK(!(*alice_view && *bob_view));
  if (to_bytes(input) == kPair.bob.scannable_payload()) PARLEY_FUZZ_CHECK(*alice_view);
  if (to_bytes(input) == kPair.alice.scannable_payload()) PARLEY_FUZZ_CHECK(*bob_view);
}

}  // namespace
}  // namespace parley::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  parley::fuzz::run(parley::ByteView(data, size));
  return 0;
}
