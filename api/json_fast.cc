// See json_fast.h. The output rules are protobuf 3.21's JSON printer's with
// ToJson's options (api/rpc_server.cc): proto field names; fields in
// declaration order; scalars, enums, strings, bytes and repeated fields always
// printed (repeated as [] when empty), a message field or a oneof member only
// when set; 64-bit integers as quoted decimals; enums by name (an unknown
// number as a number); bytes in standard padded base64; strings escaped with
// protobuf's table (json_escaping.cc: C0 and C1 controls, '"', '\\', '<',
// '>', DEL and a list of invisible or formatting code points).

#include "api/json_fast.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tipd::api {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

constexpr char kHex[] = "0123456789abcdef";

void AppendU16(uint32_t unit, std::string* out) {
  const char esc[6] = {'\\',
                       'u',
                       kHex[(unit >> 12) & 0xf],
                       kHex[(unit >> 8) & 0xf],
                       kHex[(unit >> 4) & 0xf],
                       kHex[unit & 0xf]};
  out->append(esc, 6);
}

// The multi-byte UTF-8 sequence at s[i] (s[i] >= 0x80), decoded strictly:
// no overlong form, no surrogate, nothing above U+10FFFF. Returns its length
// and sets *cp, or returns 0 if it is not valid.
size_t DecodeMultiByte(std::string_view s, size_t i, uint32_t* cp) {
  const uint8_t b = static_cast<uint8_t>(s[i]);
  size_t len;
  uint32_t min;
  if (b >= 0xc2 && b <= 0xdf) {
    len = 2, *cp = b & 0x1f, min = 0x80;
  } else if (b >= 0xe0 && b <= 0xef) {
    len = 3, *cp = b & 0x0f, min = 0x800;
  } else if (b >= 0xf0 && b <= 0xf4) {
    len = 4, *cp = b & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const uint8_t c = static_cast<uint8_t>(s[i + k]);
    if ((c & 0xc0) != 0x80) return 0;
    *cp = (*cp << 6) | (c & 0x3f);
  }
  if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff)) return 0;
  return len;
}

// Whether protobuf's printer escapes this code point (above 0x9f).
bool EscapedAbove9f(uint32_t cp) {
  switch (cp) {
    case 0xfeff:
    case 0xfff9:
    case 0xfffa:
    case 0xfffb:
    case 0x00ad:
    case 0x06dd:
    case 0x070f:
    case 0x17b4:
    case 0x17b5:
      return true;
    default:
      break;
  }
  return (cp >= 0x0600 && cp <= 0x0603) || (cp >= 0x200b && cp <= 0x200f) ||
         (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x2064) ||
         (cp >= 0x206a && cp <= 0x206f) || cp == 0xe0001 || (cp >= 0x1d173 && cp <= 0x1d17a) ||
         (cp >= 0xe0020 && cp <= 0xe007f);
}

// Appends `s` quoted and escaped; false if it is not valid UTF-8 (protobuf's
// printer refuses such a string: the caller falls back to it).
bool AppendString(std::string_view s, std::string* out) {
  out->push_back('"');
  size_t plain = 0;  // start of the run of bytes copied as they are
  size_t i = 0;
  const auto flush = [&](size_t end) {
    if (end > plain) out->append(s.data() + plain, end - plain);
  };
  while (i < s.size()) {
    const uint8_t b = static_cast<uint8_t>(s[i]);
    if (b >= 0x20 && b < 0x7f && b != '"' && b != '\\' && b != '<' && b != '>') {
      ++i;
      continue;
    }
    if (b < 0x80) {
      flush(i);
      switch (b) {
        case '"':
          out->append("\\\"");
          break;
        case '\\':
          out->append("\\\\");
          break;
        case '\b':
          out->append("\\b");
          break;
        case '\t':
          out->append("\\t");
          break;
        case '\n':
          out->append("\\n");
          break;
        case '\f':
          out->append("\\f");
          break;
        case '\r':
          out->append("\\r");
          break;
        default:
          AppendU16(b, out);  // other controls, '<', '>', DEL
      }
      plain = ++i;
      continue;
    }
    uint32_t cp;
    const size_t len = DecodeMultiByte(s, i, &cp);
    if (len == 0) return false;
    if (cp <= 0x9f || EscapedAbove9f(cp)) {
      flush(i);
      if (cp < 0x10000) {
        AppendU16(cp, out);
      } else {
        const uint32_t v = cp - 0x10000;
        AppendU16(0xd800 + (v >> 10), out);
        AppendU16(0xdc00 + (v & 0x3ff), out);
      }
      plain = i + len;
    }
    i += len;
  }
  flush(i);
  out->push_back('"');
  return true;
}

void AppendBase64(std::string_view in, std::string* out) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  out->push_back('"');
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(in[i]) << 16) |
                       (static_cast<uint8_t>(in[i + 1]) << 8) | static_cast<uint8_t>(in[i + 2]);
    const char q[4] = {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63],
                       kAlphabet[v & 63]};
    out->append(q, 4);
  }
  if (const size_t rest = in.size() - i; rest > 0) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    if (rest == 2) v |= static_cast<uint8_t>(in[i + 1]) << 8;
    const char q[4] = {kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63],
                       rest == 2 ? kAlphabet[(v >> 6) & 63] : '=', '='};
    out->append(q, 4);
  }
  out->push_back('"');
}

// `visiting` holds the types on the path from the top-level type: a type
// that contains itself is judged by its other fields.
bool ComputeSupport(const Descriptor* type, std::vector<const Descriptor*>* visiting) {
  // Well-known types have their own JSON forms.
  if (type->file()->package() == "google.protobuf") return false;
  if (std::find(visiting->begin(), visiting->end(), type) != visiting->end()) return true;
  visiting->push_back(type);
  bool ok = true;
  for (int i = 0; i < type->field_count() && ok; ++i) {
    const FieldDescriptor* f = type->field(i);
    if (f->is_map()) {
      ok = false;  // printed in the binary's (unspecified) entry order
      continue;
    }
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_DOUBLE:
      case FieldDescriptor::CPPTYPE_FLOAT:
        ok = false;  // protobuf's shortest-round-trip formatting
        break;
      case FieldDescriptor::CPPTYPE_MESSAGE:
        ok =
            f->type() != FieldDescriptor::TYPE_GROUP && ComputeSupport(f->message_type(), visiting);
        break;
      default:
        break;
    }
  }
  visiting->pop_back();
  return ok;
}

bool AppendValue(const Message& m, const Reflection* r, const FieldDescriptor* f, int index,
                 std::string* out);

bool AppendMessage(const Message& m, std::string* out) {
  const Descriptor* type = m.GetDescriptor();
  const Reflection* r = m.GetReflection();
  out->push_back('{');
  bool first = true;
  for (int i = 0; i < type->field_count(); ++i) {
    const FieldDescriptor* f = type->field(i);
    int count = 0;
    if (f->is_repeated()) {
      count = r->FieldSize(m, f);
    } else if ((f->containing_oneof() != nullptr ||
                f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) &&
               !r->HasField(m, f)) {
      continue;
    }
    if (!first) out->push_back(',');
    first = false;
    out->push_back('"');
    out->append(f->name());  // proto field names are [a-z0-9_]: nothing to escape
    out->append("\":");
    if (!f->is_repeated()) {
      if (!AppendValue(m, r, f, -1, out)) return false;
      continue;
    }
    out->push_back('[');
    for (int k = 0; k < count; ++k) {
      if (k > 0) out->push_back(',');
      if (!AppendValue(m, r, f, k, out)) return false;
    }
    out->push_back(']');
  }
  out->push_back('}');
  return true;
}

// One value of field `f`: the singular one (index < 0) or element `index`.
bool AppendValue(const Message& m, const Reflection* r, const FieldDescriptor* f, int index,
                 std::string* out) {
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      out->append(std::to_string(rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f)));
      return true;
    case FieldDescriptor::CPPTYPE_UINT32:
      out->append(std::to_string(rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f)));
      return true;
    case FieldDescriptor::CPPTYPE_INT64:
      out->push_back('"');
      out->append(std::to_string(rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f)));
      out->push_back('"');
      return true;
    case FieldDescriptor::CPPTYPE_UINT64:
      out->push_back('"');
      out->append(std::to_string(rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f)));
      out->push_back('"');
      return true;
    case FieldDescriptor::CPPTYPE_BOOL:
      out->append((rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false");
      return true;
    case FieldDescriptor::CPPTYPE_ENUM: {
      const int number = rep ? r->GetRepeatedEnumValue(m, f, index) : r->GetEnumValue(m, f);
      const EnumValueDescriptor* v = f->enum_type()->FindValueByNumber(number);
      if (v == nullptr) {
        out->append(std::to_string(number));
      } else {
        out->push_back('"');
        out->append(v->name());
        out->push_back('"');
      }
      return true;
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string scratch;
      const std::string& s = rep ? r->GetRepeatedStringReference(m, f, index, &scratch)
                                 : r->GetStringReference(m, f, &scratch);
      if (f->type() == FieldDescriptor::TYPE_BYTES) {
        AppendBase64(s, out);
        return true;
      }
      return AppendString(s, out);
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return AppendMessage(rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f), out);
    default:
      return false;
  }
}

}  // namespace

bool FastJsonSupports(const Descriptor* type) {
  static std::mutex mu;
  static std::unordered_map<const Descriptor*, bool> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(type); it != cache.end()) return it->second;
  std::vector<const Descriptor*> visiting;
  return cache[type] = ComputeSupport(type, &visiting);
}

bool FastToJson(const Message& message, std::string* out) {
  if (!FastJsonSupports(message.GetDescriptor())) return false;
  const size_t mark = out->size();
  if (AppendMessage(message, out)) return true;
  out->resize(mark);
  return false;
}

}  // namespace tipd::api

// ---------------------------------------------------------------------------
// The reader.

namespace tipd::api {
namespace {

class FastReader {
 public:
  explicit FastReader(std::string_view in) : in_(in) {}

  bool ReadDocument(Message* m) {
    if (!ReadObject(m, 0)) return false;
    SkipSpace();
    return pos_ == in_.size();
  }

 private:
  static constexpr int kMaxDepth = 32;

  void SkipSpace() {
    while (pos_ < in_.size()) {
      const char c = in_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
      ++pos_;
    }
  }

  bool Eat(char c) {
    SkipSpace();
    if (pos_ < in_.size() && in_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  bool Peek(char c) {
    SkipSpace();
    return pos_ < in_.size() && in_[pos_] == c;
  }

  static int HexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  bool ReadHex4(uint32_t* v) {
    if (pos_ + 4 > in_.size()) return false;
    *v = 0;
    for (int k = 0; k < 4; ++k) {
      const int d = HexDigit(in_[pos_++]);
      if (d < 0) return false;
      *v = (*v << 4) | static_cast<uint32_t>(d);
    }
    return true;
  }

  static void AppendCodePoint(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }

  // A JSON string: raw bytes must be valid UTF-8 without control
  // characters; escapes must be JSON's; a \u surrogate must be paired.
  bool ReadString(std::string* out) {
    SkipSpace();
    if (pos_ >= in_.size() || in_[pos_] != '"') return false;
    ++pos_;
    out->clear();
    size_t run = pos_;
    while (pos_ < in_.size()) {
      const uint8_t b = static_cast<uint8_t>(in_[pos_]);
      if (b == '"') {
        out->append(in_.data() + run, pos_ - run);
        ++pos_;
        return true;
      }
      if (b < 0x20) return false;
      if (b < 0x80 && b != '\\') {
        ++pos_;
        continue;
      }
      if (b >= 0x80) {
        uint32_t cp;
        const size_t len = DecodeMultiByte(in_, pos_, &cp);
        if (len == 0) return false;
        pos_ += len;
        continue;
      }
      // An escape.
      out->append(in_.data() + run, pos_ - run);
      if (++pos_ >= in_.size()) return false;
      const char e = in_[pos_++];
      switch (e) {
        case '"':
          out->push_back('"');
          break;
        case '\\':
          out->push_back('\\');
          break;
        case '/':
          out->push_back('/');
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp;
          if (!ReadHex4(&cp)) return false;
          if (cp >= 0xdc00 && cp <= 0xdfff) return false;  // a low surrogate first
          if (cp >= 0xd800 && cp <= 0xdbff) {
            uint32_t low;
            if (pos_ + 2 > in_.size() || in_[pos_] != '\\' || in_[pos_ + 1] != 'u') return false;
            pos_ += 2;
            if (!ReadHex4(&low) || low < 0xdc00 || low > 0xdfff) return false;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          AppendCodePoint(cp, out);
          break;
        }
        default:
          return false;
      }
      run = pos_;
    }
    return false;
  }

  // Plain decimal digits with an optional '-', no leading zero, up to 20
  // digits, bare or quoted; the value must fit the field's type. Bare
  // numbers are kept to 2^53 (protobuf reads larger ones through a double).
  bool ReadInteger(bool is_signed, int64_t min, uint64_t max, uint64_t* magnitude, bool* negative) {
    SkipSpace();
    const bool quoted = pos_ < in_.size() && in_[pos_] == '"';
    if (quoted) ++pos_;
    *negative = pos_ < in_.size() && in_[pos_] == '-';
    if (*negative) {
      if (!is_signed) return false;
      ++pos_;
    }
    const size_t start = pos_;
    uint64_t v = 0;
    while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') {
      const uint64_t d = static_cast<uint64_t>(in_[pos_] - '0');
      if (v > (UINT64_MAX - d) / 10) return false;
      v = v * 10 + d;
      ++pos_;
    }
    const size_t digits = pos_ - start;
    if (digits == 0 || (digits > 1 && in_[start] == '0')) return false;
    if (*negative && v == 0) return false;  // "-0": let protobuf decide
    if (quoted) {
      if (pos_ >= in_.size() || in_[pos_] != '"') return false;
      ++pos_;
    } else {
      if (pos_ < in_.size()) {
        const char c = in_[pos_];
        if (c == '.' || c == 'e' || c == 'E') return false;
      }
      if (v > (uint64_t{1} << 53)) return false;
    }
    if (*negative) {
      if (v > static_cast<uint64_t>(-(min + 1)) + 1) return false;
    } else if (v > max) {
      return false;
    }
    *magnitude = v;
    return true;
  }

  const FieldDescriptor* FindField(const Descriptor* type, std::string_view name) {
    for (int i = 0; i < type->field_count(); ++i) {
      const FieldDescriptor* f = type->field(i);
      if (f->name() == name || f->json_name() == name) return f;
    }
    return nullptr;
  }

  bool ReadScalar(Message* m, const Reflection* r, const FieldDescriptor* f, bool add) {
    uint64_t v = 0;
    bool neg = false;
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING: {
        if (f->type() == FieldDescriptor::TYPE_BYTES) return false;
        std::string s;
        if (!ReadString(&s)) return false;
        add ? r->AddString(m, f, std::move(s)) : r->SetString(m, f, std::move(s));
        return true;
      }
      case FieldDescriptor::CPPTYPE_UINT64:
        if (!ReadInteger(false, 0, UINT64_MAX, &v, &neg)) return false;
        add ? r->AddUInt64(m, f, v) : r->SetUInt64(m, f, v);
        return true;
      case FieldDescriptor::CPPTYPE_UINT32:
        if (!ReadInteger(false, 0, UINT32_MAX, &v, &neg)) return false;
        add ? r->AddUInt32(m, f, static_cast<uint32_t>(v))
            : r->SetUInt32(m, f, static_cast<uint32_t>(v));
        return true;
      case FieldDescriptor::CPPTYPE_INT64: {
        if (!ReadInteger(true, INT64_MIN, INT64_MAX, &v, &neg)) return false;
        const int64_t x = neg ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
        add ? r->AddInt64(m, f, x) : r->SetInt64(m, f, x);
        return true;
      }
      case FieldDescriptor::CPPTYPE_INT32: {
        if (!ReadInteger(true, INT32_MIN, INT32_MAX, &v, &neg)) return false;
        const int32_t x =
            neg ? static_cast<int32_t>(0 - static_cast<int64_t>(v)) : static_cast<int32_t>(v);
        add ? r->AddInt32(m, f, x) : r->SetInt32(m, f, x);
        return true;
      }
      case FieldDescriptor::CPPTYPE_BOOL: {
        SkipSpace();
        bool b;
        if (in_.substr(pos_, 4) == "true") {
          b = true, pos_ += 4;
        } else if (in_.substr(pos_, 5) == "false") {
          b = false, pos_ += 5;
        } else {
          return false;
        }
        add ? r->AddBool(m, f, b) : r->SetBool(m, f, b);
        return true;
      }
      default:
        return false;  // enums, floats, doubles
    }
  }

  static void AppendVarint(uint64_t v, std::string* out) {
    while (v >= 0x80) {
      out->push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out->push_back(static_cast<char>(v));
  }

  // map<string, string> only. The entries are merged from their wire form
  // through the generated parser, as protobuf's own JSON parser does, not
  // through map reflection (whose repeated-field view crashed in the
  // ThreadSanitizer build, where the protobuf headers and the uninstrumented
  // library disagree).
  bool ReadMap(Message* m, const FieldDescriptor* f) {
    const Descriptor* entry = f->message_type();
    const FieldDescriptor* kf = entry->map_key();
    const FieldDescriptor* vf = entry->map_value();
    if (kf->type() != FieldDescriptor::TYPE_STRING || vf->type() != FieldDescriptor::TYPE_STRING ||
        kf->number() != 1 || vf->number() != 2) {
      return false;
    }
    if (!Eat('{')) return false;
    if (Eat('}')) return true;
    std::vector<std::string> keys;
    std::string wire;
    do {
      std::string k, v;
      if (!ReadString(&k) || !Eat(':') || !ReadString(&v)) return false;
      if (std::find(keys.begin(), keys.end(), k) != keys.end()) return false;
      std::string e;
      e.push_back(0x0a);  // field 1, length-delimited
      AppendVarint(k.size(), &e);
      e += k;
      e.push_back(0x12);  // field 2, length-delimited
      AppendVarint(v.size(), &e);
      e += v;
      AppendVarint((static_cast<uint64_t>(f->number()) << 3) | 2, &wire);
      AppendVarint(e.size(), &wire);
      wire += e;
      keys.push_back(std::move(k));
    } while (Eat(','));
    if (!Eat('}')) return false;
    return m->MergeFromString(wire);
  }

  bool ReadField(Message* m, const Reflection* r, const FieldDescriptor* f, int depth) {
    if (f->is_map()) return ReadMap(m, f);
    const bool message = f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
    if (message && f->type() == FieldDescriptor::TYPE_GROUP) return false;
    if (message && f->message_type()->file()->package() == "google.protobuf") return false;
    if (!f->is_repeated()) {
      return message ? ReadObject(r->MutableMessage(m, f), depth + 1) : ReadScalar(m, r, f, false);
    }
    if (!Eat('[')) return false;
    if (Eat(']')) return true;
    do {
      const bool ok =
          message ? ReadObject(r->AddMessage(m, f), depth + 1) : ReadScalar(m, r, f, true);
      if (!ok) return false;
    } while (Eat(','));
    return Eat(']');
  }

  bool ReadObject(Message* m, int depth) {
    if (depth > kMaxDepth || !Eat('{')) return false;
    if (Eat('}')) return true;
    const Descriptor* type = m->GetDescriptor();
    const Reflection* r = m->GetReflection();
    uint64_t seen_small = 0;  // fields 0..63 by index
    std::vector<const FieldDescriptor*> seen_large;
    std::string key;
    do {
      if (!ReadString(&key) || !Eat(':')) return false;
      if (Peek('n')) return false;  // null
      const FieldDescriptor* f = FindField(type, key);
      if (f == nullptr || f->containing_oneof() != nullptr) return false;
      const int index = f->index();
      if (index < 64) {
        if (seen_small & (uint64_t{1} << index)) return false;
        seen_small |= uint64_t{1} << index;
      } else {
        if (std::find(seen_large.begin(), seen_large.end(), f) != seen_large.end()) return false;
        seen_large.push_back(f);
      }
      if (!ReadField(m, r, f, depth)) return false;
    } while (Eat(','));
    return Eat('}');
  }

  std::string_view in_;
  size_t pos_ = 0;
};

}  // namespace

bool FastFromJson(std::string_view json, Message* out) {
  out->Clear();
  FastReader reader(json);
  if (reader.ReadDocument(out)) return true;
  out->Clear();
  return false;
}

}  // namespace tipd::api
