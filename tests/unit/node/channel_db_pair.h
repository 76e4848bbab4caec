// The ChannelDb tests' two parties: two real Channels (A and B) wired by
// in-memory message passing, each persisting every step into its own LevelDB
// through a GroupCommitter, as the node does. Shared by channel_db_test.cc and
// the crash test's child (channel_db_crash_child.cc), which runs the same
// deterministic script so that the parent can tell what every step wrote.
#pragma once

#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "node/channel_db.h"
#include "storage/storage.h"
#include "tests/support/test_support.h"
#include "tests/unit/channel/channel_test_util.h"

namespace tipd::node::dbtest {

using channel::Channel;
using channel::ChannelParams;
using channel::ChannelSnapshot;
using channel::testing::Draft;
using channel::testing::KeyFromByte;
using channel::testing::ParamsFor;
using channel::testing::SeededRandom;
using storage::Direction;

using Message = std::variant<v1::TipUpdate, v1::Ack>;

inline std::string Bytes(const crypto::PublicKey& k) {
  return std::string(AsStringView(k.bytes()));
}

inline v1::StoredChannel RecordOf(const ChannelParams& p) {
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
inline ChannelSnapshot Persistable(ChannelSnapshot s) {
  s.queued_tips = 0;
  s.queued_amount = 0;
  return s;
}

inline std::string ChannelIdBytes() {
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
  // A clean restart: the in-memory channel is lost, the database closed and
  // reopened (a process killed mid-write: ChannelDbCrashTest).
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
      : Pair({}, window, max_tips, seed) {}
  // The databases in `root`/a and `root`/b (left there), or in temporary
  // directories of their own if `root` is empty.
  Pair(const std::filesystem::path& root, uint32_t window, uint32_t max_tips, uint64_t seed)
      : rng_(seed),
        dir_a_(root.empty() ? std::make_unique<tipd::testing::TempDir>() : nullptr),
        dir_b_(root.empty() ? std::make_unique<tipd::testing::TempDir>() : nullptr),
        a_(root.empty() ? dir_a_->path() / "db" : root / "a", KeyFromByte(0x01)),
        b_(root.empty() ? dir_b_->path() / "db" : root / "b", KeyFromByte(0x02)) {
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
      ASSERT_NO_FATAL_FAILURE(Step(from, std::move(batch)));
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
      ASSERT_NO_FATAL_FAILURE(Step(at, std::move(batch)));
      to(other(at)).push_back(*ack);
    } else {
      const v1::Ack& ack = std::get<v1::Ack>(m);
      auto outcome = at.ch->OnAck(ack);
      ASSERT_TRUE(outcome.ok()) << outcome.error().ToString();
      if (outcome->updates_acked > 0) {
        storage::WriteBatch batch;
        ASSERT_TRUE(at.cdb->StageAckReceived(&batch, ack, at.Snap().receipt_transferred).ok());
        ASSERT_NO_FATAL_FAILURE(Step(at, std::move(batch)));
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

  // Called after every step of the stream (one batch) is durable: the
  // completion of its GroupCommitter submission has fired OK.
  std::function<void()> on_durable_step;

 private:
  void Step(Side& s, storage::WriteBatch batch) {
    ASSERT_NO_FATAL_FAILURE(s.Commit(std::move(batch)));
    if (on_durable_step) on_durable_step();
  }
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
  std::unique_ptr<tipd::testing::TempDir> dir_a_;
  std::unique_ptr<tipd::testing::TempDir> dir_b_;
  Side a_;
  Side b_;
  std::deque<Message> to_a_;
  std::deque<Message> to_b_;
  std::vector<v1::TipUpdate> sent_;
};

inline channel::TipDraft RichDraft(std::mt19937_64& gen, uint64_t n) {
  channel::TipDraft d = Draft(1 + gen() % 500, "tip #" + std::to_string(n) + " \xe2\x9a\xa1");
  if (gen() % 2) {
    d.metadata["app_name"] = "podverse";
    d.metadata["sender_name"] = "alice " + std::to_string(gen() % 100);
  }
  d.created_at_ms = 1700000000000 + n;
  return d;
}

// The crash test's script and the Pair it runs on.
inline constexpr uint32_t kCrashWindow = 3;
inline constexpr uint32_t kCrashMaxTips = 4;
inline constexpr int kCrashOps = 160;

// The crash test's script: `ops` random sends (bursts that coalesce once the
// window fills) and deliveries both ways, then everything delivered. A pure
// function of `seed` (with a Pair built on the same seed): every run writes
// the same steps in the same order.
inline void RunCrashScript(Pair& pair, uint64_t seed, int ops) {
  std::mt19937_64 gen(seed);
  uint64_t n = 0;
  for (int op = 0; op < ops; ++op) {
    Side& side = gen() % 2 ? pair.a() : pair.b();
    if (gen() % 10 < 4) {
      std::vector<channel::TipDraft> drafts;
      const uint64_t k = 1 + gen() % 5;
      for (uint64_t i = 0; i < k; ++i) drafts.push_back(RichDraft(gen, ++n));
      ASSERT_NO_FATAL_FAILURE(pair.Send(side, drafts));
    } else if (!pair.to(side).empty()) {
      ASSERT_NO_FATAL_FAILURE(pair.Deliver(side));
    }
  }
  ASSERT_NO_FATAL_FAILURE(pair.DrainAll());
}

}  // namespace tipd::node::dbtest
