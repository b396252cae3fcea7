// Client: opening, registration, the connection, and the identity policy.
#include "client/client.h"

#include <algorithm>
#include <charconv>
#include <system_error>
#include <tuple>

#include "client/identity_policy.h"
#include "client/internal/client_util.h"
#include "client/server_link.h"
#include "protocol/fingerprint.h"
#include "protocol/keys.h"
#include "wire/invite.h"

namespace parley::client {
namespace {

// One-time prekeys uploaded at registration and kept topped up.
constexpr std::uint32_t kPreKeyBatch = 100;
// Below this many on the server, a connecting client uploads another batch.
constexpr std::uint32_t kPreKeyLowWater = 20;

Result<wire::Invite> invite_of(const Account& a) {
  wire::Invite server;
  server.host = a.server_host;
  std::uint32_t port = 0;
  const std::string& text = a.server_port;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (ec != std::errc() || end != text.data() + text.size() || port == 0 || port > 65535) {
    return make_error(ErrorCode::kMalformed, "profile: bad server port");
  }
  server.port = static_cast<std::uint16_t>(port);
  auto pin = from_hex(a.server_pin);
  if (!pin || pin->size() != 32) return make_error(ErrorCode::kMalformed, "profile: bad server pin");
  server.pin_sha256 = std::move(*pin);
  server.ws_path = a.server_ws_path;
  server.server_name = a.server_address;
  return server;
}

wire::SignedPreKey to_wire(const protocol::SignedPreKeyRecord& r) {
  wire::SignedPreKey w;
  w.set_id(r.id);
  const Bytes pub = r.key_pair.public_key.serialize();
  w.set_public_key(std::string(as_chars(pub)));
  w.set_signature(std::string(as_chars(r.signature)));
  return w;
}

void add_pre_keys(const std::vector<protocol::PreKeyRecord>& keys,
                  google::protobuf::RepeatedPtrField<wire::PreKey>* out) {
  for (const auto& k : keys) {
    auto* w = out->Add();
    w->set_id(k.id);
    const Bytes pub = k.key_pair.public_key.serialize();
    w->set_public_key(std::string(as_chars(pub)));
  }
}

constexpr std::size_t kRecoveryCodeSize = 16;

// "a1b2-c3d4-...": 32 hex digits in groups of four.
std::string format_recovery_code(ByteView code) {
  const std::string hex = to_hex(code);
  std::string out;
  for (std::size_t i = 0; i < hex.size(); ++i) {
    if (i > 0 && i % 4 == 0) out.push_back('-');
    out.push_back(hex[i]);
  }
  return out;
}

std::optional<Bytes> parse_recovery_code(std::string_view text) {
  std::string hex;
  for (char c : text) {
    if (c == '-' || c == ' ') continue;
    hex.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  auto bytes = from_hex(hex);
  if (!bytes || bytes->size() != kRecoveryCodeSize) return std::nullopt;
  return bytes;
}

}  // namespace

struct Client::PendingRace {
  std::unique_ptr<LinkRace> race;
  std::vector<std::int64_t> ids;  // transport id of each candidate
  std::vector<bool> recorded;     // its result is in the store
};

Client::Client(std::unique_ptr<Profile> profile, OpenOptions options)
    : options_(std::move(options)), profile_(std::move(profile)) {
  store_ = std::make_unique<LocalStore>(*profile_, clock_, rng_);
  trust_ = std::make_unique<IdentityPolicy>(*store_);
  pool_ = std::make_unique<TransportPool>(profile_->dir() / "pt");
}

Client::~Client() {
  drop_link();
  if (options_.wait_for_race_losers) {
    reap_races(true);
    return;
  }
  reap_races(false);
  if (races_.empty()) return;
  // Losers still connecting are left to end with the process: their races and the PT pool they
  // may use are leaked on purpose, never freed under them.
  for (auto& p : races_) {
    p->race->detach();
    static_cast<void>(p->race.release());
  }
  static_cast<void>(pool_.release());
}

Result<std::unique_ptr<Client>> Client::register_account(
    const OpenOptions& options, std::string_view invite_link, std::string_view name,
    std::string_view recover_code, const std::vector<std::string>& transports,
    std::string_view pt_binary) {
  auto invite = wire::parse_invite(invite_link);
  if (!invite) {
    return make_error(ErrorCode::kInvalidArgument, "malformed invite: " + invite.error().message());
  }
  if (invite->is_bridge) {
    return make_error(ErrorCode::kInvalidArgument,
                      "this is a bridge link, not a server invite (register with the server's "
                      "invite and --transport BRIDGE_LINK)");
  }
  std::vector<TransportRecord> extra;
  if (auto obfs4 = obfs4_link_of(*invite)) {
    TransportRecord r;
    r.kind = TransportKind::kPluggable;
    r.link = *obfs4;
    r.pt_binary = std::string(pt_binary);
    extra.push_back(std::move(r));
  }
  for (const std::string& link : transports) {
    PARLEY_ASSIGN_OR_RETURN(TransportLink t, parse_transport_link(link));
    TransportRecord r;
    r.kind = t.kind;
    r.link = t.text;
    if (t.kind == TransportKind::kPluggable) r.pt_binary = std::string(pt_binary);
    const bool dup = std::any_of(extra.begin(), extra.end(), [&](const TransportRecord& e) {
      return e.kind == r.kind && e.link == r.link;
    });
    if (!dup) extra.push_back(std::move(r));
  }
  std::optional<Bytes> old_code;
  if (!recover_code.empty()) {
    old_code = parse_recovery_code(recover_code);
    if (!old_code) {
      return make_error(ErrorCode::kInvalidArgument,
                        "a recovery code is 32 hex digits (dashes and spaces are ignored)");
    }
  }
  const std::string folded = lowercase(name);
  if (folded.empty() || folded.size() > 32) {
    return make_error(ErrorCode::kInvalidArgument, "a name has 1 to 32 characters");
  }
  std::error_code ec;
  const bool existed = std::filesystem::exists(options.profile_dir, ec);
  PARLEY_ASSIGN_OR_RETURN(auto profile,
                          Profile::create(options.profile_dir, options.passphrase, options.kdf));
  std::unique_ptr<Client> client(new Client(std::move(profile), options));
  Status s = [&]() -> Status {
    LocalStore& store = *client->store_;
    crypto::SystemRng& rng = client->rng_;
    Account a;
    a.name = folded;
    a.server_address = invite->server_name;
    a.server_host = invite->host;
    a.server_port = std::to_string(invite->port);
    a.server_pin = to_hex(invite->pin_sha256);
    a.server_ws_path = invite->ws_path;
    a.device_id = 1;
    a.registration_id = protocol::generate_registration_id(rng);
    a.identity = protocol::generate_identity_key_pair(rng);
    a.auth = crypto::Ed25519KeyPair::generate(rng);
    a.signed_pre_key_id = 1;
    a.next_pre_key_id = 1 + kPreKeyBatch;
    auto spk = protocol::generate_signed_pre_key(a.identity, 1,
                                                 static_cast<std::uint64_t>(client->clock_.now_ms()), rng);
    auto pre_keys = protocol::generate_pre_keys(1, kPreKeyBatch, rng);

    wire::RegisterRequest req;
    req.set_name(std::string(name));
    SecretBytes code(kRecoveryCodeSize);
    rng.fill(code.mutable_view());
    const auto code_hash = crypto::sha256(code.view());
    req.set_recovery_hash(std::string(as_chars(code_hash)));
    if (old_code) req.set_recovery_code(std::string(as_chars(*old_code)));
    client->recovery_code_ = format_recovery_code(code.view());
    req.set_invite_token(invite->invite_token);
    const Bytes identity_pub = a.identity.public_key.serialize();
    req.set_identity_key(std::string(as_chars(identity_pub)));
    req.set_registration_id(a.registration_id);
    *req.mutable_signed_pre_key() = to_wire(spk);
    add_pre_keys(pre_keys, req.mutable_pre_keys());

    // Keys are stored before the server learns them, so a crash cannot leave an account on the
    // server whose keys we lost. The registration commits only if the server accepted it.
    Status saved = store.run_in_transaction([&]() -> Status {
      PARLEY_TRY(store.store_signed_pre_key(spk));
      for (const auto& k : pre_keys) PARLEY_TRY(store.store_pre_key(k));
      for (const auto& t : extra) PARLEY_TRY(store.add_transport(t).status());
      return store.save_account(a);
    });
    PARLEY_TRY(saved);
    PARLEY_TRY(client->load());
    // Registration goes through the same race as every later connection.
    PARLEY_ASSIGN_OR_RETURN(auto link, client->connect_raced());
    PARLEY_ASSIGN_OR_RETURN(wire::Response resp, link->register_device(std::move(req), a.auth, folded));
    if (resp.status() == wire::kStatusConflict) {
      return make_error(ErrorCode::kAlreadyExists,
                        "the name " + folded + " is taken on " + invite->server_name +
                            (old_code ? " and the recovery code does not match" : ""));
    }
    PARLEY_TRY(response_status(resp, "registration"));
    if (resp.has_login()) {
      a.device_id = resp.login().device_id();
      if (!resp.login().address().empty()) a.server_address = invite->server_name;
      PARLEY_TRY(store.save_account(a));
    }
    link->close();
    client->link_transport_ = 0;
    return client->load();
  }();
  if (!s.is_ok()) {
    client->reap_races(true);
    client.reset();
    // Remove what this call created: never leave a half-registered profile behind.
    if (!existed) {
      std::filesystem::remove_all(options.profile_dir, ec);
    } else {
      for (const char* f : {"profile.db", "profile.db-wal", "profile.db-shm", "key", "salt"}) {
        std::filesystem::remove(options.profile_dir / f, ec);
      }
    }
    return s;
  }
  return client;
}

Result<std::unique_ptr<Client>> Client::open(const OpenOptions& options) {
  PARLEY_ASSIGN_OR_RETURN(auto profile,
                          Profile::open(options.profile_dir, options.passphrase, options.kdf));
  std::unique_ptr<Client> client(new Client(std::move(profile), options));
  PARLEY_TRY(client->load());
  return client;
}

Status Client::load() {
  PARLEY_ASSIGN_OR_RETURN(Account a, store_->load_account());
  server_name_ = a.server_address;
  address_ = a.name + "@" + server_name_;
  account_ = std::move(a);
  return Status::ok();
}

Result<std::string> Client::canonical_address(std::string_view address) const {
  std::string a = lowercase(address);
  const auto at = a.find('@');
  std::string name = at == std::string::npos ? a : a.substr(0, at);
  if (at != std::string::npos && a.substr(at + 1) != server_name_) {
    return make_error(ErrorCode::kInvalidArgument,
                      "address " + std::string(address) + " is on another server (this profile is on " +
                          server_name_ + ")");
  }
  const bool ok = !name.empty() && name.size() <= 32 &&
                  std::all_of(name.begin(), name.end(), [](char c) {
                    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                           c == '_' || c == '-';
                  });
  if (!ok) return make_error(ErrorCode::kInvalidArgument, "malformed address: " + std::string(address));
  return name + "@" + server_name_;
}

Result<wire::Invite> Client::server_invite() const { return invite_of(*account_); }

// ---- The connection ----------------------------------------------------------------------------

Status Client::ensure_link() {
  if (link_) return Status::ok();
  PARLEY_ASSIGN_OR_RETURN(auto link, connect_raced());
  Result<wire::LoginResult> logged_in =
      link->login(account_->name, account_->device_id, account_->auth);
  if (!logged_in) {
    link_ = std::move(link);
    drop_link(transient(logged_in.error()) ? logged_in.error() : Status::ok());
    return logged_in.error();
  }
  const wire::LoginResult login = std::move(*logged_in);
  link_ = std::move(link);
  // Key upkeep on every connection: one-time prekeys topped up, the signed prekey rotated.
  Status s = login.pre_key_count() < kPreKeyLowWater ? replenish_pre_keys() : Status::ok();
  if (s.is_ok()) s = rotate_signed_pre_key_if_due();
  if (!s.is_ok()) {
    drop_link(transient(s) ? s : Status::ok());
    return s;
  }
  return Status::ok();
}

void Client::drop_link(const Status& why) {
  if (link_ && !why.is_ok() && link_transport_ != 0) {
    ++link_failures_[link_transport_];
    store_->record_transport_result(link_transport_, why, clock_.now_ms()).ignore();
  } else if (link_ && why.is_ok()) {
    link_failures_.erase(link_transport_);  // it did its work: it gets its place back
  }
  if (link_) link_->close();
  link_.reset();
}

// ---- Transports --------------------------------------------------------------------------------

Result<std::unique_ptr<ServerLink>> Client::connect_raced() {
  reap_races(false);
  PARLEY_ASSIGN_OR_RETURN(std::vector<TransportRecord> all, store_->list_transports());
  PARLEY_ASSIGN_OR_RETURN(wire::Invite server, invite_of(*account_));
  transport::ClientOptions base = server_options(server);
  base.connect_timeout = options_.connect_timeout;
  base.idle_timeout = options_.idle_timeout;

  // The last winner first (direct when there is none), then direct, then the others by their
  // last success; a transport whose links failed twice in this process goes last.
  std::vector<TransportRecord> order;
  for (auto& t : all) {
    if (t.enabled) order.push_back(std::move(t));
  }
  auto rank = [&](const TransportRecord& t) {
    const auto f = link_failures_.find(t.id);
    const bool demoted = f != link_failures_.end() && f->second >= 2;
    return std::make_tuple(demoted, !t.preferred, t.kind != TransportKind::kDirect,
                           -t.last_success_ms, t.id);
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](const auto& a, const auto& b) { return rank(a) < rank(b); });
  if (order.size() > LinkRace::kMaxCandidates) order.resize(LinkRace::kMaxCandidates);

  auto pending = std::make_unique<PendingRace>();
  std::vector<LinkCandidate> candidates;
  for (const TransportRecord& t : order) {
    LinkCandidate c;
    c.label = t.kind == TransportKind::kDirect ? std::string("direct") : t.link;
    c.prepare = [pool = pool_.get(), t, base]() { return pool->options_for(t, base); };
    candidates.push_back(std::move(c));
    pending->ids.push_back(t.id);
  }
  pending->recorded.assign(pending->ids.size(), false);
  pending->race = std::make_unique<LinkRace>(std::move(candidates), options_.race_stagger);
  Result<LinkRace::Winner> won = pending->race->wait();
  std::int64_t winner = 0;
  if (won) {
    winner = pending->ids[won->index];
    link_options_ = won->options;
    link_transport_ = winner;
  }
  races_.push_back(std::move(pending));
  reap_races(false);
  if (!won) return won.error();
  store_->set_preferred_transport(winner).ignore();
  return std::move(won->link);
}

void Client::reap_races(bool all) {
  const std::int64_t now = clock_.now_ms();
  for (auto it = races_.begin(); it != races_.end();) {
    PendingRace& p = **it;
    if (all) p.race->join();
    const bool done = p.race->finished();
    auto results = p.race->results();
    for (std::size_t i = 0; i < results.size(); ++i) {
      if (!results[i] || p.recorded[i]) continue;
      store_->record_transport_result(p.ids[i], *results[i], now).ignore();
      p.recorded[i] = true;
    }
    it = done ? races_.erase(it) : std::next(it);
  }
}

Result<std::vector<TransportRecord>> Client::transports() { return store_->list_transports(); }

Result<std::int64_t> Client::add_transport(std::string_view link, std::string_view pt_binary) {
  PARLEY_ASSIGN_OR_RETURN(TransportLink t, parse_transport_link(link));
  if (!pt_binary.empty() && t.kind != TransportKind::kPluggable) {
    return make_error(ErrorCode::kInvalidArgument,
                      "--pt-binary applies to pluggable transports (bridge lines) only");
  }
  TransportRecord r;
  r.kind = t.kind;
  r.link = t.text;
  r.pt_binary = std::string(pt_binary);
  return store_->add_transport(r);
}

Status Client::remove_transport(std::int64_t id) { return store_->remove_transport(id); }

Status Client::set_transport_enabled(std::int64_t id, bool enabled) {
  return store_->set_transport_enabled(id, enabled);
}

Status Client::replenish_pre_keys() {
  Account& a = *account_;
  auto keys = protocol::generate_pre_keys(a.next_pre_key_id, kPreKeyBatch, rng_);
  const std::uint32_t previous = a.next_pre_key_id;
  a.next_pre_key_id = (a.next_pre_key_id + kPreKeyBatch - 1) % protocol::kMaxPreKeyId + 1;
  // Stored first: a key the server hands out must be one we can still use.
  Status saved = store_->run_in_transaction([&]() -> Status {
    for (const auto& k : keys) PARLEY_TRY(store_->store_pre_key(k));
    return store_->save_account(a);
  });
  if (!saved.is_ok()) {
    a.next_pre_key_id = previous;
    return saved;
  }
  wire::Request r;
  add_pre_keys(keys, r.mutable_upload_keys()->mutable_pre_keys());
  PARLEY_ASSIGN_OR_RETURN(wire::Response resp, link_->call(std::move(r)));
  return response_status(resp, "prekey upload");
}

Status Client::rotate_signed_pre_key_if_due() {
  Account& a = *account_;
  PARLEY_ASSIGN_OR_RETURN(protocol::SignedPreKeyRecord current,
                          store_->load_signed_pre_key(a.signed_pre_key_id));
  const std::int64_t now = clock_.now_ms();
  const std::int64_t age_ms = now - static_cast<std::int64_t>(current.timestamp_ms);
  if (age_ms < options_.signed_pre_key_max_age.count() * 1000) return Status::ok();
  const std::uint32_t previous_id = a.signed_pre_key_id;
  const std::uint32_t next_id = previous_id % protocol::kMaxPreKeyId + 1;
  auto fresh = protocol::generate_signed_pre_key(a.identity, next_id, static_cast<std::uint64_t>(now), rng_);
  // The previous key stays one more period: messages already on their way may use it. The one
  // before it goes.
  a.signed_pre_key_id = next_id;
  Status saved = store_->run_in_transaction([&]() -> Status {
    PARLEY_TRY(store_->store_signed_pre_key(fresh));
    if (previous_id > 1) store_->remove_signed_pre_key(previous_id - 1).ignore();
    return store_->save_account(a);
  });
  if (!saved.is_ok()) {
    a.signed_pre_key_id = previous_id;
    return saved;
  }
  wire::Request r;
  *r.mutable_upload_keys()->mutable_signed_pre_key() = to_wire(fresh);
  PARLEY_ASSIGN_OR_RETURN(wire::Response resp, link_->call(std::move(r)));
  return response_status(resp, "signed prekey upload");
}

// ---- Identity ----------------------------------------------------------------------------------

Result<std::string> Client::safety_number(std::string_view address) {
  PARLEY_ASSIGN_OR_RETURN(std::string peer, canonical_address(address));
  PARLEY_ASSIGN_OR_RETURN(auto identity, store_->get_identity(protocol::ProtocolAddress{peer, 1}));
  if (!identity) {
    return make_error(ErrorCode::kNotFound, "no identity key known for " + peer +
                                                " yet: exchange a message first");
  }
  auto fp = protocol::create_fingerprint(5200, as_bytes(address_), account_->identity.public_key,
                                         as_bytes(peer), *identity);
  return fp.display_text();
}

Status Client::trust(std::string_view address) {
  PARLEY_ASSIGN_OR_RETURN(std::string peer, canonical_address(address));
  PARLEY_ASSIGN_OR_RETURN(std::vector<Contact> all, store_->list_contacts());
  bool found = false;
  for (const Contact& c : all) {
    if (c.address.name != peer) continue;
    found = true;
    PARLEY_TRY(store_->trust_contact(c.address, c.identity_key, true));
  }
  if (!found) return make_error(ErrorCode::kNotFound, "no identity key known for " + peer);
  return Status::ok();
}

Result<std::vector<Contact>> Client::contacts() { return store_->list_contacts(); }

}  // namespace parley::client
