#include "util/bytes.h"

#include <gtest/gtest.h>

namespace tipd {
namespace {

TEST(Hex, RoundTrip) {
  Bytes b = {0x00, 0x01, 0xab, 0xff};
  EXPECT_EQ(HexEncode(b), "0001abff");
  auto d = HexDecode("0001ABff");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, b);
}

TEST(Hex, RejectsOddLengthAndBadChars) {
  EXPECT_EQ(HexDecode("abc").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HexDecode("zz").status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE((HexDecodeFixed<2>("aabbcc").ok()));
}

TEST(ByteWriterReader, BigEndianRoundTrip) {
  ByteWriter w;
  w.U8(1);
  w.U16(0x0203);
  w.U32(0x04050607);
  w.U64(0x08090a0b0c0d0e0fULL);
  w.Str8("hi");
  w.Str16("there");
  Bytes expect = {1,  2,  3, 4,   5,   6, 7, 8,   9,   10,  11,  12, 13,
                  14, 15, 2, 'h', 'i', 0, 5, 't', 'h', 'e', 'r', 'e'};
  EXPECT_EQ(w.bytes(), expect);
  ByteReader r(w.bytes());
  uint8_t a;
  uint16_t b;
  uint32_t c;
  uint64_t d;
  std::string s1, s2;
  ASSERT_TRUE(r.U8(&a) && r.U16(&b) && r.U32(&c) && r.U64(&d) && r.Str8(&s1) && r.Str16(&s2));
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 0x0203);
  EXPECT_EQ(c, 0x04050607u);
  EXPECT_EQ(d, 0x08090a0b0c0d0e0fULL);
  EXPECT_EQ(s1, "hi");
  EXPECT_EQ(s2, "there");
  EXPECT_TRUE(r.done());
  EXPECT_FALSE(r.U8(&a));
}

TEST(ByteReader, TruncatedLengthPrefixFails) {
  Bytes b = {0, 10, 'a'};
  ByteReader r(b);
  std::string s;
  EXPECT_FALSE(r.Str16(&s));
}

TEST(CheckedMath, DetectsOverflow) {
  uint64_t out;
  EXPECT_TRUE(CheckedAdd(1, 2, &out));
  EXPECT_EQ(out, 3u);
  EXPECT_FALSE(CheckedAdd(UINT64_MAX, 1, &out));
  EXPECT_FALSE(CheckedSub(1, 2, &out));
}

TEST(Utf8, AcceptsValidRejectsInvalid) {
  EXPECT_TRUE(IsValidUtf8("hello"));
  EXPECT_TRUE(IsValidUtf8("gr\xC3\xBC\xC3\x9F \xF0\x9F\x8E\x89"));  // grüß 🎉
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));                            // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));                        // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));                    // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));                            // truncated
  EXPECT_FALSE(IsValidUtf8("\xFF"));
}

TEST(Status, ToStringNamesCode) {
  Status s = Status::Corruption("bad record at key x");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.ToString(), "CORRUPTION: bad record at key x");
  EXPECT_EQ(Status::Ok().ToString(), "OK");
}

}  // namespace
}  // namespace tipd
