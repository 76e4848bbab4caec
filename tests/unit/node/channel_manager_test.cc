// The channel manager in one process: two (or more) managers over the
// in-memory transport, a ledger sealed by hand and manual time
// (channel_harness.h). Each test drives one part of a channel's life, or
// one attack, through the real manager and its parts.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "channel/codec.h"
#include "ledger/codec.h"
#include "node/tip_requests.h"
#include "storage/storage.h"
#include "tests/support/test_support.h"
#include "tests/unit/node/channel_harness.h"
#include "tipd/storage.pb.h"
#include "util/bytes.h"

namespace tipd::testing {
namespace {

using namespace std::chrono_literals;

const ledger::Channel* OnLedger(const ChannelNet& net, const std::string& id) {
  ledger::ChannelId cid{};
  std::copy(id.begin(), id.end(), cid.begin());
  return net.ledger().state().FindChannel(cid);
}

uint64_t LedgerBalance(const ChannelNet& net, const TestNode& n) {
  const ledger::Account* a = net.ledger().state().FindAccount(n.key.XOnly());
  return a ? a->balance : 0;
}

// Every tip the receiver holds, in order, from its history.
std::vector<v1::TipApi> Received(TestNode& n, const std::string& channel_id) {
  std::vector<v1::TipApi> out;
  std::string cursor;
  for (;;) {
    auto page = n.manager->ListTips("received", channel_id, 500, cursor);
    EXPECT_TRUE(page.ok());
    if (!page.ok()) break;
    for (const auto& t : page->tips()) out.push_back(t);
    if (page->next_cursor().empty()) break;
    cursor = page->next_cursor();
  }
  return out;
}

// The attacker's side: `closer` closes the channel on the ledger behind its
// own manager's back (signed with its key, straight to the sequencer),
// carrying `partner_proof` if given.
v1::Transaction CloseBehindTheManagersBack(ChannelNet& net, TestNode& closer, const std::string& id,
                                           const v1::BalanceProof* partner_proof = nullptr) {
  v1::Transaction tx;
  tx.set_chain_id(net.params().chain_id);
  tx.set_signer(std::string(AsStringView(closer.key.XOnly())));
  tx.set_nonce(closer.link->NextNonce(closer.key.XOnly()));
  tx.set_fee(1);
  tx.mutable_unilateral_close()->set_channel_id(id);
  if (partner_proof) *tx.mutable_unilateral_close()->mutable_partner_proof() = *partner_proof;
  EXPECT_TRUE(ledger::SignTransaction(&tx, closer.key, net.rng()).ok());
  return tx;
}

class ChannelManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = &net_.AddNode("a", 1'000'000);
    b_ = &net_.AddNode("b", 1'000);
    a_->StartManager();
    b_->StartManager();
    net_.Connect(*a_, *b_);
  }

  ChannelNet net_;
  TestNode* a_ = nullptr;
  TestNode* b_ = nullptr;
};

TEST_F(ChannelManagerTest, OpensAChannelBothSidesSeeOnTheLedger) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(net_.Channel(*a_, id).state(), "open");
  EXPECT_EQ(net_.Channel(*b_, id).state(), "open");
  EXPECT_EQ(net_.Channel(*a_, id).balance_local(), 10'000u);
  EXPECT_EQ(net_.Channel(*b_, id).balance_remote(), 10'000u);
  const ledger::Channel* onchain = OnLedger(net_, id);
  ASSERT_NE(onchain, nullptr);
  EXPECT_EQ(onchain->deposit_a, 10'000u);
  EXPECT_EQ(a_->manager->negotiator().pending(), 0u);
}

TEST_F(ChannelManagerTest, PeerRefusesToFundMoreThanItsPolicy) {
  b_->options.open.max_accept_deposit = 10;
  net_.Restart(*b_, *a_);
  auto answer = std::make_optional(net_.Await([&](node::ChannelCallback done) {
    a_->manager->Open(b_->key.public_key(), 100, 11, 10, 1000ms, done);
  }));
  ASSERT_FALSE(answer->ok());
  EXPECT_NE(answer->status().message().find("DEPOSIT_REFUSED"), std::string::npos);
  EXPECT_EQ(a_->manager->channel_count(), 0u);
  EXPECT_EQ(b_->manager->channel_count(), 0u);
  EXPECT_EQ(a_->manager->negotiator().pending(), 0u);
}

TEST_F(ChannelManagerTest, TipIsAckedAndHeldByteIdenticalByTheReceiver) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  const std::string message = "thanks for the stream \xE2\x9C\xA8";
  TipAnswer r = net_.Tip(*a_, id, 25, message);
  ASSERT_TRUE(r.ok()) << (r.outcome.refusal ? r.outcome.refusal->message : "pending");
  EXPECT_EQ(r.outcome.response.tip().tip().index(), 1u);
  ASSERT_NE(r.outcome.Receipt(), nullptr);
  EXPECT_EQ(r.outcome.Receipt()->transferred(), 25u);
  // The receipt is the peer's signature over what it holds.
  EXPECT_EQ(r.outcome.Receipt()->ack().nonce(), r.outcome.response.tip().nonce());
  auto got = Received(*b_, id);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].tip().message(), message);
  EXPECT_EQ(got[0].tip().amount(), 25u);
  EXPECT_EQ(net_.Channel(*b_, id).balance_local(), 25u);
  EXPECT_EQ(net_.Channel(*a_, id).balance_local(), 10'000u - 25);
  // tip_received was published only once durable.
  int received_events = 0;
  for (const auto& e : b_->events.published) received_events += e.type() == "tip_received";
  EXPECT_EQ(received_events, 1);
  EXPECT_EQ(a_->manager->tip_requests().waiting(), 0u);
}

TEST_F(ChannelManagerTest, TipsCoalesceWhileAcksAreInTransit) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  net_.hold_messages = true;
  std::vector<std::shared_ptr<TipAnswer>> answers;
  for (int i = 0; i < 100; ++i)
    answers.push_back(net_.TipAsync(*a_, id, 1, "t" + std::to_string(i)));
  net_.Settle();
  net_.FlushMessages();
  ASSERT_TRUE(net_.RunUntil([&] {
    for (auto& a : answers)
      if (!a->answered) return false;
    return true;
  }));
  for (auto& a : answers) EXPECT_TRUE(a->ok());
  // The window (16) filled with one-tip updates, the rest were folded.
  EXPECT_LT(a_->sent_updates.size(), 100u);
  EXPECT_EQ(Received(*b_, id).size(), 100u);
  EXPECT_EQ(net_.Channel(*b_, id).balance_local(), 100u);
}

TEST_F(ChannelManagerTest, RetriedKeyAttachesOrReplaysAndIsNeverPaidTwice) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  net_.hold_messages = true;
  auto first = net_.TipAsync(*a_, id, 7, "once", "key-1");
  auto retry = net_.TipAsync(*a_, id, 7, "once", "key-1");  // in progress: attaches
  auto other = net_.TipAsync(*a_, id, 8, "else", "key-1");  // another request, same key
  net_.Settle();
  ASSERT_TRUE(other->answered);
  ASSERT_TRUE(other->outcome.refusal);
  EXPECT_EQ(other->outcome.refusal->error, node::TipError::kIdempotencyKeyReused);
  net_.FlushMessages();
  ASSERT_TRUE(net_.RunUntil([&] { return first->answered && retry->answered; }));
  EXPECT_TRUE(first->ok());
  EXPECT_TRUE(retry->ok());
  EXPECT_TRUE(retry->outcome.response.replayed());
  EXPECT_EQ(retry->outcome.response.tip().nonce(), first->outcome.response.tip().nonce());
  // After the answer: replayed from the durable record, with the receipt.
  TipAnswer later = net_.Tip(*a_, id, 7, "once", "key-1");
  EXPECT_TRUE(later.ok());
  EXPECT_TRUE(later.outcome.response.replayed());
  EXPECT_EQ(Received(*b_, id).size(), 1u);
  EXPECT_EQ(net_.Channel(*b_, id).balance_local(), 7u);
}

// Issue 9, defect 8: keys were global, so one token could replay another's
// receipt or squat its keys. Now each owner has its own key space.
TEST_F(ChannelManagerTest, IdempotencyKeysBelongToTheirOwner) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  TipAnswer mine = net_.Tip(*a_, id, 5, "from token one", "shared-key", "token-1");
  ASSERT_TRUE(mine.ok());
  // Another owner with the same key and the same request is a new tip...
  TipAnswer theirs = net_.Tip(*a_, id, 5, "from token one", "shared-key", "token-2");
  ASSERT_TRUE(theirs.ok());
  EXPECT_FALSE(theirs.outcome.response.replayed());
  EXPECT_NE(theirs.outcome.response.tip().tip().index(), mine.outcome.response.tip().tip().index());
  // ...and with another request it is not refused as a reuse either.
  TipAnswer different = net_.Tip(*a_, id, 6, "something else", "shared-key", "token-3");
  EXPECT_TRUE(different.ok());
  EXPECT_EQ(Received(*b_, id).size(), 3u);
  // The first owner still replays its own answer.
  TipAnswer again = net_.Tip(*a_, id, 5, "from token one", "shared-key", "token-1");
  EXPECT_TRUE(again.outcome.response.replayed());
  EXPECT_EQ(again.outcome.response.tip().tip().index(), mine.outcome.response.tip().tip().index());
}

TEST_F(ChannelManagerTest, ReconnectResendsWhatThePeerLacksAndAnswersTheTip) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  net_.hold_messages = true;
  auto t = net_.TipAsync(*a_, id, 3, "lost in transit");
  net_.Settle();
  ASSERT_EQ(a_->sent_updates.size(), 1u);
  // The update never arrives: the session drops with it in flight.
  net_.Disconnect(*a_, *b_);
  net_.FlushMessages();  // held deliveries are dropped (session gone)
  EXPECT_FALSE(t->answered);
  EXPECT_TRUE(Received(*b_, id).empty());
  net_.Connect(*a_, *b_);
  ASSERT_TRUE(net_.RunUntil([&] { return t->answered; }));
  EXPECT_TRUE(t->ok());
  EXPECT_EQ(Received(*b_, id).size(), 1u);
  EXPECT_EQ(a_->sent_updates.size(), 2u);  // the resend carries the same update
  EXPECT_EQ(a_->sent_updates[0].SerializeAsString(), a_->sent_updates[1].SerializeAsString());
}

TEST_F(ChannelManagerTest, RestartRestoresBothSidesAndTheStreamContinues) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(net_.Tip(*a_, id, 2, "before").ok());
  a_->StopManager();
  b_->StopManager();
  a_->StartManager();
  b_->StartManager();
  net_.Connect(*a_, *b_);
  EXPECT_EQ(net_.Channel(*a_, id).tips_sent(), 5u);
  EXPECT_EQ(net_.Channel(*b_, id).tips_received(), 5u);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(net_.Tip(*a_, id, 2, "after").ok());
  ASSERT_TRUE(net_.Tip(*b_, id, 4, "back").ok());
  EXPECT_EQ(net_.Channel(*b_, id).balance_local(), 20u - 4u);
  auto got = Received(*b_, id);
  ASSERT_EQ(got.size(), 10u);
  EXPECT_EQ(got[9].tip().index(), 10u);
}

TEST_F(ChannelManagerTest, CooperativeClosePaysTheFinalBalances) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  ASSERT_TRUE(net_.Tip(*a_, id, 300, "a to b").ok());
  ASSERT_TRUE(net_.Tip(*b_, id, 100, "b to a").ok());
  const uint64_t a_before = LedgerBalance(net_, *a_);
  const uint64_t b_before = LedgerBalance(net_, *b_);
  std::optional<Result<v1::ChannelApi>> closed;
  a_->manager->Close(id, false, 60'000ms,
                     [&](Result<v1::ChannelApi> r, std::string) { closed = std::move(r); });
  net_.Settle();
  net_.Seal();
  ASSERT_TRUE(net_.RunUntil([&] { return closed.has_value(); }));
  ASSERT_TRUE(closed->ok()) << closed->status().ToString();
  EXPECT_EQ((*closed)->state(), "closed");
  EXPECT_EQ(net_.Channel(*b_, id).state(), "closed");
  const ledger::Channel* onchain = OnLedger(net_, id);
  ASSERT_NE(onchain, nullptr);
  EXPECT_EQ(onchain->payout_a, 10'000u - 300 + 100);
  EXPECT_EQ(onchain->payout_b, 200u);
  // A submitted the close and paid its fee.
  EXPECT_EQ(LedgerBalance(net_, *a_), a_before + 9'800 - 1);
  EXPECT_EQ(LedgerBalance(net_, *b_), b_before + 200);
  EXPECT_TRUE(net_.ledger().state().CheckSupply().ok());
  // Tips on the closed channel are refused with the reason.
  TipAnswer late = net_.Tip(*a_, id, 1, "late");
  ASSERT_TRUE(late.outcome.refusal);
  EXPECT_EQ(late.outcome.refusal->error, node::TipError::kChannelNotOpen);
}

TEST_F(ChannelManagerTest, UnilateralCloseWatcherSubmitsTheProofAndSettles) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000, 0, 5);
  ASSERT_TRUE(net_.Tip(*a_, id, 400, "paid").ok());
  // B is offline; A closes with what it holds of B (nothing: B paid nothing).
  net_.Disconnect(*a_, *b_);
  auto closing = std::make_optional(
      net_.Await([&](node::ChannelCallback done) { a_->manager->Close(id, true, 1000ms, done); }));
  ASSERT_TRUE(closing->ok());
  net_.Seal();
  const ledger::Channel* onchain = OnLedger(net_, id);
  ASSERT_EQ(onchain->phase, ledger::ChannelPhase::kClosing);
  EXPECT_EQ(onchain->proof_a_to_b.nonce, 0u);  // the ledger does not know what A paid
  // B's watcher (it follows the ledger) submits A's proof inside the window.
  net_.Seal();
  EXPECT_EQ(OnLedger(net_, id)->proof_a_to_b.transferred, 400u);
  EXPECT_GE(b_->manager->watcher().counts().proofs_submitted, 1u);
  // After the window, a Settle pays the honest balances.
  net_.SealBlocks(8);
  onchain = OnLedger(net_, id);
  ASSERT_EQ(onchain->phase, ledger::ChannelPhase::kSettled);
  EXPECT_EQ(onchain->payout_b, 400u);
  EXPECT_EQ(onchain->payout_a, 9'600u);
  EXPECT_EQ(net_.Channel(*a_, id).state(), "closed");
  EXPECT_EQ(net_.Channel(*b_, id).state(), "closed");
  EXPECT_TRUE(net_.ledger().state().CheckSupply().ok());
}

// Issue 10 (crash campaign): a close the sequencer accepted and lost (it was
// killed before sealing its pending block) was never submitted again: the
// node stayed frozen in `closing`, the ledger showed the channel open, and
// the funds stayed locked. Now a close that has not landed a block after it
// was accepted is submitted again, cooperative or unilateral, and a
// unilateral one also after a restart.
bool SealUntilPhase(ChannelNet& net, const std::string& id, ledger::ChannelPhase phase,
                    int blocks) {
  for (int i = 0; i < blocks; ++i) {
    const ledger::Channel* onchain = OnLedger(net, id);
    if (onchain != nullptr && onchain->phase == phase) return true;
    net.Seal();
    net.Settle();
  }
  const ledger::Channel* onchain = OnLedger(net, id);
  return onchain != nullptr && onchain->phase == phase;
}

TEST_F(ChannelManagerTest, AUnilateralCloseTheSequencerLostIsSubmittedAgain) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000, 0, 5);
  ASSERT_TRUE(net_.Tip(*a_, id, 400, "paid").ok());
  ASSERT_TRUE(net_.Tip(*b_, id, 30, "back").ok());
  net_.mode = LedgerMode::kLose;
  auto closing = std::make_optional(
      net_.Await([&](node::ChannelCallback done) { a_->manager->Close(id, true, 1000ms, done); }));
  ASSERT_TRUE(closing->ok()) << closing->status().ToString();
  EXPECT_EQ((*closing)->state(), "closing");
  net_.mode = LedgerMode::kInclude;
  net_.Seal();  // the block that should have held it
  EXPECT_EQ(OnLedger(net_, id)->phase, ledger::ChannelPhase::kOpen);
  ASSERT_TRUE(SealUntilPhase(net_, id, ledger::ChannelPhase::kClosing, 6))
      << "the lost close was never submitted again";
  // It carries B's latest proof; B's watcher adds A's; the settle pays both.
  ASSERT_TRUE(SealUntilPhase(net_, id, ledger::ChannelPhase::kSettled, 12));
  EXPECT_EQ(OnLedger(net_, id)->payout_a, 10'000u - 400 + 30);
  EXPECT_EQ(OnLedger(net_, id)->payout_b, 400u - 30);
  EXPECT_TRUE(net_.ledger().state().CheckSupply().ok());
}

TEST_F(ChannelManagerTest, AUnilateralCloseTheSequencerLostIsSubmittedAgainAfterARestart) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000, 0, 5);
  ASSERT_TRUE(net_.Tip(*a_, id, 400, "a pays b").ok());
  ASSERT_TRUE(net_.Tip(*b_, id, 30, "b pays a").ok());
  net_.mode = LedgerMode::kLose;
  auto closing = std::make_optional(
      net_.Await([&](node::ChannelCallback done) { a_->manager->Close(id, true, 1000ms, done); }));
  ASSERT_TRUE(closing->ok()) << closing->status().ToString();
  net_.mode = LedgerMode::kInclude;
  net_.Restart(*a_, *b_);  // before any block: memory of the submission is gone
  // Still frozen across the restart: an update of B is refused, never acked.
  auto late = net_.TipAsync(*b_, id, 5, "after A's close");
  net_.Settle();
  EXPECT_FALSE(late->ok());
  ASSERT_TRUE(SealUntilPhase(net_, id, ledger::ChannelPhase::kClosing, 6))
      << "the lost close was never submitted again after the restart";
  EXPECT_EQ(OnLedger(net_, id)->closer, a_->key.XOnly());
  EXPECT_EQ(OnLedger(net_, id)->proof_b_to_a.transferred, 30u);
  ASSERT_TRUE(SealUntilPhase(net_, id, ledger::ChannelPhase::kSettled, 12));
  EXPECT_EQ(OnLedger(net_, id)->payout_a, 10'000u - 400 + 30);
  EXPECT_TRUE(net_.ledger().state().CheckSupply().ok());
}

TEST_F(ChannelManagerTest, ACooperativeCloseTheSequencerLostIsSubmittedAgain) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  ASSERT_TRUE(net_.Tip(*a_, id, 300, "a to b").ok());
  net_.mode = LedgerMode::kLose;
  std::optional<Result<v1::ChannelApi>> closed;
  a_->manager->Close(id, false, 60'000ms,
                     [&](Result<v1::ChannelApi> r, std::string) { closed = std::move(r); });
  net_.Settle();
  ASSERT_TRUE(std::any_of(a_->link->submitted.begin(), a_->link->submitted.end(),
                          [](const v1::Transaction& tx) { return tx.has_cooperative_close(); }))
      << "the cooperative close was not submitted";
  net_.mode = LedgerMode::kInclude;
  ASSERT_TRUE(SealUntilPhase(net_, id, ledger::ChannelPhase::kSettled, 6))
      << "the lost cooperative close was never submitted again";
  ASSERT_TRUE(net_.RunUntil([&] { return closed.has_value(); }));
  ASSERT_TRUE(closed->ok()) << closed->status().ToString();
  EXPECT_EQ((*closed)->state(), "closed");
  EXPECT_EQ(OnLedger(net_, id)->payout_b, 300u);
  EXPECT_TRUE(net_.ledger().state().CheckSupply().ok());
}

// Issue 9, defect 3: the watcher gave up after one refusal (it remembered the
// nonce it had submitted and never tried again). Now it retries every block
// until the ledger holds its proof.
TEST_F(ChannelManagerTest, WatcherRetriesAfterARefusalUntilTheLedgerHoldsItsProof) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000, 0, 6);
  ASSERT_TRUE(net_.Tip(*a_, id, 400, "paid").ok());
  net_.Disconnect(*a_, *b_);
  auto closing = std::make_optional(
      net_.Await([&](node::ChannelCallback done) { a_->manager->Close(id, true, 1000ms, done); }));
  // The close is sealed (it was accepted before); B's watcher reacts to that
  // block, and its UpdateProof is refused (any rule: a nonce gap here).
  net_.mode = LedgerMode::kRefuse;
  net_.refuse_rule = ledger::TxRule::kBadNonce;
  net_.Seal();
  EXPECT_EQ(OnLedger(net_, id)->phase, ledger::ChannelPhase::kClosing);
  EXPECT_EQ(OnLedger(net_, id)->proof_a_to_b.nonce, 0u);
  EXPECT_EQ(b_->manager->watcher().counts().refusals, 1u);
  net_.mode = LedgerMode::kInclude;
  net_.Seal();  // the next block: B submits again, and it is accepted
  EXPECT_EQ(b_->manager->watcher().counts().proofs_submitted, 2u);
  net_.Seal();  // included
  EXPECT_EQ(OnLedger(net_, id)->proof_a_to_b.transferred, 400u);
  net_.SealBlocks(10);
  EXPECT_EQ(OnLedger(net_, id)->phase, ledger::ChannelPhase::kSettled);
  EXPECT_EQ(OnLedger(net_, id)->payout_b, 400u);
}

// Issue 9, defect 4: a peer could force the close and keep tipping; the
// receiver acknowledged updates that could never reach the ledger.
TEST_F(ChannelManagerTest, UpdatesArrivingAfterTheCloseIsSeenAreRefused) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000, 0, 6);
  ASSERT_TRUE(net_.Tip(*a_, id, 100, "before").ok());
  // A, the payer, closes on the ledger behind its manager's back (with B's
  // empty direction) and keeps tipping.
  ASSERT_TRUE(net_.SubmitToSequencer(CloseBehindTheManagersBack(net_, *a_, id)).accepted());
  net_.hold_messages = true;
  auto t = net_.TipAsync(*a_, id, 50, "after the close");
  net_.Settle();
  ASSERT_EQ(a_->sent_updates.size(), 2u);  // the update is in transit
  // B follows the block with the close before the update reaches it.
  net_.SealFor({b_});
  net_.FlushMessages();
  EXPECT_FALSE(t->answered && t->outcome.acked) << "an update after the close was acknowledged";
  EXPECT_EQ(Received(*b_, id).size(), 1u);
  EXPECT_EQ(net_.Channel(*b_, id).balance_local(), 100u);
  // B's watcher puts A's last acknowledged proof on the ledger; the payer got
  // nothing back of what B acknowledged.
  net_.CatchUp(*a_);
  net_.SealBlocks(10);
  const ledger::Channel* onchain = OnLedger(net_, id);
  ASSERT_EQ(onchain->phase, ledger::ChannelPhase::kSettled);
  EXPECT_EQ(onchain->payout_b, 100u);
  // The refused tip was signed, so its requester hears "pending" with the
  // nonce (it is not paid, but a signed update is never reported as refused).
  ASSERT_TRUE(t->answered);
  EXPECT_FALSE(t->outcome.refusal.has_value());
  EXPECT_FALSE(t->outcome.acked);
}

// Issue 9, defect 7: a tip the peer received but whose ack never arrived was
// answered "refused, nothing paid" when the channel settled, although the
// peer closed on the proof that pays it.
TEST_F(ChannelManagerTest, SignedButUnackedTipIsAnsweredPendingWhenTheChannelSettles) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000, 0, 5);
  net_.hold_if = [](const TestNode&, const v1::Envelope& env) { return env.has_ack(); };
  auto t = net_.TipAsync(*a_, id, 70, "received, never acked");
  net_.Settle();
  ASSERT_EQ(Received(*b_, id).size(), 1u);  // B holds it; its ack is held back
  net_.hold_if = nullptr;
  net_.Disconnect(*a_, *b_);
  // B closes on A's proof, which pays B the 70.
  auto closing = std::make_optional(
      net_.Await([&](node::ChannelCallback done) { b_->manager->Close(id, true, 1000ms, done); }));
  net_.SealBlocks(10);
  ASSERT_EQ(OnLedger(net_, id)->phase, ledger::ChannelPhase::kSettled);
  EXPECT_EQ(OnLedger(net_, id)->payout_b, 70u);
  ASSERT_TRUE(t->answered);
  EXPECT_FALSE(t->outcome.refusal.has_value())
      << "a paid tip was reported refused: " << t->outcome.refusal->message;
  EXPECT_EQ(t->outcome.response.tip().tip().amount(), 70u);
  EXPECT_GT(t->outcome.response.tip().nonce(), 0u);
}

// The ack wait (30 s here) runs per group of tips queued in one turn of the
// event loop, not per tip: tips whose ack never comes are answered pending
// (202, with their nonce) when their own group's wait is over, not before,
// and answered tips leave nothing behind.
TEST_F(ChannelManagerTest, TipsWithoutAckAreAnsweredPendingWhenTheirOwnWaitIsOver) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  net_.hold_if = [](const TestNode&, const v1::Envelope& env) { return env.has_ack(); };
  std::vector<std::shared_ptr<TipAnswer>> early, late;
  for (int i = 0; i < 50; ++i) early.push_back(net_.TipAsync(*a_, id, 1, "e" + std::to_string(i)));
  net_.Settle();
  net_.AdvanceMs(10'000);
  for (int i = 0; i < 50; ++i) late.push_back(net_.TipAsync(*a_, id, 1, "l" + std::to_string(i)));
  net_.Settle();
  ASSERT_EQ(Received(*b_, id).size(), 100u);  // B holds them; its acks are held back
  for (auto& t : early) EXPECT_FALSE(t->answered);
  net_.AdvanceMs(19'999);  // 29.999 s after the first group
  for (auto& t : early) EXPECT_FALSE(t->answered);
  net_.AdvanceMs(1);
  for (auto& t : early) {
    ASSERT_TRUE(t->answered);
    EXPECT_FALSE(t->outcome.refusal.has_value());
    EXPECT_FALSE(t->outcome.acked);
    EXPECT_GT(t->outcome.response.tip().nonce(), 0u);
  }
  for (auto& t : late) EXPECT_FALSE(t->answered) << "answered before its own wait was over";
  net_.AdvanceMs(10'000);
  for (auto& t : late) {
    ASSERT_TRUE(t->answered);
    EXPECT_FALSE(t->outcome.acked);
    EXPECT_GT(t->outcome.response.tip().nonce(), 0u);
  }
  // The acks arrive after all: the waiting tips are forgotten.
  net_.hold_if = nullptr;
  net_.FlushMessages();
  ASSERT_TRUE(net_.RunUntil([&] { return a_->manager->tip_requests().waiting() == 0; }));
}

// A session's send queue has a bound (p2p-max-send-queue; a full queue
// drops the session). On connect a node with many channels to the peer
// sends their reestablishes as the queue has room (half of it, the rest
// kept for everything else), the rest as it drains; before, it sent them
// all at once, and past 4,096 channels every reconnect overflowed the queue,
// lost the session, and started over.
TEST_F(ChannelManagerTest, ReestablishesArePacedToTheSendQueueAndEveryChannelResumes) {
  constexpr int kChannels = 12;
  std::vector<std::string> ids;
  for (int i = 0; i < kChannels; ++i) ids.push_back(net_.OpenChannel(*a_, *b_, 1'000));
  net_.Disconnect(*a_, *b_);
  a_->transport->send_room = 6;  // room for 3 reestablishes per turn
  b_->transport->send_room = 6;
  auto reestablishes = [](const TestNode& n) {
    return std::count_if(n.sent.begin(), n.sent.end(),
                         [](const v1::Envelope& e) { return e.has_reestablish(); });
  };
  const auto a0 = reestablishes(*a_), b0 = reestablishes(*b_);
  net_.Connect(*a_, *b_);
  EXPECT_EQ(reestablishes(*a_) - a0, 3);
  EXPECT_EQ(reestablishes(*b_) - b0, 3);
  for (int round = 0; round < 10 && reestablishes(*a_) - a0 < kChannels; ++round) {
    const auto before = reestablishes(*a_);
    net_.AdvanceMs(5);
    EXPECT_LE(reestablishes(*a_) - before, 3) << "round " << round;
  }
  EXPECT_EQ(reestablishes(*a_) - a0, kChannels);
  EXPECT_EQ(reestablishes(*b_) - b0, kChannels);
  // Every channel resumed: a tip on each is acknowledged.
  for (const std::string& id : ids) EXPECT_TRUE(net_.Tip(*a_, id, 1, "after").ok()) << id;
}

// The watcher defends the node whoever closed: here the ledger holds an older
// proof of B's direction than A has (A's close was built from a stale copy),
// and A's watcher brings the newest one.
TEST_F(ChannelManagerTest, WatcherSubmitsTheNewestPartnerProofWhoeverClosed) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000, 500, 6);
  ASSERT_TRUE(net_.Tip(*b_, id, 10, "first").ok());
  const v1::BalanceProof old_proof = b_->sent_updates.back().proof();
  ASSERT_TRUE(net_.Tip(*b_, id, 20, "second").ok());
  ASSERT_TRUE(
      net_.SubmitToSequencer(CloseBehindTheManagersBack(net_, *a_, id, &old_proof)).accepted());
  net_.Seal();
  EXPECT_EQ(OnLedger(net_, id)->proof_b_to_a.transferred, 10u);
  net_.SealBlocks(2);
  EXPECT_EQ(OnLedger(net_, id)->proof_b_to_a.transferred, 30u);
  net_.SealBlocks(8);
  EXPECT_EQ(OnLedger(net_, id)->phase, ledger::ChannelPhase::kSettled);
  EXPECT_EQ(OnLedger(net_, id)->payout_b, 500u - 30u);
}

TEST_F(ChannelManagerTest, AnOpenWithAnUnknownOutcomeStaysOpeningUntilTheLedgerDecides) {
  net_.mode = LedgerMode::kDrop;  // the open's answer is lost
  std::optional<Result<v1::ChannelApi>> answer;
  a_->manager->Open(b_->key.public_key(), 1000, 0, 10, 500ms,
                    [&](Result<v1::ChannelApi> r, std::string) { answer = std::move(r); });
  net_.Settle();
  net_.AdvanceMs(600);
  ASSERT_TRUE(answer.has_value());
  ASSERT_TRUE(answer->ok()) << answer->status().ToString();
  EXPECT_EQ((*answer)->state(), "opening");  // not "closed": it may yet be included
  auto channels = a_->manager->ListChannels();
  ASSERT_EQ(channels.size(), 1u);
  EXPECT_EQ(channels[0].state(), "opening");
  net_.mode = LedgerMode::kInclude;
  net_.Seal();  // nothing was included, and no nonce moved: still opening
  EXPECT_EQ(a_->manager->ListChannels()[0].state(), "opening");
}

// Found by the adversarial peer suite: an opener that never submits its
// open (nor uses its account again) held one of B's pending-open slots for
// ever. B abandons an open it does not fund once the ledger has not opened
// it within its deadline; A, whose deposit is at stake, keeps waiting.
TEST_F(ChannelManagerTest, AnUnfundedOpenTheLedgerNeverSeesIsAbandonedByTheAcceptor) {
  b_->options.open.unfunded_open_deadline_blocks = 5;
  net_.Restart(*b_, *a_);
  net_.mode = LedgerMode::kDrop;  // A's open never reaches a block
  std::optional<Result<v1::ChannelApi>> answer;
  a_->manager->Open(b_->key.public_key(), 1000, 0, 10, 500ms,
                    [&](Result<v1::ChannelApi> r, std::string) { answer = std::move(r); });
  net_.Settle();
  net_.AdvanceMs(600);
  ASSERT_TRUE(answer.has_value());
  ASSERT_EQ(b_->manager->ListChannels().size(), 1u);
  EXPECT_EQ(b_->manager->ListChannels()[0].state(), "opening");
  net_.mode = LedgerMode::kInclude;
  net_.SealBlocks(4);
  EXPECT_EQ(b_->manager->ListChannels()[0].state(), "opening") << "abandoned before its deadline";
  net_.SealBlocks(2);
  ASSERT_TRUE(net_.RunUntil([&] { return b_->manager->ListChannels()[0].state() == "closed"; }));
  EXPECT_NE(b_->manager->ListChannels()[0].close_reason().find("not on the ledger"),
            std::string::npos)
      << b_->manager->ListChannels()[0].close_reason();
  EXPECT_EQ(a_->manager->ListChannels()[0].state(), "opening");
}

TEST_F(ChannelManagerTest, DepositRaisesBothSidesOnceIncluded) {
  const std::string id = net_.OpenChannel(*a_, *b_, 1'000);
  std::optional<Result<v1::ChannelApi>> answer;
  a_->manager->Deposit(id, 500, 60'000ms,
                       [&](Result<v1::ChannelApi> r, std::string) { answer = std::move(r); });
  net_.Settle();
  net_.Seal();
  ASSERT_TRUE(net_.RunUntil([&] { return answer.has_value(); }));
  ASSERT_TRUE(answer->ok());
  EXPECT_EQ((*answer)->deposit_local(), 1'500u);
  EXPECT_EQ(net_.Channel(*b_, id).deposit_remote(), 1'500u);
  EXPECT_TRUE(net_.Tip(*a_, id, 1'400, "more than the first deposit").ok());
}

// Issue 9, defect 5: the opener picked the settle window. Each node now
// holds its own minimum, for the opens it makes and the ones it accepts.
TEST_F(ChannelManagerTest, EachNodeEnforcesItsOwnMinimumSettleWindow) {
  b_->options.open.min_settle_timeout = 20;
  net_.Restart(*b_, *a_);
  auto answer = std::make_optional(net_.Await([&](node::ChannelCallback done) {
    a_->manager->Open(b_->key.public_key(), 1000, 0, 10, 1000ms, done);
  }));
  ASSERT_FALSE(answer->ok());
  EXPECT_NE(answer->status().message().find("SETTLE_TIMEOUT_TOO_SHORT"), std::string::npos);
  EXPECT_EQ(b_->manager->channel_count(), 0u);
  // Its own opens below the minimum are refused before anything is signed.
  answer.reset();
  b_->manager->Open(a_->key.public_key(), 0, 0, 10, 1000ms,
                    [&](Result<v1::ChannelApi> r, std::string) { answer = std::move(r); });
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->status().code(), StatusCode::kInvalidArgument);
  // A window of the minimum is accepted; without one the node picks it.
  EXPECT_FALSE(net_.OpenChannel(*a_, *b_, 1000, 0, 20).empty());
}

// The genesis bounds the settle window (the harness's genesis: 3..1000
// blocks). Exactly at either bound an open goes through on both sides and on
// the ledger; one block beyond either is refused before anything is signed,
// by the opener (kInvalidArgument naming the bounds) and, for a proposal
// rewritten in transit, by the peer (BAD_SETTLE_TIMEOUT).
TEST_F(ChannelManagerTest, SettleTimeoutsAtTheGenesisBoundsOpenAndOneBeyondIsRefused) {
  const ledger::Params& params = net_.params();
  ASSERT_EQ(params.min_settle_timeout, 3u);
  ASSERT_EQ(params.max_settle_timeout, 1000u);
  for (uint64_t timeout : {params.min_settle_timeout, params.max_settle_timeout}) {
    const std::string id = net_.OpenChannel(*a_, *b_, 1000, 0, timeout);
    ASSERT_FALSE(id.empty()) << "settle_timeout " << timeout;
    EXPECT_EQ(net_.Channel(*a_, id).settle_timeout(), timeout);
    EXPECT_EQ(net_.Channel(*b_, id).settle_timeout(), timeout);
    const ledger::Channel* onchain = OnLedger(net_, id);
    ASSERT_NE(onchain, nullptr);
    EXPECT_EQ(onchain->settle_timeout, timeout);
    EXPECT_TRUE(net_.Tip(*a_, id, 1, "usable").ok());
  }
  const size_t a_channels = a_->manager->channel_count();
  const size_t b_channels = b_->manager->channel_count();
  const size_t a_sent = a_->sent.size();
  for (uint64_t timeout : {params.min_settle_timeout - 1, params.max_settle_timeout + 1}) {
    auto answer = net_.Await([&](node::ChannelCallback done) {
      a_->manager->Open(b_->key.public_key(), 1000, 0, timeout, 1000ms, done);
    });
    ASSERT_FALSE(answer.ok()) << "settle_timeout " << timeout;
    EXPECT_EQ(answer.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(answer.status().message().find("settle_timeout " + std::to_string(timeout) +
                                             " is outside the ledger's bounds [3, 1000]"),
              std::string::npos)
        << answer.status().ToString();
  }
  EXPECT_EQ(a_->sent.size(), a_sent);  // nothing was proposed
  EXPECT_EQ(a_->manager->channel_count(), a_channels);

  // The peer checks the same bounds on what reaches it.
  for (uint64_t timeout : {params.min_settle_timeout - 1, params.max_settle_timeout + 1}) {
    net_.tamper = [timeout](const TestNode& from, v1::Envelope* env) {
      if (from.name == "a" && env->has_open_channel()) {
        env->mutable_open_channel()->set_settle_timeout(timeout);
      }
    };
    const size_t b_sent = b_->sent.size();
    auto answer = net_.Await([&](node::ChannelCallback done) {
      a_->manager->Open(b_->key.public_key(), 1000, 0, 10, 1000ms, done);
    });
    net_.tamper = nullptr;
    ASSERT_FALSE(answer.ok()) << "settle_timeout " << timeout;
    EXPECT_NE(answer.status().message().find("BAD_SETTLE_TIMEOUT"), std::string::npos)
        << answer.status().ToString();
    ASSERT_EQ(b_->sent.size(), b_sent + 1);
    ASSERT_TRUE(b_->sent.back().has_reject_channel());
    EXPECT_EQ(b_->sent.back().reject_channel().code(), "BAD_SETTLE_TIMEOUT");
    EXPECT_EQ(b_->manager->channel_count(), b_channels);
  }
}

// Issue 9, defect 2: a peer could make the node fund a channel with its
// whole ledger balance, leaving nothing to pay the fees of its defence.
TEST_F(ChannelManagerTest, DefaultPolicyNeverFundsAChannelAPeerOpens) {
  node::OpenPolicy defaults;
  EXPECT_EQ(defaults.max_accept_deposit, 0u);
  b_->options.open = defaults;
  net_.Restart(*b_, *a_);
  auto answer = std::make_optional(net_.Await([&](node::ChannelCallback done) {
    a_->manager->Open(b_->key.public_key(), 100, 1, 20, 1000ms, done);
  }));
  ASSERT_FALSE(answer->ok());
  EXPECT_NE(answer->status().message().find("DEPOSIT_REFUSED"), std::string::npos);
  // A channel it does not fund is fine.
  EXPECT_FALSE(net_.OpenChannel(*a_, *b_, 100, 0, 20).empty());
}

TEST_F(ChannelManagerTest, TheFeeReserveIsNeverCommitted) {
  // B holds 1,000. Funding a channel A opens must leave B 3 fees per channel.
  auto answer = std::make_optional(net_.Await([&](node::ChannelCallback done) {
    a_->manager->Open(b_->key.public_key(), 100, 998, 10, 1000ms, done);
  }));
  ASSERT_FALSE(answer->ok());
  EXPECT_NE(answer->status().message().find("fee reserve"), std::string::npos);
  EXPECT_EQ(b_->manager->FeeReserve(), 0u);
  const std::string id = net_.OpenChannel(*a_, *b_, 100, 997);
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(b_->manager->FeeReserve(), 3u);
  EXPECT_EQ(LedgerBalance(net_, *b_), 3u);
  // B's own opens and deposits cannot touch the reserve either.
  answer.reset();
  b_->manager->Deposit(id, 1, 1000ms,
                       [&](Result<v1::ChannelApi> r, std::string) { answer = std::move(r); });
  ASSERT_TRUE(answer.has_value());
  ASSERT_FALSE(answer->ok());
  EXPECT_NE(answer->status().message().find("fee reserve 3"), std::string::npos);
  // The opener's side: its deposit plus fee plus reserve must fit.
  const uint64_t a_balance = LedgerBalance(net_, *a_);
  answer.reset();
  a_->manager->Open(b_->key.public_key(), a_balance - 1 - 3, 0, 10, 1000ms,
                    [&](Result<v1::ChannelApi> r, std::string) { answer = std::move(r); });
  ASSERT_TRUE(answer.has_value());
  ASSERT_FALSE(answer->ok());
  EXPECT_NE(answer->status().message().find("fee reserve 6"), std::string::npos);
}

// Issue 9, defect 2 (continued): a node that only receives, with no ledger
// balance at all, defends its channel with fees paid from its escrow share.
TEST(ChannelManagerReceiveOnly, ANodeWithNoLedgerBalanceDefendsAndSettles) {
  ChannelNet net;
  TestNode& a = net.AddNode("a", 1'000'000);
  TestNode& b = net.AddNode("b", 0);
  a.StartManager();
  b.StartManager();
  net.Connect(a, b);
  const std::string id = net.OpenChannel(a, b, 10'000, 0, 6);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(net.Tip(a, id, 900, "for the creator").ok());
  net.Disconnect(a, b);
  auto closing = std::make_optional(
      net.Await([&](node::ChannelCallback done) { a.manager->Close(id, true, 1000ms, done); }));
  net.SealBlocks(12);
  const ledger::Channel* onchain = OnLedger(net, id);
  ASSERT_EQ(onchain->phase, ledger::ChannelPhase::kSettled);
  EXPECT_EQ(onchain->proof_a_to_b.transferred, 900u);
  // B paid its proof update and its settle (if it settled first) from escrow.
  EXPECT_GE(LedgerBalance(net, b), 900u - 2);
  EXPECT_LE(LedgerBalance(net, b), 900u);
  EXPECT_TRUE(net.ledger().state().CheckSupply().ok());
}

TEST_F(ChannelManagerTest, UnopenedChannelsFromOnePeerAreBounded) {
  std::vector<std::optional<Result<v1::ChannelApi>>> answers(5);
  for (int i = 0; i < 5; ++i) {
    a_->manager->Open(
        b_->key.public_key(), 10 + i, 0, 10, 60'000ms,
        [&answers, i](Result<v1::ChannelApi> r, std::string) { answers[i] = std::move(r); });
    net_.Settle();
  }
  // Four are waiting for the ledger; the fifth is refused before B writes
  // anything.
  ASSERT_TRUE(answers[4].has_value());
  ASSERT_FALSE(answers[4]->ok());
  EXPECT_NE(answers[4]->status().message().find("TOO_MANY_PENDING_OPENS"), std::string::npos);
  EXPECT_EQ(b_->manager->channel_count(), 4u);
  net_.Seal();
  ASSERT_TRUE(net_.RunUntil([&] {
    for (int i = 0; i < 4; ++i)
      if (!answers[i].has_value()) return false;
    return true;
  }));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(answers[i]->ok());
}

// A failed write: the tips it carried were never sent and are refused as
// such; the node refuses new work, acknowledges nothing, and says why.
TEST_F(ChannelManagerTest, AFailedWriteRefusesWhatItCarriedAndMakesTheNodeReadOnly) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  ASSERT_TRUE(net_.Tip(*a_, id, 5, "before").ok());
  a_->committer->Stop();  // every later write of A fails
  TipAnswer lost = net_.Tip(*a_, id, 6, "never written");
  ASSERT_TRUE(lost.answered);
  ASSERT_TRUE(lost.outcome.refusal.has_value());
  EXPECT_EQ(lost.outcome.refusal->error, node::TipError::kNodeReadOnly);
  EXPECT_NE(lost.outcome.refusal->message.find("nothing was paid"), std::string::npos);
  EXPECT_FALSE(a_->manager->health().ok());
  EXPECT_EQ(Received(*b_, id).size(), 1u);  // the update never left A
  TipAnswer refused = net_.Tip(*a_, id, 1, "after");
  ASSERT_TRUE(refused.outcome.refusal.has_value());
  EXPECT_EQ(refused.outcome.refusal->error, node::TipError::kNodeReadOnly);
  // B's updates are not acknowledged by a node that cannot write.
  auto from_b = net_.TipAsync(*b_, id, 1, "to a read-only node");
  net_.Settle();
  EXPECT_FALSE(from_b->answered && from_b->outcome.acked);
  std::optional<Result<v1::ChannelApi>> open;
  a_->manager->Open(b_->key.public_key(), 10, 0, 10, 1000ms,
                    [&](Result<v1::ChannelApi> r, std::string) { open = std::move(r); });
  ASSERT_TRUE(open.has_value());
  EXPECT_FALSE(open->ok());
}

// A message that cannot leave (the peer's queue is full) is not dropped
// silently: the session goes, and reestablish resends what the peer lacks.
TEST_F(ChannelManagerTest, ASendThatCannotLeaveDropsTheSessionAndReestablishResends) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  a_->refuse_sends = true;
  auto t = net_.TipAsync(*a_, id, 9, "queue full");
  net_.Settle();
  EXPECT_FALSE(net_.connected(*a_, *b_));
  EXPECT_FALSE(t->answered);
  a_->refuse_sends = false;
  net_.Connect(*a_, *b_);
  ASSERT_TRUE(net_.RunUntil([&] { return t->answered; }));
  EXPECT_TRUE(t->ok());
  EXPECT_EQ(Received(*b_, id).size(), 1u);
}

// A nonce gap on the wire: A's update 2 is lost in transit and update 3
// arrives. B refuses it (TIP_INDEX_GAP: its tips do not continue B's count),
// holds nothing of it and drops the session; reestablish then resends 2 and
// 3 in order and the channel goes on.
TEST_F(ChannelManagerTest, ANonceGapIsRefusedWithoutChangeAndReestablishFillsIt) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  ASSERT_TRUE(net_.Tip(*a_, id, 1, "first").ok());
  bool held_one = false;
  net_.hold_if = [&](const TestNode& from, const v1::Envelope& env) {
    if (from.name != "a" || !env.has_tip_update() || held_one) return false;
    held_one = true;  // nonce 2: lost in transit
    return true;
  };
  const size_t b_sent = b_->sent.size();
  auto second = net_.TipAsync(*a_, id, 2, "second");
  net_.Settle();
  auto third = net_.TipAsync(*a_, id, 3, "third");
  net_.Settle();
  ASSERT_EQ(a_->sent_updates.size(), 3u);
  ASSERT_EQ(a_->sent_updates[2].proof().nonce(), 3u);

  bool refused = false;
  for (size_t i = b_sent; i < b_->sent.size(); ++i) {
    const v1::Envelope& e = b_->sent[i];
    EXPECT_FALSE(e.has_ack()) << "B acknowledged across a gap: " << e.ShortDebugString();
    if (e.has_update_rejected()) {
      EXPECT_EQ(e.update_rejected().code(), "TIP_INDEX_GAP");
      EXPECT_EQ(e.update_rejected().nonce(), 3u);
      refused = true;
    }
  }
  EXPECT_TRUE(refused);
  EXPECT_FALSE(net_.connected(*a_, *b_));  // disconnect is the rule's consequence
  EXPECT_EQ(Received(*b_, id).size(), 1u);
  EXPECT_EQ(net_.Channel(*b_, id).balance_local(), 1u);
  EXPECT_EQ(net_.Channel(*b_, id).state(), "open");
  EXPECT_FALSE(second->answered);
  EXPECT_FALSE(third->answered);

  net_.FlushMessages();  // the held update belongs to the ended session
  net_.Connect(*a_, *b_);
  ASSERT_TRUE(net_.RunUntil([&] { return second->answered && third->answered; }));
  EXPECT_TRUE(second->ok());
  EXPECT_TRUE(third->ok());
  auto got = Received(*b_, id);
  ASSERT_EQ(got.size(), 3u);
  for (uint64_t i = 0; i < 3; ++i) EXPECT_EQ(got[i].tip().index(), i + 1);
  EXPECT_EQ(net_.Channel(*b_, id).balance_local(), 6u);
  EXPECT_TRUE(net_.Tip(*a_, id, 4, "fourth").ok());
}

// Reestablish branches that close the channel (docs/protocol.md,
// "Reestablish"; docs/channels.md, "Unilateral close"). Both directions hold
// proofs; the session drops and comes back with A's Reestablish rewritten in
// transit. B must answer naming the rule, close on the ledger with A's latest
// proof and reason "peer showed irreconcilable state: CODE", drop the
// session, and sign nothing after: no ack, no update, no close signature,
// also not when A reconnects and keeps sending.
class ReestablishCloseTest : public ChannelManagerTest {
 protected:
  void SetUp() override {
    ChannelManagerTest::SetUp();
    id_ = net_.OpenChannel(*a_, *b_, 10'000, 500);
    ASSERT_FALSE(id_.empty());
    ASSERT_TRUE(net_.Tip(*a_, id_, 100, "a1").ok());
    ASSERT_TRUE(net_.Tip(*a_, id_, 50, "a2").ok());
    ASSERT_TRUE(net_.Tip(*b_, id_, 10, "b1").ok());
    ASSERT_TRUE(net_.Tip(*b_, id_, 20, "b2").ok());
    net_.Disconnect(*a_, *b_);
  }

  // B's latest proof as A holds it, to build claims about B's direction.
  v1::BalanceProof BLatest() const { return b_->sent_updates.back().proof(); }

  // Reconnects with A's Reestablish rewritten by `edit`, then checks that B
  // closed for `code` and said why in an UpdateRejected containing `reason`.
  void ReconnectTamperedAndExpectClose(const std::function<void(v1::Reestablish*)>& edit,
                                       const std::string& code, const std::string& reason) {
    const size_t b_sent = b_->sent.size();
    const size_t b_updates = b_->sent_updates.size();
    const size_t b_txs = b_->link->submitted.size();
    std::vector<std::string> acks_before;  // B's signed receipts so far
    for (const v1::Envelope& e : b_->sent) {
      if (e.has_ack()) acks_before.push_back(e.ack().SerializeAsString());
    }
    net_.tamper = [&edit](const TestNode& from, v1::Envelope* env) {
      if (from.name == "a" && env->has_reestablish()) edit(env->mutable_reestablish());
    };
    net_.Connect(*a_, *b_);
    net_.Settle();
    net_.tamper = nullptr;

    const v1::ChannelApi ch = net_.Channel(*b_, id_);
    EXPECT_EQ(ch.state(), "closing");
    EXPECT_EQ(ch.close_reason(), "peer showed irreconcilable state: " + code);
    EXPECT_FALSE(net_.connected(*a_, *b_));
    // The answer names the rule and the reason.
    bool rejected = false;
    for (size_t i = b_sent; i < b_->sent.size(); ++i) {
      const v1::Envelope& e = b_->sent[i];
      if (e.has_update_rejected() && e.update_rejected().code() == code) {
        rejected = true;
        EXPECT_NE(e.update_rejected().message().find(reason), std::string::npos)
            << e.update_rejected().message();
      }
    }
    EXPECT_TRUE(rejected) << "B never answered " << code;
    // B closed on the ledger with A's latest proof.
    ASSERT_EQ(b_->link->submitted.size(), b_txs + 1);
    const v1::Transaction& close = b_->link->submitted.back();
    ASSERT_TRUE(close.has_unilateral_close());
    EXPECT_EQ(close.unilateral_close().channel_id(), id_);
    EXPECT_EQ(close.unilateral_close().partner_proof().SerializeAsString(),
              a_->sent_updates.back().proof().SerializeAsString());
    // Only B follows the close block: A does not know yet and keeps tipping.
    net_.SealFor({b_});
    const ledger::Channel* onchain = OnLedger(net_, id_);
    ASSERT_NE(onchain, nullptr);
    EXPECT_EQ(onchain->phase, ledger::ChannelPhase::kClosing);
    EXPECT_EQ(onchain->closer, b_->key.XOnly());

    // Nothing signed after the close: B's own tip is refused unsigned; A,
    // honest again and unaware of the close, reconnects and sends a tip, which
    // B neither applies nor acknowledges.
    TipAnswer mine = net_.Tip(*b_, id_, 1, "after the close");
    ASSERT_TRUE(mine.answered);
    EXPECT_TRUE(mine.outcome.refusal.has_value());
    net_.Connect(*a_, *b_);
    auto theirs = net_.TipAsync(*a_, id_, 5, "after the close");
    net_.Settle();
    ASSERT_EQ(net_.Channel(*a_, id_).state(), "open");  // A really sent it
    EXPECT_GT(a_->sent_updates.size(), 2u);
    EXPECT_FALSE(theirs->answered && theirs->outcome.acked);
    EXPECT_EQ(Received(*b_, id_).size(), 2u);
    EXPECT_EQ(b_->sent_updates.size(), b_updates);
    for (size_t i = b_sent; i < b_->sent.size(); ++i) {
      const v1::Envelope& e = b_->sent[i];
      EXPECT_FALSE(e.has_tip_update() || e.has_close_signed() ||
                   (e.has_close_request() && !e.close_request().signature().empty()))
          << "B signed after the close: " << e.ShortDebugString();
      if (e.has_ack()) {
        EXPECT_NE(std::find(acks_before.begin(), acks_before.end(), e.ack().SerializeAsString()),
                  acks_before.end())
            << "B signed a new receipt after the close: " << e.ShortDebugString();
      }
    }
  }

  std::string id_;
};

// A's nonce as B holds it, with another root.
TEST_F(ReestablishCloseTest, ConflictingRootClosesTheChannel) {
  ReconnectTamperedAndExpectClose(
      [](v1::Reestablish* r) { r->set_sent_tips_root(std::string(32, '\x5a')); },
      "CONFLICTING_STATE", "has root");
}

// A claims a newer proof of B's direction that B never signed (here signed by
// A's key): B, seemingly behind, must not adopt it.
TEST_F(ReestablishCloseTest, ForgedProofOfOurOwnDirectionClosesTheChannel) {
  v1::BalanceProof forged = BLatest();
  forged.set_nonce(forged.nonce() + 1);
  forged.set_transferred(forged.transferred() + 500);
  forged.set_tips_root(std::string(32, '\x6b'));
  ASSERT_TRUE(channel::SignBalanceProof(&forged, a_->key, net_.rng()).ok());
  ReconnectTamperedAndExpectClose(
      [forged](v1::Reestablish* r) {
        r->set_received_nonce(forged.nonce());
        r->set_received_tips_root(forged.tips_root());
        *r->mutable_received_proof() = forged;
        r->set_received_tip_count(r->received_tip_count() + 1);
      },
      "FORGED_PROOF", "is not signed by us");
}

// A shows a proof of B's direction that does verify under B's key and is
// newer than B's latest, but with a lower transferred: adopting it would let
// B's spendable grow back, so B refuses it as conflicting and closes.
TEST_F(ReestablishCloseTest, AdoptedProofWithLowerTransferredClosesTheChannel) {
  v1::BalanceProof lower = BLatest();
  ASSERT_EQ(lower.transferred(), 30u);
  lower.set_nonce(lower.nonce() + 1);
  lower.set_transferred(lower.transferred() - 1);
  lower.set_tips_root(std::string(32, '\x7c'));
  ASSERT_TRUE(channel::SignBalanceProof(&lower, b_->key, net_.rng()).ok());
  ReconnectTamperedAndExpectClose(
      [lower](v1::Reestablish* r) {
        r->set_received_nonce(lower.nonce());
        r->set_received_tips_root(lower.tips_root());
        *r->mutable_received_proof() = lower;
        r->set_received_tip_count(r->received_tip_count() + 1);
      },
      "CONFLICTING_STATE", "cannot follow our nonce");
}

// A says it holds fewer of B's updates than it already acknowledged.
TEST_F(ReestablishCloseTest, PeerThatLostAcknowledgedUpdatesClosesTheChannel) {
  const v1::BalanceProof latest = BLatest();
  ReconnectTamperedAndExpectClose(
      [latest](v1::Reestablish* r) {
        r->set_received_nonce(latest.nonce() - 1);
        r->set_acked_received_nonce(latest.nonce() - 1);
        r->set_received_tip_count(r->received_tip_count() - 1);
      },
      "PEER_LOST_ACKED_UPDATES", "acknowledged");
}

// Many random runs: tips both ways, lost sessions, restarts and held
// messages, then a cooperative close. After every run: every tip answered
// 200 is at the receiver exactly once and byte-identical, no nonce was ever
// signed twice with different contents, and the ledger pays exactly what the
// acknowledged proofs say. TIPD_CHNET_RUNS sets the number of runs (CI: 20),
// TIPD_TEST_SEED replays one.
TEST(ChannelManagerCampaign, RandomRunsLoseNothingAcknowledged) {
  const char* env = std::getenv("TIPD_CHNET_RUNS");
  const int runs = env ? std::atoi(env) : 20;
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  for (int run = 0; run < runs; ++run) {
    SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed) + " run " + std::to_string(run));
    ChannelNet net;
    TestNode& a = net.AddNode("a", 1'000'000);
    TestNode& b = net.AddNode("b", 1'000'000);
    a.StartManager();
    b.StartManager();
    net.Connect(a, b);
    const std::string id = net.OpenChannel(a, b, 5'000, 5'000);
    ASSERT_FALSE(id.empty());
    struct Sent {
      TestNode* from;
      std::string message;
      uint64_t amount;
      std::shared_ptr<TipAnswer> answer;
    };
    std::vector<Sent> sent;
    const int steps = 20 + static_cast<int>(rng() % 40);
    for (int step = 0; step < steps; ++step) {
      const int action = static_cast<int>(rng() % 10);
      TestNode& from = rng() % 2 ? a : b;
      if (action < 6) {
        const uint64_t amount = 1 + rng() % 20;
        std::string msg = "run " + std::to_string(run) + " step " + std::to_string(step);
        sent.push_back({&from, msg, amount, net.TipAsync(from, id, amount, msg)});
      } else if (action == 6) {
        net.hold_messages = true;
      } else if (action == 7) {
        if (net.connected(a, b)) net.Disconnect(a, b);
        net.FlushMessages();
        net.Connect(a, b);
      } else if (action == 8) {
        TestNode& n = rng() % 2 ? a : b;
        net.FlushMessages();
        net.Restart(n, &n == &a ? b : a);
      } else {
        net.FlushMessages();
      }
      net.Settle();
    }
    net.FlushMessages();
    if (!net.connected(a, b)) net.Connect(a, b);
    // Let every request finish (acked, or pending after the ack wait).
    ASSERT_TRUE(net.RunUntil([&] {
      return a.manager->channel_count() == 1 && a.manager->tip_requests().waiting() == 0 &&
             b.manager->tip_requests().waiting() == 0;
    })) << "requests still waiting";
    // Acknowledged tips are at the receiver, byte-identical, exactly once.
    std::map<std::string, int> received;
    for (TestNode* n : {&a, &b}) {
      for (const v1::TipApi& t : Received(*n, id)) {
        received[t.tip().message() + "|" + std::to_string(t.tip().amount())]++;
      }
    }
    uint64_t paid_ab = 0, paid_ba = 0;
    for (const Sent& s : sent) {
      if (!s.answer->ok()) continue;
      EXPECT_EQ(received[s.message + "|" + std::to_string(s.amount)], 1) << s.message;
      (s.from == &a ? paid_ab : paid_ba) += s.amount;
    }
    // No nonce signed twice with different contents, in either direction.
    for (TestNode* n : {&a, &b}) {
      std::map<uint64_t, std::string> by_nonce;
      for (const v1::TipUpdate& u : n->sent_updates) {
        auto [it, fresh] = by_nonce.emplace(u.proof().nonce(), u.proof().SerializeAsString());
        EXPECT_TRUE(fresh || it->second == u.proof().SerializeAsString())
            << n->name << " signed nonce " << u.proof().nonce() << " twice";
      }
    }
    // Close and check the ledger pays at least what the acks promise.
    std::optional<Result<v1::ChannelApi>> closed;
    a.manager->Close(id, false, 60'000ms,
                     [&](Result<v1::ChannelApi> r, std::string) { closed = std::move(r); });
    net.Settle();
    net.Seal();
    ASSERT_TRUE(net.RunUntil([&] { return closed.has_value(); }));
    ASSERT_TRUE(closed->ok()) << closed->status().ToString();
    const ledger::Channel* onchain = OnLedger(net, id);
    ASSERT_NE(onchain, nullptr);
    ASSERT_EQ(onchain->phase, ledger::ChannelPhase::kSettled);
    EXPECT_EQ(onchain->payout_a + onchain->payout_b, 10'000u);
    // The ledger pays exactly what the receivers' histories hold, and every
    // acknowledged tip is among them (checked above).
    uint64_t to_b = 0, to_a = 0;
    for (const v1::TipApi& t : Received(b, id)) to_b += t.tip().amount();
    for (const v1::TipApi& t : Received(a, id)) to_a += t.tip().amount();
    EXPECT_GE(to_b, paid_ab);
    EXPECT_GE(to_a, paid_ba);
    EXPECT_EQ(onchain->payout_b, 5'000u + to_b - to_a);
    EXPECT_EQ(onchain->payout_a, 5'000u + to_a - to_b);
    EXPECT_TRUE(net.ledger().state().CheckSupply().ok());
  }
}

// GET /v1/tips seeks from stored tip to stored tip: channels without history
// between two with tips are skipped, pages and cursors stay exact across
// them, and the direction filter skips the other direction's tips.
TEST_F(ChannelManagerTest, TipListingSeeksAcrossChannelsWithoutHistory) {
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(net_.OpenChannel(*a_, *b_, 10'000));
  std::sort(ids.begin(), ids.end());  // the listing's order
  // Tips on the first and the last channel only; one back from b on the last.
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(net_.Tip(*a_, ids[0], 1, "first " + std::to_string(i)).ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(net_.Tip(*a_, ids[3], 1, "last " + std::to_string(i)).ok());
  ASSERT_TRUE(net_.Tip(*b_, ids[3], 1, "back").ok());

  auto page = a_->manager->ListTips("sent", "", 4, "");
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_EQ(page->tips_size(), 4);
  EXPECT_EQ(page->tips(2).tip().message(), "first 2");
  EXPECT_EQ(page->tips(3).tip().message(), "last 0");
  EXPECT_EQ(page->next_cursor(), HexEncode(AsSpan(ids[3])) + ".0.2");
  page = a_->manager->ListTips("sent", "", 4, page->next_cursor());
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->tips_size(), 2);
  EXPECT_EQ(page->tips(1).tip().message(), "last 2");
  EXPECT_EQ(page->next_cursor(), "") << "no more sent tips, although received ones follow";

  // Both directions: the received tip comes after the last channel's sent ones.
  page = a_->manager->ListTips("", "", 7, "");
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->tips_size(), 7);
  EXPECT_EQ(page->tips(6).direction(), "received");
  EXPECT_EQ(page->tips(6).tip().message(), "back");
  EXPECT_EQ(page->next_cursor(), "");
  // A page that ends exactly before the last tip says there is more.
  page = a_->manager->ListTips("", "", 6, "");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->next_cursor(), HexEncode(AsSpan(ids[3])) + ".1.1");

  // One channel without history, and one with: the filter holds.
  page = a_->manager->ListTips("", ids[1], 100, "");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->tips_size(), 0);
  page = a_->manager->ListTips("received", ids[3], 100, "");
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->tips_size(), 1);
  EXPECT_EQ(page->tips(0).tip().message(), "back");
  // The receiver sees the same from its side.
  EXPECT_EQ(Received(*b_, ids[0]).size(), 3u);
  EXPECT_EQ(Received(*b_, ids[1]).size(), 0u);
  EXPECT_EQ(Received(*b_, ids[3]).size(), 3u);
}

// GET /v1/channels?limit=&cursor=: pages in channel id order that add up to
// the whole list; a cursor is the last id of the page before.
TEST_F(ChannelManagerTest, ChannelListingPagesByCursor) {
  for (int i = 0; i < 5; ++i) ASSERT_FALSE(net_.OpenChannel(*a_, *b_, 1'000).empty());
  std::vector<std::string> all;
  for (const auto& c : a_->manager->ListChannels()) all.push_back(c.channel_id());
  ASSERT_EQ(all.size(), 5u);
  std::vector<std::string> paged;
  std::string cursor;
  int pages = 0;
  do {
    auto page = a_->manager->ListChannelsPage(2, cursor);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    ++pages;
    for (const auto& c : page->channels()) paged.push_back(c.channel_id());
    if (!page->next_cursor().empty()) {
      EXPECT_EQ(page->next_cursor(), paged.back());
    }
    cursor = page->next_cursor();
  } while (!cursor.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(paged, all);
  // A page that holds exactly the rest has no next cursor.
  auto rest = a_->manager->ListChannelsPage(3, all[1]);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(rest->channels_size(), 3);
  EXPECT_EQ(rest->next_cursor(), "");
  EXPECT_EQ(a_->manager->ListChannelsPage(2, "not-a-cursor").status().code(),
            StatusCode::kInvalidArgument);
}

// A history that starts above index 1 (tips below a proof adopted at
// reestablish are not stored) is listed whole: the page after the gap fills
// up and the cursor leads on, instead of ending the listing early.
TEST_F(ChannelManagerTest, TipListingContinuesPastAGapAtTheStartOfAHistory) {
  const std::string id = net_.OpenChannel(*a_, *b_, 10'000);
  for (int i = 1; i <= 10; ++i) ASSERT_TRUE(net_.Tip(*a_, id, 1, "t" + std::to_string(i)).ok());
  storage::WriteBatch gap;
  for (uint64_t i = 1; i <= 3; ++i) {
    gap.Delete(storage::TipKey(id, storage::Direction::kRemoteToLocal, i));
  }
  ASSERT_TRUE(b_->db->Write(gap).ok());
  auto page = b_->manager->ListTips("received", id, 5, "");
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_EQ(page->tips_size(), 5);
  EXPECT_EQ(page->tips(0).tip().index(), 4u);
  EXPECT_EQ(page->tips(4).tip().index(), 8u);
  EXPECT_EQ(page->next_cursor(), HexEncode(AsSpan(id)) + ".1.9");
  const auto all = Received(*b_, id);
  ASSERT_EQ(all.size(), 7u);
  EXPECT_EQ(all.back().tip().message(), "t10");
}

// A keyed tip's first answer is stored without the tip body; a retry loads
// it from the sent tip's history record. If that record cannot be found the
// retry is refused with a clear INTERNAL error (never an answer with an
// empty tip); once it is there, the answer carries the whole tip.
TEST(TipRequestsTest, AnswerStoredWithoutTheTipBodyIsRebuiltOrRefusedClearly) {
  TempDir dir("tipd-tip-requests");
  auto db = storage::Database::Open(dir.path() / "db");
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ManualClock clock(1'700'000'000'000);
  ManualTimers timers(clock);
  node::TipRequests requests(**db, timers, std::chrono::milliseconds(1000));
  node::TipRequestIn in;
  in.channel_id = std::string(32, '\x22');
  in.draft.amount = 5;
  in.draft.message = "the body";
  in.draft.metadata = {{"app_name", "podverse"}};
  in.idempotency_key = "k1";
  in.key_owner = "owner";
  const Hash32 hash = node::TipRequestHash(in);
  v1::TipResponse first;
  first.mutable_tip()->set_channel_id(std::string(64, '2'));
  first.mutable_tip()->set_direction("sent");
  first.mutable_tip()->set_nonce(2);
  first.mutable_tip()->set_idempotency_key("k1");
  first.mutable_tip()->mutable_tip()->set_index(4);
  v1::StoredIdempotentResult rec;
  rec.set_request_hash(std::string(AsStringView(hash)));
  rec.set_response(first.SerializeAsString());
  rec.set_tip_elided(true);
  storage::WriteBatch batch;
  storage::RecordStore<v1::StoredIdempotentResult>(db->get()).Put(&batch, "Itip/owner/k1", rec);
  ASSERT_TRUE((*db)->Write(batch).ok());
  auto replay = [&] {
    std::optional<node::TipOutcome> got;
    node::TipCallback done = [&](node::TipOutcome r) { got = std::move(r); };
    EXPECT_TRUE(requests.Replay(in, hash, done, [](const std::string&, uint64_t) {
      return std::optional<v1::TipReceiptApi>();
    }));
    return got;
  };
  std::optional<node::TipOutcome> refused = replay();
  ASSERT_TRUE(refused.has_value());
  ASSERT_TRUE(refused->refusal.has_value());
  EXPECT_EQ(refused->refusal->error, node::TipError::kInternal);
  EXPECT_NE(refused->refusal->message.find("index 4) cannot be read: the stored tip is missing"),
            std::string::npos)
      << refused->refusal->message;

  v1::StoredTip stored;
  stored.mutable_tip()->set_index(4);
  stored.mutable_tip()->set_amount(5);
  stored.mutable_tip()->set_message("the body");
  v1::MetadataEntry* m = stored.mutable_tip()->add_metadata();
  m->set_key("app_name");
  m->set_value("podverse");
  stored.set_nonce(2);
  storage::WriteBatch history;
  ASSERT_TRUE(storage::TipHistoryStore(db->get())
                  .Append(&history, in.channel_id, storage::Direction::kLocalToRemote, {stored})
                  .ok());
  ASSERT_TRUE((*db)->Write(history).ok());
  std::optional<node::TipOutcome> answered = replay();
  ASSERT_TRUE(answered.has_value());
  ASSERT_FALSE(answered->refusal.has_value()) << answered->refusal->message;
  EXPECT_TRUE(answered->response.replayed());
  v1::TipApi expected = first.tip();
  *expected.mutable_tip() = stored.tip();
  EXPECT_EQ(answered->response.tip().SerializeAsString(), expected.SerializeAsString());
}

}  // namespace
}  // namespace tipd::testing
