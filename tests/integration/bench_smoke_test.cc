// `tipd bench --quick` end to end (ctest label `bench`): the real binary
// starts its ledger and nodes, runs every section and writes its JSON. This
// asserts that it completed and that every section holds sane values (counts
// above zero, percentiles in order); never a speed (docs/performance.md).
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tests/support/process.h"
#include "tests/support/test_support.h"

namespace tipd::testing {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

const Value* Field(const Struct& s, const std::string& name) {
  auto it = s.fields().find(name);
  return it == s.fields().end() ? nullptr : &it->second;
}

const Struct& Section(const Struct& s, const std::string& name) {
  static const Struct kEmpty;
  const Value* v = Field(s, name);
  EXPECT_TRUE(v != nullptr && v->has_struct_value()) << "no section \"" << name << "\"";
  return v != nullptr && v->has_struct_value() ? v->struct_value() : kEmpty;
}

double Number(const Struct& s, const std::string& name) {
  const Value* v = Field(s, name);
  EXPECT_TRUE(v != nullptr && v->kind_case() == Value::kNumberValue)
      << "no number \"" << name << "\"";
  return v != nullptr ? v->number_value() : -1;
}

// count > 0 and p50 <= p99 <= p99.9, all positive.
void ExpectLatency(const Struct& s, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_GT(Number(s, "count"), 0);
  EXPECT_GT(Number(s, "p50_ms"), 0);
  EXPECT_LE(Number(s, "p50_ms"), Number(s, "p99_ms"));
  EXPECT_LE(Number(s, "p99_ms"), Number(s, "p999_ms"));
}

void ExpectLoad(const Struct& s, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_GT(Number(s, "tips_acked"), 0);
  EXPECT_GT(Number(s, "tips_per_second"), 0);
  EXPECT_GT(Number(s, "requests"), 0);
  EXPECT_GE(Number(s, "loadgen_cpu_cores"), 0);
  ExpectLatency(Section(s, "request_latency"), what + " requests");
}

TEST(BenchSmokeTest, QuickRunCompletesWithEverySection) {
  TempDir dir("tipd-bench-smoke");
  const auto json_path = dir.path() / "bench.json";
  std::string error;
  auto bench = Process::Start({TIPD_BINARY, "bench", "--quick", "--json", json_path.string(),
                               "--dir", (dir.path() / "net").string(), "--slow-ms", "1"},
                              dir.path() / "bench.log", &error);
  ASSERT_NE(bench, nullptr) << error;
  // Generous: a loaded 2-core machine, or an ASan build.
  auto code = bench->Wait(std::chrono::minutes(15));
  ASSERT_TRUE(code.has_value()) << "tipd bench --quick did not finish:\n" << bench->Output();
  ASSERT_EQ(*code, 0) << bench->Output();
  EXPECT_NE(bench->Output().find("7. listing"), std::string::npos) << "the table was not printed";
  // --slow-ms 1: a tip at 1k/s takes ~2 ms from due to receipt, so the
  // slow requests are listed, by 100 ms of UTC time.
  EXPECT_NE(bench->Output().find("bench: slow requests at 1k/s (answered, UTC):"),
            std::string::npos)
      << bench->Output();
  EXPECT_NE(bench->Output().find(" requests, worst "), std::string::npos);

  std::ifstream in(json_path);
  std::stringstream text;
  text << in.rdbuf();
  Struct root;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(text.str(), &root).ok()) << text.str();
  EXPECT_EQ(Number(root, "version"), 1);

  // 1, 2: coalesced and naive closed loops.
  ExpectLoad(Section(root, "coalesced"), "coalesced");
  ExpectLoad(Section(root, "naive"), "naive");
  EXPECT_GT(Number(root, "coalescing_gain"), 0);
  // 3: unloaded and the four offered loads.
  const Struct& latency = Section(root, "latency");
  ExpectLatency(Section(latency, "unloaded"), "unloaded");
  const Value* offered = Field(latency, "offered");
  ASSERT_TRUE(offered != nullptr && offered->has_list_value());
  ASSERT_EQ(offered->list_value().values_size(), 4);
  for (const Value& v : offered->list_value().values()) {
    const Struct& o = v.struct_value();
    EXPECT_GT(Number(o, "offered_tips_per_second"), 0);
    // Under an overload some tips may go unsent, but some are always acked.
    ExpectLatency(o, "offered load");
  }
  // 4: HTTP.
  const Struct& http = Section(root, "http");
  ExpectLoad(Section(http, "single"), "single tips");
  ExpectLoad(Section(http, "batch"), "batch");
  // 5: raw limits.
  const Struct& raw = Section(root, "raw");
  EXPECT_GT(Number(raw, "schnorr_sign_per_second"), 0);
  EXPECT_GT(Number(raw, "schnorr_verify_per_second"), 0);
  EXPECT_GT(Number(raw, "synced_leveldb_batches_per_second"), 0);
  // 6: size. The quick run builds >= 20,000 tips and 200 channels.
  const Struct& size = Section(root, "size");
  const Struct& full = Section(size, "full");
  EXPECT_GE(Number(full, "tips"), 20'000);
  EXPECT_GE(Number(full, "channels"), 200);
  EXPECT_GT(Number(full, "restart_to_ready_seconds"), 0);
  EXPECT_GT(Number(full, "rss_kib"), 0);
  EXPECT_GT(Number(full, "disk_bytes"), 0);
  EXPECT_GT(Number(Section(size, "filled"), "tips"), Number(Section(size, "small"), "tips"));
  EXPECT_GT(Number(size, "disk_bytes_per_tip_beyond_message_average"), 0);
  // 7: listing, with paged channels.
  const Value* listing = Field(root, "listing");
  ASSERT_TRUE(listing != nullptr && listing->has_list_value());
  EXPECT_EQ(listing->list_value().values_size(), 6);
  for (const Value& v : listing->list_value().values()) {
    ExpectLatency(v.struct_value(), "listing");
    EXPECT_GT(Number(v.struct_value(), "response_bytes"), 0);
  }
  const Value* paged = Field(root, "channels_paged");
  ASSERT_NE(paged, nullptr);
  EXPECT_TRUE(paged->bool_value());
  // Scaling: at least the 1-core entry.
  const Value* scaling = Field(root, "scaling");
  ASSERT_TRUE(scaling != nullptr && scaling->has_list_value());
  ASSERT_GE(scaling->list_value().values_size(), 1);
  for (const Value& v : scaling->list_value().values()) {
    EXPECT_GE(Number(v.struct_value(), "cores"), 1);
    EXPECT_GT(Number(v.struct_value(), "tips_per_second"), 0);
  }
}

}  // namespace
}  // namespace tipd::testing
