#include "client/content.h"

#include <string>

#include "base/utf8.h"

namespace parley::client {

Status check_utf8(std::string_view what, std::string_view text) {
  if (valid_utf8(text)) return Status::ok();
  return make_error(ErrorCode::kInvalidArgument, std::string(what) + " is not valid UTF-8");
}

Bytes encode_content(const Content& content) {
  std::string body = content.SerializeAsString();
  Bytes out(body.begin(), body.end());
  out.push_back(0x80);
  while (out.size() % kPaddingBlock != 0) out.push_back(0);
  return out;
}

Result<Content> decode_content(ByteView padded) {
  if (padded.size() > kMaxContentSize + kPaddingBlock) {
    return make_error(ErrorCode::kTooLarge, "content: larger than the client accepts");
  }
  // Strip the padding: trailing zeros, then the 0x80 marker.
  std::size_t end = padded.size();
  while (end > 0 && padded[end - 1] == 0) --end;
  if (end == 0 || padded[end - 1] != 0x80) {
    return make_error(ErrorCode::kMalformed, "content: bad padding");
  }
  --end;
  Content content;
  if (!content.ParseFromArray(padded.data(), static_cast<int>(end))) {
    return make_error(ErrorCode::kMalformed, "content: does not parse");
  }
  return content;
}

}  // namespace parley::client
