#include "server/attachments.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "crypto/primitives.h"
#include "server/disk_space.h"
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

std::filesystem::path attachments_dir(Service& service) {
  return std::filesystem::path(service.config().data_dir) / "attachments";
}

class AttachmentFiles final : public transport::HttpFiles {
 public:
  explicit AttachmentFiles(Service& service) : service_(service), dir_(attachments_dir(service)) {
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
           Upload upload{(dir_ / a->id).string(), a->size, a->have};
           if (upload.have == upload.size) return done(std::move(upload));
           // The disk reserve holds for uploads too, not only for new slots: slots granted
           // together may promise more than the disk has (503: the client resumes later).
           // Checked on the io_context: a statvfs that hangs (a stalled filesystem) must not
           // hold up the store's thread, and with it every message.
           boost::asio::post(service_.io_executor(), [this, upload = std::move(upload),
                                                      done = std::move(done)]() mutable {
             if (attachment_breaks_disk_reserve(service_, upload.size - upload.have)) {
               return done(make_error(ErrorCode::kUnavailable, "server storage is full"));
             }
             done(std::move(upload));
           });
         });
  }

  void finish_upload(std::string id, std::uint64_t have,
                     Done<Result<std::uint64_t>> done) override {
    std::string path = (dir_ / id).string();  // a valid id: begin_upload found its row
    service_.store().set_attachment_progress(
        std::move(id), have,
        [this, path = std::move(path), done = std::move(done)](Result<std::uint64_t> r) mutable {
          // Expiry deleted the row and its file while this part was written, and the write
          // made the file again: it goes too (ids are never reused), or it would stay, counted
          // by no quota, until the next start's sweep. On the io_context, off the store's
          // thread, as housekeeping removes files.
          if (!r && r.error().code() == ErrorCode::kNotFound) {
            boost::asio::post(service_.io_executor(), [path = std::move(path)] {
              std::error_code ec;
              std::filesystem::remove(path, ec);
            });
          }
          done(std::move(r));
        });
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
          // By housekeeping's clock, which a system clock set ahead does not move.
          if (!*r || (*r)->expires_ms < service_.attachment_now_ms()) {
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

bool attachment_breaks_disk_reserve(Service& service, std::uint64_t size) {
  if (!breaks_disk_reserve(attachments_dir(service).string(), size,
                           service.config().attachment_min_free_disk_mb)) {
    return false;
  }
  service.metrics().attachment_disk_refusals.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void sweep_orphan_attachment_files(Service& service) {
  struct Sweep {
    Service& service;
    std::filesystem::path dir;
    std::vector<std::string> ids;  // the files as listed at the start
    std::size_t next = 0;
    std::size_t removed = 0;

    // Each file listed had its row when it was written (an upload needs the row), so a row
    // missing now is gone for good: the file is an orphan.
    static void step(const std::shared_ptr<Sweep>& sw) {
      if (sw->next == sw->ids.size()) {
        spdlog::info("event=attachment_sweep files={} removed={}", sw->ids.size(), sw->removed);
        return;
      }
      const std::string id = sw->ids[sw->next++];
      sw->service.store().find_attachment(
          id, sw->service.on_io<std::optional<store::Attachment>>(
                  [sw, id](Result<std::optional<store::Attachment>> r) {
                    if (!r) {  // the store cannot say: keep the file, stop for now
                      spdlog::warn("event=attachment_sweep_stopped code={}",
                                   error_code_name(r.error().code()));
                      return;
                    }
                    if (!r->has_value()) {
                      std::error_code ec;
                      if (std::filesystem::remove(sw->dir / id, ec)) ++sw->removed;
                    }
                    step(sw);
                  }));
    }
  };
  auto sw = std::make_shared<Sweep>(Sweep{service, attachments_dir(service), {}, 0, 0});
  // By hand, not a range-for: its increments throw on a read error (EIO, ESTALE).
  std::error_code ec;
  std::filesystem::directory_iterator it(sw->dir, ec);
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code type_ec;
    if (valid_id(name) && it->is_regular_file(type_ec)) sw->ids.push_back(name);
  }
  if (ec) {  // sweep what was listed; the rest waits for the next start
    spdlog::warn("event=attachment_sweep_listing_failed error=\"{}\"", ec.message());
  }
  Sweep::step(sw);
}

}  // namespace parley::server
