// FastToJson (api/json_fast.h) against protobuf's own printer: byte-equal
// output for every API message type filled at random, and for every Unicode
// code point in a string; what it does not render it leaves to protobuf.

#include "api/json_fast.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
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
        'a',    'Z',     '0',     ' ',     '"',     '\\',    '/',    '<',    '>',
        '&',    '\'',    '\n',    '\t',    0x01,    0x1f,    0x7f,   0x80,   0x9f,
        0xa0,   0xad,    0xe9,    0x600,   0x6dd,   0x200b,  0x2028, 0x20ac, 0xfeff,
        0xfffd, 0x1d173, 0x1f600, 0xe0001, 0xe0041, 0x10ffff};
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
    std::vector<const Descriptor*> to_visit;
    for (int i = 0; i < file->message_type_count(); ++i) to_visit.push_back(file->message_type(i));
    while (!to_visit.empty()) {
      const Descriptor* d = to_visit.back();
      to_visit.pop_back();
      if (d->options().map_entry()) continue;
      types.push_back(d);
      for (int i = 0; i < d->nested_type_count(); ++i) to_visit.push_back(d->nested_type(i));
    }
  }
  int rendered = 0;
  for (const Descriptor* d : types) {
    if (!FastJsonSupports(d)) continue;
    ++rendered;
    const Message* prototype =
        google::protobuf::MessageFactory::generated_factory()->GetPrototype(d);
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

namespace tipd::api {
namespace {

bool ProtobufParse(const std::string& json, google::protobuf::Message* out) {
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  return google::protobuf::util::JsonStringToMessage(json, out, opts).ok();
}

// What the fast reader accepts, protobuf's parser reads to the same message.
void ExpectSameReading(const std::string& json, const google::protobuf::Message& prototype,
                       bool must_be_fast) {
  std::unique_ptr<google::protobuf::Message> fast(prototype.New());
  std::unique_ptr<google::protobuf::Message> slow(prototype.New());
  const bool fast_ok = FastFromJson(json, fast.get());
  if (must_be_fast) {
    EXPECT_TRUE(fast_ok) << json;
  }
  if (!fast_ok) {
    EXPECT_EQ(fast->ByteSizeLong(), 0u) << "a refused text leaves the message clear";
    return;
  }
  ASSERT_TRUE(ProtobufParse(json, slow.get()))
      << "the fast reader accepted what protobuf refuses: " << ::testing::PrintToString(json);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*fast, *slow))
      << ::testing::PrintToString(json) << "\nfast: " << fast->ShortDebugString()
      << "\nprotobuf: " << slow->ShortDebugString();
}

TEST(FastJsonReader, ReadsTheTipRoutesBodiesAsProtobufDoes) {
  const std::vector<std::string> bodies = {
      R"({"channel_id":"ab12","amount":"1500","message":"thanks!"})",
      R"({ "channelId" : "ab12" , "amount" : 1500 , "message" : "caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \n" })",
      R"({"peer_node_id":"02ff","amount":"18446744073709551615","metadata":{"app_name":"x","k":"é"},"idempotency_key":"k-1"})",
      "{\"message\":\"raw \xc3\xa9 \xf0\x9f\x98\x80\",\"amount\":\"0\"}",
      R"({"tips":[{"channel_id":"ab","amount":"1"},{"channel_id":"ab","amount":2,"metadata":{}}],"compact":true})",
      R"({"tips":[],"compact":false})",
      R"({})",
  };
  for (const std::string& b : bodies) {
    if (b.find("tips") != std::string::npos) {
      ExpectSameReading(b, v1::TipBatchRequest(), true);
    } else {
      ExpectSameReading(b, v1::TipRequest(), true);
    }
  }
}

TEST(FastJsonReader, LeavesEverythingUnusualToProtobuf) {
  const std::vector<std::string> slow = {
      R"({"amount":1.5})",                      // a fraction
      R"({"amount":1e3})",                      // an exponent
      R"({"amount":"01"})",                     // a leading zero
      R"({"amount":-1})",                       // negative for an unsigned field
      R"({"amount":18446744073709551616})",     // out of range
      R"({"amount":9007199254740993})",         // bare above 2^53
      R"({"amount":null})",                     // null
      R"({"amount":"1","amount":"2"})",         // a field twice
      R"({"amount":"1","amount":"2"})",         // a field twice
      R"({"channel_id":"a","channelId":"b"})",  // one field by both names
      R"({"unknown":1})",                       // an unknown field
      R"({"message":"\ud800"})",                // a lone surrogate
      R"({"message":"\x"})",                    // a bad escape
      "{\"message\":\"\xc0\x80\"}",             // overlong UTF-8
      "{\"message\":\"a\tb\"}",                 // a raw control character
      R"({"metadata":{"a":"1","a":"2"}})",      // a map key twice
      R"({"metadata":{"a":1}})",                // a number as a map value
      R"({message:"x"})",                       // an unquoted key
      R"({"message":"x"} x)",                   // trailing text
      R"([])",                                  // not an object
  };
  for (const std::string& b : slow) {
    v1::TipRequest m;
    m.set_amount(7);
    EXPECT_FALSE(FastFromJson(b, &m)) << b;
    EXPECT_EQ(m.ByteSizeLong(), 0u);
  }
}

// Texts printed by protobuf from random messages, then damaged at random:
// whatever the fast reader accepts, protobuf reads the same.
TEST(FastJsonReader, RandomAndDamagedTextsReadAsProtobufReadsThem) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("TIPD_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  RandomFill fill(seed ^ 0x5eed);
  const std::vector<const google::protobuf::Message*> types = {
      &v1::TipRequest::default_instance(), &v1::TipBatchRequest::default_instance(),
      &v1::TipApi::default_instance(), &v1::TipResponse::default_instance(),
      &v1::StoredTip::default_instance()};
  static const std::string kNoise = "\"\\{}[],: 0-1e.nu\x80\xc3tfx";
  int fast_read = 0;
  for (int round = 0; round < 3000; ++round) {
    const google::protobuf::Message& proto = *types[rng() % types.size()];
    std::unique_ptr<google::protobuf::Message> m(proto.New());
    fill.Fill(m.get(), 0);
    google::protobuf::util::JsonPrintOptions opts;
    opts.preserve_proto_field_names = rng() % 2 == 0;
    opts.always_print_primitive_fields = rng() % 2 == 0;
    opts.add_whitespace = rng() % 4 == 0;
    std::string json;
    if (!google::protobuf::util::MessageToJsonString(*m, &json, opts).ok()) continue;
    const int damage = static_cast<int>(rng() % 3);
    for (int d = 0; d < damage && !json.empty(); ++d) {
      const size_t at = rng() % json.size();
      switch (rng() % 4) {
        case 0:
          json.insert(at, 1, kNoise[rng() % kNoise.size()]);
          break;
        case 1:
          json.erase(at, 1);
          break;
        case 2:
          json[at] = kNoise[rng() % kNoise.size()];
          break;
        default: {  // unquote a quoted number
          const size_t q = json.find("\":\"", at);
          if (q != std::string::npos) json.erase(q + 2, 1);
        }
      }
    }
    std::unique_ptr<google::protobuf::Message> probe(proto.New());
    if (FastFromJson(json, probe.get())) ++fast_read;
    ExpectSameReading(json, proto, false);
    if (HasFailure()) return;
  }
  EXPECT_GT(fast_read, 300) << "the fast reader takes the common texts";
  std::printf("%d of 3000 texts read by the fast reader\n", fast_read);
}

}  // namespace
}  // namespace tipd::api
