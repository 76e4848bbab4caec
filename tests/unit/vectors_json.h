// Reading the JSON vector files of tests/vectors/ (written by gen_vectors.py,
// an implementation independent of this code) in the unit tests. The files
// keep every integer as a decimal string and every byte string as hex, so a
// google.protobuf.Struct (doubles for numbers) loses nothing.
#pragma once

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include "util/bytes.h"

namespace tipd::testing::vectors {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

inline Struct LoadVectors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream text;
  text << in.rdbuf();
  Struct out;
  auto st = google::protobuf::util::JsonStringToMessage(text.str(), &out);
  EXPECT_TRUE(st.ok()) << path << ": " << st.ToString();
  return out;
}

inline const Value& Get(const Struct& s, const std::string& key) {
  static const Value kNull;
  auto it = s.fields().find(key);
  if (it == s.fields().end()) {
    ADD_FAILURE() << "vector field missing: " << key;
    return kNull;
  }
  return it->second;
}

inline bool Has(const Struct& s, const std::string& key) {
  auto it = s.fields().find(key);
  return it != s.fields().end() && it->second.kind_case() != Value::kNullValue;
}

inline const Struct& Obj(const Struct& s, const std::string& key) {
  return Get(s, key).struct_value();
}

inline const ListValue& List(const Struct& s, const std::string& key) {
  return Get(s, key).list_value();
}

inline std::string Text(const Struct& s, const std::string& key) {
  return Get(s, key).string_value();
}

// A decimal string (the files never use JSON numbers for u64 values).
inline uint64_t U64(const Struct& s, const std::string& key) {
  const std::string v = Text(s, key);
  EXPECT_FALSE(v.empty()) << key;
  return v.empty() ? 0 : std::stoull(v);
}

// Hex as raw bytes in a std::string (protobuf `bytes` fields).
inline std::string Raw(const Struct& s, const std::string& key) {
  auto b = HexDecode(Text(s, key));
  EXPECT_TRUE(b.ok()) << key;
  return b.ok() ? std::string(b->begin(), b->end()) : std::string();
}

template <size_t N>
std::array<uint8_t, N> Fixed(const Struct& s, const std::string& key) {
  auto b = HexDecodeFixed<N>(Text(s, key));
  EXPECT_TRUE(b.ok()) << key;
  return b.ok() ? *b : std::array<uint8_t, N>{};
}

inline std::string Hex(ByteSpan b) { return HexEncode(b); }
inline std::string Hex(const std::string& b) {
  return HexEncode(ByteSpan(reinterpret_cast<const uint8_t*>(b.data()), b.size()));
}

}  // namespace tipd::testing::vectors
