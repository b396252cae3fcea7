#pragma once
// Internal to src/transport: which PUT may write an attachment's file — the newest.
//
// A client whose upload connection broke on its side resumes on a new connection while the
// server may still hold the old one, reading its body (until its deadline). Without this, the
// old part would go on writing, also into a file that the new part has since completed, and a
// download would then pass its length check with other bytes. So each PUT joins the
// attachment's entry before it reads the recorded offset, and takes it once it is known to
// write (a PUT with a wrong token, a status query or a refused part supersedes no one): a newer
// take supersedes the older ones, and a superseded part writes nothing more and records nothing
// (the newer one resumes from what was recorded). A part that reads the offset after a completed
// upload finds it complete, and one that read it before the completion was recorded writes nothing
// (may_record()): the entry, with its mark, lasts while anyone has joined it.
//
// Thread-safety: all methods may be called from any thread; a claim's writes are serialized
// with newer takes, so none lands after a newer part took the entry.

#include <sys/types.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace parley::transport::internal {

class UploadWriters {
  struct Entry {
    std::mutex mu;
    std::uint64_t generation = 0;  // guarded by mu
    bool complete = false;         // guarded by mu: a part reached the end (may_record)
    std::size_t holders = 0;       // guarded by UploadWriters::mu_
  };

 public:
  class Claim {
   public:
    // Joins the entry of attachment `id`; writes nothing until take().
    Claim(UploadWriters& owner, std::string id) : owner_(owner), id_(std::move(id)) {
      std::lock_guard<std::mutex> lock(owner_.mu_);
      auto& e = owner_.entries_[id_];
      if (!e) e = std::make_shared<Entry>();
      entry_ = e;
      ++entry_->holders;
    }
    ~Claim() {
      std::lock_guard<std::mutex> lock(owner_.mu_);
      if (--entry_->holders == 0) owner_.entries_.erase(id_);
    }
    Claim(const Claim&) = delete;
    Claim& operator=(const Claim&) = delete;

    // Makes this the part that writes; the parts that took it before are superseded.
    void take() {
      std::lock_guard<std::mutex> lock(entry_->mu);
      generation_ = ++entry_->generation;
    }

    // Writes all of `data` at `offset` into `fd`, unless a newer claim was made or a part
    // completed the upload: kSuperseded (nothing written), kFailed (a write failed), or
    // kWritten.
    enum class Write { kWritten, kSuperseded, kFailed };
    Write pwrite_all(int fd, const char* data, std::size_t size, std::uint64_t offset) {
      std::lock_guard<std::mutex> lock(entry_->mu);
      if (generation_ == 0 || entry_->generation != generation_ || entry_->complete) {
        return Write::kSuperseded;
      }
      for (std::size_t off = 0; off < size;) {
        const ssize_t w = ::pwrite(fd, data + off, size - off, static_cast<off_t>(offset + off));
        if (w <= 0) return Write::kFailed;
        off += static_cast<std::size_t>(w);
      }
      return Write::kWritten;
    }
    // Before a part records how far it reached: false when a newer claim was made (the part
    // records nothing). With `completes` (the part reached the end), no claim writes again
    // while this entry lasts: a newer claim may have read the offset before this part records
    // it, and must not write into the finished file.
    bool may_record(bool completes) {
      std::lock_guard<std::mutex> lock(entry_->mu);
      if (generation_ == 0 || entry_->generation != generation_) return false;
      if (completes) entry_->complete = true;
      return true;
    }

    // After may_record(true), when recording failed: the upload is not complete after all, and
    // a later part may write.
    void not_recorded() {
      std::lock_guard<std::mutex> lock(entry_->mu);
      entry_->complete = false;  // only the part that set it (no other could write since)
    }

   private:
    UploadWriters& owner_;
    const std::string id_;
    std::shared_ptr<Entry> entry_;
    std::uint64_t generation_ = 0;  // 0: not taken
  };

 private:
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;  // guarded by mu_; claimed ids only
};

}  // namespace parley::transport::internal
