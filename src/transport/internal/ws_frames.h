#pragma once
// Internal to src/transport: a WebSocket message written straight into a CorkStream as one
// unfragmented frame (RFC 6455 section 5.2), its header written and its payload masked by
// Beast's own frame code. The server's and the client's write paths use it while the cork has
// room: a Beast write operation per message (an operation, its completion posted, and the
// layers in between) cost as much as the rest of sending the message. Beast's own frames
// (pongs, pings, the close) still go through its stream into the same buffer, each whole, so
// frames never interleave; a caller that gets false writes through Beast, which waits for room.

#include <openssl/rand.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/websocket/detail/frame.hpp>
#include <boost/beast/websocket/detail/mask.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace parley::transport::internal {

// Masking keys for a client's frames, drawn from OpenSSL's CSPRNG 64 at a time.
class MaskKeys {
 public:
  // nullopt when OpenSSL cannot produce random bytes (the caller then writes through Beast).
  std::optional<std::uint32_t> next() {
    if (next_ == keys_.size()) {
      if (RAND_bytes(reinterpret_cast<unsigned char*>(keys_.data()),
                     static_cast<int>(sizeof keys_)) != 1) {
        return std::nullopt;
      }
      next_ = 0;
    }
    return keys_[next_++];
  }

 private:
  std::array<std::uint32_t, 64> keys_{};
  std::size_t next_ = keys_.size();
};

// Appends `message` to `cork` as one final binary (or text) frame; a client passes its masking
// key (RFC 6455: a client masks every frame, a server none). False when the cork is full or
// failed: nothing was appended.
template <class Cork>
bool append_frame(Cork& cork, std::string_view message, bool text,
                  std::optional<std::uint32_t> mask_key) {
  namespace detail = boost::beast::websocket::detail;
  detail::frame_header fh{};
  fh.op = text ? detail::opcode::text : detail::opcode::binary;
  fh.fin = true;
  fh.len = message.size();
  fh.mask = mask_key.has_value();
  fh.key = mask_key.value_or(0);
  detail::fh_buffer head;
  detail::write(head, fh);
  auto body = cork.try_append(head.data(), boost::asio::buffer(message));
  if (!body) return false;
  if (mask_key) {
    detail::prepared_key key;
    detail::prepare_key(key, fh.key);
    detail::mask_inplace(*body, key);
  }
  return true;
}

}  // namespace parley::transport::internal
