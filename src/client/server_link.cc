#include "client/server_link.h"

#include "client/transports.h"
#include "crypto/pow.h"

namespace parley::client {
namespace {

using Clock = std::chrono::steady_clock;

// Proof-of-work registration: a client gives up beyond this many hashes (2^30, minutes of CPU)
// rather than spin forever on a server asking too much.
constexpr std::uint64_t kMaxPowTries = 1ull << 30;

milliseconds left_until(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
  return std::max(left, milliseconds(1));
}

}  // namespace

Result<std::unique_ptr<ServerLink>> ServerLink::connect(const wire::Invite& server,
                                                        milliseconds timeout) {
  transport::ClientOptions options = server_options(server);
  options.connect_timeout = timeout;
  return connect(options);
}

Result<std::unique_ptr<ServerLink>> ServerLink::connect(const transport::ClientOptions& options) {
  PARLEY_ASSIGN_OR_RETURN(auto ws, transport::BlockingWsClient::connect(options));
  std::unique_ptr<ServerLink> link(new ServerLink(std::move(ws)));
  PARLEY_ASSIGN_OR_RETURN(wire::Frame first, link->next_frame(options.connect_timeout));
  if (!first.has_push() || !first.push().has_challenge()) {
    return make_error(ErrorCode::kMalformed, "the server did not start with a challenge");
  }
  link->challenge_ = first.push().challenge();
  if (link->challenge_.nonce().size() != 32) {
    return make_error(ErrorCode::kMalformed, "the server's challenge has no 32-byte nonce");
  }
  return link;
}

ServerLink::~ServerLink() { close(); }

void ServerLink::close() {
  if (ws_) ws_->close();
  ws_.reset();
}

Result<wire::Frame> ServerLink::next_frame(milliseconds timeout) {
  if (!ws_) return make_error(ErrorCode::kUnavailable, "not connected");
  PARLEY_ASSIGN_OR_RETURN(std::string bytes, ws_->receive(timeout));
  return wire::decode_frame(bytes);
}

Result<wire::Response> ServerLink::call(wire::Request request, milliseconds timeout) {
  if (!ws_) return make_error(ErrorCode::kUnavailable, "not connected");
  const std::uint64_t id = next_id_++;
  request.set_id(id);
  wire::Frame f;
  *f.mutable_request() = std::move(request);
  auto bytes = wire::encode_frame(f);
  PARLEY_TRY(ws_->send(as_bytes(*bytes)));
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    PARLEY_ASSIGN_OR_RETURN(wire::Frame in, next_frame(left_until(deadline)));
    if (in.has_push()) {
      pushes_.push_back(std::move(*in.mutable_push()));
      continue;
    }
    if (in.has_response() && in.response().id() == id) return std::move(*in.mutable_response());
  }
  return make_error(ErrorCode::kUnavailable, "the server did not answer in time");
}

Status ServerLink::ack_one_way(wire::AckRequest ack) {
  if (!ws_) return make_error(ErrorCode::kUnavailable, "not connected");
  wire::Frame f;
  *f.mutable_ack() = std::move(ack);
  return ws_->send(as_bytes(*wire::encode_frame(f)));
}

Result<wire::Push> ServerLink::next_push(milliseconds timeout) {
  if (!pushes_.empty()) {
    wire::Push p = std::move(pushes_.front());
    pushes_.pop_front();
    return p;
  }
  if (timeout.count() <= 0) {  // only what has already arrived
    for (;;) {
      PARLEY_ASSIGN_OR_RETURN(wire::Frame in, next_frame(milliseconds(0)));
      if (in.has_push()) return std::move(*in.mutable_push());
    }
  }
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    PARLEY_ASSIGN_OR_RETURN(wire::Frame in, next_frame(left_until(deadline)));
    if (in.has_push()) return std::move(*in.mutable_push());
  }
  return make_error(ErrorCode::kUnavailable, "nothing arrived in time");
}

Result<wire::Response> ServerLink::register_device(wire::RegisterRequest request,
                                                   const crypto::Ed25519KeyPair& auth,
                                                   const std::string& folded_name) {
  const Bytes nonce(challenge_.nonce().begin(), challenge_.nonce().end());
  request.set_auth_public_key(std::string(as_chars(auth.public_key)));
  auto sig = auth.sign(wire::auth_transcript(nonce, folded_name, 1));
  request.set_challenge_signature(std::string(as_chars(sig)));
  if (challenge_.registration() == "pow") {
    std::uint64_t pow_nonce = 0;
    if (!crypto::pow_solve(nonce, folded_name, challenge_.pow_difficulty(), kMaxPowTries,
                           pow_nonce)) {
      return make_error(ErrorCode::kResourceExhausted,
                        "the server's proof-of-work puzzle is too hard (difficulty " +
                            std::to_string(challenge_.pow_difficulty()) + ")");
    }
    request.set_pow_nonce(pow_nonce);
  }
  wire::Request r;
  *r.mutable_register_() = std::move(request);
  // Solving and registering can take a while on a busy server.
  return call(std::move(r), milliseconds(60000));
}

Result<wire::LoginResult> ServerLink::login(const std::string& folded_name,
                                            std::uint32_t device_id,
                                            const crypto::Ed25519KeyPair& auth) {
  const Bytes nonce(challenge_.nonce().begin(), challenge_.nonce().end());
  wire::Request r;
  auto* login = r.mutable_login();
  login->set_name(folded_name);
  login->set_device_id(device_id);
  login->set_accept_batches(true);
  auto sig = auth.sign(wire::auth_transcript(nonce, folded_name, device_id));
  login->set_challenge_signature(std::string(as_chars(sig)));
  PARLEY_ASSIGN_OR_RETURN(wire::Response resp, call(std::move(r)));
  PARLEY_TRY(response_status(resp, "login"));
  if (!resp.has_login()) return make_error(ErrorCode::kMalformed, "login: no result");
  return resp.login();
}

// ---- LinkRace -----------------------------------------------------------------------------------

LinkRace::LinkRace(std::vector<LinkCandidate> candidates, milliseconds stagger)
    : candidates_(std::move(candidates)), stagger_(stagger) {
  if (candidates_.size() > kMaxCandidates) candidates_.resize(kMaxCandidates);
  results_.resize(candidates_.size());
  threads_.reserve(candidates_.size());
  for (std::size_t i = 0; i < candidates_.size(); ++i) threads_.emplace_back([this, i] { run(i); });
}

LinkRace::~LinkRace() { join(); }

void LinkRace::detach() {
  for (auto& t : threads_) {
    if (t.joinable()) t.detach();
  }
}

void LinkRace::join() {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void LinkRace::run(std::size_t i) {
  {
    std::unique_lock lock(mu_);
    for (;;) {
      if (winner_) {  // never started
        ++ended_;
        cv_.notify_all();
        return;
      }
      if (next_start_ == i) {
        if (i == 0 || running_ == 0) break;
        const auto when = last_start_ + stagger_;
        if (Clock::now() >= when) break;
        cv_.wait_until(lock, when);
      } else {
        cv_.wait(lock);
      }
    }
    next_start_ = i + 1;
    ++running_;
    last_start_ = Clock::now();
    cv_.notify_all();
  }
  Result<transport::ClientOptions> options = candidates_[i].prepare();
  Result<std::unique_ptr<ServerLink>> link =
      options ? ServerLink::connect(*options)
              : Result<std::unique_ptr<ServerLink>>(options.error());
  std::unique_ptr<ServerLink> late;
  {
    std::lock_guard lock(mu_);
    --running_;
    ++ended_;
    results_[i] = link.status();
    if (link && !winner_) {
      winner_ = i;
      winner_link_ = std::move(*link);
      winner_options_ = *options;
    } else if (link) {
      late = std::move(*link);
    }
    cv_.notify_all();
  }
  if (late) late->close();  // another candidate won
}

Result<LinkRace::Winner> LinkRace::wait() {
  if (candidates_.empty()) {
    return make_error(ErrorCode::kUnavailable,
                      "no transport is enabled (parley transports; parley transport enable ID)");
  }
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return winner_.has_value() || ended_ == candidates_.size(); });
  if (winner_) {
    if (taken_) return make_error(ErrorCode::kInternal, "the race's winner was already taken");
    taken_ = true;
    Winner w;
    w.index = *winner_;
    w.link = std::move(winner_link_);
    w.options = winner_options_;
    return w;
  }
  if (candidates_.size() == 1 && results_[0]) return *results_[0];
  std::string message = "no transport reached the server:";
  std::optional<ErrorCode> shared;
  bool same = true;
  for (std::size_t i = 0; i < candidates_.size(); ++i) {
    if (!results_[i]) continue;
    message += (i == 0 ? " " : "; ") + candidates_[i].label + ": " + results_[i]->to_string();
    if (!shared) shared = results_[i]->code();
    same = same && *shared == results_[i]->code();
  }
  return make_error(same && shared ? *shared : ErrorCode::kUnavailable, message);
}

bool LinkRace::finished() {
  std::lock_guard lock(mu_);
  return ended_ == candidates_.size();
}

std::vector<std::optional<Status>> LinkRace::results() {
  std::lock_guard lock(mu_);
  return results_;
}

Status response_status(const wire::Response& response, std::string_view what) {
  ErrorCode code;
  switch (response.status()) {
    case wire::kStatusOk: return Status::ok();
    case wire::kStatusBadRequest: code = ErrorCode::kInvalidArgument; break;
    case wire::kStatusUnauthorized:
    case wire::kStatusForbidden: code = ErrorCode::kPermissionDenied; break;
    case wire::kStatusNotFound: code = ErrorCode::kNotFound; break;
    case wire::kStatusConflict: code = ErrorCode::kAlreadyExists; break;
    case wire::kStatusTooLarge: code = ErrorCode::kTooLarge; break;
    case wire::kStatusRateLimited: code = ErrorCode::kResourceExhausted; break;
    case wire::kStatusUnavailable: code = ErrorCode::kUnavailable; break;
    default: code = ErrorCode::kInternal; break;
  }
  return make_error(code, std::string(what) + ": " + response.message() + " (" +
                              std::to_string(response.status()) + ")");
}

}  // namespace parley::client
