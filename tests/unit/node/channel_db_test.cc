// ChannelDb: two real Channels (A and B) wired by in-memory message passing,
// each persisting every step into its own LevelDB through a GroupCommitter,
// reopened and restored at random points.
#include "node/channel_db.h"

#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <random>
#include <variant>

#include "storage/storage.h"
#include "tests/support/test_support.h"
#include "tests/unit/channel/channel_test_util.h"

namespace tipd::node {
namespace {

using channel::Channel;
using channel::ChannelParams;
using channel::ChannelSnapshot;
using channel::testing::Draft;
using channel::testing::KeyFromByte;
using channel::testing::ParamsFor;
using channel::testing::SeededRandom;
using storage::Direction;

using Message = std::variant<v1::TipUpdate, v1::Ack>;

std::string Bytes(const crypto::PublicKey& k) { return std::string(AsStringView(k.bytes())); }

v1::StoredChannel RecordOf(const ChannelParams& p) {
  v1::StoredChannel c;
  c.set_channel_id(std::string(AsStringView(p.channel_id)));
  c.set_chain_id(p.chain_id);
  c.set_local_key(Bytes(p.local_key));
  c.set_remote_key(Bytes(p.remote_key));
  c.set_local_is_a(p.local_is_a);
  c.set_deposit_local(p.deposit_local);
  c.set_deposit_remote(p.deposit_remote);
  c.set_settle_timeout(144);
  c.set_phase(v1::STORED_CHANNEL_PHASE_OPEN);
  c.set_max_updates_in_flight(p.max_updates_in_flight);
  c.set_max_tips_per_update(p.max_tips_per_update);
  return c;
}

// What survives a crash: everything but the queue of tips not yet signed.
ChannelSnapshot Persistable(ChannelSnapshot s) {
  s.queued_tips = 0;
  s.queued_amount = 0;
  return s;
}

std::string ChannelIdBytes() {
  return std::string(AsStringView(channel::testing::TestChannelId()));
}

// One party: its key, its database and its channel.
struct Side {
  std::filesystem::path dir;
  crypto::KeyPair key;
  std::unique_ptr<storage::Database> db;
  std::unique_ptr<storage::GroupCommitter> committer;
  std::unique_ptr<ChannelDb> cdb;
  std::optional<Channel> ch;

  Side(std::filesystem::path d, crypto::KeyPair k) : dir(std::move(d)), key(std::move(k)) {}

  void OpenDb() {
    auto opened = storage::Database::Open(dir);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    db = std::move(opened).value();
    committer = std::make_unique<storage::GroupCommitter>(db.get());
    cdb = std::make_unique<ChannelDb>(db.get());
  }
  void CloseDb() {
    cdb.reset();
    committer.reset();
    db.reset();
  }
  void Commit(storage::WriteBatch batch) {
    ASSERT_TRUE(committer->SubmitAndWait(std::move(batch)).ok());
  }
  // Crash and restart: the in-memory channel is lost, the database reopened.
  void Restart() {
    ch.reset();
    CloseDb();
    ASSERT_NO_FATAL_FAILURE(OpenDb());
    auto restored = cdb->Restore(ChannelIdBytes(), key.public_key());
    ASSERT_TRUE(restored.ok()) << restored.status().ToString();
    ch.emplace(std::move(restored).value());
  }
  const ChannelSnapshot Snap() const { return ch->Snapshot(); }
};

class Pair {
 public:
  explicit Pair(uint32_t window = 8, uint32_t max_tips = 256, uint64_t seed = 1)
      : rng_(seed),
        a_(dir_a_.path() / "db", KeyFromByte(0x01)),
        b_(dir_b_.path() / "db", KeyFromByte(0x02)) {
    Init(a_, b_, true, window, max_tips);
    Init(b_, a_, false, window, max_tips);
  }

  Side& a() { return a_; }
  Side& b() { return b_; }
  std::deque<Message>& to(Side& s) { return &s == &a_ ? to_a_ : to_b_; }
  Side& other(Side& s) { return &s == &a_ ? b_ : a_; }
  crypto::RandomSource& rng() { return rng_; }

  // Queues the drafts at `from` and sends every update the window allows.
  void Send(Side& from, const std::vector<channel::TipDraft>& drafts) {
    for (const auto& d : drafts) ASSERT_TRUE(from.ch->QueueTip(d).ok());
    ASSERT_NO_FATAL_FAILURE(Flush(from));
  }
  void Flush(Side& from) {
    for (;;) {
      const std::string before = from.Snap().sent_tips_root;
      auto out = from.ch->TakeNextUpdate(from.key, rng_);
      if (!out) return;
      storage::WriteBatch batch;
      ASSERT_TRUE(from.cdb->StageOutgoingUpdate(&batch, before, *out).ok());
      ASSERT_NO_FATAL_FAILURE(from.Commit(std::move(batch)));
      sent_.push_back(out->update);
      to(other(from)).push_back(out->update);
    }
  }
  // `at` handles the oldest message addressed to it.
  void Deliver(Side& at) {
    std::deque<Message>& in = to(at);
    ASSERT_FALSE(in.empty());
    Message m = std::move(in.front());
    in.pop_front();
    if (auto* update = std::get_if<v1::TipUpdate>(&m)) {
      auto v = at.ch->CheckUpdate(*update);
      ASSERT_TRUE(v.ok()) << v.error().ToString();
      const std::string before = at.Snap().received_tips_root;
      ASSERT_TRUE(at.ch->ApplyUpdate(*v).ok());
      auto ack = at.ch->MakeAck(at.key, rng_);
      ASSERT_TRUE(ack.has_value());
      storage::WriteBatch batch;
      ASSERT_TRUE(at.cdb->StageReceivedUpdate(&batch, before, *v, *ack).ok());
      ASSERT_NO_FATAL_FAILURE(at.Commit(std::move(batch)));
      to(other(at)).push_back(*ack);
    } else {
      const v1::Ack& ack = std::get<v1::Ack>(m);
      auto outcome = at.ch->OnAck(ack);
      ASSERT_TRUE(outcome.ok()) << outcome.error().ToString();
      if (outcome->updates_acked > 0) {
        storage::WriteBatch batch;
        ASSERT_TRUE(at.cdb->StageAckReceived(&batch, ack, at.Snap().receipt_transferred).ok());
        ASSERT_NO_FATAL_FAILURE(at.Commit(std::move(batch)));
      }
      ASSERT_NO_FATAL_FAILURE(Flush(at));
    }
  }
  // Crash `s`, restore it and check it equals what it had persisted.
  void Restart(Side& s) {
    const ChannelSnapshot expected = Persistable(s.Snap());
    ASSERT_NO_FATAL_FAILURE(s.Restart());
    ASSERT_EQ(s.Snap(), expected);
  }
  // Reconnect: messages on the wire are lost; both sides reestablish and
  // send what the plan says.
  void Reestablish() {
    to_a_.clear();
    to_b_.clear();
    v1::Reestablish ra = a_.ch->MakeReestablish();
    ra.set_received_tip_count(a_.Snap().received_tip_count);
    v1::Reestablish rb = b_.ch->MakeReestablish();
    rb.set_received_tip_count(b_.Snap().received_tip_count);
    auto plan_a = a_.ch->OnPeerReestablish(rb, rb.received_tip_count());
    auto plan_b = b_.ch->OnPeerReestablish(ra, ra.received_tip_count());
    ASSERT_TRUE(plan_a.ok()) << plan_a.error().ToString();
    ASSERT_TRUE(plan_b.ok()) << plan_b.error().ToString();
    ASSERT_FALSE(plan_a->adopted_own_proof);
    ASSERT_FALSE(plan_b->adopted_own_proof);
    ASSERT_NO_FATAL_FAILURE(Follow(a_, *plan_a));
    ASSERT_NO_FATAL_FAILURE(Follow(b_, *plan_b));
  }
  void Follow(Side& s, const channel::ReestablishPlan& plan) {
    if (plan.send_ack) {
      // The ack was persisted with the update it acknowledges.
      const uint64_t persisted = s.Snap().acked_received_nonce;
      auto ack = s.ch->MakeAck(s.key, rng_);
      ASSERT_TRUE(ack.has_value());
      ASSERT_EQ(ack->nonce(), persisted);
      to(other(s)).push_back(*ack);
    }
    for (const auto& u : plan.resend) to(other(s)).push_back(u);
    ASSERT_NO_FATAL_FAILURE(Flush(s));
  }
  void DrainAll() {
    while (!to_a_.empty() || !to_b_.empty()) {
      if (!to_a_.empty()) {
        ASSERT_NO_FATAL_FAILURE(Deliver(a_));
      }
      if (!to_b_.empty()) {
        ASSERT_NO_FATAL_FAILURE(Deliver(b_));
      }
    }
  }
  const std::vector<v1::TipUpdate>& sent() const { return sent_; }

 private:
  void Init(Side& s, Side& peer, bool is_a, uint32_t window, uint32_t max_tips) {
    ASSERT_NO_FATAL_FAILURE(s.OpenDb());
    ChannelParams p = ParamsFor(s.key, peer.key, is_a, 1'000'000, 1'000'000);
    p.max_updates_in_flight = window;
    p.max_tips_per_update = max_tips;
    auto ch = Channel::Open(p);
    ASSERT_TRUE(ch.ok());
    s.ch.emplace(std::move(ch).value());
    storage::WriteBatch batch;
    ASSERT_TRUE(s.cdb->StageNewChannel(&batch, RecordOf(p)).ok());
    ASSERT_NO_FATAL_FAILURE(s.Commit(std::move(batch)));
  }

  SeededRandom rng_;
  tipd::testing::TempDir dir_a_;
  tipd::testing::TempDir dir_b_;
  Side a_;
  Side b_;
  std::deque<Message> to_a_;
  std::deque<Message> to_b_;
  std::vector<v1::TipUpdate> sent_;
};

channel::TipDraft RichDraft(std::mt19937_64& gen, uint64_t n) {
  channel::TipDraft d = Draft(1 + gen() % 500, "tip #" + std::to_string(n) + " \xe2\x9a\xa1");
  if (gen() % 2) {
    d.metadata["app_name"] = "podverse";
    d.metadata["sender_name"] = "alice " + std::to_string(gen() % 100);
  }
  d.created_at_ms = 1700000000000 + n;
  return d;
}

// Every tip both sides hold in `direction`, through History pages of 7.
std::vector<v1::StoredTip> AllTips(Side& s, Direction direction) {
  std::vector<v1::StoredTip> all;
  uint64_t from = 1;
  for (;;) {
    auto page = s.cdb->History(ChannelIdBytes(), direction, from, 7);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    if (!page.ok() || page->empty()) return all;
    from = page->back().tip().index() + 1;
    for (auto& t : *page) all.push_back(std::move(t));
  }
}

// A stream of tips both ways, single and coalesced, with restarts and
// reconnects at random points. After every restart the restored channel
// equals what was persisted, and the stream continues (every later update
// validates on the other side).
TEST(ChannelDbTest, RandomStreamSurvivesRestarts) {
  const uint64_t seed = tipd::testing::TestSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  int total_restarts = 0;
  int coalesced = 0;
  for (int round = 0; round < 4; ++round) {
    std::mt19937_64 gen(seed + static_cast<uint64_t>(round));
    Pair pair(/*window=*/3, /*max_tips=*/4, seed + static_cast<uint64_t>(round));
    uint64_t n = 0;
    for (int step = 0; step < 120; ++step) {
      const int op = static_cast<int>(gen() % 10);
      Side& side = gen() % 2 ? pair.a() : pair.b();
      if (op < 4) {
        std::vector<channel::TipDraft> drafts;
        const uint64_t k = 1 + gen() % 6;  // bursts coalesce once the window fills
        for (uint64_t i = 0; i < k; ++i) drafts.push_back(RichDraft(gen, ++n));
        ASSERT_NO_FATAL_FAILURE(pair.Send(side, drafts));
      } else if (op < 9) {
        if (!pair.to(side).empty()) {
          ASSERT_NO_FATAL_FAILURE(pair.Deliver(side));
        }
      } else {
        const int which = static_cast<int>(gen() % 3);
        if (which != 1) {
          ASSERT_NO_FATAL_FAILURE(pair.Restart(pair.a()));
        }
        if (which != 0) {
          ASSERT_NO_FATAL_FAILURE(pair.Restart(pair.b()));
        }
        ++total_restarts;
        ASSERT_NO_FATAL_FAILURE(pair.Reestablish());
      }
    }
    // Settle: reconnect, deliver everything, send what is still queued.
    ASSERT_NO_FATAL_FAILURE(pair.Reestablish());
    for (int i = 0; i < 100; ++i) {
      ASSERT_NO_FATAL_FAILURE(pair.DrainAll());
      ASSERT_NO_FATAL_FAILURE(pair.Flush(pair.a()));
      ASSERT_NO_FATAL_FAILURE(pair.Flush(pair.b()));
      if (pair.to(pair.a()).empty() && pair.to(pair.b()).empty()) break;
    }
    const ChannelSnapshot sa = pair.a().Snap();
    const ChannelSnapshot sb = pair.b().Snap();
    EXPECT_EQ(sa.queued_tips, 0u);
    EXPECT_EQ(sb.queued_tips, 0u);
    EXPECT_TRUE(sa.in_flight_nonces.empty());
    EXPECT_TRUE(sb.in_flight_nonces.empty());
    EXPECT_EQ(sa.sent_nonce, sb.received_nonce);
    EXPECT_EQ(sa.sent_tips_root, sb.received_tips_root);
    EXPECT_EQ(sb.sent_transferred, sa.received_transferred);
    EXPECT_EQ(sb.sent_tip_count, sa.received_tip_count);
    // A final restart of both restores exactly.
    ASSERT_NO_FATAL_FAILURE(pair.Restart(pair.a()));
    ASSERT_NO_FATAL_FAILURE(pair.Restart(pair.b()));
    // Both databases hold the same history of each direction, byte for byte.
    for (auto [x, y] : {std::pair<Side*, Side*>{&pair.a(), &pair.b()}, {&pair.b(), &pair.a()}}) {
      const auto sent = AllTips(*x, Direction::kLocalToRemote);
      const auto got = AllTips(*y, Direction::kRemoteToLocal);
      ASSERT_EQ(sent.size(), x->Snap().sent_tip_count);
      ASSERT_EQ(sent.size(), got.size());
      for (size_t i = 0; i < sent.size(); ++i) {
        EXPECT_EQ(sent[i].SerializeAsString(), got[i].SerializeAsString()) << "tip " << i + 1;
      }
      if (!sent.empty()) {
        EXPECT_EQ(sent.back().root_after(), x->Snap().sent_tips_root);
      }
    }
    for (const auto& u : pair.sent()) coalesced += u.tips_size() > 1;
    // Still in step: one more tip each way validates.
    ASSERT_NO_FATAL_FAILURE(pair.Send(pair.a(), {Draft(3)}));
    ASSERT_NO_FATAL_FAILURE(pair.Send(pair.b(), {Draft(4)}));
    ASSERT_NO_FATAL_FAILURE(pair.DrainAll());
  }
  // The stream did restart and did coalesce (fixed seeds make this certain
  // in practice; print the seed if not).
  EXPECT_GT(total_restarts, 0);
  EXPECT_GT(coalesced, 0);
}

TEST(ChannelDbTest, InFlightUpdatesSurviveRestartAndAreResent) {
  Pair pair(/*window=*/2, /*max_tips=*/8);
  Side& a = pair.a();
  Side& b = pair.b();
  // Update 1 alone, update 2 alone, then the window is full: 5 tips queue and
  // leave together as update 3 after the first ack.
  ASSERT_NO_FATAL_FAILURE(pair.Send(a, {Draft(1, "one")}));
  ASSERT_NO_FATAL_FAILURE(pair.Send(a, {Draft(2, "two")}));
  ASSERT_NO_FATAL_FAILURE(
      pair.Send(a, {Draft(3), Draft(4), Draft(5, "five"), Draft(6), Draft(7, "seven")}));
  ASSERT_EQ(pair.sent().size(), 2u);
  ASSERT_NO_FATAL_FAILURE(pair.Deliver(b));  // B holds and acks nonce 1
  ASSERT_NO_FATAL_FAILURE(pair.Deliver(a));  // A takes the ack, sends update 3
  ASSERT_EQ(pair.sent().size(), 3u);
  ASSERT_EQ(pair.sent()[2].tips_size(), 5);
  EXPECT_EQ(a.Snap().in_flight_nonces, (std::vector<uint64_t>{2, 3}));

  // The acked update's in-flight record is gone; the others load with tips.
  auto state = a.cdb->Load(ChannelIdBytes());
  ASSERT_TRUE(state.ok()) << state.status().ToString();
  ASSERT_EQ(state->in_flight.size(), 2u);
  EXPECT_EQ(state->in_flight[0].SerializeAsString(), pair.sent()[1].SerializeAsString());
  EXPECT_EQ(state->in_flight[1].SerializeAsString(), pair.sent()[2].SerializeAsString());

  ASSERT_NO_FATAL_FAILURE(pair.Restart(a));
  // B never got 2 and 3 (lost on the wire); reestablish asks A to resend them.
  pair.to(b).clear();
  v1::Reestablish rb = b.ch->MakeReestablish();
  auto plan = a.ch->OnPeerReestablish(rb, b.Snap().received_tip_count);
  ASSERT_TRUE(plan.ok()) << plan.error().ToString();
  ASSERT_EQ(plan->resend.size(), 2u);
  EXPECT_EQ(plan->resend[0].SerializeAsString(), pair.sent()[1].SerializeAsString());
  EXPECT_EQ(plan->resend[1].SerializeAsString(), pair.sent()[2].SerializeAsString());
  for (const auto& u : plan->resend) pair.to(b).push_back(u);
  ASSERT_NO_FATAL_FAILURE(pair.DrainAll());
  EXPECT_TRUE(a.Snap().in_flight_nonces.empty());
  EXPECT_EQ(b.Snap().received_tip_count, 7u);

  // Acked: no in-flight records remain after a restart either.
  ASSERT_NO_FATAL_FAILURE(pair.Restart(a));
  state = a.cdb->Load(ChannelIdBytes());
  ASSERT_TRUE(state.ok());
  EXPECT_TRUE(state->in_flight.empty());
  EXPECT_EQ(state->receipt->nonce(), 3u);
  EXPECT_EQ(state->receipt_transferred, 28u);
}

TEST(ChannelDbTest, HistoryPagesAreByteIdenticalInIndexOrder) {
  Pair pair(/*window=*/1, /*max_tips=*/3);
  std::mt19937_64 gen(7);
  std::vector<channel::TipDraft> drafts;
  for (uint64_t i = 1; i <= 10; ++i) drafts.push_back(RichDraft(gen, i));
  ASSERT_NO_FATAL_FAILURE(pair.Send(pair.a(), drafts));
  ASSERT_NO_FATAL_FAILURE(pair.DrainAll());
  ASSERT_EQ(pair.sent().size(), 4u);  // 3 + 3 + 3 + 1, one update in flight at a time
  std::vector<v1::Tip> tips;
  std::vector<uint64_t> nonces;
  std::vector<std::string> roots;
  for (const auto& u : pair.sent()) {
    for (const auto& t : u.tips()) {
      tips.push_back(t);
      nonces.push_back(u.proof().nonce());
    }
    roots.push_back(u.proof().tips_root());
  }
  ASSERT_EQ(tips.size(), 10u);

  for (Side* s : {&pair.a(), &pair.b()}) {
    const Direction dir = s == &pair.a() ? Direction::kLocalToRemote : Direction::kRemoteToLocal;
    for (uint64_t from : {0, 1, 2, 5, 9, 10, 11, 1000}) {
      for (size_t limit : {0, 1, 3, 10, 100}) {
        auto page = s->cdb->History(ChannelIdBytes(), dir, from, limit);
        ASSERT_TRUE(page.ok()) << page.status().ToString();
        // The range [from, from + limit) of indices 1..10.
        const uint64_t lo = std::max<uint64_t>(from, 1);
        const uint64_t hi = std::min<uint64_t>(from + limit, 11);
        const size_t expected = hi > lo ? hi - lo : 0;
        ASSERT_EQ(page->size(), expected) << "from " << from << " limit " << limit;
        for (size_t i = 0; i < page->size(); ++i) {
          const v1::StoredTip& st = (*page)[i];
          const uint64_t index = lo + i;
          EXPECT_EQ(st.tip().index(), index);
          EXPECT_EQ(st.tip().SerializeAsString(), tips[index - 1].SerializeAsString());
          EXPECT_EQ(st.nonce(), nonces[index - 1]);
        }
      }
    }
    // The last tip of each update carries the proof's root.
    auto all = s->cdb->History(ChannelIdBytes(), dir, 1, 100);
    ASSERT_TRUE(all.ok());
    ASSERT_EQ(all->size(), 10u);
    for (size_t u = 0; u < pair.sent().size(); ++u) {
      const auto& last = pair.sent()[u].tips(pair.sent()[u].tips_size() - 1);
      EXPECT_EQ((*all)[last.index() - 1].root_after(), roots[u]) << "update " << u + 1;
    }
    // The other direction is empty; a huge index reads nothing.
    auto other = s->cdb->History(
        ChannelIdBytes(),
        dir == Direction::kLocalToRemote ? Direction::kRemoteToLocal : Direction::kLocalToRemote, 1,
        100);
    ASSERT_TRUE(other.ok());
    EXPECT_TRUE(other->empty());
    auto far = s->cdb->History(ChannelIdBytes(), dir, UINT64_MAX, 100);
    ASSERT_TRUE(far.ok());
    EXPECT_TRUE(far->empty());
  }
  // A malformed channel id is refused.
  auto bad = pair.a().cdb->History("short", Direction::kLocalToRemote, 1, 10);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

TEST(ChannelDbTest, HistoryPageIsCapped) {
  Pair pair(/*window=*/8, /*max_tips=*/256);
  std::vector<channel::TipDraft> drafts(ChannelDb::kMaxHistoryPage + 5, Draft(1));
  ASSERT_NO_FATAL_FAILURE(pair.Send(pair.a(), drafts));
  auto page = pair.a().cdb->History(ChannelIdBytes(), Direction::kLocalToRemote, 1, SIZE_MAX);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->size(), ChannelDb::kMaxHistoryPage);
  auto rest = pair.a().cdb->History(ChannelIdBytes(), Direction::kLocalToRemote,
                                    ChannelDb::kMaxHistoryPage + 1, SIZE_MAX);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(rest->size(), 5u);
}

// One step is one batch: a batch dropped before submit leaves nothing, a
// submitted one leaves everything.
TEST(ChannelDbTest, StagedStepIsAllOrNothing) {
  Pair pair;
  Side& a = pair.a();
  Side& b = pair.b();
  const ChannelSnapshot a0 = a.Snap();
  ASSERT_TRUE(a.ch->QueueTip(Draft(5)).ok());
  ASSERT_TRUE(a.ch->QueueTip(Draft(6)).ok());
  const std::string before = a.Snap().sent_tips_root;
  auto out = a.ch->TakeNextUpdate(a.key, pair.rng());
  ASSERT_TRUE(out.has_value());

  // Sender: staged but dropped.
  {
    storage::WriteBatch batch;
    ASSERT_TRUE(a.cdb->StageOutgoingUpdate(&batch, before, *out).ok());
    EXPECT_EQ(batch.count(), 4u);  // direction, 2 tips, in-flight record
  }
  const ChannelSnapshot a1 = a.Snap();
  ASSERT_NO_FATAL_FAILURE(a.Restart());
  EXPECT_EQ(a.Snap(), a0);
  EXPECT_EQ(a.cdb->Load(ChannelIdBytes())->in_flight.size(), 0u);
  // Submitted through the committer: all of it, once the completion fired.
  {
    storage::WriteBatch batch;
    ASSERT_TRUE(a.cdb->StageOutgoingUpdate(&batch, before, *out).ok());
    std::promise<Status> done;
    a.committer->Submit(std::move(batch), [&](Status s) { done.set_value(std::move(s)); });
    ASSERT_TRUE(done.get_future().get().ok());
  }
  ASSERT_NO_FATAL_FAILURE(a.Restart());
  EXPECT_EQ(a.Snap(), Persistable(a1));
  auto hist = a.cdb->History(ChannelIdBytes(), Direction::kLocalToRemote, 1, 10);
  ASSERT_TRUE(hist.ok());
  EXPECT_EQ(hist->size(), 2u);

  // Receiver: the same for proof, tips and the ack.
  const ChannelSnapshot b0 = b.Snap();
  auto v = b.ch->CheckUpdate(out->update);
  ASSERT_TRUE(v.ok());
  const std::string rbefore = b.Snap().received_tips_root;
  ASSERT_TRUE(b.ch->ApplyUpdate(*v).ok());
  auto ack = b.ch->MakeAck(b.key, pair.rng());
  ASSERT_TRUE(ack.has_value());
  const ChannelSnapshot b1 = b.Snap();
  {
    storage::WriteBatch batch;
    ASSERT_TRUE(b.cdb->StageReceivedUpdate(&batch, rbefore, *v, *ack).ok());
  }
  ASSERT_NO_FATAL_FAILURE(b.Restart());
  EXPECT_EQ(b.Snap(), b0);
  {
    auto none = b.cdb->History(ChannelIdBytes(), Direction::kRemoteToLocal, 1, 10);
    ASSERT_TRUE(none.ok());
    EXPECT_TRUE(none->empty());
  }
  {
    storage::WriteBatch batch;
    ASSERT_TRUE(b.cdb->StageReceivedUpdate(&batch, rbefore, *v, *ack).ok());
    std::promise<Status> done;
    b.committer->Submit(std::move(batch), [&](Status s) { done.set_value(std::move(s)); });
    ASSERT_TRUE(done.get_future().get().ok());
  }
  ASSERT_NO_FATAL_FAILURE(b.Restart());
  EXPECT_EQ(b.Snap(), b1);
  // The restored receiver resends the persisted ack and A accepts it.
  auto resent = b.ch->MakeAck(b.key, pair.rng());
  ASSERT_TRUE(resent.has_value());
  EXPECT_EQ(resent->SerializeAsString(), ack->SerializeAsString());
  auto outcome = a.ch->OnAck(*resent);
  ASSERT_TRUE(outcome.ok());
  EXPECT_EQ(outcome->updates_acked, 1u);
}

TEST(ChannelDbTest, StageRefusesInputThatDoesNotFit) {
  Pair pair;
  Side& a = pair.a();
  Side& b = pair.b();
  ASSERT_TRUE(a.ch->QueueTip(Draft(5)).ok());
  const std::string before = a.Snap().sent_tips_root;
  auto out = a.ch->TakeNextUpdate(a.key, pair.rng());
  ASSERT_TRUE(out.has_value());
  storage::WriteBatch batch;
  // Wrong root before: the tips do not reach the proof's root.
  EXPECT_EQ(a.cdb->StageOutgoingUpdate(&batch, std::string(32, '\x01'), *out).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(a.cdb->StageOutgoingUpdate(&batch, "short", *out).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(batch.empty());
  // An ack that is not for this update.
  auto v = b.ch->CheckUpdate(out->update);
  ASSERT_TRUE(v.ok());
  v1::Ack wrong;
  wrong.set_channel_id(ChannelIdBytes());
  wrong.set_nonce(2);
  wrong.set_tips_root(out->update.proof().tips_root());
  EXPECT_EQ(b.cdb->StageReceivedUpdate(&batch, before, *v, wrong).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(batch.empty());
  // A channel record with a malformed id or key.
  v1::StoredChannel record = RecordOf(a.ch->params());
  record.set_remote_key("nope");
  EXPECT_EQ(a.cdb->StageNewChannel(&batch, record).code(), StatusCode::kInvalidArgument);
  record = RecordOf(a.ch->params());
  record.set_channel_id("x");
  EXPECT_EQ(a.cdb->StageNewChannel(&batch, record).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(batch.empty());
}

TEST(ChannelDbTest, PhaseAndDepositsPersist) {
  Pair pair;
  Side& a = pair.a();
  auto list = a.cdb->ListChannels();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  v1::StoredChannel record = (*list)[0];
  EXPECT_EQ(record.phase(), v1::STORED_CHANNEL_PHASE_OPEN);

  ASSERT_TRUE(a.ch->SetDepositLocal(1'500'000).ok());
  ASSERT_TRUE(a.ch->SetDepositRemote(1'200'000).ok());
  storage::WriteBatch batch;
  ASSERT_TRUE(a.cdb->StageDeposits(&batch, &record, 1'500'000, 1'200'000).ok());
  ASSERT_TRUE(a.cdb->StagePhase(&batch, &record, v1::STORED_CHANNEL_PHASE_CLOSING).ok());
  ASSERT_NO_FATAL_FAILURE(a.Commit(std::move(batch)));
  ASSERT_NO_FATAL_FAILURE(pair.Restart(a));  // deposits are in the snapshot
  auto got = a.cdb->GetChannel(ChannelIdBytes());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->phase(), v1::STORED_CHANNEL_PHASE_CLOSING);
  EXPECT_EQ(got->deposit_local(), 1'500'000u);
  EXPECT_EQ(got->deposit_remote(), 1'200'000u);
  EXPECT_EQ(got->settle_timeout(), 144u);

  // Unknown channel; another node's key.
  const std::string unknown(32, '\x7f');
  EXPECT_EQ(a.cdb->Restore(unknown, a.key.public_key()).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(a.cdb->Restore(ChannelIdBytes(), pair.b().key.public_key()).status().code(),
            StatusCode::kFailedPrecondition);
}

// Restored from a backup that is behind: reestablish adopts the peer's copy
// of our latest proof; persisted, it restores exactly and the stream goes on.
TEST(ChannelDbTest, AdoptedOwnProofPersists) {
  Pair pair;
  Side& a = pair.a();
  Side& b = pair.b();
  ASSERT_NO_FATAL_FAILURE(pair.Send(a, {Draft(10)}));
  ASSERT_NO_FATAL_FAILURE(pair.DrainAll());
  // Back up A's database (closed), then go on.
  a.ch.reset();
  a.CloseDb();
  const auto backup = a.dir.parent_path() / "backup";
  std::filesystem::copy(a.dir, backup, std::filesystem::copy_options::recursive);
  ASSERT_NO_FATAL_FAILURE(a.Restart());
  ASSERT_NO_FATAL_FAILURE(pair.Send(a, {Draft(1), Draft(2)}));
  ASSERT_NO_FATAL_FAILURE(pair.Send(a, {Draft(3)}));
  ASSERT_NO_FATAL_FAILURE(pair.DrainAll());
  ASSERT_EQ(b.Snap().received_nonce, 3u);

  // A comes back from the backup: one nonce and one tip.
  a.ch.reset();
  a.CloseDb();
  std::filesystem::remove_all(a.dir);
  std::filesystem::rename(backup, a.dir);
  ASSERT_NO_FATAL_FAILURE(a.Restart());
  ASSERT_EQ(a.Snap().sent_nonce, 1u);

  v1::Reestablish rb = b.ch->MakeReestablish();
  rb.set_received_tip_count(b.Snap().received_tip_count);
  auto plan = a.ch->OnPeerReestablish(rb, rb.received_tip_count());
  ASSERT_TRUE(plan.ok()) << plan.error().ToString();
  ASSERT_TRUE(plan->adopted_own_proof);
  storage::WriteBatch batch;
  ASSERT_TRUE(
      a.cdb->StageAdoptedOwnProof(&batch, rb.received_proof(), rb.received_tip_count()).ok());
  ASSERT_NO_FATAL_FAILURE(a.Commit(std::move(batch)));
  ASSERT_NO_FATAL_FAILURE(pair.Restart(a));
  EXPECT_EQ(a.Snap().sent_nonce, 3u);
  EXPECT_EQ(a.Snap().sent_tip_count, 4u);
  EXPECT_EQ(a.Snap().in_flight_nonces, (std::vector<uint64_t>{3}));

  // B's side of reestablish resends its ack, which releases the adopted proof.
  v1::Reestablish ra = a.ch->MakeReestablish();
  auto plan_b = b.ch->OnPeerReestablish(ra, a.Snap().received_tip_count);
  ASSERT_TRUE(plan_b.ok()) << plan_b.error().ToString();
  ASSERT_TRUE(plan_b->send_ack);
  pair.to(a).push_back(*b.ch->MakeAck(b.key, pair.rng()));
  ASSERT_NO_FATAL_FAILURE(pair.DrainAll());
  EXPECT_TRUE(a.Snap().in_flight_nonces.empty());
  ASSERT_NO_FATAL_FAILURE(pair.Restart(a));
  EXPECT_TRUE(a.cdb->Load(ChannelIdBytes())->in_flight.empty());
  // The next tip continues from index 5, nonce 4.
  ASSERT_NO_FATAL_FAILURE(pair.Send(a, {Draft(7)}));
  ASSERT_NO_FATAL_FAILURE(pair.DrainAll());
  EXPECT_EQ(b.Snap().received_nonce, 4u);
  EXPECT_EQ(b.Snap().received_tip_count, 5u);
}

TEST(ChannelDbTest, CorruptRecordIsAnErrorNamingTheKey) {
  Pair pair;
  Side& a = pair.a();
  ASSERT_NO_FATAL_FAILURE(pair.Send(a, {Draft(1), Draft(2)}));
  const std::string id = ChannelIdBytes();
  auto write = [&](const std::string& key, const std::string& value) {
    storage::WriteBatch batch;
    batch.Put(key, value);
    ASSERT_TRUE(a.db->Write(batch).ok());
  };
  auto expect_corrupt_at = [&](const std::string& key) {
    auto state = a.cdb->Load(id);
    ASSERT_FALSE(state.ok());
    EXPECT_EQ(state.status().code(), StatusCode::kCorruption);
    EXPECT_NE(state.status().message().find(storage::EscapeKey(key)), std::string::npos)
        << state.status().ToString();
    auto restored = a.cdb->Restore(id, a.key.public_key());
    ASSERT_FALSE(restored.ok());
    EXPECT_EQ(restored.status().code(), StatusCode::kCorruption);
  };

  // Bytes that do not parse.
  const std::string dkey = storage::DirectionKey(id, Direction::kLocalToRemote);
  auto good_direction = a.db->Get(dkey);
  ASSERT_TRUE(good_direction.ok() && good_direction->has_value());
  write(dkey, "\xff\xff\xff garbage");
  ASSERT_NO_FATAL_FAILURE(expect_corrupt_at(dkey));
  write(dkey, **good_direction);
  ASSERT_TRUE(a.cdb->Load(id).ok());

  // An in-flight record of an unknown (newer) version.
  const std::string okey = OutgoingUpdateKey(id, 1);
  auto good_outgoing = a.db->Get(okey);
  ASSERT_TRUE(good_outgoing.ok() && good_outgoing->has_value());
  v1::StoredOutgoingUpdate future;
  ASSERT_TRUE(future.ParseFromString(**good_outgoing));
  future.set_version(99);
  write(okey, future.SerializeAsString());
  ASSERT_NO_FATAL_FAILURE(expect_corrupt_at(okey));
  write(okey, **good_outgoing);

  // An in-flight record whose tips are missing from the history.
  {
    storage::WriteBatch batch;
    batch.Delete(storage::TipKey(id, Direction::kLocalToRemote, 2));
    ASSERT_TRUE(a.db->Write(batch).ok());
  }
  ASSERT_NO_FATAL_FAILURE(expect_corrupt_at(okey));

  // A receipt record that does not parse.
  const std::string rkey = ReceiptKey(id, Direction::kRemoteToLocal);
  write(rkey, "\x0a\xff");
  auto state = a.cdb->Load(id);
  ASSERT_FALSE(state.ok());
  EXPECT_EQ(state.status().code(), StatusCode::kCorruption);
  // The channel record itself.
  const std::string ckey = storage::ChannelKey(id);
  write(ckey, "\x08\x07");  // version 7
  auto restored = a.cdb->Restore(id, a.key.public_key());
  ASSERT_FALSE(restored.ok());
  EXPECT_EQ(restored.status().code(), StatusCode::kCorruption);
  EXPECT_NE(restored.status().message().find(storage::EscapeKey(ckey)), std::string::npos);
  auto list = a.cdb->ListChannels();
  EXPECT_EQ(list.status().code(), StatusCode::kCorruption);
}

}  // namespace
}  // namespace tipd::node
