// parleyd's TLS ticket key file (transport/internal/ticket_keys.h): bytes from the disk. The
// input is written as the file and opened. Invariants: nothing crashes; an open that succeeds
// holds 1 to kMaxTicketKeys keys, and the file it leaves (the input itself, or what it wrote
// after a rotation) opens again to the same keys.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "base/clock.h"
#include "fuzz_support.h"
#include "transport/internal/ticket_keys.h"

using namespace parley;  // NOLINT: a fuzz target
using parley::transport::internal::kMaxTicketKeys;
using parley::transport::internal::TicketKeys;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/tmp/fuzz_ticket_keys." + std::to_string(::getpid());
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  const ManualClock clock(1'764'500'000'000);  // 2025-11-30
  auto keys = TicketKeys::open(path, std::chrono::hours(12), clock);
  if (keys) {
    const auto names = (*keys)->names();
    PARLEY_FUZZ_CHECK(!names.empty() && names.size() <= kMaxTicketKeys);
    auto again = TicketKeys::open(path, std::chrono::hours(12), clock);
    PARLEY_FUZZ_CHECK(again.has_value());
    PARLEY_FUZZ_CHECK((*again)->names() == names);
  }
  std::remove(path.c_str());
  std::remove((path + ".tmp").c_str());
  return 0;
}
