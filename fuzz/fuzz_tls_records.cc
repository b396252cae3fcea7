// TLS 1.3 records after the handoff (transport/internal/tls_records.h): the server opens every
// record a client sends with TlsRecords::check_header() and open(). The input drives a client
// and a server over the same secrets, as a list of steps (first byte: the suite):
//   0: the client seals the step's bytes (at most 2^14) and the server opens them: they must
//      come back whole, with their type;
//   1: as 0, with one byte of the sealed record changed (the step's first byte says which):
//      the server must refuse it, and its sequence number must not move;
//   2: the step's bytes go to the server as a record as they are: whatever the header says,
//      nothing crashes, and a forged record never opens;
//   3: a KeyUpdate on both ends.
// Invariants: nothing crashes; a refused record leaves the server as it was (the next honest
// record still opens).
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_support.h"
#include "transport/internal/tls_records.h"

using namespace parley;                       // NOLINT: a fuzz target
using namespace parley::transport::internal;  // NOLINT: a fuzz target

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const auto suite = static_cast<TlsRecords::Suite>(data[0] % 3);
  const std::size_t hash = suite == TlsRecords::Suite::kAes256GcmSha384 ? 48 : 32;
  const Bytes c(hash, 0x11), s(hash, 0x22);
  auto client = TlsRecords::make(suite, s, c, 0, 0);
  auto server = TlsRecords::make(suite, c, s, 0, 0);
  PARLEY_FUZZ_CHECK(client && server);
  std::size_t pos = 1;
  std::vector<std::uint8_t> rec;
  for (int steps = 0; pos + 3 <= size && steps < 64; ++steps) {
    const std::uint8_t op = data[pos] % 4;
    const std::size_t len =
        std::min<std::size_t>((std::size_t{data[pos + 1]} << 8) | data[pos + 2], size - pos - 3);
    const std::uint8_t* body = data + pos + 3;
    pos += 3 + len;
    if (op == 3) {
      PARLEY_FUZZ_CHECK((*client)->update_write_key().is_ok());
      PARLEY_FUZZ_CHECK((*server)->update_read_key().is_ok());
      continue;
    }
    if (op == 2) {
      rec.assign(body, body + len);
      std::size_t record_size = 0;
      const auto fault = TlsRecords::check_header(rec.data(), rec.size(), &record_size);
      if (!fault && record_size != 0) {
        PARLEY_FUZZ_CHECK(record_size <= TlsRecords::kMaxRecord);
        const auto seq = (*server)->read_seq();
        // Bytes the fuzzer made up cannot authenticate under keys it does not know.
        PARLEY_FUZZ_CHECK(!(*server)->open(rec.data(), rec.size()).opened);
        PARLEY_FUZZ_CHECK((*server)->read_seq() == seq);
      }
      continue;
    }
    const std::size_t n = std::min(len, TlsRecords::kMaxPlaintext);
    rec.assign(n + TlsRecords::kOverhead, 0);
    auto sealed = (*client)->seal(TlsRecords::kApplicationData, body, n, rec.data());
    PARLEY_FUZZ_CHECK(sealed && *sealed == rec.size());
    if (op == 1) {
      auto bad = rec;
      bad[(n == 0 ? 0 : body[0]) % bad.size()] ^= 0x5a;
      const auto seq = (*server)->read_seq();
      PARLEY_FUZZ_CHECK(!(*server)->open(bad.data(), bad.size()).opened);
      PARLEY_FUZZ_CHECK((*server)->read_seq() == seq);
    }
    const auto opened = (*server)->open(rec.data(), rec.size());
    PARLEY_FUZZ_CHECK(opened.opened && opened.opened->type == TlsRecords::kApplicationData);
    PARLEY_FUZZ_CHECK(opened.opened->size == n);
    PARLEY_FUZZ_CHECK(n == 0 || std::memcmp(rec.data() + TlsRecords::kHeaderSize, body, n) == 0);
  }
  return 0;
}
