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
  const char esc[6] = {'\\', 'u', kHex[(unit >> 12) & 0xf], kHex[(unit >> 8) & 0xf],
                       kHex[(unit >> 4) & 0xf], kHex[unit & 0xf]};
  out->append(esc, 6);
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
    // A multi-byte sequence: decode it strictly (no overlong forms, no
    // surrogates, nothing above U+10FFFF).
    size_t len;
    uint32_t cp;
    uint32_t min;
    if (b >= 0xc2 && b <= 0xdf) {
      len = 2, cp = b & 0x1f, min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
      len = 3, cp = b & 0x0f, min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
      len = 4, cp = b & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const uint8_t c = static_cast<uint8_t>(s[i + k]);
      if ((c & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
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
        ok = f->type() != FieldDescriptor::TYPE_GROUP && ComputeSupport(f->message_type(), visiting);
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
