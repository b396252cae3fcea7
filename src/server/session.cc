#include "server/session.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstring>

#include "base/saturating.h"
#include "crypto/pow.h"
#include "crypto/primitives.h"
#include "server/attachments.h"
#include "server/names.h"

namespace parley::server {

namespace {

constexpr std::size_t kPublicKeySize = 33;
constexpr std::size_t kSignatureSize = 64;
constexpr std::size_t kAuthKeySize = 32;
constexpr std::size_t kClientMessageIdSize = 16;
constexpr std::uint32_t kMaxPreKeyId = 0xFFFFFE;
constexpr std::uint32_t kMaxRegistrationId = 16380;
constexpr std::size_t kMaxPreKeysPerUpload = 200;
constexpr std::size_t kMaxSendsPerMulti = 1000;
constexpr std::size_t kMaxAcksPerRequest = 1000;

bool valid_key(const std::string& k) { return k.size() == kPublicKeySize && k[0] == 0x05; }

bool valid_signed_pre_key(const wire::SignedPreKey& k) {
  return k.id() <= kMaxPreKeyId && valid_key(k.public_key()) &&
         k.signature().size() == kSignatureSize;
}

bool valid_pre_key(const wire::PreKey& k) {
  return k.id() >= 1 && k.id() <= kMaxPreKeyId && valid_key(k.public_key());
}

store::SignedPreKey to_store(const wire::SignedPreKey& k) {
  return store::SignedPreKey{k.id(), to_bytes(k.public_key()), to_bytes(k.signature())};
}

std::vector<store::PreKey> to_store(const google::protobuf::RepeatedPtrField<wire::PreKey>& ks) {
  std::vector<store::PreKey> out;
  out.reserve(static_cast<std::size_t>(ks.size()));
  for (const auto& k : ks) out.push_back(store::PreKey{k.id(), to_bytes(k.public_key())});
  return out;
}

RequestKind kind_of(const wire::Request& r) {
  switch (r.op_case()) {
    case wire::Request::kRegister: return RequestKind::kRegister;
    case wire::Request::kLogin: return RequestKind::kLogin;
    case wire::Request::kUploadKeys: return RequestKind::kUploadKeys;
    case wire::Request::kKeyCount: return RequestKind::kKeyCount;
    case wire::Request::kFetchBundles: return RequestKind::kFetchBundles;
    case wire::Request::kSend: return RequestKind::kSend;
    case wire::Request::kMultiSend: return RequestKind::kMultiSend;
    case wire::Request::kAck: return RequestKind::kAck;
    case wire::Request::kAttachmentSlot: return RequestKind::kAttachmentSlot;
    case wire::Request::kPing: return RequestKind::kPing;
    case wire::Request::kDevices: return RequestKind::kDevices;
    case wire::Request::OP_NOT_SET: break;
  }
  return RequestKind::kUnknown;
}

// Why an account lookup (Service::find_account) failed, for the response's message.
std::string lookup_failure(const Status& s) {
  return s.code() == ErrorCode::kNotFound ? "no such account" : "account lookup failed, try again";
}

std::uint32_t status_for(const Status& s) {
  switch (s.code()) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kMalformed: return wire::kStatusBadRequest;
    case ErrorCode::kNotFound: return wire::kStatusNotFound;
    case ErrorCode::kAlreadyExists: return wire::kStatusConflict;
    case ErrorCode::kPermissionDenied: return wire::kStatusForbidden;
    case ErrorCode::kTooLarge: return wire::kStatusTooLarge;
    case ErrorCode::kResourceExhausted: return wire::kStatusRateLimited;
    // The store could not write (a full or failing disk): nothing was stored, and the same
    // request may succeed later. 503 tells the client to keep it and retry; a 500 would make
    // it give the message up as refused.
    case ErrorCode::kIo:
    case ErrorCode::kUnavailable: return wire::kStatusUnavailable;
    default: return wire::kStatusInternal;
  }
}

Bytes random_bytes(Rng& rng, std::size_t n) {
  Bytes b(n);
  rng.fill(b);
  return b;
}

}  // namespace

Session::Session(Service& service, std::string remote_ip)
    : service_(service), remote_ip_(std::move(remote_ip)), ex_(service.io_executor()) {}

Session::~Session() = default;

void Session::on_open(std::shared_ptr<transport::WsConnection> conn) {
  std::lock_guard<std::mutex> lock(mu_);
  conn_ = conn;
  ex_ = conn->executor();
  open_ = true;
  service_.metrics().connections.fetch_add(1);
  service_.metrics().connections_total.fetch_add(1);
  nonce_ = random_bytes(service_.rng(), 32);
  Frame f;
  auto* c = f.mutable_push()->mutable_challenge();
  c->set_wire_version(wire::kWireVersion);
  c->set_nonce(std::string(as_chars(nonce_)));
  c->set_server_name(service_.config().server_name);
  c->set_registration(std::string(policy_name(service_.config().registration)));
  c->set_pow_difficulty(service_.config().pow_difficulty);
  send_frame(f);
  // A connection must log in (or register) in time: answered pings and pongs would otherwise
  // keep one that never does open for good, holding a connection slot.
  if (const std::uint32_t s = service_.config().login_timeout_s; s > 0) {
    auto timer = std::make_shared<boost::asio::steady_timer>(ex_, std::chrono::seconds(s));
    login_timer_ = timer;  // cancelled at login, so that an idle connection keeps no timer
    timer->async_wait([weak = weak_from_this(), timer](boost::system::error_code ec) {
      auto self = weak.lock();
      if (ec || !self) return;
      bool late;
      {
        std::lock_guard<std::mutex> guard(self->mu_);
        late = self->open_ && !self->account_;
      }
      if (late) self->close("log in first");
    });
  }
}

void Session::on_close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!open_) return;
  open_ = false;
  conn_.reset();
  // Requests that will get no answer now (an ack refused or before login, a login that found
  // the connection closed) leave the server-wide count with the connection; answers that still
  // come find nothing to take back.
  service_.requests_finished(inflight_requests_);
  inflight_requests_ = 0;
  service_.metrics().connections.fetch_sub(1);
  if (account_) {
    service_.metrics().authenticated.fetch_sub(1);
    service_.detach(account_->id, device_id_, this);
  }
}

void Session::replaced() { close("logged in elsewhere"); }

void Session::close(std::string_view reason) {
  std::shared_ptr<transport::WsConnection> c;
  {
    std::lock_guard<std::mutex> lock(mu_);
    c = conn_.lock();
  }
  if (c) c->close(reason);
}

void Session::send_frame(Frame& frame) {
  if (!open_) return;
  if (auto c = conn_.lock()) c->send(wire::encode_frame(frame));
}

void Session::respond(Response response) {
  Frame f;
  service_.metrics().count_response(response.status());
  *f.mutable_response() = std::move(response);
  std::lock_guard<std::mutex> lock(mu_);
  if (inflight_requests_ > 0) {
    --inflight_requests_;
    service_.requests_finished();
  }
  send_frame(f);
}

void Session::respond_error(std::uint64_t id, std::uint32_t status, std::string message) {
  Response r;
  r.set_id(id);
  r.set_status(status);
  r.set_message(std::move(message));
  respond(std::move(r));
}

void Session::on_message(std::string_view bytes) {
  auto frame = wire::decode_frame(bytes);
  if (!frame || !(frame->has_request() || frame->has_ack())) {
    service_.metrics().bad_frames.fetch_add(1);
    // A frame within the transport's message limit can still be over the frame cap (a
    // MultiSend of many sends, each within limits.max_message_bytes).
    close(frame                                          ? "expected a request or an ack"
          : frame.error().code() == ErrorCode::kTooLarge ? "frame too large"
                                                         : "malformed frame");
    return;
  }
  bool accepted;
  bool authenticated;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!open_) return;
    // Every request gets exactly one response, which decrements; a one-way ack decrements when
    // it completes.
    ++inflight_requests_;
    service_.request_started();
    accepted = inflight_requests_ <= service_.config().max_inflight_requests &&
               service_.ip_requests().allow(remote_ip_);
    authenticated = account_ != nullptr;
  }
  if (frame->has_ack()) {
    // No response to refuse with: the connection closes, and the envelopes come again.
    if (!accepted) return close("too many requests");
    service_.metrics().requests[static_cast<std::size_t>(RequestKind::kAck)].fetch_add(1);
    if (!authenticated) return close("acknowledgement before login");
    return one_way_ack(frame->ack());
  }
  Request request = std::move(*frame->mutable_request());
  if (!accepted) return respond_error(request.id(), wire::kStatusRateLimited, "too many requests");
  service_.metrics().requests[static_cast<std::size_t>(kind_of(request))].fetch_add(1);
  handle(std::move(request));
}

std::pair<AccountPtr, std::uint32_t> Session::who() {
  std::lock_guard<std::mutex> lock(mu_);
  return {account_, device_id_};
}

void Session::handle(Request request) {
  const std::uint64_t id = request.id();
  bool authenticated;
  {
    std::lock_guard<std::mutex> lock(mu_);
    authenticated = account_ != nullptr;
  }
  switch (request.op_case()) {
    case Request::kRegister:
    case Request::kLogin: {
      // One identity a connection, taken by the first registration or login: a second one sent
      // before the first has finished is refused here, before it can change anything (refused
      // after its commit, a registration would have made the account and used the invitation).
      const char* refusal = nullptr;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (account_ != nullptr) {
          refusal = "already logged in";
        } else if (identifying_) {
          refusal = "a registration or login is under way";
        } else {
          identifying_ = true;
        }
      }
      if (refusal != nullptr) return respond_error(id, wire::kStatusBadRequest, refusal);
      if (request.op_case() == Request::kRegister) return do_register(id, request.register_());
      return do_login(id, request.login());
    }
    case Request::kPing: {
      Response r;
      r.set_id(id);
      return respond(std::move(r));
    }
    default:
      break;
  }
  if (!authenticated) return respond_error(id, wire::kStatusUnauthorized, "log in first");
  // While draining, nothing that changes state starts (sends and registrations say so where
  // they are checked): its answer could be cut off by the close, and a bundle fetch would
  // spend one-time prekeys for nothing. Acknowledgements still delete.
  if (service_.draining() &&
      (request.op_case() == Request::kUploadKeys || request.op_case() == Request::kFetchBundles ||
       request.op_case() == Request::kAttachmentSlot)) {
    return respond_error(id, wire::kStatusUnavailable, "server draining");
  }
  switch (request.op_case()) {
    case Request::kUploadKeys: return do_upload_keys(id, request.upload_keys());
    case Request::kKeyCount: return do_key_count(id);
    case Request::kFetchBundles: return do_fetch_bundles(id, request.fetch_bundles());
    case Request::kSend: return do_send(id, request.send());
    case Request::kMultiSend: return do_multi_send(id, request.multi_send());
    case Request::kAck: return do_ack(id, request.ack());
    case Request::kAttachmentSlot: return do_attachment_slot(id, request.attachment_slot());
    case Request::kDevices: return do_devices(id, request.devices());
    default: return respond_error(id, wire::kStatusBadRequest, "unknown request");
  }
}

// ---- Registration and login ---------------------------------------------------------------------

void Session::do_register(std::uint64_t id, const wire::RegisterRequest& r) {
  const ServerConfig& cfg = service_.config();
  if (service_.draining()) return refuse_identity(id, wire::kStatusUnavailable, "server draining");
  auto folded = fold_name(r.name());
  if (!folded) return refuse_identity(id, wire::kStatusBadRequest, folded.error().message());
  if (r.auth_public_key().size() != kAuthKeySize || !valid_key(r.identity_key()) ||
      r.registration_id() < 1 || r.registration_id() > kMaxRegistrationId ||
      !r.has_signed_pre_key() || !valid_signed_pre_key(r.signed_pre_key()) ||
      static_cast<std::size_t>(r.pre_keys_size()) > kMaxPreKeysPerUpload) {
    return refuse_identity(id, wire::kStatusBadRequest, "invalid keys");
  }
  for (const auto& k : r.pre_keys()) {
    if (!valid_pre_key(k)) return refuse_identity(id, wire::kStatusBadRequest, "invalid prekey");
  }
  Bytes nonce;
  {
    std::lock_guard<std::mutex> lock(mu_);
    nonce = nonce_;
  }
  if (!crypto::ed25519_verify(as_bytes(r.auth_public_key()),
                              wire::auth_transcript(nonce, *folded, 1),
                              as_bytes(r.challenge_signature()))) {
    return refuse_identity(id, wire::kStatusUnauthorized, "bad challenge signature");
  }
  const bool recovering = !r.recovery_code().empty();
  if ((!r.recovery_hash().empty() && r.recovery_hash().size() != 32) ||
      (recovering && (r.recovery_code().size() < 16 || r.recovery_code().size() > 64))) {
    return refuse_identity(id, wire::kStatusBadRequest, "invalid recovery fields");
  }
  // A recovery proves ownership of an existing name with its code: no invitation or work. The
  // store recovers only a name that exists (a recovery code never creates an account).
  if (!recovering && cfg.registration == RegistrationPolicy::kInvite && r.invite_token().empty()) {
    return refuse_identity(id, wire::kStatusForbidden, "registration needs an invitation");
  }
  if (!recovering && cfg.registration == RegistrationPolicy::kPow &&
      !crypto::pow_valid(nonce, *folded, r.pow_nonce(), cfg.pow_difficulty)) {
    return refuse_identity(id, wire::kStatusForbidden,
                           "proof of work does not meet the difficulty");
  }
  if (!service_.registrations().allow(remote_ip_)) {
    return refuse_identity(id, wire::kStatusRateLimited, "too many registrations");
  }
  store::NewAccount account;
  account.name = r.name();
  account.folded_name = *folded;
  account.now_ms = service_.clock().now_ms();
  account.device.device_id = 1;
  account.device.registration_id = r.registration_id();
  account.device.auth_public_key = to_bytes(r.auth_public_key());
  account.device.identity_key = to_bytes(r.identity_key());
  account.device.signed_pre_key = to_store(r.signed_pre_key());
  account.device.created_ms = account.now_ms;
  account.pre_keys = to_store(r.pre_keys());
  if (cfg.registration == RegistrationPolicy::kInvite && !recovering) {
    account.invite_token = r.invite_token();
  }
  account.recovery_hash = to_bytes(r.recovery_hash());
  if (recovering) {
    const auto h = crypto::sha256(as_bytes(r.recovery_code()));
    account.recover_with_hash = Bytes(h.begin(), h.end());
  }
  auto self = shared_from_this();
  const std::string key = *folded;
  service_.store().create_account(
      std::move(account),
      on_mine<Result<store::Account>>([self, id, key, recovering](Result<store::Account> a) {
        if (!a) {
          const Status& s = a.error();
          if (s.code() == ErrorCode::kAlreadyExists) {
            return self->refuse_identity(id, wire::kStatusConflict,
                                         recovering
                                             ? "name is taken and the recovery code does not match"
                                             : "name is taken");
          }
          if (s.code() == ErrorCode::kPermissionDenied) {
            return self->refuse_identity(id, wire::kStatusForbidden, "invitation is not valid");
          }
          if (recovering && s.code() == ErrorCode::kNotFound) {
            return self->refuse_identity(id, wire::kStatusNotFound,
                                         "no account by that name to recover");
          }
          return self->refuse_identity(id, status_for(s), "registration failed");
        }
        auto info = std::make_shared<AccountInfo>();
        info->id = a->id;
        info->name = a->name;
        info->devices = std::move(a->devices);
        self->service_.remember_account(key, info);
        // After the cache holds the new key (so that the old device cannot log in again).
        if (a->recovered) self->service_.evict(info->id);
        spdlog::info("event={} account_id={}", a->recovered ? "recover" : "register", info->id);
        self->logged_in(id, key, std::move(info), 1, a->pre_key_count, /*batches=*/false);
      }));
}

void Session::do_login(std::uint64_t id, const wire::LoginRequest& r) {
  auto folded = fold_name(r.name());
  if (!folded) return refuse_login(id, "unknown account or device");
  auto self = shared_from_this();
  wire::LoginRequest req = r;
  service_.find_account(*folded, [self, id, req, name = *folded](Result<AccountPtr> a) {
    // The store could not say (busy, or a failing disk): not a failed login, and worth a retry.
    if (!a && a.error().code() != ErrorCode::kNotFound) {
      return self->refuse_identity(id, status_for(a.error()), "login failed, try again");
    }
    Bytes nonce;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      nonce = self->nonce_;
    }
    const store::Device* device = a ? (*a)->device(req.device_id()) : nullptr;
    const bool ok = device != nullptr &&
                    crypto::ed25519_verify(device->auth_public_key,
                                           wire::auth_transcript(nonce, name, req.device_id()),
                                           as_bytes(req.challenge_signature()));
    if (!ok) return self->refuse_login(id, "unknown account or bad signature");
    // The prekey count goes with the answer; counted before the login takes effect, so a store
    // that cannot count refuses the login rather than report a count it does not have.
    AccountPtr account = *a;
    const std::int64_t account_id = account->id;
    self->service_.store().pre_key_count(
        account_id, req.device_id(),
        self->on_mine<Result<std::uint32_t>>(
            [self, id, account = std::move(account), name, device_id = req.device_id(),
             batches = req.accept_batches()](Result<std::uint32_t> n) mutable {
              if (!n)
                return self->refuse_identity(id, status_for(n.error()), "login failed, try again");
              // A recovery may have replaced the device since the signature was checked:
              // logged_in() refuses then (Service::attach).
              self->logged_in(id, name, std::move(account), device_id, *n, batches);
            }));
  });
}

void Session::refuse_login(std::uint64_t id, std::string message) {
  bool too_many;
  {
    std::lock_guard<std::mutex> lock(mu_);
    too_many = ++failed_logins_ >= kMaxFailedLogins;
  }
  refuse_identity(id, wire::kStatusUnauthorized, std::move(message));
  if (too_many) close("too many failed logins");
}

void Session::refuse_identity(std::uint64_t id, std::uint32_t status, std::string message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    identifying_ = false;
  }
  respond_error(id, status, std::move(message));
}

void Session::logged_in(std::uint64_t id, const std::string& folded_name, AccountPtr account,
                        std::uint32_t device_id, std::uint32_t pre_key_count, bool batches) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!open_) return;
  }
  // Attached before the session takes the identity: an envelope queued in between finds no
  // account yet, marks the queue dirty and is fetched by the pump() below.
  account = service_.attach(folded_name, std::move(account), device_id, shared_from_this());
  if (!account) {
    return refuse_identity(id, wire::kStatusUnauthorized, "device replaced by a recovery");
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!open_) {
      // Closed meanwhile (on_close found no account to detach): leave no entry behind.
      lock.unlock();
      service_.detach(account->id, device_id, this);
      return;
    }
    account_ = account;
    device_id_ = device_id;
    batches_ = batches;
    nonce_.clear();
    delivery_ = Delivery::kDraining;
    if (auto timer = login_timer_.lock()) timer->cancel();
  }
  service_.metrics().authenticated.fetch_add(1);
  Response r;
  r.set_id(id);
  auto* l = r.mutable_login();
  l->set_address(account->name + "@" + service_.config().server_name);
  l->set_device_id(device_id);
  l->set_pre_key_count(pre_key_count);
  respond(std::move(r));
  std::lock_guard<std::mutex> lock(mu_);
  pump();
}

// ---- Keys ----------------------------------------------------------------------------------------

void Session::do_upload_keys(std::uint64_t id, const wire::UploadKeysRequest& r) {
  if (static_cast<std::size_t>(r.pre_keys_size()) > kMaxPreKeysPerUpload) {
    return respond_error(id, wire::kStatusTooLarge, "too many prekeys in one upload");
  }
  if (r.has_signed_pre_key() && !valid_signed_pre_key(r.signed_pre_key())) {
    return respond_error(id, wire::kStatusBadRequest, "invalid signed prekey");
  }
  for (const auto& k : r.pre_keys()) {
    if (!valid_pre_key(k)) return respond_error(id, wire::kStatusBadRequest, "invalid prekey");
  }
  std::optional<store::SignedPreKey> spk;
  if (r.has_signed_pre_key()) spk = to_store(r.signed_pre_key());
  auto self = shared_from_this();
  const auto me = who();
  const AccountPtr account = me.first;
  const std::uint32_t device = me.second;
  // Points into `account`, which the callback holds.
  const store::Device* mine = account->device(device);
  service_.store().upload_keys(
      account->id, device, mine ? mine->auth_public_key : Bytes(), spk, to_store(r.pre_keys()),
      on_mine<Result<std::uint32_t>>([self, id, spk, account, mine](Result<std::uint32_t> n) {
        if (!n) return self->respond_error(id, status_for(n.error()), "upload failed");
        auto folded = fold_name(account->name);
        if (spk && mine != nullptr && folded) {
          // The signed prekey is part of the cached device record: refresh it.
          if (auto updated = self->service_.update_signed_pre_key(*folded, *mine, *spk)) {
            std::lock_guard<std::mutex> lock(self->mu_);
            self->account_ = updated;
          }
        }
        Response resp;
        resp.set_id(id);
        resp.mutable_key_count()->set_count(*n);
        self->respond(std::move(resp));
      }));
}

void Session::do_key_count(std::uint64_t id) {
  auto self = shared_from_this();
  const auto me = who();
  service_.store().pre_key_count(
      me.first->id, me.second, on_mine<Result<std::uint32_t>>([self, id](Result<std::uint32_t> n) {
        if (!n) return self->respond_error(id, status_for(n.error()), "failed");
        Response r;
        r.set_id(id);
        r.mutable_key_count()->set_count(*n);
        self->respond(std::move(r));
      }));
}

void Session::do_fetch_bundles(std::uint64_t id, const wire::FetchBundlesRequest& r) {
  auto folded = fold_name(r.name());
  if (!folded) return respond_error(id, wire::kStatusNotFound, "no such account");
  auto self = shared_from_this();
  const std::uint32_t device = r.device_id();
  const std::int64_t fetcher = who().first->id;
  service_.find_account(*folded, [self, id, device, fetcher](Result<AccountPtr> a) {
    if (!a) return self->respond_error(id, status_for(a.error()), lookup_failure(a.error()));
    if (device != 0 && (*a)->device(device) == nullptr) {
      return self->respond_error(id, wire::kStatusNotFound, "no such device");
    }
    // Counted once the account is known to exist: a name that is not one costs nothing here.
    if (!self->service_.bundle_fetches().allow(std::to_string(fetcher) + ":" +
                                               std::to_string((*a)->id))) {
      return self->respond_error(id, wire::kStatusRateLimited, "bundle fetch rate limit");
    }
    self->service_.store().take_bundles(
        (*a)->id, device,
        self->on_mine<Result<std::vector<store::Bundle>>>(
            [self, id](Result<std::vector<store::Bundle>> bundles) {
              if (!bundles) return self->respond_error(id, status_for(bundles.error()), "failed");
              Response resp;
              resp.set_id(id);
              auto* out = resp.mutable_bundles();
              for (const auto& b : *bundles) {
                auto* w = out->add_bundles();
                w->set_device_id(b.device_id);
                w->set_registration_id(b.registration_id);
                w->set_identity_key(std::string(as_chars(b.identity_key)));
                auto* spk = w->mutable_signed_pre_key();
                spk->set_id(b.signed_pre_key.id);
                spk->set_public_key(std::string(as_chars(b.signed_pre_key.public_key)));
                spk->set_signature(std::string(as_chars(b.signed_pre_key.signature)));
                if (b.pre_key) {
                  w->mutable_pre_key()->set_id(b.pre_key->id);
                  w->mutable_pre_key()->set_public_key(std::string(as_chars(b.pre_key->public_key)));
                }
              }
              self->respond(std::move(resp));
            }));
  });
}

void Session::do_devices(std::uint64_t id, const wire::DevicesRequest& r) {
  auto folded = fold_name(r.name());
  if (!folded) return respond_error(id, wire::kStatusNotFound, "no such account");
  auto self = shared_from_this();
  service_.find_account(*folded, [self, id](Result<AccountPtr> a) {
    if (!a) return self->respond_error(id, status_for(a.error()), lookup_failure(a.error()));
    Response resp;
    resp.set_id(id);
    for (const auto& d : (*a)->devices) {
      auto* w = resp.mutable_devices()->add_devices();
      w->set_device_id(d.device_id);
      w->set_registration_id(d.registration_id);
    }
    self->respond(std::move(resp));
  });
}

// ---- Messages ------------------------------------------------------------------------------------

void Session::send_one(const wire::SendRequest& r, SendDone done) {
  if (service_.draining()) return done(wire::kStatusUnavailable, "server draining", {});
  if (r.client_message_id().size() != kClientMessageIdSize) {
    return done(wire::kStatusBadRequest, "client_message_id must be 16 bytes", {});
  }
  if (r.messages_size() == 0 || static_cast<std::size_t>(r.messages_size()) > kMaxDevicesPerSend) {
    return done(wire::kStatusBadRequest, "a send needs 1 to 64 device messages", {});
  }
  std::size_t bytes = 0;
  for (const auto& m : r.messages()) bytes += m.content().size();
  if (bytes > service_.config().max_message_bytes) {
    return done(wire::kStatusTooLarge, "message too large", {});
  }
  const std::uint64_t generation = service_.accounts_generation();
  AccountPtr sender, dest;
  std::uint32_t sender_device = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    sender = account_;
    sender_device = device_id_;
    if (last_destination_account_ && last_destination_generation_ == generation &&
        last_destination_ == r.destination()) {
      dest = last_destination_account_;
    }
  }
  if (!service_.account_sends().allow(std::to_string(sender->id), r.messages_size())) {
    wire::SendResult res;
    res.set_limit("rate");
    return done(wire::kStatusRateLimited, "send rate limit", res);
  }
  if (dest) return send_to(r, *dest, *sender, sender_device, std::move(done));
  auto folded = fold_name(r.destination());
  if (!folded) return done(wire::kStatusNotFound, "no such account", {});
  if ((dest = service_.cached_account(*folded))) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_destination_ = r.destination();
      last_destination_account_ = dest;
      last_destination_generation_ = generation;
    }
    return send_to(r, *dest, *sender, sender_device, std::move(done));
  }
  auto self = shared_from_this();
  service_.find_account(*folded, [self, r, done = std::move(done), sender,
                                  sender_device](Result<AccountPtr> a) mutable {
    if (!a) return done(status_for(a.error()), lookup_failure(a.error()), {});
    self->send_to(r, **a, *sender, sender_device, std::move(done));
  });
}

void Session::send_to(const wire::SendRequest& r, const AccountInfo& dest,
                      const AccountInfo& sender, std::uint32_t sender_device, SendDone done) {
  // The device list must match exactly: every device of the destination (except the sender's
  // own device when writing to itself), with the registration ids the server holds.
  wire::SendResult mismatch;
  const auto& messages = r.messages();  // at most kMaxDevicesPerSend: scanned, not indexed
  const auto named = [&](std::uint32_t device_id, int before) {
    for (int i = 0; i < before; ++i) {
      if (messages[i].device_id() == device_id) return true;
    }
    return false;
  };
  for (int i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (named(m.device_id(), i)) return done(wire::kStatusBadRequest, "device named twice", {});
    const store::Device* d = dest.device(m.device_id());
    const bool self_device = dest.id == sender.id && m.device_id() == sender_device;
    if (d == nullptr || self_device) {
      mismatch.mutable_mismatch()->add_extra_devices(m.device_id());
    } else if (d->registration_id != m.registration_id()) {
      mismatch.mutable_mismatch()->add_stale_devices(m.device_id());
    }
  }
  for (const auto& d : dest.devices) {
    const bool self_device = dest.id == sender.id && d.device_id == sender_device;
    if (!self_device && !named(d.device_id, messages.size())) {
      mismatch.mutable_mismatch()->add_missing_devices(d.device_id);
    }
  }
  if (mismatch.has_mismatch()) {
    return done(wire::kStatusConflict, "device list does not match", mismatch);
  }
  store::SendBatch batch;
  batch.sender_account = sender.id;
  batch.sender_device = sender_device;
  batch.client_message_id = to_bytes(r.client_message_id());
  batch.destination_account = dest.id;
  batch.now_ms = service_.clock().now_ms();
  batch.limits = service_.queue_limits();
  for (const auto& m : r.messages()) {
    store::Delivery d;
    d.account_id = dest.id;
    d.device_id = m.device_id();
    d.registration_id = m.registration_id();  // checked above against the cached account
    d.envelope.server_id = random_bytes(service_.rng(), 16);
    d.envelope.timestamp_ms = batch.now_ms;
    d.envelope.source = sender.name;
    d.envelope.source_device = sender_device;
    d.envelope.type = m.type();
    d.envelope.content = to_bytes(m.content());
    batch.deliveries.push_back(std::move(d));
  }
  // Keep what the notification needs; the batch moves into the store.
  auto envelopes = std::make_shared<
      std::vector<std::pair<std::uint32_t, std::shared_ptr<store::Envelope>>>>();
  for (const auto& d : batch.deliveries) {
    envelopes->emplace_back(d.device_id, std::make_shared<store::Envelope>(d.envelope));
  }
  const std::int64_t dest_id = dest.id;
  const std::int64_t now = batch.now_ms;
  const auto accepted = std::chrono::steady_clock::now();
  auto self = shared_from_this();
  // This callback runs on the store's thread, which finishes operations in commit (seq) order:
  // the destination's sessions are told here, so that each hears of its envelopes in seq order
  // whichever connections (and io threads) the senders are on. The answer to the sender then
  // runs on this session's own executor.
  service_.store().store_messages(std::move(batch), [self, done = std::move(done), envelopes,
                                                     dest_id, now, accepted, ex = ex_](
                                                        Result<store::SendOutcome> o) mutable {
    if (o && o->kind == store::SendOutcome::Kind::kStored) {
      for (std::size_t i = 0;
           i < envelopes->size() && i < o->seqs.size() && i < o->server_ids.size(); ++i) {
        // The store put the seq into the id: push the id it stored.
        (*envelopes)[i].second->server_id = std::move(o->server_ids[i]);
        self->service_.notify(dest_id, (*envelopes)[i].first, o->seqs[i], (*envelopes)[i].second,
                              accepted);
      }
    }
    boost::asio::post(ex, [self = std::move(self), done = std::move(done),
                           count = envelopes->size(), now, o = std::move(o)]() mutable {
      wire::SendResult res;
      res.set_server_timestamp(static_cast<std::uint64_t>(now));
      if (!o) return done(status_for(o.error()), "could not store the message", res);
      switch (o->kind) {
        case store::SendOutcome::Kind::kDuplicate:
          self->service_.metrics().duplicates.fetch_add(1);
          res.set_duplicate(true);
          return done(wire::kStatusOk, "", res);
        case store::SendOutcome::Kind::kQueueFull:
          res.set_limit(o->limit);
          return done(
              wire::kStatusRateLimited,
              "queue of device " + std::to_string(o->device_id) + " is full (" + o->limit + ")",
              res);
        case store::SendOutcome::Kind::kDeviceChanged:
          // A recovery replaced the device after this send was checked against the account
          // as cached: the sender fetches the devices again, as for any mismatch.
          if (o->device_gone) {
            res.mutable_mismatch()->add_extra_devices(o->device_id);
          } else {
            res.mutable_mismatch()->add_stale_devices(o->device_id);
          }
          return done(wire::kStatusConflict, "device list does not match", res);
        case store::SendOutcome::Kind::kStored:
          break;
      }
      self->service_.metrics().messages_stored.fetch_add(count);
      done(wire::kStatusOk, "", res);
    });
  });
}

void Session::do_send(std::uint64_t id, const wire::SendRequest& r) {
  auto self = shared_from_this();
  send_one(r, [self, id](std::uint32_t status, std::string message, wire::SendResult result) {
    Response resp;
    resp.set_id(id);
    resp.set_status(status);
    resp.set_message(std::move(message));
    *resp.mutable_send() = std::move(result);
    self->respond(std::move(resp));
  });
}

void Session::do_multi_send(std::uint64_t id, const wire::MultiSendRequest& r) {
  const auto n = static_cast<std::size_t>(r.sends_size());
  if (n == 0 || n > kMaxSendsPerMulti) {
    return respond_error(id, wire::kStatusBadRequest, "a multi-send needs 1 to 1000 sends");
  }
  struct State {
    std::mutex mu;
    Response response;
    std::size_t remaining;
  };
  auto state = std::make_shared<State>();
  state->remaining = n;
  state->response.set_id(id);
  for (std::size_t i = 0; i < n; ++i) {
    auto* e = state->response.mutable_multi_send()->add_results();
    e->set_destination(r.sends(static_cast<int>(i)).destination());
  }
  auto self = shared_from_this();
  for (std::size_t i = 0; i < n; ++i) {
    send_one(r.sends(static_cast<int>(i)),
             [self, state, i](std::uint32_t status, std::string message, wire::SendResult res) {
               self->service_.metrics().count_multi_send_result(status);
               std::unique_lock<std::mutex> lock(state->mu);
               auto* e = state->response.mutable_multi_send()->mutable_results(static_cast<int>(i));
               e->set_status(status);
               e->set_message(std::move(message));
               *e->mutable_result() = std::move(res);
               if (--state->remaining == 0) {
                 Response out = std::move(state->response);
                 lock.unlock();
                 self->respond(std::move(out));
               }
             });
  }
}

namespace {
constexpr std::string_view kBadAck = "an ack needs 1 to 1000 ids";
bool valid_ack(const wire::AckRequest& r) {
  return r.server_ids_size() > 0 &&
         static_cast<std::size_t>(r.server_ids_size()) <= kMaxAcksPerRequest;
}
}  // namespace

void Session::do_ack(std::uint64_t id, const wire::AckRequest& r) {
  if (!valid_ack(r)) return respond_error(id, wire::kStatusBadRequest, std::string(kBadAck));
  auto self = shared_from_this();
  ack_envelopes(r, on_mine<Result<std::uint32_t>>([self, id](Result<std::uint32_t> n) {
                  if (!n) return self->respond_error(id, status_for(n.error()), "ack failed");
                  Response resp;
                  resp.set_id(id);
                  resp.mutable_ack()->set_deleted(*n);
                  self->respond(std::move(resp));
                }));
}

void Session::one_way_ack(const wire::AckRequest& r) {
  if (!valid_ack(r)) return close(kBadAck);
  // This runs on the store's thread: only a failure needs the connection's executor, so a
  // deletion that succeeds costs no post back (one per acknowledgement at moderate rates).
  ack_envelopes(r, [self = shared_from_this()](Result<std::uint32_t> n) {
    boost::asio::any_io_executor ex;
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      if (self->inflight_requests_ > 0) {
        --self->inflight_requests_;
        self->service_.requests_finished();
      }
      if (!n) ex = self->ex_;
    }
    if (n) return;
    spdlog::warn("event=ack_failed code={}", error_code_name(n.error().code()));
    boost::asio::post(ex, [self] { self->close("acknowledgement failed"); });
  });
}

void Session::ack_envelopes(const wire::AckRequest& r, store::Callback<std::uint32_t> done) {
  std::vector<Bytes> ids;
  ids.reserve(static_cast<std::size_t>(r.server_ids_size()));
  for (const auto& s : r.server_ids()) ids.push_back(to_bytes(s));
  const auto me = who();
  // The store deletes, and then counts what it deleted (on its own thread).
  service_.store().ack(
      me.first->id, me.second, std::move(ids),
      [&metrics = service_.metrics(), done = std::move(done)](Result<std::uint32_t> n) mutable {
        if (n) metrics.messages_acked.fetch_add(*n);
        done(std::move(n));
      });
  // The device has these envelopes: their room in the delivery window is free now, whenever
  // the deletion commits (a fetch for more asks for seqs above the last pushed, so it never
  // brings back an envelope whose deletion is still queued). An id that is not in the window
  // (already acknowledged, or not ours) frees nothing.
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& s : r.server_ids()) {
    ServerId key;
    if (!window_key(s, key)) continue;
    auto it = unacked_.find(key);
    if (it == unacked_.end()) continue;
    unacked_bytes_ -= it->second;
    unacked_.erase(it);
  }
  // An empty table keeps its slots (479 after 256 ids: about 12 KB of 24-byte entries) unless told:
  // give them back, so that a device that has read everything costs what an idle one does.
  if (unacked_.empty()) unacked_.rehash(0);
  pump();
}

void Session::do_attachment_slot(std::uint64_t id, const wire::AttachmentSlotRequest& r) {
  const ServerConfig& cfg = service_.config();
  if (r.size() == 0) return respond_error(id, wire::kStatusBadRequest, "attachment size is 0");
  if (r.size() > cfg.attachment_max_bytes) {
    return respond_error(id, wire::kStatusTooLarge,
                         "attachment size must be 1 to " + std::to_string(cfg.attachment_max_bytes));
  }
  // The disk reserve: attachments must not fill the disk the store commits every message to.
  if (attachment_breaks_disk_reserve(service_, r.size())) {
    return respond_error(id, wire::kStatusUnavailable, "server storage is full, try later");
  }
  store::Attachment a;
  a.id = to_hex(random_bytes(service_.rng(), 16));
  const std::string token = to_hex(random_bytes(service_.rng(), 32));
  const auto hash = crypto::sha256(as_bytes(token));
  a.upload_token_hash = Bytes(hash.begin(), hash.end());
  a.account_id = who().first->id;
  a.size = r.size();
  a.created_ms = service_.clock().now_ms();
  a.expires_ms = a.created_ms + static_cast<std::int64_t>(cfg.attachment_expiry_days) * kDayMs;
  Response resp;
  resp.set_id(id);
  auto* out = resp.mutable_attachment_slot();
  out->set_id(a.id);
  out->set_upload_token(token);
  out->set_path(cfg.ws_path + "/att/" + a.id);
  out->set_max_size(a.size);
  out->set_expires_at(static_cast<std::uint64_t>(a.expires_ms));
  auto self = shared_from_this();
  // Counted until they expire by the clock they are served by, not the system clock: while it
  // lags (the server's downtime, a clock set ahead), attachments past their slot's expires_at
  // are still kept and served.
  const store::AttachmentQuota quota{cfg.attachment_account_quota_bytes,
                                     cfg.attachment_account_max_count,
                                     service_.attachment_now_ms()};
  service_.store().create_attachment(
      std::move(a), quota,
      on_mine<Result<store::AttachmentOutcome>>(
          [self, id, quota, resp = std::move(resp)](Result<store::AttachmentOutcome> made) mutable {
            if (!made) {
              return self->respond_error(id, status_for(made.error()), "could not create a slot");
            }
            if (*made != store::AttachmentOutcome::kCreated) {
              self->service_.metrics().attachment_quota_refusals.fetch_add(
                  1, std::memory_order_relaxed);
              return self->respond_error(
                  id, wire::kStatusTooLarge,
                  *made == store::AttachmentOutcome::kOverQuota
                      ? "attachment quota of " + std::to_string(quota.bytes) + " bytes reached"
                      : "attachment quota of " + std::to_string(quota.count) +
                            " attachments reached");
            }
            self->respond(std::move(resp));
          }));
}

// ---- Delivery ------------------------------------------------------------------------------------

namespace {

void fill(wire::Envelope* w, const store::Envelope& e) {
  w->set_server_id(std::string(as_chars(e.server_id)));
  w->set_server_timestamp(static_cast<std::uint64_t>(e.timestamp_ms));
  w->set_source(e.source);
  w->set_source_device(e.source_device);
  w->set_type(e.type);
  w->set_content(std::string(as_chars(e.content)));
}

// An EnvelopeBatch frame stays well inside kMaxFrameSize (256 KiB).
constexpr std::size_t kBatchBytes = 128 * 1024;

}  // namespace

bool Session::window_key(std::string_view server_id, ServerId& key) {
  if (server_id.size() != key.size()) return false;
  std::memcpy(key.data(), server_id.data(), key.size());
  return true;
}

void Session::note_pushed(std::int64_t seq, const store::Envelope& e) {
  last_seq_sent_ = std::max(last_seq_sent_, seq);
  ServerId key{};
  window_key(as_chars(e.server_id), key);  // the store makes every id 16 bytes
  if (unacked_.emplace(key, e.content.size()).second) unacked_bytes_ += e.content.size();
  service_.metrics().messages_pushed.fetch_add(1);
}

void Session::push_envelope(std::int64_t seq, const store::Envelope& e) {
  Frame f;
  fill(f.mutable_push()->mutable_envelope(), e);
  send_frame(f);
  note_pushed(seq, e);
}

bool Session::push_page(const std::vector<store::QueuedEnvelope>& page) {
  // Checked per envelope, not once per page: a page of large envelopes pushed whole would pass
  // the connection's write queue, which cuts the device as a slow reader at every login.
  if (!batches_) {
    for (const auto& q : page) {
      if (q.seq <= last_seq_sent_) continue;
      if (!window_has_room()) return false;
      push_envelope(q.seq, q.envelope);
    }
    return true;
  }
  Frame f;
  std::size_t bytes = 0;
  auto flush = [&] {
    if (f.push().envelopes().envelopes_size() == 0) return;
    send_frame(f);
    f.Clear();
    bytes = 0;
  };
  for (const auto& q : page) {
    if (q.seq <= last_seq_sent_) continue;
    if (!window_has_room()) {
      flush();
      return false;
    }
    if (bytes + q.envelope.content.size() > kBatchBytes) flush();
    fill(f.mutable_push()->mutable_envelopes()->add_envelopes(), q.envelope);
    bytes += q.envelope.content.size() + 64;
    note_pushed(q.seq, q.envelope);
  }
  flush();
  return true;
}

void Session::queued(std::int64_t seq, std::shared_ptr<const store::Envelope> envelope,
                     std::chrono::steady_clock::time_point accepted) {
  boost::asio::post(ex_, [self = shared_from_this(), seq, e = std::move(envelope),
                          accepted]() mutable { self->on_queued(seq, std::move(e), accepted); });
}

void Session::on_queued(std::int64_t seq, std::shared_ptr<const store::Envelope> envelope,
                        std::chrono::steady_clock::time_point accepted) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!open_ || seq <= last_seq_sent_) return;
  if (delivery_ == Delivery::kLive && window_has_room() && !fetching_ && !dirty_) {
    push_envelope(seq, *envelope);
    service_.metrics().live_delivery.observe(std::chrono::steady_clock::now() - accepted);
    return;
  }
  dirty_ = true;
  pump();
}

void Session::retry_fetch_later() {
  if (fetch_retry_pending_) return;
  fetch_retry_pending_ = true;
  fetch_retry_ms_ = std::clamp<std::uint32_t>(fetch_retry_ms_ * 2, 100, 10000);
  auto timer =
      std::make_shared<boost::asio::steady_timer>(ex_, std::chrono::milliseconds(fetch_retry_ms_));
  timer->async_wait([weak = weak_from_this(), timer](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self) return;
    std::lock_guard<std::mutex> lock(self->mu_);
    self->fetch_retry_pending_ = false;
    self->pump();
  });
}

void Session::pump() {
  if (!open_ || !account_ || fetching_) return;
  if (delivery_ == Delivery::kLive && !dirty_) return;
  if (!window_has_room()) return;
  fetching_ = true;
  dirty_ = false;
  // The window's room, in envelopes and in bytes: a page of large envelopes stops where the
  // window fills, so that each acknowledgement does not read a page of them again.
  const std::size_t limit = kDeliveryWindow - unacked_.size();
  const std::size_t room_bytes = kDeliveryWindowBytes - unacked_bytes_;
  using Page = Result<std::vector<store::QueuedEnvelope>>;
  auto on_page = [self = shared_from_this(), limit, room_bytes](Page page) {
    std::lock_guard<std::mutex> lock(self->mu_);
    self->fetching_ = false;
    if (!self->open_) return;
    if (!page) {
      // Try again later: a busy or failing store must not leave the device without its queue
      // (or QueueEmpty) until something new happens to arrive for it.
      spdlog::warn("event=fetch_queue_failed code={}", error_code_name(page.error().code()));
      self->dirty_ = true;
      self->retry_fetch_later();
      return;
    }
    self->fetch_retry_ms_ = 0;
    // A page the store cut short, by count or by bytes: the queue may hold more.
    std::size_t page_bytes = 0;
    for (const auto& q : *page) page_bytes = saturating_add(page_bytes, q.envelope.content.size());
    const bool full = page->size() == limit || page_bytes >= room_bytes;
    if (!self->push_page(*page)) {
      self->dirty_ = true;  // the rest comes when acknowledgements free the window
      return;
    }
    if (!full && !self->dirty_) {
      if (self->delivery_ == Delivery::kDraining) {
        Frame f;
        f.mutable_push()->mutable_queue_empty();
        self->send_frame(f);
      }
      self->delivery_ = Delivery::kLive;
      return;
    }
    if (full) self->dirty_ = true;
    self->pump();  // at once, or when acknowledgements free the window
  };
  service_.store().fetch_queue(account_->id, device_id_, last_seq_sent_, limit, room_bytes,
                               on_mine<Page>(std::move(on_page)));
}

// ---- Adapter --------------------------------------------------------------------------------------

namespace {

class SessionHandler final : public transport::WsHandler {
 public:
  explicit SessionHandler(std::shared_ptr<Session> s) : session_(std::move(s)) {}
  void on_open(std::shared_ptr<transport::WsConnection> conn) override {
    session_->on_open(std::move(conn));
  }
  void on_message(std::string_view message) override { session_->on_message(message); }
  void on_close() override { session_->on_close(); }

 private:
  std::shared_ptr<Session> session_;
};

}  // namespace

std::unique_ptr<transport::WsHandler> make_session_handler(Service& service,
                                                           const std::string& remote_ip) {
  return std::make_unique<SessionHandler>(std::make_shared<Session>(service, remote_ip));
}

}  // namespace parley::server
