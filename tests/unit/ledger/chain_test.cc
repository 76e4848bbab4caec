// The persisted chain: sealing, reopening, following, and refusing tampered
// blocks. Real LevelDB in temporary directories.
#include "ledger/chain.h"

#include <gtest/gtest.h>

#include "channel/codec.h"
#include "ledger/codec.h"
#include "tests/support/test_support.h"

namespace tipd::ledger {
namespace {

class CountingRandom final : public crypto::RandomSource {
 public:
  void Fill(std::span<uint8_t> out) override {
    for (auto& b : out) b = static_cast<uint8_t>(++n_ * 37 + 1);
  }

 private:
  uint64_t n_ = 0;
};

crypto::KeyPair Key(uint8_t fill) {
  return crypto::KeyPair::FromSecret(crypto::SecretKey::FromBytes(Bytes(32, fill)).value());
}
std::string Str(ByteSpan b) { return std::string(AsStringView(b)); }

class ChainTest : public ::testing::Test {
 protected:
  ChainTest() : seq_(Key(9)), alice_(Key(1)), bob_(Key(2)) {
    genesis_.set_chain_id("tipd-chain-test");
    genesis_.set_sequencer_key(Str(seq_.XOnly()));
    auto* a = genesis_.add_allocations();
    a->set_account(Str(alice_.XOnly()));
    a->set_amount(100000);
    genesis_.set_fee_per_tx(1);
    genesis_.set_min_settle_timeout(1);
    genesis_.set_max_settle_timeout(10);
    genesis_.set_block_interval_ms(100);
    genesis_.set_genesis_time_ms(1000);
  }

  std::unique_ptr<storage::Database> OpenDb(const std::string& name) {
    auto db = storage::Database::Open(dir_.path() / name);
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    return std::move(db).value();
  }
  std::unique_ptr<Chain> OpenChain(storage::Database* db) {
    auto chain = Chain::Open(db, ValidateGenesis(genesis_).value());
    EXPECT_TRUE(chain.ok()) << chain.status().ToString();
    return std::move(chain).value();
  }
  v1::Transaction Transfer(uint64_t nonce, uint64_t amount) {
    v1::Transaction tx;
    tx.set_chain_id("tipd-chain-test");
    tx.set_signer(Str(alice_.XOnly()));
    tx.set_nonce(nonce);
    tx.set_fee(1);
    tx.mutable_transfer()->set_to(Str(bob_.XOnly()));
    tx.mutable_transfer()->set_amount(amount);
    EXPECT_TRUE(SignTransaction(&tx, alice_, rng_).ok());
    return tx;
  }
  // Seals `blocks` blocks of `per_block` transfers of 1..n.
  std::vector<v1::Block> Produce(Chain& chain, int blocks, int per_block) {
    std::vector<v1::Block> out;
    for (int b = 0; b < blocks; ++b) {
      for (int i = 0; i < per_block; ++i) {
        auto e = chain.AddToPending(Transfer(nonce_++, 1 + i));
        EXPECT_FALSE(e.has_value()) << e->ToString();
      }
      auto block = chain.SealBlock(2000 + b, seq_, rng_);
      EXPECT_TRUE(block.ok()) << block.status().ToString();
      out.push_back(*block);
    }
    return out;
  }

  testing::TempDir dir_;
  CountingRandom rng_;
  crypto::KeyPair seq_, alice_, bob_;
  v1::GenesisParams genesis_;
  uint64_t nonce_ = 0;
};

TEST_F(ChainTest, SealedBlocksSurviveReopen) {
  Hash32 tip, state;
  uint64_t bob_balance;
  {
    auto db = OpenDb("seq");
    auto chain = OpenChain(db.get());
    EXPECT_EQ(chain->height(), 0u);
    auto blocks = Produce(*chain, 3, 4);
    EXPECT_EQ(chain->height(), 3u);
    EXPECT_EQ(blocks[2].header().tx_count(), 4u);
    tip = chain->tip_hash();
    state = chain->state_hash();
    bob_balance = chain->state().FindAccount(bob_.XOnly())->balance;
    EXPECT_EQ(bob_balance, 3u * (1 + 2 + 3 + 4));
  }
  auto db = OpenDb("seq");
  auto chain = OpenChain(db.get());
  EXPECT_EQ(chain->height(), 3u);
  EXPECT_EQ(chain->tip_hash(), tip);
  EXPECT_EQ(chain->state_hash(), state);
  EXPECT_EQ(chain->state().FindAccount(bob_.XOnly())->balance, bob_balance);
  EXPECT_EQ(chain->state().FindAccount(alice_.XOnly())->nonce, 12u);
  auto block2 = chain->GetBlock(2);
  ASSERT_TRUE(block2.ok() && block2->has_value());
  EXPECT_EQ((*block2)->header().height(), 2u);
  auto id = TransactionId((*block2)->transactions(1));
  auto loc = chain->FindTransaction(*id);
  ASSERT_TRUE(loc.ok() && loc->has_value());
  EXPECT_EQ((*loc)->height(), 2u);
  EXPECT_EQ((*loc)->index(), 1u);
  // The chain continues from the restored state.
  nonce_ = 12;
  Produce(*chain, 1, 1);
  EXPECT_EQ(chain->height(), 4u);
}

TEST_F(ChainTest, FollowerReexecutesToTheSameStateHash) {
  auto seq_db = OpenDb("seq");
  auto seq = OpenChain(seq_db.get());
  auto blocks = Produce(*seq, 5, 3);
  auto f_db = OpenDb("follower");
  auto follower = OpenChain(f_db.get());
  for (const auto& b : blocks) ASSERT_TRUE(follower->AcceptBlock(b).ok());
  EXPECT_EQ(follower->height(), seq->height());
  EXPECT_EQ(follower->tip_hash(), seq->tip_hash());
  EXPECT_EQ(follower->state_hash(), seq->state_hash());
  // A replayed old block no longer links.
  EXPECT_FALSE(follower->AcceptBlock(blocks[1]).ok());
  EXPECT_TRUE(follower->health().ok());
}

TEST_F(ChainTest, FollowerRefusesTamperedBlocks) {
  auto seq_db = OpenDb("seq");
  auto seq = OpenChain(seq_db.get());
  auto blocks = Produce(*seq, 2, 2);
  auto f_db = OpenDb("follower");
  auto follower = OpenChain(f_db.get());

  v1::Block bad_sig = blocks[0];
  std::string sig = bad_sig.header().signature();
  sig[5] ^= 1;
  bad_sig.mutable_header()->set_signature(sig);
  Status s = follower->AcceptBlock(bad_sig);
  EXPECT_NE(s.message().find("not signed by the sequencer"), std::string::npos) << s.ToString();

  v1::Block bad_link = blocks[0];
  bad_link.mutable_header()->set_prev_hash(std::string(32, '\x01'));
  s = follower->AcceptBlock(bad_link);
  EXPECT_NE(s.message().find("does not link"), std::string::npos) << s.ToString();

  v1::Block dropped_tx = blocks[0];
  dropped_tx.mutable_transactions()->RemoveLast();
  EXPECT_FALSE(follower->AcceptBlock(dropped_tx).ok());
  EXPECT_EQ(follower->height(), 0u);
  EXPECT_TRUE(follower->health().ok());

  // A block correctly signed by the sequencer but with a wrong state hash: the
  // follower re-executes, disagrees, and halts.
  v1::Block wrong_state = blocks[0];
  wrong_state.mutable_header()->set_state_hash(std::string(32, '\x02'));
  auto hash = BlockHash(wrong_state.header());
  crypto::Key32 aux{};
  wrong_state.mutable_header()->set_signature(Str(crypto::SchnorrSign(seq_, *hash, aux)));
  s = follower->AcceptBlock(wrong_state);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_NE(s.message().find("state hash"), std::string::npos) << s.ToString();
  EXPECT_FALSE(follower->health().ok());
  EXPECT_FALSE(follower->AcceptBlock(blocks[0]).ok()) << "a halted follower must stay halted";
  EXPECT_EQ(follower->height(), 0u);

  // After a restart it resumes from what it persisted (nothing) and follows.
  follower.reset();
  follower = OpenChain(f_db.get());
  ASSERT_TRUE(follower->AcceptBlock(blocks[0]).ok());
  ASSERT_TRUE(follower->AcceptBlock(blocks[1]).ok());
  EXPECT_EQ(follower->state_hash(), seq->state_hash());
}

// A block whose time goes below the previous block's is refused, even when
// the sequencer signed it; the follower keeps its state and follows the honest
// block afterwards.
TEST_F(ChainTest, FollowerRefusesABlockWhoseTimeGoesBackwards) {
  auto seq_db = OpenDb("seq");
  auto seq = OpenChain(seq_db.get());
  auto blocks = Produce(*seq, 2, 1);  // times 2000, 2001
  auto f_db = OpenDb("follower");
  auto follower = OpenChain(f_db.get());
  auto resign = [&](v1::Block b, uint64_t time_ms) {
    b.mutable_header()->set_time_ms(time_ms);
    auto hash = BlockHash(b.header());
    crypto::Key32 aux{};
    b.mutable_header()->set_signature(Str(crypto::SchnorrSign(seq_, *hash, aux)));
    return b;
  };
  // Block 1 before the genesis time (1000).
  Status s = follower->AcceptBlock(resign(blocks[0], 999));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("goes back"), std::string::npos) << s.ToString();
  EXPECT_EQ(follower->height(), 0u);
  ASSERT_TRUE(follower->AcceptBlock(blocks[0]).ok());
  // Block 2 one millisecond before block 1.
  v1::Block backwards = resign(blocks[1], 1999);
  s = follower->AcceptBlock(backwards);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("time 1999"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("2000"), std::string::npos) << s.ToString();
  EXPECT_EQ(follower->height(), 1u);
  EXPECT_EQ(follower->tip_time_ms(), 2000u);
  // An equal time is fine (time never goes below the previous block's).
  ASSERT_TRUE(follower->AcceptBlock(resign(blocks[1], 2000)).ok());
  EXPECT_EQ(follower->state_hash(), seq->state_hash());
}

// Fee debts (fees the escrow paid for a party without ledger balance) are
// part of the state hash and of the stored record: a follower re-executes
// them to the same hash and a reopened chain restores them.
TEST_F(ChainTest, EscrowPaidFeesReplayOnFollowersAndSurviveReopen) {
  auto seq_db = OpenDb("seq");
  auto seq = OpenChain(seq_db.get());
  auto tx_of = [&](const crypto::KeyPair& k, uint64_t nonce, auto fill) {
    v1::Transaction tx;
    tx.set_chain_id("tipd-chain-test");
    tx.set_signer(Str(k.XOnly()));
    tx.set_nonce(nonce);
    tx.set_fee(1);
    fill(tx);
    EXPECT_TRUE(SignTransaction(&tx, k, rng_).ok());
    return tx;
  };
  std::vector<v1::Block> blocks;
  auto seal = [&](const v1::Transaction& tx, uint64_t time_ms) {
    auto e = seq->AddToPending(tx);
    ASSERT_FALSE(e.has_value()) << e->ToString();
    auto block = seq->SealBlock(time_ms, seq_, rng_);
    ASSERT_TRUE(block.ok()) << block.status().ToString();
    blocks.push_back(*block);
  };
  // bob has no allocation: he only receives.
  auto open = tx_of(alice_, 0, [&](v1::Transaction& tx) {
    auto* o = tx.mutable_channel_open();
    o->set_party_a(Str(alice_.XOnly()));
    o->set_party_b(Str(bob_.XOnly()));
    o->set_deposit_a(1000);
    o->set_settle_timeout(1);
    o->set_nonce_b(0);
    o->set_signature_b(std::string(64, '\0'));
    auto agreement = EncodeChannelOpenAgreement("tipd-chain-test", *o, 0);
    o->set_signature_b(Str(crypto::SignTagged(bob_, kChannelOpenTag, *agreement, rng_)));
  });
  ChannelId id = DeriveChannelId("tipd-chain-test", alice_.XOnly(), bob_.XOnly(), 0);
  seal(open, 2000);
  seal(tx_of(alice_, 1,
             [&](v1::Transaction& tx) { tx.mutable_unilateral_close()->set_channel_id(Str(id)); }),
       2001);
  v1::BalanceProof p;
  p.set_chain_id("tipd-chain-test");
  p.set_channel_id(Str(id));
  p.set_nonce(3);
  p.set_transferred(300);
  p.set_locks_root(std::string(32, '\0'));
  p.set_tips_root(std::string(32, '\x03'));
  ASSERT_TRUE(channel::SignBalanceProof(&p, alice_, rng_).ok());
  seal(tx_of(bob_, 0,
             [&](v1::Transaction& tx) {
               tx.mutable_update_proof()->set_channel_id(Str(id));
               *tx.mutable_update_proof()->mutable_proof() = p;
             }),
       2002);
  seal(tx_of(bob_, 1, [&](v1::Transaction& tx) { tx.mutable_settle()->set_channel_id(Str(id)); }),
       2003);
  ASSERT_EQ(blocks.size(), 4u);
  const Channel* ch = seq->state().FindChannel(id);
  ASSERT_NE(ch, nullptr);
  EXPECT_EQ(ch->fee_debt_b, 2u);
  EXPECT_EQ(ch->payout_b, 298u);
  EXPECT_EQ(seq->state().FindAccount(bob_.XOnly())->balance, 298u);

  auto f_db = OpenDb("follower");
  auto follower = OpenChain(f_db.get());
  for (const auto& b : blocks) ASSERT_TRUE(follower->AcceptBlock(b).ok());
  EXPECT_EQ(follower->state_hash(), seq->state_hash());
  Channel expected = *ch;
  Hash32 state = seq->state_hash();
  seq.reset();
  seq = OpenChain(seq_db.get());
  EXPECT_EQ(seq->state_hash(), state);
  ASSERT_NE(seq->state().FindChannel(id), nullptr);
  EXPECT_EQ(*seq->state().FindChannel(id), expected);
  EXPECT_TRUE(seq->state().CheckSupply().ok());
}

TEST_F(ChainTest, FollowerRejectsABlockWithABadTransactionSignatureBeforeTouchingState) {
  auto seq_db = OpenDb("seq");
  auto seq = OpenChain(seq_db.get());
  // 40 transfers: large enough for the two-thread signature check.
  auto blocks = Produce(*seq, 1, 40);
  auto f_db = OpenDb("follower");
  auto follower = OpenChain(f_db.get());
  for (int victim : {3, 37}) {
    v1::Block bad = blocks[0];
    // Transaction ids (and so the header) do not cover signatures: the
    // sequencer's signature on the header still verifies.
    std::string sig = bad.transactions(victim).signature();
    sig[10] ^= 1;
    bad.mutable_transactions(victim)->set_signature(sig);
    Status s = follower->AcceptBlock(bad);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("transaction " + std::to_string(victim)), std::string::npos)
        << s.ToString();
    EXPECT_TRUE(follower->health().ok()) << "nothing was applied, so nothing is poisoned";
    EXPECT_EQ(follower->height(), 0u);
  }
  ASSERT_TRUE(follower->AcceptBlock(blocks[0]).ok());
  EXPECT_EQ(follower->state_hash(), seq->state_hash());
}

TEST_F(ChainTest, SealRejectsForeignSequencerKey) {
  auto db = OpenDb("seq");
  auto chain = OpenChain(db.get());
  auto r = chain->SealBlock(5000, alice_, rng_);
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(chain->height(), 0u);
}

TEST_F(ChainTest, RefusesToReopenUnderAnotherGenesis) {
  auto db = OpenDb("seq");
  {
    auto chain = OpenChain(db.get());
    Produce(*chain, 1, 1);
  }
  genesis_.set_fee_per_tx(2);
  auto chain = Chain::Open(db.get(), ValidateGenesis(genesis_).value());
  EXPECT_EQ(chain.status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(ChainTest, PendingRejectionNamesTheRuleAndKeepsPendingClean) {
  auto db = OpenDb("seq");
  auto chain = OpenChain(db.get());
  ASSERT_FALSE(chain->AddToPending(Transfer(0, 5)));
  auto replay = chain->AddToPending(Transfer(0, 5));
  ASSERT_TRUE(replay.has_value());
  EXPECT_EQ(replay->rule, TxRule::kBadNonce);
  EXPECT_EQ(chain->pending_count(), 1u);
  auto block = chain->SealBlock(1, seq_, rng_);
  ASSERT_TRUE(block.ok());
  EXPECT_EQ(block->header().time_ms(), 1000u) << "block time never goes below the previous one";
}

}  // namespace
}  // namespace tipd::ledger
