// Known-answer and property tests for crypto/crypto.h: BIP-340 (all 19 rows
// of the official CSV), SHA-256, HMAC-SHA256 (RFC 4231), HKDF (RFC 5869),
// ChaCha20-Poly1305 (RFC 8439), tagged hashes, keys, ECDH and key files.

#include <sys/stat.h>

#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "crypto/crypto.h"
#include "tests/support/test_support.h"

namespace tipd::crypto {
namespace {

Bytes Hex(std::string_view hex) {
  Result<Bytes> b = HexDecode(hex);
  EXPECT_TRUE(b.ok()) << hex;
  return b.ok() ? *b : Bytes{};
}

template <size_t N>
std::array<uint8_t, N> HexN(std::string_view hex) {
  auto b = HexDecodeFixed<N>(hex);
  EXPECT_TRUE(b.ok()) << hex;
  return b.ok() ? *b : std::array<uint8_t, N>{};
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A RandomSource that yields a fixed byte pattern: deterministic tests.
class FixedRandom final : public RandomSource {
 public:
  explicit FixedRandom(uint8_t byte) : byte_(byte) {}
  void Fill(std::span<uint8_t> out) override {
    for (auto& b : out) b = byte_++;
  }

 private:
  uint8_t byte_;
};

// ---- BIP-340: bitcoin/bips bip-0340/test-vectors.csv, every row ----

struct Bip340Row {
  int index;
  const char* secret_key;  // empty: verification-only row
  const char* public_key;
  const char* aux_rand;
  const char* message;  // any length, including empty
  const char* signature;
  bool verifies;
  const char* comment;
};

constexpr Bip340Row kBip340Vectors[] = {
    {0, "0000000000000000000000000000000000000000000000000000000000000003",
     "F9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "E907831F80848D1069A5371B402410364BDF1C5F8307B0084C55F1CE2DCA821525F66A4A85EA8B71E482A74F382D2"
     "CE5EBEEE8FDB2172F477DF4900D310536C0",
     true, ""},
    {1, "B7E151628AED2A6ABF7158809CF4F3C762E7160F38B4DA56A784D9045190CFEF",
     "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659",
     "0000000000000000000000000000000000000000000000000000000000000001",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6896BD60EEAE296DB48A229FF71DFE071BDE413E6D43F917DC8DCF8C78DE33418906D11AC976ABCCB20B091292BFF"
     "4EA897EFCB639EA871CFA95F6DE339E4B0A",
     true, ""},
    {2, "C90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B14E5C9",
     "DD308AFEC5777E13121FA72B9CC1B7CC0139715309B086C960E18FD969774EB8",
     "C87AA53824B4D7AE2EB035A2B5BBBCCC080E76CDC6D1692C4B0B62D798E6D906",
     "7E2D58D8B3BCDF1ABADEC7829054F90DDA9805AAB56C77333024B9D0A508B75C",
     "5831AAEED7B44BB74E5EAB94BA9D4294C49BCF2A60728D8B4C200F50DD313C1BAB745879A5AD954A72C45A91C3A51"
     "D3C7ADEA98D82F8481E0E1E03674A6F3FB7",
     true, ""},
    {3, "0B432B2677937381AEF05BB02A66ECD012773062CF3FA2549E44F58ED2401710",
     "25D1DFF95105F5253C4022F628A996AD3A0D95FBF21D468A1B33F8C160D8F517",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
     "7EB0509757E246F19449885651611CB965ECC1A187DD51B64FDA1EDC9637D5EC97582B9CB13DB3933705B32BA982A"
     "F5AF25FD78881EBB32771FC5922EFC66EA3",
     true, "test fails if msg is reduced modulo p or n"},
    {4, "", "D69C3509BB99E412E68B0FE8544E72837DFA30746D8BE2AA65975F29D22DC7B9", "",
     "4DF3C3F68FCC83B27E9D42C90431A72499F17875C81A599B566C9889B9696703",
     "00000000000000000000003B78CE563F89A0ED9414F5AA28AD0D96D6795F9C6376AFB1548AF603B3EB45C9F8207DE"
     "E1060CB71C04E80F593060B07D28308D7F4",
     true, ""},
    {5, "", "EEFDEA4CDB677750A420FEE807EACF21EB9898AE79B9768766E4FAA04A2D4A34", "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E17776969E89B4C5564D00349106B8497785"
     "DD7D1D713A8AE82B32FA79D5F7FC407D39B",
     false, "public key not on the curve"},
    {6, "", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "FFF97BD5755EEEA420453A14355235D382F6472F8568A18B2F057A14602975563CC27944640AC607CD107AE10923D"
     "9EF7A73C643E166BE5EBEAFA34B1AC553E2",
     false, "has_even_y(R) is false"},
    {7, "", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "1FA62E331EDBC21C394792D2AB1100A7B432B013DF3F6FF4F99FCB33E0E1515F28890B3EDB6E7189B630448B515CE"
     "4F8622A954CFE545735AAEA5134FCCDB2BD",
     false, "negated message"},
    {8, "", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769961764B3AA9B2FFCB6EF947B6887A"
     "226E8D7C93E00C5ED0C1834FF0D0C2E6DA6",
     false, "negated s value"},
    {9, "", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "0000000000000000000000000000000000000000000000000000000000000000123DDA8328AF9C23A94C1FEECFD12"
     "3BA4FB73476F0D594DCB65C6425BD186051",
     false,
     "sG - eP is infinite. Test fails in single verification if has_even_y(inf) is defined as true "
     "and x(inf) as 0"},
    {10, "", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "00000000000000000000000000000000000000000000000000000000000000017615FBAF5AE28864013C099742DEA"
     "DB4DBA87F11AC6754F93780D5A1837CF197",
     false,
     "sG - eP is infinite. Test fails in single verification if has_even_y(inf) is defined as true "
     "and x(inf) as 1"},
    {11, "", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "4A298DACAE57395A15D0795DDBFD1DCB564DA82B0F269BC70A74F8220429BA1D69E89B4C5564D00349106B8497785"
     "DD7D1D713A8AE82B32FA79D5F7FC407D39B",
     false, "sig[0:32] is not an X coordinate on the curve"},
    {12, "", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F69E89B4C5564D00349106B8497785"
     "DD7D1D713A8AE82B32FA79D5F7FC407D39B",
     false, "sig[0:32] is equal to field size"},
    {13, "", "DFF1D77F2A671C5F36183726DB2341BE58FEAE1DA2DECED843240F7B502BA659", "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E177769FFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
     "FFEBAAEDCE6AF48A03BBFD25E8CD0364141",
     false, "sig[32:64] is equal to curve order"},
    {14, "", "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC30", "",
     "243F6A8885A308D313198A2E03707344A4093822299F31D0082EFA98EC4E6C89",
     "6CFF5C3BA86C69EA4B7376F31A9BCB4F74C1976089B2D9963DA2E5543E17776969E89B4C5564D00349106B8497785"
     "DD7D1D713A8AE82B32FA79D5F7FC407D39B",
     false, "public key is not a valid X coordinate because it exceeds the field size"},
    {15, "0340034003400340034003400340034003400340034003400340034003400340",
     "778CAA53B4393AC467774D09497A87224BF9FAB6F6E68B23086497324D6FD117",
     "0000000000000000000000000000000000000000000000000000000000000000", "",
     "71535DB165ECD9FBBC046E5FFAEA61186BB6AD436732FCCC25291A55895464CF6069CE26BF03466228F19A3A62DB8"
     "A649F2D560FAC652827D1AF0574E427AB63",
     true, "message of size 0 (added 2022-12)"},
    {16, "0340034003400340034003400340034003400340034003400340034003400340",
     "778CAA53B4393AC467774D09497A87224BF9FAB6F6E68B23086497324D6FD117",
     "0000000000000000000000000000000000000000000000000000000000000000", "11",
     "08A20A0AFEF64124649232E0693C583AB1B9934AE63B4C3511F3AE1134C6A303EA3173BFEA6683BD101FA5AA5DBC1"
     "996FE7CACFC5A577D33EC14564CEC2BACBF",
     true, "message of size 1 (added 2022-12)"},
    {17, "0340034003400340034003400340034003400340034003400340034003400340",
     "778CAA53B4393AC467774D09497A87224BF9FAB6F6E68B23086497324D6FD117",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "0102030405060708090A0B0C0D0E0F1011",
     "5130F39A4059B43BC7CAC09A19ECE52B5D8699D1A71E3C52DA9AFDB6B50AC370C4A482B77BF960F8681540E25B677"
     "1ECE1E5A37FD80E5A51897C5566A97EA5A5",
     true, "message of size 17 (added 2022-12)"},
    {18, "0340034003400340034003400340034003400340034003400340034003400340",
     "778CAA53B4393AC467774D09497A87224BF9FAB6F6E68B23086497324D6FD117",
     "0000000000000000000000000000000000000000000000000000000000000000",
     "999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
     "999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
     "99999999999999",
     "403B12B0D8555A344175EA7EC746566303321E5DBFA8BE6F091635163ECA79A8585ED3E3170807E7C03B720FC54C7"
     "B23897FCBA0E9D0B4A06894CFD249F22367",
     true, "message of size 100 (added 2022-12)"},
};

TEST(Bip340Test, AllNineteenVectorRowsArePresent) {
  ASSERT_EQ(std::size(kBip340Vectors), 19u);
  for (size_t i = 0; i < std::size(kBip340Vectors); ++i) {
    EXPECT_EQ(kBip340Vectors[i].index, static_cast<int>(i));
  }
}

TEST(Bip340Test, SigningRowsProduceTheExactSignature) {
  int signed_rows = 0;
  for (const Bip340Row& row : kBip340Vectors) {
    if (std::string_view(row.secret_key).empty()) continue;
    SCOPED_TRACE("BIP-340 row " + std::to_string(row.index));
    auto sk = SecretKey::FromBytes(Hex(row.secret_key));
    ASSERT_TRUE(sk.ok()) << sk.status().ToString();
    KeyPair kp = KeyPair::FromSecret(*sk);
    EXPECT_EQ(HexEncode(kp.XOnly()), Lower(row.public_key));
    Signature sig = SchnorrSign(kp, Hex(row.message), HexN<32>(row.aux_rand));
    EXPECT_EQ(HexEncode(sig), Lower(row.signature));
    ++signed_rows;
  }
  EXPECT_EQ(signed_rows, 8);  // rows 0-3 and 15-18
}

TEST(Bip340Test, EveryRowVerifiesAsTheVectorSays) {
  for (const Bip340Row& row : kBip340Vectors) {
    SCOPED_TRACE("BIP-340 row " + std::to_string(row.index) + " " + row.comment);
    const XOnlyPubKey pub = HexN<32>(row.public_key);
    const Signature sig = HexN<64>(row.signature);
    EXPECT_EQ(SchnorrVerify(pub, Hex(row.message), sig), row.verifies);
  }
}

TEST(Bip340Test, InvalidPublicKeyRowsFailToParse) {
  // Rows 5 (not on the curve) and 14 (x >= field size).
  EXPECT_FALSE(ParseXOnly(Hex(kBip340Vectors[5].public_key)).ok());
  EXPECT_FALSE(ParseXOnly(Hex(kBip340Vectors[14].public_key)).ok());
  EXPECT_TRUE(ParseXOnly(Hex(kBip340Vectors[1].public_key)).ok());
  EXPECT_FALSE(ParseXOnly(Hex("00")).ok());
}

TEST(Bip340Test, SignTaggedRoundTripAndDomainSeparation) {
  FixedRandom rng(7);
  KeyPair kp = KeyPair::Generate(rng);
  const Bytes msg = {1, 2, 3, 4};
  Signature sig = SignTagged(kp, "tipd/balance-proof/v1", msg, rng);
  EXPECT_TRUE(VerifyTagged(kp.XOnly(), "tipd/balance-proof/v1", msg, sig));
  // Same bytes under another tag, or other bytes, must not verify.
  EXPECT_FALSE(VerifyTagged(kp.XOnly(), "tipd/ack/v1", msg, sig));
  EXPECT_FALSE(VerifyTagged(kp.XOnly(), "tipd/balance-proof/v1", Bytes{1, 2, 3, 5}, sig));
  // It is plain BIP-340 over the tagged hash.
  EXPECT_TRUE(SchnorrVerify(kp.XOnly(), TaggedHash("tipd/balance-proof/v1", msg), sig));
  sig[10] ^= 1;
  EXPECT_FALSE(VerifyTagged(kp.XOnly(), "tipd/balance-proof/v1", msg, sig));
}

// ---- Hashes ----

TEST(HashTest, Sha256KnownAnswers) {
  EXPECT_EQ(HexEncode(Sha256({})),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HexEncode(Sha256(AsSpan("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(HashTest, IncrementalSha256MatchesOneShot) {
  Bytes data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31);
  Sha256Hasher h;
  h.Write(ByteSpan(data).first(1)).Write(ByteSpan(data).subspan(1, 500));
  h.Write(ByteSpan(data).subspan(501));
  EXPECT_EQ(h.Finalize(), Sha256(data));
}

TEST(HashTest, TaggedHashMatchesManualComputation) {
  const std::string tag = "BIP0340/challenge";
  const Bytes msg = {0xde, 0xad, 0xbe, 0xef};
  const Hash32 t = Sha256(AsSpan(tag));
  ByteWriter manual;
  manual.Raw(t);
  manual.Raw(t);
  manual.Raw(msg);
  EXPECT_EQ(TaggedHash(tag, msg), Sha256(manual.bytes()));
  EXPECT_NE(TaggedHash("other", msg), Sha256(manual.bytes()));
}

TEST(HashTest, HmacSha256Rfc4231) {
  // Test case 1.
  EXPECT_EQ(HexEncode(HmacSha256(Bytes(20, 0x0b), AsSpan("Hi There"))),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  // Test case 2.
  EXPECT_EQ(HexEncode(HmacSha256(AsSpan("Jefe"), AsSpan("what do ya want for nothing?"))),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(HkdfTest, Rfc5869TestCase1) {
  auto okm = HkdfSha256(Hex("000102030405060708090a0b0c"), Bytes(22, 0x0b),
                        Hex("f0f1f2f3f4f5f6f7f8f9"), 42);
  ASSERT_TRUE(okm.ok());
  EXPECT_EQ(HexEncode(*okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
}

TEST(HkdfTest, Hkdf2MatchesRfc5869TestCase3) {
  // Test case 3 has an empty salt and empty info; HKDF output is a prefix
  // of any longer output, so Hkdf2's first 42 bytes must equal the OKM.
  auto [k1, k2] = Hkdf2({}, Bytes(22, 0x0b));
  ByteWriter joined;
  joined.Raw(k1);
  joined.Raw(k2);
  EXPECT_EQ(HexEncode(ByteSpan(joined.bytes()).first(42)),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
}

TEST(HkdfTest, Hkdf2MatchesEvpKdfAndBolt8Vector) {
  // From BOLT 8 Appendix A (initiator act one).
  const Bytes ck = Hex("2640f52eebcd9e882958951c794250eedb28002c05d7dc2ea0f195406042caf1");
  const Bytes es = Hex("1e2fb3c8fe8fb9f262f649f64d26ecf0f2c0a805a767cf02dc2d77a6ef1fdcc3");
  auto [ck2, temp_k1] = Hkdf2(ck, es);
  EXPECT_EQ(HexEncode(ck2), "b61ec1191326fa240decc9564369dbb3ae2b34341d1e11ad64ed89f89180582f");
  EXPECT_EQ(HexEncode(temp_k1), "e68f69b7f096d7917245f5e5cf8ae1595febe4d4644333c99f9c4a1282031c9f");
  auto evp = HkdfSha256(ck, es, {}, 64);
  ASSERT_TRUE(evp.ok());
  EXPECT_EQ(HexEncode(ByteSpan(*evp).first(32)), HexEncode(ck2));
  EXPECT_EQ(HexEncode(ByteSpan(*evp).subspan(32)), HexEncode(temp_k1));
}

TEST(HkdfTest, RejectsBadLengths) {
  EXPECT_EQ(HkdfSha256({}, Bytes(1), {}, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HkdfSha256({}, Bytes(1), {}, 255 * 32 + 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(HkdfSha256({}, Bytes(1), {}, 255 * 32).ok());
}

// ---- AEAD ----

TEST(AeadTest, Rfc8439Section282Vector) {
  const Key32 key = HexN<32>("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
  const AeadNonce nonce = HexN<12>("070000004041424344454647");
  const Bytes ad = Hex("50515253c0c1c2c3c4c5c6c7");
  const std::string plaintext =
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
      "future, sunscreen would be it.";
  const std::string expected =
      "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da"
      "92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585"
      "808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116"
      "1ae10b594f09e26a7e902ecbd0600691";  // tag
  Bytes ct = ChaCha20Poly1305Encrypt(key, nonce, ad, AsSpan(plaintext));
  EXPECT_EQ(HexEncode(ct), expected);
  auto pt = ChaCha20Poly1305Decrypt(key, nonce, ad, ct);
  ASSERT_TRUE(pt.ok()) << pt.status().ToString();
  EXPECT_EQ(AsStringView(*pt), plaintext);
}

TEST(AeadTest, BoltNonceLayout) {
  EXPECT_EQ(HexEncode(BoltNonce(0)), "000000000000000000000000");
  EXPECT_EQ(HexEncode(BoltNonce(1)), "000000000100000000000000");
  EXPECT_EQ(HexEncode(BoltNonce(0x0102030405060708)), "000000000807060504030201");
}

TEST(AeadTest, TamperedCiphertextTagAdOrNonceIsRejected) {
  const Key32 key = HexN<32>("1111111111111111111111111111111111111111111111111111111111111111");
  const Bytes ad = {9, 9};
  const Bytes msg = {'t', 'i', 'p'};
  const Bytes ct = AeadEncrypt(key, 5, ad, msg);
  ASSERT_EQ(ct.size(), msg.size() + kAeadTagSize);
  auto ok = AeadDecrypt(key, 5, ad, ct);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, msg);
  for (size_t i = 0; i < ct.size(); ++i) {
    Bytes bad = ct;
    bad[i] ^= 0x01;
    EXPECT_EQ(AeadDecrypt(key, 5, ad, bad).status().code(), StatusCode::kCorruption) << i;
  }
  EXPECT_FALSE(AeadDecrypt(key, 6, ad, ct).ok());
  EXPECT_FALSE(AeadDecrypt(key, 5, Bytes{9, 8}, ct).ok());
  EXPECT_EQ(AeadDecrypt(key, 5, ad, ByteSpan(ct).first(15)).status().code(),
            StatusCode::kCorruption);
}

TEST(AeadTest, EmptyPlaintextIsJustATag) {
  const Key32 key{};
  const Bytes ct = AeadEncrypt(key, 0, {}, {});
  EXPECT_EQ(ct.size(), kAeadTagSize);
  auto pt = AeadDecrypt(key, 0, {}, ct);
  ASSERT_TRUE(pt.ok());
  EXPECT_TRUE(pt->empty());
}

// ---- Keys and ECDH ----

TEST(KeyTest, SecretKeyRange) {
  EXPECT_FALSE(SecretKey::FromBytes(Bytes(32, 0)).ok());
  // The curve order n itself and n+1 are out of range; n-1 is the largest key.
  EXPECT_FALSE(
      SecretKey::FromBytes(Hex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"))
          .ok());
  EXPECT_TRUE(
      SecretKey::FromBytes(Hex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140"))
          .ok());
  EXPECT_FALSE(SecretKey::FromBytes(Bytes(31, 1)).ok());
}

TEST(KeyTest, PublicKeyDerivationAndParsing) {
  // BOLT 8: ls.priv = 0x11.. gives ls.pub = 0x034f35...
  auto sk = SecretKey::FromBytes(Bytes(32, 0x11));
  ASSERT_TRUE(sk.ok());
  KeyPair kp = KeyPair::FromSecret(*sk);
  EXPECT_EQ(kp.public_key().Hex(),
            "034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa");
  auto parsed = PublicKey::FromHex(kp.public_key().Hex());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, kp.public_key());
  EXPECT_EQ(HexEncode(kp.XOnly()),
            "4f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa");
  // Wrong prefix, wrong length, not on the curve, uncompressed: all rejected.
  EXPECT_FALSE(
      PublicKey::FromHex("044f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa")
          .ok());
  EXPECT_FALSE(PublicKey::FromHex("034f35").ok());
  EXPECT_FALSE(
      PublicKey::FromHex("02eefdea4cdb677750a420fee807eacf21eb9898ae79b9768766e4faa04a2d4a34")
          .ok());
  EXPECT_FALSE(PublicKey::FromHex("zz").ok());
}

TEST(KeyTest, EcdhMatchesBolt8AndIsSymmetric) {
  // BOLT 8 act one: ECDH(e.priv = 0x12.., rs) = ss.
  auto e = SecretKey::FromBytes(Bytes(32, 0x12));
  auto rs =
      PublicKey::FromHex("028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7");
  ASSERT_TRUE(e.ok() && rs.ok());
  EXPECT_EQ(HexEncode(Ecdh(*e, *rs)),
            "1e2fb3c8fe8fb9f262f649f64d26ecf0f2c0a805a767cf02dc2d77a6ef1fdcc3");
  FixedRandom rng(1);
  KeyPair a = KeyPair::Generate(rng), b = KeyPair::Generate(rng);
  EXPECT_EQ(Ecdh(a.secret(), b.public_key()), Ecdh(b.secret(), a.public_key()));
  EXPECT_NE(Ecdh(a.secret(), b.public_key()), Ecdh(a.secret(), a.public_key()));
}

TEST(KeyTest, GeneratedKeysDiffer) {
  KeyPair a = KeyPair::Generate(SystemRng()), b = KeyPair::Generate(SystemRng());
  EXPECT_NE(a.public_key(), b.public_key());
}

// ---- Key files ----

mode_t ModeOf(const std::filesystem::path& p) {
  struct stat st;
  EXPECT_EQ(::stat(p.c_str(), &st), 0);
  return st.st_mode & 07777;
}

void WriteText(const std::filesystem::path& p, const std::string& text, mode_t mode) {
  std::ofstream(p) << text;
  ASSERT_EQ(::chmod(p.c_str(), mode), 0);
}

TEST(KeyFileTest, RoundTripWithMode0600) {
  testing::TempDir dir;
  const auto path = dir.path() / "node.key";
  FixedRandom rng(42);
  const SecretKey sk = SecretKey::Generate(rng);
  ASSERT_TRUE(SaveKeyFile(path, sk).ok());
  EXPECT_EQ(ModeOf(path), 0600u);
  std::ifstream in(path);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, HexEncode(sk.bytes()) + "\n");
  auto loaded = LoadKeyFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->bytes(), sk.bytes());
  // No temporary file is left behind.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);
}

TEST(KeyFileTest, RefusesToOverwrite) {
  testing::TempDir dir;
  const auto path = dir.path() / "node.key";
  FixedRandom rng(1);
  const SecretKey first = SecretKey::Generate(rng), second = SecretKey::Generate(rng);
  ASSERT_TRUE(SaveKeyFile(path, first).ok());
  Status s = SaveKeyFile(path, second);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << s.ToString();
  auto loaded = LoadKeyFile(path);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->bytes(), first.bytes());
}

TEST(KeyFileTest, RefusesGroupOrOtherPermissions) {
  testing::TempDir dir;
  const auto path = dir.path() / "node.key";
  ASSERT_TRUE(SaveKeyFile(path, SecretKey::Generate(SystemRng())).ok());
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  auto loaded = LoadKeyFile(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(loaded.status().message().find(path.string()), std::string::npos);
  EXPECT_NE(loaded.status().message().find("0644"), std::string::npos);
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  EXPECT_EQ(LoadKeyFile(path).status().code(), StatusCode::kPermissionDenied);
  ASSERT_EQ(::chmod(path.c_str(), 0602), 0);
  EXPECT_EQ(LoadKeyFile(path).status().code(), StatusCode::kPermissionDenied);
  ASSERT_EQ(::chmod(path.c_str(), 0400), 0);
  EXPECT_TRUE(LoadKeyFile(path).ok());
}

TEST(KeyFileTest, RefusesMalformedContent) {
  testing::TempDir dir;
  const std::string valid = std::string(63, '1') + "2";
  const std::pair<const char*, std::string> cases[] = {
      {"garbage", "this is not a key\n"},        {"empty", ""},
      {"short", std::string(62, 'a') + "\n"},    {"long", valid + "00\n"},
      {"non-hex", std::string(63, '1') + "g\n"}, {"two-newlines", valid + "\n\n"},
      {"zero-key", std::string(64, '0') + "\n"}, {"over-order", std::string(64, 'f') + "\n"},
  };
  for (const auto& [name, text] : cases) {
    const auto path = dir.path() / name;
    WriteText(path, text, 0600);
    auto loaded = LoadKeyFile(path);
    EXPECT_EQ(loaded.status().code(), StatusCode::kCorruption) << name;
  }
  // Without the trailing newline (hand-written files) the key is accepted.
  WriteText(dir.path() / "no-newline", valid, 0600);
  EXPECT_TRUE(LoadKeyFile(dir.path() / "no-newline").ok());
}

TEST(KeyFileTest, RefusesSymlinksAndDirectories) {
  testing::TempDir dir;
  const auto target = dir.path() / "real.key";
  ASSERT_TRUE(SaveKeyFile(target, SecretKey::Generate(SystemRng())).ok());
  std::filesystem::create_symlink(target, dir.path() / "link.key");
  EXPECT_EQ(LoadKeyFile(dir.path() / "link.key").status().code(), StatusCode::kInvalidArgument);
  std::filesystem::create_directory(dir.path() / "dir.key");
  ASSERT_EQ(::chmod((dir.path() / "dir.key").c_str(), 0700), 0);
  EXPECT_EQ(LoadKeyFile(dir.path() / "dir.key").status().code(), StatusCode::kInvalidArgument);
  // Saving onto an existing symlink or directory is refused too.
  EXPECT_EQ(SaveKeyFile(dir.path() / "link.key", SecretKey::Generate(SystemRng())).code(),
            StatusCode::kAlreadyExists);
}

TEST(KeyFileTest, MissingFileIsNotFound) {
  testing::TempDir dir;
  EXPECT_EQ(LoadKeyFile(dir.path() / "absent.key").status().code(), StatusCode::kNotFound);
}

TEST(KeyFileTest, SaveIntoMissingDirectoryFails) {
  testing::TempDir dir;
  Status s = SaveKeyFile(dir.path() / "no" / "such" / "node.key", SecretKey::Generate(SystemRng()));
  EXPECT_EQ(s.code(), StatusCode::kIOError) << s.ToString();
}

TEST(KeyFileTest, LoadOrCreateIsIdempotent) {
  testing::TempDir dir;
  const auto path = dir.path() / "node.key";
  FixedRandom rng(3);
  auto first = LoadOrCreateKeyFile(path, rng);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(ModeOf(path), 0600u);
  auto second = LoadOrCreateKeyFile(path, rng);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->public_key(), first->public_key());
  // A refused file is reported, never replaced by a fresh key.
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  EXPECT_EQ(LoadOrCreateKeyFile(path, rng).status().code(), StatusCode::kPermissionDenied);
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  auto third = LoadOrCreateKeyFile(path, rng);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->public_key(), first->public_key());
}

}  // namespace
}  // namespace tipd::crypto
