// The dashboard's files as the node serves them (dashboard/dashboard.h):
// public routes, byte-identical to the committed files, with their content
// types, the Content-Security-Policy and ETag revalidation. The page itself
// is tested in a real browser (dashboard/test/browser_test.mjs, ctest label
// `browser`).
#include "dashboard/dashboard.h"

#include <gtest/gtest.h>

// GCC 12 with -fsanitize reports a false -Wmaybe-uninitialized inside
// Beast's parser (boost::optional content length); it is not our code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#pragma GCC diagnostic pop
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "api/rpc_server.h"
#include "tests/support/test_support.h"
#include "util/clock.h"

namespace tipd::dashboard {
namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

using Response = http::response<http::string_body>;

std::string Hdr(const Response& res, http::field f) { return std::string(res[f]); }
std::string Hdr(const Response& res, const char* name) { return std::string(res[name]); }

class DashboardRoutesTest : public ::testing::Test {
 protected:
  DashboardRoutesTest() : authority_(Key()) {}
  static crypto::Key32 Key() {
    crypto::Key32 k;
    k.fill(0x17);
    return k;
  }
  void SetUp() override {
    server_ = std::make_unique<api::RpcServer>(io_, authority_, clock_);
    server_->Handle(api::HttpMethod::kGet, "/v1/info", api::RouteAuth::Needs(api::Scope::kRead),
                    [](const api::ApiRequest&) { return api::ApiResponse::Text(200, "x", "{}"); });
    RegisterDashboardRoutes(*server_);
    auto port = server_->Listen("127.0.0.1", 0);
    ASSERT_TRUE(port.ok()) << port.status().ToString();
    port_ = *port;
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    net::post(io_, [this] { server_->Stop(); });
    guard_.reset();
    thread_.join();
  }

  http::response<http::string_body> Get(const std::string& target,
                                        const std::string& if_none_match = "") {
    net::io_context io;
    tcp::socket sock(io);
    boost::system::error_code ec;
    sock.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port_), ec);
    EXPECT_FALSE(ec) << ec.message();
    timeval tv{10, 0};
    ::setsockopt(sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    http::request<http::empty_body> req(http::verb::get, target, 11);
    req.set(http::field::host, "127.0.0.1");
    if (!if_none_match.empty()) req.set(http::field::if_none_match, if_none_match);
    http::write(sock, req, ec);
    EXPECT_FALSE(ec) << ec.message();
    boost::beast::flat_buffer buf;
    http::response_parser<http::string_body> parser;
    parser.skip(false);
    http::read(sock, buf, parser, ec);
    EXPECT_FALSE(ec) << target << ": " << ec.message();
    return parser.release();
  }

  static std::string ReadSource(const std::string& rel) {
    std::ifstream in(std::filesystem::path(TIPD_SOURCE_DIR) / "dashboard" / rel, std::ios::binary);
    EXPECT_TRUE(in.good()) << rel;
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

  net::io_context io_;
  net::executor_work_guard<net::io_context::executor_type> guard_{io_.get_executor()};
  api::TokenAuthority authority_;
  ManualClock clock_{1'700'000'000'000};
  std::unique_ptr<api::RpcServer> server_;
  uint16_t port_ = 0;
  std::thread thread_;
};

TEST_F(DashboardRoutesTest, PageIsServedAtRootWithoutTokenAndWithStrictHeaders) {
  auto res = Get("/");
  ASSERT_EQ(res.result_int(), 200) << res.body();
  EXPECT_EQ(Hdr(res, http::field::content_type), "text/html; charset=utf-8");
  EXPECT_EQ(res.body(), ReadSource("index.html"));
  const std::string csp(Hdr(res, "Content-Security-Policy"));
  EXPECT_EQ(csp, kContentSecurityPolicy);
  // No inline script or style may run, and the page talks only to its node.
  EXPECT_EQ(csp.find("unsafe-inline"), std::string::npos);
  EXPECT_EQ(csp.find("unsafe-eval"), std::string::npos);
  EXPECT_NE(csp.find("script-src 'self';"), std::string::npos);
  EXPECT_NE(csp.find("connect-src 'self';"), std::string::npos);
  EXPECT_EQ(Hdr(res, "X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(Hdr(res, "X-Frame-Options"), "DENY");
  EXPECT_EQ(Hdr(res, "Referrer-Policy"), "no-referrer");
  EXPECT_EQ(Hdr(res, http::field::cache_control), "no-cache");
  EXPECT_FALSE(Hdr(res, http::field::etag).empty());
  // The page's own routes stay public while the API still wants a token.
  EXPECT_EQ(Get("/v1/info").result_int(), 401);
}

TEST_F(DashboardRoutesTest, EveryAssetIsTheCommittedFileWithItsContentType) {
  std::set<std::string> etags;
  ASSERT_FALSE(Assets().empty());
  for (const Asset& a : Assets()) {
    SCOPED_TRACE(std::string(a.url_path));
    auto res = Get(std::string(a.url_path));
    ASSERT_EQ(res.result_int(), 200);
    EXPECT_EQ(Hdr(res, http::field::content_type), a.content_type);
    const std::string rel = std::string(a.url_path).substr(std::string("/dashboard/").size());
    EXPECT_EQ(res.body(), ReadSource(rel));
    EXPECT_EQ(Hdr(res, "Content-Security-Policy"), kContentSecurityPolicy);
    etags.insert(std::string(Hdr(res, http::field::etag)));
  }
  EXPECT_EQ(etags.size(), Assets().size()) << "ETags must tell the files apart";
  // JavaScript must go out as JavaScript, or the browser refuses the module
  // (nosniff).
  EXPECT_EQ(Hdr(Get("/dashboard/js/app.js"), http::field::content_type),
            "text/javascript; charset=utf-8");
  EXPECT_EQ(Hdr(Get("/dashboard/app.css"), http::field::content_type), "text/css; charset=utf-8");
}

TEST_F(DashboardRoutesTest, MatchingIfNoneMatchAnswers304WithoutBody) {
  auto first = Get("/dashboard/js/app.js");
  ASSERT_EQ(first.result_int(), 200);
  const std::string etag(Hdr(first, http::field::etag));
  ASSERT_EQ(etag.front(), '"');
  auto again = Get("/dashboard/js/app.js", etag);
  EXPECT_EQ(again.result_int(), 304);
  EXPECT_TRUE(again.body().empty());
  EXPECT_EQ(Hdr(again, http::field::etag), etag);
  EXPECT_EQ(Get("/dashboard/js/app.js", "\"other\", W/" + etag).result_int(), 304);
  EXPECT_EQ(Get("/dashboard/js/app.js", "\"other\"").result_int(), 200);
  // Another file's tag does not match this one.
  EXPECT_EQ(Get("/dashboard/app.css", etag).result_int(), 200);
}

TEST_F(DashboardRoutesTest, UnknownDashboardPathsAre404) {
  EXPECT_EQ(Get("/dashboard/nope.js").result_int(), 404);
  EXPECT_EQ(Get("/dashboard/../admin.token").result_int(), 404);
  EXPECT_EQ(Get("/dashboard/js/../../etc/passwd").result_int(), 404);
}

}  // namespace
}  // namespace tipd::dashboard
