#include "wire/frame.h"

namespace parley::wire {

Result<Frame> decode_frame(std::string_view bytes) {
  if (bytes.size() > kMaxFrameSize) return make_error(ErrorCode::kTooLarge, "frame too large");
  Frame frame;
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return make_error(ErrorCode::kMalformed, "frame does not parse");
  }
  return frame;
}

namespace {

std::size_t padded_size(std::size_t n) {
  for (std::size_t bucket : kPaddingBuckets) {
    if (n <= bucket) return bucket;
  }
  constexpr std::size_t kLast = kPaddingBuckets[std::size(kPaddingBuckets) - 1];
  return (n + kLast - 1) / kLast * kLast;
}

// Bytes the padding field itself costs on the wire: tag (1) + varint length.
std::size_t field_overhead(std::size_t len) {
  std::size_t v = 1;
  while (len >= 0x80) {
    len >>= 7;
    ++v;
  }
  return 1 + v;
}

}  // namespace

std::shared_ptr<const std::string> encode_frame(Frame& frame, Padding padding) {
  frame.clear_padding();
  if (padding == Padding::kBuckets) {
    const std::size_t base = frame.ByteSizeLong();
    const std::size_t target = padded_size(base + 2);
    if (target > base) {
      // Solve len + overhead(len) == target - base (overhead grows with len; try downwards).
      std::size_t room = target - base;
      std::size_t len = room > 2 ? room - 2 : 0;
      while (len > 0 && len + field_overhead(len) > room) --len;
      frame.set_padding(std::string(len, '\0'));
    }
  }
  auto out = std::make_shared<std::string>();
  frame.SerializeToString(out.get());
  return out;
}

Bytes auth_transcript(ByteView nonce, std::string_view name, std::uint32_t device_id) {
  Bytes t = to_bytes(std::string_view("parley-auth-v1"));
  t.push_back(0);
  append(t, nonce);
  append(t, as_bytes(name));
  t.push_back(0);
  for (int shift = 24; shift >= 0; shift -= 8) t.push_back(static_cast<std::uint8_t>(device_id >> shift));
  return t;
}

}  // namespace parley::wire
