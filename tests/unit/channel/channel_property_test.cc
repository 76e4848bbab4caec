// Randomized interleavings of two honest parties on one channel, with invalid
// updates mixed in and reconnects (reestablish) along the way.
//
// Each direction is one in-order connection (a FIFO carrying both updates and
// acks); the two directions interleave freely, acks are delayed at random and
// a reconnect loses whatever was on the wire. Invariants after every step:
// rejected input changes nothing, nonces only grow, nobody spends more than
// it has, deposits are conserved by the final balances; once everything is
// delivered, both sides agree on what each direction transferred.
//
// Each party persists every step the way the node does, through the node's
// own code: node::ChannelDb's Stage* calls into a real LevelDB (one per party,
// in a TempDir) committed by a GroupCommitter before anything is sent. A
// restart closes and reopens that database and rebuilds the channel with
// ChannelDb::Restore, so it restores what was actually written, not a copy
// the test keeps.
#include <gtest/gtest.h>
#include <leveldb/env.h>

#include <chrono>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "channel/channel.h"
#include "node/channel_db.h"
#include "storage/storage.h"
#include "tests/support/test_support.h"
#include "tests/unit/channel/channel_test_util.h"

namespace tipd::channel {
namespace {

using testing::KeyFromByte;
using testing::SeededRandom;

struct Message {
  bool is_ack = false;
  v1::TipUpdate update;
  v1::Ack ack;
};

// LevelDB's real files in the TempDir, without the fsync: a restart here is
// a clean close and reopen (a process killed mid-write is the crash tests'
// job), and 20,000 synced writes would make this suite far too slow.
class NoSyncEnv : public leveldb::EnvWrapper {
 public:
  NoSyncEnv() : EnvWrapper(leveldb::Env::Default()) {}
  leveldb::Status NewWritableFile(const std::string& f, leveldb::WritableFile** r) override {
    leveldb::Status s = target()->NewWritableFile(f, r);
    if (s.ok()) *r = new File(*r);
    return s;
  }
  leveldb::Status NewAppendableFile(const std::string& f, leveldb::WritableFile** r) override {
    leveldb::Status s = target()->NewAppendableFile(f, r);
    if (s.ok()) *r = new File(*r);
    return s;
  }

 private:
  class File : public leveldb::WritableFile {
   public:
    explicit File(leveldb::WritableFile* base) : base_(base) {}
    leveldb::Status Append(const leveldb::Slice& data) override { return base_->Append(data); }
    leveldb::Status Close() override { return base_->Close(); }
    leveldb::Status Flush() override { return base_->Flush(); }
    leveldb::Status Sync() override { return base_->Flush(); }

   private:
    std::unique_ptr<leveldb::WritableFile> base_;
  };
};

// One party's node database: LevelDB, its GroupCommitter and the ChannelDb
// on top, as the node wires them. Shared by every run of the test (each run
// is its own channel id), reopened on a restart.
struct Store {
  explicit Store(std::filesystem::path d) : dir(std::move(d)) {}
  std::filesystem::path dir;
  leveldb::Env* env = nullptr;
  std::unique_ptr<storage::Database> db;
  std::unique_ptr<storage::GroupCommitter> committer;
  std::unique_ptr<node::ChannelDb> cdb;

  void Open() {
    storage::Options o;
    o.env = env;
    o.block_cache_bytes = 1 << 20;
    o.write_buffer_bytes = 1 << 20;
    auto opened = storage::Database::Open(dir, o);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    db = std::move(opened).value();
    committer = std::make_unique<storage::GroupCommitter>(db.get());
    cdb = std::make_unique<node::ChannelDb>(db.get());
  }
  void Reopen() {
    cdb.reset();
    committer.reset();
    db.reset();
    Open();
  }
  void Commit(storage::WriteBatch batch) {
    Status st = committer->SubmitAndWait(std::move(batch));
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
};

struct Side {
  Side(const char* n, crypto::KeyPair k, Channel c, Store* st)
      : name(n), key(std::move(k)), ch(std::move(c)), store(st) {}
  const char* name;
  crypto::KeyPair key;
  Channel ch;
  Store* store;
  std::deque<Message> inbox;  // from the peer, in order
  bool ack_pending = false;
  std::optional<v1::Ack> last_ack;  // persisted with the update it acks
  uint64_t tips_queued = 0;
  uint64_t amount_queued = 0;
};

v1::StoredChannel RecordOf(const ChannelParams& p) {
  v1::StoredChannel c;
  c.set_channel_id(std::string(AsStringView(p.channel_id)));
  c.set_chain_id(p.chain_id);
  c.set_local_key(std::string(AsStringView(p.local_key.bytes())));
  c.set_remote_key(std::string(AsStringView(p.remote_key.bytes())));
  c.set_local_is_a(p.local_is_a);
  c.set_deposit_local(p.deposit_local);
  c.set_deposit_remote(p.deposit_remote);
  c.set_settle_timeout(144);
  c.set_phase(v1::STORED_CHANNEL_PHASE_OPEN);
  c.set_max_updates_in_flight(p.max_updates_in_flight);
  c.set_max_tips_per_update(p.max_tips_per_update);
  return c;
}

// A channel id per run, so that runs share the two databases.
ChannelId RunChannelId(uint64_t run) {
  ChannelId id = testing::TestChannelId();
  for (int i = 0; i < 8; ++i) id[static_cast<size_t>(i)] = static_cast<uint8_t>(run >> (8 * i));
  return id;
}

class Simulation {
 public:
  Simulation(uint64_t seed, const ChannelId& id, Store* store_a, Store* store_b, uint64_t deposit_a,
             uint64_t deposit_b, uint32_t window, uint32_t max_tips)
      : gen_(seed),
        rng_(seed ^ 0x5eed),
        id_(id),
        a_{"A", KeyFromByte(0x01),
           Make(id, 0x01, 0x02, true, deposit_a, deposit_b, window, max_tips), store_a},
        b_{"B", KeyFromByte(0x02),
           Make(id, 0x02, 0x01, false, deposit_b, deposit_a, window, max_tips), store_b},
        total_(deposit_a + deposit_b) {}

  size_t rejections() const { return rejections_; }
  size_t reconnects() const { return reconnects_; }
  size_t restarts() const { return restarts_; }

  void Run(int steps) {
    // The channel records, as the node writes them when the channel opens.
    for (Side* s : {&a_, &b_}) {
      storage::WriteBatch batch;
      Status st = s->store->cdb->StageNewChannel(&batch, RecordOf(s->ch.params()));
      ASSERT_TRUE(st.ok()) << st.ToString();
      ASSERT_NO_FATAL_FAILURE(s->store->Commit(std::move(batch)));
    }
    for (int i = 0; i < steps && !::testing::Test::HasFatalFailure(); ++i) {
      Step();
      CheckInvariants();
    }
    Drain();
    CheckAgreement();
  }

 private:
  static Channel Make(const ChannelId& id, uint8_t local, uint8_t remote, bool is_a, uint64_t dl,
                      uint64_t dr, uint32_t window, uint32_t max_tips) {
    ChannelParams p = testing::ParamsFor(KeyFromByte(local), KeyFromByte(remote), is_a, dl, dr);
    p.channel_id = id;
    p.max_updates_in_flight = window;
    p.max_tips_per_update = max_tips;
    return std::move(Channel::Open(p)).value();
  }

  uint64_t Uniform(uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(gen_);
  }
  bool Chance(int percent) { return Uniform(1, 100) <= static_cast<uint64_t>(percent); }

  void Step() {
    const bool a_first = Chance(50);
    Side& s = a_first ? a_ : b_;
    Side& peer = a_first ? b_ : a_;
    const uint64_t roll = Uniform(1, 100);
    if (roll <= 35) {
      QueueTips(s, peer);
    } else if (roll <= 75) {
      Deliver(s, peer);
    } else if (roll <= 87) {
      FlushAck(s, peer);
    } else if (roll <= 97) {
      InjectInvalid(s, peer);
    } else if (roll <= 99) {
      Reconnect();
    } else {
      Restart(s);
    }
  }

  // Signs what the window allows; each update is durable before it leaves.
  // An ack made (and persisted) earlier leaves first: the balance it lets us
  // spend must not reach the peer before the ack itself.
  void Pump(Side& s, Side& peer) {
    if (s.ack_pending) FlushAck(s, peer, /*then_pump=*/false);
    for (;;) {
      const std::string root_before = s.ch.Snapshot().sent_tips_root;
      auto out = s.ch.TakeNextUpdate(s.key, rng_);
      if (!out) return;
      storage::WriteBatch batch;
      Status st = s.store->cdb->StageOutgoingUpdate(&batch, root_before, *out);
      ASSERT_TRUE(st.ok()) << s.name << ": " << st.ToString();
      ASSERT_NO_FATAL_FAILURE(s.store->Commit(std::move(batch)));
      peer.inbox.push_back(Message{false, out->update, {}});
    }
  }

  void QueueTips(Side& s, Side& peer) {
    const uint64_t n = Uniform(1, 4);
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t spendable = s.ch.SpendableLocal();
      const bool overspend = spendable == 0 || Chance(10);
      TipDraft d = testing::Draft(overspend ? spendable + Uniform(1, 100)
                                            : Uniform(1, std::max<uint64_t>(1, spendable / 3)),
                                  "tip " + std::to_string(s.tips_queued));
      if (Chance(30)) d.metadata["app_name"] = "sim";
      ChannelSnapshot before = s.ch.Snapshot();
      auto r = s.ch.QueueTip(d);
      if (overspend) {
        ASSERT_FALSE(r.ok()) << s.name << " overspent " << d.amount << " of " << spendable;
        EXPECT_EQ(r.rule(), ChannelRule::kInsufficientSpendable);
        EXPECT_EQ(s.ch.Snapshot(), before);
        continue;
      }
      ASSERT_TRUE(r.ok()) << r.error().ToString();
      ++s.tips_queued;
      s.amount_queued += d.amount;
      // The node takes an update whenever it queues a tip: under low load
      // each tip travels alone, with a full window they accumulate.
      if (Chance(70)) Pump(s, peer);
    }
  }

  // Delivers the next message from `peer` to `s`.
  void Deliver(Side& s, Side& peer) {
    if (s.inbox.empty()) return;
    Message m = std::move(s.inbox.front());
    s.inbox.pop_front();
    if (m.is_ack) {
      auto r = s.ch.OnAck(m.ack);
      ASSERT_TRUE(r.ok()) << s.name << ": " << r.error().ToString();
      if (r->updates_acked > 0) {
        storage::WriteBatch batch;
        Status st =
            s.store->cdb->StageAckReceived(&batch, m.ack, s.ch.Snapshot().receipt_transferred);
        ASSERT_TRUE(st.ok()) << s.name << ": " << st.ToString();
        ASSERT_NO_FATAL_FAILURE(s.store->Commit(std::move(batch)));
      }
      Pump(s, peer);
      return;
    }
    auto v = s.ch.CheckUpdate(m.update);
    ASSERT_TRUE(v.ok()) << s.name << " refused an honest update: " << v.error().ToString();
    const std::string root_before = s.ch.Snapshot().received_tips_root;
    ASSERT_TRUE(s.ch.ApplyUpdate(*v).ok());
    // Applied, then persisted with its ack; the ack leaves later (or never,
    // if the connection drops first).
    auto ack = s.ch.MakeAck(s.key, rng_);
    ASSERT_TRUE(ack.has_value());
    storage::WriteBatch batch;
    Status st = s.store->cdb->StageReceivedUpdate(&batch, root_before, *v, *ack);
    ASSERT_TRUE(st.ok()) << s.name << ": " << st.ToString();
    ASSERT_NO_FATAL_FAILURE(s.store->Commit(std::move(batch)));
    s.last_ack = *ack;
    s.ack_pending = true;
    if (Chance(50)) FlushAck(s, peer);
  }

  void FlushAck(Side& s, Side& peer, bool then_pump = true) {
    if (!s.ack_pending) return;
    ASSERT_TRUE(s.last_ack.has_value());
    peer.inbox.push_back(Message{true, {}, *s.last_ack});
    s.ack_pending = false;
    if (then_pump) Pump(s, peer);
  }

  // An update "from" `attacker` that `victim` must refuse, built on the
  // victim's current view and signed with the attacker's real key, so only
  // the tampered rule can fail.
  void InjectInvalid(Side& victim, Side& attacker) {
    const ChannelSnapshot view = victim.ch.Snapshot();
    const __int128 room = static_cast<__int128>(view.deposit_remote) + view.receipt_transferred -
                          view.received_transferred;
    v1::TipUpdate u;
    u.set_channel_id(std::string(AsStringView(id_)));
    v1::Tip* tip = u.add_tips();
    tip->set_index(view.received_tip_count + 1);
    tip->set_message("forged");
    v1::BalanceProof* p = u.mutable_proof();
    p->set_chain_id(testing::kTestChainId);
    p->set_channel_id(u.channel_id());
    p->set_nonce(view.received_nonce + 1);
    p->set_locks_root(std::string(32, '\0'));

    ChannelRule expected;
    const uint64_t kind = Uniform(0, 4);
    const bool overspend = kind == 4 || room < 1;
    tip->set_amount(overspend ? static_cast<uint64_t>(room) + 1 : 1);
    Hash32 root;
    std::copy(view.received_tips_root.begin(), view.received_tips_root.end(), root.begin());
    root = ChainTipsRoot(root, *TipHash(*tip));
    p->set_tips_root(std::string(AsStringView(root)));
    p->set_transferred(view.received_transferred + tip->amount());
    ASSERT_TRUE(SignBalanceProof(p, attacker.key, rng_).ok());
    switch (kind) {
      case 0:  // tampered amount after signing
        tip->set_amount(tip->amount() + 1);
        expected = ChannelRule::kTransferredMismatch;
        break;
      case 1: {  // tampered root, re-signed
        std::string r = p->tips_root();
        r[0] ^= 0x01;
        p->set_tips_root(r);
        ASSERT_TRUE(SignBalanceProof(p, attacker.key, rng_).ok());
        expected = ChannelRule::kTipsRootMismatch;
        break;
      }
      case 2: {  // bad signature
        std::string sig = p->signature();
        sig[Uniform(0, 63)] ^= 0x40;
        p->set_signature(sig);
        expected = overspend ? ChannelRule::kInsufficientSpendable : ChannelRule::kBadSignature;
        break;
      }
      case 3:  // replayed nonce
        if (view.received_nonce == 0) return;
        p->set_nonce(Uniform(1, view.received_nonce));
        ASSERT_TRUE(SignBalanceProof(p, attacker.key, rng_).ok());
        expected = ChannelRule::kNonceNotIncreasing;
        break;
      default:
        expected = ChannelRule::kInsufficientSpendable;
        break;
    }
    // Kinds 0, 1 and 3 break rules checked before the spendable rule, so
    // they are reported even when the forged amount also overspends.
    auto r = victim.ch.CheckUpdate(u);
    ASSERT_FALSE(r.ok()) << "forged update of kind " << kind << " accepted";
    EXPECT_EQ(r.rule(), expected) << r.error().ToString();
    EXPECT_EQ(victim.ch.Snapshot(), view);
    ++rejections_;
  }

  // The connection drops (everything on the wire is lost), then both sides
  // reestablish and follow their plans: acks first, then resends.
  void Reconnect() {
    ++reconnects_;
    a_.inbox.clear();
    b_.inbox.clear();
    const v1::Reestablish from_a = a_.ch.MakeReestablish();
    const v1::Reestablish from_b = b_.ch.MakeReestablish();
    const uint64_t a_holds = a_.ch.Snapshot().received_tip_count;
    const uint64_t b_holds = b_.ch.Snapshot().received_tip_count;
    auto plan_a = a_.ch.OnPeerReestablish(from_b, b_holds);
    auto plan_b = b_.ch.OnPeerReestablish(from_a, a_holds);
    ASSERT_TRUE(plan_a.ok()) << plan_a.error().ToString();
    ASSERT_TRUE(plan_b.ok()) << plan_b.error().ToString();
    EXPECT_FALSE(plan_a->adopted_own_proof);  // nobody lost state here
    Follow(a_, b_, *plan_a);
    Follow(b_, a_, *plan_b);
  }

  // The process of `s` restarts from its database: the queue (never
  // persisted) is lost, the connection drops, and reestablish follows.
  void Restart(Side& s) {
    ++restarts_;
    const ChannelSnapshot live = s.ch.Snapshot();
    ASSERT_NO_FATAL_FAILURE(s.store->Reopen());
    auto restored = s.store->cdb->Restore(std::string(AsStringView(id_)), s.key.public_key());
    ASSERT_TRUE(restored.ok()) << s.name << ": " << restored.status().ToString();
    ChannelSnapshot expected = live;
    expected.queued_tips = 0;
    expected.queued_amount = 0;
    EXPECT_EQ(restored->Snapshot(), expected) << s.name;
    s.tips_queued -= live.queued_tips;
    s.amount_queued -= live.queued_amount;
    s.ch = std::move(restored).value();
    s.ack_pending = false;
    s.last_ack.reset();
    Reconnect();
  }

  void Follow(Side& s, Side& peer, const ReestablishPlan& plan) {
    // Order matters: ack, then resends, and only then new updates. The ack
    // resent is the one persisted with the latest received update.
    if (plan.send_ack) {
      auto ack = s.ch.MakeAck(s.key, rng_);
      ASSERT_TRUE(ack.has_value());
      EXPECT_EQ(ack->nonce(), s.ch.Snapshot().acked_received_nonce);
      s.last_ack = *ack;
    }
    s.ack_pending = plan.send_ack;
    FlushAck(s, peer, /*then_pump=*/false);
    for (const v1::TipUpdate& u : plan.resend) peer.inbox.push_back(Message{false, u, {}});
    Pump(s, peer);
  }

  void CheckInvariants() {
    for (Side* s : {&a_, &b_}) {
      ChannelSnapshot now = s->ch.Snapshot();
      ChannelSnapshot& was = s == &a_ ? last_a_ : last_b_;
      EXPECT_GE(now.sent_nonce, was.sent_nonce);
      EXPECT_GE(now.received_nonce, was.received_nonce);
      EXPECT_GE(now.receipt_nonce, was.receipt_nonce);
      EXPECT_GE(now.sent_transferred, was.sent_transferred);
      EXPECT_GE(now.received_transferred, was.received_transferred);
      // Own view: never spent more than deposit + acknowledged receipts.
      const __int128 own = static_cast<__int128>(now.deposit_local) +
                           now.acked_received_transferred - now.sent_transferred -
                           now.queued_amount;
      EXPECT_GE(own, 0) << s->name;
      // Peer's view of us: what it holds never exceeds what it can allow.
      auto f = s->ch.FinalBalancesNow();
      ASSERT_TRUE(f.ok());
      EXPECT_EQ(f->balance_a + f->balance_b, total_);
      was = now;
    }
    const ChannelSnapshot sa = a_.ch.Snapshot(), sb = b_.ch.Snapshot();
    // What B holds from A lies between what A knows B acked and what A signed.
    EXPECT_LE(sa.receipt_transferred, sb.received_transferred);
    EXPECT_LE(sb.received_transferred, sa.sent_transferred);
    EXPECT_LE(sb.receipt_transferred, sa.received_transferred);
    EXPECT_LE(sa.received_transferred, sb.sent_transferred);
    // Honest play never needs the clamp: A's unclamped balance is in range.
    const __int128 a_final =
        static_cast<__int128>(sa.deposit_local) - sa.sent_transferred + sa.received_transferred;
    EXPECT_GE(a_final, 0);
    EXPECT_LE(a_final, static_cast<__int128>(total_));
  }

  void Drain() {
    for (int guard = 0; guard < 10000 && !::testing::Test::HasFatalFailure(); ++guard) {
      bool moved = false;
      for (auto [s, peer] : {std::pair{&a_, &b_}, std::pair{&b_, &a_}}) {
        if (!s->inbox.empty()) {
          Deliver(*s, *peer);
          moved = true;
        }
        if (s->ack_pending) {
          FlushAck(*s, *peer);
          moved = true;
        }
        const size_t before = peer->inbox.size();
        Pump(*s, *peer);
        moved = moved || peer->inbox.size() != before;
      }
      if (!moved) return;
    }
    FAIL() << "the channel did not quiesce";
  }

  void CheckAgreement() {
    const ChannelSnapshot sa = a_.ch.Snapshot(), sb = b_.ch.Snapshot();
    EXPECT_EQ(sa.queued_tips, 0u);
    EXPECT_TRUE(sa.in_flight_nonces.empty());
    EXPECT_TRUE(sb.in_flight_nonces.empty());
    EXPECT_EQ(sa.sent_transferred, a_.amount_queued);
    EXPECT_EQ(sb.received_transferred, a_.amount_queued);
    EXPECT_EQ(sa.receipt_transferred, a_.amount_queued);
    EXPECT_EQ(sb.sent_transferred, b_.amount_queued);
    EXPECT_EQ(sa.received_transferred, b_.amount_queued);
    EXPECT_EQ(sb.receipt_transferred, b_.amount_queued);
    EXPECT_EQ(sb.received_tip_count, a_.tips_queued);
    EXPECT_EQ(sa.received_tip_count, b_.tips_queued);
    EXPECT_EQ(sa.sent_tips_root, sb.received_tips_root);
    EXPECT_EQ(sb.sent_tips_root, sa.received_tips_root);
    auto fa = a_.ch.FinalBalancesNow(), fb = b_.ch.FinalBalancesNow();
    ASSERT_TRUE(fa.ok() && fb.ok());
    EXPECT_EQ(*fa, *fb);
    EXPECT_EQ(fa->balance_a, sa.deposit_local - a_.amount_queued + b_.amount_queued);
    // Both can now close cooperatively on the same numbers.
    auto sig_b = b_.ch.SignCooperativeClose(b_.key, rng_);
    ASSERT_TRUE(sig_b.ok()) << sig_b.error().ToString();
    EXPECT_TRUE(a_.ch.CheckCooperativeClose(fa->balance_a, fa->balance_b, *sig_b).ok());
  }

  std::mt19937_64 gen_;
  SeededRandom rng_;
  ChannelId id_;
  Side a_, b_;
  uint64_t total_;
  ChannelSnapshot last_a_, last_b_;
  size_t rejections_ = 0;
  size_t reconnects_ = 0;
  size_t restarts_ = 0;
};

TEST(ChannelProperty, RandomInterleavingsKeepEveryInvariant) {
  const uint64_t seed = tipd::testing::TestSeed();
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 outer(seed);
  // 1000 x 20 keeps the whole channel suite well under 30 s with ASan; set
  // TIPD_PROPERTY_RUNS for a longer soak.
  const char* runs_env = std::getenv("TIPD_PROPERTY_RUNS");
  const int kRuns = runs_env != nullptr ? std::atoi(runs_env) : 1000;
  constexpr int kSteps = 20;
  size_t rejections = 0, reconnects = 0, restarts = 0;
  const auto start = std::chrono::steady_clock::now();
  tipd::testing::TempDir dir("tipd-property");
  NoSyncEnv env;
  Store store_a{dir.path() / "a"}, store_b{dir.path() / "b"};
  for (Store* st : {&store_a, &store_b}) {
    st->env = &env;
    ASSERT_NO_FATAL_FAILURE(st->Open());
  }
  for (int run = 0; run < kRuns && !HasFatalFailure(); ++run) {
    SCOPED_TRACE("run " + std::to_string(run));
    const uint64_t run_seed = outer();
    const uint64_t deposit_a = outer() % 3 == 0 ? 0 : outer() % 5000;
    const uint64_t deposit_b = outer() % 3 == 0 ? 0 : outer() % 5000;
    const auto window = static_cast<uint32_t>(1 + outer() % 4);
    const auto max_tips = static_cast<uint32_t>(1 + outer() % 8);
    Simulation sim(run_seed, RunChannelId(static_cast<uint64_t>(run)), &store_a, &store_b,
                   deposit_a, deposit_b, window, max_tips);
    sim.Run(kSteps);
    rejections += sim.rejections();
    reconnects += sim.reconnects();
    restarts += sim.restarts();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "%d interleavings x %d steps: %zu forged updates rejected, %zu reconnects, %zu restarts, "
      "%.2f s\n",
      kRuns, kSteps, rejections, reconnects, restarts, seconds);
  EXPECT_GT(rejections, 0u);
  EXPECT_GT(reconnects, 0u);
  EXPECT_GT(restarts, 0u);
}

}  // namespace
}  // namespace tipd::channel
