// The API contract against the code (issue 12, "The contract"): every route
// the whole node registers (NodeContext, as `tipd node` builds it) is in
// docs/openapi.json with the same scope, every operation of the document is
// registered, and the node serves the very document at GET /v1/openapi.json
// without a token. The JSON side (schemas, examples, live answers) is checked
// by tests/contract/ with a JSON Schema validator.
#include <gtest/gtest.h>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <boost/asio/post.hpp>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "api/auth.h"
#include "api/openapi.h"
#include "api/rpc_server.h"
#include "crypto/crypto.h"
#include "ledger/genesis.h"
#include "node/context.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"
#include "tests/support/test_support.h"
#include "util/clock.h"

namespace tipd::node {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

// Operations the document already describes for routes other branches of
// this session add (the plan in docs/api.md's tables); they are registered
// once those branches are merged. A pending route that IS registered fails
// the test: delete it from this list then, so the check is exact again.
const std::set<std::string> kPendingRoutes = {};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// The scope name the document uses for a route: "read", "receive", "tip",
// "admin", or "any" for a route any valid token may call (RouteAuth's
// `any_scope`, where the server has it).
template <typename Auth>
std::string ScopeOf(const Auth& auth) {
  if constexpr (requires { auth.any_scope; }) {
    if (auth.any_scope) return "any";
  }
  return api::ScopeName(auth.scope);
}

struct SpecOperation {
  bool is_public = false;
  std::string scope;  // x-tipd-scope
  // x-tipd-static-prefix: one operation for every file route below it
  // (e.g. "/dashboard/"), since an OpenAPI path parameter holds no slash.
  std::string static_prefix;
};

// "GET /v1/info" -> what the document says about it.
std::map<std::string, SpecOperation> SpecOperations(const Struct& spec) {
  std::map<std::string, SpecOperation> out;
  const Struct& paths = spec.fields().at("paths").struct_value();
  for (const auto& [path, item] : paths.fields()) {
    for (const auto& [method, op_value] : item.struct_value().fields()) {
      if (method == "parameters" || method == "summary" || method == "description") continue;
      const Struct& op = op_value.struct_value();
      SpecOperation o;
      if (auto sec = op.fields().find("security"); sec != op.fields().end()) {
        o.is_public = sec->second.list_value().values_size() == 0;
      }
      if (auto sc = op.fields().find("x-tipd-scope"); sc != op.fields().end()) {
        o.scope = sc->second.string_value();
      }
      if (auto sp = op.fields().find("x-tipd-static-prefix"); sp != op.fields().end()) {
        o.static_prefix = sp->second.string_value();
      }
      out[Upper(method) + " " + path] = o;
    }
  }
  return out;
}

class OpenApiContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    node_key_ = crypto::KeyPair::Generate(crypto::SystemRng());
    sequencer_ = crypto::KeyPair::Generate(crypto::SystemRng());
    ASSERT_TRUE(crypto::SaveKeyFile(dir_.path() / "node.key", node_key_.secret()).ok());
    v1::GenesisParams g = ledger::MakeDevnetGenesis("tipd-contract-test", sequencer_.XOnly(),
                                                    {{node_key_.XOnly(), 10'000}}, clock_.NowMs());
    ASSERT_TRUE(ledger::WriteGenesisFile(dir_.path() / "genesis.json", g).ok());
    config_.datadir = dir_.path();
    config_.genesis = dir_.path() / "genesis.json";
    config_.listen = {"127.0.0.1", 0};
    config_.rpc_listen = {"127.0.0.1", 0};
    config_.ledger.address = {"127.0.0.1", no_ledger_.port()};
    config_.ledger.sequencer_xonly = sequencer_.XOnly();
    config_.ledger.sequencer_pubkey = sequencer_.public_key();

    spec_text_ = ReadFile(TIPD_OPENAPI_PATH);
    ASSERT_FALSE(spec_text_.empty()) << "cannot read " << TIPD_OPENAPI_PATH;
    auto st = google::protobuf::util::JsonStringToMessage(spec_text_, &spec_);
    ASSERT_TRUE(st.ok()) << "docs/openapi.json is not JSON: " << st.ToString();
  }

  testing::TempDir dir_{"tipd-contract"};
  testing::ClosedLoopbackPort no_ledger_;
  SystemClock clock_;
  crypto::KeyPair node_key_ = crypto::KeyPair::Generate(crypto::SystemRng());
  crypto::KeyPair sequencer_ = crypto::KeyPair::Generate(crypto::SystemRng());
  NodeConfig config_;
  std::string spec_text_;
  Struct spec_;
};

TEST_F(OpenApiContractTest, EveryRegisteredRouteIsInTheSpecAndViceVersa) {
  auto node = NodeContext::Create(config_, clock_);
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  const std::vector<api::RouteInfo> routes = (*node)->rpc().routes();
  ASSERT_GT(routes.size(), 15u);  // the whole node, not a stub
  const std::map<std::string, SpecOperation> ops = SpecOperations(spec_);

  // A file route below a static prefix counts as that prefix's operation.
  auto covering = [&](const std::string& method, const std::string& pattern) {
    for (const auto& [key, op] : ops) {
      if (!op.static_prefix.empty() && key.rfind(method + " ", 0) == 0 &&
          pattern.rfind(op.static_prefix, 0) == 0 && pattern.size() > op.static_prefix.size()) {
        return key;
      }
    }
    return method + " " + pattern;
  };
  std::set<std::string> registered;
  for (const api::RouteInfo& r : routes) {
    const std::string key = covering(api::HttpMethodName(r.method), r.pattern);
    registered.insert(key);
    auto it = ops.find(key);
    if (it == ops.end()) {
      ADD_FAILURE() << key << " is registered but not in docs/openapi.json";
      continue;
    }
    EXPECT_EQ(it->second.is_public, r.auth.is_public)
        << key << ": the document and the server disagree on whether it needs a token";
    if (!r.auth.is_public) {
      EXPECT_EQ(it->second.scope, ScopeOf(r.auth))
          << key << ": x-tipd-scope differs from the scope the server checks";
    }
  }
  for (const auto& [key, op] : ops) {
    if (kPendingRoutes.count(key) != 0) {
      EXPECT_EQ(registered.count(key), 0u)
          << key << " is registered now: remove it from kPendingRoutes";
      continue;
    }
    EXPECT_EQ(registered.count(key), 1u)
        << key << " is in docs/openapi.json but the node does not serve it";
  }
  for (const std::string& key : kPendingRoutes) {
    EXPECT_EQ(ops.count(key), 1u) << key << " is pending but not in docs/openapi.json";
  }
}

TEST_F(OpenApiContractTest, ServesTheDocumentWithoutAToken) {
  // The binary carries the file it was built from.
  EXPECT_EQ(api::OpenApiDocument(), spec_text_)
      << "the embedded document differs from docs/openapi.json: rebuild";
  auto node = NodeContext::Create(config_, clock_);
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  ASSERT_TRUE((*node)->Start().ok());
  std::thread io([&] { (*node)->io().run(); });
  auto got = testing::HttpRequest((*node)->rpc_port(), "GET", "/v1/openapi.json");
  // A token route next to it still needs one (the route is public, the API is not).
  auto info = testing::HttpRequest((*node)->rpc_port(), "GET", "/v1/info");
  boost::asio::post((*node)->io(), [&] { (*node)->Stop(); });
  io.join();
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_NE(got.headers.find("application/json"), std::string::npos) << got.headers;
  EXPECT_EQ(got.body, spec_text_);
  EXPECT_EQ(info.status, 401) << info.body;
  Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(got.body, &parsed).ok());
  EXPECT_EQ(parsed.fields().at("openapi").string_value(), "3.1.0");
}

}  // namespace
}  // namespace tipd::node
