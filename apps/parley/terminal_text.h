#pragma once
// Text written by other people (messages, names, group and file names) as `parley` prints it
// to a terminal. Left raw, a peer's control characters could move the cursor, rewrite earlier
// lines or retitle the window (ANSI and OSC sequences), a bidirectional override could make a
// line read other than it is, and a newline could print a line that looks like another
// sender's message. Pure; safe from any thread.

#include <string>
#include <string_view>

namespace parley::cli {

// `s` with each C0 control character and DEL written as \xHH, each C1 control (U+0080 to
// U+009F) and bidirectional control (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to
// U+2069) as \u{HHHH}, and each byte that is not part of valid UTF-8 as \xHH. With
// `multiline`, a newline is kept and the line after it indented by two spaces (so no line of
// a message starts where a message's first line does), and a tab is kept.
std::string for_terminal(std::string_view s, bool multiline = false);

}  // namespace parley::cli
