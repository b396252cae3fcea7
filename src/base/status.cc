#include "base/status.h"

namespace parley {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "ok";
    case ErrorCode::kInvalidArgument: return "invalid_argument";
    case ErrorCode::kNotFound: return "not_found";
    case ErrorCode::kAlreadyExists: return "already_exists";
    case ErrorCode::kOutOfRange: return "out_of_range";
    case ErrorCode::kInternal: return "internal";
    case ErrorCode::kIo: return "io";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kResourceExhausted: return "resource_exhausted";
    case ErrorCode::kPermissionDenied: return "permission_denied";
    case ErrorCode::kUnimplemented: return "unimplemented";
    case ErrorCode::kQueueFull:
      return "queue_full";
    case ErrorCode::kMalformed: return "malformed";
    case ErrorCode::kTooLarge: return "too_large";
    case ErrorCode::kBadKeyFormat: return "bad_key_format";
    case ErrorCode::kCryptoFailure: return "crypto_failure";
    case ErrorCode::kBadSignature: return "bad_signature";
    case ErrorCode::kBadMac: return "bad_mac";
    case ErrorCode::kDecryptFailed: return "decrypt_failed";
    case ErrorCode::kWeakKey: return "weak_key";
    case ErrorCode::kBadVersion: return "bad_version";
    case ErrorCode::kNoSession: return "no_session";
    case ErrorCode::kDuplicateMessage: return "duplicate_message";
    case ErrorCode::kTooFarAhead: return "too_far_ahead";
    case ErrorCode::kUnknownPreKey: return "unknown_prekey";
    case ErrorCode::kUnknownSignedPreKey: return "unknown_signed_prekey";
    case ErrorCode::kUntrustedIdentity: return "untrusted_identity";
    case ErrorCode::kInvalidMessage: return "invalid_message";
    case ErrorCode::kNoSenderKey: return "no_sender_key";
    case ErrorCode::kStaleKeyId: return "stale_key_id";
    case ErrorCode::kWrongPassphrase: return "wrong_passphrase";
    case ErrorCode::kNotRegistered: return "not_registered";
    case ErrorCode::kAlreadyRegistered: return "already_registered";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  std::string out(error_code_name(code_));
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

}  // namespace parley
