#include "util/bytes.h"

namespace tipd {

std::string HexEncode(ByteSpan data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (uint8_t b : data) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

static int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<Bytes> HexDecode(std::string_view hex) {
  if (hex.size() % 2 != 0) return Status::InvalidArgument("hex string has odd length");
  Bytes out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return Status::InvalidArgument("invalid hex character at position " + std::to_string(2 * i));
    }
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return out;
}

bool ByteReader::U8(uint8_t* v) {
  if (remaining() < 1) return false;
  *v = in_[pos_++];
  return true;
}
bool ByteReader::U16(uint16_t* v) {
  if (remaining() < 2) return false;
  *v = static_cast<uint16_t>(in_[pos_] << 8 | in_[pos_ + 1]);
  pos_ += 2;
  return true;
}
bool ByteReader::U32(uint32_t* v) {
  if (remaining() < 4) return false;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r = r << 8 | in_[pos_++];
  *v = r;
  return true;
}
bool ByteReader::U64(uint64_t* v) {
  if (remaining() < 8) return false;
  uint64_t r = 0;
  for (int i = 0; i < 8; ++i) r = r << 8 | in_[pos_++];
  *v = r;
  return true;
}
bool ByteReader::Raw(size_t n, ByteSpan* out) {
  if (remaining() < n) return false;
  *out = in_.subspan(pos_, n);
  pos_ += n;
  return true;
}
bool ByteReader::Str8(std::string* out) {
  uint8_t n;
  ByteSpan b;
  if (!U8(&n) || !Raw(n, &b)) return false;
  out->assign(AsStringView(b));
  return true;
}
bool ByteReader::Str16(std::string* out) {
  uint16_t n;
  ByteSpan b;
  if (!U16(&n) || !Raw(n, &b)) return false;
  out->assign(AsStringView(b));
  return true;
}

bool IsValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = cp << 6 | (p[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) {
      return false;  // overlong
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

}  // namespace tipd
