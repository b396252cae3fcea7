#pragma once
// UTF-8 as protobuf's proto3 `string` fields require it: a peer's parser refuses a message
// whose string field is not valid UTF-8, so text is checked before it is sent. Pure functions.

#include <cstddef>
#include <string_view>

namespace parley {

// The length (1 to 4) of the UTF-8 sequence that starts `s`, with its code point in `cp`; 0
// when `s` is empty or does not start with a valid, shortest-form encoding of a scalar value
// (no surrogates, nothing above U+10FFFF).
std::size_t utf8_sequence(std::string_view s, char32_t& cp);

// Whether all of `s` is valid UTF-8.
bool valid_utf8(std::string_view s);

}  // namespace parley
