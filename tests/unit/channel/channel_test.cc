// Receiver rules (one test per rule, state unchanged), the sender's queue,
// window and coalescing, acks, deposits, close and restore.
#include "channel/channel.h"

#include <gtest/gtest.h>

#include <optional>
#include <set>
#include <string>
#include <utility>

#include "tests/unit/channel/channel_test_util.h"

namespace tipd::channel {
namespace {

using testing::ChannelPair;
using testing::Draft;
using testing::KeyFromByte;

void Resign(v1::TipUpdate* u, const crypto::KeyPair& key) {
  testing::ZeroRandom rng;
  ASSERT_TRUE(SignBalanceProof(u->mutable_proof(), key, rng).ok());
}

// Recomputes tips_root and transferred from the tips on top of what the
// receiver holds, then re-signs with `key`: lets a test break exactly one
// rule while every other check still passes.
void Rebuild(v1::TipUpdate* u, const ChannelSnapshot& receiver, const crypto::KeyPair& key) {
  Hash32 root;
  std::copy(receiver.received_tips_root.begin(), receiver.received_tips_root.end(), root.begin());
  uint64_t transferred = receiver.received_transferred;
  for (const v1::Tip& t : u->tips()) {
    auto h = TipHash(t);
    if (h.ok()) root = ChainTipsRoot(root, *h);
    transferred += t.amount();  // wraps on purpose in overflow tests
  }
  u->mutable_proof()->set_tips_root(std::string(AsStringView(root)));
  u->mutable_proof()->set_transferred(transferred);
  Resign(u, key);
}

// A has paid B twice; the fixture's `next` is A's valid third update, not yet
// delivered. Each test breaks one rule of it.
class ReceiverRules : public ::testing::Test {
 protected:
  void SetUp() override {
    pair.TipAtoB(10);
    pair.TipAtoB(20);
    ASSERT_TRUE(pair.a.QueueTip(Draft(5, "third")).ok());
    next = pair.a.TakeNextUpdate(pair.key_a, pair.rng)->update;
    ASSERT_TRUE(pair.b.CheckUpdate(next).ok());
    before = pair.b.Snapshot();
  }

  void ExpectRejected(const v1::TipUpdate& u, ChannelRule rule) {
    auto r = pair.b.CheckUpdate(u);
    ASSERT_FALSE(r.ok()) << "expected " << RuleCode(rule);
    EXPECT_EQ(r.rule(), rule) << r.error().ToString();
    EXPECT_EQ(r.error().consequence, ConsequenceOf(rule));
    EXPECT_FALSE(r.error().reason.empty());
    EXPECT_EQ(pair.b.Snapshot(), before);
    // The untouched update is still acceptable: nothing moved.
    EXPECT_TRUE(pair.b.CheckUpdate(next).ok());
  }

  void Rebuilt(v1::TipUpdate* u) { Rebuild(u, before, pair.key_a); }

  ChannelPair pair{1000, 1000};
  v1::TipUpdate next;
  ChannelSnapshot before;
};

TEST_F(ReceiverRules, MissingProofIsMalformed) {
  v1::TipUpdate u = next;
  u.clear_proof();
  ExpectRejected(u, ChannelRule::kMalformed);
}

TEST_F(ReceiverRules, ShortSignatureIsMalformed) {
  v1::TipUpdate u = next;
  u.mutable_proof()->set_signature("abc");
  ExpectRejected(u, ChannelRule::kMalformed);
}

TEST_F(ReceiverRules, WrongChainId) {
  v1::TipUpdate u = next;
  u.mutable_proof()->set_chain_id("tipd-other");
  Resign(&u, pair.key_a);
  ExpectRejected(u, ChannelRule::kWrongChainId);
}

TEST_F(ReceiverRules, WrongChannelIdInUpdate) {
  v1::TipUpdate u = next;
  u.set_channel_id(std::string(32, '\x7f'));
  ExpectRejected(u, ChannelRule::kWrongChannelId);
}

TEST_F(ReceiverRules, WrongChannelIdInProof) {
  v1::TipUpdate u = next;
  u.mutable_proof()->set_channel_id(std::string(32, '\x7f'));
  Resign(&u, pair.key_a);
  ExpectRejected(u, ChannelRule::kWrongChannelId);
}

TEST_F(ReceiverRules, ReplayedNonce) {
  v1::TipUpdate u = next;
  u.mutable_proof()->set_nonce(2);
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kNonceNotIncreasing);
}

TEST_F(ReceiverRules, EmptyUpdate) {
  v1::TipUpdate u = next;
  u.clear_tips();
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kEmptyUpdate);
}

TEST_F(ReceiverRules, TooManyTips) {
  v1::TipUpdate u = next;
  for (int i = 0; i < 256; ++i) {
    v1::Tip* t = u.add_tips();
    *t = next.tips(0);
    t->set_index(4 + i);
  }
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kTooManyTips);
}

TEST_F(ReceiverRules, TipIndexGap) {
  v1::TipUpdate u = next;
  u.mutable_tips(0)->set_index(4);
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kTipIndexGap);
}

TEST_F(ReceiverRules, TransferredMismatch) {
  v1::TipUpdate u = next;
  u.mutable_proof()->set_transferred(u.proof().transferred() + 1);
  Resign(&u, pair.key_a);
  ExpectRejected(u, ChannelRule::kTransferredMismatch);
}

TEST_F(ReceiverRules, TipsRootMismatch) {
  v1::TipUpdate u = next;
  u.mutable_proof()->set_tips_root(std::string(32, '\x01'));
  Resign(&u, pair.key_a);
  ExpectRejected(u, ChannelRule::kTipsRootMismatch);
}

TEST_F(ReceiverRules, TamperedAmountBreaksTheSum) {
  v1::TipUpdate u = next;
  u.mutable_tips(0)->set_amount(6);  // proof still says +5
  ExpectRejected(u, ChannelRule::kTransferredMismatch);
}

TEST_F(ReceiverRules, LockedNotSupported) {
  v1::TipUpdate u = next;
  u.mutable_proof()->set_locked(1);
  Resign(&u, pair.key_a);
  ExpectRejected(u, ChannelRule::kLockedNotSupported);
  u = next;
  u.mutable_proof()->set_locks_root(std::string(31, '\0') + "\x01");
  Resign(&u, pair.key_a);
  ExpectRejected(u, ChannelRule::kLockedNotSupported);
}

TEST_F(ReceiverRules, AmountZero) {
  v1::TipUpdate u = next;
  u.mutable_tips(0)->set_amount(0);
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kAmountZero);
}

TEST_F(ReceiverRules, MessageTooLong) {
  v1::TipUpdate u = next;
  u.mutable_tips(0)->set_message(std::string(1001, 'x'));
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kMessageTooLong);
}

TEST_F(ReceiverRules, MessageNotUtf8) {
  v1::TipUpdate u = next;
  u.mutable_tips(0)->set_message("bad \xc3\x28 byte");
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kMessageNotUtf8);
}

TEST_F(ReceiverRules, MetadataTooMany) {
  v1::TipUpdate u = next;
  for (int i = 0; i < 9; ++i) {
    v1::MetadataEntry* e = u.mutable_tips(0)->add_metadata();
    e->set_key(std::string("k") + static_cast<char>('a' + i));
    e->set_value("v");
  }
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kMetadataTooMany);
}

TEST_F(ReceiverRules, MetadataKeyInvalid) {
  v1::TipUpdate u = next;
  v1::MetadataEntry* e = u.mutable_tips(0)->add_metadata();
  e->set_key("App-Name");
  e->set_value("x");
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kMetadataKeyInvalid);
}

TEST_F(ReceiverRules, MetadataValueInvalid) {
  v1::TipUpdate u = next;
  v1::MetadataEntry* e = u.mutable_tips(0)->add_metadata();
  e->set_key("feed");
  e->set_value(std::string(257, 'v'));
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kMetadataValueInvalid);
  e = u.mutable_tips(0)->mutable_metadata(0);
  e->set_value("\xff");
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kMetadataValueInvalid);
}

TEST_F(ReceiverRules, MetadataNotSorted) {
  v1::TipUpdate u = next;
  v1::MetadataEntry* e = u.mutable_tips(0)->add_metadata();
  e->set_key("sender_name");
  e->set_value("bob");
  e = u.mutable_tips(0)->add_metadata();
  e->set_key("app_name");
  e->set_value("x");
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kMetadataNotSorted);
  // Duplicates are not strictly ascending either.
  u.mutable_tips(0)->mutable_metadata(1)->set_key("sender_name");
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kMetadataNotSorted);
}

TEST_F(ReceiverRules, OverflowOfTheTipSum) {
  v1::TipUpdate u = next;
  u.mutable_tips(0)->set_amount(UINT64_MAX);
  v1::Tip* t = u.add_tips();
  *t = u.tips(0);
  t->set_index(4);
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kOverflow);
}

TEST_F(ReceiverRules, OverflowOfTransferred) {
  v1::TipUpdate u = next;
  u.mutable_tips(0)->set_amount(UINT64_MAX - 10);  // received 30 so far
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kOverflow);
}

TEST_F(ReceiverRules, Overspend) {
  v1::TipUpdate u = next;
  u.mutable_tips(0)->set_amount(1000 - 30 + 1);  // A's deposit is 1000, 30 sent
  Rebuilt(&u);
  ExpectRejected(u, ChannelRule::kInsufficientSpendable);
  u.mutable_tips(0)->set_amount(1000 - 30);  // exactly everything is fine
  Rebuilt(&u);
  EXPECT_TRUE(pair.b.CheckUpdate(u).ok());
}

TEST_F(ReceiverRules, BadSignature) {
  v1::TipUpdate u = next;
  std::string sig = u.proof().signature();
  sig[10] ^= 0x01;
  u.mutable_proof()->set_signature(sig);
  ExpectRejected(u, ChannelRule::kBadSignature);
}

TEST_F(ReceiverRules, SignedByTheWrongKey) {
  v1::TipUpdate u = next;
  Resign(&u, KeyFromByte(0x03));
  ExpectRejected(u, ChannelRule::kBadSignature);
}

TEST_F(ReceiverRules, ApplyRefusesAStaleValidation) {
  auto v1 = pair.b.CheckUpdate(next);
  ASSERT_TRUE(v1.ok());
  ASSERT_TRUE(pair.b.ApplyUpdate(*v1).ok());
  ChannelSnapshot after = pair.b.Snapshot();
  EXPECT_EQ(after.received_nonce, 3u);
  EXPECT_EQ(after.received_tip_count, 3u);
  EXPECT_EQ(after.received_transferred, 35u);
  auto again = pair.b.ApplyUpdate(*v1);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.rule(), ChannelRule::kNonceNotIncreasing);
  EXPECT_EQ(pair.b.Snapshot(), after);
}

// A nonce gap: A's update 4 reaches B while update 3 is missing (lost or
// reordered). It cannot be applied — its tip indices do not continue B's
// count — so it is refused (TIP_INDEX_GAP, disconnect, after which
// reestablish resends in order), B's state does not move, and the channel
// goes on: update 3 and then 4 are accepted and one ack releases both.
TEST_F(ReceiverRules, NonceGapIsRejectedStateUnchangedAndTheChannelContinues) {
  ASSERT_TRUE(pair.a.QueueTip(Draft(7, "fourth")).ok());
  auto fourth = pair.a.TakeNextUpdate(pair.key_a, pair.rng);
  ASSERT_TRUE(fourth.has_value());
  ASSERT_EQ(fourth->nonce(), 4u);
  ASSERT_EQ(next.proof().nonce(), 3u);

  ExpectRejected(fourth->update, ChannelRule::kTipIndexGap);
  EXPECT_EQ(ConsequenceOf(ChannelRule::kTipIndexGap), Consequence::kDisconnect);
  // The same gap where the tips would chain on (a re-signed copy numbered
  // 3..4 from B's count) still cannot skip update 3: the proof's transferred
  // and root cover update 3's tip, which B does not have.
  v1::TipUpdate forged = fourth->update;
  forged.mutable_tips(0)->set_index(3);
  Resign(&forged, pair.key_a);
  auto r = pair.b.CheckUpdate(forged);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.rule(), ChannelRule::kTransferredMismatch) << r.error().ToString();
  EXPECT_EQ(pair.b.Snapshot(), before);

  // Delivered in order, both are accepted and one ack releases both.
  for (const v1::TipUpdate* u : {&next, &fourth->update}) {
    auto v = pair.b.CheckUpdate(*u);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    ASSERT_TRUE(pair.b.ApplyUpdate(*v).ok());
  }
  EXPECT_EQ(pair.b.Snapshot().received_nonce, 4u);
  EXPECT_EQ(pair.b.Snapshot().received_tip_count, 4u);
  EXPECT_EQ(pair.b.Snapshot().received_transferred, 42u);
  auto ack = pair.b.MakeAck(pair.key_b, pair.rng);
  ASSERT_TRUE(ack.has_value());
  auto released = pair.a.OnAck(*ack);
  ASSERT_TRUE(released.ok()) << released.error().ToString();
  EXPECT_EQ(released->updates_acked, 2u);
  EXPECT_EQ(pair.a.updates_in_flight(), 0u);
  pair.TipAtoB(1);  // and the stream goes on
  EXPECT_EQ(pair.b.Snapshot().received_nonce, 5u);
}

// The nonce rule is "greater than", not "exactly one more" (docs/protocol.md,
// "Nonce rule"): a proof that skips nonce numbers but whose tips continue
// exactly from what B holds is accepted.
TEST_F(ReceiverRules, SkippedNonceNumbersWithContinuousTipsAreAccepted) {
  v1::TipUpdate u = next;
  u.mutable_proof()->set_nonce(9);
  Resign(&u, pair.key_a);
  auto v = pair.b.CheckUpdate(u);
  ASSERT_TRUE(v.ok()) << v.error().ToString();
  ASSERT_TRUE(pair.b.ApplyUpdate(*v).ok());
  EXPECT_EQ(pair.b.Snapshot().received_nonce, 9u);
  EXPECT_EQ(pair.b.Snapshot().received_tip_count, 3u);
  auto ack = pair.b.MakeAck(pair.key_b, pair.rng);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->nonce(), 9u);
  // Nothing below it is accepted any more.
  auto old = pair.b.CheckUpdate(next);
  ASSERT_FALSE(old.ok());
  EXPECT_EQ(old.rule(), ChannelRule::kNonceNotIncreasing);
}

TEST(Rules, EveryRuleHasADistinctCodeAndAConsequence) {
  std::set<std::string> codes;
  for (int r = 0; r <= static_cast<int>(ChannelRule::kUpdatesInFlight); ++r) {
    auto rule = static_cast<ChannelRule>(r);
    std::string code = RuleCode(rule);
    EXPECT_NE(code, "UNKNOWN");
    EXPECT_TRUE(codes.insert(code).second) << code;
    EXPECT_NE(ConsequenceOf(rule), Consequence::kRefuseRequest) << code;
  }
  EXPECT_EQ(std::string(RuleCode(ChannelRule::kNonceNotIncreasing)), "NONCE_NOT_INCREASING");
  ChannelError e = PeerError(ChannelRule::kNonceNotIncreasing, "nonce 5 does not exceed current 7");
  EXPECT_EQ(e.ToString(), "NONCE_NOT_INCREASING: nonce 5 does not exceed current 7");
  EXPECT_EQ(e.ToStatus().code(), StatusCode::kInvalidArgument);
  v1::UpdateRejected wire = MakeUpdateRejected(testing::TestChannelId(), 5, e);
  EXPECT_EQ(wire.code(), "NONCE_NOT_INCREASING");
  EXPECT_EQ(wire.nonce(), 5u);
  EXPECT_EQ(LocalError(ChannelRule::kQueueFull, "x").ToStatus().code(),
            StatusCode::kResourceExhausted);
}

// ---- local requests ----

class QueueTipRefusals : public ::testing::Test {
 protected:
  void ExpectRefused(const TipDraft& d, ChannelRule rule) {
    ChannelSnapshot before = pair.a.Snapshot();
    auto r = pair.a.QueueTip(d);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.rule(), rule) << r.error().ToString();
    EXPECT_EQ(r.error().consequence, Consequence::kRefuseRequest);
    EXPECT_EQ(pair.a.Snapshot(), before);
  }
  ChannelPair pair{100, 0};
};

TEST_F(QueueTipRefusals, ContentRules) {
  ExpectRefused(Draft(0), ChannelRule::kAmountZero);
  ExpectRefused(Draft(1, std::string(1001, 'x')), ChannelRule::kMessageTooLong);
  ExpectRefused(Draft(1, "\xc0\xaf"), ChannelRule::kMessageNotUtf8);
  TipDraft d = Draft(1);
  for (int i = 0; i < 9; ++i) d.metadata[std::string("k") + static_cast<char>('a' + i)] = "v";
  ExpectRefused(d, ChannelRule::kMetadataTooMany);
  d = Draft(1);
  d.metadata["Feed"] = "x";
  ExpectRefused(d, ChannelRule::kMetadataKeyInvalid);
  d = Draft(1);
  d.metadata["feed"] = std::string(257, 'x');
  ExpectRefused(d, ChannelRule::kMetadataValueInvalid);
}

TEST_F(QueueTipRefusals, MetadataIsSortedForTheCaller) {
  TipDraft d = Draft(1);
  d.metadata["ts"] = "1700000000";
  d.metadata["app_name"] = "podverse";
  d.metadata["sender_name"] = "alice";
  ASSERT_TRUE(pair.a.QueueTip(d).ok());
  auto out = pair.a.TakeNextUpdate(pair.key_a, pair.rng);
  ASSERT_TRUE(out.has_value());
  ASSERT_EQ(out->update.tips(0).metadata_size(), 3);
  EXPECT_EQ(out->update.tips(0).metadata(0).key(), "app_name");
  EXPECT_EQ(out->update.tips(0).metadata(2).key(), "ts");
  EXPECT_TRUE(pair.b.CheckUpdate(out->update).ok());
}

TEST_F(QueueTipRefusals, SpendableCountsQueuedAndInFlight) {
  ASSERT_TRUE(pair.a.QueueTip(Draft(40)).ok());
  ASSERT_TRUE(pair.a.TakeNextUpdate(pair.key_a, pair.rng).has_value());  // 40 in flight
  ASSERT_TRUE(pair.a.QueueTip(Draft(50)).ok());                          // 50 queued
  EXPECT_EQ(pair.a.SpendableLocal(), 10u);
  ExpectRefused(Draft(11), ChannelRule::kInsufficientSpendable);
  EXPECT_TRUE(pair.a.QueueTip(Draft(10)).ok());
  EXPECT_EQ(pair.a.SpendableLocal(), 0u);
}

TEST_F(QueueTipRefusals, Overflow) {
  ChannelPair rich(UINT64_MAX, 0);
  ASSERT_TRUE(rich.a.QueueTip(Draft(UINT64_MAX - 1)).ok());
  ChannelSnapshot before = rich.a.Snapshot();
  auto r = rich.a.QueueTip(Draft(2));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.rule(), ChannelRule::kOverflow);
  EXPECT_EQ(rich.a.Snapshot(), before);
}

TEST(QueueTip, QueueFull) {
  crypto::KeyPair ka = KeyFromByte(1), kb = KeyFromByte(2);
  ChannelParams p = testing::ParamsFor(ka, kb, true, 100, 0);
  p.max_queued_tips = 2;
  Channel a = std::move(Channel::Open(p)).value();
  ASSERT_TRUE(a.QueueTip(Draft(1)).ok());
  ASSERT_TRUE(a.QueueTip(Draft(1)).ok());
  ChannelSnapshot before = a.Snapshot();
  auto r = a.QueueTip(Draft(1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.rule(), ChannelRule::kQueueFull);
  EXPECT_EQ(a.Snapshot(), before);
}

TEST(QueueTip, ReceivedFundsAreSpendableOnlyOnceAcked) {
  ChannelPair pair(100, 0);
  ASSERT_TRUE(pair.a.QueueTip(Draft(60)).ok());
  auto out = pair.a.TakeNextUpdate(pair.key_a, pair.rng);
  auto v = pair.b.CheckUpdate(out->update);
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(pair.b.ApplyUpdate(*v).ok());
  // B holds 60 but has not acked it: A would not count it yet.
  EXPECT_EQ(pair.b.SpendableLocal(), 0u);
  EXPECT_EQ(pair.b.QueueTip(Draft(1)).rule(), ChannelRule::kInsufficientSpendable);
  auto ack = pair.b.MakeAck(pair.key_b, pair.rng);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(pair.b.SpendableLocal(), 60u);
  ASSERT_TRUE(pair.b.QueueTip(Draft(25)).ok());
  auto back = pair.b.TakeNextUpdate(pair.key_b, pair.rng);
  // Before A has processed B's ack, B's update overspends in A's view...
  auto early = pair.a.CheckUpdate(back->update);
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.rule(), ChannelRule::kInsufficientSpendable);
  // ...which never happens on the wire: the ack travels first.
  ASSERT_TRUE(pair.a.OnAck(*ack).ok());
  EXPECT_TRUE(pair.a.CheckUpdate(back->update).ok());
}

TEST(Deposits, TopUpRaisesSpendableAndNeverShrinks) {
  ChannelPair pair(10, 0);
  EXPECT_EQ(pair.a.QueueTip(Draft(15)).rule(), ChannelRule::kInsufficientSpendable);
  ASSERT_TRUE(pair.a.SetDepositLocal(20).ok());
  ASSERT_TRUE(pair.a.QueueTip(Draft(15)).ok());
  auto out = pair.a.TakeNextUpdate(pair.key_a, pair.rng);
  EXPECT_EQ(pair.b.CheckUpdate(out->update).rule(), ChannelRule::kInsufficientSpendable);
  ASSERT_TRUE(pair.b.SetDepositRemote(20).ok());
  EXPECT_TRUE(pair.b.CheckUpdate(out->update).ok());
  EXPECT_FALSE(pair.a.SetDepositLocal(19).ok());
  EXPECT_FALSE(pair.a.SetDepositRemote(UINT64_MAX).ok());  // sum would overflow
  EXPECT_EQ(pair.a.Snapshot().deposit_local, 20u);
}

TEST(OpenParams, Refused) {
  crypto::KeyPair ka = KeyFromByte(1), kb = KeyFromByte(2);
  ChannelParams p = testing::ParamsFor(ka, kb, true, 1, 1);
  p.chain_id = "Bad Chain";
  EXPECT_FALSE(Channel::Open(p).ok());
  p = testing::ParamsFor(ka, ka, true, 1, 1);
  EXPECT_FALSE(Channel::Open(p).ok());
  p = testing::ParamsFor(ka, kb, true, 1, 1);
  p.max_updates_in_flight = 0;
  EXPECT_FALSE(Channel::Open(p).ok());
  p = testing::ParamsFor(ka, kb, true, 1, 1);
  p.max_update_bytes = 70000;
  EXPECT_FALSE(Channel::Open(p).ok());
  p = testing::ParamsFor(ka, kb, true, UINT64_MAX, 1);
  EXPECT_FALSE(Channel::Open(p).ok());
}

// ---- sender: window and coalescing ----

TEST(Sender, EachTipTravelsAloneWhenIdle) {
  ChannelPair pair(1000, 0);
  for (uint64_t i = 1; i <= 5; ++i) {
    ASSERT_TRUE(pair.a.QueueTip(Draft(i)).ok());
    auto out = pair.a.TakeNextUpdate(pair.key_a, pair.rng);
    ASSERT_TRUE(out.has_value());
    EXPECT_EQ(out->nonce(), i);
    ASSERT_EQ(out->update.tips_size(), 1);
    EXPECT_EQ(out->update.tips(0).index(), i);
    EXPECT_FALSE(pair.a.TakeNextUpdate(pair.key_a, pair.rng).has_value());  // queue empty
    auto v = pair.b.CheckUpdate(out->update);
    ASSERT_TRUE(v.ok()) << v.error().ToString();
    ASSERT_TRUE(pair.b.ApplyUpdate(*v).ok());
    ASSERT_TRUE(pair.a.OnAck(*pair.b.MakeAck(pair.key_b, pair.rng)).ok());
  }
  EXPECT_EQ(pair.b.Snapshot().received_transferred, 15u);
}

TEST(Sender, FoldsQueuedTipsWhenTheWindowIsFull) {
  ChannelPair pair(1000, 0, /*window=*/2);
  std::vector<OutgoingUpdate> sent;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(pair.a.QueueTip(Draft(1)).ok());
    sent.push_back(*pair.a.TakeNextUpdate(pair.key_a, pair.rng));
  }
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(pair.a.QueueTip(Draft(2)).ok());
    EXPECT_FALSE(pair.a.TakeNextUpdate(pair.key_a, pair.rng).has_value());
  }
  EXPECT_EQ(pair.a.queued_tips(), 5u);
  EXPECT_EQ(pair.a.updates_in_flight(), 2u);
  for (const auto& out : sent) {
    auto v = pair.b.CheckUpdate(out.update);
    ASSERT_TRUE(v.ok());
    ASSERT_TRUE(pair.b.ApplyUpdate(*v).ok());
  }
  // B acks only the first one; that frees one slot and all five tips fold.
  v1::Ack first;
  first.set_channel_id(sent[0].update.channel_id());
  first.set_nonce(1);
  first.set_tips_root(sent[0].update.proof().tips_root());
  ASSERT_TRUE(SignAck(testing::kTestChainId, &first, pair.key_b, pair.rng).ok());
  auto outcome = pair.a.OnAck(first);
  ASSERT_TRUE(outcome.ok());
  EXPECT_EQ(outcome->updates_acked, 1u);
  auto folded = pair.a.TakeNextUpdate(pair.key_a, pair.rng);
  ASSERT_TRUE(folded.has_value());
  EXPECT_EQ(folded->nonce(), 3u);
  EXPECT_EQ(folded->update.tips_size(), 5);
  EXPECT_EQ(folded->update.tips(0).index(), 3u);
  EXPECT_EQ(folded->update.tips(4).index(), 7u);
  EXPECT_EQ(folded->update.proof().transferred(), 12u);
  auto v = pair.b.CheckUpdate(folded->update);
  ASSERT_TRUE(v.ok()) << v.error().ToString();
}

TEST(Sender, MaxTipsPerUpdateCap) {
  ChannelPair pair(1000, 0, /*window=*/8, /*max_tips=*/3);
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(pair.a.QueueTip(Draft(1)).ok());
  std::vector<int> sizes;
  while (auto out = pair.a.TakeNextUpdate(pair.key_a, pair.rng)) {
    sizes.push_back(out->update.tips_size());
    auto v = pair.b.CheckUpdate(out->update);
    ASSERT_TRUE(v.ok());
    ASSERT_TRUE(pair.b.ApplyUpdate(*v).ok());
  }
  EXPECT_EQ(sizes, (std::vector<int>{3, 3, 1}));
}

TEST(Sender, ByteBudgetCap) {
  crypto::KeyPair ka = KeyFromByte(1), kb = KeyFromByte(2);
  ChannelParams p = testing::ParamsFor(ka, kb, true, 1000, 0);
  p.max_update_bytes = kMinUpdateBytesBudget;
  Channel a = std::move(Channel::Open(p)).value();
  testing::ZeroRandom rng;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(a.QueueTip(Draft(1, std::string(1000, 'x'))).ok());
  size_t total = 0;
  while (auto out = a.TakeNextUpdate(ka, rng)) {
    const size_t size = out->update.ByteSizeLong();
    EXPECT_LE(size, kMinUpdateBytesBudget);
    total += static_cast<size_t>(out->update.tips_size());
    // A full update could not have taken one more tip (the budget sizes the
    // proof with its widest varints, up to 20 bytes more than the real one).
    const size_t one_more = 3 + out->update.tips(0).ByteSizeLong();
    if (total < 20) {
      EXPECT_GT(size + one_more + 20, kMinUpdateBytesBudget);
    }
    EXPECT_LT(out->update.tips_size(), 20);
  }
  EXPECT_EQ(total, 20u);
}

TEST(Sender, LargestValidTipFitsTheSmallestBudget) {
  crypto::KeyPair ka = KeyFromByte(1), kb = KeyFromByte(2);
  ChannelParams p = testing::ParamsFor(ka, kb, true, UINT64_MAX / 2, 0);
  p.max_update_bytes = kMinUpdateBytesBudget;
  Channel a = std::move(Channel::Open(p)).value();
  testing::ZeroRandom rng;
  TipDraft d = Draft(UINT64_MAX / 2, std::string(1000, 'x'));
  for (int i = 0; i < 8; ++i) {
    d.metadata[std::string(31, 'k') + static_cast<char>('a' + i)] = std::string(256, 'v');
  }
  d.created_at_ms = UINT64_MAX;
  ASSERT_TRUE(a.QueueTip(d).ok());
  auto out = a.TakeNextUpdate(ka, rng);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->update.tips_size(), 1);
  EXPECT_LE(out->update.ByteSizeLong(), kMinUpdateBytesBudget);
}

TEST(Sender, DefaultBudgetFits256ShortTips) {
  ChannelPair pair(1000000, 0);
  for (int i = 0; i < 256; ++i) {
    ASSERT_TRUE(pair.a.QueueTip(Draft(1, std::string(40, 'm'))).ok());
  }
  auto out = pair.a.TakeNextUpdate(pair.key_a, pair.rng);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->update.tips_size(), 256);
  EXPECT_LE(out->update.ByteSizeLong(), kDefaultMaxUpdateBytes);
}

// ---- acks ----

class Acks : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(pair.a.QueueTip(Draft(10)).ok());
      auto out = pair.a.TakeNextUpdate(pair.key_a, pair.rng);
      auto v = pair.b.CheckUpdate(out->update);
      ASSERT_TRUE(v.ok());
      ASSERT_TRUE(pair.b.ApplyUpdate(*v).ok());
      roots.push_back(out->update.proof().tips_root());
    }
    before = pair.a.Snapshot();
  }
  v1::Ack AckFor(uint64_t nonce, const std::string& root, const crypto::KeyPair& key) {
    v1::Ack ack;
    ack.set_channel_id(std::string(AsStringView(testing::TestChannelId())));
    ack.set_nonce(nonce);
    ack.set_tips_root(root);
    EXPECT_TRUE(SignAck(testing::kTestChainId, &ack, key, pair.rng).ok());
    return ack;
  }
  void ExpectRejected(const v1::Ack& ack, ChannelRule rule) {
    auto r = pair.a.OnAck(ack);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.rule(), rule) << r.error().ToString();
    EXPECT_EQ(pair.a.Snapshot(), before);
  }
  ChannelPair pair{1000, 0};
  std::vector<std::string> roots;
  ChannelSnapshot before;
};

TEST_F(Acks, CumulativeAckReleasesEverythingUpToItsNonce) {
  auto ack = pair.b.MakeAck(pair.key_b, pair.rng);  // for nonce 3
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->nonce(), 3u);
  auto r = pair.a.OnAck(*ack);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->updates_acked, 3u);
  EXPECT_EQ(r->tips_acked, 3u);
  ChannelSnapshot s = pair.a.Snapshot();
  EXPECT_TRUE(s.in_flight_nonces.empty());
  EXPECT_EQ(s.receipt_nonce, 3u);
  EXPECT_EQ(s.receipt_transferred, 30u);
  // The same ack again is a harmless duplicate.
  auto dup = pair.a.OnAck(*ack);
  ASSERT_TRUE(dup.ok());
  EXPECT_EQ(dup->updates_acked, 0u);
  EXPECT_EQ(pair.a.Snapshot(), s);
}

TEST_F(Acks, PartialAckKeepsLaterUpdatesInFlight) {
  auto r = pair.a.OnAck(AckFor(2, roots[1], pair.key_b));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->updates_acked, 2u);
  EXPECT_EQ(pair.a.Snapshot().in_flight_nonces, (std::vector<uint64_t>{3}));
  // An older ack after a newer one releases nothing.
  auto old = pair.a.OnAck(AckFor(1, roots[0], pair.key_b));
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->updates_acked, 0u);
}

TEST_F(Acks, WrongRoot) {
  ExpectRejected(AckFor(2, roots[0], pair.key_b), ChannelRule::kAckRootMismatch);
}

TEST_F(Acks, BadSignature) {
  v1::Ack ack = AckFor(2, roots[1], pair.key_b);
  std::string sig = ack.signature();
  sig[0] ^= 0x80;
  ack.set_signature(sig);
  ExpectRejected(ack, ChannelRule::kBadSignature);
  ExpectRejected(AckFor(2, roots[1], pair.key_a), ChannelRule::kBadSignature);  // own key
}

TEST_F(Acks, UnknownNonce) {
  ExpectRejected(AckFor(9, roots[2], pair.key_b), ChannelRule::kUnknownAckNonce);
}

TEST_F(Acks, WrongChannelAndMalformed) {
  v1::Ack ack = AckFor(2, roots[1], pair.key_b);
  ack.set_channel_id(std::string(32, '\x55'));
  ExpectRejected(ack, ChannelRule::kWrongChannelId);
  ack = AckFor(2, roots[1], pair.key_b);
  ack.set_tips_root("short");
  ExpectRejected(ack, ChannelRule::kMalformed);
}

TEST(AcksOnAFreshChannel, NonceZeroReleasesNothing) {
  ChannelPair pair(10, 0);
  v1::Ack ack;
  ack.set_channel_id(std::string(AsStringView(testing::TestChannelId())));
  ack.set_nonce(0);
  ack.set_tips_root(std::string(32, '\0'));
  ack.set_signature(std::string(64, '\0'));
  ChannelSnapshot before = pair.a.Snapshot();
  auto r = pair.a.OnAck(ack);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->updates_acked, 0u);
  EXPECT_EQ(pair.a.Snapshot(), before);
}

TEST_F(Acks, MakeAckSignsOncePerNonce) {
  auto first = pair.b.MakeAck(pair.key_b, pair.rng);
  auto second = pair.b.MakeAck(pair.key_b, pair.rng);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->SerializeAsString(), second->SerializeAsString());
  EXPECT_FALSE(pair.a.MakeAck(pair.key_a, pair.rng).has_value());  // A received nothing
}

// ---- close ----

TEST(Close, CooperativeCloseRoundTrip) {
  ChannelPair pair(100, 50);
  pair.TipAtoB(30);
  pair.TipBtoA(10);
  auto fa = pair.a.FinalBalancesNow();
  auto fb = pair.b.FinalBalancesNow();
  ASSERT_TRUE(fa.ok() && fb.ok());
  EXPECT_EQ(*fa, (FinalBalances{80, 70}));
  EXPECT_EQ(*fa, *fb);
  auto sig_b = pair.b.SignCooperativeClose(pair.key_b, pair.rng);
  ASSERT_TRUE(sig_b.ok());
  EXPECT_TRUE(pair.a.CheckCooperativeClose(80, 70, *sig_b).ok());
  EXPECT_EQ(pair.a.CheckCooperativeClose(81, 69, *sig_b).rule(),
            ChannelRule::kCloseBalanceMismatch);
  auto sig_a = pair.a.SignCooperativeClose(pair.key_a, pair.rng);
  ASSERT_TRUE(sig_a.ok());
  EXPECT_TRUE(pair.b.CheckCooperativeClose(80, 70, *sig_a).ok());
  EXPECT_EQ(pair.b.CheckCooperativeClose(80, 70, *sig_b).rule(), ChannelRule::kBadSignature);
}

TEST(Close, RefusedWhileUpdatesAreInFlight) {
  ChannelPair pair(100, 50);
  ASSERT_TRUE(pair.a.QueueTip(Draft(5)).ok());
  ASSERT_TRUE(pair.a.TakeNextUpdate(pair.key_a, pair.rng).has_value());
  auto sig = pair.a.SignCooperativeClose(pair.key_a, pair.rng);
  ASSERT_FALSE(sig.ok());
  EXPECT_EQ(sig.rule(), ChannelRule::kUpdatesInFlight);
  EXPECT_EQ(sig.error().consequence, Consequence::kRefuseRequest);
}

// ---- idle channels (issue 11: memory per idle channel) ----

// A channel with no update yet holds no proof (own_ and received_ stay
// empty), yet everything it shows or sends is what the initial proof said:
// zero roots in the snapshot and the reestablish, and a first update with
// the chain id, channel id and zero locks root.
TEST(IdleChannel, HoldsNoProofUntilTheFirstUpdateAndBehavesAsBefore) {
  ChannelPair pair(1000, 1000);
  const std::string zero(32, '\0');
  for (const Channel* ch : {&pair.a, &pair.b}) {
    EXPECT_EQ(ch->own_proof().ByteSizeLong(), 0u);
    EXPECT_EQ(ch->received_proof().ByteSizeLong(), 0u);
    const ChannelSnapshot s = ch->Snapshot();
    EXPECT_EQ(s.sent_tips_root, zero);
    EXPECT_EQ(s.received_tips_root, zero);
    const v1::Reestablish r = ch->MakeReestablish();
    EXPECT_EQ(r.sent_tips_root(), zero);
    EXPECT_EQ(r.received_tips_root(), zero);
    EXPECT_FALSE(r.has_sent_proof());
    EXPECT_FALSE(r.has_received_proof());
  }
  // Two idle sides reestablish with nothing to do.
  auto plan = pair.a.OnPeerReestablish(pair.b.MakeReestablish(), 0);
  ASSERT_TRUE(plan.ok()) << plan.error().ToString();
  EXPECT_FALSE(plan->send_ack);
  EXPECT_TRUE(plan->resend.empty());

  ASSERT_TRUE(pair.a.QueueTip(Draft(5)).ok());
  auto out = pair.a.TakeNextUpdate(pair.key_a, pair.rng);
  ASSERT_TRUE(out.has_value());
  const v1::BalanceProof& p = out->update.proof();
  EXPECT_EQ(p.chain_id(), pair.a.params().chain_id);
  EXPECT_EQ(p.channel_id(), std::string(AsStringView(pair.a.params().channel_id)));
  EXPECT_EQ(p.locks_root(), zero);
  EXPECT_EQ(p.nonce(), 1u);
  EXPECT_EQ(p.transferred(), 5u);
  EXPECT_TRUE(VerifyBalanceProof(p, pair.key_a.XOnly()).ok());
  EXPECT_EQ(pair.a.own_proof().SerializeAsString(), p.SerializeAsString());
  auto v = pair.b.CheckUpdate(out->update);
  ASSERT_TRUE(v.ok()) << v.error().ToString();
  ASSERT_TRUE(pair.b.ApplyUpdate(*v).ok());
  EXPECT_EQ(pair.b.received_proof().SerializeAsString(), p.SerializeAsString());
}

// ---- restore ----

TEST(Restore, RebuildsTheSameStateAndContinues) {
  ChannelPair pair(1000, 1000, /*window=*/4);
  pair.TipAtoB(7);
  pair.TipBtoA(3);
  std::vector<v1::TipUpdate> in_flight;
  v1::BalanceProof own_latest;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(pair.a.QueueTip(Draft(1)).ok());
    auto out = pair.a.TakeNextUpdate(pair.key_a, pair.rng);
    in_flight.push_back(out->update);
    own_latest = out->update.proof();
  }
  ASSERT_TRUE(pair.b.QueueTip(Draft(2)).ok());
  auto from_b = pair.b.TakeNextUpdate(pair.key_b, pair.rng);
  auto v = pair.a.CheckUpdate(from_b->update);
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(pair.a.ApplyUpdate(*v).ok());
  auto ack = pair.a.MakeAck(pair.key_a, pair.rng);

  RestoredState st;
  st.own_latest = own_latest;
  st.own_tip_count = 3;
  st.in_flight = in_flight;
  st.receipt = pair.b.MakeAck(pair.key_b, pair.rng);  // B's receipt for nonce 1
  // B acked only nonce 1 so far; A's receipt is that ack.
  st.receipt_transferred = 7;
  st.received_latest = from_b->update.proof();
  st.received_tip_count = 2;
  st.sent_ack = ack;
  st.sent_ack_transferred = 5;
  auto restored = Channel::Restore(pair.a.params(), st);
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  EXPECT_EQ(restored->Snapshot(), pair.a.Snapshot());

  // ... and continues: the restored A (`r`) takes part in further updates both
  // ways, and behaves exactly as the A that never restarted (`pair.a`, fed the
  // same messages): the same updates and acks, byte for byte.
  Channel r = std::move(restored).value();
  Channel& b = pair.b;
  // B receives the two updates that were in flight and acks both.
  for (const v1::TipUpdate& u : in_flight) {
    auto vb = b.CheckUpdate(u);
    ASSERT_TRUE(vb.ok()) << vb.error().ToString();
    ASSERT_TRUE(b.ApplyUpdate(*vb).ok());
  }
  auto ack_b = b.MakeAck(pair.key_b, pair.rng);
  ASSERT_TRUE(ack_b.has_value());
  for (Channel* x : {&r, &pair.a}) {
    auto acked = x->OnAck(*ack_b);
    ASSERT_TRUE(acked.ok()) << acked.error().ToString();
    EXPECT_EQ(acked->updates_acked, 2u);
  }
  // B takes A's ack of its nonce 2 (made before the restart).
  auto b_acked = b.OnAck(*ack);
  ASSERT_TRUE(b_acked.ok()) << b_acked.error().ToString();
  EXPECT_EQ(b_acked->updates_acked, 1u);
  // A new tip A -> B from the restored channel.
  ASSERT_TRUE(r.QueueTip(Draft(4, "after restore")).ok());
  ASSERT_TRUE(pair.a.QueueTip(Draft(4, "after restore")).ok());
  auto next_r = r.TakeNextUpdate(pair.key_a, pair.rng);
  auto next_a = pair.a.TakeNextUpdate(pair.key_a, pair.rng);
  ASSERT_TRUE(next_r.has_value());
  ASSERT_TRUE(next_a.has_value());
  EXPECT_EQ(next_r->update.SerializeAsString(), next_a->update.SerializeAsString());
  EXPECT_EQ(next_r->nonce(), 4u);
  auto vb = b.CheckUpdate(next_r->update);
  ASSERT_TRUE(vb.ok()) << vb.error().ToString();
  ASSERT_TRUE(b.ApplyUpdate(*vb).ok());
  ack_b = b.MakeAck(pair.key_b, pair.rng);
  ASSERT_TRUE(ack_b.has_value());
  for (Channel* x : {&r, &pair.a}) {
    auto acked = x->OnAck(*ack_b);
    ASSERT_TRUE(acked.ok()) << acked.error().ToString();
    EXPECT_EQ(acked->updates_acked, 1u);
  }
  // A new tip B -> A, received by the restored channel.
  ASSERT_TRUE(b.QueueTip(Draft(6, "to the restored A")).ok());
  auto from_b2 = b.TakeNextUpdate(pair.key_b, pair.rng);
  ASSERT_TRUE(from_b2.has_value());
  EXPECT_EQ(from_b2->nonce(), 3u);
  std::optional<v1::Ack> ack_r, ack_a;
  for (auto [x, out] : {std::pair{&r, &ack_r}, std::pair{&pair.a, &ack_a}}) {
    auto va = x->CheckUpdate(from_b2->update);
    ASSERT_TRUE(va.ok()) << va.error().ToString();
    ASSERT_TRUE(x->ApplyUpdate(*va).ok());
    *out = x->MakeAck(pair.key_a, pair.rng);
    ASSERT_TRUE(out->has_value());
  }
  EXPECT_EQ(ack_r->SerializeAsString(), ack_a->SerializeAsString());
  auto b_acked2 = b.OnAck(*ack_r);
  ASSERT_TRUE(b_acked2.ok()) << b_acked2.error().ToString();
  EXPECT_EQ(b_acked2->updates_acked, 1u);
  // Both sides agree on everything: A paid 7 + 1 + 1 + 4, B paid 3 + 2 + 6.
  const ChannelSnapshot ra = r.Snapshot(), sb = b.Snapshot();
  EXPECT_EQ(ra, pair.a.Snapshot());
  EXPECT_EQ(ra.sent_transferred, 13u);
  EXPECT_EQ(ra.receipt_transferred, 13u);
  EXPECT_EQ(sb.received_transferred, 13u);
  EXPECT_EQ(ra.received_transferred, 11u);
  EXPECT_EQ(sb.receipt_transferred, 11u);
  EXPECT_EQ(ra.sent_tips_root, sb.received_tips_root);
  EXPECT_EQ(sb.sent_tips_root, ra.received_tips_root);
  EXPECT_EQ(ra.sent_tip_count, 4u);
  EXPECT_EQ(sb.received_tip_count, 4u);
  EXPECT_TRUE(ra.in_flight_nonces.empty());
  EXPECT_TRUE(sb.in_flight_nonces.empty());
  auto fr = r.FinalBalancesNow(), fb = b.FinalBalancesNow();
  ASSERT_TRUE(fr.ok() && fb.ok());
  EXPECT_EQ(*fr, *fb);
  EXPECT_EQ(fr->balance_a, 1000u - 13u + 11u);

  // Inconsistent pieces are refused as corruption.
  RestoredState bad = st;
  bad.in_flight.pop_back();
  EXPECT_EQ(Channel::Restore(pair.a.params(), bad).status().code(), StatusCode::kCorruption);
  bad = st;
  bad.own_tip_count = 1;
  EXPECT_EQ(Channel::Restore(pair.a.params(), bad).status().code(), StatusCode::kCorruption);
}

}  // namespace
}  // namespace tipd::channel
