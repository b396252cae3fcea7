// The server's own decoders: client frames (wire::decode_frame), invite links
// (wire::parse_invite) and the attachment HTTP headers (Content-Range, Range, Authorization).
// The first byte selects the decoder. Invariants: nothing crashes; whatever parses re-encodes
// and parses back to the same value.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "transport/internal/http_util.h"
#include "wire/frame.h"
#include "wire/invite.h"

using namespace parley;  // NOLINT: a fuzz target

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t selector = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (selector % 4) {
    case 0: {
      auto frame = wire::decode_frame(input);
      if (frame) {
        auto again = wire::decode_frame(*wire::encode_frame(*frame, wire::Padding::kNone));
        if (!again || again->SerializeAsString() != frame->SerializeAsString()) std::abort();
      }
      break;
    }
    case 1: {
      auto invite = wire::parse_invite(input);
      if (invite) {
        auto again = wire::parse_invite(wire::format_invite(*invite));
        if (!again || again->host != invite->host || again->port != invite->port ||
            again->pin_sha256 != invite->pin_sha256 || again->ws_path != invite->ws_path ||
            again->invite_token != invite->invite_token || again->server_name != invite->server_name ||
            again->obfs4_host != invite->obfs4_host || again->obfs4_port != invite->obfs4_port ||
            again->obfs4_args != invite->obfs4_args || again->is_bridge != invite->is_bridge ||
            again->sni != invite->sni) {
          std::abort();
        }
      }
      break;
    }
    case 2: {
      auto cr = transport::internal::parse_content_range(input);
      if (cr && cr->start && cr->end && *cr->start > *cr->end) std::abort();
      auto r = transport::internal::parse_range(input, 1000);
      if (r && r->satisfiable && (r->first > r->last || r->last >= 1000)) std::abort();
      break;
    }
    default: {
      (void)transport::internal::bearer_token(input);
      (void)transport::internal::valid_attachment_id(input);
      (void)transport::internal::parse_u64(input);
      break;
    }
  }
  return 0;
}
