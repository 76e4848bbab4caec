// The stats index (node/stats.h): the histogram and its median, the
// aggregates of staged tips grouped every way, what a reload and the one-time
// backfill rebuild, fees counted once per block; and, over the in-process
// channel harness, two managers whose tips and ledger fees come out exactly.
#include "node/stats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "channel_harness.h"
#include "ledger/codec.h"
#include "tests/support/test_support.h"
#include "util/bytes.h"

namespace tipd::node {
namespace {

using namespace std::chrono_literals;

TEST(AmountHistogram, ExactBelow32AndWithinASixteenthAbove) {
  for (uint64_t v = 0; v < 32; ++v) EXPECT_EQ(AmountBucketLow(AmountBucket(v)), v);
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  uint32_t previous = 0;
  for (uint64_t v : std::vector<uint64_t>{32, 33, 1000, uint64_t{1} << 40, UINT64_MAX}) {
    const uint32_t b = AmountBucket(v);
    ASSERT_LT(b, kAmountBuckets);
    EXPECT_GE(b, previous);  // monotonic
    previous = b;
  }
  for (int i = 0; i < 100'000; ++i) {
    const uint64_t v = rng() >> (rng() % 64);
    const uint32_t b = AmountBucket(v);
    const uint64_t low = AmountBucketLow(b);
    ASSERT_LT(b, kAmountBuckets);
    ASSERT_LE(low, v) << v;
    ASSERT_LT(v - low, std::max<uint64_t>(1, low / 16)) << v;  // within 1/16 of the amount
    ASSERT_EQ(AmountBucket(low), b) << v;                      // the bound is in its bucket
  }
}

TEST(AmountHistogram, MedianIsTheLowerMedian) {
  auto median = [](std::vector<uint64_t> values) {
    std::vector<uint64_t> counts(kAmountBuckets);
    for (uint64_t v : values) ++counts[AmountBucket(v)];
    return HistogramMedian(counts);
  };
  EXPECT_EQ(median({}), 0u);
  EXPECT_EQ(median({7}), 7u);
  EXPECT_EQ(median({1, 2, 3, 4}), 2u);  // rank ceil(4/2) = 2
  EXPECT_EQ(median({5, 1, 9}), 5u);
  EXPECT_EQ(median({10, 10, 10, 1000}), 10u);
  // 1000 falls in [992, 1024): the median reads the bucket's lower bound.
  EXPECT_EQ(median({1000, 1000, 1}), 992u);
}

v1::Tip MakeTip(uint64_t amount, const std::string& app = "", bool refund = false) {
  v1::Tip t;
  t.set_amount(amount);
  if (!app.empty()) {
    auto* e = t.add_metadata();
    e->set_key("app_name");
    e->set_value(app);
  }
  if (refund) {
    auto* e = t.add_metadata();
    e->set_key("refund_of");
    e->set_value("00:1");
  }
  return t;
}

google::protobuf::RepeatedPtrField<v1::Tip> Tips(std::vector<v1::Tip> tips) {
  google::protobuf::RepeatedPtrField<v1::Tip> out;
  for (auto& t : tips) *out.Add() = std::move(t);
  return out;
}

const v1::StatsGroup* FindGroup(const v1::StatsResponse& r, const std::string& key) {
  for (const auto& g : r.groups()) {
    if (g.key() == key) return &g;
  }
  return nullptr;
}

class StatsIndexTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen() {
    index_.reset();
    db_.reset();
    auto db = storage::Database::Open(dir_.path() / "db");
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    db_ = std::move(*db);
    index_ = std::make_unique<StatsIndex>(db_.get());
    ASSERT_TRUE(index_->Load().ok());
    index_->NoteChannel(ch1_, "02peer1");
    index_->NoteChannel(ch2_, "02peer2");
  }
  void Stage(const std::string& ch, storage::Direction d, std::vector<v1::Tip> tips, uint64_t at) {
    storage::WriteBatch batch;
    index_->StageTips(&batch, ch, d, Tips(std::move(tips)), at);
    ASSERT_TRUE(db_->Write(batch).ok());
  }

  testing::TempDir dir_;
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<StatsIndex> index_;
  const std::string ch1_ = std::string(32, '\x01');
  const std::string ch2_ = std::string(32, '\x02');
  // 2026-11-30 00:00:00 UTC.
  const uint64_t day0_ = 1'795'996'800'000;
};

TEST_F(StatsIndexTest, GroupsCountsMediansPeaksAndRefunds) {
  using D = storage::Direction;
  // Second 10 of minute 0: three tips on ch1 (two apps), one on ch2.
  Stage(ch1_, D::kLocalToRemote, {MakeTip(10, "podcast"), MakeTip(20, "podcast")}, day0_ + 10'000);
  Stage(ch1_, D::kLocalToRemote, {MakeTip(30, "video")}, day0_ + 10'500);
  Stage(ch2_, D::kLocalToRemote, {MakeTip(5)}, day0_ + 10'900);
  // Received on ch1 a minute later, and a refund we sent.
  Stage(ch1_, D::kRemoteToLocal, {MakeTip(7, "podcast"), MakeTip(9, "podcast")}, day0_ + 70'000);
  Stage(ch1_, D::kLocalToRemote, {MakeTip(4, "podcast", true)}, day0_ + 71'000);
  // The next day.
  Stage(ch2_, D::kRemoteToLocal, {MakeTip(100)}, day0_ + 86'400'000 + 5);

  v1::StatsResponse all = index_->Query(day0_, day0_ + 2 * 86'400'000, StatsGroupBy::kNone);
  ASSERT_EQ(all.groups_size(), 1);
  const v1::StatsGroup& g = all.groups(0);
  EXPECT_EQ(g.key(), "all");
  EXPECT_EQ(g.sent().count(), 4u);
  EXPECT_EQ(g.sent().sum(), 65u);
  EXPECT_DOUBLE_EQ(g.sent().mean(), 16.25);
  EXPECT_EQ(g.sent().median(), 10u);  // 5 10 20 30: rank 2
  EXPECT_EQ(g.received().count(), 3u);
  EXPECT_EQ(g.received().sum(), 116u);
  EXPECT_EQ(g.received().median(), 9u);
  EXPECT_EQ(g.peak_tips_per_second(), 4u);  // second 10 of minute 0, over both channels
  EXPECT_EQ(g.refunds().count(), 1u);
  EXPECT_EQ(g.refunds().sum(), 4u);
  EXPECT_EQ(g.refunds_sent().count(), 1u);
  EXPECT_EQ(g.refunds_received().count(), 0u);

  v1::StatsResponse by_channel = index_->Query(day0_, day0_ + 86'400'000, StatsGroupBy::kChannel);
  ASSERT_EQ(by_channel.groups_size(), 2);
  const v1::StatsGroup* c1 = FindGroup(by_channel, HexEncode(AsSpan(ch1_)));
  ASSERT_NE(c1, nullptr);
  EXPECT_EQ(c1->sent().count(), 3u);
  EXPECT_EQ(c1->received().count(), 2u);
  EXPECT_EQ(c1->peak_tips_per_second(), 3u);

  v1::StatsResponse by_peer = index_->Query(day0_, day0_ + 86'400'000, StatsGroupBy::kPeer);
  const v1::StatsGroup* p2 = FindGroup(by_peer, "02peer2");
  ASSERT_NE(p2, nullptr);
  EXPECT_EQ(p2->sent().sum(), 5u);
  EXPECT_EQ(p2->received().count(), 0u);  // the day-two tip is outside the range

  v1::StatsResponse by_app = index_->Query(day0_, day0_ + 2 * 86'400'000, StatsGroupBy::kAppName);
  const v1::StatsGroup* podcast = FindGroup(by_app, "podcast");
  ASSERT_NE(podcast, nullptr);
  EXPECT_EQ(podcast->sent().count(), 2u);
  EXPECT_EQ(podcast->received().count(), 2u);
  EXPECT_EQ(podcast->refunds().count(), 1u);
  const v1::StatsGroup* none = FindGroup(by_app, "");
  ASSERT_NE(none, nullptr);
  EXPECT_EQ(none->sent().count(), 1u);
  EXPECT_EQ(none->received().count(), 1u);

  v1::StatsResponse by_day = index_->Query(day0_, day0_ + 2 * 86'400'000, StatsGroupBy::kDay);
  ASSERT_EQ(by_day.groups_size(), 2);
  EXPECT_EQ(by_day.groups(0).key(), "2026-11-30");
  EXPECT_EQ(by_day.groups(1).key(), "2026-12-01");
  EXPECT_EQ(by_day.groups(1).received().sum(), 100u);

  // A range starting in minute 1 sees only the received tips and the refund.
  v1::StatsResponse later = index_->Query(day0_ + 60'000, day0_ + 120'000, StatsGroupBy::kNone);
  ASSERT_EQ(later.groups_size(), 1);
  EXPECT_EQ(later.groups(0).sent().count(), 0u);
  EXPECT_EQ(later.groups(0).received().count(), 2u);
  EXPECT_EQ(later.from_ms(), day0_ + 60'000);
  EXPECT_EQ(later.to_ms(), day0_ + 120'000);

  // Channel totals carry every tip, refunds included.
  EXPECT_EQ(all.fees().tips_carried(), 8u);
  EXPECT_EQ(all.fees().amount_carried(), 185u);

  // A reload from the stored buckets answers the same, byte for byte.
  const std::string before = all.SerializeAsString();
  Reopen();
  EXPECT_EQ(index_->Query(day0_, day0_ + 2 * 86'400'000, StatsGroupBy::kNone).SerializeAsString(),
            before);
}

TEST_F(StatsIndexTest, TipsStoredBeforeTheIndexAreBackfilledOnce) {
  // A database from before the index: tips only, no 'G' records.
  index_.reset();
  db_.reset();
  testing::TempDir old;
  {
    auto db = storage::Database::Open(old.path() / "db");
    ASSERT_TRUE(db.ok());
    storage::WriteBatch batch;
    for (uint64_t i = 1; i <= 5; ++i) {
      v1::StoredTip st;
      st.set_version(1);
      *st.mutable_tip() = MakeTip(i * 10, "app");
      st.mutable_tip()->set_index(i);
      st.mutable_tip()->set_created_at_ms(day0_ + i);
      batch.Put(storage::TipKey(ch1_, storage::Direction::kRemoteToLocal, i),
                st.SerializeAsString());
    }
    ASSERT_TRUE((*db)->Write(batch).ok());
    StatsIndex index(db->get());
    ASSERT_TRUE(index.Load().ok());
    v1::StatsResponse r = index.Query(day0_, day0_ + 60'000, StatsGroupBy::kNone);
    ASSERT_EQ(r.groups_size(), 1);
    EXPECT_EQ(r.groups(0).received().count(), 5u);
    EXPECT_EQ(r.groups(0).received().sum(), 150u);
    EXPECT_EQ(r.groups(0).received().median(), 30u);
    EXPECT_EQ(r.groups(0).peak_tips_per_second(), 5u);
  }
  // Opened again: the marker is there, so nothing is counted twice.
  auto db = storage::Database::Open(old.path() / "db");
  ASSERT_TRUE(db.ok());
  StatsIndex again(db->get());
  ASSERT_TRUE(again.Load().ok());
  EXPECT_EQ(again.Query(day0_, day0_ + 60'000, StatsGroupBy::kNone).groups(0).received().count(),
            5u);
}

TEST_F(StatsIndexTest, FeesOfOurTransactionsAreCountedOncePerBlock) {
  const crypto::KeyPair me = crypto::KeyPair::Generate(crypto::SystemRng());
  const crypto::KeyPair other = crypto::KeyPair::Generate(crypto::SystemRng());
  const crypto::XOnlyPubKey self = me.XOnly();
  const std::string self_bytes(reinterpret_cast<const char*>(self.data()), self.size());
  const crypto::XOnlyPubKey them = other.XOnly();
  const std::string them_bytes(reinterpret_cast<const char*>(them.data()), them.size());
  v1::Block block;
  block.mutable_header()->set_height(1);
  block.mutable_header()->set_chain_id("test");
  auto add = [&](const std::string& signer, uint64_t fee, uint64_t nonce) {
    v1::Transaction* tx = block.add_transactions();
    tx->set_signer(signer);
    tx->set_fee(fee);
    tx->set_nonce(nonce);
    return tx;
  };
  v1::Transaction* open = add(self_bytes, 3, 7);
  open->mutable_channel_open()->set_party_a(self_bytes);
  open->mutable_channel_open()->set_party_b(them_bytes);
  const Hash32 opened = ledger::DeriveChannelId("test", AsSpan(self_bytes), AsSpan(them_bytes), 7);
  const std::string opened_id(reinterpret_cast<const char*>(opened.data()), opened.size());
  add(self_bytes, 2, 8)->mutable_deposit()->set_channel_id(ch1_);
  add(them_bytes, 50, 1)->mutable_deposit()->set_channel_id(ch1_);  // not ours
  add(self_bytes, 4, 9)->mutable_update_proof()->set_channel_id(ch1_);
  add(self_bytes, 5, 10)->mutable_settle()->set_channel_id(ch1_);
  add(self_bytes, 6, 11)->mutable_transfer()->set_amount(1);  // not a channel's
  storage::WriteBatch batch;
  ASSERT_TRUE(index_->StageBlockFees(&batch, block, "test", self));
  ASSERT_TRUE(db_->Write(batch).ok());
  storage::WriteBatch twice;
  EXPECT_FALSE(index_->StageBlockFees(&twice, block, "test", self));  // counted already

  v1::StatsResponse r = index_->Query(day0_, day0_ + 60'000, StatsGroupBy::kNone);
  EXPECT_EQ(r.fees().open(), 3u);
  EXPECT_EQ(r.fees().deposit(), 2u);
  EXPECT_EQ(r.fees().proofs(), 4u);
  EXPECT_EQ(r.fees().close(), 5u);
  EXPECT_EQ(r.fees().total(), 14u);
  bool saw_open = false;
  for (const auto& c : r.channels()) {
    if (c.channel_id() == HexEncode(AsSpan(opened_id))) {
      saw_open = true;
      EXPECT_EQ(c.open(), 3u);
    }
  }
  EXPECT_TRUE(saw_open);

  // After a restart, blocks the index has counted are not counted again;
  // blocks it missed are.
  Reopen();
  EXPECT_EQ(index_->fee_height(), 1u);
  v1::Block next;
  next.mutable_header()->set_height(2);
  next.mutable_header()->set_chain_id("test");
  v1::Transaction* close = next.add_transactions();
  close->set_signer(self_bytes);
  close->set_fee(1);
  close->mutable_unilateral_close()->set_channel_id(ch1_);
  ASSERT_TRUE(index_
                  ->BackfillFees(2, self,
                                 [&](uint64_t h) -> Result<std::optional<v1::Block>> {
                                   return std::optional<v1::Block>(h == 1 ? block : next);
                                 })
                  .ok());
  r = index_->Query(day0_, day0_ + 60'000, StatsGroupBy::kNone);
  EXPECT_EQ(r.fees().total(), 15u);
  EXPECT_EQ(r.fees().close(), 6u);
  // Effective fee: no tips carried yet.
  EXPECT_EQ(r.fees().effective_fee_per_tip(), 0.0);
  Stage(ch1_, storage::Direction::kLocalToRemote, {MakeTip(100), MakeTip(200)}, day0_);
  r = index_->Query(day0_, day0_ + 60'000, StatsGroupBy::kNone);
  for (const auto& c : r.channels()) {
    if (c.channel_id() != HexEncode(AsSpan(ch1_))) continue;
    EXPECT_EQ(c.total(), 12u);  // 2 + 4 + 5 + 1
    EXPECT_EQ(c.tips_carried(), 2u);
    EXPECT_DOUBLE_EQ(c.effective_fee_per_tip(), 6.0);
    EXPECT_DOUBLE_EQ(c.effective_fee_percent(), 4.0);
  }
}

// The roll-up query (whole days, whole hours, minutes at the edges) answers
// exactly what the walk of every minute bucket answers, for random ranges and
// every group_by: after staging (the roll-ups maintained by StageTips), after
// more staging, after a reload (derived at Load), and after a channel's peer
// becomes known once its tips are in.
TEST_F(StatsIndexTest, RollupQueryEqualsTheMinuteWalk) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  using D = storage::Direction;
  const std::string ch3(32, '\x03');  // the same peer as ch1
  const std::string ch4(32, '\x04');  // its peer noted only later
  index_->NoteChannel(ch3, "02peer1");
  const std::vector<std::string> channels = {ch1_, ch2_, ch3, ch4};
  const std::vector<std::string> apps = {"", "podcast", "video"};
  // An unaligned start: 23:17:13.5 on day0_.
  const uint64_t start = day0_ + 23 * 3'600'000 + 17 * 60'000 + 13'500;
  uint64_t t = start;
  auto stage = [&](int updates) {
    for (int u = 0; u < updates; ++u) {
      const uint64_t pick = rng() % 10;
      if (pick < 4) {
        t += rng() % 1'000;  // often the same second, on another channel
      } else if (pick < 7) {
        t += rng() % 60'000;
      } else if (pick < 9) {
        t += rng() % 1'800'000;
      } else {
        t += rng() % 3'600'000;
      }
      std::vector<v1::Tip> tips;
      const int n = 1 + static_cast<int>(rng() % 5);
      for (int i = 0; i < n; ++i) {
        const uint64_t amount = 1 + (rng() >> (rng() % 60 + 4));
        tips.push_back(MakeTip(amount, apps[rng() % apps.size()], rng() % 10 == 0));
      }
      Stage(channels[rng() % channels.size()],
            rng() % 2 == 0 ? D::kLocalToRemote : D::kRemoteToLocal, std::move(tips), t);
    }
  };
  const StatsGroupBy kAll[] = {StatsGroupBy::kNone, StatsGroupBy::kPeer, StatsGroupBy::kChannel,
                               StatsGroupBy::kAppName, StatsGroupBy::kDay};
  int with_days = 0;
  auto compare = [&](const char* phase, int ranges) {
    SCOPED_TRACE(phase);
    auto point = [&]() {
      uint64_t p = start - 7'200'000 + rng() % (t - start + 14'400'000);
      switch (rng() % 4) {
        case 0:
          return p - p % 3'600'000;  // an hour boundary
        case 1:
          return p - p % 86'400'000;  // a day boundary
        case 2:
          return p - p % 60'000;
        default:
          return p;
      }
    };
    for (int i = 0; i < ranges; ++i) {
      uint64_t from = point(), to = point();
      if (i == 0) {  // everything
        from = start - 1;
        to = t + 1;
      }
      if (from > to) std::swap(from, to);
      if (from == to) ++to;
      if (to / 60'000 - from / 60'000 > 2 * 1440) ++with_days;
      for (StatsGroupBy g : kAll) {
        SCOPED_TRACE("range [" + std::to_string(from) + ", " + std::to_string(to) +
                     ") group_by=" + StatsGroupByName(g));
        const v1::StatsResponse want = index_->QueryMinutes(from, to, g);
        const v1::StatsResponse got = index_->Query(from, to, g);
        ASSERT_EQ(got.SerializeAsString(), want.SerializeAsString())
            << "roll-up:\n"
            << got.DebugString() << "minute walk:\n"
            << want.DebugString();
      }
    }
  };
  stage(1500);
  ASSERT_GT(t - start, 3 * 86'400'000ull);  // the ranges span days, hours and minutes
  EXPECT_GT(index_->day_rollup_count(), 0u);
  EXPECT_LT(index_->hour_rollup_count(), index_->bucket_count());
  compare("staged", 150);
  if (HasFatalFailure()) return;
  stage(300);
  compare("staged more", 50);
  if (HasFatalFailure()) return;
  Reopen();
  index_->NoteChannel(ch3, "02peer1");
  compare("reloaded", 100);
  if (HasFatalFailure()) return;
  index_->NoteChannel(ch4, "02peer2");  // ch4's tips move from "unknown" to 02peer2
  compare("peer noted", 50);
  if (HasFatalFailure()) return;
  stage(100);
  compare("staged after reload", 50);
  if (HasFatalFailure()) return;
  EXPECT_GT(with_days, 10);
}

TEST(ParseStatsGroupBy, NamesAndErrors) {
  EXPECT_EQ(*ParseStatsGroupBy(""), StatsGroupBy::kNone);
  EXPECT_EQ(*ParseStatsGroupBy("app_name"), StatsGroupBy::kAppName);
  auto bad = ParseStatsGroupBy("week");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("group_by must be peer, channel, app_name, day or none"),
            std::string::npos);
}

// Two real managers in one process: tips both ways, a cooperative close; the
// stats of both sides, fees included, come out exactly.
TEST(StatsOverChannels, TipsAndFeesOfBothSides) {
  testing::ChannelNet net;
  testing::TestNode& a = net.AddNode("a", 1'000'000);
  testing::TestNode& b = net.AddNode("b", 1'000'000);
  a.StartManager();
  b.StartManager();
  net.Connect(a, b);
  const std::string id = net.OpenChannel(a, b, 10'000, 5'000);
  for (uint64_t amount : {10, 20, 30}) ASSERT_TRUE(net.Tip(a, id, amount, "a").ok());
  ASSERT_TRUE(net.Tip(b, id, 7, "b").ok());
  std::optional<Result<v1::ChannelApi>> closed;
  a.manager->Close(id, false, 60'000ms,
                   [&](Result<v1::ChannelApi> r, std::string) { closed = std::move(r); });
  net.Settle();
  net.Seal();
  ASSERT_TRUE(net.RunUntil([&] { return closed.has_value(); }));
  ASSERT_TRUE(closed->ok()) << closed->status().ToString();
  net.Settle();

  const uint64_t now = static_cast<uint64_t>(net.clock().NowMs());
  const uint64_t fee = net.params().fee_per_tx;
  v1::StatsResponse sa =
      a.manager->stats().Query(now - 3'600'000, now + 60'000, StatsGroupBy::kPeer);
  ASSERT_EQ(sa.groups_size(), 1);
  EXPECT_EQ(sa.groups(0).key(), b.key.public_key().Hex());
  EXPECT_EQ(sa.groups(0).sent().count(), 3u);
  EXPECT_EQ(sa.groups(0).sent().sum(), 60u);
  EXPECT_EQ(sa.groups(0).sent().median(), 20u);
  EXPECT_EQ(sa.groups(0).received().count(), 1u);
  EXPECT_EQ(sa.groups(0).received().sum(), 7u);
  // A opened and closed: two fees; it carried four tips of 67.
  EXPECT_EQ(sa.fees().open(), fee);
  EXPECT_EQ(sa.fees().close(), fee);
  EXPECT_EQ(sa.fees().total(), 2 * fee);
  EXPECT_EQ(sa.fees().tips_carried(), 4u);
  EXPECT_EQ(sa.fees().amount_carried(), 67u);
  EXPECT_DOUBLE_EQ(sa.fees().effective_fee_per_tip(), 2.0 * fee / 4);
  EXPECT_DOUBLE_EQ(sa.fees().effective_fee_percent(), 100.0 * 2 * fee / 67);

  v1::StatsResponse sb =
      b.manager->stats().Query(now - 3'600'000, now + 60'000, StatsGroupBy::kChannel);
  ASSERT_EQ(sb.groups_size(), 1);
  EXPECT_EQ(sb.groups(0).key(), HexEncode(AsSpan(id)));
  EXPECT_EQ(sb.groups(0).received().count(), 3u);
  EXPECT_EQ(sb.groups(0).sent().count(), 1u);
  EXPECT_EQ(sb.fees().total(), 0u);  // B signed nothing for the ledger
  EXPECT_EQ(sb.fees().tips_carried(), 4u);

  // A restart rebuilds the same numbers from the stored aggregates.
  const std::string before = sa.SerializeAsString();
  net.Restart(a, b);
  EXPECT_EQ(a.manager->stats()
                .Query(now - 3'600'000, now + 60'000, StatsGroupBy::kPeer)
                .SerializeAsString(),
            before);
}

}  // namespace
}  // namespace tipd::node
