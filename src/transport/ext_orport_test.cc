// ExtOrPortHandshake against a client written here as goptlib's pt.DialOr speaks it, with fixed
// cookie and nonces; goptlib's own HMAC vectors; every bound; and the cookie file.
#include "transport/internal/ext_orport.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <boost/asio/ip/address.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>

#include "crypto/primitives.h"
#include "transport/testing/support.h"

namespace parley::transport::internal {
namespace {

using Nonce = ExtOrPortHandshake::Nonce;

Nonce filled(std::uint8_t b) {
  Nonce n;
  n.fill(b);
  return n;
}

const SecretBytes& test_cookie() {
  static const SecretBytes cookie{ByteView(filled(0xc0))};
  return cookie;
}
const Nonce kServerNonce = filled(0x5e);
const Nonce kClientNonce = filled(0xc1);

Bytes hmac(std::string_view label, const SecretBytes& cookie, const Nonce& client_nonce,
           const Nonce& server_nonce) {
  const crypto::Sha256Digest d = crypto::hmac_sha256(
      cookie.view(), {as_bytes(label), ByteView(client_nonce), ByteView(server_nonce)});
  return Bytes(d.begin(), d.end());
}
Bytes server_hash(const Nonce& client_nonce = kClientNonce) {
  return hmac("ExtORPort authentication server-to-client hash", test_cookie(), client_nonce,
              kServerNonce);
}
Bytes client_hash(const Nonce& client_nonce = kClientNonce) {
  return hmac("ExtORPort authentication client-to-server hash", test_cookie(), client_nonce,
              kServerNonce);
}

Bytes command(std::uint16_t cmd, std::string_view body) {
  Bytes out{static_cast<std::uint8_t>(cmd >> 8), static_cast<std::uint8_t>(cmd),
            static_cast<std::uint8_t>(body.size() >> 8), static_cast<std::uint8_t>(body.size())};
  append(out, as_bytes(body));
  return out;
}
constexpr std::uint16_t kDone = 0x0000, kUserAddr = 0x0001, kTransport = 0x0002;

Bytes concat(std::initializer_list<ByteView> parts) {
  Bytes out;
  for (ByteView p : parts) append(out, p);
  return out;
}

// What the client sends up to and including its ClientHash.
Bytes client_auth() { return concat({Bytes{0x01}, kClientNonce, client_hash()}); }

// Everything a goptlib client sends, ending with DONE.
Bytes transcript(std::string_view useraddr = "203.0.113.5:4711") {
  return concat({client_auth(), command(kUserAddr, useraddr), command(kTransport, "obfs4"),
                 command(kDone, "")});
}

// Everything the server sends after the greeting, for transcript().
Bytes expected_replies() {
  return concat({server_hash(), kServerNonce, Bytes{0x01}, Bytes{0x10, 0x00, 0x00, 0x00}});
}

struct Fed {
  Status status;
  Bytes out;
  bool done = false;
};

// Feeds `in` in pieces of `piece` bytes, stopping at the first error.
Fed feed_in_pieces(ExtOrPortHandshake& h, ByteView in, std::size_t piece) {
  Fed fed;
  for (std::size_t at = 0; at < in.size(); at += piece) {
    auto step = h.feed(in.subspan(at, std::min(piece, in.size() - at)));
    if (!step) {
      fed.status = step.error();
      return fed;
    }
    append(fed.out, step->out);
    fed.done = step->done;
  }
  return fed;
}

Status run(ByteView in) {
  ExtOrPortHandshake h(test_cookie(), kServerNonce);
  return feed_in_pieces(h, in, in.size()).status;
}

TEST(ExtOrPort, GreetingOffersSafeCookieOnly) {
  ExtOrPortHandshake h(test_cookie(), kServerNonce);
  EXPECT_EQ(h.greeting(), (Bytes{0x01, 0x00}));
}

// goptlib's TestComputeServerHash/TestComputeClientHash: an all-zero cookie and nonces.
TEST(ExtOrPort, HashesMatchGoptlibVectors) {
  const SecretBytes zero_cookie(kExtOrPortCookieBytes);
  const Nonce zero = filled(0);
  ExtOrPortHandshake h(zero_cookie, zero);
  auto step = h.feed(concat({Bytes{0x01}, zero}));
  ASSERT_TRUE(step.has_value());
  EXPECT_EQ(to_hex(ByteView(step->out).first(32)),
            "9e221919982a84f75faf60ef926949796268c97833e06960ff265369a90fd6d8");
  EXPECT_EQ(to_hex(ByteView(step->out).last(32)), to_hex(zero));
  const Bytes goptlib_client_hash =
      *from_hex("0f368b1bee24aabc54a9114ce06c070f3ed99d0d368f599ccc6dfdc8bf457a62");
  step = h.feed(goptlib_client_hash);
  ASSERT_TRUE(step.has_value());
  EXPECT_EQ(step->out, Bytes{0x01});
}

TEST(ExtOrPort, FullExchangeStepByStep) {
  ExtOrPortHandshake h(test_cookie(), kServerNonce);
  auto step = h.feed(concat({Bytes{0x01}, kClientNonce}));
  ASSERT_TRUE(step.has_value()) << step.error().to_string();
  EXPECT_EQ(step->out, concat({server_hash(), kServerNonce}));
  EXPECT_FALSE(step->done);

  step = h.feed(client_hash());
  ASSERT_TRUE(step.has_value()) << step.error().to_string();
  EXPECT_EQ(step->out, Bytes{0x01});
  EXPECT_FALSE(step->done);

  const Bytes commands = concat(
      {command(kUserAddr, "203.0.113.5:4711"), command(kTransport, "obfs4"), command(kDone, "")});
  step = h.feed(commands);
  ASSERT_TRUE(step.has_value()) << step.error().to_string();
  EXPECT_EQ(step->out, (Bytes{0x10, 0x00, 0x00, 0x00}));
  EXPECT_TRUE(step->done);
  EXPECT_TRUE(h.done());
  EXPECT_EQ(h.consumed(), commands.size());
  EXPECT_EQ(h.client_address(), "203.0.113.5:4711");
  EXPECT_EQ(h.client_ip(), "203.0.113.5");
  EXPECT_EQ(h.client_port(), 4711);
  EXPECT_EQ(h.transport(), "obfs4");
}

TEST(ExtOrPort, WholeTranscriptAtOnceAndOneByteAtATime) {
  const Bytes in = transcript();
  for (std::size_t piece : {in.size(), std::size_t{1}, std::size_t{3}, std::size_t{33}}) {
    SCOPED_TRACE(piece);
    ExtOrPortHandshake h(test_cookie(), kServerNonce);
    const Fed fed = feed_in_pieces(h, in, piece);
    ASSERT_TRUE(fed.status.is_ok()) << fed.status.to_string();
    EXPECT_EQ(fed.out, expected_replies());
    EXPECT_TRUE(fed.done);
    EXPECT_EQ(h.client_ip(), "203.0.113.5");
    EXPECT_EQ(h.transport(), "obfs4");
  }
  // Not done a byte early.
  ExtOrPortHandshake h(test_cookie(), kServerNonce);
  const Fed fed = feed_in_pieces(h, ByteView(in).first(in.size() - 1), 1);
  ASSERT_TRUE(fed.status.is_ok());
  EXPECT_FALSE(fed.done);
  EXPECT_FALSE(h.done());
}

// Reading exactly wanted() bytes each time walks the whole handshake and takes not a byte of
// what follows it (how the server reads it off the socket).
TEST(ExtOrPort, ReadingWhatItWantsEndsExactlyAtDone) {
  const Bytes tls = {0x16, 0x03, 0x01, 0x02, 0x00};
  const Bytes in = concat({transcript(), tls});
  ExtOrPortHandshake h(test_cookie(), kServerNonce);
  std::size_t at = 0;
  Bytes out;
  for (int i = 0; i < 100 && !h.done(); ++i) {
    const std::size_t n = h.wanted();
    ASSERT_GT(n, 0u);
    ASSERT_LE(at + n, in.size());
    auto step = h.feed(ByteView(in).subspan(at, n));
    ASSERT_TRUE(step.has_value()) << step.error().to_string();
    EXPECT_EQ(h.consumed(), n);
    append(out, step->out);
    at += n;
  }
  EXPECT_TRUE(h.done());
  EXPECT_EQ(h.wanted(), 0u);
  EXPECT_EQ(at, in.size() - tls.size());
  EXPECT_EQ(out, expected_replies());
  ExtOrPortHandshake refused(test_cookie(), kServerNonce);
  EXPECT_FALSE(refused.feed(Bytes{0x02}).has_value());
  EXPECT_EQ(refused.wanted(), 0u);
}

TEST(ExtOrPort, TrailingTlsBytesAreNotConsumed) {
  const Bytes tls = {0x16, 0x03, 0x01, 0x02, 0x00};
  const Bytes in = concat({transcript(), tls});
  ExtOrPortHandshake h(test_cookie(), kServerNonce);
  const Bytes auth = client_auth();
  ASSERT_TRUE(h.feed(auth).has_value());
  auto step = h.feed(ByteView(in).subspan(auth.size()));
  ASSERT_TRUE(step.has_value());
  EXPECT_TRUE(step->done);
  EXPECT_EQ(h.consumed(), in.size() - auth.size() - tls.size());
  EXPECT_EQ(to_bytes(ByteView(in).subspan(auth.size() + h.consumed())), tls);

  // Once done, nothing more is consumed.
  step = h.feed(tls);
  ASSERT_TRUE(step.has_value());
  EXPECT_TRUE(step->done);
  EXPECT_TRUE(step->out.empty());
  EXPECT_EQ(h.consumed(), 0u);
  EXPECT_EQ(h.client_ip(), "203.0.113.5");
}

TEST(ExtOrPort, WrongAuthType) {
  for (std::uint8_t type : {0x00, 0x02, 0xff}) {
    ExtOrPortHandshake h(test_cookie(), kServerNonce);
    auto step = h.feed(Bytes{type});
    ASSERT_FALSE(step.has_value());
    EXPECT_EQ(step.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(step.error().message(), "ext-orport: unsupported auth type");
    EXPECT_TRUE(h.failure_reply().empty());
    auto again = h.feed(concat({Bytes{0x01}, kClientNonce}));
    ASSERT_FALSE(again.has_value());
    EXPECT_EQ(again.error().message(), step.error().message());
  }
}

TEST(ExtOrPort, WrongClientHashIsRefusedWithZero) {
  Bytes in = client_auth();
  in.back() ^= 1;
  ExtOrPortHandshake h(test_cookie(), kServerNonce);
  ASSERT_TRUE(h.feed(ByteView(in).first(33)).has_value());
  auto step = h.feed(ByteView(in).subspan(33));
  ASSERT_FALSE(step.has_value());
  EXPECT_EQ(step.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(step.error().message(), "ext-orport: wrong client hash");
  EXPECT_EQ(to_bytes(h.failure_reply()), Bytes{0x00});
  // Errors stay, even when the right hash follows.
  auto again = h.feed(client_hash());
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_FALSE(h.done());
  EXPECT_TRUE(h.client_ip().empty());

  // A hash under another cookie, all in one feed: the refusal follows the server's reply.
  const SecretBytes other{ByteView(filled(0x01))};
  const Bytes theirs =
      hmac("ExtORPort authentication client-to-server hash", other, kClientNonce, kServerNonce);
  ExtOrPortHandshake h2(test_cookie(), kServerNonce);
  ASSERT_FALSE(h2.feed(concat({Bytes{0x01}, kClientNonce, theirs})).has_value());
  EXPECT_EQ(to_bytes(h2.failure_reply()), concat({server_hash(), kServerNonce, Bytes{0x00}}));
}

TEST(ExtOrPort, IPv6UserAddr) {
  ExtOrPortHandshake h(test_cookie(), kServerNonce);
  const Fed fed = feed_in_pieces(h, transcript("[2001:0DB8:0:0::1]:443"), 1);
  ASSERT_TRUE(fed.status.is_ok()) << fed.status.to_string();
  EXPECT_TRUE(fed.done);
  EXPECT_EQ(h.client_ip(), "2001:db8::1");
  EXPECT_EQ(h.client_address(), "[2001:db8::1]:443");
  EXPECT_EQ(h.client_port(), 443);
}

TEST(ExtOrPort, AddressesAreCanonicalAsBoostWritesThem) {
  for (std::string ip : {"2001:DB8:0:0:0:0:0:1", "::ffff:192.0.2.7", "::", "fe80::1:0:0:1",
                         "0.0.0.0", "255.255.255.255", "2001:db8:0:1:0:0:0:0"}) {
    SCOPED_TRACE(ip);
    const bool v6 = ip.find(':') != std::string::npos;
    ExtOrPortHandshake h(test_cookie(), kServerNonce);
    const Status s = feed_in_pieces(h, transcript((v6 ? "[" + ip + "]" : ip) + ":0"), 7).status;
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    EXPECT_EQ(h.client_ip(), boost::asio::ip::make_address(ip).to_string());
    EXPECT_EQ(h.client_port(), 0);
  }
}

TEST(ExtOrPort, MalformedUserAddrIsRefused) {
  for (std::string_view bad : {"",
                               "203.0.113.5",
                               "203.0.113.5:",
                               "203.0.113.5:65536",
                               "203.0.113.5:123456",
                               "203.0.113.5:-1",
                               "203.0.113.5:+1",
                               "203.0.113.5: 1",
                               "203.0.113.5:1 ",
                               "203.0.113:1",
                               "256.0.0.1:1",
                               "203.0.113.5:1:2",
                               "2001:db8::1:4711",
                               "[2001:db8::1]",
                               "[2001:db8::1]:",
                               "[2001:db8::1]4711",
                               "[2001:db8::1:4711",
                               "[203.0.113.5]:1",
                               "[]:1",
                               "example.com:80",
                               "[fe80::1%eth0]:1",
                               ":1",
                               "[::1]:1x"}) {
    SCOPED_TRACE(std::string(bad));
    const Status s = run(concat({client_auth(), command(kUserAddr, bad), command(kDone, "")}));
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(s.message(), "ext-orport: USERADDR is not IPv4:PORT or [IPv6]:PORT");
  }
  using namespace std::string_view_literals;
  for (std::string_view nul : {"1.2.3.4\0:80"sv, "1.2.3.4:80\0"sv, "\0"sv}) {
    EXPECT_EQ(run(concat({client_auth(), command(kUserAddr, nul)})).code(),
              ErrorCode::kInvalidArgument);
  }
}

TEST(ExtOrPort, MissingUserAddr) {
  const Status s = run(concat({client_auth(), command(kTransport, "obfs4"), command(kDone, "")}));
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "ext-orport: DONE without USERADDR");
}

TEST(ExtOrPort, TransportIsOptionalAndChecked) {
  ExtOrPortHandshake h(test_cookie(), kServerNonce);
  ASSERT_TRUE(
      feed_in_pieces(
          h, concat({client_auth(), command(kUserAddr, "192.0.2.1:1"), command(kDone, "")}), 5)
          .done);
  EXPECT_EQ(h.transport(), "");

  for (std::string_view bad : {"", "obfs-4", "obfs4 ", "ob/fs"}) {
    SCOPED_TRACE(std::string(bad));
    EXPECT_EQ(run(concat({client_auth(), command(kTransport, bad)})).message(),
              "ext-orport: TRANSPORT is not [A-Za-z0-9_]+");
  }
  EXPECT_TRUE(run(concat({client_auth(), command(kTransport, "Obfs_4")})).is_ok());
  EXPECT_EQ(
      run(concat({client_auth(), command(kTransport, "a"), command(kTransport, "a")})).message(),
      "ext-orport: TRANSPORT sent twice");
  EXPECT_EQ(run(concat({client_auth(), command(kUserAddr, "192.0.2.1:1"),
                        command(kUserAddr, "192.0.2.2:1")}))
                .message(),
            "ext-orport: USERADDR sent twice");
}

TEST(ExtOrPort, UnknownCommandsAreIgnored) {
  ExtOrPortHandshake h(test_cookie(), kServerNonce);
  const Bytes in = concat({client_auth(), command(0x0003, "whatever"), command(0x1000, ""),
                           command(kUserAddr, "198.51.100.9:9"),
                           command(0xffff, std::string(256, 'x')), command(kDone, "")});
  const Fed fed = feed_in_pieces(h, in, 2);
  ASSERT_TRUE(fed.status.is_ok()) << fed.status.to_string();
  EXPECT_TRUE(fed.done);
  EXPECT_EQ(h.client_ip(), "198.51.100.9");
}

TEST(ExtOrPort, OversizeBodies) {
  struct Case {
    std::uint16_t cmd;
    std::size_t size;
    std::string_view message;
  };
  for (const Case& c : {Case{0x0003, 257, "ext-orport: command body longer than 256 bytes"},
                        Case{0xffff, 0xffff, "ext-orport: command body longer than 256 bytes"},
                        Case{kUserAddr, 65, "ext-orport: USERADDR longer than 64 bytes"},
                        Case{kTransport, 65, "ext-orport: TRANSPORT longer than 64 bytes"},
                        Case{kDone, 1, "ext-orport: DONE with a body"}}) {
    SCOPED_TRACE(c.message);
    // Refused from the header alone, before the body arrives.
    const Bytes cmd = command(c.cmd, std::string(c.size, 'a'));
    const Status s = run(concat({client_auth(), ByteView(cmd).first(4)}));
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(s.message(), c.message);
  }
}

TEST(ExtOrPort, AtMostSixteenCommands) {
  Bytes sixteen = concat({client_auth(), command(kUserAddr, "192.0.2.1:1")});
  for (int i = 0; i < 14; ++i) append(sixteen, command(0x0100, "x"));
  EXPECT_TRUE(run(concat({sixteen, command(kDone, "")})).is_ok());

  const Status s = run(concat({sixteen, command(0x0100, "x"), command(kDone, "")}));
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "ext-orport: more than 16 commands");
}

TEST(ExtOrPort, AtMostTwoKilobytes) {
  // 65 bytes of authentication, USERADDR (4 + 11) and seven bodies of 256: 1900 bytes.
  Bytes in = concat({client_auth(), command(kUserAddr, "192.0.2.1:1")});
  for (int i = 0; i < 7; ++i) append(in, command(0x0100, std::string(256, 'x')));
  EXPECT_TRUE(run(concat({in, command(kDone, "")})).is_ok());

  append(in, command(0x0100, std::string(256, 'x')));
  for (std::size_t piece : {in.size(), std::size_t{1}}) {
    ExtOrPortHandshake h(test_cookie(), kServerNonce);
    const Status s = feed_in_pieces(h, in, piece).status;
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(s.message(), "ext-orport: handshake longer than 2048 bytes");
  }
}

TEST(ExtOrPort, CookieFile) {
  const std::filesystem::path dir = test_support::fresh_test_dir("ext_orport");
  const std::string path = (dir / "extended_orport_auth_cookie").string();
  auto first = create_ext_orport_cookie(path);
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  EXPECT_EQ(first->size(), kExtOrPortCookieBytes);

  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), kExtOrPortCookieFileBytes);
  std::ifstream f(path, std::ios::binary);
  const std::string text{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  ASSERT_EQ(text.size(), 64u);
  EXPECT_EQ(text.substr(0, 32), std::string_view("! Extended ORPort Auth Cookie !\n"));
  EXPECT_EQ(to_bytes(std::string_view(text).substr(32)), to_bytes(first->view()));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  auto second = create_ext_orport_cookie(path);
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(*first == *second);

  const std::string missing = (dir / "no such dir" / "cookie").string();
  auto failed = create_ext_orport_cookie(missing);
  ASSERT_FALSE(failed.has_value());
  EXPECT_EQ(failed.error().code(), ErrorCode::kIo);
  EXPECT_NE(failed.error().message().find(missing), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace parley::transport::internal
