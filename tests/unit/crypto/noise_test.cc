// BOLT 8 Appendix A, every case: the successful initiator and responder
// handshakes (each act's bytes, h after each act, final keys), every listed
// failure, and the message encryption test with key rotation. Then the state
// machine contracts: order, finality of failures, framing limits.

#include "crypto/noise.h"

#include <map>
#include <string>

#include <gtest/gtest.h>

namespace tipd::crypto {
namespace {

Bytes Hex(std::string_view hex) {
  Result<Bytes> b = HexDecode(hex);
  EXPECT_TRUE(b.ok()) << hex;
  return b.ok() ? *b : Bytes{};
}

KeyPair KeyFromHex(std::string_view hex) {
  auto sk = SecretKey::FromBytes(Hex(hex));
  EXPECT_TRUE(sk.ok()) << hex;
  return KeyPair::FromSecret(*sk);
}

// ---- The BOLT 8 Appendix A parameters ----

constexpr char kRsPub[] = "028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7";
constexpr char kInitiatorLsPriv[] =
    "1111111111111111111111111111111111111111111111111111111111111111";
constexpr char kInitiatorLsPub[] =
    "034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa";
constexpr char kInitiatorEPriv[] =
    "1212121212121212121212121212121212121212121212121212121212121212";
constexpr char kInitiatorEPub[] =
    "036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f7";
constexpr char kResponderLsPriv[] =
    "2121212121212121212121212121212121212121212121212121212121212121";
constexpr char kResponderEPriv[] =
    "2222222222222222222222222222222222222222222222222222222222222222";
constexpr char kResponderEPub[] =
    "02466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f27";

constexpr char kAct1[] =
    "00036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f70df6086551151f58b8afe6c1"
    "95782c6a";
constexpr char kAct2[] =
    "0002466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f276e2470b93aac583c9ef6eafc"
    "a3f730ae";
constexpr char kAct3[] =
    "00b9e3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa22355361aa02e55a8fc28fef5bd6d71"
    "ad0c38228dc68b1c466263b47fdf31e560e139ba";

constexpr char kHAfterAct1[] = "9d1ffbb639e7e20021d9259491dc7b160aab270fb1339ef135053f6f2cebe9ce";
constexpr char kHAfterAct2[] = "90578e247e98674e661013da3c5c1ca6a8c8f48c90b485c0dfa1494e23d56d72";
constexpr char kHAfterAct3[] = "5dcb5ea9b4ccc755e0e3456af3990641276e1d5dc9afd82f974d90a47c918660";
constexpr char kFinalCk[] = "919219dbb2920afa8db80f9a51787a840bcf111ed8d588caf9ab4be716e42b01";
// Initiator's sk = responder's rk, and vice versa.
constexpr char kInitiatorSk[] = "969ab31b4d288cedf6218839b27a3e2140827047f2c0f01bf5c04435d43511a9";
constexpr char kInitiatorRk[] = "bb9020b8965f4df047e07f955f3c4b88418984aadc5cdb35096b9ea8fa5c3442";

NoiseHandshake VectorInitiator() {
  KeyPair e = KeyFromHex(kInitiatorEPriv);
  EXPECT_EQ(e.public_key().Hex(), kInitiatorEPub);
  KeyPair ls = KeyFromHex(kInitiatorLsPriv);
  EXPECT_EQ(ls.public_key().Hex(), kInitiatorLsPub);
  auto rs = PublicKey::FromHex(kRsPub);
  EXPECT_TRUE(rs.ok());
  return NoiseHandshake::Initiator(ls, *rs, e);
}

NoiseHandshake VectorResponder() {
  KeyPair ls = KeyFromHex(kResponderLsPriv);
  EXPECT_EQ(ls.public_key().Hex(), kRsPub);
  KeyPair e = KeyFromHex(kResponderEPriv);
  EXPECT_EQ(e.public_key().Hex(), kResponderEPub);
  return NoiseHandshake::Responder(ls, e);
}

// Initiator that has sent act one, ready for act two.
NoiseHandshake InitiatorAwaitingAct2() {
  NoiseHandshake hs = VectorInitiator();
  auto act1 = hs.WriteAct1();
  EXPECT_TRUE(act1.ok());
  EXPECT_EQ(HexEncode(*act1), kAct1);
  return hs;
}

// Responder that has read act one and sent act two, ready for act three.
NoiseHandshake ResponderAwaitingAct3() {
  NoiseHandshake hs = VectorResponder();
  EXPECT_TRUE(hs.ReadAct1(Hex(kAct1)).ok());
  auto act2 = hs.WriteAct2();
  EXPECT_TRUE(act2.ok());
  EXPECT_EQ(HexEncode(*act2), kAct2);
  return hs;
}

// Checks a failed step: the code, a reason naming the problem, and that the
// handshake refuses to continue.
void ExpectFailure(NoiseHandshake& hs, const Status& s, StatusCode code,
                   const std::string& reason) {
  EXPECT_EQ(s.code(), code) << s.ToString();
  EXPECT_NE(s.message().find(reason), std::string::npos) << s.ToString();
  EXPECT_TRUE(hs.failed());
  auto finish = hs.Finish();
  ASSERT_FALSE(finish.ok());
  EXPECT_EQ(finish.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(finish.status().message().find(reason), std::string::npos)
      << "later calls repeat the first failure: " << finish.status().ToString();
}

// ---- Initiator tests ----

TEST(NoiseVectorTest, InitiatorSuccessfulHandshake) {
  NoiseHandshake hs = VectorInitiator();
  EXPECT_EQ(hs.role(), NoiseHandshake::Role::kInitiator);
  auto act1 = hs.WriteAct1();
  ASSERT_TRUE(act1.ok());
  EXPECT_EQ(act1->size(), kAct1Size);
  EXPECT_EQ(HexEncode(*act1), kAct1);
  EXPECT_EQ(HexEncode(hs.handshake_hash()), kHAfterAct1);

  ASSERT_TRUE(hs.ReadAct2(Hex(kAct2)).ok());
  EXPECT_EQ(HexEncode(hs.handshake_hash()), kHAfterAct2);

  auto act3 = hs.WriteAct3();
  ASSERT_TRUE(act3.ok());
  EXPECT_EQ(act3->size(), kAct3Size);
  EXPECT_EQ(HexEncode(*act3), kAct3);
  EXPECT_EQ(HexEncode(hs.handshake_hash()), kHAfterAct3);
  EXPECT_TRUE(hs.complete());

  auto t = hs.Finish();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(HexEncode(t->send_key()), kInitiatorSk);
  EXPECT_EQ(HexEncode(t->recv_key()), kInitiatorRk);
  EXPECT_EQ(HexEncode(t->send_chaining_key()), kFinalCk);
  EXPECT_EQ(HexEncode(t->recv_chaining_key()), kFinalCk);
  EXPECT_EQ(t->send_nonce(), 0u);
  EXPECT_EQ(t->recv_nonce(), 0u);
  EXPECT_EQ(t->remote_static().Hex(), kRsPub);
}

TEST(NoiseVectorTest, InitiatorAct2ShortRead) {
  NoiseHandshake hs = InitiatorAwaitingAct2();
  Status s =
      hs.ReadAct2(Hex("0002466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f276e2470b9"
                      "3aac583c9ef6eafca"
                      "3f730"));
  ExpectFailure(hs, s, StatusCode::kInvalidArgument, "act 2 must be exactly 50 bytes, got 49");
}

TEST(NoiseVectorTest, InitiatorAct2BadVersion) {
  NoiseHandshake hs = InitiatorAwaitingAct2();
  Status s =
      hs.ReadAct2(Hex("0102466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f276e2470b9"
                      "3aac583c9ef6eafca"
                      "3f730ae"));
  ExpectFailure(hs, s, StatusCode::kInvalidArgument, "act 2: unsupported handshake version 1");
}

TEST(NoiseVectorTest, InitiatorAct2BadKeySerialization) {
  NoiseHandshake hs = InitiatorAwaitingAct2();
  Status s =
      hs.ReadAct2(Hex("0004466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f276e2470b9"
                      "3aac583c9ef6eafca"
                      "3f730ae"));
  ExpectFailure(hs, s, StatusCode::kInvalidArgument, "act 2: bad ephemeral public key");
}

TEST(NoiseVectorTest, InitiatorAct2BadMac) {
  NoiseHandshake hs = InitiatorAwaitingAct2();
  Status s =
      hs.ReadAct2(Hex("0002466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f276e2470b9"
                      "3aac583c9ef6eafca"
                      "3f730af"));
  ExpectFailure(hs, s, StatusCode::kCorruption, "act 2: bad MAC");
}

// ---- Responder tests ----

TEST(NoiseVectorTest, ResponderSuccessfulHandshake) {
  NoiseHandshake hs = VectorResponder();
  EXPECT_EQ(hs.role(), NoiseHandshake::Role::kResponder);
  ASSERT_TRUE(hs.ReadAct1(Hex(kAct1)).ok());
  EXPECT_EQ(HexEncode(hs.handshake_hash()), kHAfterAct1);

  auto act2 = hs.WriteAct2();
  ASSERT_TRUE(act2.ok());
  EXPECT_EQ(act2->size(), kAct2Size);
  EXPECT_EQ(HexEncode(*act2), kAct2);
  EXPECT_EQ(HexEncode(hs.handshake_hash()), kHAfterAct2);

  ASSERT_TRUE(hs.ReadAct3(Hex(kAct3)).ok());
  EXPECT_EQ(HexEncode(hs.handshake_hash()), kHAfterAct3);
  EXPECT_TRUE(hs.complete());

  auto t = hs.Finish();
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  // "output: rk,sk=0x969ab3...,0xbb9020..."
  EXPECT_EQ(HexEncode(t->recv_key()), kInitiatorSk);
  EXPECT_EQ(HexEncode(t->send_key()), kInitiatorRk);
  EXPECT_EQ(HexEncode(t->send_chaining_key()), kFinalCk);
  EXPECT_EQ(HexEncode(t->recv_chaining_key()), kFinalCk);
  // The responder learned the initiator's static key in act three.
  EXPECT_EQ(t->remote_static().Hex(), kInitiatorLsPub);
}

TEST(NoiseVectorTest, ResponderAct1ShortRead) {
  NoiseHandshake hs = VectorResponder();
  Status s =
      hs.ReadAct1(Hex("00036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f70df60865"
                      "51151f58b8afe6c19"
                      "5782c"));
  ExpectFailure(hs, s, StatusCode::kInvalidArgument, "act 1 must be exactly 50 bytes, got 49");
}

TEST(NoiseVectorTest, ResponderAct1BadVersion) {
  NoiseHandshake hs = VectorResponder();
  Status s =
      hs.ReadAct1(Hex("01036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f70df60865"
                      "51151f58b8afe6c19"
                      "5782c6a"));
  ExpectFailure(hs, s, StatusCode::kInvalidArgument, "act 1: unsupported handshake version 1");
}

TEST(NoiseVectorTest, ResponderAct1BadKeySerialization) {
  NoiseHandshake hs = VectorResponder();
  Status s =
      hs.ReadAct1(Hex("00046360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f70df60865"
                      "51151f58b8afe6c19"
                      "5782c6a"));
  ExpectFailure(hs, s, StatusCode::kInvalidArgument, "act 1: bad ephemeral public key");
}

TEST(NoiseVectorTest, ResponderAct1BadMac) {
  NoiseHandshake hs = VectorResponder();
  Status s =
      hs.ReadAct1(Hex("00036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f70df60865"
                      "51151f58b8afe6c19"
                      "5782c6b"));
  ExpectFailure(hs, s, StatusCode::kCorruption, "act 1: bad MAC");
}

TEST(NoiseVectorTest, ResponderAct3BadVersion) {
  NoiseHandshake hs = ResponderAwaitingAct3();
  Status s =
      hs.ReadAct3(Hex("01b9e3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa22355361aa02e55"
                      "a8fc28fef5bd6d71a"
                      "d0c38228dc68b1c466263b47fdf31e560e139ba"));
  ExpectFailure(hs, s, StatusCode::kInvalidArgument, "act 3: unsupported handshake version 1");
}

TEST(NoiseVectorTest, ResponderAct3ShortRead) {
  NoiseHandshake hs = ResponderAwaitingAct3();
  Status s =
      hs.ReadAct3(Hex("00b9e3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa22355361aa02e55"
                      "a8fc28fef5bd6d71a"
                      "d0c38228dc68b1c466263b47fdf31e560e139"));
  ExpectFailure(hs, s, StatusCode::kInvalidArgument, "act 3 must be exactly 66 bytes, got 65");
}

TEST(NoiseVectorTest, ResponderAct3BadMacForCiphertext) {
  NoiseHandshake hs = ResponderAwaitingAct3();
  Status s =
      hs.ReadAct3(Hex("00c9e3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa22355361aa02e55"
                      "a8fc28fef5bd6d71a"
                      "d0c38228dc68b1c466263b47fdf31e560e139ba"));
  ExpectFailure(hs, s, StatusCode::kCorruption, "act 3: bad MAC on the encrypted static key");
}

TEST(NoiseVectorTest, ResponderAct3BadRs) {
  NoiseHandshake hs = ResponderAwaitingAct3();
  Status s =
      hs.ReadAct3(Hex("00bfe3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa2235536ad09a8ee"
                      "351870c2bb7f78b75"
                      "4a26c6cef79a98d25139c856d7efd252c2ae73c"));
  ExpectFailure(hs, s, StatusCode::kInvalidArgument, "act 3: bad static public key");
}

TEST(NoiseVectorTest, ResponderAct3BadFinalMac) {
  NoiseHandshake hs = ResponderAwaitingAct3();
  Status s =
      hs.ReadAct3(Hex("00b9e3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa22355361aa02e55"
                      "a8fc28fef5bd6d71a"
                      "d0c38228dc68b1c466263b47fdf31e560e139bb"));
  ExpectFailure(hs, s, StatusCode::kCorruption, "act 3: bad final MAC");
}

// ---- Message encryption test ----

TEST(NoiseVectorTest, MessageEncryptionWithKeyRotation) {
  auto remote = PublicKey::FromHex(kRsPub);
  ASSERT_TRUE(remote.ok());
  auto key = [](const char* hex) {
    auto k = HexDecodeFixed<32>(hex);
    EXPECT_TRUE(k.ok());
    return *k;
  };
  NoiseTransport sender =
      NoiseTransport::FromKeys(key(kInitiatorSk), key(kInitiatorRk), key(kFinalCk), *remote);
  // The receiving side of the same session: the responder's keys.
  NoiseTransport receiver =
      NoiseTransport::FromKeys(key(kInitiatorRk), key(kInitiatorSk), key(kFinalCk), *remote);

  const std::map<int, std::string> expected = {
      {0, "cf2b30ddf0cf3f80e7c35a6e6730b59fe802473180f396d88a8fb0db8cbcf25d2f214cf9ea1d95"},
      {1, "72887022101f0b6753e0c7de21657d35a4cb2a1f5cde2650528bbc8f837d0f0d7ad833b1a256a1"},
      {500, "178cb9d7387190fa34db9c2d50027d21793c9bc2d40b1e14dcf30ebeeeb220f48364f7a4c68bf8"},
      {501, "1b186c57d44eb6de4c057c49940d79bb838a145cb528d6e8fd26dbe50a60ca2c104b56b60e45bd"},
      {1000, "4a2f3cc3b5e78ddb83dcb426d9863d9d9a723b0337c89dd0b005d89f8d3c05c52b76b29b740f09"},
      {1001, "2ecd8c8a5629d0d02ab457a0fdd0f7b90a192cd46be5ecb6ca570bfc5e268338b1a16cf4ef2d36"},
  };
  const std::string hello = "hello";
  int checked = 0;
  for (int i = 0; i <= 1001; ++i) {
    auto frame = sender.Encrypt(AsSpan(hello));
    ASSERT_TRUE(frame.ok());
    ASSERT_EQ(frame->size(), kNoiseLengthHeaderSize + hello.size() + kAeadTagSize);
    if (auto it = expected.find(i); it != expected.end()) {
      EXPECT_EQ(HexEncode(*frame), it->second) << "output " << i;
      ++checked;
    }
    // Every frame also decrypts on the other side, through the rotations.
    auto len = receiver.DecryptLength(ByteSpan(*frame).first(kNoiseLengthHeaderSize));
    ASSERT_TRUE(len.ok()) << "message " << i << ": " << len.status().ToString();
    ASSERT_EQ(*len, hello.size());
    auto body = receiver.DecryptBody(ByteSpan(*frame).subspan(kNoiseLengthHeaderSize));
    ASSERT_TRUE(body.ok()) << "message " << i << ": " << body.status().ToString();
    EXPECT_EQ(AsStringView(*body), hello);
  }
  EXPECT_EQ(checked, 6);
  // Two rotations happened: the chaining key moved on as the vector shows
  // (second rotation: ck = 0x728366...).
  EXPECT_EQ(HexEncode(sender.send_chaining_key()),
            "728366ed68565dc17cf6dd97330a859a6a56e87e2beef3bd828a4c4a54d8df06");
  EXPECT_EQ(HexEncode(sender.send_key()),
            "9e0477f9850dca41e42db0e4d154e3a098e5a000d995e421849fcd5df27882bd");
  EXPECT_EQ(sender.send_nonce(), 4u);  // 1002 messages = 2004 nonces = 2 * 1000 + 4
  EXPECT_EQ(receiver.recv_key(), sender.send_key());
  // The untouched direction did not rotate.
  EXPECT_EQ(HexEncode(sender.recv_key()), kInitiatorRk);
  EXPECT_EQ(HexEncode(sender.recv_chaining_key()), kFinalCk);
}

// ---- State machine contracts ----

struct Session {
  NoiseTransport initiator;
  NoiseTransport responder;
};

Session Handshake(const KeyPair& a, const KeyPair& b) {
  NoiseHandshake init =
      NoiseHandshake::Initiator(a, b.public_key(), KeyPair::Generate(SystemRng()));
  NoiseHandshake resp = NoiseHandshake::Responder(b, KeyPair::Generate(SystemRng()));
  auto act1 = init.WriteAct1();
  EXPECT_TRUE(act1.ok());
  EXPECT_TRUE(resp.ReadAct1(*act1).ok());
  auto act2 = resp.WriteAct2();
  EXPECT_TRUE(act2.ok());
  EXPECT_TRUE(init.ReadAct2(*act2).ok());
  auto act3 = init.WriteAct3();
  EXPECT_TRUE(act3.ok());
  EXPECT_TRUE(resp.ReadAct3(*act3).ok());
  EXPECT_EQ(init.handshake_hash(), resp.handshake_hash());
  auto ti = init.Finish();
  auto tr = resp.Finish();
  EXPECT_TRUE(ti.ok() && tr.ok());
  return Session{std::move(ti).value(), std::move(tr).value()};
}

TEST(NoiseHandshakeTest, RandomKeysAgreeAndAuthenticateBothSides) {
  KeyPair a = KeyPair::Generate(SystemRng()), b = KeyPair::Generate(SystemRng());
  Session s = Handshake(a, b);
  EXPECT_EQ(s.initiator.remote_static(), b.public_key());
  EXPECT_EQ(s.responder.remote_static(), a.public_key());
  EXPECT_EQ(s.initiator.send_key(), s.responder.recv_key());
  EXPECT_EQ(s.initiator.recv_key(), s.responder.send_key());
  EXPECT_NE(s.initiator.send_key(), s.initiator.recv_key());

  for (const std::string msg : {"", "x", "a longer tip message"}) {
    auto frame = s.responder.Encrypt(AsSpan(msg));
    ASSERT_TRUE(frame.ok());
    auto len = s.initiator.DecryptLength(ByteSpan(*frame).first(kNoiseLengthHeaderSize));
    ASSERT_TRUE(len.ok());
    auto body = s.initiator.DecryptBody(ByteSpan(*frame).subspan(kNoiseLengthHeaderSize));
    ASSERT_TRUE(body.ok());
    EXPECT_EQ(AsStringView(*body), msg);
  }
}

TEST(NoiseHandshakeTest, InitiatorWithWrongResponderKeyFailsAtAct1) {
  KeyPair a = KeyPair::Generate(SystemRng()), b = KeyPair::Generate(SystemRng());
  KeyPair wrong = KeyPair::Generate(SystemRng());
  NoiseHandshake init =
      NoiseHandshake::Initiator(a, wrong.public_key(), KeyPair::Generate(SystemRng()));
  NoiseHandshake resp = NoiseHandshake::Responder(b, KeyPair::Generate(SystemRng()));
  auto act1 = init.WriteAct1();
  ASSERT_TRUE(act1.ok());
  EXPECT_EQ(resp.ReadAct1(*act1).code(), StatusCode::kCorruption);
  EXPECT_TRUE(resp.failed());
  EXPECT_EQ(resp.WriteAct2().status().code(), StatusCode::kFailedPrecondition);
}

TEST(NoiseHandshakeTest, OutOfOrderCallsAreErrorsAndChangeNothing) {
  NoiseHandshake init = VectorInitiator();
  EXPECT_EQ(init.ReadAct2(Hex(kAct2)).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(init.WriteAct3().status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(init.ReadAct1(Hex(kAct1)).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(init.WriteAct2().status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(init.ReadAct3(Hex(kAct3)).code(), StatusCode::kFailedPrecondition);
  auto early = init.Finish();
  EXPECT_EQ(early.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(early.status().message().find("next step is WriteAct1"), std::string::npos)
      << early.status().ToString();
  EXPECT_FALSE(init.failed());
  // The handshake still runs to the vector's result after the bad calls.
  auto act1 = init.WriteAct1();
  ASSERT_TRUE(act1.ok());
  EXPECT_EQ(HexEncode(*act1), kAct1);
  EXPECT_EQ(init.WriteAct1().status().code(), StatusCode::kFailedPrecondition);

  NoiseHandshake resp = VectorResponder();
  EXPECT_EQ(resp.WriteAct2().status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(resp.ReadAct3(Hex(kAct3)).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(resp.WriteAct1().status().code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(resp.ReadAct1(Hex(kAct1)).ok());
  EXPECT_EQ(resp.ReadAct1(Hex(kAct1)).code(), StatusCode::kFailedPrecondition);
}

TEST(NoiseHandshakeTest, FinishIsOnceOnly) {
  NoiseHandshake hs = ResponderAwaitingAct3();
  ASSERT_TRUE(hs.ReadAct3(Hex(kAct3)).ok());
  ASSERT_TRUE(hs.Finish().ok());
  EXPECT_FALSE(hs.complete());
  EXPECT_EQ(hs.Finish().status().code(), StatusCode::kFailedPrecondition);
}

TEST(NoiseHandshakeTest, InvalidRemoteStaticStartsFailed) {
  NoiseHandshake hs = NoiseHandshake::Initiator(KeyFromHex(kInitiatorLsPriv), PublicKey{},
                                                KeyFromHex(kInitiatorEPriv));
  EXPECT_TRUE(hs.failed());
  auto act1 = hs.WriteAct1();
  EXPECT_EQ(act1.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(act1.status().message().find("remote static key"), std::string::npos);
}

TEST(NoiseHandshakeTest, EveryTruncationOrBitFlipOfEveryActIsRejected) {
  // Act 1 and act 3 to the responder, act 2 to the initiator: any change is
  // caught (length, version, key or MAC), never accepted, never a crash.
  const Bytes acts[] = {Hex(kAct1), Hex(kAct2), Hex(kAct3)};
  for (int which = 0; which < 3; ++which) {
    const Bytes& good = acts[which];
    auto deliver = [&](ByteSpan m) {
      if (which == 0) {
        NoiseHandshake hs = VectorResponder();
        return hs.ReadAct1(m);
      }
      if (which == 1) {
        NoiseHandshake hs = InitiatorAwaitingAct2();
        return hs.ReadAct2(m);
      }
      NoiseHandshake hs = ResponderAwaitingAct3();
      return hs.ReadAct3(m);
    };
    ASSERT_TRUE(deliver(good).ok()) << "act " << which + 1;
    for (size_t len = 0; len < good.size(); ++len) {
      EXPECT_EQ(deliver(ByteSpan(good).first(len)).code(), StatusCode::kInvalidArgument);
    }
    Bytes longer = good;
    longer.push_back(0);
    EXPECT_EQ(deliver(longer).code(), StatusCode::kInvalidArgument);
    for (size_t i = 0; i < good.size(); ++i) {
      Bytes bad = good;
      bad[i] ^= 0x80;
      EXPECT_FALSE(deliver(bad).ok()) << "act " << which + 1 << " byte " << i;
    }
  }
}

// ---- Transport framing ----

TEST(NoiseTransportTest, MaximumMessageSizeIsEnforced) {
  KeyPair a = KeyPair::Generate(SystemRng()), b = KeyPair::Generate(SystemRng());
  Session s = Handshake(a, b);
  const Bytes too_big(kNoiseMaxMessageSize + 1, 0xab);
  auto refused = s.initiator.Encrypt(too_big);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.initiator.send_nonce(), 0u) << "a refused message consumes no nonce";

  const Bytes biggest(kNoiseMaxMessageSize, 0xcd);
  auto frame = s.initiator.Encrypt(biggest);
  ASSERT_TRUE(frame.ok());
  EXPECT_EQ(frame->size(), 2 + 16 + 65535 + 16u);
  auto len = s.responder.DecryptLength(ByteSpan(*frame).first(kNoiseLengthHeaderSize));
  ASSERT_TRUE(len.ok());
  EXPECT_EQ(*len, kNoiseMaxMessageSize);
  EXPECT_EQ(NoiseTransport::BodySize(*len), kNoiseMaxMessageSize + kAeadTagSize);
  auto body = s.responder.DecryptBody(ByteSpan(*frame).subspan(kNoiseLengthHeaderSize));
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(*body, biggest);
}

TEST(NoiseTransportTest, LengthAndBodyMustAlternateWithExactSizes) {
  KeyPair a = KeyPair::Generate(SystemRng()), b = KeyPair::Generate(SystemRng());
  Session s = Handshake(a, b);
  auto frame = s.initiator.Encrypt(AsSpan("tip"));
  ASSERT_TRUE(frame.ok());
  const ByteSpan header = ByteSpan(*frame).first(kNoiseLengthHeaderSize);
  const ByteSpan body = ByteSpan(*frame).subspan(kNoiseLengthHeaderSize);

  EXPECT_EQ(s.responder.DecryptBody(body).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.responder.DecryptLength(header.first(17)).status().code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(s.responder.DecryptLength(header).ok());
  EXPECT_EQ(s.responder.DecryptLength(header).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.responder.DecryptBody(body.first(body.size() - 1)).status().code(),
            StatusCode::kInvalidArgument);
  auto msg = s.responder.DecryptBody(body);
  ASSERT_TRUE(msg.ok()) << "size errors consume nothing: " << msg.status().ToString();
  EXPECT_EQ(AsStringView(*msg), "tip");
  EXPECT_FALSE(s.responder.failed());
}

TEST(NoiseTransportTest, TamperedLengthIsFinal) {
  KeyPair a = KeyPair::Generate(SystemRng()), b = KeyPair::Generate(SystemRng());
  Session s = Handshake(a, b);
  auto frame = s.initiator.Encrypt(AsSpan("tip"));
  ASSERT_TRUE(frame.ok());
  Bytes bad = *frame;
  bad[0] ^= 1;
  auto len = s.responder.DecryptLength(ByteSpan(bad).first(kNoiseLengthHeaderSize));
  EXPECT_EQ(len.status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(s.responder.failed());
  // Even the genuine frame is refused now: the stream is broken.
  EXPECT_EQ(
      s.responder.DecryptLength(ByteSpan(*frame).first(kNoiseLengthHeaderSize)).status().code(),
      StatusCode::kFailedPrecondition);
  // Sending still works (the caller decides to drop the connection).
  EXPECT_TRUE(s.responder.Encrypt(AsSpan("bye")).ok());
}

TEST(NoiseTransportTest, TamperedBodyIsFinal) {
  KeyPair a = KeyPair::Generate(SystemRng()), b = KeyPair::Generate(SystemRng());
  Session s = Handshake(a, b);
  auto frame = s.initiator.Encrypt(AsSpan("tip"));
  ASSERT_TRUE(frame.ok());
  Bytes bad = *frame;
  bad.back() ^= 1;
  ASSERT_TRUE(s.responder.DecryptLength(ByteSpan(bad).first(kNoiseLengthHeaderSize)).ok());
  auto body = s.responder.DecryptBody(ByteSpan(bad).subspan(kNoiseLengthHeaderSize));
  EXPECT_EQ(body.status().code(), StatusCode::kCorruption);
  EXPECT_TRUE(s.responder.failed());
  EXPECT_EQ(
      s.responder.DecryptBody(ByteSpan(*frame).subspan(kNoiseLengthHeaderSize)).status().code(),
      StatusCode::kFailedPrecondition);
}

TEST(NoiseTransportTest, ReplayedFrameIsRejected) {
  KeyPair a = KeyPair::Generate(SystemRng()), b = KeyPair::Generate(SystemRng());
  Session s = Handshake(a, b);
  auto frame = s.initiator.Encrypt(AsSpan("pay once"));
  ASSERT_TRUE(frame.ok());
  ASSERT_TRUE(s.responder.DecryptLength(ByteSpan(*frame).first(kNoiseLengthHeaderSize)).ok());
  ASSERT_TRUE(s.responder.DecryptBody(ByteSpan(*frame).subspan(kNoiseLengthHeaderSize)).ok());
  EXPECT_EQ(
      s.responder.DecryptLength(ByteSpan(*frame).first(kNoiseLengthHeaderSize)).status().code(),
      StatusCode::kCorruption);
}

TEST(NoiseTransportTest, MovedTransportKeepsWorking) {
  KeyPair a = KeyPair::Generate(SystemRng()), b = KeyPair::Generate(SystemRng());
  Session s = Handshake(a, b);
  NoiseTransport moved = std::move(s.initiator);
  auto frame = moved.Encrypt(AsSpan("after move"));
  ASSERT_TRUE(frame.ok());
  ASSERT_TRUE(s.responder.DecryptLength(ByteSpan(*frame).first(kNoiseLengthHeaderSize)).ok());
  auto body = s.responder.DecryptBody(ByteSpan(*frame).subspan(kNoiseLengthHeaderSize));
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(AsStringView(*body), "after move");
  // The moved-from object can never reuse the session's key and nonces.
  EXPECT_EQ(s.initiator.Encrypt(AsSpan("x")).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.initiator.DecryptLength(Bytes(kNoiseLengthHeaderSize)).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.initiator.send_key(), Key32{});
}

TEST(NoiseHandshakeTest, MovedHandshakeContinuesAndSourceIsDead) {
  NoiseHandshake source = VectorInitiator();
  NoiseHandshake hs = std::move(source);
  EXPECT_EQ(source.WriteAct1().status().code(), StatusCode::kFailedPrecondition);
  auto act1 = hs.WriteAct1();
  ASSERT_TRUE(act1.ok());
  EXPECT_EQ(HexEncode(*act1), kAct1);
  NoiseHandshake assigned = VectorResponder();
  assigned = std::move(hs);
  ASSERT_TRUE(assigned.ReadAct2(Hex(kAct2)).ok());
  auto act3 = assigned.WriteAct3();
  ASSERT_TRUE(act3.ok());
  EXPECT_EQ(HexEncode(*act3), kAct3);
}

}  // namespace
}  // namespace tipd::crypto
