// FaultEnv: a leveldb::Env that fails chosen file operations, for tests.
//
// LevelDB does every file access through an Env, and its own fault-injection
// tests wrap the real one (leveldb/db/fault_injection_test.cc); this is the
// same seam, for tipd's tests. Give it to a Database through
// `storage::Options::env` (the node takes one through NodeContext::Create's
// test-only argument):
//
//   storage::FaultEnv env;
//   storage::Options o;
//   o.env = &env;
//   auto db = storage::Database::Open(dir, o);
//   // the 3rd log sync from now fails:
//   env.FailNth(storage::FaultOp::kSync, 3, storage::FileKind::kLog);
//   // every append fails, until Clear():
//   env.FailFromNow(storage::FaultOp::kAppend);
//   // ENOSPC on every write, until SetDiskFull(false):
//   env.SetDiskFull(true);
//
// What can fail, and how it fails:
//  - kAppend: WritableFile::Append (data reaching the file). With `torn`, the
//    first half of the data is written before the error, as a short write on
//    a filling disk leaves it.
//  - kSync: WritableFile::Sync (fdatasync of a log, table, MANIFEST or the
//    temporary file that becomes CURRENT). Nothing is lost: the data stays
//    written, only its durability is unknown — as after a real failed fsync.
//  - kRename: Env::RenameFile (how LevelDB installs a new CURRENT).
//  - kCreate: Env::NewWritableFile / NewAppendableFile (a new log, table or
//    MANIFEST).
//  - disk full: every Append, Flush, Sync and file creation fails with
//    "No space left on device" until SetDiskFull(false).
// Every injected error is an IOError whose message contains "injected", so a
// test can tell it from a real one.
//
// Rules match by operation and, optionally, file kind. A rule first lets
// `skip` matching calls through, then fails the next `times` of them (kForever:
// until Clear()). Several rules may be armed; the first that fires wins.
//
// Thread-safe: LevelDB calls it from the writer and its compaction thread, the
// test from its own. Counters are cumulative since construction (or
// ResetCounters()).
#pragma once

#include <leveldb/env.h>

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tipd::storage {

enum class FaultOp : uint8_t { kAppend = 0, kSync = 1, kRename = 2, kCreate = 3 };
inline constexpr size_t kFaultOpCount = 4;

// The files of a LevelDB directory, by name.
enum class FileKind : uint8_t {
  kLog = 0,       // NNNNNN.log: the write-ahead log every write goes to first
  kTable = 1,     // NNNNNN.ldb / .sst: sorted tables written by compaction
  kManifest = 2,  // MANIFEST-NNNNNN: the table set, appended on every change
  kCurrent = 3,   // CURRENT and its temporary NNNNNN.dbtmp (renamed over it)
  kOther = 4,     // LOCK, LOG (info log) and anything else
};
inline constexpr size_t kFileKindCount = 5;

std::string_view FaultOpName(FaultOp op);
std::string_view FileKindName(FileKind kind);
// Classifies a path by its last component as LevelDB names its files.
FileKind ClassifyFile(std::string_view path);

struct FaultRule {
  static constexpr uint64_t kForever = UINT64_MAX;
  FaultOp op = FaultOp::kSync;
  std::optional<FileKind> kind;  // nullopt: any file
  uint64_t skip = 0;             // matching calls let through first
  uint64_t times = 1;            // matching calls failed after that
  bool torn = false;             // kAppend only: write the first half, then fail
  bool disk_full = false;        // the error reads as ENOSPC
};

// Calls seen and errors injected, per operation and file kind.
struct FaultCounters {
  std::array<std::array<uint64_t, kFileKindCount>, kFaultOpCount> calls{};
  std::array<std::array<uint64_t, kFileKindCount>, kFaultOpCount> injected{};

  uint64_t Calls(FaultOp op, std::optional<FileKind> kind = std::nullopt) const;
  uint64_t Injected(FaultOp op, std::optional<FileKind> kind = std::nullopt) const;
  uint64_t TotalInjected() const;
  // "append/log=2 sync/manifest=1", the non-zero injected counts, for reports.
  std::string InjectedSummary() const;
};

class FaultEnv final : public leveldb::EnvWrapper {
 public:
  // `base` must outlive this; the default is the real filesystem.
  explicit FaultEnv(leveldb::Env* base = leveldb::Env::Default());
  ~FaultEnv() override;

  // Arms a rule.
  void Inject(const FaultRule& rule);
  // Fails the `n`th (1-based) matching call from now, once.
  void FailNth(FaultOp op, uint64_t n, std::optional<FileKind> kind = std::nullopt);
  // Fails every matching call from now until Clear().
  void FailFromNow(FaultOp op, std::optional<FileKind> kind = std::nullopt);
  // ENOSPC on every Append, Flush, Sync and file creation while set.
  void SetDiskFull(bool full);
  // Disarms every rule and the disk-full state (the disk is healthy again).
  void Clear();
  // True while a rule still has failures to inject or the disk is full.
  bool armed() const;

  FaultCounters counters() const;
  void ResetCounters();

  // leveldb::Env
  leveldb::Status NewWritableFile(const std::string& fname,
                                  leveldb::WritableFile** result) override;
  leveldb::Status NewAppendableFile(const std::string& fname,
                                    leveldb::WritableFile** result) override;
  leveldb::Status RenameFile(const std::string& src, const std::string& target) override;

  // Called by the wrapped files. OK, or the error to return instead of the
  // call; `*torn` is set when an Append should write half its data first.
  leveldb::Status Check(FaultOp op, FileKind kind, const std::string& fname, bool* torn);
  // Flush has no rule of its own (it is the tail of an Append); it fails only
  // on a full disk.
  leveldb::Status CheckFlush(FileKind kind, const std::string& fname);

 private:
  struct Armed {
    FaultRule rule;
    uint64_t skipped = 0;
    uint64_t failed = 0;
  };

  mutable std::mutex mu_;
  std::vector<Armed> rules_;  // guarded by mu_
  bool disk_full_ = false;    // guarded by mu_
  FaultCounters counters_;    // guarded by mu_
};

}  // namespace tipd::storage
