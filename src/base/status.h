#pragma once
// Status: the outcome of an operation that can fail for an expected reason.
//
// Every failure carries a stable ErrorCode (its numeric value never changes, so the CLI, the
// daemon and the web UI can branch on it) and a short human-readable message. Messages never
// contain user data or key material. Status is a small value type; it is not thread-safe to
// mutate one object from several threads, but copies are independent.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace parley {

// Stable error codes. Append only; never renumber. The string table is in status.cc.
enum class ErrorCode : std::uint16_t {
  kOk = 0,
  // Generic (1..99)
  kInvalidArgument = 1,
  kNotFound = 2,
  kAlreadyExists = 3,
  kOutOfRange = 4,
  kInternal = 5,
  kIo = 6,
  kUnavailable = 7,
  kResourceExhausted = 8,
  kPermissionDenied = 9,
  kUnimplemented = 10,
  kQueueFull = 11,  // the recipient's queue on the server is full (count or bytes)
  // Encoding (100..199)
  kMalformed = 100,     // bytes do not parse as the expected structure
  kTooLarge = 101,      // input exceeds a size bound
  kBadKeyFormat = 102,  // a public/private key of the wrong size or type byte
  // Crypto (200..299)
  kCryptoFailure = 200,  // a primitive failed (library error)
  kBadSignature = 201,   // a signature does not verify
  kBadMac = 202,         // a MAC does not verify
  kDecryptFailed = 203,  // ciphertext does not decrypt (padding, length)
  kWeakKey = 204,        // a DH produced the all-zero output (low-order point)
  // Signal protocol (300..399)
  kBadVersion = 300,        // unknown or unsupported message version byte
  kNoSession = 301,         // no session with this address
  kDuplicateMessage = 302,  // the message key was already used (replay)
  kTooFarAhead = 303,       // counter jumps more than the skipped-key limit
  kUnknownPreKey = 304,     // a one-time prekey id that we do not hold
  kUnknownSignedPreKey = 305,
  kUntrustedIdentity = 306,  // the peer's identity key changed and is not trusted
  kInvalidMessage = 307,     // decrypts under no known session state
  kNoSenderKey = 308,        // no sender-key state for this group/sender/key id
  kStaleKeyId = 309,
  // Client (400..499)
  kWrongPassphrase = 400,    // the profile key does not open the local database
  kNotRegistered = 401,      // the profile holds no account yet
  kAlreadyRegistered = 402,  // the profile already holds an account
};

// Returns the stable name of a code, e.g. "bad_mac". Never returns an empty view.
std::string_view error_code_name(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }

  bool is_ok() const { return code_ == ErrorCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "bad_mac: message authentication failed" (or "ok").
  std::string to_string() const;

  // Marks a status as deliberately ignored.
  void ignore() const {}

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

inline Status make_error(ErrorCode code, std::string message) {
  return Status(code, std::move(message));
}

}  // namespace parley
