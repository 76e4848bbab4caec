// The ledger's consensus encodings against fixed vectors computed by an
// independent implementation: tests/vectors/gen_vectors.py, written from
// docs/ledger.md alone (Python standard library and its own BIP-340 signer).
// Every transaction kind's canonical bytes, id and signature, the open
// agreement and channel id, the Merkle root, genesis hash and state hash, and
// a five-block sequence whose state hashes, balances and channel entries must
// come out exactly as the script computed them. A mismatch means the code and
// the docs disagree: fix whichever is wrong, then regenerate
// (tests/vectors/README.md).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "channel/codec.h"
#include "ledger/codec.h"
#include "ledger/rules.h"
#include "tests/unit/vectors_json.h"

namespace tipd::ledger {
namespace {

// The JSON readers of tests/unit/vectors_json.h.
using namespace tipd::testing::vectors;  // NOLINT(google-build-using-namespace)

class ZeroRandom final : public crypto::RandomSource {
 public:
  void Fill(std::span<uint8_t> out) override { std::fill(out.begin(), out.end(), 0); }
};

const Struct& Vectors() {
  static const Struct v = LoadVectors(TIPD_LEDGER_VECTORS_PATH);
  return v;
}

// Every key of the file by its x-only hex, checking the x-only derivation.
const std::map<std::string, crypto::KeyPair>& Keys() {
  static const std::map<std::string, crypto::KeyPair> keys = [] {
    std::map<std::string, crypto::KeyPair> out;
    for (const auto& [name, entry] : Obj(Vectors(), "keys").fields()) {
      const Struct& k = entry.struct_value();
      auto sk = crypto::SecretKey::FromBytes(Fixed<32>(k, "secret"));
      EXPECT_TRUE(sk.ok()) << name;
      if (!sk.ok()) continue;
      crypto::KeyPair kp = crypto::KeyPair::FromSecret(*sk);
      EXPECT_EQ(Hex(kp.XOnly()), Text(k, "xonly")) << "x-only key of " << name;
      out.emplace(Text(k, "xonly"), kp);
    }
    return out;
  }();
  return keys;
}

const crypto::KeyPair& KeyOf(const std::string& xonly_hex) {
  auto it = Keys().find(xonly_hex);
  if (it == Keys().end()) {
    ADD_FAILURE() << "no secret for " << xonly_hex;
    return Keys().begin()->second;
  }
  return it->second;
}

v1::BalanceProof ProofFrom(const Struct& p) {
  v1::BalanceProof proof;
  proof.set_chain_id(Text(p, "chain_id"));
  proof.set_channel_id(Raw(p, "channel_id"));
  proof.set_nonce(U64(p, "nonce"));
  proof.set_transferred(U64(p, "transferred"));
  proof.set_locked(U64(p, "locked"));
  proof.set_locks_root(Raw(p, "locks_root"));
  proof.set_tips_root(Raw(p, "tips_root"));
  proof.set_signature(Raw(p, "signature"));
  return proof;
}

v1::Transaction TxFrom(const Struct& t) {
  v1::Transaction tx;
  tx.set_chain_id(Text(t, "chain_id"));
  tx.set_signer(Raw(t, "signer"));
  tx.set_nonce(U64(t, "nonce"));
  tx.set_fee(U64(t, "fee"));
  const Struct& b = Obj(t, "body");
  const std::string kind = Text(t, "kind");
  if (kind == "transfer") {
    tx.mutable_transfer()->set_to(Raw(b, "to"));
    tx.mutable_transfer()->set_amount(U64(b, "amount"));
  } else if (kind == "channel_open") {
    v1::ChannelOpenTx* o = tx.mutable_channel_open();
    o->set_party_a(Raw(b, "party_a"));
    o->set_party_b(Raw(b, "party_b"));
    o->set_deposit_a(U64(b, "deposit_a"));
    o->set_deposit_b(U64(b, "deposit_b"));
    o->set_settle_timeout(U64(b, "settle_timeout"));
    o->set_nonce_b(U64(b, "nonce_b"));
    o->set_signature_b(Raw(b, "sig_b"));
  } else if (kind == "deposit") {
    tx.mutable_deposit()->set_channel_id(Raw(b, "channel_id"));
    tx.mutable_deposit()->set_amount(U64(b, "amount"));
  } else if (kind == "cooperative_close") {
    v1::CooperativeClose* c = tx.mutable_cooperative_close()->mutable_close();
    c->set_chain_id(Text(t, "chain_id"));
    c->set_channel_id(Raw(b, "channel_id"));
    c->set_balance_a(U64(b, "balance_a"));
    c->set_balance_b(U64(b, "balance_b"));
    c->set_signature_a(Raw(b, "sig_a"));
    c->set_signature_b(Raw(b, "sig_b"));
  } else if (kind == "unilateral_close") {
    tx.mutable_unilateral_close()->set_channel_id(Raw(b, "channel_id"));
    if (Has(b, "proof")) {
      *tx.mutable_unilateral_close()->mutable_partner_proof() = ProofFrom(Obj(b, "proof"));
    }
  } else if (kind == "update_proof") {
    tx.mutable_update_proof()->set_channel_id(Raw(b, "channel_id"));
    *tx.mutable_update_proof()->mutable_proof() = ProofFrom(Obj(b, "proof"));
  } else if (kind == "settle") {
    tx.mutable_settle()->set_channel_id(Raw(b, "channel_id"));
  } else {
    ADD_FAILURE() << "unknown kind " << kind;
  }
  tx.set_signature(Raw(t, "signature"));
  return tx;
}

std::map<std::string, v1::Transaction> TxsByName() {
  std::map<std::string, v1::Transaction> out;
  for (const auto& v : List(Vectors(), "transactions").values()) {
    out.emplace(Text(v.struct_value(), "name"), TxFrom(v.struct_value()));
  }
  return out;
}

v1::GenesisParams GenesisFrom(const Struct& g) {
  v1::GenesisParams p;
  p.set_chain_id(Text(g, "chain_id"));
  p.set_sequencer_key(Raw(g, "sequencer_key"));
  for (const auto& a : List(g, "allocations").values()) {
    v1::Allocation* out = p.add_allocations();
    out->set_account(Raw(a.struct_value(), "account"));
    out->set_amount(U64(a.struct_value(), "amount"));
  }
  p.set_fee_per_tx(U64(g, "fee_per_tx"));
  p.set_min_settle_timeout(U64(g, "min_settle_timeout"));
  p.set_max_settle_timeout(U64(g, "max_settle_timeout"));
  p.set_block_interval_ms(U64(g, "block_interval_ms"));
  p.set_genesis_time_ms(U64(g, "genesis_time_ms"));
  return p;
}

TEST(LedgerVectorsTest, GenesisHashAndGenesisStateHash) {
  const Struct& g = Obj(Vectors(), "genesis");
  v1::GenesisParams genesis = GenesisFrom(g);
  auto hash = GenesisHash(genesis);
  ASSERT_TRUE(hash.ok()) << hash.status().ToString();
  EXPECT_EQ(Hex(*hash), Text(g, "hash"));
  auto params = ValidateGenesis(genesis);
  ASSERT_TRUE(params.ok()) << params.status().ToString();
  EXPECT_EQ(Hex(params->genesis_hash), Text(g, "hash"));
  LedgerState state(*params);
  EXPECT_EQ(Hex(state.GenesisStateHash()), Text(g, "state_hash"));
}

TEST(LedgerVectorsTest, EveryTransactionKindBytesIdAndSignature) {
  ZeroRandom zero;
  std::set<std::string> kinds;
  for (const auto& v : List(Vectors(), "transactions").values()) {
    const Struct& t = v.struct_value();
    const std::string name = Text(t, "name");
    SCOPED_TRACE(name);
    kinds.insert(Text(t, "kind"));
    v1::Transaction tx = TxFrom(t);

    auto bytes = EncodeTransaction(tx);
    ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
    EXPECT_EQ(Hex(*bytes), Text(t, "bytes"));
    auto id = TransactionId(tx);
    ASSERT_TRUE(id.ok());
    EXPECT_EQ(Hex(*id), Text(t, "id"));
    EXPECT_TRUE(VerifyTransactionSignature(tx));
    v1::Transaction resigned = tx;
    resigned.clear_signature();
    ASSERT_TRUE(SignTransaction(&resigned, KeyOf(Text(t, "signer")), zero).ok());
    EXPECT_EQ(Hex(resigned.signature()), Text(t, "signature"));

    if (tx.has_channel_open()) {
      const v1::ChannelOpenTx& open = tx.channel_open();
      auto agreement = EncodeChannelOpenAgreement(tx.chain_id(), open, tx.nonce());
      ASSERT_TRUE(agreement.ok());
      EXPECT_EQ(Hex(*agreement), Text(t, "agreement_bytes"));
      EXPECT_EQ(Hex(crypto::TaggedHash(kChannelOpenTag, *agreement)), Text(t, "agreement_digest"));
      crypto::Signature sig_b =
          crypto::SignTagged(KeyOf(Hex(open.party_b())), kChannelOpenTag, *agreement, zero);
      EXPECT_EQ(Hex(sig_b), Hex(open.signature_b()));
      EXPECT_EQ(Hex(DeriveChannelId(tx.chain_id(), AsSpan(open.party_a()), AsSpan(open.party_b()),
                                    tx.nonce())),
                Text(t, "channel_id"));
    }
    if (tx.has_cooperative_close()) {
      const v1::CooperativeClose& c = tx.cooperative_close().close();
      auto close = channel::EncodeCooperativeClose(tx.chain_id(), AsSpan(c.channel_id()),
                                                   c.balance_a(), c.balance_b());
      ASSERT_TRUE(close.ok());
      EXPECT_EQ(Hex(*close), Text(t, "close_bytes"));
      for (auto [party, sig] :
           {std::pair{"party_a", &c.signature_a()}, std::pair{"party_b", &c.signature_b()}}) {
        auto s = channel::SignCooperativeClose(tx.chain_id(), AsSpan(c.channel_id()), c.balance_a(),
                                               c.balance_b(), KeyOf(Text(t, party)), zero);
        ASSERT_TRUE(s.ok());
        EXPECT_EQ(Hex(*s), Hex(*sig)) << party;
      }
    }
    const v1::BalanceProof* proof = nullptr;
    if (tx.has_unilateral_close() && tx.unilateral_close().has_partner_proof()) {
      proof = &tx.unilateral_close().partner_proof();
    }
    if (tx.has_update_proof()) proof = &tx.update_proof().proof();
    if (proof != nullptr) {
      const Struct& p = Obj(Obj(t, "body"), "proof");
      auto pb = channel::EncodeBalanceProof(*proof);
      ASSERT_TRUE(pb.ok());
      EXPECT_EQ(Hex(*pb), Text(p, "bytes"));
      v1::BalanceProof resigned_proof = *proof;
      ASSERT_TRUE(channel::SignBalanceProof(&resigned_proof, KeyOf(Text(p, "signer")), zero).ok());
      EXPECT_EQ(Hex(resigned_proof.signature()), Text(p, "signature"));
    }
  }
  EXPECT_EQ(kinds.size(), 7u) << "the vectors cover every transaction kind";
}

TEST(LedgerVectorsTest, MerkleRoots) {
  for (const auto& v : List(Vectors(), "merkle").values()) {
    const Struct& m = v.struct_value();
    std::vector<Hash32> leaves;
    for (const auto& leaf : m.fields().at("leaves").list_value().values()) {
      leaves.push_back(HexDecodeFixed<32>(leaf.string_value()).value());
    }
    EXPECT_EQ(Hex(MerkleRoot(leaves)), Text(m, "root")) << leaves.size() << " leaves";
  }
}

void ExpectChannel(const LedgerState& state, const Struct& c) {
  const Channel* ch = state.FindChannel(Fixed<32>(c, "channel_id"));
  ASSERT_NE(ch, nullptr) << Text(c, "channel_id");
  SCOPED_TRACE("channel " + Text(c, "channel_id"));
  EXPECT_EQ(Hex(ch->party_a), Text(c, "party_a"));
  EXPECT_EQ(Hex(ch->party_b), Text(c, "party_b"));
  EXPECT_EQ(ch->deposit_a, U64(c, "deposit_a"));
  EXPECT_EQ(ch->deposit_b, U64(c, "deposit_b"));
  EXPECT_EQ(ch->settle_timeout, U64(c, "settle_timeout"));
  EXPECT_EQ(static_cast<int>(ch->phase), static_cast<int>(Get(c, "phase").number_value()));
  EXPECT_EQ(ch->opened_height, U64(c, "opened_height"));
  EXPECT_EQ(ch->close_height, U64(c, "close_height"));
  EXPECT_EQ(Hex(ch->closer), Text(c, "closer"));
  for (auto [held, key] : {std::pair{&ch->proof_a_to_b, "proof_a_to_b"},
                           std::pair{&ch->proof_b_to_a, "proof_b_to_a"}}) {
    const Struct& p = Obj(c, key);
    EXPECT_EQ(held->nonce, U64(p, "nonce")) << key;
    EXPECT_EQ(held->transferred, U64(p, "transferred")) << key;
    EXPECT_EQ(Hex(held->tips_root), Text(p, "tips_root")) << key;
  }
  EXPECT_EQ(ch->payout_a, U64(c, "payout_a"));
  EXPECT_EQ(ch->payout_b, U64(c, "payout_b"));
  EXPECT_EQ(ch->fee_debt_a, U64(c, "fee_debt_a"));
  EXPECT_EQ(ch->fee_debt_b, U64(c, "fee_debt_b"));
}

// Applies the script's blocks to a LedgerState: each block's state hash
// (accounts and version-2 channel entries, fee debts included), the resulting
// accounts and channels, and the header bytes, hash and sequencer signature.
TEST(LedgerVectorsTest, BlockSequenceStateHashesAndHeaders) {
  auto params = ValidateGenesis(GenesisFrom(Obj(Vectors(), "genesis")));
  ASSERT_TRUE(params.ok()) << params.status().ToString();
  const auto txs = TxsByName();
  const crypto::KeyPair& sequencer = KeyOf(Text(Obj(Vectors(), "genesis"), "sequencer_key"));
  LedgerState state(*params);
  Hash32 state_hash = state.GenesisStateHash();
  Hash32 prev_hash = params->genesis_hash;
  for (const auto& v : List(Vectors(), "blocks").values()) {
    const Struct& b = v.struct_value();
    const uint64_t height = U64(b, "height");
    SCOPED_TRACE("block " + std::to_string(height));
    EXPECT_EQ(Hex(state_hash), Text(b, "prev_state_hash"));
    std::vector<Hash32> ids;
    for (const auto& name : List(b, "transactions").values()) {
      const v1::Transaction& tx = txs.at(name.string_value());
      auto err = state.Apply(tx, height);
      ASSERT_FALSE(err.has_value()) << name.string_value() << ": " << err->ToString();
      ids.push_back(TransactionId(tx).value());
    }
    ASSERT_TRUE(state.CheckSupply().ok());
    state_hash = state.CommitStateHash(state_hash);
    EXPECT_EQ(Hex(state_hash), Text(b, "state_hash"));

    for (const auto& [id, a] : Obj(b, "accounts_after").fields()) {
      const Account* acct = state.FindAccount(HexDecodeFixed<32>(id).value());
      ASSERT_NE(acct, nullptr) << id;
      EXPECT_EQ(acct->balance, U64(a.struct_value(), "balance")) << id;
      EXPECT_EQ(acct->nonce, U64(a.struct_value(), "nonce")) << id;
    }
    EXPECT_EQ(state.account_count(), Obj(b, "accounts_after").fields().size());
    for (const auto& c : List(b, "channels_after").values()) ExpectChannel(state, c.struct_value());
    EXPECT_EQ(state.channel_count(), static_cast<size_t>(List(b, "channels_after").values_size()));
    EXPECT_EQ(state.fees_collected(), U64(b, "fees_after"));

    const Struct& h = Obj(b, "header");
    v1::BlockHeader header;
    header.set_chain_id(Text(h, "chain_id"));
    header.set_height(U64(h, "height"));
    header.set_prev_hash(Raw(h, "prev_hash"));
    header.set_time_ms(U64(h, "time_ms"));
    header.set_tx_root(Raw(h, "tx_root"));
    header.set_state_hash(Raw(h, "state_hash"));
    header.set_tx_count(static_cast<uint32_t>(U64(h, "tx_count")));
    EXPECT_EQ(Hex(prev_hash), Text(h, "prev_hash"));
    EXPECT_EQ(Hex(MerkleRoot(ids)), Text(h, "tx_root"));
    EXPECT_EQ(Hex(state_hash), Text(h, "state_hash"));
    auto bytes = EncodeBlockHeader(header);
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ(Hex(*bytes), Text(b, "header_bytes"));
    auto hash = BlockHash(header);
    ASSERT_TRUE(hash.ok());
    EXPECT_EQ(Hex(*hash), Text(b, "block_hash"));
    crypto::Key32 aux{};
    EXPECT_EQ(Hex(crypto::SchnorrSign(sequencer, *hash, aux)), Text(b, "sequencer_signature"));
    prev_hash = *hash;
  }
}

}  // namespace
}  // namespace tipd::ledger
