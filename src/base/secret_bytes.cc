#include "base/secret_bytes.h"

#include <cstring>

namespace parley {

void secure_zero(void* p, std::size_t len) {
  if (len == 0) return;
  std::memset(p, 0, len);
  // Tell the compiler the memory is observed, so the memset is not elided as a dead store.
  __asm__ __volatile__("" : : "r"(p) : "memory");
}

bool constant_time_equal(ByteView a, ByteView b) {
  if (a.size() != b.size()) return false;
  volatile std::uint8_t diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff = diff | (a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace parley
