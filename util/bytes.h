// Byte strings, hex, and the big-endian writer/reader behind every canonical
// (signed) encoding. Protobuf bytes are never signed; these are.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace tipd {

using Bytes = std::vector<uint8_t>;
using ByteSpan = std::span<const uint8_t>;
using Hash32 = std::array<uint8_t, 32>;

std::string HexEncode(ByteSpan data);
// Accepts upper- or lower-case hex of even length.
Result<Bytes> HexDecode(std::string_view hex);
// Decodes exactly N bytes of hex.
template <size_t N>
Result<std::array<uint8_t, N>> HexDecodeFixed(std::string_view hex) {
  auto b = HexDecode(hex);
  if (!b.ok()) return b.status();
  if (b->size() != N) {
    return Status::InvalidArgument("expected " + std::to_string(N) + " bytes of hex, got " +
                                   std::to_string(b->size()));
  }
  std::array<uint8_t, N> out;
  for (size_t i = 0; i < N; ++i) out[i] = (*b)[i];
  return out;
}

inline ByteSpan AsSpan(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
inline std::string_view AsStringView(ByteSpan b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// Appends fixed-width big-endian integers and length-prefixed fields.
class ByteWriter {
 public:
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v) {
    U8(static_cast<uint8_t>(v >> 8));
    U8(static_cast<uint8_t>(v));
  }
  void U32(uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) U8(static_cast<uint8_t>(v >> s));
  }
  void U64(uint64_t v) {
    for (int s = 56; s >= 0; s -= 8) U8(static_cast<uint8_t>(v >> s));
  }
  void Raw(ByteSpan b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void Raw(std::string_view s) { Raw(AsSpan(s)); }
  // REQUIRES: b.size() <= 255 / 65535 (callers validate lengths first).
  void Str8(std::string_view s) {
    U8(static_cast<uint8_t>(s.size()));
    Raw(s);
  }
  void Str16(std::string_view s) {
    U16(static_cast<uint16_t>(s.size()));
    Raw(s);
  }
  const Bytes& bytes() const { return out_; }
  Bytes Take() { return std::move(out_); }

 private:
  Bytes out_;
};

// Reads what ByteWriter writes; every read is bounds-checked.
class ByteReader {
 public:
  explicit ByteReader(ByteSpan in) : in_(in) {}
  bool U8(uint8_t* v);
  bool U16(uint16_t* v);
  bool U32(uint32_t* v);
  bool U64(uint64_t* v);
  bool Raw(size_t n, ByteSpan* out);
  bool Str8(std::string* out);
  bool Str16(std::string* out);
  size_t remaining() const { return in_.size() - pos_; }
  bool done() const { return pos_ == in_.size(); }

 private:
  ByteSpan in_;
  size_t pos_ = 0;
};

// Overflow-checked arithmetic on amounts: false instead of wrapping.
inline bool CheckedAdd(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}
inline bool CheckedSub(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_sub_overflow(a, b, out);
}

// True if `s` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool IsValidUtf8(std::string_view s);

}  // namespace tipd
