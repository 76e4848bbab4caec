#include "node/stats.h"

#include <algorithm>
#include <bit>
#include <ctime>
#include <tuple>
#include <unordered_map>

#include "ledger/codec.h"
#include "util/bytes.h"

namespace tipd::node {

namespace {

constexpr char kFamily = 'G';
constexpr uint64_t kMinuteMs = 60'000;
constexpr uint64_t kDayMs = 24 * 3600 * 1000ull;
constexpr uint64_t kHourMinutes = 60;
constexpr uint64_t kDayMinutes = 24 * 60;
// The progress height is written at least this often even without fees, so a
// restart rescans few blocks.
constexpr uint64_t kProgressEvery = 1000;

std::string FeesKey(std::string_view channel_id) {
  std::string k{kFamily, 'f'};
  k.append(channel_id);
  return k;
}
const std::string kFeeHeightKey{kFamily, 'h'};
const std::string kBackfillKey{kFamily, 'v'};

using BucketStore = storage::RecordStore<v1::StoredStatsBucket>;
using FeesStore = storage::RecordStore<v1::StoredChannelFees>;
using ProgressStore = storage::RecordStore<v1::StoredStatsProgress>;

struct TipTraits {
  std::string app;
  bool refund = false;
};

TipTraits TraitsOf(const v1::Tip& tip) {
  TipTraits t;
  for (const v1::MetadataEntry& e : tip.metadata()) {
    if (e.key() == "app_name") t.app = e.value();
    if (e.key() == "refund_of") t.refund = true;
  }
  return t;
}

std::string DayOf(uint64_t minute) {
  const std::time_t secs = static_cast<std::time_t>(minute * 60);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
  return buf;
}

double Ratio(uint64_t a, uint64_t b) {
  return b == 0 ? 0.0 : static_cast<double>(a) / static_cast<double>(b);
}

uint64_t FeeTotal(const v1::StoredChannelFees& f) {
  return f.open() + f.deposit() + f.close() + f.proofs();
}

}  // namespace

// ---------------------------------------------------------------------------
// Histogram

uint32_t AmountBucket(uint64_t amount) {
  if (amount < 32) return static_cast<uint32_t>(amount);
  const int e = 63 - std::countl_zero(amount);  // >= 5
  const uint64_t mantissa = (amount >> (e - 4)) & 15;
  return static_cast<uint32_t>(32 + (e - 5) * 16 + mantissa);
}

uint64_t AmountBucketLow(uint32_t bucket) {
  if (bucket < 32) return bucket;
  const uint32_t e = (bucket - 32) / 16 + 5;
  const uint64_t mantissa = (bucket - 32) % 16;
  return (16 + mantissa) << (e - 4);
}

uint64_t HistogramMedian(const std::vector<uint64_t>& counts) {
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  if (total == 0) return 0;
  const uint64_t rank = (total + 1) / 2;
  uint64_t seen = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    seen += counts[i];
    if (seen >= rank) return AmountBucketLow(static_cast<uint32_t>(i));
  }
  return 0;  // unreachable
}

Result<StatsGroupBy> ParseStatsGroupBy(std::string_view text) {
  if (text.empty() || text == "none") return StatsGroupBy::kNone;
  if (text == "peer") return StatsGroupBy::kPeer;
  if (text == "channel") return StatsGroupBy::kChannel;
  if (text == "app_name") return StatsGroupBy::kAppName;
  if (text == "day") return StatsGroupBy::kDay;
  return Status::InvalidArgument("group_by must be peer, channel, app_name, day or none, got '" +
                                 std::string(text) + "'");
}

const char* StatsGroupByName(StatsGroupBy g) {
  switch (g) {
    case StatsGroupBy::kNone:
      return "none";
    case StatsGroupBy::kPeer:
      return "peer";
    case StatsGroupBy::kChannel:
      return "channel";
    case StatsGroupBy::kAppName:
      return "app_name";
    case StatsGroupBy::kDay:
      return "day";
  }
  return "none";
}

// ---------------------------------------------------------------------------
// Index

StatsIndex::StatsIndex(storage::Database* db) : db_(db) {}

std::optional<StatsIndex::ChannelKey> StatsIndex::ToChannelKey(std::string_view channel_id) {
  if (channel_id.size() != storage::kChannelIdSize) return std::nullopt;
  ChannelKey key;
  std::copy(channel_id.begin(), channel_id.end(), key.begin());
  return key;
}

uint32_t StatsIndex::ChannelIndex(const std::string& channel_id) {
  auto [it, added] = channel_index_.emplace(channel_id, static_cast<uint32_t>(channels_.size()));
  if (added) {
    channels_.push_back(channel_id);
    const std::optional<ChannelKey> key = ToChannelKey(channel_id);
    auto p = key ? peers_.find(*key) : peers_.end();
    channel_peer_.push_back(p == peers_.end() ? PeerIndex("unknown") : p->second);
  }
  return it->second;
}

uint32_t StatsIndex::PeerIndex(const std::string& peer_hex) {
  auto [it, added] = peer_index_.emplace(peer_hex, static_cast<uint32_t>(peer_names_.size()));
  if (added) peer_names_.push_back(peer_hex);
  return it->second;
}

uint32_t StatsIndex::AppIndex(const std::string& app) {
  auto [it, added] = app_index_.emplace(app, static_cast<uint32_t>(apps_.size()));
  if (added) apps_.push_back(app);
  return it->second;
}

void StatsIndex::NoteChannel(const std::string& channel_id, const std::string& peer_hex) {
  const std::optional<ChannelKey> key = ToChannelKey(channel_id);
  if (!key) return;  // not a channel id
  const uint32_t peer = PeerIndex(peer_hex);
  peers_[*key] = peer;
  auto c = channel_index_.find(channel_id);
  if (c == channel_index_.end()) return;  // no tips yet: ChannelIndex reads peers_
  if (channel_peer_[c->second] != peer) {
    channel_peer_[c->second] = peer;
    peer_peaks_stale_ = true;
  }
}

namespace {

template <typename Count>
void AddToHistogram(std::vector<std::pair<uint16_t, Count>>* h, uint16_t bucket, Count n) {
  auto it = std::lower_bound(h->begin(), h->end(), std::make_pair(bucket, Count{0}));
  if (it != h->end() && it->first == bucket) {
    it->second += n;
  } else {
    h->insert(it, {bucket, n});
  }
}

void AddToRollup(StatsIndex::Rollup* r, uint64_t amount, bool refund) {
  if (refund) {
    ++r->refund_count;
    r->refund_sum += amount;
  } else {
    ++r->count;
    r->sum += amount;
    AddToHistogram<uint64_t>(&r->histogram, static_cast<uint16_t>(AmountBucket(amount)), 1);
  }
}

}  // namespace

void StatsIndex::AddToRollups(const Key& k, const Bucket& b) {
  for (int level = 0; level < 2; ++level) {
    Key period = k;
    period.minute = k.minute / (level == 0 ? kHourMinutes : kDayMinutes);
    Rollup& r = (level == 0 ? hours_ : days_)[period];
    r.count += b.count;
    r.sum += b.sum;
    r.refund_count += b.refund_count;
    r.refund_sum += b.refund_sum;
    for (const auto& [bucket, n] : b.histogram) {
      AddToHistogram<uint64_t>(&r.histogram, bucket, n);
    }
  }
}

void StatsIndex::FoldPeaks(uint64_t minute, int second, unsigned kinds) const {
  struct Cell {
    uint8_t kind;
    uint32_t group;
    uint8_t second;
    uint64_t tips;
  };
  std::vector<Cell> cells;
  for (auto it = buckets_.lower_bound(Key{minute, 0, 0, 0});
       it != buckets_.end() && it->first.minute == minute; ++it) {
    const Key& k = it->first;
    const uint32_t group[kPeakKinds] = {0, k.channel, k.app, channel_peer_[k.channel]};
    for (const auto& [s, n] : it->second.seconds) {
      if (second >= 0 && s != second) continue;
      for (uint8_t kind = 0; kind < kPeakKinds; ++kind) {
        if ((kinds >> kind) & 1) cells.push_back(Cell{kind, group[kind], s, n});
      }
    }
  }
  std::sort(cells.begin(), cells.end(), [](const Cell& a, const Cell& b) {
    return std::tie(a.kind, a.group, a.second) < std::tie(b.kind, b.group, b.second);
  });
  for (size_t i = 0; i < cells.size();) {
    const Cell& c = cells[i];
    uint64_t tips = 0;
    for (; i < cells.size() && cells[i].kind == c.kind && cells[i].group == c.group &&
           cells[i].second == c.second;
         ++i) {
      tips += cells[i].tips;
    }
    for (int level = 0; level < 2; ++level) {
      const uint64_t period = minute / (level == 0 ? kHourMinutes : kDayMinutes);
      uint64_t& peak = peaks_[level][c.kind][{period, c.group}];
      peak = std::max(peak, tips);
    }
  }
}

void StatsIndex::RebuildRollups() {
  hours_.clear();
  days_.clear();
  for (auto& level : peaks_) {
    for (PeakMap& m : level) m.clear();
  }
  uint64_t minute = UINT64_MAX;
  for (const auto& [k, b] : buckets_) {
    AddToRollups(k, b);
    if (k.minute != minute) {
      minute = k.minute;
      FoldPeaks(minute, -1, (1u << kPeakKinds) - 1);
    }
  }
  peer_peaks_stale_ = false;
}

void StatsIndex::Add(Bucket* b, uint64_t amount, bool refund, uint8_t second) {
  if (refund) {
    ++b->refund_count;
    b->refund_sum += amount;
  } else {
    ++b->count;
    b->sum += amount;
    const auto bucket = static_cast<uint16_t>(AmountBucket(amount));
    auto it = std::lower_bound(b->histogram.begin(), b->histogram.end(),
                               std::make_pair(bucket, uint32_t{0}));
    if (it != b->histogram.end() && it->first == bucket) {
      ++it->second;
    } else {
      b->histogram.insert(it, {bucket, 1});
    }
  }
  // Tips arrive in time order: the second is almost always the last one.
  if (!b->seconds.empty() && b->seconds.back().first == second) {
    ++b->seconds.back().second;
  } else {
    auto it =
        std::lower_bound(b->seconds.begin(), b->seconds.end(), std::make_pair(second, uint32_t{0}));
    if (it != b->seconds.end() && it->first == second) {
      ++it->second;
    } else {
      b->seconds.insert(it, {second, 1});
    }
  }
}

std::string StatsIndex::BucketKey(uint64_t minute, const std::string& channel_id, uint8_t direction,
                                  const std::string& app) {
  std::string k{kFamily, 'b'};
  storage::AppendBigEndian64(&k, minute);
  k.append(channel_id);
  k.push_back(static_cast<char>(direction));
  k.append(app);
  return k;
}

std::string StatsIndex::Encode(const Bucket& b) const {
  v1::StoredStatsBucket r;
  r.set_count(b.count);
  r.set_sum(b.sum);
  r.set_refund_count(b.refund_count);
  r.set_refund_sum(b.refund_sum);
  for (const auto& [bucket, n] : b.histogram) {
    r.add_histogram((static_cast<uint64_t>(bucket) << 40) | n);
  }
  for (const auto& [second, n] : b.seconds) {
    r.add_seconds((static_cast<uint32_t>(second) << 24) | std::min<uint32_t>(n, 0xffffff));
  }
  return BucketStore::Encode(std::move(r));
}

Status StatsIndex::AddStored(std::string_view key, std::string_view value) {
  constexpr size_t kFixed = 2 + 8 + storage::kChannelIdSize + 1;
  if (key.size() < kFixed) {
    return Status::Corruption("stats bucket key " + storage::EscapeKey(key) + " is too short");
  }
  TIPD_ASSIGN_OR_RETURN(v1::StoredStatsBucket r, BucketStore::Decode(key, value));
  uint64_t minute = 0;
  for (size_t i = 0; i < 8; ++i) minute = (minute << 8) | static_cast<uint8_t>(key[2 + i]);
  const std::string channel(key.substr(10, storage::kChannelIdSize));
  const auto direction = static_cast<uint8_t>(key[10 + storage::kChannelIdSize]);
  if (direction > 1) {
    return Status::Corruption("stats bucket key " + storage::EscapeKey(key) +
                              " has an unknown direction");
  }
  const std::string app(key.substr(kFixed));
  Bucket& b = buckets_[Key{minute, ChannelIndex(channel), direction, AppIndex(app)}];
  b.count = r.count();
  b.sum = r.sum();
  b.refund_count = r.refund_count();
  b.refund_sum = r.refund_sum();
  b.histogram.clear();
  b.seconds.clear();
  for (uint64_t h : r.histogram()) {
    b.histogram.emplace_back(static_cast<uint16_t>(h >> 40),
                             static_cast<uint32_t>(h & 0xffffffffffull));
  }
  for (uint32_t s : r.seconds()) {
    b.seconds.emplace_back(static_cast<uint8_t>(s >> 24), s & 0xffffff);
  }
  ChannelTotals& t = totals_[channel];
  t.tips[direction] += b.count + b.refund_count;
  t.amount[direction] += b.sum + b.refund_sum;
  return Status::Ok();
}

Status StatsIndex::Load() {
  TIPD_ASSIGN_OR_RETURN(std::optional<v1::StoredStatsProgress> marker,
                        ProgressStore(db_).Get(kBackfillKey));
  if (!marker) {
    // Tips stored before the index existed: aggregate them once, by the
    // time the sender put in each tip, and write the buckets with the marker
    // in one synced write (a crash before it leaves nothing to double).
    uint64_t tips = 0;
    std::string prefix(1, static_cast<char>(storage::KeyFamily::kTip));
    TIPD_RETURN_IF_ERROR(db_->ScanPrefix(
        prefix, SIZE_MAX, [&](std::string_view key, std::string_view value) -> Status {
          if (key.size() != 1 + storage::kChannelIdSize + 1 + 8) {
            return Status::Corruption("tip key " + storage::EscapeKey(key) + " is malformed");
          }
          TIPD_ASSIGN_OR_RETURN(v1::StoredTip st,
                                storage::RecordStore<v1::StoredTip>::Decode(key, value));
          const std::string channel(key.substr(1, storage::kChannelIdSize));
          const auto direction = static_cast<uint8_t>(key[1 + storage::kChannelIdSize]);
          if (direction > 1) return Status::Corruption("tip key " + storage::EscapeKey(key));
          const uint64_t at = st.tip().created_at_ms();
          const TipTraits traits = TraitsOf(st.tip());
          Bucket& b =
              buckets_[Key{at / kMinuteMs, ChannelIndex(channel), direction, AppIndex(traits.app)}];
          Add(&b, st.tip().amount(), traits.refund, static_cast<uint8_t>((at / 1000) % 60));
          ++tips;
          return Status::Ok();
        }));
    storage::WriteBatch batch;
    for (const auto& [k, b] : buckets_) {
      batch.Put(BucketKey(k.minute, channels_[k.channel], k.direction, apps_[k.app]), Encode(b));
    }
    v1::StoredStatsProgress done;
    done.set_backfilled_tips(tips);
    ProgressStore(db_).Put(&batch, kBackfillKey, done);
    TIPD_RETURN_IF_ERROR(db_->Write(batch));
    buckets_.clear();  // read back below, with the totals
  }
  TIPD_RETURN_IF_ERROR(db_->ScanPrefix(
      std::string{kFamily, 'b'}, SIZE_MAX,
      [this](std::string_view key, std::string_view value) { return AddStored(key, value); }));
  RebuildRollups();
  TIPD_RETURN_IF_ERROR(db_->ScanPrefix(
      std::string{kFamily, 'f'}, SIZE_MAX,
      [this](std::string_view key, std::string_view value) -> Status {
        if (key.size() != 2 + storage::kChannelIdSize) {
          return Status::Corruption("fee key " + storage::EscapeKey(key) + " is malformed");
        }
        TIPD_ASSIGN_OR_RETURN(v1::StoredChannelFees f, FeesStore::Decode(key, value));
        fees_[*ToChannelKey(key.substr(2))] = f;  // the size is checked above
        return Status::Ok();
      }));
  TIPD_ASSIGN_OR_RETURN(std::optional<v1::StoredStatsProgress> height,
                        ProgressStore(db_).Get(kFeeHeightKey));
  fee_height_ = height ? height->height() : 0;
  fee_height_written_ = fee_height_;
  return Status::Ok();
}

Status StatsIndex::BackfillFees(
    uint64_t chain_height, const crypto::XOnlyPubKey& self,
    const std::function<Result<std::optional<v1::Block>>(uint64_t)>& get_block) {
  if (fee_height_ >= chain_height) return Status::Ok();
  storage::WriteBatch batch;
  bool any = false;
  for (uint64_t h = fee_height_ + 1; h <= chain_height; ++h) {
    TIPD_ASSIGN_OR_RETURN(std::optional<v1::Block> block, get_block(h));
    if (!block) return Status::Corruption("block " + std::to_string(h) + " is missing");
    any |= StageBlockFees(&batch, *block, block->header().chain_id(), self);
  }
  // Whatever was staged, the progress is the chain height now.
  v1::StoredStatsProgress p;
  p.set_height(chain_height);
  ProgressStore(db_).Put(&batch, kFeeHeightKey, p);
  (void)any;
  fee_height_ = fee_height_written_ = chain_height;
  return db_->Write(batch);
}

void StatsIndex::StageTips(storage::WriteBatch* batch, const std::string& channel_id,
                           storage::Direction direction,
                           const google::protobuf::RepeatedPtrField<v1::Tip>& tips,
                           uint64_t now_ms) {
  const auto dir = static_cast<uint8_t>(direction);
  const uint32_t channel = ChannelIndex(channel_id);
  const uint64_t minute = now_ms / kMinuteMs;
  const auto second = static_cast<uint8_t>((now_ms / 1000) % 60);
  ChannelTotals& totals = totals_[channel_id];
  std::vector<Key> touched;
  for (const v1::Tip& tip : tips) {
    const TipTraits traits = TraitsOf(tip);
    const Key key{minute, channel, dir, AppIndex(traits.app)};
    Add(&buckets_[key], tip.amount(), traits.refund, second);
    for (int level = 0; level < 2; ++level) {
      Key period = key;
      period.minute = minute / (level == 0 ? kHourMinutes : kDayMinutes);
      AddToRollup(&(level == 0 ? hours_ : days_)[period], tip.amount(), traits.refund);
    }
    ++totals.tips[dir];
    totals.amount[dir] += tip.amount();
    if (std::find(touched.begin(), touched.end(), key) == touched.end()) touched.push_back(key);
  }
  for (const Key& k : touched) {
    batch->Put(BucketKey(k.minute, channel_id, k.direction, apps_[k.app]), Encode(buckets_[k]));
  }
  // The counts of this second only grew: fold them into the peaks.
  if (!tips.empty()) FoldPeaks(minute, second, (1u << kPeakKinds) - 1);
}

void StatsIndex::AddFee(const std::string& channel_id, FeeKind kind, uint64_t fee) {
  const std::optional<ChannelKey> key = ToChannelKey(channel_id);
  if (!key) return;  // not a channel id (OnBlock passes only channel ids)
  v1::StoredChannelFees& f = fees_[*key];
  switch (kind) {
    case FeeKind::kOpen:
      f.set_open(f.open() + fee);
      break;
    case FeeKind::kDeposit:
      f.set_deposit(f.deposit() + fee);
      break;
    case FeeKind::kClose:
      f.set_close(f.close() + fee);
      break;
    case FeeKind::kProofs:
      f.set_proofs(f.proofs() + fee);
      break;
  }
}

bool StatsIndex::StageBlockFees(storage::WriteBatch* batch, const v1::Block& block,
                                std::string_view chain_id, const crypto::XOnlyPubKey& self) {
  const uint64_t height = block.header().height();
  if (height <= fee_height_) return false;
  fee_height_ = height;
  std::set<std::string> touched;
  const std::string_view me(reinterpret_cast<const char*>(self.data()), self.size());
  for (const v1::Transaction& tx : block.transactions()) {
    if (tx.signer() != me || tx.fee() == 0) continue;
    std::string channel;
    FeeKind kind = FeeKind::kOpen;
    switch (tx.body_case()) {
      case v1::Transaction::kChannelOpen: {
        const Hash32 id = ledger::DeriveChannelId(chain_id, AsSpan(tx.channel_open().party_a()),
                                                  AsSpan(tx.channel_open().party_b()), tx.nonce());
        channel.assign(reinterpret_cast<const char*>(id.data()), id.size());
        kind = FeeKind::kOpen;
        break;
      }
      case v1::Transaction::kDeposit:
        channel = tx.deposit().channel_id();
        kind = FeeKind::kDeposit;
        break;
      case v1::Transaction::kCooperativeClose:
        channel = tx.cooperative_close().close().channel_id();
        kind = FeeKind::kClose;
        break;
      case v1::Transaction::kUnilateralClose:
        channel = tx.unilateral_close().channel_id();
        kind = FeeKind::kClose;
        break;
      case v1::Transaction::kSettle:
        channel = tx.settle().channel_id();
        kind = FeeKind::kClose;
        break;
      case v1::Transaction::kUpdateProof:
        channel = tx.update_proof().channel_id();
        kind = FeeKind::kProofs;
        break;
      default:
        continue;  // transfers are not a channel's cost
    }
    if (channel.size() != storage::kChannelIdSize) continue;
    AddFee(channel, kind, tx.fee());
    touched.insert(channel);
  }
  for (const std::string& c : touched) {
    FeesStore(db_).Put(batch, FeesKey(c), fees_[*ToChannelKey(c)]);  // sizes checked above
  }
  if (touched.empty() && height - fee_height_written_ < kProgressEvery) {
    // Nothing of ours: the progress need not move yet (a restart rescans
    // these blocks, which hold no fee of ours).
    return false;
  }
  fee_height_written_ = height;
  v1::StoredStatsProgress p;
  p.set_height(height);
  ProgressStore(db_).Put(batch, kFeeHeightKey, p);
  return true;
}

// ---------------------------------------------------------------------------
// Queries

namespace {

struct Amounts {
  uint64_t count = 0, sum = 0;
  std::vector<uint64_t> histogram;
  void Fill(v1::StatsAmounts* out) const {
    out->set_count(count);
    out->set_sum(sum);
    out->set_mean(Ratio(sum, count));
    out->set_median(HistogramMedian(histogram));
  }
};

struct Group {
  Amounts dir[2];
  uint64_t refunds_count[2] = {0, 0}, refunds_sum[2] = {0, 0};
  uint64_t peak = 0;
  // Tips per second of the group: slot s counts second s of minute
  // slot_minute[s] (a slot of an older minute starts again from 0).
  uint32_t seconds[60] = {};
  uint64_t slot_minute[60];
  Group() { std::fill(std::begin(slot_minute), std::end(slot_minute), UINT64_MAX); }
  void AddSecond(uint64_t minute, uint8_t second, uint32_t n) {
    if (slot_minute[second] != minute) {
      slot_minute[second] = minute;
      seconds[second] = 0;
    }
    seconds[second] += n;
    peak = std::max<uint64_t>(peak, seconds[second]);
  }
};

void EmitGroups(std::map<std::string, Group>& groups, v1::StatsResponse* out) {
  for (auto& [name, g] : groups) {
    v1::StatsGroup& o = *out->add_groups();
    o.set_key(name);
    g.dir[0].Fill(o.mutable_sent());
    g.dir[1].Fill(o.mutable_received());
    o.set_peak_tips_per_second(g.peak);
    o.mutable_refunds()->set_count(g.refunds_count[0] + g.refunds_count[1]);
    o.mutable_refunds()->set_sum(g.refunds_sum[0] + g.refunds_sum[1]);
    o.mutable_refunds_sent()->set_count(g.refunds_count[0]);
    o.mutable_refunds_sent()->set_sum(g.refunds_sum[0]);
    o.mutable_refunds_received()->set_count(g.refunds_count[1]);
    o.mutable_refunds_received()->set_sum(g.refunds_sum[1]);
  }
}

template <typename Count>
void AddCounts(Group* g, uint8_t direction, uint64_t count, uint64_t sum, uint64_t refund_count,
               uint64_t refund_sum, const std::vector<std::pair<uint16_t, Count>>& histogram) {
  Amounts& a = g->dir[direction];
  a.count += count;
  a.sum += sum;
  for (const auto& [bucket, n] : histogram) {
    if (a.histogram.size() <= bucket) a.histogram.resize(bucket + 1);
    a.histogram[bucket] += n;
  }
  g->refunds_count[direction] += refund_count;
  g->refunds_sum[direction] += refund_sum;
}

}  // namespace

uint64_t StatsIndex::GroupId(StatsGroupBy group_by, const Key& k, uint64_t day) const {
  switch (group_by) {
    case StatsGroupBy::kNone:
      return 0;
    case StatsGroupBy::kChannel:
      return k.channel;
    case StatsGroupBy::kPeer:
      return channel_peer_[k.channel];
    case StatsGroupBy::kAppName:
      return k.app;
    case StatsGroupBy::kDay:
      return day;
  }
  return 0;
}

std::string StatsIndex::GroupName(StatsGroupBy group_by, uint64_t id) const {
  switch (group_by) {
    case StatsGroupBy::kNone:
      return "all";
    case StatsGroupBy::kChannel:
      return HexEncode(AsSpan(channels_[id]));
    case StatsGroupBy::kPeer:
      return peer_names_[id];
    case StatsGroupBy::kAppName:
      return apps_[id];
    case StatsGroupBy::kDay:
      return DayOf(id * kDayMinutes);
  }
  return "all";
}

v1::StatsResponse StatsIndex::Query(uint64_t from_ms, uint64_t to_ms, StatsGroupBy group_by) const {
  const uint64_t from_minute = from_ms / kMinuteMs;
  const uint64_t to_minute = (to_ms + kMinuteMs - 1) / kMinuteMs;  // exclusive
  v1::StatsResponse out;
  out.set_from_ms(from_minute * kMinuteMs);
  out.set_to_ms(to_minute * kMinuteMs);
  out.set_group_by(StatsGroupByName(group_by));

  if (group_by == StatsGroupBy::kPeer && peer_peaks_stale_) {
    // A channel's peer became known after its tips: its peer peaks follow.
    for (auto& level : peaks_) level[kPeakPeer].clear();
    uint64_t minute = UINT64_MAX;
    for (const auto& [k, b] : buckets_) {
      if (k.minute == minute) continue;
      minute = k.minute;
      FoldPeaks(minute, -1, 1u << kPeakPeer);
    }
    peer_peaks_stale_ = false;
  }

  std::map<std::string, Group> groups;
  std::unordered_map<uint64_t, Group*> by_id;
  uint64_t last_id = UINT64_MAX;
  Group* last_group = nullptr;
  auto group_of = [&](uint64_t id) {
    if (id == last_id) return last_group;
    auto [it, added] = by_id.emplace(id, nullptr);
    if (added) it->second = &groups[GroupName(group_by, id)];
    last_id = id;
    last_group = it->second;
    return last_group;
  };
  // Minute buckets of [a, b).
  auto minutes = [&](uint64_t a, uint64_t b) {
    for (auto it = buckets_.lower_bound(Key{a, 0, 0, 0});
         it != buckets_.end() && it->first.minute < b; ++it) {
      const Key& k = it->first;
      const Bucket& bucket = it->second;
      Group* g = group_of(GroupId(group_by, k, k.minute / kDayMinutes));
      AddCounts(g, k.direction, bucket.count, bucket.sum, bucket.refund_count, bucket.refund_sum,
                bucket.histogram);
      for (const auto& [second, n] : bucket.seconds) g->AddSecond(k.minute, second, n);
    }
  };
  // Whole hours (level 0) or days (level 1) [p0, p1).
  auto periods = [&](int level, uint64_t p0, uint64_t p1) {
    const std::map<Key, Rollup>& rollups = level == 0 ? hours_ : days_;
    const uint64_t per_day = level == 0 ? kDayMinutes / kHourMinutes : 1;
    for (auto it = rollups.lower_bound(Key{p0, 0, 0, 0});
         it != rollups.end() && it->first.minute < p1; ++it) {
      const Key& k = it->first;
      const Rollup& r = it->second;
      Group* g = group_of(GroupId(group_by, k, k.minute / per_day));
      AddCounts(g, k.direction, r.count, r.sum, r.refund_count, r.refund_sum, r.histogram);
    }
    PeakKind kind = kPeakAll;
    if (group_by == StatsGroupBy::kChannel) kind = kPeakChannel;
    if (group_by == StatsGroupBy::kAppName) kind = kPeakApp;
    if (group_by == StatsGroupBy::kPeer) kind = kPeakPeer;
    const PeakMap& peaks = peaks_[level][kind];
    for (auto it = peaks.lower_bound({p0, 0}); it != peaks.end() && it->first.first < p1; ++it) {
      const auto [period, group] = it->first;
      uint64_t id = group;
      if (group_by == StatsGroupBy::kDay) id = period / per_day;
      Group* g = group_of(id);
      g->peak = std::max(g->peak, it->second);
    }
  };
  // [a, b) inside one day or spanning none: whole hours, minutes at the edges.
  auto hours_and_minutes = [&](uint64_t a, uint64_t b) {
    const uint64_t h0 = (a + kHourMinutes - 1) / kHourMinutes;
    const uint64_t h1 = b / kHourMinutes;
    if (h0 < h1) {
      minutes(a, h0 * kHourMinutes);
      periods(0, h0, h1);
      minutes(h1 * kHourMinutes, b);
    } else {
      minutes(a, b);
    }
  };
  const uint64_t d0 = (from_minute + kDayMinutes - 1) / kDayMinutes;
  const uint64_t d1 = to_minute / kDayMinutes;
  if (d0 < d1) {
    hours_and_minutes(from_minute, d0 * kDayMinutes);
    periods(1, d0, d1);
    hours_and_minutes(d1 * kDayMinutes, to_minute);
  } else {
    hours_and_minutes(from_minute, to_minute);
  }
  EmitGroups(groups, &out);
  AddFeesTo(&out);
  return out;
}

v1::StatsResponse StatsIndex::QueryMinutes(uint64_t from_ms, uint64_t to_ms,
                                           StatsGroupBy group_by) const {
  const uint64_t from_minute = from_ms / kMinuteMs;
  const uint64_t to_minute = (to_ms + kMinuteMs - 1) / kMinuteMs;  // exclusive
  v1::StatsResponse out;
  out.set_from_ms(from_minute * kMinuteMs);
  out.set_to_ms(to_minute * kMinuteMs);
  out.set_group_by(StatsGroupByName(group_by));

  std::map<std::string, Group> groups;
  // The group of the previous bucket: consecutive buckets often share it.
  const Key* last_key = nullptr;
  Group* last_group = nullptr;
  for (auto it = buckets_.lower_bound(Key{from_minute, 0, 0, 0});
       it != buckets_.end() && it->first.minute < to_minute; ++it) {
    const Key& k = it->first;
    const Bucket& b = it->second;
    Group* g = nullptr;
    bool same = false;
    if (last_key != nullptr) {
      switch (group_by) {
        case StatsGroupBy::kNone:
          same = true;
          break;
        case StatsGroupBy::kChannel:
        case StatsGroupBy::kPeer:
          same = last_key->channel == k.channel;
          break;
        case StatsGroupBy::kAppName:
          same = last_key->app == k.app;
          break;
        case StatsGroupBy::kDay:
          same = last_key->minute / (kDayMs / kMinuteMs) == k.minute / (kDayMs / kMinuteMs);
          break;
      }
    }
    if (same) {
      g = last_group;
    } else {
      std::string name;
      switch (group_by) {
        case StatsGroupBy::kNone:
          name = "all";
          break;
        case StatsGroupBy::kChannel:
          name = HexEncode(AsSpan(channels_[k.channel]));
          break;
        case StatsGroupBy::kPeer: {
          const std::optional<ChannelKey> key = ToChannelKey(channels_[k.channel]);
          auto p = key ? peers_.find(*key) : peers_.end();
          name = p == peers_.end() ? "unknown" : peer_names_[p->second];
          break;
        }
        case StatsGroupBy::kAppName:
          name = apps_[k.app];
          break;
        case StatsGroupBy::kDay:
          name = DayOf(k.minute);
          break;
      }
      g = &groups[name];
    }
    last_key = &k;
    last_group = g;
    Amounts& a = g->dir[k.direction];
    a.count += b.count;
    a.sum += b.sum;
    for (const auto& [bucket, n] : b.histogram) {
      if (a.histogram.size() <= bucket) a.histogram.resize(bucket + 1);
      a.histogram[bucket] += n;
    }
    g->refunds_count[k.direction] += b.refund_count;
    g->refunds_sum[k.direction] += b.refund_sum;
    for (const auto& [second, n] : b.seconds) g->AddSecond(k.minute, second, n);
  }
  EmitGroups(groups, &out);
  AddFeesTo(&out);
  return out;
}

void StatsIndex::AddFeesTo(v1::StatsResponse* out) const {
  // Fees and what they carried: the whole history of every channel.
  std::set<std::string> ids;
  for (const auto& [id, f] : fees_) ids.insert(FromChannelKey(id));
  for (const auto& [id, t] : totals_) ids.insert(id);
  v1::StatsFees& all = *out->mutable_fees();
  for (const std::string& id : ids) {
    v1::StoredChannelFees f;
    const std::optional<ChannelKey> key = ToChannelKey(id);
    if (auto it = key ? fees_.find(*key) : fees_.end(); it != fees_.end()) f = it->second;
    ChannelTotals t;
    if (auto it = totals_.find(id); it != totals_.end()) t = it->second;
    const uint64_t tips = t.tips[0] + t.tips[1];
    const uint64_t amount = t.amount[0] + t.amount[1];
    const uint64_t total = FeeTotal(f);
    v1::StatsChannelFees& c = *out->add_channels();
    c.set_channel_id(HexEncode(AsSpan(id)));
    if (auto p = key ? peers_.find(*key) : peers_.end(); p != peers_.end()) {
      c.set_peer_node_id(peer_names_[p->second]);
    }
    c.set_total(total);
    c.set_open(f.open());
    c.set_deposit(f.deposit());
    c.set_close(f.close());
    c.set_proofs(f.proofs());
    c.set_tips_carried(tips);
    c.set_amount_carried(amount);
    c.set_effective_fee_per_tip(Ratio(total, tips));
    c.set_effective_fee_percent(100.0 * Ratio(total, amount));
    all.set_total(all.total() + total);
    all.set_open(all.open() + f.open());
    all.set_deposit(all.deposit() + f.deposit());
    all.set_close(all.close() + f.close());
    all.set_proofs(all.proofs() + f.proofs());
    all.set_tips_carried(all.tips_carried() + tips);
    all.set_amount_carried(all.amount_carried() + amount);
  }
  all.set_effective_fee_per_tip(Ratio(all.total(), all.tips_carried()));
  all.set_effective_fee_percent(100.0 * Ratio(all.total(), all.amount_carried()));
}

std::set<std::string> StatsIndex::PeersWithTips(storage::Direction direction) const {
  std::set<std::string> out;
  const auto d = static_cast<size_t>(direction);
  for (const auto& [id, t] : totals_) {
    if (t.tips[d] == 0) continue;
    const std::optional<ChannelKey> key = ToChannelKey(id);
    if (auto p = key ? peers_.find(*key) : peers_.end(); p != peers_.end()) {
      out.insert(peer_names_[p->second]);
    }
  }
  return out;
}

}  // namespace tipd::node
