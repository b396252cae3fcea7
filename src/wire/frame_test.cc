#include "wire/frame.h"

#include <google/protobuf/stubs/logging.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <set>
#include <sstream>

namespace parley::wire {
namespace {

TEST(Frame, PaddingHidesLengthsAndRoundTrips) {
  std::set<std::size_t> sizes;
  for (int n : {0, 10, 100, 200, 230, 500, 3000, 9000, 20000}) {
    Frame f;
    auto* env = f.mutable_push()->mutable_envelope();
    env->set_content(std::string(static_cast<std::size_t>(n), 'x'));
    auto bytes = encode_frame(f);
    sizes.insert(bytes->size());
    auto back = decode_frame(*bytes);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(back->push().envelope().content().size(), static_cast<std::size_t>(n));
    if (n <= 200) {
      EXPECT_EQ(bytes->size(), 256u) << n;
    }
    EXPECT_EQ(back->padding().find_first_not_of('\0'), std::string::npos);
  }
  // Only bucket sizes (and multiples of the last) appear.
  for (auto s : sizes) EXPECT_TRUE(s == 256 || s == 1024 || s == 4096 || s % 16384 == 0) << s;
}

// encode_frame writes the padding field itself: its bytes must be what protobuf writes for the
// same frame with set_padding(), for every padding length, one- and two-byte length varints
// and no padding at all (a frame two bytes short of a bucket) included.
TEST(Frame, HandWrittenPaddingIsWhatProtobufWrites) {
  for (std::size_t n = 0; n < 18000; n += (n < 1200 ? 1 : 97)) {
    Frame f;
    f.mutable_push()->mutable_envelope()->set_content(std::string(n, 'x'));
    const std::string ours = *encode_frame(f);
    auto back = decode_frame(ours);
    ASSERT_TRUE(back.has_value()) << n;
    Frame reference = f;
    reference.set_padding(back->padding());
    EXPECT_EQ(ours, reference.SerializeAsString()) << n;
    EXPECT_EQ(back->push().envelope().content().size(), n);
  }
}

TEST(Frame, RefusesGarbageAndOversize) {
  EXPECT_EQ(decode_frame("\xff\xff\xff").status().code(), ErrorCode::kMalformed);
  std::string big(kMaxFrameSize + 1, 'a');
  EXPECT_EQ(decode_frame(big).status().code(), ErrorCode::kTooLarge);
}

// A string field that is not UTF-8 is refused. libprotobuf complains about it on stderr, once
// per frame a peer sends; after route_protobuf_logs() the complaint goes to spdlog instead.
TEST(Frame, NonUtf8StringIsRefusedAndItsComplaintRouted) {
  // Frame{request{login{name: "\xff"}}}, by hand: protobuf will not serialize it.
  const std::string bad("\x0a\x05\x5a\x03\x0a\x01\xff", 7);
  // libprotobuf's handler as it is now (its default), put back at the end.
  google::protobuf::LogHandler* const original = google::protobuf::SetLogHandler(nullptr);
  google::protobuf::SetLogHandler(original);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(decode_frame(bad).status().code(), ErrorCode::kMalformed);
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("UTF-8"), std::string::npos);

  std::ostringstream out;
  auto logger = std::make_shared<spdlog::logger>(
      "frame_test", std::make_shared<spdlog::sinks::ostream_sink_st>(out));
  logger->set_level(spdlog::level::debug);
  logger->set_pattern("%l %v");
  const auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  route_protobuf_logs();
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(decode_frame(bad).status().code(), ErrorCode::kMalformed);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  spdlog::set_default_logger(previous);
  google::protobuf::SetLogHandler(original);
  EXPECT_NE(out.str().find("debug event=protobuf_log"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("UTF-8"), std::string::npos) << out.str();
}

TEST(Frame, AuthTranscriptIsUnambiguous) {
  Bytes nonce(32, 7);
  EXPECT_NE(auth_transcript(nonce, "ab", 1), auth_transcript(nonce, "a", 1));
  EXPECT_NE(auth_transcript(nonce, "ab", 1), auth_transcript(nonce, "ab", 2));
}

}  // namespace
}  // namespace parley::wire
