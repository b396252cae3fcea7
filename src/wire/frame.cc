#include "wire/frame.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/wire_format_lite.h>
#include <spdlog/spdlog.h>

namespace parley::wire {

void route_protobuf_logs() {
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel level, const char* file, int line, const std::string& message) {
        // A complaint about bytes being parsed is about a peer's input: debug. Any other (our own
        // serialization of a string that is not UTF-8, say) is ours to see: warn.
        auto at = message.find("when parsing") != std::string::npos ? spdlog::level::debug
                                                                    : spdlog::level::warn;
        if (level == google::protobuf::LOGLEVEL_FATAL) at = spdlog::level::critical;
        spdlog::log(at, "event=protobuf_log at={}:{} message=\"{}\"", file, line, message);
      });
}

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

using google::protobuf::internal::WireFormatLite;
using Coded = google::protobuf::io::CodedOutputStream;

// Frame.padding's tag: its field number, length-delimited.
constexpr std::uint32_t kPaddingTag =
    WireFormatLite::MakeTag(Frame::kPaddingFieldNumber, WireFormatLite::WIRETYPE_LENGTH_DELIMITED);

// Bytes the padding field itself costs on the wire: its tag and the varint of its length.
std::size_t field_overhead(std::size_t len) {
  return Coded::VarintSize32(kPaddingTag) + Coded::VarintSize64(len);
}

}  // namespace

std::shared_ptr<const std::string> encode_frame(Frame& frame, Padding padding) {
  frame.clear_padding();
  const std::size_t base = frame.ByteSizeLong();  // caches the sizes for the write below
  std::size_t len = 0;  // padding bytes; 0: no padding field (proto3 omits an empty one)
  if (padding == Padding::kBuckets) {
    const std::size_t room = padded_size(base + 2) - base;  // at least 2
    // Solve len + overhead(len) == room (overhead grows with len; try downwards).
    len = room - 2;
    while (len > 0 && len + field_overhead(len) > room) --len;
  }
  // The padding field is written here, with protobuf's own tag and varint writers, instead of
  // through set_padding(): protobuf writes fields in number order and padding (15) is the last,
  // so the bytes are the same, without a string of zeros made, copied and freed for every
  // frame. resize() zero-fills its room. (A
  // frame parsed with unknown fields, which protobuf writes after the known ones, gets its
  // padding after them: another order, which parses the same. The frames we send have none.)
  auto out = std::make_shared<std::string>();
  out->resize(base + (len > 0 ? field_overhead(len) + len : 0));
  auto* p = reinterpret_cast<std::uint8_t*>(out->data());
  p = frame.SerializeWithCachedSizesToArray(p);
  if (len > 0) {
    p = Coded::WriteTagToArray(kPaddingTag, p);
    Coded::WriteVarint64ToArray(len, p);  // the zeros after it are resize()'s
  }
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
