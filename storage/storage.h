// storage/: one LevelDB per data dir behind small typed stores, and a group
// committer that turns many callers' writes into few synced LevelDB writes.
//
// Callers include only this header. Start with `Database` (open, point reads,
// range scans, synced writes), then `GroupCommitter` (how a write becomes
// durable before anything depending on it is promised), then the typed stores
// at the bottom (`ChannelStore`, `DirectionStore`, `TipHistoryStore`,
// `MetaStore`) built on `RecordStore<Proto>`. docs/storage.md describes the
// key layout, record versioning and the durability guarantees.
//
// Thread safety: `Database`, `GroupCommitter` and every store are safe to use
// from many threads at once. A `WriteBatch` is a plain value: one thread at a
// time.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tipd/ledger.pb.h"
#include "tipd/storage.pb.h"
#include "util/status.h"

namespace leveldb {
class DB;
class Env;
class Snapshot;
class WriteBatch;
}  // namespace leveldb

namespace tipd::storage {

// ---------------------------------------------------------------------------
// WriteBatch: Puts and Deletes applied all-or-nothing.

class WriteBatch {
 public:
  WriteBatch();
  ~WriteBatch();
  WriteBatch(WriteBatch&&) noexcept;
  WriteBatch& operator=(WriteBatch&&) noexcept;
  WriteBatch(const WriteBatch&) = delete;
  WriteBatch& operator=(const WriteBatch&) = delete;

  void Put(std::string_view key, std::string_view value);
  void Delete(std::string_view key);
  // Appends every operation of `other`, in order, after this batch's own.
  void Append(const WriteBatch& other);
  void Clear();

  // Number of Put and Delete operations.
  size_t count() const { return count_; }
  bool empty() const { return count_ == 0; }
  // Size of the encoded batch: what it adds to the LevelDB log.
  size_t ApproximateBytes() const;

 private:
  friend class Database;
  std::unique_ptr<leveldb::WriteBatch> rep_;
  size_t count_ = 0;
};

// ---------------------------------------------------------------------------
// Database: one LevelDB in one directory.

struct Options {
  // Creates the directory and an empty database if none exists.
  bool create_if_missing = true;
  // Refuses to open, and fails reads, on any detected corruption instead of
  // silently skipping damaged data.
  bool paranoid_checks = true;
  size_t block_cache_bytes = 32 << 20;
  size_t write_buffer_bytes = 16 << 20;
  int max_open_files = 512;
  // Bits per key of the Bloom filter on table files (0 = no filter).
  int bloom_bits_per_key = 10;
  // Seam for fault injection in tests: every file access of the database goes
  // through this Env. nullptr = the real filesystem. Not owned; must outlive
  // the Database.
  leveldb::Env* env = nullptr;
};

class Database {
 public:
  // Opens (or, with create_if_missing, creates) the database in `path`.
  // Errors name the path: kUnavailable if another process (or another
  // Database in this one) holds the directory's lock, kCorruption if the
  // stored data is damaged, kIOError otherwise.
  static Result<std::unique_ptr<Database>> Open(const std::filesystem::path& path,
                                                const Options& options = {});
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Options::write_buffer_bytes as opened.
  size_t write_buffer_bytes() const;

  // The value stored at `key`, or nullopt if there is none.
  Result<std::optional<std::string>> Get(std::string_view key) const;

  // Called once per entry in key order. Returning a non-OK Status stops the
  // scan and becomes Scan's result.
  using ScanVisitor = std::function<Status(std::string_view key, std::string_view value)>;

  // Visits the entries with start <= key < end_exclusive in key order, at
  // most `limit` of them. An empty `end_exclusive` means "to the end of the
  // database". Reads a consistent snapshot taken when the scan starts.
  Status Scan(std::string_view start, std::string_view end_exclusive, size_t limit,
              const ScanVisitor& visit) const;
  // Visits the entries whose key starts with `prefix`, at most `limit`.
  Status ScanPrefix(std::string_view prefix, size_t limit, const ScanVisitor& visit) const;

  // Applies `batch` atomically and returns once it is synced to disk. Prefer
  // a GroupCommitter when many writers commit concurrently.
  // A failed write is sticky: it and every later Write on this handle fail
  // (the first error, saying so), since the log's tail is then undefined.
  // Reads keep working; reopening the database recovers every write that
  // returned OK, and the failed one entirely or not at all.
  Status Write(const WriteBatch& batch);
  // OK, or the error every Write now fails with.
  Status write_health() const;

  // A read view of the whole database frozen at the moment it was taken:
  // writes made later (by any thread) are invisible to scans through it. Cheap
  // to take (LevelDB pins the sequence number, nothing is copied); files the
  // view still needs are kept until it is released. Used for online backups
  // (node/backup.h): a long scan through a snapshot sees one consistent state
  // while the node keeps writing. REQUIRES: the Database outlives it.
  class Snapshot {
   public:
    ~Snapshot();
    Snapshot(const Snapshot&) = delete;
    Snapshot& operator=(const Snapshot&) = delete;

   private:
    friend class Database;
    Snapshot(leveldb::DB* db, const leveldb::Snapshot* snapshot) : db_(db), snapshot_(snapshot) {}
    leveldb::DB* db_;
    const leveldb::Snapshot* snapshot_;
  };
  std::unique_ptr<Snapshot> NewSnapshot() const;
  // Scan, reading `snapshot`'s view instead of the current state. Safe from
  // any thread while other threads write.
  Status ScanSnapshot(const Snapshot& snapshot, std::string_view start,
                      std::string_view end_exclusive, size_t limit, const ScanVisitor& visit) const;

 private:
  Status ScanAt(const leveldb::Snapshot* snapshot, std::string_view start,
                std::string_view end_exclusive, size_t limit, const ScanVisitor& visit) const;

  // The block cache and filter policy LevelDB uses but does not own.
  struct Owned;
  Database(std::filesystem::path path, std::unique_ptr<Owned> owned,
           std::unique_ptr<leveldb::DB> db);

  std::filesystem::path path_;
  // Declared before db_ so it is destroyed after it.
  std::unique_ptr<Owned> owned_;
  std::unique_ptr<leveldb::DB> db_;
  mutable std::mutex write_error_mu_;
  Status write_error_;  // guarded by write_error_mu_; sticky once set
};

// ---------------------------------------------------------------------------
// GroupCommitter: batched, synced writes.
//
// Callers Submit() WriteBatches from any thread. One writer thread takes
// everything pending (up to a bound), merges it into one LevelDB batch, writes
// it with sync, and only after the sync has returned calls each submission's
// completion with the result. Each submission is atomic (it is never split
// across two LevelDB writes), and submissions become durable in the order they
// were submitted.
//
// A failed write is sticky: its submissions and every later one complete with
// that error, and nothing more is written. Whatever failed the disk may have
// left the last write's durability unknown, so the node must not keep making
// promises that depend on storage; it should stop and restart from what the
// database holds.

// What one synced LevelDB write carried.
struct CommitBatchInfo {
  size_t submissions = 0;                    // caller batches merged into this write
  size_t writes = 0;                         // Put/Delete operations
  size_t bytes = 0;                          // encoded batch size
  std::chrono::nanoseconds sync_latency{0};  // time spent in the synced write
  bool ok = true;
};

// Cumulative counters since construction. A snapshot; cheap to take.
struct CommitStats {
  uint64_t batches = 0;      // synced LevelDB writes issued
  uint64_t submissions = 0;  // caller batches completed successfully
  uint64_t writes = 0;       // Put/Delete operations made durable
  uint64_t bytes = 0;        // encoded bytes made durable
  uint64_t failed_submissions = 0;
  uint64_t max_batch_writes = 0;
  std::chrono::nanoseconds total_sync_latency{0};
  std::chrono::nanoseconds max_sync_latency{0};
  bool failed = false;  // the sticky failure has happened
};

struct GroupCommitOptions {
  // A merged write stops taking more submissions once adding the next would
  // exceed either bound; the rest go in the next write. A single submission
  // larger than a bound is written alone.
  size_t max_writes_per_batch = 8192;
  size_t max_bytes_per_batch = 8 << 20;
  // Called on the writer thread after every synced write (successful or not)
  // and before that write's completions fire; for metrics (batch size and
  // sync latency histograms). It delays every pending writer while it runs,
  // so it must be quick; it must not call SubmitAndWait or Stop.
  std::function<void(const CommitBatchInfo&)> on_batch;
};

class GroupCommitter {
 public:
  // Called exactly once with the outcome of one submission.
  using Completion = std::function<void(Status)>;

  // Starts the writer thread. REQUIRES: `db` outlives this object.
  explicit GroupCommitter(Database* db, GroupCommitOptions options = {});
  // Stop()s.
  ~GroupCommitter();
  GroupCommitter(const GroupCommitter&) = delete;
  GroupCommitter& operator=(const GroupCommitter&) = delete;

  // Queues `batch`. `on_durable` is called exactly once: on the writer thread
  // with OK once the batch is synced, or with the write's error (or the
  // earlier sticky error). If Stop() has already begun, it is instead called
  // before Submit returns, with kFailedPrecondition (naming the sticky error
  // too, if a write had failed) — so a caller must not hold a lock the
  // completion needs when it calls Submit.
  // Completions run on the writer thread and delay later writes: keep them
  // short, and never call SubmitAndWait or Stop from one.
  void Submit(WriteBatch batch, Completion on_durable);

  // Submits and blocks until the batch is durable (or failed).
  // REQUIRES: not called from a completion or the on_batch hook.
  Status SubmitAndWait(WriteBatch batch);

  // Writes everything already submitted, completes it, and joins the writer
  // thread. Later submissions fail with kFailedPrecondition. Idempotent.
  // REQUIRES: not called from a completion or the on_batch hook.
  void Stop();

  CommitStats stats() const;
  // Submissions whose completion has not returned yet.
  size_t outstanding() const;
  // OK, or the sticky error every submission now fails with.
  Status health() const;

 private:
  struct Pending {
    WriteBatch batch;
    Completion on_durable;
  };

  void WriterLoop();

  Database* const db_;
  const GroupCommitOptions options_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // signalled on Submit and Stop
  std::deque<Pending> queue_;        // guarded by mu_
  size_t outstanding_ = 0;           // guarded by mu_
  bool stopping_ = false;            // guarded by mu_
  Status sticky_error_;              // guarded by mu_
  CommitStats stats_;                // guarded by mu_
  std::mutex stop_mu_;               // serializes Stop() callers around join
  std::thread writer_;
  std::thread::id writer_id_;  // set once in the constructor
};

// ---------------------------------------------------------------------------
// Keys. Every key starts with one byte naming its record family; the rest is
// fixed-width and big-endian so that lexicographic (LevelDB) order is numeric
// order. The full layout is in docs/storage.md.

enum class KeyFamily : char {
  kMeta = 'M',             // node metadata: 'M' name
  kChannel = 'C',          // StoredChannel: 'C' channel_id[32]
  kDirection = 'D',        // StoredDirection: 'D' channel_id[32] direction[1]
  kTip = 'T',              // StoredTip: 'T' channel_id[32] direction[1] index[8 BE]
  kReceipt = 'R',          // StoredReceipt: 'R' channel_id[32] direction[1] (node/channel_db.h)
  kOutgoingUpdate = 'O',   // StoredOutgoingUpdate: 'O' channel_id[32] nonce[8 BE]
  kIdempotency = 'I',      // StoredIdempotentResult: 'I' kind '/' key (node/node_api.h)
  kPeer = 'P',             // StoredPeer: 'P' node_id[33] (node/node_api.h)
  kEvent = 'E',            // StoredEvent: 'E' id[8 BE] (node/events.h), newest N kept
  kToken = 'K',            // StoredToken: 'K' token_id[16] (api/token_registry.h)
  kWebhook = 'W',          // StoredWebhook: 'W' webhook_id[16] (api/webhooks.h)
  kWebhookDelivery = 'V',  // StoredWebhookDelivery: 'V' webhook_id[16] seq[8 BE]
  // Reserved for ledger/ (layout chosen there, documented in docs/storage.md).
  kBlock = 'B',         // block by height
  kTx = 'X',            // transaction by id
  kAccount = 'A',       // AccountState by x-only key
  kChannelState = 'H',  // ledger ChannelState by channel id
};

// Which way a channel direction's tips flow, from this node's point of view.
enum class Direction : uint8_t {
  kLocalToRemote = 0,
  kRemoteToLocal = 1,
};

inline constexpr size_t kChannelIdSize = 32;

// Appends `v` as 8 big-endian bytes.
void AppendBigEndian64(std::string* out, uint64_t v);
// Renders a key for error messages: printable ASCII as is, other bytes \xNN.
std::string EscapeKey(std::string_view key);
// The smallest key greater than every key starting with `prefix`, or "" if
// there is none (the prefix is all 0xff).
std::string PrefixEnd(std::string_view prefix);

// kInvalidArgument unless `channel_id` is exactly kChannelIdSize bytes.
Status CheckChannelId(std::string_view channel_id);

// Key builders. REQUIRES: CheckChannelId(channel_id).ok().
std::string MetaKey(std::string_view name);
std::string ChannelKey(std::string_view channel_id);
std::string DirectionKey(std::string_view channel_id, Direction direction);
// The prefix shared by every tip of one direction; TipKey = prefix + index.
std::string TipPrefix(std::string_view channel_id, Direction direction);
std::string TipKey(std::string_view channel_id, Direction direction, uint64_t index);

// ---------------------------------------------------------------------------
// RecordStore<Proto>: versioned protobuf records under caller-built keys.
//
// Every record message has `uint32 version = 1`. Put stamps kCurrentVersion;
// Get accepts versions 1..kCurrentVersion (older versions are read by the
// protobuf compatibility rules: added fields read as defaults) and refuses
// anything else — a newer version written by a later build, version 0 (field
// missing), or bytes that do not parse — with kCorruption naming the key and
// the reason. Bump kCurrentVersion when a record's meaning changes.

namespace internal {
// Checks a parsed record's version; kCorruption naming key and type if bad.
Status CheckRecordVersion(std::string_view key, std::string_view type_name, uint32_t version,
                          uint32_t current_version);
Status UnparsableRecord(std::string_view key, std::string_view type_name, size_t size);
}  // namespace internal

template <class Proto, uint32_t kCurrent = 1>
class RecordStore {
 public:
  static constexpr uint32_t kCurrentVersion = kCurrent;

  // REQUIRES: `db` outlives this object.
  explicit RecordStore(Database* db) : db_(db) {}

  static std::string Encode(Proto record) {
    record.set_version(kCurrentVersion);
    std::string bytes;
    // Serialization of a well-formed message only fails past 2 GiB.
    const bool serialized = record.SerializeToString(&bytes);
    assert(serialized);
    (void)serialized;
    return bytes;
  }

  static Result<Proto> Decode(std::string_view key, std::string_view bytes) {
    Proto record;
    if (!record.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      return internal::UnparsableRecord(key, Proto::descriptor()->name(), bytes.size());
    }
    TIPD_RETURN_IF_ERROR(internal::CheckRecordVersion(key, Proto::descriptor()->name(),
                                                      record.version(), kCurrentVersion));
    return record;
  }

  // Adds the record, stamped with kCurrentVersion, to `batch`.
  void Put(WriteBatch* batch, std::string_view key, const Proto& record) const {
    batch->Put(key, Encode(record));
  }

  Result<std::optional<Proto>> Get(std::string_view key) const {
    TIPD_ASSIGN_OR_RETURN(std::optional<std::string> bytes, db_->Get(key));
    if (!bytes) return std::optional<Proto>();
    TIPD_ASSIGN_OR_RETURN(Proto record, Decode(key, *bytes));
    return std::optional<Proto>(std::move(record));
  }

  // Decodes the records with start <= key < end_exclusive, in key order, at
  // most `limit`. The first record that does not decode stops the scan and
  // its kCorruption is returned; a non-OK Status from `visit` likewise.
  Status Scan(std::string_view start, std::string_view end_exclusive, size_t limit,
              const std::function<Status(std::string_view key, Proto record)>& visit) const {
    return db_->Scan(start, end_exclusive, limit,
                     [&](std::string_view key, std::string_view value) -> Status {
                       TIPD_ASSIGN_OR_RETURN(Proto record, Decode(key, value));
                       return visit(key, std::move(record));
                     });
  }

  Database* db() const { return db_; }

 private:
  Database* db_;
};

// ---------------------------------------------------------------------------
// Typed stores for the node's channel records. Writes go into a caller's
// WriteBatch so one update (direction + its tips) commits atomically; reads
// go straight to the database.

// The node's identity and chain, written once at init.
class MetaStore {
 public:
  explicit MetaStore(Database* db) : records_(db) {}
  void Put(WriteBatch* batch, const tipd::v1::NodeMeta& meta) const;
  Result<std::optional<tipd::v1::NodeMeta>> Get() const;

 private:
  RecordStore<tipd::v1::NodeMeta> records_;
};

class ChannelStore {
 public:
  explicit ChannelStore(Database* db) : records_(db) {}
  // Keyed by channel.channel_id(); kInvalidArgument if it is not 32 bytes.
  Status Put(WriteBatch* batch, const tipd::v1::StoredChannel& channel) const;
  Result<std::optional<tipd::v1::StoredChannel>> Get(std::string_view channel_id) const;
  // Every stored channel, in channel id order.
  Result<std::vector<tipd::v1::StoredChannel>> List() const;

 private:
  RecordStore<tipd::v1::StoredChannel> records_;
};

class DirectionStore {
 public:
  explicit DirectionStore(Database* db) : records_(db) {}
  Status Put(WriteBatch* batch, std::string_view channel_id, Direction direction,
             const tipd::v1::StoredDirection& state) const;
  Result<std::optional<tipd::v1::StoredDirection>> Get(std::string_view channel_id,
                                                       Direction direction) const;

 private:
  RecordStore<tipd::v1::StoredDirection> records_;
};

// Per-direction tip history, keyed by tip index.
// Where a stored tip is: its channel, direction and index.
struct TipPosition {
  std::string channel_id;
  Direction direction = Direction::kLocalToRemote;
  uint64_t index = 0;
};

class TipHistoryStore {
 public:
  explicit TipHistoryStore(Database* db) : db_(db), records_(db) {}
  // Adds each tip under its tip.tip().index(). kInvalidArgument (and nothing
  // added to `batch`) if the channel id is malformed.
  Status Append(WriteBatch* batch, std::string_view channel_id, Direction direction,
                const std::vector<tipd::v1::StoredTip>& tips) const;
  Result<std::optional<tipd::v1::StoredTip>> Get(std::string_view channel_id, Direction direction,
                                                 uint64_t index) const;
  // The stored tips with from_index <= index < from_index + limit, in index
  // order (gaps are skipped, not filled). kCorruption if a record's own index
  // disagrees with its key.
  Result<std::vector<tipd::v1::StoredTip>> ReadRange(std::string_view channel_id,
                                                     Direction direction, uint64_t from_index,
                                                     size_t limit) const;
  // The first stored tip at or after (channel_id, direction, from_index) in
  // key order (channel id, direction, index), in any channel; nullopt if
  // there is none. An empty channel_id starts at the very first tip. One
  // seek: empty channels and directions in between cost nothing, which keeps
  // GET /v1/tips independent of how many channels have no history.
  Result<std::optional<TipPosition>> FirstFrom(std::string_view channel_id, Direction direction,
                                               uint64_t from_index) const;
  // The first stored tip of a channel after `channel_id` (its id is larger).
  Result<std::optional<TipPosition>> FirstAfterChannel(std::string_view channel_id) const;

 private:
  Result<std::optional<TipPosition>> FirstAtOrAfterKey(const std::string& start) const;

  Database* db_;
  RecordStore<tipd::v1::StoredTip> records_;
};

}  // namespace tipd::storage
