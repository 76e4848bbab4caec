// FastToJson (api/json_fast.h) against protobuf's own printer: byte-equal
// output for every API message type filled at random, and for every Unicode
// code point in a string; what it does not render it leaves to protobuf.

#include "api/json_fast.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "api/rpc_server.h"
#include "tests/support/test_support.h"
#include "tipd/api.pb.h"
#include "tipd/storage.pb.h"

namespace tipd::api {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

std::string ProtobufJson(const Message& m) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  std::string out;
  EXPECT_TRUE(google::protobuf::util::MessageToJsonString(m, &out, opts).ok());
  return out;
}

void AppendUtf8(uint32_t cp, std::string* out) {
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

TEST(FastJson, EveryCodePointIsWrittenAsProtobufWritesIt) {
  // 64 code points per string, so that a difference names its neighbourhood.
  for (uint32_t start = 0; start <= 0x10ffff; start += 64) {
    v1::ApiError m;
    std::string s;
    for (uint32_t cp = start; cp < start + 64 && cp <= 0x10ffff; ++cp) {
      if (cp >= 0xd800 && cp <= 0xdfff) continue;
      AppendUtf8(cp, &s);
    }
    m.set_message(s);
    std::string fast;
    ASSERT_TRUE(FastToJson(m, &fast)) << "code points from U+" << std::hex << start;
    ASSERT_EQ(fast, ProtobufJson(m)) << "code points from U+" << std::hex << start;
  }
}

TEST(FastJson, InvalidUtf8IsLeftToProtobufAndNothingIsWritten) {
  const std::vector<std::string> bad = {
      "\x80",              // a continuation byte alone
      "a\xc3",             // cut short
      "\xc0\x80",          // overlong NUL
      "\xe0\x80\xaf",      // overlong '/'
      "\xed\xa0\x80",      // an encoded surrogate
      "\xf4\x90\x80\x80",  // above U+10FFFF
      "\xff",
  };
  for (const std::string& s : bad) {
    v1::ApiError m;
    m.set_message("ok " + s);
    std::string out = "kept";
    EXPECT_FALSE(FastToJson(m, &out)) << ::testing::PrintToString(s);
    EXPECT_EQ(out, "kept");
    EXPECT_EQ(ToJson(m), ProtobufJson(m)) << "ToJson falls back to protobuf's printer";
  }
}

TEST(FastJson, TypesWithMapsOrDoublesAreLeftToProtobuf) {
  EXPECT_FALSE(FastJsonSupports(v1::TipRequest::descriptor()));  // map<string, string>
  v1::TipRequest m;
  (*m.mutable_metadata())["a"] = "b";
  std::string out;
  EXPECT_FALSE(FastToJson(m, &out));
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(ToJson(m), ProtobufJson(m));
  // The answers of the tip routes are rendered directly.
  EXPECT_TRUE(FastJsonSupports(v1::TipResponse::descriptor()));
  EXPECT_TRUE(FastJsonSupports(v1::TipBatchResponse::descriptor()));
  EXPECT_TRUE(FastJsonSupports(v1::TipBatchCompactResponse::descriptor()));
}

class RandomFill {
 public:
  explicit RandomFill(uint64_t seed) : rng_(seed) {}

  void Fill(Message* m, int depth) {
    const Descriptor* d = m->GetDescriptor();
    const Reflection* r = m->GetReflection();
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (Chance(3)) continue;  // one field in three stays unset
      if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && depth >= 3) continue;
      if (f->is_repeated()) {
        const int n = static_cast<int>(rng_() % 4);
        for (int k = 0; k < n; ++k) Add(m, r, f, depth);
      } else {
        Set(m, r, f, depth);
      }
    }
  }

 private:
  bool Chance(int one_in) { return rng_() % static_cast<uint64_t>(one_in) == 0; }

  std::string Text() {
    static const std::vector<uint32_t> kPool = {
        'a', 'Z', '0', ' ', '"', '\\', '/', '<', '>', '&', '\'', '\n', '\t', 0x01, 0x1f, 0x7f,
        0x80, 0x9f, 0xa0, 0xad, 0xe9, 0x600, 0x6dd, 0x200b, 0x2028, 0x20ac, 0xfeff, 0xfffd,
        0x1d173, 0x1f600, 0xe0001, 0xe0041, 0x10ffff};
    std::string s;
    const int n = static_cast<int>(rng_() % 12);
    for (int i = 0; i < n; ++i) AppendUtf8(kPool[rng_() % kPool.size()], &s);
    if (Chance(5)) s.clear();
    return s;
  }

  std::string Bytes() {
    std::string s(rng_() % 40, '\0');
    for (char& c : s) c = static_cast<char>(rng_());
    return s;
  }

  template <typename T>
  T Int() {
    switch (rng_() % 4) {
      case 0:
        return 0;
      case 1:
        return std::numeric_limits<T>::max();
      case 2:
        return std::numeric_limits<T>::min();
      default:
        return static_cast<T>(rng_());
    }
  }

  int EnumNumber(const FieldDescriptor* f) {
    const auto* e = f->enum_type();
    if (Chance(6)) return 1000 + static_cast<int>(rng_() % 10);  // unknown to the enum
    return e->value(static_cast<int>(rng_() % static_cast<uint64_t>(e->value_count())))->number();
  }

  void Set(Message* m, const Reflection* r, const FieldDescriptor* f, int depth) {
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        return r->SetInt32(m, f, Int<int32_t>());
      case FieldDescriptor::CPPTYPE_UINT32:
        return r->SetUInt32(m, f, Int<uint32_t>());
      case FieldDescriptor::CPPTYPE_INT64:
        return r->SetInt64(m, f, Int<int64_t>());
      case FieldDescriptor::CPPTYPE_UINT64:
        return r->SetUInt64(m, f, Int<uint64_t>());
      case FieldDescriptor::CPPTYPE_BOOL:
        return r->SetBool(m, f, Chance(2));
      case FieldDescriptor::CPPTYPE_ENUM:
        return r->SetEnumValue(m, f, EnumNumber(f));
      case FieldDescriptor::CPPTYPE_STRING:
        return r->SetString(m, f, f->type() == FieldDescriptor::TYPE_BYTES ? Bytes() : Text());
      case FieldDescriptor::CPPTYPE_MESSAGE:
        return Fill(r->MutableMessage(m, f), depth + 1);
      default:
        return;  // doubles and floats: such types are not rendered directly
    }
  }

  void Add(Message* m, const Reflection* r, const FieldDescriptor* f, int depth) {
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        return r->AddInt32(m, f, Int<int32_t>());
      case FieldDescriptor::CPPTYPE_UINT32:
        return r->AddUInt32(m, f, Int<uint32_t>());
      case FieldDescriptor::CPPTYPE_INT64:
        return r->AddInt64(m, f, Int<int64_t>());
      case FieldDescriptor::CPPTYPE_UINT64:
        return r->AddUInt64(m, f, Int<uint64_t>());
      case FieldDescriptor::CPPTYPE_BOOL:
        return r->AddBool(m, f, Chance(2));
      case FieldDescriptor::CPPTYPE_ENUM:
        return r->AddEnumValue(m, f, EnumNumber(f));
      case FieldDescriptor::CPPTYPE_STRING:
        return r->AddString(m, f, f->type() == FieldDescriptor::TYPE_BYTES ? Bytes() : Text());
      case FieldDescriptor::CPPTYPE_MESSAGE:
        return Fill(r->AddMessage(m, f), depth + 1);
      default:
        return;
    }
  }

  std::mt19937_64 rng_;
};

// Every message type of the API's and the storage schema's files that
// FastToJson renders (nested types included), filled at random many times.
TEST(FastJson, EveryRenderedMessageTypeMatchesProtobufWithRandomContents) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed));
  RandomFill fill(seed);
  std::vector<const Descriptor*> types;
  for (const auto* file :
       {v1::TipResponse::descriptor()->file(), v1::StoredTip::descriptor()->file()}) {
    std::vector<const Descriptor*> todo;
    for (int i = 0; i < file->message_type_count(); ++i) todo.push_back(file->message_type(i));
    while (!todo.empty()) {
      const Descriptor* d = todo.back();
      todo.pop_back();
      if (d->options().map_entry()) continue;
      types.push_back(d);
      for (int i = 0; i < d->nested_type_count(); ++i) todo.push_back(d->nested_type(i));
    }
  }
  int rendered = 0;
  for (const Descriptor* d : types) {
    if (!FastJsonSupports(d)) continue;
    ++rendered;
    const Message* prototype = google::protobuf::MessageFactory::generated_factory()->GetPrototype(d);
    ASSERT_NE(prototype, nullptr) << d->full_name();
    for (int round = 0; round < 60; ++round) {
      std::unique_ptr<Message> m(prototype->New());
      if (round > 0) fill.Fill(m.get(), 0);
      std::string fast;
      ASSERT_TRUE(FastToJson(*m, &fast)) << d->full_name() << " " << m->ShortDebugString();
      ASSERT_EQ(fast, ProtobufJson(*m)) << d->full_name() << " round " << round;
      ASSERT_EQ(ToJson(*m), fast);
    }
  }
  EXPECT_GT(rendered, 50) << "most API types hold no map and no double";
  std::printf("%d message types rendered directly\n", rendered);
}

}  // namespace
}  // namespace tipd::api
