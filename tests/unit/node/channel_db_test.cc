// ChannelDb: two real Channels (A and B) wired by in-memory message passing,
// each persisting every step into its own LevelDB through a GroupCommitter
// (channel_db_pair.h). Clean restarts (close, reopen, restore) at random
// points of a stream; and a process SIGKILLed at random moments while it
// writes (ChannelDbCrashTest, with channel_db_crash_child.cc).
#include "node/channel_db.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <tuple>
#include <variant>

#include "storage/storage.h"
#include "tests/support/test_support.h"
#include "tests/unit/channel/channel_test_util.h"
#include "tests/unit/node/channel_db_pair.h"

extern char** environ;

namespace tipd::node {
namespace {

using namespace dbtest;  // NOLINT
using channel::ChannelSnapshot;
using channel::testing::Draft;
using storage::Direction;

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

// A stream of tips both ways, single and coalesced, with clean restarts
// (close and reopen between two steps; kills mid-write are
// ChannelDbCrashTest's) and reconnects at random points. After every restart
// the restored channel
// equals what was persisted, and the stream continues (every later update
// validates on the other side).
TEST(ChannelDbTest, RandomStreamSurvivesRestarts) {
  const uint64_t seed = tipd::testing::TestSeed();
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed));
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

// One step is one batch, and staging writes nothing: a batch dropped before
// submit leaves nothing, a submitted one leaves everything. (A write torn by
// a crash: ChannelDbCrashTest below.)
TEST(ChannelDbTest, StagedStepIsOneBatchWrittenOnlyOnSubmit) {
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

// ---------------------------------------------------------------------------
// Killed while writing. A child process (channel_db_crash_child.cc) runs
// RunCrashScript and reports on a pipe the number of every step whose batch
// is durable; the parent SIGKILLs it at a random moment, reopens both
// databases and restores the channels. The same script run here first
// (deterministic for a seed) tells what each side's state was after every
// step: the restored state must be the one after the last reported step or
// after the next one (durable, killed before it was reported), never one
// with a step half applied, and the history must hold exactly the tips that
// state covers.

struct CrashChild {
  pid_t pid = -1;
  int fd = -1;
};

CrashChild SpawnCrashChild(const std::filesystem::path& root, uint64_t seed) {
  // The environment is built before fork: the child only dup2s and execs.
  std::vector<std::string> env_strings = {"TIPD_CRASH_CHILD_DIR=" + root.string(),
                                          "TIPD_CRASH_CHILD_SEED=" + std::to_string(seed)};
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "TIPD_CRASH_CHILD_", 17) != 0) env_strings.emplace_back(*e);
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string arg0 = TIPD_CHANNEL_DB_CRASH_CHILD;
  std::string arg1 = "--gtest_brief=1";
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 3);  // the report pipe is fd 3 in the child (dup2 clears O_CLOEXEC)
    ::execve(argv[0], argv, envp.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    return {};
  }
  return CrashChild{pid, fds[0]};
}

bool ReadStep(int fd, uint64_t* step) {
  char buf[8];
  size_t got = 0;
  while (got < sizeof(buf)) {
    ssize_t n = ::read(fd, buf + got, sizeof(buf) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  std::memcpy(step, buf, sizeof(*step));
  return true;
}

// The restored side: its state is one of `allowed` and its history holds
// exactly the tips that state covers, each direction ending at its root.
void VerifyCrashedSide(const std::filesystem::path& dir, const crypto::KeyPair& key,
                       const std::vector<const ChannelSnapshot*>& allowed, size_t* at_next) {
  auto db = storage::Database::Open(dir);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ChannelDb cdb(db->get());
  auto restored = cdb.Restore(ChannelIdBytes(), key.public_key());
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  const ChannelSnapshot got = restored->Snapshot();
  const auto it = std::find_if(allowed.begin(), allowed.end(),
                               [&](const ChannelSnapshot* s) { return *s == got; });
  ASSERT_NE(it, allowed.end()) << dir << ": restored state (sent nonce " << got.sent_nonce
                               << ", received nonce " << got.received_nonce << ", receipt nonce "
                               << got.receipt_nonce
                               << ") is not the state after the last reported step ("
                               << allowed[0]->sent_nonce << ", " << allowed[0]->received_nonce
                               << ", " << allowed[0]->receipt_nonce << ") nor after the next";
  if (it != allowed.begin() && !(*allowed.front() == got)) ++*at_next;
  for (auto [direction, count, root] :
       {std::tuple{Direction::kLocalToRemote, got.sent_tip_count, got.sent_tips_root},
        std::tuple{Direction::kRemoteToLocal, got.received_tip_count, got.received_tips_root}}) {
    auto tips = cdb.History(ChannelIdBytes(), direction, 1, ChannelDb::kMaxHistoryPage);
    ASSERT_TRUE(tips.ok()) << tips.status().ToString();
    ASSERT_EQ(tips->size(), count) << dir << ": tips beyond or short of the proof";
    if (count > 0) {
      EXPECT_EQ(tips->back().tip().index(), count);
      EXPECT_EQ(tips->back().root_after(), root);
    }
  }
}

TEST(ChannelDbCrashTest, KilledWhileWritingKeepsEveryReportedStepWhole) {
  const uint64_t seed = tipd::testing::TestSeed();
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr int kRounds = 12;

  // The reference run: each side's persistable state after every step.
  std::vector<ChannelSnapshot> ref_a, ref_b;
  {
    Pair ref({}, kCrashWindow, kCrashMaxTips, seed);
    ref_a.push_back(Persistable(ref.a().Snap()));
    ref_b.push_back(Persistable(ref.b().Snap()));
    ref.on_durable_step = [&] {
      ref_a.push_back(Persistable(ref.a().Snap()));
      ref_b.push_back(Persistable(ref.b().Snap()));
    };
    ASSERT_NO_FATAL_FAILURE(RunCrashScript(ref, seed, kCrashOps));
  }
  const uint64_t total = ref_a.size() - 1;
  ASSERT_GT(total, 20u);

  size_t at_next = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    tipd::testing::TempDir root("tipd-chdb-crash");
    const uint64_t target = 1 + rng() % total;
    const auto linger = std::chrono::microseconds(rng() % 4000);
    CrashChild child = SpawnCrashChild(root.path(), seed);
    ASSERT_GT(child.pid, 0) << "cannot start " << TIPD_CHANNEL_DB_CRASH_CHILD;
    uint64_t step = 0, reported = 0, got = 0;
    bool alive = true;
    while (got < target && (alive = ReadStep(child.fd, &step))) {
      ASSERT_EQ(step, reported + 1) << "steps are reported in order";
      reported = step;
      ++got;
    }
    std::this_thread::sleep_for(linger);  // land anywhere in the next write
    ::kill(child.pid, SIGKILL);
    int wstatus = 0;
    ::waitpid(child.pid, &wstatus, 0);
    while (ReadStep(child.fd, &step)) {
      if (step == UINT64_MAX) continue;  // the script finished
      reported = std::max(reported, step);
    }
    ::close(child.fd);
    ASSERT_TRUE(alive) << "the child exited before it was killed (status " << wstatus << "): run "
                       << TIPD_CHANNEL_DB_CRASH_CHILD
                       << " with TIPD_CRASH_CHILD_DIR and TIPD_CRASH_CHILD_SEED=" << seed;
    ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL) << wstatus;
    ASSERT_LE(reported, total);

    // Every reported step is there, whole; at most the next one too.
    for (auto [side, ref, key] : {std::tuple{"a", &ref_a, channel::testing::KeyFromByte(0x01)},
                                  std::tuple{"b", &ref_b, channel::testing::KeyFromByte(0x02)}}) {
      std::vector<const ChannelSnapshot*> allowed = {&(*ref)[reported]};
      if (reported < total) allowed.push_back(&(*ref)[reported + 1]);
      ASSERT_NO_FATAL_FAILURE(VerifyCrashedSide(root.path() / side, key, allowed, &at_next));
    }
  }
  std::printf(
      "channel db crash test: %d kills over a %llu-step script; %zu restores held the unreported "
      "next step; %.2f s\n",
      kRounds, static_cast<unsigned long long>(total), at_next,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

}  // namespace
}  // namespace tipd::node
