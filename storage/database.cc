#include <leveldb/cache.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/filter_policy.h>
#include <leveldb/iterator.h>
#include <leveldb/options.h>
#include <leveldb/write_batch.h>

#include <mutex>
#include <string>

#include "storage/storage.h"
#include "util/thread_name.h"

namespace tipd::storage {
namespace {

leveldb::Slice ToSlice(std::string_view s) { return leveldb::Slice(s.data(), s.size()); }
std::string_view ToView(const leveldb::Slice& s) { return std::string_view(s.data(), s.size()); }

// Maps a LevelDB error onto ours, naming the database directory and what was
// being done.
Status FromLevelDb(const leveldb::Status& s, const std::filesystem::path& path,
                   std::string_view what) {
  std::string message = std::string(what) + " in database " + path.string() + ": " + s.ToString();
  if (s.IsCorruption()) return Status::Corruption(std::move(message));
  if (s.IsNotFound()) return Status::NotFound(std::move(message));
  if (s.IsInvalidArgument() || s.IsNotSupportedError()) {
    return Status::InvalidArgument(std::move(message));
  }
  return Status::IOError(std::move(message));
}

}  // namespace

struct Database::Owned {
  std::unique_ptr<leveldb::Cache> block_cache;
  std::unique_ptr<const leveldb::FilterPolicy> filter_policy;
  std::unique_ptr<leveldb::Env> env;
  size_t write_buffer_bytes = 0;
};

Database::Database(std::filesystem::path path, std::unique_ptr<Owned> owned,
                   std::unique_ptr<leveldb::DB> db)
    : path_(std::move(path)), owned_(std::move(owned)), db_(std::move(db)) {}

Database::~Database() {
  // LevelDB must be closed before the cache and filter policy it uses.
  db_.reset();
}

namespace {

// Passes everything to `target` and names the threads LevelDB starts for
// its background work (compactions) "tipd-leveldb": otherwise they inherit
// the name of whichever thread first wrote, and `top -H` would show
// compactions as the group committer's time.
class NamingEnv final : public leveldb::EnvWrapper {
 public:
  explicit NamingEnv(leveldb::Env* target) : leveldb::EnvWrapper(target) {}

#if !defined(__SANITIZE_THREAD__)
  // Not under ThreadSanitizer: LevelDB is not instrumented, and with this
  // frame between its Schedule and its mutex TSan attributes the unlock to
  // tipd and reports an unlock of an unlocked mutex (scripts/tsan.supp
  // ignores what LevelDB calls itself). The threads then keep their names.
  void Schedule(void (*function)(void*), void* arg) override {
    target()->Schedule(&Run, new Call{function, arg});
  }
  void StartThread(void (*function)(void*), void* arg) override {
    target()->StartThread(&Run, new Call{function, arg});
  }
#endif

 private:
  struct Call {
    void (*function)(void*);
    void* arg;
  };
  static void Run(void* p) {
    const Call call = *static_cast<Call*>(p);
    delete static_cast<Call*>(p);
    thread_local bool named = false;
    if (!named) {
      SetThreadName("tipd-leveldb");
      named = true;
    }
    call.function(call.arg);
  }
};

}  // namespace

Result<std::unique_ptr<Database>> Database::Open(const std::filesystem::path& path,
                                                 const Options& options) {
  auto owned = std::make_unique<Owned>();
  owned->block_cache.reset(leveldb::NewLRUCache(options.block_cache_bytes));
  if (options.bloom_bits_per_key > 0) {
    owned->filter_policy.reset(leveldb::NewBloomFilterPolicy(options.bloom_bits_per_key));
  }

  leveldb::Options ldb;
  ldb.create_if_missing = options.create_if_missing;
  ldb.paranoid_checks = options.paranoid_checks;
  ldb.block_cache = owned->block_cache.get();
  ldb.filter_policy = owned->filter_policy.get();
  ldb.write_buffer_size = options.write_buffer_bytes;
  owned->write_buffer_bytes = options.write_buffer_bytes;
  ldb.max_open_files = options.max_open_files;
  owned->env =
      std::make_unique<NamingEnv>(options.env != nullptr ? options.env : leveldb::Env::Default());
  ldb.env = owned->env.get();

  leveldb::DB* raw = nullptr;
  leveldb::Status s = leveldb::DB::Open(ldb, path.string(), &raw);
  if (!s.ok()) {
    const std::string text = s.ToString();
    // LevelDB reports a held lock as an IO error on the LOCK file; say what
    // it means, since it is the one open failure an operator causes.
    if (s.IsIOError() && text.find("/LOCK") != std::string::npos) {
      return Status::Unavailable("database " + path.string() +
                                 " is in use (its LOCK is held by another process or "
                                 "another open handle): " +
                                 text);
    }
    return FromLevelDb(s, path, "cannot open");
  }
  return std::unique_ptr<Database>(
      new Database(path, std::move(owned), std::unique_ptr<leveldb::DB>(raw)));
}

size_t Database::write_buffer_bytes() const { return owned_->write_buffer_bytes; }

Result<std::optional<std::string>> Database::Get(std::string_view key) const {
  leveldb::ReadOptions ro;
  ro.verify_checksums = true;
  std::string value;
  leveldb::Status s = db_->Get(ro, ToSlice(key), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return FromLevelDb(s, path_, "reading key " + EscapeKey(key));
  return std::optional<std::string>(std::move(value));
}

Database::Snapshot::~Snapshot() { db_->ReleaseSnapshot(snapshot_); }

std::unique_ptr<Database::Snapshot> Database::NewSnapshot() const {
  return std::unique_ptr<Snapshot>(new Snapshot(db_.get(), db_->GetSnapshot()));
}

Status Database::ScanSnapshot(const Snapshot& snapshot, std::string_view start,
                              std::string_view end_exclusive, size_t limit,
                              const ScanVisitor& visit) const {
  return ScanAt(snapshot.snapshot_, start, end_exclusive, limit, visit);
}

Status Database::Scan(std::string_view start, std::string_view end_exclusive, size_t limit,
                      const ScanVisitor& visit) const {
  // The iterator reads an implicit snapshot taken when it is created.
  return ScanAt(nullptr, start, end_exclusive, limit, visit);
}

Status Database::ScanAt(const leveldb::Snapshot* snapshot, std::string_view start,
                        std::string_view end_exclusive, size_t limit,
                        const ScanVisitor& visit) const {
  leveldb::ReadOptions ro;
  ro.verify_checksums = true;
  ro.snapshot = snapshot;
  // A range read is usually history the caller pages through once; do not
  // let it evict the hot point-read working set.
  ro.fill_cache = false;
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(ro));
  size_t visited = 0;
  for (it->Seek(ToSlice(start)); it->Valid() && visited < limit; it->Next()) {
    std::string_view key = ToView(it->key());
    if (!end_exclusive.empty() && key >= end_exclusive) break;
    TIPD_RETURN_IF_ERROR(visit(key, ToView(it->value())));
    ++visited;
  }
  if (!it->status().ok()) {
    return FromLevelDb(it->status(), path_, "scanning from key " + EscapeKey(start));
  }
  return Status::Ok();
}

Status Database::ScanPrefix(std::string_view prefix, size_t limit, const ScanVisitor& visit) const {
  const std::string end = PrefixEnd(prefix);
  // PrefixEnd is "" only for an all-0xff prefix, where "" means "to the end".
  return Scan(prefix, end, limit, visit);
}

Status Database::Write(const WriteBatch& batch) {
  {
    std::lock_guard<std::mutex> lock(write_error_mu_);
    if (!write_error_.ok()) return write_error_;
  }
  leveldb::WriteOptions wo;
  wo.sync = true;
  leveldb::Status s = db_->Write(wo, batch.rep_.get());
  if (s.ok()) return Status::Ok();
  Status failed = FromLevelDb(s, path_, "synced write failed");
  // LevelDB stops writing after a failed sync, but not after a failed log
  // append: a record appended after a torn one would make the log unreadable
  // at the next open (paranoid checks refuse it). So no write follows a
  // failed one through this handle; reopening recovers what was written.
  std::lock_guard<std::mutex> lock(write_error_mu_);
  if (write_error_.ok()) {
    write_error_ = Status(failed.code(), failed.message() +
                                             "; this database accepts no more writes until it "
                                             "is reopened");
  }
  return write_error_;
}

Status Database::write_health() const {
  std::lock_guard<std::mutex> lock(write_error_mu_);
  return write_error_;
}

}  // namespace tipd::storage
