// Following the ledger with many channels (issue 11): every block reconciles
// only the channels its transactions name plus the opening and closing ones,
// and a peer's close is never missed for it, whether the block arrives alone,
// in a catch-up or after a restart. In process, over channel_harness.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ledger/codec.h"
#include "node/tx_sender.h"
#include "tests/unit/node/channel_harness.h"

namespace tipd::testing {
namespace {

using namespace std::chrono_literals;

const ledger::Channel* OnLedger(const ChannelNet& net, const std::string& id) {
  ledger::ChannelId cid{};
  std::copy(id.begin(), id.end(), cid.begin());
  return net.ledger().state().FindChannel(cid);
}

// `closer` closes `id` straight at the sequencer, behind its own manager's
// back, with no partner proof: the ledger then holds nothing of what it paid.
void CloseWithNothing(ChannelNet& net, TestNode& closer, const std::string& id) {
  v1::Transaction tx;
  tx.set_chain_id(net.params().chain_id);
  tx.set_signer(std::string(AsStringView(closer.key.XOnly())));
  const ledger::Account* acct = net.sequencer().state().FindAccount(closer.key.XOnly());
  tx.set_nonce(acct ? acct->nonce : 0);
  tx.set_fee(net.params().fee_per_tx);
  tx.mutable_unilateral_close()->set_channel_id(id);
  ASSERT_TRUE(ledger::SignTransaction(&tx, closer.key, net.rng()).ok());
  ASSERT_TRUE(net.SubmitToSequencer(tx).accepted());
}

class ChannelLedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = &net_.AddNode("a", 10'000'000);
    b_ = &net_.AddNode("b", 1'000);
    a_->StartManager();
    b_->StartManager();
    net_.Connect(*a_, *b_);
  }

  // `n` channels a -> b, each open on both sides, and a block after them so
  // both managers are past their first (full) reconcile.
  std::vector<std::string> OpenMany(int n) {
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      ids.push_back(net_.OpenChannel(*a_, *b_, 10'000, 0, 6));
      EXPECT_FALSE(ids.back().empty());
    }
    net_.Seal();
    return ids;
  }

  // A pays 400 on `id`, then closes it with nothing; B's watcher must put
  // A's proof on the ledger inside the window, and the settle pays B.
  void ExpectDefended(const std::string& id) {
    const ledger::Channel* onchain = OnLedger(net_, id);
    ASSERT_NE(onchain, nullptr);
    ASSERT_EQ(onchain->phase, ledger::ChannelPhase::kClosing);
    for (int i = 0; i < 4 && OnLedger(net_, id)->proof_a_to_b.transferred != 400u; ++i) {
      net_.Seal();
    }
    EXPECT_EQ(OnLedger(net_, id)->proof_a_to_b.transferred, 400u)
        << "B's watcher never submitted A's proof";
    EXPECT_EQ(net_.Channel(*b_, id).state(), "closing");
    net_.SealBlocks(8);
    ASSERT_EQ(OnLedger(net_, id)->phase, ledger::ChannelPhase::kSettled);
    EXPECT_EQ(OnLedger(net_, id)->payout_b, 400u);
    EXPECT_EQ(net_.Channel(*b_, id).state(), "closed");
    EXPECT_TRUE(net_.ledger().state().CheckSupply().ok());
  }

  ChannelNet net_;
  TestNode* a_ = nullptr;
  TestNode* b_ = nullptr;
};

// The attack: among many idle channels, the payer closes one with stale
// state. The close names the channel, so the block reconciles it and the
// watcher defends it from then on (CLOSING is looked at every block).
TEST_F(ChannelLedgerTest, APeersCloseAmongIdleChannelsIsDefended) {
  const std::vector<std::string> ids = OpenMany(6);
  const std::string& victim = ids[3];
  ASSERT_TRUE(net_.Tip(*a_, victim, 400, "paid").ok());
  net_.SealBlocks(2);
  CloseWithNothing(net_, *a_, victim);
  net_.Seal();
  ExpectDefended(victim);
  // The others were never touched.
  for (const std::string& id : ids) {
    if (id != victim) {
      EXPECT_EQ(net_.Channel(*b_, id).state(), "open");
    }
  }
}

// The close lands while B lags; B gets it in a catch-up of several blocks.
TEST_F(ChannelLedgerTest, APeersCloseInACatchUpIsDefended) {
  const std::vector<std::string> ids = OpenMany(4);
  const std::string& victim = ids[1];
  ASSERT_TRUE(net_.Tip(*a_, victim, 400, "paid").ok());
  CloseWithNothing(net_, *a_, victim);
  net_.SealFor({a_});
  net_.SealFor({a_});
  net_.CatchUp(*b_);
  ExpectDefended(victim);
}

// The close lands while B is down and B's follower is behind: B restarts,
// then catches up.
TEST_F(ChannelLedgerTest, APeersCloseWhileStoppedIsDefendedAfterTheRestart) {
  const std::vector<std::string> ids = OpenMany(4);
  const std::string& victim = ids[2];
  ASSERT_TRUE(net_.Tip(*a_, victim, 400, "paid").ok());
  b_->StopManager();
  CloseWithNothing(net_, *a_, victim);
  net_.SealFor({a_});
  net_.SealFor({a_});
  b_->StartManager();
  net_.Connect(*a_, *b_);
  net_.CatchUp(*b_);
  ExpectDefended(victim);
}

// Issue 11: OnBlock used to reconcile every channel on every block, so
// opening 10,000 channels slowed quadratically. Idle open channels are now
// looked at only by blocks that name them.
TEST_F(ChannelLedgerTest, IdleOpenChannelsAreNotReconciledEveryBlock) {
  const int kChannels = 12;
  const std::vector<std::string> ids = OpenMany(kChannels);
  const uint64_t before = b_->manager->reconciles();
  net_.SealBlocks(10);
  EXPECT_EQ(b_->manager->reconciles(), before) << "empty blocks reconciled idle channels";
  // A deposit into one channel reconciles that one (its deposit is seen).
  std::optional<Result<v1::ChannelApi>> answer;
  a_->manager->Deposit(ids[5], 500, 60'000ms,
                       [&](Result<v1::ChannelApi> r, std::string) { answer = std::move(r); });
  net_.Settle();
  const uint64_t at_deposit = b_->manager->reconciles();
  net_.Seal();
  ASSERT_TRUE(net_.RunUntil([&] { return answer.has_value(); }));
  ASSERT_TRUE(answer->ok()) << answer->status().ToString();
  EXPECT_EQ(b_->manager->reconciles(), at_deposit + 1);
  EXPECT_EQ(net_.Channel(*b_, ids[5]).deposit_remote(), 10'500u);
  // A restart reconciles everything once (Start, and the first block after).
  net_.Restart(*b_, *a_);
  const uint64_t restarted = b_->manager->reconciles();
  EXPECT_EQ(restarted, static_cast<uint64_t>(kChannels));
  net_.Seal();
  EXPECT_EQ(b_->manager->reconciles(), restarted + kChannels);
  net_.SealBlocks(3);
  EXPECT_EQ(b_->manager->reconciles(), restarted + kChannels);
}

// An opening channel is looked at every block (A's account nonce and the
// height decide its abandonment), and leaves the index once open.
TEST_F(ChannelLedgerTest, OpeningChannelsAreReconciledEveryBlockUntilOpen) {
  OpenMany(3);
  net_.mode = LedgerMode::kDrop;  // the open never reaches a block
  std::optional<Result<v1::ChannelApi>> answer;
  a_->manager->Open(b_->key.public_key(), 1000, 0, 10, 500ms,
                    [&](Result<v1::ChannelApi> r, std::string) { answer = std::move(r); });
  net_.Settle();
  net_.AdvanceMs(600);
  ASSERT_TRUE(answer.has_value());
  net_.mode = LedgerMode::kInclude;
  const uint64_t before = b_->manager->reconciles();
  net_.SealBlocks(3);
  EXPECT_EQ(b_->manager->reconciles(), before + 3) << "the opening channel was not watched";
}

// Issue 11: concurrent opens from one node used to fail spuriously. An open
// that ended without a transaction (the peer refused) reset every handed-out
// nonce, so a later open reused one another still held (CHANNEL_EXISTS, or a
// replay the ledger refuses) and the ones after it left a gap the ledger
// refused. Now each nonce is used once, in order, and a released one is
// taken by the next transaction.
TEST(ConcurrentOpens, AllSucceedWhileOthersAreRefusedOrPending) {
  ChannelNet net;
  TestNode& a = net.AddNode("a", 10'000'000);
  TestNode& b = net.AddNode("b", 1'000);
  TestNode& c = net.AddNode("c", 1'000);
  TestNode& d = net.AddNode("d", 1'000);  // funds nothing: refuses a push
  d.options.open.max_accept_deposit = 0;
  for (TestNode* n : {&a, &b, &c, &d}) n->StartManager();
  net.Connect(a, b);
  net.Connect(a, c);
  net.Connect(a, d);
  std::vector<std::optional<Result<v1::ChannelApi>>> answers(8);
  auto open = [&](size_t i, TestNode& to, uint64_t push) {
    a.manager->Open(
        to.key.public_key(), 1'000 + i, push, 10, 60'000ms,
        [&answers, i](Result<v1::ChannelApi> r, std::string) { answers[i] = std::move(r); });
  };
  // All at once: two to b, one to c, one d refuses, then more behind it.
  open(0, b, 0);
  open(1, c, 0);
  open(2, d, 5);  // DEPOSIT_REFUSED: ends without a transaction
  open(3, b, 0);
  open(4, c, 0);
  open(5, d, 7);  // refused again
  open(6, b, 0);
  net.Settle();
  for (int round = 0; round < 10; ++round) {
    net.Seal();
    if (std::all_of(answers.begin(), answers.begin() + 7,
                    [](const auto& x) { return x.has_value(); }))
      break;
  }
  for (size_t i = 0; i < 7; ++i) {
    ASSERT_TRUE(answers[i].has_value()) << "open " << i << " never answered";
    if (i == 2 || i == 5) {
      ASSERT_FALSE(answers[i]->ok());
      EXPECT_NE(answers[i]->status().message().find("DEPOSIT_REFUSED"), std::string::npos)
          << answers[i]->status().ToString();
      continue;
    }
    ASSERT_TRUE(answers[i]->ok()) << "open " << i << ": " << answers[i]->status().ToString();
    EXPECT_EQ((*answers[i])->state(), "open") << "open " << i;
  }
  // Every transaction A sent used a distinct nonce and the ledger took each.
  const ledger::Account* acct = net.ledger().state().FindAccount(a.key.XOnly());
  ASSERT_NE(acct, nullptr);
  EXPECT_EQ(acct->nonce, 5u);
  std::set<uint64_t> nonces;
  for (const v1::Transaction& tx : a.link->submitted) nonces.insert(tx.nonce());
  EXPECT_EQ(nonces.size(), a.link->submitted.size()) << "a nonce was used twice";
  // A deposit and two opens, all at once, after all that.
  const std::string first = std::string(AsStringView(*HexDecode((*answers[0])->channel_id())));
  std::optional<Result<v1::ChannelApi>> deposit;
  a.manager->Deposit(first, 50, 60'000ms,
                     [&](Result<v1::ChannelApi> r, std::string) { deposit = std::move(r); });
  open(7, c, 0);
  std::optional<Result<v1::ChannelApi>> extra;
  a.manager->Open(d.key.public_key(), 900, 0, 10, 60'000ms,
                  [&](Result<v1::ChannelApi> r, std::string) { extra = std::move(r); });
  net.Settle();
  for (int round = 0; round < 10 && !(deposit && answers[7] && extra); ++round) net.Seal();
  ASSERT_TRUE(deposit && answers[7] && extra);
  EXPECT_TRUE(deposit->ok()) << deposit->status().ToString();
  EXPECT_TRUE(answers[7]->ok()) << answers[7]->status().ToString();
  EXPECT_TRUE(extra->ok()) << extra->status().ToString();
  EXPECT_EQ(net.ledger().state().FindAccount(a.key.XOnly())->nonce, 8u);
}

// The nonce rules of node/tx_sender.h, one by one, against the fake ledger.
TEST(TxSenderNonces, OneUseEachInOrderAndAGivenBackNonceIsTakenNext) {
  ChannelNet net;
  TestNode& a = net.AddNode("a", 1'000'000);
  TestNode& b = net.AddNode("b", 0);
  a.StartManager();
  node::TxSender txs(a.key, *a.link, net.rng());
  std::vector<ledger::SubmitOutcome> answers;
  auto transfer = [&] {
    v1::Transaction tx = txs.NewTx();
    tx.mutable_transfer()->set_to(std::string(AsStringView(b.key.XOnly())));
    tx.mutable_transfer()->set_amount(1);
    txs.Submit(std::move(tx), [&](const ledger::SubmitOutcome& out) { answers.push_back(out); });
  };
  // An open's nonce is reserved; a transaction behind it waits.
  std::optional<uint64_t> reserved;
  txs.Reserve([&](uint64_t n) { reserved = n; });
  ASSERT_EQ(reserved, 0u);
  transfer();
  net.Settle();
  EXPECT_EQ(txs.queued(), 1u);
  EXPECT_TRUE(a.link->submitted.empty()) << "sent above a nonce that had not left";
  // A second reservation waits for the first.
  std::optional<uint64_t> second;
  txs.Reserve([&](uint64_t n) { second = n; });
  EXPECT_FALSE(second.has_value());
  // Given back: the waiting transfer takes it, then the next reservation.
  txs.Release(0);
  net.Settle();
  ASSERT_EQ(a.link->submitted.size(), 1u);
  EXPECT_EQ(a.link->submitted[0].nonce(), 0u);
  ASSERT_EQ(second, 1u);
  // The reserved transaction leaves at its nonce; the next one follows it.
  transfer();
  EXPECT_EQ(txs.queued(), 1u);
  v1::Transaction open_like = txs.NewTx();
  open_like.set_nonce(1);
  open_like.mutable_transfer()->set_to(std::string(AsStringView(b.key.XOnly())));
  open_like.mutable_transfer()->set_amount(2);
  ASSERT_TRUE(ledger::SignTransaction(&open_like, a.key, net.rng()).ok());
  txs.SubmitReserved(open_like, [&](const ledger::SubmitOutcome& out) { answers.push_back(out); });
  net.Settle();
  ASSERT_EQ(a.link->submitted.size(), 3u);
  EXPECT_EQ(a.link->submitted[1].nonce(), 1u);
  EXPECT_EQ(a.link->submitted[2].nonce(), 2u);
  // A refusal: the next transaction starts again from the nonce not taken.
  net.mode = LedgerMode::kRefuse;
  transfer();
  net.Settle();
  net.mode = LedgerMode::kInclude;
  transfer();
  net.Settle();
  ASSERT_EQ(a.link->submitted.size(), 5u);
  EXPECT_EQ(a.link->submitted[3].nonce(), 3u);
  EXPECT_EQ(a.link->submitted[4].nonce(), 3u);
  ASSERT_EQ(answers.size(), 5u);
  EXPECT_EQ(answers[3].kind, ledger::SubmitOutcome::Kind::kRefused);
  for (size_t i : {0u, 1u, 2u, 4u}) EXPECT_TRUE(answers[i].accepted()) << answers[i].ToString();
  net.Seal();
  EXPECT_EQ(net.ledger().state().FindAccount(a.key.XOnly())->nonce, 4u);
}

}  // namespace
}  // namespace tipd::testing
