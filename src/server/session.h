#pragma once
// Session: the state machine of one WebSocket connection.
//
//   open ──challenge──▶ unauthenticated ──register/login (signed challenge)──▶ authenticated
//
// Authenticated sessions deliver the device's queue: stored envelopes first (oldest first, in
// pages, at most kDeliveryWindow unacknowledged at a time), then QueueEmpty, then live envelopes
// as they are committed. An envelope is deleted only when the device acknowledges it.
//
// Threading: the transport calls on_message sequentially; store callbacks and queued envelopes
// (queued(), from the store's thread) are handled on the connection's executor, except the
// completion of a one-way ack, which only updates a count (on the store's thread). Other
// sessions and the store still call in from their threads (queued, replaced, that count), so
// all state is guarded by mu_. Sends go through the thread-safe WsConnection.

#include <array>
#include <boost/asio/steady_timer.hpp>
#include <boost/container_hash/hash.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>

#include "server/service.h"
#include "transport/server.h"
#include "wire/frame.h"

namespace parley::server {

inline constexpr std::size_t kDeliveryWindow = 256;       // unacked envelopes in flight
inline constexpr std::size_t kDeliveryWindowBytes = 512 * 1024;  // pushed past once, by a frame
static_assert(kDeliveryWindowBytes + wire::kMaxFrameSize + 64 * 1024 <= kMinWriteQueueBytes);
inline constexpr int kMaxFailedLogins = 3;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Service& service, std::string remote_ip);
  ~Session();

  void on_open(std::shared_ptr<transport::WsConnection> conn);
  void on_message(std::string_view bytes);
  void on_close();

  // A new envelope was committed for this session's device (Service::notify, on the store's
  // thread, in seq order). It is handled on the session's executor, where posts from one thread
  // run in the order made: so the session sees its device's envelopes in seq order, and an
  // envelope is never taken for one already pushed because a later one overtook it.
  // `accepted`: when the send went to the store (a live push observes the delay since).
  void queued(std::int64_t seq, std::shared_ptr<const store::Envelope> envelope,
              std::chrono::steady_clock::time_point accepted);
  // Another login of the same device replaced this session.
  void replaced();

 private:
  using Frame = wire::Frame;
  using Request = wire::Request;
  using Response = wire::Response;

  void handle(Request request);
  void respond(Response response);
  void respond_error(std::uint64_t id, std::uint32_t status, std::string message);
  void send_frame(Frame& frame);
  void close(std::string_view reason);

  // A registration or login: at most one at a time, and none once logged in (handle()). Every
  // way out but logged_in() goes through refuse_identity(), which lets the next one try.
  void do_register(std::uint64_t id, const wire::RegisterRequest& r);
  void do_login(std::uint64_t id, const wire::LoginRequest& r);
  void refuse_identity(std::uint64_t id, std::uint32_t status, std::string message);
  // A failed login (401 with `message`); the kMaxFailedLogins-th closes the connection.
  void refuse_login(std::uint64_t id, std::string message);
  void do_upload_keys(std::uint64_t id, const wire::UploadKeysRequest& r);
  void do_key_count(std::uint64_t id);
  void do_fetch_bundles(std::uint64_t id, const wire::FetchBundlesRequest& r);
  void do_send(std::uint64_t id, const wire::SendRequest& r);
  void do_multi_send(std::uint64_t id, const wire::MultiSendRequest& r);
  void do_ack(std::uint64_t id, const wire::AckRequest& r);
  void one_way_ack(const wire::AckRequest& r);  // Frame.ack: no response
  // Frees the room of acknowledged envelopes in the delivery window and deletes them. `done`
  // gets how many were deleted, on the store's thread.
  void ack_envelopes(const wire::AckRequest& r, store::Callback<std::uint32_t> done);
  void do_attachment_slot(std::uint64_t id, const wire::AttachmentSlotRequest& r);
  void do_devices(std::uint64_t id, const wire::DevicesRequest& r);

  // Validates and stores one SendRequest; `done` gets the wire status and result.
  using SendDone = std::function<void(std::uint32_t status, std::string message, wire::SendResult)>;
  void send_one(const wire::SendRequest& r, SendDone done);

  // Stores a SendRequest for `dest` (whose device list it checks first).
  void send_to(const wire::SendRequest& r, const AccountInfo& dest, const AccountInfo& sender,
               std::uint32_t sender_device, SendDone done);

  // Store callbacks that run on this session's connection executor (T: a Result or Status).
  template <typename T>
  std::function<void(T)> on_mine(std::function<void(T)> f) {
    return Service::on_executor<T>(ex_, std::move(f));
  }

  void on_queued(std::int64_t seq, std::shared_ptr<const store::Envelope> envelope,
                 std::chrono::steady_clock::time_point accepted);
  // The connection takes this identity, answers the request and starts delivering; or, when a
  // recovery has replaced the device since its key was checked, refuses the request with 401.
  void logged_in(std::uint64_t id, const std::string& folded_name, AccountPtr account,
                 std::uint32_t device_id, std::uint32_t pre_key_count, bool batches);
  // The authenticated account and device, read under mu_ (an upload_keys callback on another
  // io thread may replace account_ while a handler runs).
  std::pair<AccountPtr, std::uint32_t> who();
  void pump();  // delivery: fetch more from the queue when the window has room (mu_ held)
  // Fewer than kDeliveryWindow envelopes and kDeliveryWindowBytes unacknowledged (mu_ held).
  bool window_has_room() const {
    return unacked_.size() < kDeliveryWindow && unacked_bytes_ < kDeliveryWindowBytes;
  }
  // After a failed fetch: pump() again in 100 ms, doubling up to 10 s while fetches fail.
  void retry_fetch_later();                                        // mu_ held
  void push_envelope(std::int64_t seq, const store::Envelope& e);  // mu_ held
  // Pushes a page of the stored queue: as EnvelopeBatch frames when the client accepts them.
  // Pushes what the delivery window has room for; false if it stopped short of the page's
  // end (mu_ held).
  bool push_page(const std::vector<store::QueuedEnvelope>& page);
  void note_pushed(std::int64_t seq, const store::Envelope& e);    // mu_ held

  Service& service_;
  const std::string remote_ip_;

  std::mutex mu_;
  // Weak: the transport's connection owns the handler that owns this session, so a strong
  // reference back would be a cycle that outlives an io_context stopped mid-connection.
  std::weak_ptr<transport::WsConnection> conn_;
  // The connection's executor (set in on_open, the io_context's before): store callbacks run
  // there, beside the connection's own handlers.
  boost::asio::any_io_executor ex_;
  bool open_ = false;  // between on_open and on_close
  // Closes the connection if it has not logged in by login_timeout_s (held by its handler).
  std::weak_ptr<boost::asio::steady_timer> login_timer_;
  Bytes nonce_;
  std::uint32_t inflight_requests_ = 0;
  int failed_logins_ = 0;
  bool identifying_ = false;  // a registration or login is under way (or done)
  bool batches_ = false;  // the client accepts EnvelopeBatch pushes
  // Authenticated state.
  AccountPtr account_;
  std::uint32_t device_id_ = 0;
  // Delivery state.
  enum class Delivery { kNone, kDraining, kLive } delivery_ = Delivery::kNone;
  std::int64_t last_seq_sent_ = 0;
  bool fetching_ = false;
  bool dirty_ = false;  // something was queued while we could not push it directly
  bool fetch_retry_pending_ = false;
  std::uint32_t fetch_retry_ms_ = 0;  // the last retry's delay; 0 after a fetch that worked
  // Pushed and not yet acknowledged: server id -> content bytes. A flat map of fixed-size keys
  // costs no allocation per envelope (a std::map<Bytes> cost two).
  using ServerId = std::array<std::uint8_t, 16>;
  boost::unordered_flat_map<ServerId, std::size_t, boost::hash<ServerId>> unacked_;
  // The window's key for a server id; false (key untouched) when the id is not 16 bytes.
  static bool window_key(std::string_view server_id, ServerId& key);
  std::size_t unacked_bytes_ = 0;
  // The account this session last sent to, as named in the request, while the service's
  // account cache has not changed since (Service::accounts_generation): a device mostly writes
  // to the same few, and the shared cache's lock was contended by every io thread.
  std::string last_destination_;
  AccountPtr last_destination_account_;
  std::uint64_t last_destination_generation_ = 0;
};

// Adapts a Session to the transport's handler interface (the transport owns the adapter; the
// session lives as long as callbacks still refer to it).
// `remote_ip` is the key of the client's per-IP limits (transport::client_block()).
std::unique_ptr<transport::WsHandler> make_session_handler(Service& service,
                                                           const std::string& remote_ip);

}  // namespace parley::server
