#pragma once
// The plaintext inside Signal ciphertext: a client::Content message (proto/client/content.proto)
// padded like Signal's transport padding (the message, 0x80, then zeros up to a multiple of
// kPaddingBlock), so ciphertext lengths do not reveal message lengths.

#include "base/bytes.h"
#include "base/result.h"
#include "client/content.pb.h"

namespace parley::client {

inline constexpr std::size_t kPaddingBlock = 160;
// Largest plaintext a peer may send us (a text plus an attachment pointer fits easily).
inline constexpr std::size_t kMaxContentSize = 64 * 1024;

Bytes encode_content(const Content& content);
// kMalformed when the padding or the message does not parse; kTooLarge beyond kMaxContentSize.
Result<Content> decode_content(ByteView padded);

}  // namespace parley::client
