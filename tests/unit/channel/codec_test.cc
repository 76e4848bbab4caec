// Canonical layouts, golden vectors (also published in docs/protocol.md) and
// final balances. A change to any encoding must make a vector here fail.
#include "channel/codec.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/unit/channel/channel_test_util.h"

namespace tipd::channel {
namespace {

using testing::KeyFromByte;
using testing::TestChannelId;
using testing::ZeroRandom;

std::string Hex(const std::string& s) { return HexEncode(AsSpan(s)); }

v1::Tip GoldenTip1() {
  v1::Tip t;
  t.set_index(1);
  t.set_amount(1000);
  t.set_created_at_ms(1700000000000);
  t.set_message("Great episode! \xe2\x9a\xa1");  // U+26A1 HIGH VOLTAGE SIGN
  v1::MetadataEntry* e = t.add_metadata();
  e->set_key("app_name");
  e->set_value("podverse");
  e = t.add_metadata();
  e->set_key("sender_name");
  e->set_value("alice");
  return t;
}

v1::Tip GoldenTip2() {
  v1::Tip t;
  t.set_index(2);
  t.set_amount(21);
  t.set_created_at_ms(1700000000500);
  t.set_message("gm");
  return t;
}

// The published vectors (docs/protocol.md, "Golden vectors").
constexpr const char* kXOnlyA = "1b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f";
constexpr const char* kXOnlyB = "4d4b6cd1361032ca9bd2aeb9d900aa4d45d9ead80ac9423374c451a7254d0766";
constexpr const char* kTip1Bytes =
    "000000000000000100000000000003e80000018bcfe568000012477265617420657069736f64652120e29aa10208"
    "6170705f6e616d650008706f6476657273650b73656e6465725f6e616d650005616c696365";
constexpr const char* kTip2Bytes = "000000000000000200000000000000150000018bcfe569f40002676d00";
constexpr const char* kTipHash1 =
    "c184752177498b045e853c6f311229151dedf051f961c3f5b0c9be2c150a3f68";
constexpr const char* kTipHash2 =
    "0597a278c97ded83190b8c58dd3655ad82313f86d8e19fa0850333fbe170f7c1";
constexpr const char* kRoot1 = "2f6984f60d10c072f8ee4db1d674072f0f352f15ec885297c76ece68d8d5a5fe";
constexpr const char* kRoot2 = "51bd3876a7d4f670b1cb5131a5dc67123d89d38fe0648c23054de9f2403f4862";
constexpr const char* kProofBytes =
    "09746970642d74657374000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f00000000"
    "0000000100000000000003fd0000000000000000000000000000000000000000000000000000000000000000000000"
    "00"
    "0000000051bd3876a7d4f670b1cb5131a5dc67123d89d38fe0648c23054de9f2403f4862";
constexpr const char* kProofSig =
    "ef0b3bf1efcc5b248ee024478246c9ffcad788273e5e86779615d10e21a407fcf59197e030a9d1d1baaac7eb911da2"
    "b54551184d476c8e84ff29a43e5fecb48e";
constexpr const char* kAckBytes =
    "09746970642d74657374000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f00000000"
    "0000000151bd3876a7d4f670b1cb5131a5dc67123d89d38fe0648c23054de9f2403f4862";
constexpr const char* kAckSig =
    "7e7f0599fe9eb0d1e15db7df1bd5c79d53c0e9fd73b47f27dc5dd1dcde7e1c520556c8eb4da1034d76211d2fb9dc2f"
    "ecc3d0be83963a0a5924c729847c275648";
constexpr const char* kCloseBytes =
    "09746970642d74657374000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f00000000"
    "000182a3000000000000c74d";
constexpr const char* kCloseSigA =
    "c34b38543f3ff0773d4fff816aab05372ec950e7d3ae8f07b333c1626306ca2c59de40cf9f5430b6a249b287d0fff8"
    "a74110558e88db7aef09509b1e5b765717";
constexpr const char* kCloseSigB =
    "4c8a577a45df7d1c40bf27673615677c04be2f007f289836ad5e4ec76ffdc437c6b28ba1806750fcc67ecc9348b873"
    "cfdab19274fc63c969de461611dd43c5cc";

crypto::Signature SigFromHex(const char* hex) {
  auto b = HexDecodeFixed<64>(hex);
  EXPECT_TRUE(b.ok());
  return *b;
}

struct Golden {
  Hash32 hash1, hash2, root1, root2;
  v1::BalanceProof proof;
  v1::Ack ack;
};

Golden MakeGolden() {
  ZeroRandom rng;
  Golden g;
  g.hash1 = *TipHash(GoldenTip1());
  g.hash2 = *TipHash(GoldenTip2());
  g.root1 = ChainTipsRoot(Hash32{}, g.hash1);
  g.root2 = ChainTipsRoot(g.root1, g.hash2);
  ChannelId id = TestChannelId();
  g.proof.set_chain_id("tipd-test");
  g.proof.set_channel_id(std::string(AsStringView(id)));
  g.proof.set_nonce(1);
  g.proof.set_transferred(1021);
  g.proof.set_locked(0);
  g.proof.set_locks_root(std::string(32, '\0'));
  g.proof.set_tips_root(std::string(AsStringView(g.root2)));
  EXPECT_TRUE(SignBalanceProof(&g.proof, KeyFromByte(0x01), rng).ok());
  g.ack.set_channel_id(std::string(AsStringView(id)));
  g.ack.set_nonce(1);
  g.ack.set_tips_root(std::string(AsStringView(g.root2)));
  EXPECT_TRUE(SignAck("tipd-test", &g.ack, KeyFromByte(0x02), rng).ok());
  return g;
}

TEST(Golden, Keys) {
  EXPECT_EQ(HexEncode(KeyFromByte(0x01).XOnly()), kXOnlyA);
  EXPECT_EQ(HexEncode(KeyFromByte(0x02).XOnly()), kXOnlyB);
}

TEST(Golden, TipBytesHashesAndRoots) {
  EXPECT_EQ(HexEncode(*EncodeTip(GoldenTip1())), kTip1Bytes);
  EXPECT_EQ(HexEncode(*EncodeTip(GoldenTip2())), kTip2Bytes);
  Golden g = MakeGolden();
  EXPECT_EQ(HexEncode(g.hash1), kTipHash1);
  EXPECT_EQ(HexEncode(g.hash2), kTipHash2);
  EXPECT_EQ(HexEncode(g.root1), kRoot1);
  EXPECT_EQ(HexEncode(g.root2), kRoot2);
  // The tip hash is plain SHA-256 of the canonical bytes.
  EXPECT_EQ(HexEncode(crypto::Sha256(*HexDecode(kTip1Bytes))), kTipHash1);
}

TEST(Golden, BalanceProof) {
  Golden g = MakeGolden();
  Bytes bytes = *EncodeBalanceProof(g.proof);
  EXPECT_EQ(HexEncode(bytes), kProofBytes);
  EXPECT_EQ(Hex(g.proof.signature()), kProofSig);
  EXPECT_TRUE(crypto::VerifyTagged(*HexDecodeFixed<32>(kXOnlyA), "tipd/balance-proof/v1", bytes,
                                   SigFromHex(kProofSig)));
  EXPECT_FALSE(crypto::VerifyTagged(*HexDecodeFixed<32>(kXOnlyB), "tipd/balance-proof/v1", bytes,
                                    SigFromHex(kProofSig)));
  EXPECT_TRUE(VerifyBalanceProof(g.proof, KeyFromByte(0x01).XOnly()).ok());
}

TEST(Golden, Ack) {
  Golden g = MakeGolden();
  Bytes bytes = *EncodeAck("tipd-test", g.ack);
  EXPECT_EQ(HexEncode(bytes), kAckBytes);
  EXPECT_EQ(Hex(g.ack.signature()), kAckSig);
  EXPECT_TRUE(crypto::VerifyTagged(*HexDecodeFixed<32>(kXOnlyB), "tipd/ack/v1", bytes,
                                   SigFromHex(kAckSig)));
  // The tag separates message kinds: the same bytes do not verify as a proof.
  EXPECT_FALSE(crypto::VerifyTagged(*HexDecodeFixed<32>(kXOnlyB), "tipd/balance-proof/v1", bytes,
                                    SigFromHex(kAckSig)));
  EXPECT_TRUE(VerifyAck("tipd-test", g.ack, KeyFromByte(0x02).XOnly()).ok());
  EXPECT_EQ(VerifyAck("tipd-other", g.ack, KeyFromByte(0x02).XOnly()).rule(),
            ChannelRule::kBadSignature);
}

TEST(Golden, CooperativeClose) {
  ZeroRandom rng;
  ChannelId id = TestChannelId();
  auto balances = ComputeFinalBalances(100000, 50000, 1021, 0);
  ASSERT_TRUE(balances.ok());
  EXPECT_EQ(*balances, (FinalBalances{98979, 51021}));
  Bytes bytes = *EncodeCooperativeClose("tipd-test", id, 98979, 51021);
  EXPECT_EQ(HexEncode(bytes), kCloseBytes);
  auto sig_a = SignCooperativeClose("tipd-test", id, 98979, 51021, KeyFromByte(0x01), rng);
  auto sig_b = SignCooperativeClose("tipd-test", id, 98979, 51021, KeyFromByte(0x02), rng);
  EXPECT_EQ(HexEncode(*sig_a), kCloseSigA);
  EXPECT_EQ(HexEncode(*sig_b), kCloseSigB);
  EXPECT_TRUE(crypto::VerifyTagged(*HexDecodeFixed<32>(kXOnlyA), "tipd/cooperative-close/v1", bytes,
                                   SigFromHex(kCloseSigA)));
  EXPECT_TRUE(crypto::VerifyTagged(*HexDecodeFixed<32>(kXOnlyB), "tipd/cooperative-close/v1", bytes,
                                   SigFromHex(kCloseSigB)));
  EXPECT_TRUE(
      VerifyCooperativeClose("tipd-test", id, 98979, 51021, *sig_a, KeyFromByte(0x01).XOnly())
          .ok());
  EXPECT_EQ(VerifyCooperativeClose("tipd-test", id, 98980, 51020, *sig_a, KeyFromByte(0x01).XOnly())
                .rule(),
            ChannelRule::kBadSignature);
}

// ---- codec round trips and refusals ----

TEST(Codec, TipRoundTrip) {
  for (const v1::Tip& tip : {GoldenTip1(), GoldenTip2()}) {
    auto bytes = EncodeTip(tip);
    ASSERT_TRUE(bytes.ok());
    auto back = DecodeTip(*bytes);
    ASSERT_TRUE(back.ok()) << back.error().ToString();
    EXPECT_EQ(back->SerializeAsString(), tip.SerializeAsString());
  }
}

TEST(Codec, DecodeTipRejectsTruncatedAndTrailingBytes) {
  Bytes bytes = *EncodeTip(GoldenTip1());
  Bytes truncated(bytes.begin(), bytes.end() - 1);
  EXPECT_EQ(DecodeTip(truncated).rule(), ChannelRule::kMalformed);
  Bytes trailing = bytes;
  trailing.push_back(0);
  EXPECT_EQ(DecodeTip(trailing).rule(), ChannelRule::kMalformed);
}

TEST(Codec, DecodeTipAppliesContentRules) {
  ByteWriter w;  // hand-built: amount 0 is not encodable through EncodeTip
  w.U64(1);
  w.U64(0);
  w.U64(0);
  w.Str16("x");
  w.U8(0);
  EXPECT_EQ(DecodeTip(w.bytes()).rule(), ChannelRule::kAmountZero);
}

TEST(Codec, BalanceProofRoundTripAndSizes) {
  Golden g = MakeGolden();
  Bytes bytes = *EncodeBalanceProof(g.proof);
  auto back = DecodeBalanceProof(bytes);
  ASSERT_TRUE(back.ok());
  back->set_signature(g.proof.signature());
  EXPECT_EQ(back->SerializeAsString(), g.proof.SerializeAsString());

  v1::BalanceProof bad = g.proof;
  bad.set_tips_root("short");
  EXPECT_EQ(EncodeBalanceProof(bad).rule(), ChannelRule::kMalformed);
  bad = g.proof;
  bad.set_chain_id("Upper");
  EXPECT_EQ(EncodeBalanceProof(bad).rule(), ChannelRule::kMalformed);
  bad.set_chain_id(std::string(65, 'a'));
  EXPECT_EQ(EncodeBalanceProof(bad).rule(), ChannelRule::kMalformed);
  bad = g.proof;
  bad.set_signature(std::string(63, 'x'));
  EXPECT_EQ(VerifyBalanceProof(bad, KeyFromByte(1).XOnly()).rule(), ChannelRule::kMalformed);
  bad = g.proof;
  bad.set_transferred(1022);
  EXPECT_EQ(VerifyBalanceProof(bad, KeyFromByte(1).XOnly()).rule(), ChannelRule::kBadSignature);
}

TEST(Codec, ChainIdAndMetadataKeyCharsets) {
  EXPECT_TRUE(IsValidChainId("tipd-devnet.1_a"));
  EXPECT_FALSE(IsValidChainId(""));
  EXPECT_FALSE(IsValidChainId("Tipd"));
  EXPECT_FALSE(IsValidChainId("tipd net"));
  EXPECT_TRUE(IsValidChainId(std::string(64, 'z')));
  EXPECT_TRUE(IsValidMetadataKey("sender_name"));
  EXPECT_FALSE(IsValidMetadataKey("sender-name"));
  EXPECT_FALSE(IsValidMetadataKey(std::string(33, 'a')));
  EXPECT_FALSE(IsValidMetadataKey(""));
}

TEST(Codec, TipContentLimitsAreInclusive) {
  v1::Tip tip = GoldenTip2();
  tip.set_message(std::string(1000, 'm'));
  for (int i = 0; i < 8; ++i) {
    v1::MetadataEntry* e = tip.add_metadata();
    e->set_key(std::string(32 - 1, 'k') + static_cast<char>('a' + i));
    e->set_value(std::string(256, 'v'));
  }
  EXPECT_TRUE(CheckTipContent(tip).ok());
  tip.set_message(std::string(1001, 'm'));
  EXPECT_EQ(CheckTipContent(tip).rule(), ChannelRule::kMessageTooLong);
}

// ---- final balances ----

TEST(FinalBalances, NetsBothDirections) {
  auto b = ComputeFinalBalances(100, 50, 30, 10);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (FinalBalances{80, 70}));
}

TEST(FinalBalances, ClampsAtZeroForA) {
  // A's proof shows more than A could have paid: A gets 0, B everything.
  auto b = ComputeFinalBalances(100, 50, 500, 10);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (FinalBalances{0, 150}));
}

TEST(FinalBalances, ClampsAtTotalForA) {
  auto b = ComputeFinalBalances(100, 50, 0, 900);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (FinalBalances{150, 0}));
}

TEST(FinalBalances, ExtremeTransfersDoNotWrap) {
  auto b = ComputeFinalBalances(UINT64_MAX - 5, 5, UINT64_MAX, 0);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (FinalBalances{0, UINT64_MAX}));
  b = ComputeFinalBalances(0, UINT64_MAX, 0, UINT64_MAX);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (FinalBalances{UINT64_MAX, 0}));
}

TEST(FinalBalances, DepositSumOverflowIsAnError) {
  auto b = ComputeFinalBalances(UINT64_MAX, 1, 0, 0);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.rule(), ChannelRule::kOverflow);
}

}  // namespace
}  // namespace tipd::channel
