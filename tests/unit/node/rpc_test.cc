#include "api/rpc_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

// GCC 12 with -fsanitize reports a false -Wmaybe-uninitialized inside
// Beast's parser (boost::optional content length); it is not our code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#pragma GCC diagnostic pop
#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include "api/token_registry.h"
#include "storage/storage.h"
#include "tests/support/test_support.h"
#include "tipd/api.pb.h"
#include "util/metrics.h"

namespace tipd::api {
namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

// A blocking test client; every read gives up after 10 s so a bug fails the
// test instead of hanging it.
class Client {
 public:
  explicit Client(uint16_t port) : sock_(io_) {
    boost::system::error_code ec;
    sock_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
    EXPECT_FALSE(ec) << ec.message();
    timeval tv{10, 0};
    ::setsockopt(sock_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  http::response<http::string_body> Do(http::verb verb, const std::string& target,
                                       const std::string& token = "",
                                       const std::string& body = "") {
    http::request<http::string_body> req(verb, target, 11);
    req.set(http::field::host, "127.0.0.1");
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    if (!body.empty() || verb == http::verb::post) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
    }
    req.prepare_payload();
    boost::system::error_code ec;
    http::write(sock_, req, ec);
    EXPECT_FALSE(ec) << ec.message();
    return Read();
  }
  http::response<http::string_body> Read() {
    http::response<http::string_body> res;
    boost::system::error_code ec;
    http::read(sock_, buf_, res, ec);
    EXPECT_FALSE(ec) << ec.message();
    return res;
  }
  void WriteRaw(const std::string& s) {
    boost::system::error_code ec;
    net::write(sock_, net::buffer(s), ec);
    EXPECT_FALSE(ec) << ec.message();
  }
  // Reads until the server closes; returns what arrived and whether the
  // close came before the 10 s receive deadline.
  bool ReadUntilClosed(std::string* got = nullptr) {
    char tmp[4096];
    while (true) {
      boost::system::error_code ec;
      size_t n = sock_.read_some(net::buffer(tmp), ec);
      if (got) got->append(tmp, n);
      if (ec == net::error::eof || ec == net::error::connection_reset) return true;
      if (ec) return false;  // timed out
    }
  }
  std::string ReadLine() {
    boost::system::error_code ec;
    size_t n = net::read_until(sock_, sbuf_, "\n", ec);
    EXPECT_FALSE(ec) << ec.message();
    std::string line(net::buffers_begin(sbuf_.data()), net::buffers_begin(sbuf_.data()) + n);
    sbuf_.consume(n);
    return line;
  }
  void Close() {
    boost::system::error_code ec;
    sock_.shutdown(tcp::socket::shutdown_both, ec);
    sock_.close(ec);
  }

 private:
  net::io_context io_;
  tcp::socket sock_;
  boost::beast::flat_buffer buf_;
  net::streambuf sbuf_;
};

std::string ErrorCode(const std::string& json) {
  tipd::v1::ApiError e;
  EXPECT_TRUE(ParseJson(json, &e).ok()) << json;
  return e.code();
}
std::string ErrorMessage(const std::string& json) {
  tipd::v1::ApiError e;
  EXPECT_TRUE(ParseJson(json, &e).ok()) << json;
  return e.message();
}

constexpr uint32_t kRead = static_cast<uint32_t>(Scope::kRead);
constexpr uint32_t kTip = static_cast<uint32_t>(Scope::kTip);

class RpcServerTest : public ::testing::Test {
 protected:
  RpcServerTest() : authority_(MakeKey()) {}
  static crypto::Key32 MakeKey() {
    crypto::Key32 k;
    k.fill(0x42);
    return k;
  }
  // Registers the test routes, listens and starts the io thread.
  void Start(RpcLimits limits = {}) {
    server_ = std::make_unique<RpcServer>(io_, authority_, clock_, limits, &metrics_);
    server_->Handle(HttpMethod::kGet, "/v1/channels/{id}", RouteAuth::Needs(Scope::kRead),
                    [](const ApiRequest& r) {
                      tipd::v1::ChannelApi c;
                      c.set_channel_id(r.params.at("id"));
                      c.set_state(r.query.count("state") ? r.query.at("state") : "");
                      return ApiResponse::Json(c);
                    });
    server_->Handle(
        HttpMethod::kGet, "/v1/channels/summary", RouteAuth::Needs(Scope::kRead),
        [](const ApiRequest&) { return ApiResponse::Text(200, "text/plain", "summary"); });
    server_->Handle(HttpMethod::kPost, "/v1/channels/{id}/close", RouteAuth::Needs(Scope::kAdmin),
                    [](const ApiRequest& r) {
                      tipd::v1::CloseChannelRequest req;
                      Status s = ParseJson(r.body, &req);
                      if (!s.ok()) return ApiResponse::FromStatus(s);
                      tipd::v1::CloseChannelResponse resp;
                      resp.mutable_channel()->set_channel_id(r.params.at("id"));
                      resp.mutable_channel()->set_state(req.force() ? "force" : "coop");
                      return ApiResponse::Json(resp);
                    });
    server_->Handle(HttpMethod::kPost, "/v1/tips/echo", RouteAuth::Needs(Scope::kTip),
                    [](const ApiRequest& r) {
                      tipd::v1::TipRequest req;
                      Status s = ParseJson(r.body, &req);
                      if (!s.ok()) return ApiResponse::FromStatus(s);
                      return ApiResponse::Json(req);
                    });
    // A bulk route with its own body limit (8 KiB, above the tests' 1 KiB).
    server_->HandleAsync(
        HttpMethod::kPost, "/v1/tips/bulk", RouteAuth::Needs(Scope::kTip),
        [](ApiRequest r, Responder out) {
          out.Send(ApiResponse::Text(200, "text/plain", std::to_string(r.body.size())));
        },
        RouteOptions{.max_body_bytes = 8192});
    server_->Handle(HttpMethod::kGet, "/health", RouteAuth::Public(),
                    [](const ApiRequest&) { return ApiResponse::Text(200, "text/plain", "ok"); });
    server_->Handle(HttpMethod::kGet, "/boom", RouteAuth::Public(),
                    [](const ApiRequest&) -> ApiResponse { throw std::runtime_error("boom"); });
    server_->Handle(HttpMethod::kGet, "/metrics", RouteAuth::Needs(Scope::kRead),
                    [this](const ApiRequest&) {
                      return ApiResponse::Text(200, kMetricsContentType, metrics_.Render());
                    });
    server_->HandleAsync(HttpMethod::kPost, "/v1/later", RouteAuth::Public(),
                         [this](ApiRequest, Responder r) {
                           std::lock_guard<std::mutex> l(mu_);
                           pending_.push_back(std::move(r));
                           cv_.notify_all();
                         });
    server_->HandleAsync(HttpMethod::kGet, "/v1/drop", RouteAuth::Public(),
                         [](ApiRequest, Responder) {});
    server_->HandleAsync(HttpMethod::kGet, "/v1/events", RouteAuth::Needs(Scope::kRead),
                         [this](ApiRequest, Responder r) {
                           auto s = r.StartEventStream();
                           ASSERT_NE(s, nullptr);
                           s->OnClose([this] {
                             std::lock_guard<std::mutex> l(mu_);
                             stream_closed_ = true;
                             cv_.notify_all();
                           });
                           std::lock_guard<std::mutex> l(mu_);
                           stream_ = s;
                           cv_.notify_all();
                         });
    AddRoutes();
    auto port = server_->Listen("127.0.0.1", 0);
    ASSERT_TRUE(port.ok()) << port.status().ToString();
    port_ = *port;
    thread_ = std::thread([this] { io_.run(); });
  }
  virtual void AddRoutes() {}

  void TearDown() override {
    if (thread_.joinable()) {
      net::post(io_, [this] {
        pending_.clear();
        stream_.reset();
        server_->Stop();
      });
      guard_.reset();
      thread_.join();
    }
  }
  // Runs `f` on the io thread and waits for it.
  template <class F>
  void OnIo(F f) {
    std::promise<void> done;
    net::post(io_, [&] {
      f();
      done.set_value();
    });
    ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  }
  template <class Pred>
  bool WaitFor(Pred p) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, std::chrono::seconds(10), p);
  }

  std::string Token(uint32_t scopes, uint64_t expires = 0, uint64_t cap = 0) {
    return authority_.Issue(TokenAuthority::NewClaims(scopes, expires, cap, crypto::SystemRng()));
  }

  net::io_context io_;
  net::executor_work_guard<net::io_context::executor_type> guard_{io_.get_executor()};
  TokenAuthority authority_;
  ManualClock clock_{1'700'000'000'000};
  MetricsRegistry metrics_;
  std::unique_ptr<RpcServer> server_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Responder> pending_;
  std::shared_ptr<EventStream> stream_;
  bool stream_closed_ = false;
};

TEST_F(RpcServerTest, RoutesWithParamsQueryAndLiteralPrecedence) {
  Start();
  Client c(port_);
  const std::string tok = Token(kRead);
  auto res = c.Do(http::verb::get, "/v1/channels/ab%2Fcd?state=open+now", tok);
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res[http::field::content_type], "application/json");
  tipd::v1::ChannelApi ch;
  ASSERT_TRUE(ParseJson(res.body(), &ch).ok()) << res.body();
  EXPECT_EQ(ch.channel_id(), "ab/cd");
  EXPECT_EQ(ch.state(), "open now");
  // JSON keeps proto names and prints uint64 as strings.
  EXPECT_NE(res.body().find("\"deposit_local\":\"0\""), std::string::npos) << res.body();
  // Same connection (keep-alive): the literal route beats {id}.
  res = c.Do(http::verb::get, "/v1/channels/summary", tok);
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_EQ(res.body(), "summary");
  res = c.Do(http::verb::post, "/v1/channels/xyz/close", Token(kAllScopes), "{\"force\": true}");
  EXPECT_EQ(res.result_int(), 200) << res.body();
  EXPECT_NE(res.body().find("\"state\":\"force\""), std::string::npos) << res.body();
}

TEST_F(RpcServerTest, UnknownRouteWrongMethodAndTooLarge) {
  RpcLimits limits;
  limits.max_body_bytes = 1024;
  limits.max_header_bytes = 2048;
  Start(limits);
  {
    Client c(port_);
    auto res = c.Do(http::verb::get, "/v1/nope", Token(kRead));
    EXPECT_EQ(res.result_int(), 404);
    EXPECT_EQ(ErrorCode(res.body()), "not_found");
    EXPECT_EQ(ErrorMessage(res.body()), "no API endpoint at /v1/nope");
    res = c.Do(http::verb::delete_, "/v1/channels/abc", Token(kRead));
    EXPECT_EQ(res.result_int(), 405);
    EXPECT_EQ(ErrorCode(res.body()), "method_not_allowed");
    EXPECT_EQ(res[http::field::allow], "GET");
  }
  {
    Client c(port_);
    auto res = c.Do(http::verb::post, "/v1/tips/echo", Token(kTip), std::string(5000, 'x'));
    EXPECT_EQ(res.result_int(), 413);
    EXPECT_EQ(ErrorCode(res.body()), "payload_too_large");
    EXPECT_TRUE(c.ReadUntilClosed());
  }
  {
    // A route's own limit: 5000 bytes pass on the bulk route (keep-alive
    // stays), 8193 do not; the other routes keep the server's 1024.
    Client c(port_);
    auto res = c.Do(http::verb::post, "/v1/tips/bulk", Token(kTip), std::string(5000, 'x'));
    EXPECT_EQ(res.result_int(), 200) << res.body();
    EXPECT_EQ(res.body(), "5000");
    res = c.Do(http::verb::post, "/v1/tips/bulk", Token(kTip), std::string(8192, 'x'));
    EXPECT_EQ(res.result_int(), 200) << res.body();
    EXPECT_EQ(res.body(), "8192");
    res = c.Do(http::verb::post, "/v1/tips/bulk", Token(kTip), std::string(8193, 'x'));
    EXPECT_EQ(res.result_int(), 413);
    EXPECT_EQ(ErrorMessage(res.body()), "request body exceeds 8192 bytes");
    EXPECT_TRUE(c.ReadUntilClosed());
  }
  {
    // The raised limit needs a token the route accepts: none is 401 and a
    // read token 403, answered before the body is read; within the default
    // limit the body is read and the route answers as usual.
    Client c(port_);
    auto res = c.Do(http::verb::post, "/v1/tips/bulk", "", std::string(5000, 'x'));
    EXPECT_EQ(res.result_int(), 401) << res.body();
    EXPECT_EQ(ErrorCode(res.body()), "unauthenticated");
    EXPECT_TRUE(c.ReadUntilClosed());
  }
  {
    Client c(port_);
    auto res = c.Do(http::verb::post, "/v1/tips/bulk", Token(kRead), std::string(5000, 'x'));
    EXPECT_EQ(res.result_int(), 403) << res.body();
    EXPECT_EQ(ErrorCode(res.body()), "permission_denied");
    EXPECT_TRUE(c.ReadUntilClosed());
  }
  {
    Client c(port_);
    auto res = c.Do(http::verb::post, "/v1/tips/bulk", "", std::string(500, 'x'));
    EXPECT_EQ(res.result_int(), 401) << res.body();
    res = c.Do(http::verb::post, "/v1/tips/bulk", Token(kTip), std::string(500, 'x'));
    EXPECT_EQ(res.result_int(), 200) << res.body();
  }
  {
    // The raised limit is the bulk route's only: the same size elsewhere is
    // refused with the server's limit, a query string does not change the
    // route, and a chunked body is held to the route's limit too.
    Client c(port_);
    auto res = c.Do(http::verb::post, "/v1/tips/echo", Token(kTip), std::string(5000, 'x'));
    EXPECT_EQ(res.result_int(), 413);
    EXPECT_EQ(ErrorMessage(res.body()), "request body exceeds 1024 bytes");
    EXPECT_TRUE(c.ReadUntilClosed());
  }
  {
    Client c(port_);
    auto res =
        c.Do(http::verb::post, "/v1/tips/bulk?answer=compact", Token(kTip), std::string(6000, 'y'));
    EXPECT_EQ(res.result_int(), 200) << res.body();
    EXPECT_EQ(res.body(), "6000");
  }
  for (const size_t size : {size_t{3000}, size_t{9000}}) {
    SCOPED_TRACE(size);
    Client c(port_);
    std::ostringstream chunk_len;
    chunk_len << std::hex << size;
    c.WriteRaw("POST /v1/tips/bulk HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + Token(kTip) +
               "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk_len.str() + "\r\n" +
               std::string(size, 'z') + "\r\n0\r\n\r\n");
    auto res = c.Read();
    EXPECT_EQ(res.result_int(), size < 8192 ? 200 : 413) << res.body();
    // Chunked to an ordinary route: its 1024-byte limit applies.
    if (size < 8192) {
      c.WriteRaw("POST /v1/tips/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + Token(kTip) +
                 "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk_len.str() + "\r\n" +
                 std::string(size, 'z') + "\r\n0\r\n\r\n");
      res = c.Read();
      EXPECT_EQ(res.result_int(), 413) << res.body();
    }
  }
  {
    Client c(port_);
    c.WriteRaw("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n");
    auto res = c.Read();
    EXPECT_EQ(res.result_int(), 431);
    EXPECT_EQ(ErrorCode(res.body()), "header_too_large");
  }
  {
    Client c(port_);
    c.WriteRaw("NOT A REQUEST\r\n\r\n");
    auto res = c.Read();
    EXPECT_EQ(res.result_int(), 400);
  }
  {
    Client c(port_);
    auto res = c.Do(http::verb::get, "/boom");
    EXPECT_EQ(res.result_int(), 500);
    EXPECT_EQ(ErrorCode(res.body()), "internal");
  }
}

TEST_F(RpcServerTest, BadJsonIsA400NamingTheProblem) {
  Start();
  Client c(port_);
  const std::string tok = Token(kTip);
  auto res = c.Do(http::verb::post, "/v1/tips/echo", tok, "{\"amount\": \"5\", \"bogus\": 1}");
  EXPECT_EQ(res.result_int(), 400);
  EXPECT_EQ(ErrorCode(res.body()), "invalid_argument");
  EXPECT_NE(ErrorMessage(res.body()).find("bogus"), std::string::npos) << res.body();
  EXPECT_NE(ErrorMessage(res.body()).find("tipd.v1.TipRequest"), std::string::npos);
  res = c.Do(http::verb::post, "/v1/tips/echo", tok, "{\"amount\": ");
  EXPECT_EQ(res.result_int(), 400);
  res = c.Do(http::verb::post, "/v1/tips/echo", tok, "{\"amount\": \"many\"}");
  EXPECT_EQ(res.result_int(), 400);
  EXPECT_NE(ErrorMessage(res.body()).find("amount"), std::string::npos) << res.body();
  res =
      c.Do(http::verb::post, "/v1/tips/echo", tok,
           "{\"amount\": \"5\", \"metadata\": {\"app_name\": \"x\"}, \"idempotency_key\": \"k\"}");
  EXPECT_EQ(res.result_int(), 200) << res.body();
  tipd::v1::TipRequest echoed;
  ASSERT_TRUE(ParseJson(res.body(), &echoed).ok());
  EXPECT_EQ(echoed.amount(), 5u);
  EXPECT_EQ(echoed.metadata().at("app_name"), "x");
}

TEST_F(RpcServerTest, AuthStatuses) {
  Start();
  Client c(port_);
  auto res = c.Do(http::verb::get, "/v1/channels/a");
  EXPECT_EQ(res.result_int(), 401);
  EXPECT_EQ(ErrorCode(res.body()), "unauthenticated");
  EXPECT_EQ(res[http::field::www_authenticate], "Bearer realm=\"tipd\"");
  res = c.Do(http::verb::get, "/v1/channels/a", "tipd1_nothex");
  EXPECT_EQ(res.result_int(), 401);
  EXPECT_NE(ErrorMessage(res.body()).find("malformed"), std::string::npos);
  crypto::Key32 other;
  other.fill(1);
  res = c.Do(
      http::verb::get, "/v1/channels/a",
      TokenAuthority(other).Issue(TokenAuthority::NewClaims(kRead, 0, 0, crypto::SystemRng())));
  EXPECT_EQ(res.result_int(), 401);
  EXPECT_NE(ErrorMessage(res.body()).find("does not verify"), std::string::npos);
  const std::string short_lived = Token(kRead, clock_.NowMs() + 1000);
  res = c.Do(http::verb::get, "/v1/channels/a", short_lived);
  EXPECT_EQ(res.result_int(), 200);
  clock_.AdvanceMs(1000);
  res = c.Do(http::verb::get, "/v1/channels/a", short_lived);
  EXPECT_EQ(res.result_int(), 401);
  EXPECT_NE(ErrorMessage(res.body()).find("expired"), std::string::npos);
  res = c.Do(http::verb::post, "/v1/channels/a/close", Token(kRead | kTip), "{}");
  EXPECT_EQ(res.result_int(), 403);
  EXPECT_EQ(ErrorCode(res.body()), "permission_denied");
  EXPECT_EQ(ErrorMessage(res.body()), "token lacks scope 'admin' (it has: read,tip)");
  res = c.Do(http::verb::get, "/health");
  EXPECT_EQ(res.result_int(), 200);  // public route
  res = c.Do(http::verb::get, "/metrics", Token(kRead));
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_NE(res.body().find("tipd_rpc_requests_total{route=\"/v1/channels/{id}\",code=\"401\"} 4"),
            std::string::npos)
      << res.body();
}

TEST_F(RpcServerTest, AsyncResponderAnswersLaterAndDroppedOneIs500) {
  Start();
  Client c(port_);
  auto fut =
      std::async(std::launch::async, [&] { return c.Do(http::verb::post, "/v1/later", "", "{}"); });
  ASSERT_TRUE(WaitFor([&] { return pending_.size() == 1; }));
  OnIo([&] {
    tipd::v1::ApiError e;
    e.set_code("done");
    pending_[0].Send(ApiResponse::Json(e, 202));
    pending_[0].Send(ApiResponse::Json(e, 200));  // second answer ignored
    EXPECT_TRUE(pending_[0].answered());
  });
  auto res = fut.get();
  EXPECT_EQ(res.result_int(), 202);
  EXPECT_EQ(ErrorCode(res.body()), "done");
  res = c.Do(http::verb::get, "/v1/drop");
  EXPECT_EQ(res.result_int(), 500);
  EXPECT_EQ(ErrorMessage(res.body()), "handler did not answer");
}

TEST_F(RpcServerTest, SlowClientTimesOut) {
  RpcLimits limits;
  limits.read_timeout = std::chrono::milliseconds(200);
  Start(limits);
  Client c(port_);
  c.WriteRaw("GET /health HTTP/1.1\r\nHost: x\r\n");  // never finishes the header
  EXPECT_TRUE(c.ReadUntilClosed());                   // closed well before 10 s
  Client idle(port_);
  auto res = idle.Do(http::verb::get, "/health");
  EXPECT_EQ(res.result_int(), 200);
  EXPECT_TRUE(idle.ReadUntilClosed());  // keep-alive idle also times out
}

TEST_F(RpcServerTest, ConnectionLimitAnswers503WhenEveryConnectionIsBusy) {
  RpcLimits limits;
  limits.max_connections = 1;
  Start(limits);
  Client first(port_);
  first.WriteRaw("POST /v1/later HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  {
    std::unique_lock<std::mutex> l(mu_);
    ASSERT_TRUE(cv_.wait_for(l, std::chrono::seconds(10), [&] { return !pending_.empty(); }));
  }
  Client second(port_);  // the only slot is busy in a handler: 503
  auto res = second.Read();
  EXPECT_EQ(res.result_int(), 503);
  EXPECT_EQ(ErrorCode(res.body()), "unavailable");
  net::post(io_, [this] { pending_[0].Send(ApiResponse::Text(200, "text/plain", "late")); });
  auto late = first.Read();
  EXPECT_EQ(late.result_int(), 200);
  EXPECT_EQ(late.body(), "late");
}

TEST_F(RpcServerTest, AtTheLimitTheLongestIdleConnectionMakesRoom) {
  RpcLimits limits;
  limits.max_connections = 2;
  Start(limits);
  Client idle(port_);  // keep-alive idle after one request
  EXPECT_EQ(idle.Do(http::verb::get, "/health").result_int(), 200);
  Client slow(port_);  // a header that never ends
  slow.WriteRaw("GET /health HTTP/1.1\r\nX-Slow: a");
  Client third(port_);  // takes the idle one's place, then the slow one's
  EXPECT_EQ(third.Do(http::verb::get, "/health").result_int(), 200);
  EXPECT_TRUE(idle.ReadUntilClosed());  // closed well before the 15 s read timeout
  Client fourth(port_);
  EXPECT_EQ(fourth.Do(http::verb::get, "/health").result_int(), 200);
  EXPECT_TRUE(slow.ReadUntilClosed());
}

// A second stream route that takes whatever StartEventStream gives.
class RpcStreamLimitTest : public RpcServerTest {
 protected:
  void AddRoutes() override {
    server_->HandleAsync(HttpMethod::kGet, "/v1/events2", RouteAuth::Public(),
                         [this](ApiRequest, Responder r) {
                           auto s = r.StartEventStream();
                           std::lock_guard<std::mutex> l(mu_);
                           second_ = s;
                           second_answered_ = true;
                           cv_.notify_all();
                         });
  }
  std::shared_ptr<EventStream> second_;
  bool second_answered_ = false;
};

TEST_F(RpcStreamLimitTest, EventStreamsBeyondTheLimitAnswer503) {
  RpcLimits limits;
  limits.max_event_streams = 1;
  Start(limits);
  Client c(port_);
  c.WriteRaw("GET /v1/events HTTP/1.1\r\nAuthorization: Bearer " + Token(kRead) + "\r\n\r\n");
  EXPECT_EQ(c.ReadLine(), "HTTP/1.1 200 OK\r\n");
  Client d(port_);
  d.WriteRaw("GET /v1/events2 HTTP/1.1\r\n\r\n");
  auto res = d.Read();
  EXPECT_EQ(res.result_int(), 503);
  EXPECT_NE(ErrorMessage(res.body()).find("too many event streams"), std::string::npos);
  {
    std::unique_lock<std::mutex> l(mu_);
    ASSERT_TRUE(cv_.wait_for(l, std::chrono::seconds(10), [&] { return second_answered_; }));
    EXPECT_EQ(second_, nullptr);
  }
  c.Close();  // frees the slot
  {
    std::unique_lock<std::mutex> l(mu_);
    ASSERT_TRUE(cv_.wait_for(l, std::chrono::seconds(10), [&] { return stream_closed_; }));
  }
  Client e(port_);
  e.WriteRaw("GET /v1/events2 HTTP/1.1\r\n\r\n");
  EXPECT_EQ(e.ReadLine(), "HTTP/1.1 200 OK\r\n");
  net::post(io_, [this] {
    std::lock_guard<std::mutex> l(mu_);
    second_.reset();
  });
}

TEST_F(RpcServerTest, EventStreamDeliversInOrderAndDetectsDisconnect) {
  Start();
  Client c(port_);
  c.WriteRaw("GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + Token(kRead) +
             "\r\n\r\n");
  ASSERT_TRUE(WaitFor([&] { return stream_ != nullptr; }));
  EXPECT_EQ(c.ReadLine(), "HTTP/1.1 200 OK\r\n");
  bool saw_type = false;
  for (std::string line = c.ReadLine(); line != "\r\n"; line = c.ReadLine()) {
    if (line == "Content-Type: text/event-stream\r\n") saw_type = true;
  }
  EXPECT_TRUE(saw_type);
  OnIo([&] {
    for (int i = 1; i <= 20; ++i) {
      EXPECT_TRUE(
          stream_->Send(std::to_string(i), "tip_received", "{\"n\":" + std::to_string(i) + "}"));
    }
    EXPECT_TRUE(stream_->Send("", "", "two\nlines"));
  });
  for (int i = 1; i <= 20; ++i) {
    EXPECT_EQ(c.ReadLine(), "id: " + std::to_string(i) + "\n");
    EXPECT_EQ(c.ReadLine(), "event: tip_received\n");
    EXPECT_EQ(c.ReadLine(), "data: {\"n\":" + std::to_string(i) + "}\n");
    EXPECT_EQ(c.ReadLine(), "\n");
  }
  EXPECT_EQ(c.ReadLine(), "data: two\n");
  EXPECT_EQ(c.ReadLine(), "data: lines\n");
  EXPECT_EQ(c.ReadLine(), "\n");
  c.Close();
  ASSERT_TRUE(WaitFor([&] { return stream_closed_; }));
  OnIo([&] {
    EXPECT_TRUE(stream_->closed());
    EXPECT_FALSE(stream_->Send("21", "x", "y"));
  });
}

// Spending cap through the API: many concurrent requests each reserve, the
// handler answers later (as POST /v1/tips will), and the total never passes
// the cap, also after a restart of the limiter.
class SpendRpcTest : public RpcServerTest {
 protected:
  void AddRoutes() override {
    auto db = storage::Database::Open(dir_.path() / "db");
    ASSERT_TRUE(db.ok());
    db_ = std::move(*db);
    limiter_ = std::make_unique<SpendLimiter>(db_.get(), clock_);
    server_->HandleAsync(HttpMethod::kPost, "/v1/spend", RouteAuth::Needs(Scope::kTip),
                         [this](ApiRequest req, Responder r) {
                           tipd::v1::TipRequest tip;
                           Status s = ParseJson(req.body, &tip);
                           if (!s.ok()) return r.Send(ApiResponse::FromStatus(s));
                           auto res = limiter_->Reserve(*req.token, tip.amount());
                           if (!res.ok()) return r.Send(ApiResponse::FromStatus(res.status()));
                           // Complete on a later turn of the loop, so reservations overlap.
                           auto held = std::make_shared<Reservation>(std::move(*res));
                           net::post(io_, [this, held, r] {
                             Status c = limiter_->Commit(std::move(*held));
                             r.Send(c.ok() ? ApiResponse::Text(200, "application/json", "{}")
                                           : ApiResponse::FromStatus(c));
                           });
                         });
  }
  testing::TempDir dir_;
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<SpendLimiter> limiter_;
};

TEST_F(SpendRpcTest, ConcurrentRequestsNeverExceedCap) {
  Start();
  TokenClaims claims = TokenAuthority::NewClaims(kTip, 0, 100, crypto::SystemRng());
  const std::string tok = authority_.Issue(claims);
  std::atomic<int> ok{0}, capped{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&] {
      Client c(port_);
      for (int i = 0; i < 3; ++i) {
        auto res = c.Do(http::verb::post, "/v1/spend", tok, "{\"amount\": \"9\"}");
        if (res.result_int() == 200) {
          ++ok;
        } else {
          EXPECT_EQ(res.result_int(), 429) << res.body();
          EXPECT_EQ(ErrorCode(res.body()), "resource_exhausted");
          ++capped;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 11);  // 11 * 9 = 99 <= 100 < 108
  EXPECT_EQ(capped.load(), 48 - 11);
  OnIo([&] {
    EXPECT_EQ(limiter_->SpentToday(claims.id).value(), 99u);
    // Restart: a new limiter on the same database remembers the day.
    limiter_ = std::make_unique<SpendLimiter>(db_.get(), clock_);
    EXPECT_EQ(limiter_->SpentToday(claims.id).value(), 99u);
  });
  Client c(port_);
  EXPECT_EQ(c.Do(http::verb::post, "/v1/spend", tok, "{\"amount\": \"2\"}").result_int(), 429);
  EXPECT_EQ(c.Do(http::verb::post, "/v1/spend", tok, "{\"amount\": \"1\"}").result_int(), 200);
}

TEST(ApiResponseTest, StatusMapping) {
  EXPECT_EQ(ApiResponse::FromStatus(Status::InvalidArgument("x")).status, 400);
  EXPECT_EQ(ApiResponse::FromStatus(Status::NotFound("x")).status, 404);
  EXPECT_EQ(ApiResponse::FromStatus(Status::FailedPrecondition("x")).status, 409);
  EXPECT_EQ(ApiResponse::FromStatus(Status::ResourceExhausted("x")).status, 429);
  EXPECT_EQ(ApiResponse::FromStatus(Status::IOError("x")).status, 500);
  EXPECT_EQ(ApiResponse::Error(404, "not_found", "m").body,
            "{\"code\":\"not_found\",\"message\":\"m\"}");
}

// Token records at the server (api/token_registry.h): revoked and expired
// tokens get their own 401 codes, a revocation ends the token's open event
// streams (and only its), and a rate limit hit by concurrent requests lets
// exactly the allowed number through.
class TokenRpcTest : public RpcServerTest {
 protected:
  void AddRoutes() override {
    auto db = storage::Database::Open(dir_.path() / "db");
    ASSERT_TRUE(db.ok());
    db_ = std::move(*db);
    auto reg = TokenRegistry::Open(db_.get(), clock_, nullptr);
    ASSERT_TRUE(reg.ok());
    registry_ = std::move(*reg);
    server_->SetTokenRegistry(registry_.get());
    server_->HandleAsync(HttpMethod::kGet, "/v1/streams-test", RouteAuth::Needs(Scope::kRead),
                         [this](ApiRequest req, Responder r) {
                           auto s = r.StartEventStream();
                           ASSERT_NE(s, nullptr);
                           std::lock_guard<std::mutex> l(mu_);
                           streams_[req.token->IdHex()] = s;
                           cv_.notify_all();
                         });
    server_->HandleAsync(
        HttpMethod::kPost, "/v1/admit", RouteAuth::Needs(Scope::kTip),
        [this](ApiRequest req, Responder r) {
          TokenRefusal refusal;
          auto a = registry_->AdmitTip(*req.token, std::string(32, '\1'), std::string(66, '0'), 1,
                                       &refusal);
          if (!a.ok()) {
            ApiResponse res =
                ApiResponse::Error(refusal.http_status, refusal.code, refusal.message);
            if (refusal.retry_after_ms > 0) {
              res.headers.emplace_back("Retry-After",
                                       std::to_string((refusal.retry_after_ms + 999) / 1000));
            }
            return r.Send(res);
          }
          // Committed on a later turn of the loop, so admissions overlap.
          auto held = std::make_shared<std::unique_ptr<TokenRegistry::TipAdmission>>(std::move(*a));
          net::post(io_, [held, r] {
            storage::WriteBatch batch;
            (*held)->CommitToBatch(&batch);
            r.Send(ApiResponse::Text(200, "application/json", "{}"));
          });
        });
  }
  TokenClaims Record(uint32_t scopes, uint64_t expires, uint32_t rate = 0) {
    TokenClaims c = TokenAuthority::NewClaims(scopes, expires, 0, crypto::SystemRng());
    v1::CreateTokenRequest req;
    req.set_rate_per_minute(rate);
    auto rec = NewTokenRecord(c, req, "test", clock_.NowMs());
    EXPECT_TRUE(rec.ok());
    EXPECT_TRUE(registry_->Create(c, *rec).ok());
    return c;
  }
  void OpenStream(Client& c, const std::string& token) {
    c.WriteRaw("GET /v1/streams-test HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
               "\r\n\r\n");
    EXPECT_EQ(c.ReadLine(), "HTTP/1.1 200 OK\r\n");
    for (std::string line = c.ReadLine(); line != "\r\n"; line = c.ReadLine()) {
    }
  }
  testing::TempDir dir_;
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<TokenRegistry> registry_;
  std::map<std::string, std::shared_ptr<EventStream>> streams_;
};

TEST_F(TokenRpcTest, RevokedAndExpiredTokensGetTheirOwnCodes) {
  Start();
  const TokenClaims keep = Record(kRead, 0);
  const TokenClaims gone = Record(kRead, 0);
  const TokenClaims brief = Record(kRead, clock_.NowMs() + 1000);
  Client c(port_);
  EXPECT_EQ(c.Do(http::verb::get, "/v1/channels/a", authority_.Issue(gone)).result_int(), 200);
  OnIo([&] { ASSERT_TRUE(registry_->Revoke(gone.id, false).ok()); });
  auto res = c.Do(http::verb::get, "/v1/channels/a", authority_.Issue(gone));
  EXPECT_EQ(res.result_int(), 401);
  EXPECT_EQ(ErrorCode(res.body()), "TOKEN_REVOKED");
  EXPECT_EQ(c.Do(http::verb::get, "/v1/channels/a", authority_.Issue(keep)).result_int(), 200);
  clock_.AdvanceMs(1000);
  res = c.Do(http::verb::get, "/v1/channels/a", authority_.Issue(brief));
  EXPECT_EQ(res.result_int(), 401);
  EXPECT_EQ(ErrorCode(res.body()), "TOKEN_EXPIRED");
  // A token of another node's key: the existing code, nothing recorded.
  crypto::Key32 other;
  other.fill(1);
  TokenClaims foreign = TokenAuthority::NewClaims(kRead, 0, 0, crypto::SystemRng());
  res = c.Do(http::verb::get, "/v1/channels/a", TokenAuthority(other).Issue(foreign));
  EXPECT_EQ(res.result_int(), 401);
  EXPECT_EQ(ErrorCode(res.body()), "unauthenticated");
  OnIo([&] { EXPECT_FALSE(registry_->Get(foreign.id).has_value()); });
  // Last use was noted for the token that passed.
  OnIo([&] { EXPECT_EQ(registry_->Get(keep.id)->last_used_ms(), 1'700'000'000'000u); });
}

TEST_F(TokenRpcTest, RevocationEndsOnlyThatTokensStreamsWithAFinalErrorEvent) {
  Start();
  const TokenClaims a = Record(kRead, 0);
  const TokenClaims b = Record(kRead, 0);
  Client ca(port_), cb(port_);
  OpenStream(ca, authority_.Issue(a));
  OpenStream(cb, authority_.Issue(b));
  ASSERT_TRUE(WaitFor([&] { return streams_.size() == 2; }));
  size_t ended = 0;
  OnIo([&] {
    ASSERT_TRUE(registry_->Revoke(a.id, false).ok());
    ended = server_->EndTokenStreams(
        [&](const TokenClaims& t) -> std::optional<std::pair<std::string, std::string>> {
          if (!registry_->IsRevoked(t.id)) return std::nullopt;
          return std::make_pair(std::string("TOKEN_REVOKED"), std::string("revoked"));
        });
  });
  EXPECT_EQ(ended, 1u);
  EXPECT_EQ(ca.ReadLine(), "event: error\n");
  EXPECT_EQ(ca.ReadLine(), "data: {\"code\":\"TOKEN_REVOKED\",\"message\":\"revoked\"}\n");
  EXPECT_EQ(ca.ReadLine(), "\n");
  std::string rest;
  EXPECT_TRUE(ca.ReadUntilClosed(&rest));  // closed by the server, not by our timeout
  EXPECT_EQ(rest, "");
  OnIo([&] {
    EXPECT_TRUE(streams_[a.IdHex()]->closed());
    EXPECT_FALSE(streams_[a.IdHex()]->Send("1", "x", "y"));
    EXPECT_TRUE(streams_[b.IdHex()]->Send("1", "tip_received", "{}"));
  });
  EXPECT_EQ(cb.ReadLine(), "id: 1\n");
  EXPECT_EQ(cb.ReadLine(), "event: tip_received\n");
}

TEST_F(TokenRpcTest, ConcurrentRequestsPassTheRateLimitExactly) {
  Start();
  const TokenClaims claims = Record(kTip, 0, /*rate=*/10);
  const std::string tok = authority_.Issue(claims);
  std::atomic<int> ok{0}, limited{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&] {
      Client c(port_);
      for (int i = 0; i < 4; ++i) {
        auto res = c.Do(http::verb::post, "/v1/admit", tok, "{}");
        if (res.result_int() == 200) {
          ++ok;
        } else {
          EXPECT_EQ(res.result_int(), 429) << res.body();
          EXPECT_EQ(ErrorCode(res.body()), "TOKEN_RATE_LIMITED");
          EXPECT_EQ(res[http::field::retry_after], "60");  // the clock stands still
          ++limited;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 10);
  EXPECT_EQ(limited.load(), 64 - 10);
  // A minute later the window is empty again.
  clock_.AdvanceMs(60'000);
  Client c(port_);
  EXPECT_EQ(c.Do(http::verb::post, "/v1/admit", tok, "{}").result_int(), 200);
}

}  // namespace
}  // namespace tipd::api
