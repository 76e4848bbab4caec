// The channel objects of docs/protocol.md against vectors computed by an
// independent implementation: tests/vectors/gen_vectors.py, written from the
// docs alone (Python standard library and its own BIP-340 signer). Tip bytes,
// tip hashes and the tips_root chain, balance proof bytes and signature, ack,
// cooperative close and final balances; with 32 zero aux bytes BIP-340
// signing is deterministic, so signatures are compared byte for byte.
// Regenerate: tests/vectors/README.md.
#include <gtest/gtest.h>

#include "channel/codec.h"
#include "tests/unit/channel/channel_test_util.h"
#include "tests/unit/vectors_json.h"

namespace tipd::channel {
namespace {

// The JSON readers of tests/unit/vectors_json.h.
using namespace tipd::testing::vectors;  // NOLINT(google-build-using-namespace)

const Struct& Vectors() {
  static const Struct v = LoadVectors(TIPD_CHANNEL_VECTORS_PATH);
  return v;
}

crypto::KeyPair KeyNamed(const std::string& name) {
  const Struct& k = Obj(Obj(Vectors(), "keys"), name);
  auto sk = crypto::SecretKey::FromBytes(Fixed<32>(k, "secret"));
  EXPECT_TRUE(sk.ok()) << name;
  crypto::KeyPair kp = crypto::KeyPair::FromSecret(*sk);
  EXPECT_EQ(Hex(kp.XOnly()), Text(k, "xonly")) << "x-only key of " << name;
  return kp;
}

TEST(ChannelVectorsTest, AuxIsZero) {
  // ZeroRandom below stands for the file's aux bytes.
  EXPECT_EQ(Text(Vectors(), "aux"), std::string(64, '0'));
}

TEST(ChannelVectorsTest, TipBytesHashesAndRootChain) {
  Hash32 root{};
  for (const auto& v : List(Vectors(), "tips").values()) {
    const Struct& t = v.struct_value();
    SCOPED_TRACE("tip " + Text(t, "index"));
    v1::Tip tip;
    tip.set_index(U64(t, "index"));
    tip.set_amount(U64(t, "amount"));
    tip.set_created_at_ms(U64(t, "created_at_ms"));
    tip.set_message(Text(t, "message"));
    for (const auto& m : List(t, "metadata").values()) {
      v1::MetadataEntry* e = tip.add_metadata();
      e->set_key(Text(m.struct_value(), "key"));
      e->set_value(Text(m.struct_value(), "value"));
    }
    EXPECT_TRUE(CheckTipContent(tip).ok());
    auto bytes = EncodeTip(tip);
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ(Hex(*bytes), Text(t, "bytes"));
    auto decoded = DecodeTip(*bytes);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(decoded->SerializeAsString(), tip.SerializeAsString());
    auto hash = TipHash(tip);
    ASSERT_TRUE(hash.ok());
    EXPECT_EQ(Hex(*hash), Text(t, "tip_hash"));
    root = ChainTipsRoot(root, *hash);
    EXPECT_EQ(Hex(root), Text(t, "root_after"));
  }
}

TEST(ChannelVectorsTest, BalanceProofBytesAndSignature) {
  const Struct& p = Obj(Vectors(), "balance_proof");
  v1::BalanceProof proof;
  proof.set_chain_id(Text(p, "chain_id"));
  proof.set_channel_id(Raw(p, "channel_id"));
  proof.set_nonce(U64(p, "nonce"));
  proof.set_transferred(U64(p, "transferred"));
  proof.set_locked(U64(p, "locked"));
  proof.set_locks_root(Raw(p, "locks_root"));
  proof.set_tips_root(Raw(p, "tips_root"));
  auto bytes = EncodeBalanceProof(proof);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(Hex(*bytes), Text(p, "bytes"));
  const crypto::KeyPair a = KeyNamed("a");
  ASSERT_EQ(Hex(a.XOnly()), Text(p, "signer"));
  testing::ZeroRandom zero;
  ASSERT_TRUE(SignBalanceProof(&proof, a, zero).ok());
  EXPECT_EQ(Hex(proof.signature()), Text(p, "signature"));
  EXPECT_TRUE(VerifyBalanceProof(proof, a.XOnly()).ok());
}

TEST(ChannelVectorsTest, AckBytesAndSignature) {
  const Struct& a = Obj(Vectors(), "ack");
  v1::Ack ack;
  ack.set_channel_id(Raw(a, "channel_id"));
  ack.set_nonce(U64(a, "nonce"));
  ack.set_tips_root(Raw(a, "tips_root"));
  const std::string chain_id = Text(Vectors(), "chain_id");
  auto bytes = EncodeAck(chain_id, ack);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(Hex(*bytes), Text(a, "bytes"));
  const crypto::KeyPair b = KeyNamed("b");
  ASSERT_EQ(Hex(b.XOnly()), Text(a, "signer"));
  testing::ZeroRandom zero;
  ASSERT_TRUE(SignAck(chain_id, &ack, b, zero).ok());
  EXPECT_EQ(Hex(ack.signature()), Text(a, "signature"));
  EXPECT_TRUE(VerifyAck(chain_id, ack, b.XOnly()).ok());
}

TEST(ChannelVectorsTest, CooperativeCloseBalancesBytesAndSignatures) {
  const Struct& c = Obj(Vectors(), "cooperative_close");
  auto balances = ComputeFinalBalances(U64(c, "deposit_a"), U64(c, "deposit_b"),
                                       U64(c, "transferred_a_to_b"), U64(c, "transferred_b_to_a"));
  ASSERT_TRUE(balances.ok());
  EXPECT_EQ(balances->balance_a, U64(c, "balance_a"));
  EXPECT_EQ(balances->balance_b, U64(c, "balance_b"));
  const std::string chain_id = Text(Vectors(), "chain_id");
  const std::string channel_id = Raw(Vectors(), "channel_id");
  auto bytes = EncodeCooperativeClose(chain_id, AsSpan(channel_id), U64(c, "balance_a"),
                                      U64(c, "balance_b"));
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(Hex(*bytes), Text(c, "bytes"));
  testing::ZeroRandom zero;
  for (auto [name, field] : {std::pair{"a", "signature_a"}, std::pair{"b", "signature_b"}}) {
    const crypto::KeyPair key = KeyNamed(name);
    auto sig = SignCooperativeClose(chain_id, AsSpan(channel_id), U64(c, "balance_a"),
                                    U64(c, "balance_b"), key, zero);
    ASSERT_TRUE(sig.ok());
    EXPECT_EQ(Hex(*sig), Text(c, field)) << name;
    EXPECT_TRUE(VerifyCooperativeClose(chain_id, AsSpan(channel_id), U64(c, "balance_a"),
                                       U64(c, "balance_b"), *sig, key.XOnly())
                    .ok());
  }
}

}  // namespace
}  // namespace tipd::channel
