// Fuzzes the persisted-state decoders. The first input byte selects the record type
// (mod 4: SessionRecord, SenderKeyRecord, PreKeyRecord, SignedPreKeyRecord); the rest is the
// stored bytes. Invariants: deserialize never crashes; for a record that loads,
// serialize -> deserialize -> serialize is stable, and clone() serializes identically.

#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "protocol/keys.h"
#include "protocol/sender_key_record.h"
#include "protocol/session_record.h"

namespace parley::fuzz {
namespace {

template <typename Record, typename Clone>
void round_trip(ByteView input, Clone clone) {
  auto loaded = Record::deserialize(input);
  if (!loaded) return;
  const Bytes first = loaded->serialize();
  PARLEY_FUZZ_CHECK(clone(*loaded).serialize() == first);
  auto reloaded = Record::deserialize(first);
  PARLEY_FUZZ_CHECK(reloaded.has_value());
  PARLEY_FUZZ_CHECK(reloaded->serialize() == first);
}

void run(std::uint8_t selector, ByteView input) {
  switch (selector % 4) {
    case 0:
      round_trip<protocol::SessionRecord>(input, [](const auto& r) { return r.clone(); });
      break;
    case 1:  // copyable
      round_trip<protocol::SenderKeyRecord>(input, [](const auto& r) { return r; });
      break;
    case 2:
      round_trip<protocol::PreKeyRecord>(input, [](const auto& r) { return r.clone(); });
      break;
    default:
      round_trip<protocol::SignedPreKeyRecord>(input, [](const auto& r) { return r.clone(); });
      break;
  }
}

}  // namespace
}  // namespace parley::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  parley::fuzz::run(data[0], parley::ByteView(data + 1, size - 1));
  return 0;
}
