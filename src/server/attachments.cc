#include "server/attachments.h"

#include <chrono>
#include <filesystem>
#include <future>

#include "crypto/primitives.h"
#include "server/service.h"

namespace parley::server {
namespace {

constexpr auto kStoreWait = std::chrono::seconds(10);

bool valid_id(std::string_view id) {
  if (id.size() != 32) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

class AttachmentFiles final : public transport::HttpFiles {
 public:
  explicit AttachmentFiles(Service& service)
      : service_(service),
        dir_(std::filesystem::path(service.config().data_dir) / "attachments") {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
  }

  Result<Upload> begin_upload(std::string_view id, std::string_view token) override {
    PARLEY_ASSIGN_OR_RETURN(store::Attachment a, find(id));
    const auto hash = crypto::sha256(as_bytes(token));
    if (!constant_time_equal(ByteView(hash), a.upload_token_hash)) {
      return make_error(ErrorCode::kPermissionDenied, "bad upload token");
    }
    return Upload{(dir_ / a.id).string(), a.size, a.have};
  }

  Status finish_upload(std::string_view id, std::uint64_t have) override {
    // Shared: if the wait times out, the late callback must still have a promise to fill.
    auto p = std::make_shared<std::promise<Status>>();
    auto f = p->get_future();
    service_.store().set_attachment_progress(std::string(id), have,
                                             [p](Status s) { p->set_value(std::move(s)); });
    if (f.wait_for(kStoreWait) != std::future_status::ready) {
      return make_error(ErrorCode::kUnavailable, "store busy");
    }
    return f.get();
  }

  Result<Download> open_download(std::string_view id) override {
    PARLEY_ASSIGN_OR_RETURN(store::Attachment a, find(id));
    if (a.have != a.size) return make_error(ErrorCode::kNotFound, "attachment incomplete");
    return Download{(dir_ / a.id).string(), a.size};
  }

 private:
  Result<store::Attachment> find(std::string_view id) {
    if (!valid_id(id)) return make_error(ErrorCode::kNotFound, "no such attachment");
    auto p = std::make_shared<std::promise<Result<std::optional<store::Attachment>>>>();
    auto f = p->get_future();
    service_.store().find_attachment(
        std::string(id),
        [p](Result<std::optional<store::Attachment>> r) { p->set_value(std::move(r)); });
    if (f.wait_for(kStoreWait) != std::future_status::ready) {
      return make_error(ErrorCode::kUnavailable, "store busy");
    }
    auto r = f.get();
    if (!r) return r.error();
    if (!*r || (*r)->expires_ms < service_.clock().now_ms()) {
      return make_error(ErrorCode::kNotFound, "no such attachment");
    }
    return std::move(**r);
  }

  Service& service_;
  std::filesystem::path dir_;
};

}  // namespace

std::unique_ptr<transport::HttpFiles> make_attachment_files(Service& service) {
  return std::make_unique<AttachmentFiles>(service);
}

}  // namespace parley::server
