#include "storage/fault_env.h"

#include <memory>
#include <utility>

namespace tipd::storage {
namespace {

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool NumberedWithSuffix(std::string_view name, std::string_view suffix) {
  if (name.size() <= suffix.size() || name.substr(name.size() - suffix.size()) != suffix) {
    return false;
  }
  return AllDigits(name.substr(0, name.size() - suffix.size()));
}

// A WritableFile whose every Append, Flush and Sync asks the Env first.
class FaultFile final : public leveldb::WritableFile {
 public:
  FaultFile(FaultEnv* env, std::unique_ptr<leveldb::WritableFile> base, std::string fname)
      : env_(env), base_(std::move(base)), fname_(std::move(fname)), kind_(ClassifyFile(fname_)) {}

  leveldb::Status Append(const leveldb::Slice& data) override {
    bool torn = false;
    leveldb::Status s = env_->Check(FaultOp::kAppend, kind_, fname_, &torn);
    if (s.ok()) return base_->Append(data);
    if (torn && data.size() > 1) {
      // A short write: part of the data reaches the file before the error.
      leveldb::Status partial = base_->Append(leveldb::Slice(data.data(), data.size() / 2));
      if (partial.ok()) partial = base_->Flush();
      (void)partial;  // the injected error is what the caller sees
    }
    return s;
  }
  leveldb::Status Flush() override {
    leveldb::Status s = env_->CheckFlush(kind_, fname_);
    if (!s.ok()) return s;
    return base_->Flush();
  }
  leveldb::Status Sync() override {
    bool torn = false;
    leveldb::Status s = env_->Check(FaultOp::kSync, kind_, fname_, &torn);
    if (!s.ok()) {
      // The data was written; only its durability is unknown. Push it to the
      // OS as a real fsync that fails after writing back would have.
      leveldb::Status flushed = base_->Flush();
      (void)flushed;
      return s;
    }
    return base_->Sync();
  }
  leveldb::Status Close() override { return base_->Close(); }

 private:
  FaultEnv* const env_;
  std::unique_ptr<leveldb::WritableFile> base_;
  const std::string fname_;
  const FileKind kind_;
};

leveldb::Status Injected(FaultOp op, const std::string& fname, bool disk_full) {
  if (disk_full) {
    return leveldb::Status::IOError(fname, "No space left on device (injected disk full)");
  }
  return leveldb::Status::IOError(fname, "injected " + std::string(FaultOpName(op)) + " failure");
}

}  // namespace

std::string_view FaultOpName(FaultOp op) {
  switch (op) {
    case FaultOp::kAppend:
      return "append";
    case FaultOp::kSync:
      return "sync";
    case FaultOp::kRename:
      return "rename";
    case FaultOp::kCreate:
      return "create";
  }
  return "?";
}

std::string_view FileKindName(FileKind kind) {
  switch (kind) {
    case FileKind::kLog:
      return "log";
    case FileKind::kTable:
      return "table";
    case FileKind::kManifest:
      return "manifest";
    case FileKind::kCurrent:
      return "current";
    case FileKind::kOther:
      return "other";
  }
  return "?";
}

FileKind ClassifyFile(std::string_view path) {
  const size_t slash = path.find_last_of('/');
  const std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  if (NumberedWithSuffix(name, ".log")) return FileKind::kLog;
  if (NumberedWithSuffix(name, ".ldb") || NumberedWithSuffix(name, ".sst")) {
    return FileKind::kTable;
  }
  if (name.substr(0, 9) == "MANIFEST-" && AllDigits(name.substr(9))) return FileKind::kManifest;
  if (name == "CURRENT" || NumberedWithSuffix(name, ".dbtmp")) return FileKind::kCurrent;
  return FileKind::kOther;
}

uint64_t FaultCounters::Calls(FaultOp op, std::optional<FileKind> kind) const {
  const auto& row = calls[static_cast<size_t>(op)];
  if (kind) return row[static_cast<size_t>(*kind)];
  uint64_t n = 0;
  for (uint64_t c : row) n += c;
  return n;
}

uint64_t FaultCounters::Injected(FaultOp op, std::optional<FileKind> kind) const {
  const auto& row = injected[static_cast<size_t>(op)];
  if (kind) return row[static_cast<size_t>(*kind)];
  uint64_t n = 0;
  for (uint64_t c : row) n += c;
  return n;
}

uint64_t FaultCounters::TotalInjected() const {
  uint64_t n = 0;
  for (size_t op = 0; op < kFaultOpCount; ++op) n += Injected(static_cast<FaultOp>(op));
  return n;
}

std::string FaultCounters::InjectedSummary() const {
  std::string out;
  for (size_t op = 0; op < kFaultOpCount; ++op) {
    for (size_t kind = 0; kind < kFileKindCount; ++kind) {
      if (injected[op][kind] == 0) continue;
      if (!out.empty()) out += ' ';
      out += std::string(FaultOpName(static_cast<FaultOp>(op))) + "/" +
             std::string(FileKindName(static_cast<FileKind>(kind))) + "=" +
             std::to_string(injected[op][kind]);
    }
  }
  return out.empty() ? "none" : out;
}

FaultEnv::FaultEnv(leveldb::Env* base) : EnvWrapper(base) {}
FaultEnv::~FaultEnv() = default;

void FaultEnv::Inject(const FaultRule& rule) {
  std::lock_guard<std::mutex> lock(mu_);
  rules_.push_back(Armed{rule});
}

void FaultEnv::FailNth(FaultOp op, uint64_t n, std::optional<FileKind> kind) {
  FaultRule rule;
  rule.op = op;
  rule.kind = kind;
  rule.skip = n == 0 ? 0 : n - 1;
  rule.times = 1;
  Inject(rule);
}

void FaultEnv::FailFromNow(FaultOp op, std::optional<FileKind> kind) {
  FaultRule rule;
  rule.op = op;
  rule.kind = kind;
  rule.times = FaultRule::kForever;
  Inject(rule);
}

void FaultEnv::SetDiskFull(bool full) {
  std::lock_guard<std::mutex> lock(mu_);
  disk_full_ = full;
}

void FaultEnv::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  rules_.clear();
  disk_full_ = false;
}

bool FaultEnv::armed() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (disk_full_) return true;
  for (const Armed& a : rules_) {
    if (a.failed < a.rule.times) return true;
  }
  return false;
}

FaultCounters FaultEnv::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

void FaultEnv::ResetCounters() {
  std::lock_guard<std::mutex> lock(mu_);
  counters_ = FaultCounters{};
}

leveldb::Status FaultEnv::Check(FaultOp op, FileKind kind, const std::string& fname, bool* torn) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t o = static_cast<size_t>(op);
  const size_t k = static_cast<size_t>(kind);
  ++counters_.calls[o][k];
  // A full disk refuses writes and new files; a rename needs no new space.
  if (disk_full_ && op != FaultOp::kRename) {
    ++counters_.injected[o][k];
    return Injected(op, fname, true);
  }
  // Every matching rule sees the call, so "the nth from now" counts calls,
  // not only those that an earlier rule let through.
  bool fire = false;
  FaultRule fired;
  for (Armed& a : rules_) {
    if (a.rule.op != op || (a.rule.kind && *a.rule.kind != kind)) continue;
    if (a.failed >= a.rule.times) continue;
    if (a.skipped < a.rule.skip) {
      ++a.skipped;
      continue;
    }
    if (fire) continue;
    ++a.failed;
    fire = true;
    fired = a.rule;
  }
  if (!fire) return leveldb::Status::OK();
  ++counters_.injected[o][k];
  *torn = fired.torn && op == FaultOp::kAppend;
  return Injected(op, fname, fired.disk_full);
}

leveldb::Status FaultEnv::CheckFlush(FileKind kind, const std::string& fname) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!disk_full_) return leveldb::Status::OK();
  ++counters_.injected[static_cast<size_t>(FaultOp::kAppend)][static_cast<size_t>(kind)];
  return Injected(FaultOp::kAppend, fname, true);
}

leveldb::Status FaultEnv::NewWritableFile(const std::string& fname,
                                          leveldb::WritableFile** result) {
  bool torn = false;
  *result = nullptr;
  leveldb::Status s = Check(FaultOp::kCreate, ClassifyFile(fname), fname, &torn);
  if (!s.ok()) return s;
  leveldb::WritableFile* base = nullptr;
  s = target()->NewWritableFile(fname, &base);
  if (!s.ok()) return s;
  *result = new FaultFile(this, std::unique_ptr<leveldb::WritableFile>(base), fname);
  return s;
}

leveldb::Status FaultEnv::NewAppendableFile(const std::string& fname,
                                            leveldb::WritableFile** result) {
  bool torn = false;
  *result = nullptr;
  leveldb::Status s = Check(FaultOp::kCreate, ClassifyFile(fname), fname, &torn);
  if (!s.ok()) return s;
  leveldb::WritableFile* base = nullptr;
  s = target()->NewAppendableFile(fname, &base);
  if (!s.ok()) return s;
  *result = new FaultFile(this, std::unique_ptr<leveldb::WritableFile>(base), fname);
  return s;
}

leveldb::Status FaultEnv::RenameFile(const std::string& src, const std::string& target_name) {
  bool torn = false;
  leveldb::Status s = Check(FaultOp::kRename, ClassifyFile(target_name), target_name, &torn);
  if (!s.ok()) return s;
  return target()->RenameFile(src, target_name);
}

}  // namespace tipd::storage
