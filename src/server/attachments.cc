#include "server/attachments.h"

#include <filesystem>

#include "crypto/primitives.h"
#include "server/service.h"

namespace parley::server {
namespace {

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

  void begin_upload(std::string id, std::string token, Done<Result<Upload>> done) override {
    find(std::move(id),
         [this, token = std::move(token), done = std::move(done)](Result<store::Attachment> a) {
           if (!a) return done(a.error());
           const auto hash = crypto::sha256(as_bytes(token));
           if (!constant_time_equal(ByteView(hash), a->upload_token_hash)) {
             return done(make_error(ErrorCode::kPermissionDenied, "bad upload token"));
           }
           done(Upload{(dir_ / a->id).string(), a->size, a->have});
         });
  }

  void finish_upload(std::string id, std::uint64_t have,
                     Done<Result<std::uint64_t>> done) override {
    service_.store().set_attachment_progress(std::move(id), have, std::move(done));
  }

  void open_download(std::string id, Done<Result<Download>> done) override {
    find(std::move(id), [this, done = std::move(done)](Result<store::Attachment> a) {
      if (!a) return done(a.error());
      if (a->have != a->size) {
        return done(make_error(ErrorCode::kNotFound, "attachment incomplete"));
      }
      done(Download{(dir_ / a->id).string(), a->size});
    });
  }

 private:
  // An unexpired attachment, or kNotFound; `done` runs on the store's thread (or at once).
  void find(std::string id, Done<Result<store::Attachment>> done) {
    if (!valid_id(id)) return done(make_error(ErrorCode::kNotFound, "no such attachment"));
    service_.store().find_attachment(
        std::move(id), [this, done = std::move(done)](Result<std::optional<store::Attachment>> r) {
          if (!r) return done(r.error());
          if (!*r || (*r)->expires_ms < service_.clock().now_ms()) {
            return done(make_error(ErrorCode::kNotFound, "no such attachment"));
          }
          done(std::move(**r));
        });
  }

  Service& service_;
  std::filesystem::path dir_;
};

}  // namespace

std::unique_ptr<transport::HttpFiles> make_attachment_files(Service& service) {
  return std::make_unique<AttachmentFiles>(service);
}

}  // namespace parley::server
