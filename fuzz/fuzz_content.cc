// The client's decoder of what peers put inside Signal ciphertext (client::decode_content:
// padding, then the Content protobuf). Invariants: nothing crashes; whatever decodes re-encodes
// and decodes back to the same message.
#include <cstdint>
#include <cstdlib>

#include "client/content.h"

using namespace parley;  // NOLINT: a fuzz target

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto content = client::decode_content(ByteView(data, size));
  if (!content) return 0;
  auto again = client::decode_content(client::encode_content(*content));
  if (!again || again->SerializeAsString() != content->SerializeAsString()) std::abort();
  return 0;
}
