#include "transport/internal/ext_orport.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>

#include "base/private_file.h"
#include "crypto/primitives.h"

namespace parley::transport::internal {
namespace {

constexpr std::string_view kCookieHeader = "! Extended ORPort Auth Cookie !\x0a";
static_assert(kCookieHeader.size() + kExtOrPortCookieBytes == kExtOrPortCookieFileBytes);
constexpr std::string_view kServerHashLabel = "ExtORPort authentication server-to-client hash";
constexpr std::string_view kClientHashLabel = "ExtORPort authentication client-to-server hash";

constexpr std::uint8_t kAuthSafeCookie = 0x01;
constexpr std::uint8_t kAuthEnd = 0x00;
constexpr std::uint8_t kAuthAccepted = 0x01;
constexpr std::uint8_t kAuthRefused = 0x00;
constexpr std::size_t kHashBytes = 32;
constexpr std::size_t kCommandHeaderBytes = 4;

constexpr std::uint16_t kCmdDone = 0x0000;
constexpr std::uint16_t kCmdUserAddr = 0x0001;
constexpr std::uint16_t kCmdTransport = 0x0002;
constexpr std::uint16_t kCmdOkay = 0x1000;

Status invalid(const std::string& what) {
  return make_error(ErrorCode::kInvalidArgument, "ext-orport: " + what);
}

struct UserAddr {
  std::string ip;  // canonical
  std::uint16_t port = 0;
};

// "a.b.c.d:port" or "[v6]:port"; port 0..65535 in at most 5 decimal digits. No zone ("%eth0").
std::optional<UserAddr> parse_user_addr(std::string_view s) {
  std::string_view host, port;
  bool v6 = false;
  if (!s.empty() && s.front() == '[') {
    const std::size_t close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return std::nullopt;
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
    v6 = true;
  } else {
    const std::size_t colon = s.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  // Only what an address is written with (this also keeps out NUL bytes, which would end the
  // string inet_pton reads early).
  const bool chars_ok = std::all_of(host.begin(), host.end(), [&](char c) {
    return (c >= '0' && c <= '9') || c == '.' ||
           (v6 && (c == ':' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')));
  });
  if (host.empty() || !chars_ok || port.empty() || port.size() > 5) return std::nullopt;
  std::uint32_t port_value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return std::nullopt;
    port_value = port_value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (port_value > 65535) return std::nullopt;

  const std::string host_z(host);
  const int family = v6 ? AF_INET6 : AF_INET;
  unsigned char raw[sizeof(in6_addr)];
  if (::inet_pton(family, host_z.c_str(), raw) != 1) return std::nullopt;
  char text[INET6_ADDRSTRLEN];
  if (::inet_ntop(family, raw, text, sizeof text) == nullptr) return std::nullopt;
  return UserAddr{text, static_cast<std::uint16_t>(port_value)};
}

bool valid_transport_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace

Result<SecretBytes> create_ext_orport_cookie(const std::string& path) {
  SecretBytes cookie(kExtOrPortCookieBytes);
  crypto::SystemRng().fill(cookie.mutable_view());
  SecretBytes file(kExtOrPortCookieFileBytes);
  std::memcpy(file.data(), kCookieHeader.data(), kCookieHeader.size());
  std::memcpy(file.data() + kCookieHeader.size(), cookie.data(), cookie.size());
  Status written = write_private_file(path, as_chars(file.view()));
  if (!written.is_ok()) {
    return make_error(ErrorCode::kIo, "ext-orport cookie: " + written.message());
  }
  return cookie;
}

ExtOrPortHandshake::ExtOrPortHandshake(const SecretBytes& cookie, const Nonce& server_nonce)
    : cookie_(cookie.clone()), server_nonce_(server_nonce) {
  if (cookie_.size() != kExtOrPortCookieBytes) std::abort();  // a bug: see the header
  buf_.reserve(kExtOrPortMaxBody);
}

Bytes ExtOrPortHandshake::greeting() const { return Bytes{kAuthSafeCookie, kAuthEnd}; }

Result<ExtOrPortHandshake::Step> ExtOrPortHandshake::feed(ByteView in) {
  if (state_ == State::kFailed) return error_;
  Step step;
  if (state_ == State::kDone) {
    consumed_ = 0;
    step.done = true;
    return step;
  }
  std::size_t at = 0;
  Status status;
  // A unit of zero bytes (an empty command body) is handled as soon as its header is.
  while (status.is_ok() && state_ != State::kDone &&
         (at < in.size() || buf_.size() == unit_size_)) {
    if (buf_.empty() && total_ + unit_size_ > kExtOrPortMaxHandshakeBytes) {
      status = invalid("handshake longer than " + std::to_string(kExtOrPortMaxHandshakeBytes) +
                       " bytes");
      break;
    }
    const std::size_t take = std::min(unit_size_ - buf_.size(), in.size() - at);
    buf_.insert(buf_.end(), in.begin() + static_cast<std::ptrdiff_t>(at),
                in.begin() + static_cast<std::ptrdiff_t>(at + take));
    at += take;
    total_ += take;
    if (buf_.size() == unit_size_) status = handle_unit(step.out);
  }
  if (!status.is_ok()) {
    state_ = State::kFailed;
    error_ = status;
    failure_reply_ = std::move(step.out);
    cookie_.clear();
    consumed_ = 0;
    return status;
  }
  consumed_ = at;
  step.done = state_ == State::kDone;
  return step;
}

void ExtOrPortHandshake::expect(State next, std::size_t size) {
  state_ = next;
  unit_size_ = size;
  buf_.clear();
}

Status ExtOrPortHandshake::handle_unit(Bytes& out) {
  switch (state_) {
    case State::kAuthType:
      if (buf_[0] != kAuthSafeCookie) return invalid("unsupported auth type");
      expect(State::kClientNonce, kExtOrPortNonceBytes);
      return Status::ok();
    case State::kClientNonce: {
      std::copy(buf_.begin(), buf_.end(), client_nonce_.begin());
      const crypto::Sha256Digest server_hash = crypto::hmac_sha256(
          cookie_.view(), {as_bytes(kServerHashLabel), ByteView(client_nonce_), server_nonce_});
      append(out, server_hash);
      append(out, server_nonce_);
      expect(State::kClientHash, kHashBytes);
      return Status::ok();
    }
    case State::kClientHash: {
      const crypto::Sha256Digest expected = crypto::hmac_sha256(
          cookie_.view(), {as_bytes(kClientHashLabel), ByteView(client_nonce_), server_nonce_});
      if (!constant_time_equal(expected, buf_)) {
        out.push_back(kAuthRefused);
        return make_error(ErrorCode::kPermissionDenied, "ext-orport: wrong client hash");
      }
      out.push_back(kAuthAccepted);
      cookie_.clear();  // not needed again
      expect(State::kCommandHeader, kCommandHeaderBytes);
      return Status::ok();
    }
    case State::kCommandHeader: {
      if (++commands_ > kExtOrPortMaxCommands) {
        return invalid("more than " + std::to_string(kExtOrPortMaxCommands) + " commands");
      }
      const auto command = static_cast<std::uint16_t>(buf_[0] << 8 | buf_[1]);
      const std::size_t length = static_cast<std::size_t>(buf_[2] << 8 | buf_[3]);
      if (length > kExtOrPortMaxBody) {
        return invalid("command body longer than " + std::to_string(kExtOrPortMaxBody) + " bytes");
      }
      if (command == kCmdDone && length != 0) return invalid("DONE with a body");
      if ((command == kCmdUserAddr || command == kCmdTransport) &&
          length > kExtOrPortMaxFieldBody) {
        return invalid(std::string(command == kCmdUserAddr ? "USERADDR" : "TRANSPORT") +
                       " longer than " + std::to_string(kExtOrPortMaxFieldBody) + " bytes");
      }
      command_ = command;
      expect(State::kCommandBody, length);
      return Status::ok();
    }
    case State::kCommandBody: {
      Status handled = handle_command(out);
      if (handled.is_ok() && state_ != State::kDone) {
        expect(State::kCommandHeader, kCommandHeaderBytes);
      }
      return handled;
    }
    case State::kDone:
    case State::kFailed:
      break;
  }
  std::abort();  // feed() never hands a unit to these states
}

Status ExtOrPortHandshake::handle_command(Bytes& out) {
  const std::string_view body = as_chars(buf_);
  switch (command_) {
    case kCmdDone:
      if (client_address_.empty()) return invalid("DONE without USERADDR");
      out.insert(out.end(), {kCmdOkay >> 8, kCmdOkay & 0xff, 0x00, 0x00});
      expect(State::kDone, 0);
      return Status::ok();
    case kCmdUserAddr: {
      if (!client_address_.empty()) return invalid("USERADDR sent twice");
      std::optional<UserAddr> addr = parse_user_addr(body);
      if (!addr) return invalid("USERADDR is not IPv4:PORT or [IPv6]:PORT");
      client_port_ = addr->port;
      client_ip_ = std::move(addr->ip);
      const bool v6 = client_ip_.find(':') != std::string::npos;
      client_address_ =
          (v6 ? "[" + client_ip_ + "]" : client_ip_) + ":" + std::to_string(client_port_);
      return Status::ok();
    }
    case kCmdTransport:
      if (have_transport_) return invalid("TRANSPORT sent twice");
      if (!valid_transport_name(body)) return invalid("TRANSPORT is not [A-Za-z0-9_]+");
      transport_ = std::string(body);
      have_transport_ = true;
      return Status::ok();
    default:
      return Status::ok();  // ext-orport-spec: commands the server does not know are ignored
  }
}

}  // namespace parley::transport::internal
