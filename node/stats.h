// StatsIndex: the indexed aggregates behind GET /v1/stats (docs/api.md,
// "Stats"). Tips are never scanned on a query: as the channel manager stages
// the tips of an update (sent or received) it also stages, in the same batch,
// the aggregate bucket(s) those tips fall in, and the index keeps every bucket
// in memory, ordered by minute, so a query walks only the buckets of its
// range.
//
// One bucket per minute x channel x direction x app_name (tip metadata key
// `app_name`): count and sum (refunds apart: a tip whose metadata holds
// `refund_of`), a sparse log-bucket amount histogram for the median, and the
// tips of each second (for the peak tips per second of any grouping). An
// update's tips usually land in one bucket: one Put per update, no read.
//
// Fees: after every block the manager hands the block to StageBlockFees,
// which counts the fee of each transaction this node signed against its
// channel (open, deposit, close/settle, proofs) and advances the progress
// height in the same batch, so a fee is counted once however the node stops.
// Start() backfills what the store lacks: the tips stored before this index
// existed (one scan of the history, once) and the fees of blocks after the
// progress height.
//
// Key layout ('G' family, docs/storage.md):
//   'G' 'b' minute[8 BE] channel_id[32] direction[1] app_name  StoredStatsBucket
//   'G' 'f' channel_id[32]                                     StoredChannelFees
//   'G' 'h'                                   StoredStatsProgress (fee height)
//   'G' 'v'                                   StoredStatsProgress (backfill done)
//
// Roll-ups (memory only, derived from the minute buckets at Load and kept up
// to date by StageTips): per hour and per day x channel x direction x
// app_name the count, sum, refunds and merged histogram, and per hour and per
// day the peak tips per second of every group a query can ask for (all, each
// channel, each app_name, each peer: the sum over the group's buckets of one
// second, maximised over the seconds of the period). Query reads whole days,
// then whole hours, and minute buckets only at the edges of its range, and
// answers exactly what the minute walk (QueryMinutes) answers.
//
// Threading: the manager's event thread only (stage, query, load).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "crypto/crypto.h"
#include "storage/storage.h"
#include "tipd/api.pb.h"
#include "tipd/ledger.pb.h"
#include "tipd/storage.pb.h"
#include "util/status.h"

namespace tipd::node {

// ---- Amount histogram (pure; exposed for tests) ----
// Amounts below 32 have a bucket each; above, 16 buckets per power of two,
// so a bucket's lower bound is within 1/16 of every amount in it.
inline constexpr uint32_t kAmountBuckets = 16 + 60 * 16;
uint32_t AmountBucket(uint64_t amount);
uint64_t AmountBucketLow(uint32_t bucket);
// The lower median (rank ceil(total/2)) of a histogram given as counts per
// bucket index: the lower bound of the bucket holding it. 0 when empty.
uint64_t HistogramMedian(const std::vector<uint64_t>& counts);

// The longest range a query may span.
inline constexpr uint64_t kMaxStatsRangeMs = 400ull * 24 * 3600 * 1000;

enum class StatsGroupBy { kNone, kPeer, kChannel, kAppName, kDay };
Result<StatsGroupBy> ParseStatsGroupBy(std::string_view text);
const char* StatsGroupByName(StatsGroupBy g);

enum class FeeKind { kOpen, kDeposit, kClose, kProofs };

class StatsIndex {
 public:
  // REQUIRES: `db` outlives the index.
  explicit StatsIndex(storage::Database* db);

  // Loads every stored bucket and fee record. If the backfill marker is
  // missing, first aggregates every stored tip (by its created_at_ms) and
  // writes the buckets with the marker in one synced write.
  Status Load();
  // Counts the fees of blocks (progress height, chain height] that `self`
  // signed (one synced write when any). `get_block` reads a stored block.
  Status BackfillFees(uint64_t chain_height, const crypto::XOnlyPubKey& self,
                      const std::function<Result<std::optional<v1::Block>>(uint64_t)>& get_block);

  // The channel's peer (hex), for group_by=peer.
  void NoteChannel(const std::string& channel_id, const std::string& peer_hex);

  // Aggregates `tips` of one update of `channel_id` in `direction`, stored at
  // `now_ms`, and stages the touched buckets into `batch`.
  void StageTips(storage::WriteBatch* batch, const std::string& channel_id,
                 storage::Direction direction,
                 const google::protobuf::RepeatedPtrField<v1::Tip>& tips, uint64_t now_ms);
  // Counts the fees `self` paid in `block` and stages them with the progress
  // height. False (nothing staged) if the block was counted before or holds
  // none of our fees and the progress need not move.
  bool StageBlockFees(storage::WriteBatch* batch, const v1::Block& block, std::string_view chain_id,
                      const crypto::XOnlyPubKey& self);

  // REQUIRES: from_ms < to_ms (the API checks the range).
  v1::StatsResponse Query(uint64_t from_ms, uint64_t to_ms, StatsGroupBy group_by) const;
  // The same answer from a walk of every minute bucket of the range (no
  // roll-ups): the reference for tests and the bench.
  v1::StatsResponse QueryMinutes(uint64_t from_ms, uint64_t to_ms, StatsGroupBy group_by) const;

  // Peers this node sent (or received) at least one tip with, for the
  // new-peer anomaly rule.
  std::set<std::string> PeersWithTips(storage::Direction direction) const;

  size_t bucket_count() const { return buckets_.size(); }
  size_t hour_rollup_count() const { return hours_.size(); }
  size_t day_rollup_count() const { return days_.size(); }
  uint64_t fee_height() const { return fee_height_; }

  struct Bucket {
    uint64_t count = 0;
    uint64_t sum = 0;
    uint64_t refund_count = 0;
    uint64_t refund_sum = 0;
    std::vector<std::pair<uint16_t, uint32_t>> histogram;  // bucket -> count, sorted
    std::vector<std::pair<uint8_t, uint32_t>> seconds;     // second -> tips, sorted
  };
  struct Key {
    uint64_t minute;
    uint32_t channel;  // index into channels_
    uint8_t direction;
    uint32_t app;  // index into apps_
    auto operator<=>(const Key&) const = default;
  };
  // An hour or a day of one channel x direction x app_name.
  struct Rollup {
    uint64_t count = 0;
    uint64_t sum = 0;
    uint64_t refund_count = 0;
    uint64_t refund_sum = 0;
    std::vector<std::pair<uint16_t, uint64_t>> histogram;  // bucket -> count, sorted
  };
  struct ChannelTotals {
    uint64_t tips[2] = {0, 0};  // per direction, refunds included
    uint64_t amount[2] = {0, 0};
  };

 private:
  uint32_t ChannelIndex(const std::string& channel_id);
  uint32_t AppIndex(const std::string& app);
  void Add(Bucket* b, uint64_t amount, bool refund, uint8_t second);
  void AddToRollups(const Key& minute_key, const Bucket& b);
  // Folds the per-second tips of `minute` (only `second` when >= 0) of every
  // group into the hourly and daily peaks of the kinds in `kinds` (bit k:
  // PeakKind k).
  void FoldPeaks(uint64_t minute, int second, unsigned kinds) const;
  void RebuildRollups();
  uint32_t PeerIndex(const std::string& peer_hex);
  // Group id of a bucket for `group_by` (channel, app, peer index; day
  // number; 0 for none) and its name.
  uint64_t GroupId(StatsGroupBy group_by, const Key& k, uint64_t day) const;
  std::string GroupName(StatsGroupBy group_by, uint64_t id) const;
  void AddFeesTo(v1::StatsResponse* out) const;
  static std::string BucketKey(uint64_t minute, const std::string& channel_id, uint8_t direction,
                               const std::string& app);
  std::string Encode(const Bucket& b) const;
  Status AddStored(std::string_view key, std::string_view value);
  void AddFee(const std::string& channel_id, FeeKind kind, uint64_t fee);

  storage::Database* db_;
  std::map<Key, Bucket> buckets_;
  // Key.minute holds the hour (minute / 60) or the day (minute / 1440).
  std::map<Key, Rollup> hours_;
  std::map<Key, Rollup> days_;
  // Peaks by [0 hour, 1 day][PeakKind]: (period, group id) -> tips/s.
  enum PeakKind { kPeakAll, kPeakChannel, kPeakApp, kPeakPeer, kPeakKinds };
  using PeakMap = std::map<std::pair<uint64_t, uint32_t>, uint64_t>;
  mutable PeakMap peaks_[2][kPeakKinds];
  // The peer peaks follow the channel -> peer map; a channel's peer noted
  // after its tips makes them stale until the next peer query rebuilds them.
  mutable bool peer_peaks_stale_ = false;
  std::vector<uint32_t> channel_peer_;  // channel index -> peer index
  std::vector<std::string> peer_names_;
  std::map<std::string, uint32_t> peer_index_;
  std::vector<std::string> channels_;  // channel id bytes by index
  std::map<std::string, uint32_t> channel_index_;
  std::vector<std::string> apps_;
  std::map<std::string, uint32_t> app_index_;
  // The two maps with an entry per channel (idle ones too) hold the 32-byte
  // channel id inline, not as a heap string (issue 11, docs/performance.md).
  // Ids of another size are not channels: never noted, never found.
  using ChannelKey = std::array<char, storage::kChannelIdSize>;
  static std::optional<ChannelKey> ToChannelKey(std::string_view channel_id);
  static std::string FromChannelKey(const ChannelKey& key) {
    return std::string(key.data(), key.size());
  }
  // Channel id -> peer index (peer_names_): one hex string per peer, not per
  // channel.
  std::map<ChannelKey, uint32_t> peers_;
  std::map<std::string, ChannelTotals> totals_;
  std::map<ChannelKey, v1::StoredChannelFees> fees_;
  uint64_t fee_height_ = 0;          // blocks counted (staged)
  uint64_t fee_height_written_ = 0;  // the progress height last staged
};

}  // namespace tipd::node
