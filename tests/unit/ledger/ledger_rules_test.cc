// The ledger rules: every transaction kind, every rejection reason, and the
// invariants (a rejection changes nothing; supply is conserved; the state hash
// is a deterministic function of the transactions).
#include <gtest/gtest.h>

#include "channel/codec.h"
#include "ledger/codec.h"
#include "ledger/rules.h"

namespace tipd::ledger {
namespace {

// Deterministic "randomness" for aux bytes and keys: a counter.
class CountingRandom final : public crypto::RandomSource {
 public:
  void Fill(std::span<uint8_t> out) override {
    for (auto& b : out) b = static_cast<uint8_t>(++n_ * 131 + 7);
  }

 private:
  uint64_t n_ = 0;
};

crypto::KeyPair Key(uint8_t fill) {
  Bytes b(32, fill);
  return crypto::KeyPair::FromSecret(crypto::SecretKey::FromBytes(b).value());
}

std::string Str(ByteSpan b) { return std::string(AsStringView(b)); }

constexpr uint64_t kFee = 10;

class LedgerRulesTest : public ::testing::Test {
 protected:
  LedgerRulesTest()
      : alice_(Key(1)), bob_(Key(2)), carol_(Key(3)), dave_(Key(4)), state_(MakeParams()) {}

  Params MakeParams() {
    v1::GenesisParams g;
    g.set_chain_id("tipd-test");
    g.set_sequencer_key(Str(Key(9).XOnly()));
    for (auto* k : {&alice_, &bob_}) {
      auto* a = g.add_allocations();
      a->set_account(Str(k->XOnly()));
      a->set_amount(1'000'000);
    }
    g.set_fee_per_tx(kFee);
    g.set_min_settle_timeout(2);
    g.set_max_settle_timeout(100);
    g.set_block_interval_ms(1000);
    auto p = ValidateGenesis(g);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return *p;
  }

  v1::Transaction Base(const crypto::KeyPair& signer) {
    v1::Transaction tx;
    tx.set_chain_id("tipd-test");
    tx.set_signer(Str(signer.XOnly()));
    const Account* a = state_.FindAccount(signer.XOnly());
    tx.set_nonce(a ? a->nonce : 0);
    tx.set_fee(kFee);
    return tx;
  }
  v1::Transaction Signed(v1::Transaction tx, const crypto::KeyPair& signer) {
    EXPECT_TRUE(SignTransaction(&tx, signer, rng_).ok());
    return tx;
  }
  v1::Transaction Transfer(const crypto::KeyPair& from, const crypto::KeyPair& to, uint64_t amt) {
    auto tx = Base(from);
    tx.mutable_transfer()->set_to(Str(to.XOnly()));
    tx.mutable_transfer()->set_amount(amt);
    return Signed(tx, from);
  }
  // A channel open alice(A)-b(B), bob unless given.
  v1::Transaction Open(uint64_t da, uint64_t db, uint64_t timeout = 5,
                       const crypto::KeyPair* b = nullptr) {
    if (b == nullptr) b = &bob_;
    auto tx = Base(alice_);
    auto* o = tx.mutable_channel_open();
    o->set_party_a(Str(alice_.XOnly()));
    o->set_party_b(Str(b->XOnly()));
    o->set_deposit_a(da);
    o->set_deposit_b(db);
    o->set_settle_timeout(timeout);
    o->set_nonce_b(0);
    o->set_signature_b(std::string(64, '\0'));
    auto agreement = EncodeChannelOpenAgreement("tipd-test", *o, tx.nonce());
    EXPECT_TRUE(agreement.ok());
    o->set_signature_b(Str(crypto::SignTagged(*b, kChannelOpenTag, *agreement, rng_)));
    return Signed(tx, alice_);
  }
  ChannelId OpenChannel(uint64_t da, uint64_t db, uint64_t height = 1, uint64_t timeout = 5,
                        const crypto::KeyPair* b = nullptr) {
    uint64_t nonce_a = state_.FindAccount(alice_.XOnly())->nonce;
    auto e = state_.Apply(Open(da, db, timeout, b), height);
    EXPECT_FALSE(e.has_value()) << e->ToString();
    return DeriveChannelId("tipd-test", alice_.XOnly(), (b ? *b : bob_).XOnly(), nonce_a);
  }
  void ApplyOk(const v1::Transaction& tx, uint64_t height) {
    auto e = state_.Apply(tx, height);
    ASSERT_FALSE(e.has_value()) << e->ToString();
    ASSERT_TRUE(state_.CheckSupply().ok()) << state_.CheckSupply().ToString();
  }
  uint64_t Balance(const crypto::KeyPair& k) {
    const Account* a = state_.FindAccount(k.XOnly());
    return a ? a->balance : 0;
  }
  v1::BalanceProof Proof(const crypto::KeyPair& signer, const ChannelId& id, uint64_t nonce,
                         uint64_t transferred) {
    v1::BalanceProof p;
    p.set_chain_id("tipd-test");
    p.set_channel_id(Str(id));
    p.set_nonce(nonce);
    p.set_transferred(transferred);
    p.set_locks_root(std::string(32, '\0'));
    p.set_tips_root(std::string(32, static_cast<char>(nonce)));
    EXPECT_TRUE(channel::SignBalanceProof(&p, signer, rng_).ok());
    return p;
  }
  v1::Transaction UnilateralClose(const crypto::KeyPair& closer, const ChannelId& id,
                                  const v1::BalanceProof* partner_proof) {
    auto tx = Base(closer);
    tx.mutable_unilateral_close()->set_channel_id(Str(id));
    if (partner_proof) *tx.mutable_unilateral_close()->mutable_partner_proof() = *partner_proof;
    return Signed(tx, closer);
  }
  v1::Transaction UpdateProof(const crypto::KeyPair& signer, const ChannelId& id,
                              const v1::BalanceProof& proof) {
    auto tx = Base(signer);
    tx.mutable_update_proof()->set_channel_id(Str(id));
    *tx.mutable_update_proof()->mutable_proof() = proof;
    return Signed(tx, signer);
  }
  v1::Transaction Settle(const crypto::KeyPair& signer, const ChannelId& id) {
    auto tx = Base(signer);
    tx.mutable_settle()->set_channel_id(Str(id));
    return Signed(tx, signer);
  }

  // Everything observable about the state, to compare before/after.
  std::string Snapshot() {
    std::string s;
    for (auto* k : {&alice_, &bob_, &carol_, &dave_, &erin_}) {
      const Account* a = state_.FindAccount(k->XOnly());
      s += a ? std::to_string(a->balance) + "/" + std::to_string(a->nonce) + ";" : "none;";
    }
    s += std::to_string(state_.fees_collected()) + ";" + std::to_string(state_.channel_count());
    for (const auto& id : known_channels_) {
      if (const Channel* ch = state_.FindChannel(id)) s += ChannelToProto(*ch).SerializeAsString();
    }
    return s;
  }
  void ExpectRejected(const v1::Transaction& tx, uint64_t height, TxRule rule) {
    ExpectRejected(tx, height, std::string(TxRuleCode(rule)));
  }
  // By the rule's stable string code (what a client sees).
  void ExpectRejected(const v1::Transaction& tx, uint64_t height, const std::string& code) {
    std::string before = Snapshot();
    auto e = state_.Apply(tx, height);
    ASSERT_TRUE(e.has_value()) << "accepted, expected " << code;
    EXPECT_EQ(TxRuleCode(e->rule), code) << e->ToString();
    EXPECT_FALSE(e->reason.empty());
    EXPECT_EQ(Snapshot(), before) << "a rejected transaction changed the state";
    EXPECT_TRUE(state_.CheckSupply().ok());
  }

  CountingRandom rng_;
  crypto::KeyPair alice_, bob_, carol_, dave_;  // dave has no genesis allocation
  crypto::KeyPair erin_ = Key(5);               // nor has erin
  LedgerState state_;
  std::vector<ChannelId> known_channels_;
};

TEST_F(LedgerRulesTest, TransferMovesFundsChargesFeeAndBumpsNonce) {
  ASSERT_FALSE(state_.Apply(Transfer(alice_, carol_, 500), 1));
  EXPECT_EQ(state_.FindAccount(alice_.XOnly())->balance, 1'000'000 - 500 - kFee);
  EXPECT_EQ(state_.FindAccount(alice_.XOnly())->nonce, 1u);
  EXPECT_EQ(state_.FindAccount(carol_.XOnly())->balance, 500u);
  EXPECT_EQ(state_.fees_collected(), kFee);
  EXPECT_TRUE(state_.CheckSupply().ok());
}

TEST_F(LedgerRulesTest, RejectsBadSignature) {
  auto tx = Transfer(alice_, carol_, 5);
  tx.mutable_transfer()->set_amount(6);  // signature covered 5
  ExpectRejected(tx, 1, TxRule::kBadSignature);
  auto forged = Base(alice_);
  forged.mutable_transfer()->set_to(Str(carol_.XOnly()));
  forged.mutable_transfer()->set_amount(5);
  forged = Signed(forged, alice_);
  forged.set_signer(Str(bob_.XOnly()));  // claims to be bob
  forged.set_nonce(0);
  ExpectRejected(forged, 1, TxRule::kBadSignature);
}

TEST_F(LedgerRulesTest, RejectsReplayedNonce) {
  auto tx = Transfer(alice_, carol_, 5);
  ASSERT_FALSE(state_.Apply(tx, 1));
  ExpectRejected(tx, 1, TxRule::kBadNonce);
  auto gap = Base(alice_);
  gap.set_nonce(7);
  gap.mutable_transfer()->set_to(Str(carol_.XOnly()));
  gap.mutable_transfer()->set_amount(1);
  ExpectRejected(Signed(gap, alice_), 1, TxRule::kBadNonce);
}

TEST_F(LedgerRulesTest, RejectsWrongChainId) {
  auto tx = Base(alice_);
  tx.set_chain_id("other-chain");
  tx.mutable_transfer()->set_to(Str(carol_.XOnly()));
  tx.mutable_transfer()->set_amount(1);
  ExpectRejected(Signed(tx, alice_), 1, TxRule::kWrongChainId);
}

TEST_F(LedgerRulesTest, RejectsOverspendAndAmountOverflow) {
  ExpectRejected(Transfer(alice_, carol_, 1'000'000), 1, TxRule::kInsufficientFunds);
  ExpectRejected(Transfer(alice_, carol_, UINT64_MAX - 3), 1, TxRule::kOverflow);
  ExpectRejected(Transfer(carol_, alice_, 1), 1, TxRule::kInsufficientFunds);  // no account
}

TEST_F(LedgerRulesTest, RejectsLowFeeZeroAmountSelfTransferAndMalformed) {
  auto tx = Base(alice_);
  tx.set_fee(kFee - 1);
  tx.mutable_transfer()->set_to(Str(carol_.XOnly()));
  tx.mutable_transfer()->set_amount(1);
  ExpectRejected(Signed(tx, alice_), 1, TxRule::kFeeTooLow);
  ExpectRejected(Transfer(alice_, carol_, 0), 1, TxRule::kZeroAmount);
  ExpectRejected(Transfer(alice_, alice_, 3), 1, TxRule::kSelfTransfer);
  auto bad = Base(alice_);
  bad.mutable_transfer()->set_to("short");
  bad.set_signature(std::string(64, 'x'));
  ExpectRejected(bad, 1, TxRule::kMalformed);
  auto nobody = Base(alice_);
  nobody.set_signature(std::string(64, 'x'));
  ExpectRejected(nobody, 1, TxRule::kMalformed);
}

// B's signature covers A's nonce, so it opens one channel id only: B needs no
// account nonce of its own, and agreeing to an open never blocks B's own
// transactions (issue 9: an open from a peer costs the acceptor nothing).
TEST_F(LedgerRulesTest, ChannelOpenTakesBothDepositsAndOnlyTheOpenersNonce) {
  ChannelId id = OpenChannel(300, 200);
  const Channel* ch = state_.FindChannel(id);
  ASSERT_NE(ch, nullptr);
  EXPECT_EQ(ch->phase, ChannelPhase::kOpen);
  EXPECT_EQ(ch->deposit_a, 300u);
  EXPECT_EQ(ch->deposit_b, 200u);
  EXPECT_EQ(state_.FindAccount(alice_.XOnly())->balance, 1'000'000 - 300 - kFee);
  EXPECT_EQ(state_.FindAccount(bob_.XOnly())->balance, 1'000'000 - 200u);
  EXPECT_EQ(state_.FindAccount(bob_.XOnly())->nonce, 0u);
  EXPECT_EQ(state_.FindAccount(alice_.XOnly())->nonce, 1u);
  EXPECT_TRUE(state_.CheckSupply().ok());
}

TEST_F(LedgerRulesTest, ChannelOpenRejections) {
  auto tx = Open(300, 200);
  tx.mutable_channel_open()->set_deposit_b(201);  // B signed 200
  ExpectRejected(Signed(tx, alice_), 1, TxRule::kBadSignature);
  ExpectRejected(Open(300, 2'000'000), 1, TxRule::kInsufficientFunds);
  ExpectRejected(Open(2'000'000, 0), 1, TxRule::kInsufficientFunds);
  ExpectRejected(Open(1, 1, 1), 1, TxRule::kSettleTimeoutOutOfBounds);
  ExpectRejected(Open(1, 1, 101), 1, TxRule::kSettleTimeoutOutOfBounds);
  ExpectRejected(Open(0, 0), 1, TxRule::kZeroAmount);
  auto stale_b = Open(1, 1);
  stale_b.mutable_channel_open()->set_nonce_b(5);
  ExpectRejected(Signed(stale_b, alice_), 1, TxRule::kMalformed);
  auto by_b = Open(1, 1);
  by_b.set_signer(Str(bob_.XOnly()));
  by_b.set_nonce(0);
  ExpectRejected(Signed(by_b, bob_), 1, TxRule::kWrongSigner);
}

TEST_F(LedgerRulesTest, DepositTopsUpOnlyOpenChannelsOfItsParties) {
  ChannelId id = OpenChannel(300, 0);
  known_channels_.push_back(id);
  auto dep = [&](const crypto::KeyPair& k, uint64_t amt) {
    auto tx = Base(k);
    tx.mutable_deposit()->set_channel_id(Str(id));
    tx.mutable_deposit()->set_amount(amt);
    return Signed(tx, k);
  };
  ASSERT_FALSE(state_.Apply(dep(bob_, 50), 2));
  EXPECT_EQ(state_.FindChannel(id)->deposit_b, 50u);
  ASSERT_FALSE(state_.Apply(Transfer(alice_, carol_, 100), 2));
  ExpectRejected(dep(carol_, 5), 2, TxRule::kNotAParty);
  ExpectRejected(dep(bob_, 0), 2, TxRule::kZeroAmount);
  ExpectRejected(dep(bob_, 5'000'000), 2, TxRule::kInsufficientFunds);
  auto unknown = Base(bob_);
  unknown.mutable_deposit()->set_channel_id(std::string(32, 'z'));
  unknown.mutable_deposit()->set_amount(1);
  ExpectRejected(Signed(unknown, bob_), 2, TxRule::kUnknownChannel);
  EXPECT_TRUE(state_.CheckSupply().ok());
}

TEST_F(LedgerRulesTest, CooperativeClosePaysOutAtOnce) {
  ChannelId id = OpenChannel(300, 200);
  known_channels_.push_back(id);
  auto close = [&](uint64_t ba, uint64_t bb, bool sign_b_correctly) {
    auto tx = Base(bob_);
    auto* c = tx.mutable_cooperative_close()->mutable_close();
    c->set_chain_id("tipd-test");
    c->set_channel_id(Str(id));
    c->set_balance_a(ba);
    c->set_balance_b(bb);
    c->set_signature_a(Str(*channel::SignCooperativeClose("tipd-test", id, ba, bb, alice_, rng_)));
    c->set_signature_b(Str(*channel::SignCooperativeClose(
        "tipd-test", id, ba, sign_b_correctly ? bb : bb + 1, bob_, rng_)));
    return Signed(tx, bob_);
  };
  ExpectRejected(close(250, 249, true), 2, TxRule::kBalancesMismatch);
  ExpectRejected(close(250, 250, false), 2, TxRule::kBadSignature);
  uint64_t bob_before = state_.FindAccount(bob_.XOnly())->balance;
  ASSERT_FALSE(state_.Apply(close(180, 320, true), 2));
  EXPECT_EQ(state_.FindChannel(id)->phase, ChannelPhase::kSettled);
  EXPECT_EQ(state_.FindAccount(bob_.XOnly())->balance, bob_before + 320 - kFee);
  EXPECT_EQ(state_.FindAccount(alice_.XOnly())->balance, 1'000'000 - 300 - kFee + 180);
  EXPECT_TRUE(state_.CheckSupply().ok());
  ExpectRejected(close(180, 320, true), 3, TxRule::kChannelNotOpen);
}

TEST_F(LedgerRulesTest, UnilateralCloseUpdateAndSettleFollowTheWindow) {
  ChannelId id = OpenChannel(1000, 1000, /*height=*/1, /*timeout=*/5);
  known_channels_.push_back(id);
  // Alice paid Bob 300 (nonce 4), Bob paid Alice 100 (nonce 2). Bob closes
  // with an old proof of Alice's (nonce 1, 50).
  auto old_from_alice = Proof(alice_, id, 1, 50);
  auto latest_from_alice = Proof(alice_, id, 4, 300);
  auto latest_from_bob = Proof(bob_, id, 2, 100);
  ExpectRejected(UnilateralClose(carol_, id, &old_from_alice), 10, TxRule::kInsufficientFunds);
  ASSERT_FALSE(state_.Apply(Transfer(alice_, carol_, 100), 9));
  ExpectRejected(UnilateralClose(carol_, id, &old_from_alice), 10, TxRule::kNotAParty);
  auto forged = latest_from_alice;
  forged.set_transferred(999);
  ExpectRejected(UnilateralClose(bob_, id, &forged), 10, TxRule::kBadProof);
  ExpectRejected(Settle(alice_, id), 10, TxRule::kChannelNotClosing);

  ASSERT_FALSE(state_.Apply(UnilateralClose(bob_, id, &old_from_alice), 10));
  EXPECT_EQ(state_.FindChannel(id)->phase, ChannelPhase::kClosing);
  EXPECT_EQ(state_.FindChannel(id)->WindowEnd(), 15u);
  ExpectRejected(UnilateralClose(alice_, id, &latest_from_bob), 11, TxRule::kChannelNotOpen);
  // Alice's watcher submits Bob's latest proof; Bob (the closer) can also
  // raise Alice's proof, which only harms himself if it were older.
  ASSERT_FALSE(state_.Apply(UpdateProof(alice_, id, latest_from_bob), 12));
  ExpectRejected(UpdateProof(alice_, id, latest_from_bob), 12, TxRule::kStaleProof);
  ASSERT_FALSE(state_.Apply(UpdateProof(bob_, id, latest_from_alice), 15));
  ExpectRejected(Settle(alice_, id), 15, TxRule::kWindowOpen);
  ExpectRejected(UpdateProof(alice_, id, Proof(bob_, id, 3, 150)), 16, TxRule::kWindowClosed);

  uint64_t a_before = state_.FindAccount(alice_.XOnly())->balance;
  uint64_t b_before = state_.FindAccount(bob_.XOnly())->balance;
  ASSERT_FALSE(state_.Apply(Settle(carol_, id), 16));  // anyone may settle
  const Channel* ch = state_.FindChannel(id);
  EXPECT_EQ(ch->phase, ChannelPhase::kSettled);
  EXPECT_EQ(ch->payout_a, 1000u - 300 + 100);
  EXPECT_EQ(ch->payout_b, 1000u + 300 - 100);
  EXPECT_EQ(state_.FindAccount(alice_.XOnly())->balance, a_before + 800);
  EXPECT_EQ(state_.FindAccount(bob_.XOnly())->balance, b_before + 1200);
  EXPECT_TRUE(state_.CheckSupply().ok());
  ExpectRejected(Settle(alice_, id), 17, TxRule::kChannelNotClosing);
}

// Fund-safety review, issue 9: the payer X of direction X->Y signs a fresh
// X->Y proof with a huge nonce and transferred 0 and submits it during the
// settle window, so that Settle would pay X its whole deposit back. Only Y,
// the side a proof pays, may submit it.
TEST_F(LedgerRulesTest, PayerCannotEraseWhatItPaidWithAFreshProof) {
  ChannelId id = OpenChannel(1000, 1000, /*height=*/1, /*timeout=*/5);
  known_channels_.push_back(id);
  ASSERT_FALSE(state_.Apply(Transfer(alice_, carol_, 100), 2));  // carol can pay fees
  // Alice paid Bob 300 (nonce 4); Bob closes holding it.
  auto latest_from_alice = Proof(alice_, id, 4, 300);
  ASSERT_FALSE(state_.Apply(UnilateralClose(bob_, id, &latest_from_alice), 10));
  auto eraser = Proof(alice_, id, uint64_t{1} << 63, 0);
  ExpectRejected(UpdateProof(alice_, id, eraser), 11, "NOT_BENEFICIARY");
  // Nor may a third party submit it for her.
  ExpectRejected(UpdateProof(carol_, id, eraser), 11, "NOT_BENEFICIARY");
  ExpectRejected(UpdateProof(carol_, id, Proof(bob_, id, 2, 100)), 11, "NOT_BENEFICIARY");
  // The same holds when the payer is the closer: Alice closes another channel
  // and then tries to lower her own direction.
  ChannelId id2 = OpenChannel(1000, 1000, /*height=*/12, /*timeout=*/5);
  known_channels_.push_back(id2);
  ASSERT_FALSE(state_.Apply(UnilateralClose(alice_, id2, nullptr), 12));
  auto from_alice2 = Proof(alice_, id2, 3, 200);
  ASSERT_FALSE(state_.Apply(UpdateProof(bob_, id2, from_alice2), 13));  // Bob defends
  ExpectRejected(UpdateProof(alice_, id2, Proof(alice_, id2, uint64_t{1} << 63, 0)), 14,
                 "NOT_BENEFICIARY");

  uint64_t a_before = state_.FindAccount(alice_.XOnly())->balance;
  uint64_t b_before = state_.FindAccount(bob_.XOnly())->balance;
  ASSERT_FALSE(state_.Apply(Settle(carol_, id), 16));
  const Channel* ch = state_.FindChannel(id);
  EXPECT_EQ(ch->payout_a, 700u);
  EXPECT_EQ(ch->payout_b, 1300u);
  EXPECT_EQ(state_.FindAccount(alice_.XOnly())->balance, a_before + 700);
  EXPECT_EQ(state_.FindAccount(bob_.XOnly())->balance, b_before + 1300);
  ASSERT_FALSE(state_.Apply(Settle(carol_, id2), 18));
  EXPECT_EQ(state_.FindChannel(id2)->payout_a, 800u);
  EXPECT_EQ(state_.FindChannel(id2)->payout_b, 1200u);
  EXPECT_TRUE(state_.CheckSupply().ok());
}

// The beneficiary's own update still works, in both directions, and Settle
// pays the honest balances.
TEST_F(LedgerRulesTest, BeneficiaryUpdatesItsIncomingProof) {
  ChannelId id = OpenChannel(1000, 1000, /*height=*/1, /*timeout=*/5);
  known_channels_.push_back(id);
  auto old_from_alice = Proof(alice_, id, 1, 50);
  ASSERT_FALSE(state_.Apply(UnilateralClose(bob_, id, &old_from_alice), 10));
  // Bob (paid by A->B) raises Alice's proof; Alice (paid by B->A) raises Bob's.
  ASSERT_FALSE(state_.Apply(UpdateProof(bob_, id, Proof(alice_, id, 5, 400)), 11));
  ASSERT_FALSE(state_.Apply(UpdateProof(alice_, id, Proof(bob_, id, 3, 150)), 11));
  ExpectRejected(UpdateProof(bob_, id, Proof(alice_, id, 5, 900)), 12, TxRule::kStaleProof);
  ASSERT_FALSE(state_.Apply(Settle(alice_, id), 16));
  EXPECT_EQ(state_.FindChannel(id)->payout_a, 1000u - 400 + 150);
  EXPECT_EQ(state_.FindChannel(id)->payout_b, 1000u + 400 - 150);
  EXPECT_TRUE(state_.CheckSupply().ok());
}

// A unilateral close carries only the partner's proof: the closer cannot put
// its own (lowered) proof in.
TEST_F(LedgerRulesTest, CloserCannotSubmitItsOwnProof) {
  ChannelId id = OpenChannel(1000, 1000, /*height=*/1, /*timeout=*/5);
  known_channels_.push_back(id);
  auto own = Proof(alice_, id, uint64_t{1} << 63, 0);
  ExpectRejected(UnilateralClose(alice_, id, &own), 2, TxRule::kBadProof);
  EXPECT_EQ(state_.FindChannel(id)->phase, ChannelPhase::kOpen);
}

// Fund-safety review, issue 9: a node that only receives has no ledger
// balance, yet must be able to defend its incoming proof and settle. The fees
// of its UpdateProof and Settle come out of its share of the escrow.
TEST_F(LedgerRulesTest, ReceiveOnlyPartyDefendsAndSettlesPayingFeesFromEscrow) {
  ChannelId id = OpenChannel(1000, 0, /*height=*/1, /*timeout=*/5, &dave_);
  known_channels_.push_back(id);
  ASSERT_EQ(Balance(dave_), 0u);  // the open made dave's account: balance 0, nonce 0
  ASSERT_FALSE(state_.Apply(Transfer(alice_, carol_, 100), 2));
  // Alice paid dave 300 (nonce 4), then closes holding nothing of hers.
  ApplyOk(UnilateralClose(alice_, id, nullptr), 10);
  uint64_t fees = state_.fees_collected();
  ApplyOk(UpdateProof(dave_, id, Proof(alice_, id, 4, 300)), 11);
  EXPECT_EQ(state_.fees_collected(), fees + kFee);
  EXPECT_EQ(Balance(dave_), 0u);
  EXPECT_EQ(state_.FindAccount(dave_.XOnly())->nonce, 1u);
  EXPECT_EQ(state_.FindChannel(id)->fee_debt_b, kFee);
  EXPECT_EQ(state_.FindChannel(id)->fee_debt_a, 0u);
  EXPECT_EQ(state_.FindChannel(id)->Escrow(), 1000u - kFee);
  // The bound: one escrow-paid UpdateProof per party per channel.
  ExpectRejected(UpdateProof(dave_, id, Proof(alice_, id, 5, 350)), 12, "ESCROW_FEE_LIMIT");
  ExpectRejected(Settle(dave_, id), 15, TxRule::kWindowOpen);
  uint64_t a_before = Balance(alice_);
  ApplyOk(Settle(dave_, id), 16);
  const Channel* ch = state_.FindChannel(id);
  EXPECT_EQ(ch->phase, ChannelPhase::kSettled);
  EXPECT_EQ(ch->payout_a, 700u);
  EXPECT_EQ(ch->payout_b, 300u - 2 * kFee);
  EXPECT_EQ(ch->fee_debt_b, 2 * kFee);
  EXPECT_EQ(ch->Escrow(), 0u);
  EXPECT_EQ(Balance(dave_), 300u - 2 * kFee);
  EXPECT_EQ(state_.FindAccount(dave_.XOnly())->nonce, 2u);
  EXPECT_EQ(Balance(alice_), a_before + 700);
  EXPECT_EQ(state_.fees_collected(), fees + 2 * kFee);
}

// The escrow pays a party's fee only while that party's final balance under
// the held proofs covers its debt plus the fee, only at the base fee, and
// never for someone who is not a party.
TEST_F(LedgerRulesTest, EscrowPaidFeesAreBounded) {
  ChannelId id = OpenChannel(1000, 0, /*height=*/1, /*timeout=*/5, &dave_);
  known_channels_.push_back(id);
  ApplyOk(UnilateralClose(alice_, id, nullptr), 10);
  // dave's share would be 5 < the fee.
  ExpectRejected(UpdateProof(dave_, id, Proof(alice_, id, 1, kFee - 5)), 11,
                 TxRule::kInsufficientFunds);
  // An escrow-paid transaction pays exactly the base fee.
  auto pricey = Base(dave_);
  pricey.set_fee(kFee + 1);
  pricey.mutable_update_proof()->set_channel_id(Str(id));
  *pricey.mutable_update_proof()->mutable_proof() = Proof(alice_, id, 2, 300);
  ExpectRejected(Signed(pricey, dave_), 11, "ESCROW_FEE_LIMIT");
  // A share of 15 covers one fee: debt 10.
  ApplyOk(UpdateProof(dave_, id, Proof(alice_, id, 2, kFee + 5)), 11);
  EXPECT_EQ(state_.FindChannel(id)->fee_debt_b, kFee);
  // The bound: no second escrow-paid UpdateProof, whatever the share.
  ExpectRejected(UpdateProof(dave_, id, Proof(alice_, id, 3, 900)), 12, "ESCROW_FEE_LIMIT");
  // 15 cannot cover debt 10 + the Settle fee 10.
  ExpectRejected(Settle(dave_, id), 16, TxRule::kInsufficientFunds);
  // erin has no account and is no party: nothing pays for her.
  ExpectRejected(Settle(erin_, id), 16, TxRule::kInsufficientFunds);
  // A third party with an account settles paying from its own account; the
  // channel's debts are untouched by it.
  ASSERT_FALSE(state_.Apply(Transfer(alice_, carol_, 100), 16));
  ApplyOk(Settle(carol_, id), 16);
  EXPECT_EQ(Balance(carol_), 100u - kFee);
  const Channel* ch = state_.FindChannel(id);
  EXPECT_EQ(ch->fee_debt_b, kFee);
  EXPECT_EQ(ch->payout_a, 1000u - (kFee + 5));
  EXPECT_EQ(ch->payout_b, 5u);
  EXPECT_EQ(Balance(dave_), 5u);
}

// A cooperative close of a closing channel shares what the escrow still
// holds after the fees it paid.
TEST_F(LedgerRulesTest, CooperativeCloseAfterAnEscrowPaidFeeSharesTheRemainingEscrow) {
  ChannelId id = OpenChannel(1000, 0, /*height=*/1, /*timeout=*/5, &dave_);
  known_channels_.push_back(id);
  ApplyOk(UnilateralClose(alice_, id, nullptr), 10);
  ApplyOk(UpdateProof(dave_, id, Proof(alice_, id, 4, 300)), 11);
  auto close = [&](uint64_t ba, uint64_t bb) {
    auto tx = Base(dave_);
    auto* c = tx.mutable_cooperative_close()->mutable_close();
    c->set_chain_id("tipd-test");
    c->set_channel_id(Str(id));
    c->set_balance_a(ba);
    c->set_balance_b(bb);
    c->set_signature_a(Str(*channel::SignCooperativeClose("tipd-test", id, ba, bb, alice_, rng_)));
    c->set_signature_b(Str(*channel::SignCooperativeClose("tipd-test", id, ba, bb, dave_, rng_)));
    return Signed(tx, dave_);
  };
  ExpectRejected(close(700, 300), 12, TxRule::kBalancesMismatch);
  ApplyOk(close(700, 300 - kFee), 12);
  EXPECT_EQ(Balance(dave_), 300u - 2 * kFee);  // the close's own fee from his payout
  EXPECT_EQ(state_.FindChannel(id)->phase, ChannelPhase::kSettled);
}

// A party that pays from its account pays exactly as before; a party whose
// later-raised outgoing proof leaves its share below its debt is clamped at 0
// and the other party gets the rest of the escrow.
TEST_F(LedgerRulesTest, SettleClampsAPayoutBelowItsDebtAndConservesSupply) {
  ChannelId id = OpenChannel(1000, 0, /*height=*/1, /*timeout=*/5, &dave_);
  known_channels_.push_back(id);
  // dave paid alice back 295 of the 300 he received: alice holds dave's proof.
  ApplyOk(UnilateralClose(alice_, id, nullptr), 10);
  ApplyOk(UpdateProof(dave_, id, Proof(alice_, id, 4, 300)), 11);  // debt 10, share 300
  uint64_t a_before = Balance(alice_);
  ApplyOk(UpdateProof(alice_, id, Proof(dave_, id, 7, 295)), 12);  // share now 5 < 10
  EXPECT_EQ(Balance(alice_), a_before - kFee) << "alice can pay: her account pays";
  ApplyOk(Settle(alice_, id), 16);
  const Channel* ch = state_.FindChannel(id);
  EXPECT_EQ(ch->payout_b, 0u);
  EXPECT_EQ(ch->payout_a, 1000u - kFee);  // 995 minus the 5 dave's debt exceeded his share by
  EXPECT_EQ(Balance(dave_), 0u);
}

// An escrow-paid transaction from a party that has no account yet carries
// nonce 0 and creates the account (balance 0, nonce 1), so it cannot be
// replayed. (Today every channel open creates party B's account, so such a
// channel is built here by restoring a record.)
TEST_F(LedgerRulesTest, EscrowPaidTransactionCreatesTheSignersAccount) {
  ChannelId id = OpenChannel(1000, 0, /*height=*/1, /*timeout=*/5, &dave_);
  Channel ch = *state_.FindChannel(id);
  ch.party_b = erin_.XOnly();  // same escrow, so supply still holds
  state_.RestoreChannel(ch);
  known_channels_.push_back(id);
  ApplyOk(UnilateralClose(alice_, id, nullptr), 10);
  ASSERT_EQ(state_.FindAccount(erin_.XOnly()), nullptr);
  auto update = UpdateProof(erin_, id, Proof(alice_, id, 4, 300));
  auto gap = update;
  gap.set_nonce(1);
  ExpectRejected(Signed(gap, erin_), 11, TxRule::kBadNonce);
  ApplyOk(update, 11);
  ASSERT_NE(state_.FindAccount(erin_.XOnly()), nullptr);
  EXPECT_EQ(state_.FindAccount(erin_.XOnly())->balance, 0u);
  EXPECT_EQ(state_.FindAccount(erin_.XOnly())->nonce, 1u);
  ExpectRejected(update, 12, TxRule::kBadNonce);  // replay
  ApplyOk(Settle(erin_, id), 16);
  EXPECT_EQ(Balance(erin_), 300u - 2 * kFee);
  EXPECT_EQ(state_.FindAccount(erin_.XOnly())->nonce, 2u);
}

TEST_F(LedgerRulesTest, ProofForAnotherChannelOrChainIsRejected) {
  ChannelId id = OpenChannel(1000, 1000);
  known_channels_.push_back(id);
  ChannelId other = id;
  other[0] ^= 1;
  auto wrong_channel = Proof(alice_, other, 3, 10);
  ExpectRejected(UnilateralClose(bob_, id, &wrong_channel), 2, TxRule::kBadProof);
  auto wrong_chain = Proof(alice_, id, 3, 10);
  wrong_chain.set_chain_id("elsewhere");
  ExpectRejected(UnilateralClose(bob_, id, &wrong_chain), 2, TxRule::kBadProof);
}

TEST_F(LedgerRulesTest, StateHashIsDeterministicAndSensitiveToEveryChange) {
  LedgerState twin(MakeParams());
  EXPECT_EQ(state_.GenesisStateHash(), twin.GenesisStateHash());
  auto t1 = Transfer(alice_, carol_, 5);
  ASSERT_FALSE(state_.Apply(t1, 1));
  ASSERT_FALSE(twin.Apply(t1, 1));
  Hash32 g = state_.GenesisStateHash();
  Hash32 h1 = state_.CommitStateHash(g);
  EXPECT_EQ(h1, twin.CommitStateHash(g));
  // A different amount gives a different hash.
  LedgerState other(MakeParams());
  CountingRandom rng2;
  auto t2 = Base(alice_);
  t2.set_nonce(0);
  t2.mutable_transfer()->set_to(Str(carol_.XOnly()));
  t2.mutable_transfer()->set_amount(6);
  ASSERT_TRUE(SignTransaction(&t2, alice_, rng2).ok());
  ASSERT_FALSE(other.Apply(t2, 1));
  EXPECT_NE(other.CommitStateHash(g), h1);
  // Empty blocks still chain.
  EXPECT_NE(state_.CommitStateHash(h1), h1);
}

TEST_F(LedgerRulesTest, ChannelRecordRoundTrips) {
  ChannelId id = OpenChannel(10, 20);
  auto p = ChannelToProto(*state_.FindChannel(id));
  auto back = ChannelFromProto(p);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, *state_.FindChannel(id));
  EXPECT_EQ(p.version(), 2u);
  // Fee debts are part of the record.
  Channel with_debt = *state_.FindChannel(id);
  with_debt.fee_debt_a = 3;
  with_debt.fee_debt_b = 4;
  auto debt_back = ChannelFromProto(ChannelToProto(with_debt));
  ASSERT_TRUE(debt_back.ok());
  EXPECT_EQ(*debt_back, with_debt);
  // A version 1 record (before fee debts) reads with no debt.
  auto v1_record = ChannelToProto(with_debt);
  v1_record.set_version(1);
  v1_record.clear_fee_debt_a();
  v1_record.clear_fee_debt_b();
  EXPECT_EQ(*ChannelFromProto(v1_record), *state_.FindChannel(id));
  // Debts above the deposits cannot come from the rules.
  with_debt.fee_debt_b = 28;
  EXPECT_EQ(ChannelFromProto(ChannelToProto(with_debt)).status().code(), StatusCode::kCorruption);
  p.set_party_a("short");
  EXPECT_EQ(ChannelFromProto(p).status().code(), StatusCode::kCorruption);
}

TEST(LedgerCodec, MerkleRootCarriesOddNodesAndDependsOnOrder) {
  Hash32 a{}, b{}, c{};
  a[0] = 1;
  b[0] = 2;
  c[0] = 3;
  EXPECT_EQ(MerkleRoot({}), Hash32{});
  EXPECT_EQ(MerkleRoot({a}), a);
  EXPECT_NE(MerkleRoot({a, b}), MerkleRoot({b, a}));
  EXPECT_NE(MerkleRoot({a, b, c}), MerkleRoot({a, b, c, c}));  // no duplication ambiguity
}

TEST(LedgerGenesis, RejectsInvalidGenesis) {
  v1::GenesisParams g;
  g.set_chain_id("Bad Chain");
  EXPECT_FALSE(ValidateGenesis(g).ok());
  g.set_chain_id("ok");
  g.set_sequencer_key(std::string(32, '\xff'));  // not on the curve
  g.set_min_settle_timeout(1);
  g.set_max_settle_timeout(2);
  EXPECT_FALSE(ValidateGenesis(g).ok());
  g.set_sequencer_key(Str(Key(9).XOnly()));
  EXPECT_TRUE(ValidateGenesis(g).ok());
  auto* a = g.add_allocations();
  a->set_account(Str(Key(1).XOnly()));
  a->set_amount(UINT64_MAX);
  auto* b = g.add_allocations();
  b->set_account(Str(Key(2).XOnly()));
  b->set_amount(1);
  EXPECT_FALSE(ValidateGenesis(g).ok());  // supply overflows
  b->set_account(Str(Key(1).XOnly()));
  b->set_amount(0);
  EXPECT_FALSE(ValidateGenesis(g).ok());  // duplicate account
}

}  // namespace
}  // namespace tipd::ledger
