#pragma once
// The plaintext inside Signal ciphertext: a client::Content message (proto/client/content.proto)
// padded like Signal's transport padding (the message, 0x80, then zeros up to a multiple of
// kPaddingBlock), so ciphertext lengths do not reveal message lengths.

#include "base/bytes.h"
#include "base/result.h"
#include "base/status.h"
#include "client/content.pb.h"

namespace parley::client {

inline constexpr std::size_t kPaddingBlock = 160;
// Largest plaintext a peer may send us (a text plus an attachment pointer fits easily).
inline constexpr std::size_t kMaxContentSize = 64 * 1024;

// kInvalidArgument ("<what> is not valid UTF-8") unless `text` is: a Content's string fields
// must be, or the recipient's decode_content refuses the whole message.
Status check_utf8(std::string_view what, std::string_view text);

Bytes encode_content(const Content& content);
// kMalformed when the padding or the message does not parse; kTooLarge beyond kMaxContentSize.
Result<Content> decode_content(ByteView padded);

}  // namespace parley::client
