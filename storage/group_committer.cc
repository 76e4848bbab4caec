#include <future>
#include <utility>

#include "storage/storage.h"
#include "util/thread_name.h"

namespace tipd::storage {

GroupCommitter::GroupCommitter(Database* db, GroupCommitOptions options)
    : db_(db), options_(std::move(options)) {
  assert(db_ != nullptr);
  writer_ = std::thread([this] {
    SetThreadName("tipd-commit");
    WriterLoop();
  });
  writer_id_ = writer_.get_id();
}

GroupCommitter::~GroupCommitter() { Stop(); }

void GroupCommitter::Submit(WriteBatch batch, Completion on_durable) {
  assert(on_durable);
  std::string why;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      ++outstanding_;
      queue_.push_back(Pending{std::move(batch), std::move(on_durable)});
      work_cv_.notify_one();
      return;
    }
    // Name the failure a stop after a failed write follows, so the refusal
    // says why the node stopped writing, not only that it did.
    if (!sticky_error_.ok()) why = " after a failed write (" + sticky_error_.ToString() + ")";
  }
  on_durable(Status::FailedPrecondition("group committer for database " + db_->path().string() +
                                        " is stopped" + why + "; write not accepted"));
}

Status GroupCommitter::SubmitAndWait(WriteBatch batch) {
  assert(std::this_thread::get_id() != writer_id_ && "SubmitAndWait on the writer thread");
  std::promise<Status> done;
  std::future<Status> result = done.get_future();
  Submit(std::move(batch), [&done](Status s) { done.set_value(std::move(s)); });
  return result.get();
}

void GroupCommitter::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  if (!writer_.joinable()) return;
  assert(std::this_thread::get_id() != writer_id_ && "Stop on the writer thread");
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_one();
  writer_.join();
}

CommitStats GroupCommitter::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

Status GroupCommitter::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sticky_error_;
}

void GroupCommitter::WriterLoop() {
  std::vector<Pending> taken;
  WriteBatch merged;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [this] { return !queue_.empty() || stopping_; });
    // Stop drains: the loop only ends once nothing is pending.
    if (queue_.empty()) return;

    // Take submissions in order until the next would break a bound; always
    // take at least one so an oversized submission is still written.
    size_t writes = 0;
    size_t bytes = 0;
    while (!queue_.empty()) {
      const WriteBatch& next = queue_.front().batch;
      const size_t next_bytes = next.ApproximateBytes();
      if (!taken.empty() && (writes + next.count() > options_.max_writes_per_batch ||
                             bytes + next_bytes > options_.max_bytes_per_batch)) {
        break;
      }
      writes += next.count();
      bytes += next_bytes;
      taken.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    Status status = sticky_error_;
    lock.unlock();

    CommitBatchInfo info;
    bool wrote = false;
    if (status.ok()) {
      merged.Clear();
      for (const Pending& p : taken) merged.Append(p.batch);
      info.submissions = taken.size();
      info.writes = merged.count();
      info.bytes = merged.ApproximateBytes();
      // Submissions with no operations only ask to be ordered after earlier
      // ones, which are already durable: no write needed.
      if (!merged.empty()) {
        const auto start = std::chrono::steady_clock::now();
        status = db_->Write(merged);
        info.sync_latency = std::chrono::steady_clock::now() - start;
        info.ok = status.ok();
        wrote = true;
      }
    }

    lock.lock();
    if (wrote) {
      ++stats_.batches;
      stats_.total_sync_latency += info.sync_latency;
      stats_.max_sync_latency = std::max(stats_.max_sync_latency, info.sync_latency);
    }
    if (status.ok()) {
      stats_.submissions += taken.size();
      stats_.writes += info.writes;
      stats_.bytes += info.bytes;
      stats_.max_batch_writes = std::max<uint64_t>(stats_.max_batch_writes, info.writes);
    } else {
      if (sticky_error_.ok()) sticky_error_ = status;
      stats_.failed = true;
      stats_.failed_submissions += taken.size();
    }
    lock.unlock();

    if (wrote && options_.on_batch) options_.on_batch(info);
    for (Pending& p : taken) p.on_durable(status);
    lock.lock();
    outstanding_ -= taken.size();
    taken.clear();
  }
}

size_t GroupCommitter::outstanding() const {
  std::lock_guard<std::mutex> lock(mu_);
  return outstanding_;
}

}  // namespace tipd::storage
