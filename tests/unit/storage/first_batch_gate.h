// FirstBatchGate: holds a GroupCommitter's writer thread inside the on_batch
// hook of its first write until Release(), so that everything submitted
// meanwhile must queue up behind it (and be merged into the next write).
#pragma once

#include <condition_variable>
#include <mutex>
#include <vector>

#include "storage/storage.h"

namespace tipd::storage {

class FirstBatchGate {
 public:
  // Give it to GroupCommitOptions::on_batch.
  void OnBatch(const CommitBatchInfo& info) {
    std::unique_lock<std::mutex> lock(mu_);
    sizes_.push_back(info.writes);
    if (sizes_.size() > 1) return;
    entered_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return released_; });
  }
  // Returns once the first write is held.
  void WaitEntered() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return entered_; });
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  // The number of submissions in each write so far.
  std::vector<size_t> sizes() {
    std::lock_guard<std::mutex> lock(mu_);
    return sizes_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false;
  bool released_ = false;
  std::vector<size_t> sizes_;
};

}  // namespace tipd::storage
