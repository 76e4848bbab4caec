// Reestablish after a reconnect or a restart: resend what the peer lacks,
// adopt our own proof back from the peer when we restarted behind, refuse
// forged or conflicting copies.
#include <gtest/gtest.h>

#include "channel/channel.h"
#include "tests/unit/channel/channel_test_util.h"

namespace tipd::channel {
namespace {

using testing::ChannelPair;
using testing::Draft;
using testing::KeyFromByte;

void Deliver(Channel& to, const v1::TipUpdate& u) {
  auto v = to.CheckUpdate(u);
  ASSERT_TRUE(v.ok()) << v.error().ToString();
  ASSERT_TRUE(to.ApplyUpdate(*v).ok());
}

// Sends `n` one-tip updates from A; returns them (signed, in flight).
std::vector<v1::TipUpdate> SendFromA(ChannelPair& pair, int n, uint64_t amount = 5) {
  std::vector<v1::TipUpdate> out;
  for (int i = 0; i < n; ++i) {
    EXPECT_TRUE(pair.a.QueueTip(Draft(amount)).ok());
    auto u = pair.a.TakeNextUpdate(pair.key_a, pair.rng);
    EXPECT_TRUE(u.has_value());
    out.push_back(u->update);
  }
  return out;
}

TEST(Reestablish, InSyncChannelsResendNothing) {
  ChannelPair pair(100, 100);
  pair.TipAtoB(5);
  pair.TipBtoA(7);
  auto plan_a = pair.a.OnPeerReestablish(pair.b.MakeReestablish(), 1);
  auto plan_b = pair.b.OnPeerReestablish(pair.a.MakeReestablish(), 1);
  ASSERT_TRUE(plan_a.ok() && plan_b.ok());
  EXPECT_TRUE(plan_a->resend.empty());
  EXPECT_TRUE(plan_b->resend.empty());
  EXPECT_FALSE(plan_a->adopted_own_proof);
  // Both received something, so both resend their (idempotent) latest ack.
  EXPECT_TRUE(plan_a->send_ack);
  EXPECT_TRUE(plan_b->send_ack);
  ChannelSnapshot before = pair.a.Snapshot();
  auto dup = pair.a.OnAck(*pair.b.MakeAck(pair.key_b, pair.rng));
  ASSERT_TRUE(dup.ok());
  EXPECT_EQ(dup->updates_acked, 0u);
  EXPECT_EQ(pair.a.Snapshot(), before);
}

TEST(Reestablish, ResendsUnackedUpdatesThePeerLacks) {
  ChannelPair pair(100, 0);
  auto sent = SendFromA(pair, 3);
  Deliver(pair.b, sent[0]);  // the connection drops: 2 and 3 are lost
  auto plan_a = pair.a.OnPeerReestablish(pair.b.MakeReestablish(), 1);
  auto plan_b = pair.b.OnPeerReestablish(pair.a.MakeReestablish(), 0);
  ASSERT_TRUE(plan_a.ok()) << plan_a.error().ToString();
  ASSERT_TRUE(plan_b.ok()) << plan_b.error().ToString();
  ASSERT_EQ(plan_a->resend.size(), 2u);
  EXPECT_EQ(plan_a->resend[0].proof().nonce(), 2u);
  EXPECT_EQ(plan_a->resend[1].proof().nonce(), 3u);
  EXPECT_FALSE(plan_a->send_ack);  // A received nothing from B
  ASSERT_TRUE(plan_b->send_ack);
  // B's ack first, then A's resent updates, in order.
  auto ack = pair.a.OnAck(*pair.b.MakeAck(pair.key_b, pair.rng));
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->updates_acked, 1u);
  for (const auto& u : plan_a->resend) Deliver(pair.b, u);
  ASSERT_TRUE(pair.a.OnAck(*pair.b.MakeAck(pair.key_b, pair.rng)).ok());
  EXPECT_EQ(pair.b.Snapshot().received_transferred, 15u);
  EXPECT_EQ(pair.a.Snapshot().receipt_transferred, 15u);
  EXPECT_EQ(pair.a.updates_in_flight(), 0u);
}

TEST(Reestablish, LostAckIsResentAndReleasesTheWindow) {
  ChannelPair pair(100, 0, /*window=*/2);
  auto sent = SendFromA(pair, 2);
  for (const auto& u : sent) Deliver(pair.b, u);
  (void)pair.b.MakeAck(pair.key_b, pair.rng);  // made, then lost on the wire
  auto plan_a = pair.a.OnPeerReestablish(pair.b.MakeReestablish(), 2);
  auto plan_b = pair.b.OnPeerReestablish(pair.a.MakeReestablish(), 0);
  ASSERT_TRUE(plan_a.ok() && plan_b.ok());
  EXPECT_TRUE(plan_a->resend.empty());
  ASSERT_TRUE(plan_b->send_ack);
  auto r = pair.a.OnAck(*pair.b.MakeAck(pair.key_b, pair.rng));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->updates_acked, 2u);
}

TEST(Reestablish, SenderRestartedBehindAdoptsItsOwnSignedProof) {
  ChannelPair pair(100, 0);
  auto sent = SendFromA(pair, 1, 10);
  // A backup of A is taken now (nonce 1 in flight)...
  RestoredState backup;
  backup.own_latest = sent[0].proof();
  backup.own_tip_count = 1;
  backup.in_flight = {sent[0]};
  // ...then A signs two more updates (2 tips in the last) that B applies.
  auto more = SendFromA(pair, 1, 10);
  ASSERT_TRUE(pair.a.QueueTip(Draft(3)).ok());
  ASSERT_TRUE(pair.a.QueueTip(Draft(4)).ok());
  more.push_back(pair.a.TakeNextUpdate(pair.key_a, pair.rng)->update);
  for (const auto& u : sent) Deliver(pair.b, u);
  for (const auto& u : more) Deliver(pair.b, u);
  ChannelSnapshot b_view = pair.b.Snapshot();
  ASSERT_EQ(b_view.received_nonce, 3u);
  ASSERT_EQ(b_view.received_tip_count, 4u);

  // A's disk is lost; it restores the backup, which is behind.
  auto restored = Channel::Restore(pair.a.params(), backup);
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  Channel a = std::move(restored).value();
  EXPECT_EQ(a.Snapshot().sent_nonce, 1u);
  ASSERT_TRUE(a.QueueTip(Draft(1)).ok());  // queued while reconnecting

  v1::Reestablish from_b = pair.b.MakeReestablish();
  EXPECT_EQ(from_b.received_tip_count(), 4u) << "the tip count travels in the message";
  auto plan_a = a.OnPeerReestablish(from_b, from_b.received_tip_count());
  ASSERT_TRUE(plan_a.ok()) << plan_a.error().ToString();
  EXPECT_TRUE(plan_a->adopted_own_proof);
  EXPECT_TRUE(plan_a->resend.empty());
  EXPECT_TRUE(plan_a->dropped_tips.empty());
  ChannelSnapshot s = a.Snapshot();
  EXPECT_EQ(s.sent_nonce, 3u);
  EXPECT_EQ(s.sent_transferred, 27u);
  EXPECT_EQ(s.sent_tip_count, 4u);
  EXPECT_EQ(s.sent_tips_root, b_view.received_tips_root);
  // B's plan: A is behind on nothing B holds; B resends its ack for nonce 3.
  auto plan_b = pair.b.OnPeerReestablish(a.MakeReestablish(), 0);
  ASSERT_TRUE(plan_b.ok()) << plan_b.error().ToString();
  ASSERT_TRUE(plan_b->send_ack);
  auto ack = a.OnAck(*pair.b.MakeAck(pair.key_b, pair.rng));
  ASSERT_TRUE(ack.ok()) << ack.error().ToString();
  EXPECT_EQ(a.Snapshot().receipt_transferred, 27u);
  // A continues with nonce 4 and tip index 5: no nonce is signed twice.
  auto next = a.TakeNextUpdate(pair.key_a, pair.rng);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->nonce(), 4u);
  EXPECT_EQ(next->update.tips(0).index(), 5u);
  Deliver(pair.b, next->update);
}

TEST(Reestablish, AdoptionDropsQueuedTipsThatNoLongerFit) {
  ChannelPair pair(30, 0);
  auto first = SendFromA(pair, 1, 10);
  RestoredState backup;
  backup.own_latest = first[0].proof();
  backup.own_tip_count = 1;
  backup.in_flight = first;
  auto second = SendFromA(pair, 1, 15);  // 25 of 30 spent, unknown to the backup
  Deliver(pair.b, first[0]);
  Deliver(pair.b, second[0]);
  Channel a = std::move(Channel::Restore(pair.a.params(), backup)).value();
  ASSERT_TRUE(a.QueueTip(Draft(4)).ok());
  ASSERT_TRUE(a.QueueTip(Draft(12)).ok());  // fits 20 left in the old view
  auto plan = a.OnPeerReestablish(pair.b.MakeReestablish(), 2);
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->dropped_tips.size(), 1u);
  EXPECT_EQ(plan->dropped_tips[0].amount(), 12u);
  EXPECT_EQ(a.queued_tips(), 1u);
  EXPECT_EQ(a.SpendableLocal(), 1u);
}

class ForgedCopies : public ::testing::Test {
 protected:
  void SetUp() override {
    sent = SendFromA(pair, 1);
    Deliver(pair.b, sent[0]);
    before = pair.a.Snapshot();
  }
  // B's Reestablish claiming it holds A's nonce 5 with `proof`.
  v1::Reestablish Claim(v1::BalanceProof proof) {
    v1::Reestablish r = pair.b.MakeReestablish();
    r.set_received_nonce(proof.nonce());
    r.set_received_tips_root(proof.tips_root());
    *r.mutable_received_proof() = proof;
    return r;
  }
  v1::BalanceProof Proof5(const crypto::KeyPair& signer) {
    v1::BalanceProof p = sent[0].proof();
    p.set_nonce(5);
    p.set_transferred(50);
    p.set_tips_root(std::string(32, '\x42'));
    EXPECT_TRUE(SignBalanceProof(&p, signer, pair.rng).ok());
    return p;
  }
  void ExpectRefused(const v1::Reestablish& r, ChannelRule rule) {
    auto plan = pair.a.OnPeerReestablish(r, 9);
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.rule(), rule) << plan.error().ToString();
    EXPECT_EQ(plan.error().consequence, Consequence::kCloseChannel);
    EXPECT_EQ(pair.a.Snapshot(), before);
  }
  ChannelPair pair{100, 0};
  std::vector<v1::TipUpdate> sent;
  ChannelSnapshot before;
};

TEST_F(ForgedCopies, SignedByThePeerInsteadOfUs) {
  ExpectRefused(Claim(Proof5(pair.key_b)), ChannelRule::kForgedProof);
}

TEST_F(ForgedCopies, TamperedAfterWeSignedIt) {
  v1::BalanceProof p = Proof5(pair.key_a);
  p.set_transferred(1);
  ExpectRefused(Claim(p), ChannelRule::kForgedProof);
}

TEST_F(ForgedCopies, OtherChannel) {
  v1::BalanceProof p = sent[0].proof();
  p.set_nonce(5);
  p.set_channel_id(std::string(32, '\x09'));
  ASSERT_TRUE(SignBalanceProof(&p, pair.key_a, pair.rng).ok());
  ExpectRefused(Claim(p), ChannelRule::kForgedProof);
}

TEST_F(ForgedCopies, ClaimWithoutProof) {
  v1::Reestablish r = Claim(Proof5(pair.key_a));
  r.clear_received_proof();
  ExpectRefused(r, ChannelRule::kForgedProof);
}

TEST_F(ForgedCopies, GenuineCopyIsAdopted) {
  // The control case: the same claim, signed by A, is accepted.
  auto plan = pair.a.OnPeerReestablish(Claim(Proof5(pair.key_a)), 9);
  ASSERT_TRUE(plan.ok()) << plan.error().ToString();
  EXPECT_TRUE(plan->adopted_own_proof);
  EXPECT_EQ(pair.a.Snapshot().sent_nonce, 5u);
}

TEST_F(ForgedCopies, SameNonceDifferentRootConflicts) {
  v1::Reestablish r = pair.b.MakeReestablish();
  r.set_received_tips_root(std::string(32, '\x13'));
  ExpectRefused(r, ChannelRule::kConflictingState);
}

TEST(Reestablish, PeerThatLostAckedUpdatesCannotBeResynced) {
  ChannelPair pair(100, 0);
  auto sent = SendFromA(pair, 3);
  for (const auto& u : sent) Deliver(pair.b, u);
  ASSERT_TRUE(pair.a.OnAck(*pair.b.MakeAck(pair.key_b, pair.rng)).ok());
  // B restored a backup from before nonce 2: it lacks updates it acked.
  v1::Reestablish r = pair.b.MakeReestablish();
  r.set_received_nonce(1);
  r.set_received_tips_root(sent[0].proof().tips_root());
  r.set_acked_received_nonce(1);
  ChannelSnapshot before = pair.a.Snapshot();
  auto plan = pair.a.OnPeerReestablish(r, 1);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.rule(), ChannelRule::kPeerLostAckedUpdates);
  EXPECT_EQ(pair.a.Snapshot(), before);
}

TEST(Reestablish, ReceiverRestartedBehindAdoptsNothingAndAcceptsResends) {
  ChannelPair pair(100, 0);
  auto sent = SendFromA(pair, 2);
  Deliver(pair.b, sent[0]);
  // B restarts from its own (synced) state: it holds nonce 1 and acks it.
  RestoredState st;
  st.received_latest = sent[0].proof();
  st.received_tip_count = 1;
  Channel b = std::move(Channel::Restore(pair.b.params(), st)).value();
  auto plan_b = b.OnPeerReestablish(pair.a.MakeReestablish(), 0);
  auto plan_a = pair.a.OnPeerReestablish(b.MakeReestablish(), 1);
  ASSERT_TRUE(plan_a.ok() && plan_b.ok());
  EXPECT_TRUE(plan_b->send_ack);
  ASSERT_EQ(plan_a->resend.size(), 1u);
  Deliver(b, plan_a->resend[0]);
  EXPECT_EQ(b.Snapshot().received_nonce, 2u);
}

TEST(Reestablish, WrongChannelAndMalformed) {
  ChannelPair pair(100, 0);
  ChannelSnapshot before = pair.a.Snapshot();
  v1::Reestablish r = pair.b.MakeReestablish();
  r.set_channel_id(std::string(32, '\x01'));
  EXPECT_EQ(pair.a.OnPeerReestablish(r, 0).rule(), ChannelRule::kWrongChannelId);
  r = pair.b.MakeReestablish();
  r.set_sent_tips_root("x");
  EXPECT_EQ(pair.a.OnPeerReestablish(r, 0).rule(), ChannelRule::kMalformed);
  r = pair.b.MakeReestablish();
  r.set_acked_received_nonce(3);
  EXPECT_EQ(pair.a.OnPeerReestablish(r, 0).rule(), ChannelRule::kMalformed);
  EXPECT_EQ(pair.a.Snapshot(), before);
}

TEST_F(ForgedCopies, AdoptionNeedsThePeersTipCount) {
  auto plan = pair.a.OnPeerReestablish(Claim(Proof5(pair.key_a)));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.rule(), ChannelRule::kMalformed);
  EXPECT_EQ(pair.a.Snapshot(), before);
  // Without a count the in-sync case still works (nothing to cross-check).
  auto in_sync = pair.a.OnPeerReestablish(pair.b.MakeReestablish());
  ASSERT_TRUE(in_sync.ok()) << in_sync.error().ToString();
}

TEST(Reestablish, AdoptedStateSurvivesARestart) {
  ChannelPair pair(100, 0);
  auto sent = SendFromA(pair, 3);
  for (const auto& u : sent) Deliver(pair.b, u);
  RestoredState backup;  // empty: A lost everything
  Channel a = std::move(Channel::Restore(pair.a.params(), backup)).value();
  auto plan = a.OnPeerReestablish(pair.b.MakeReestablish(), 3);
  ASSERT_TRUE(plan.ok()) << plan.error().ToString();
  ASSERT_TRUE(plan->adopted_own_proof);
  // A persists the adopted proof as its latest and restarts again before
  // B's ack arrives.
  RestoredState persisted;
  persisted.own_latest = sent[2].proof();
  persisted.own_tip_count = 3;
  auto again = Channel::Restore(pair.a.params(), persisted);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->Snapshot(), a.Snapshot());
  auto ack = again->OnAck(*pair.b.MakeAck(pair.key_b, pair.rng));
  ASSERT_TRUE(ack.ok()) << ack.error().ToString();
  EXPECT_EQ(again->Snapshot().receipt_transferred, 15u);
}

}  // namespace
}  // namespace tipd::channel

namespace tipd::channel {
namespace {

// A side restored behind keeps the peer's newest proof of the peer's own
// direction (Reestablish.sent_proof) only if it is genuine and newer.
TEST(Reestablish, PeerEvidenceIsTheNewerSignedProofOfThePeersDirection) {
  ChannelPair pair(100, 100);
  auto sent = SendFromA(pair, 3, 4);  // B never received them (B is the stale side)
  const v1::Reestablish from_a = pair.a.MakeReestablish();
  ASSERT_TRUE(from_a.has_sent_proof());
  EXPECT_EQ(from_a.sent_proof().nonce(), 3u);
  auto kept = pair.b.PeerEvidence(from_a);
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->transferred(), 12u);
  // Nothing changed on B.
  EXPECT_EQ(pair.b.Snapshot().received_nonce, 0u);

  v1::Reestablish forged = from_a;
  forged.mutable_sent_proof()->set_transferred(99);  // the signature no longer holds
  EXPECT_FALSE(pair.b.PeerEvidence(forged).has_value());
  v1::Reestablish other_root = from_a;
  other_root.set_sent_tips_root(std::string(32, '\x07'));
  EXPECT_FALSE(pair.b.PeerEvidence(other_root).has_value());
  v1::Reestablish other_nonce = from_a;
  other_nonce.set_sent_nonce(4);
  EXPECT_FALSE(pair.b.PeerEvidence(other_nonce).has_value());
  // A proof signed by B itself (not the peer) is not evidence of A's direction.
  v1::Reestablish own_key = pair.b.MakeReestablish();
  EXPECT_FALSE(pair.a.PeerEvidence(own_key).has_value());  // B sent nothing: no proof
  // Not newer than what B holds: nothing to keep.
  for (const v1::TipUpdate& u : sent) Deliver(pair.b, u);
  EXPECT_FALSE(pair.b.PeerEvidence(from_a).has_value());
}

}  // namespace
}  // namespace tipd::channel
