#include "api/http_client.h"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "api/rpc_server.h"
#include "tipd/api.pb.h"

namespace tipd::api {
namespace {

namespace net = boost::asio;

// ---------------------------------------------------------------------------
// ParseHttpUrl
// ---------------------------------------------------------------------------

TEST(ParseHttpUrlTest, Accepts) {
  auto u = ParseHttpUrl("http://127.0.0.1:8080\n");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->base_path, "");
  EXPECT_EQ(u->ToString(), "http://127.0.0.1:8080");

  u = ParseHttpUrl("HTTP://[::1]:9000/tipd/");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 9000);
  EXPECT_EQ(u->base_path, "/tipd");
  EXPECT_EQ(u->ToString(), "http://[::1]:9000/tipd");

  u = ParseHttpUrl("http://localhost");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 80);
}

TEST(ParseHttpUrlTest, RejectsWithAClearReason) {
  struct Case {
    const char* url;
    const char* says;
  };
  for (const Case& c : std::vector<Case>{
           {"https://127.0.0.1:8080", "https is not supported"},
           {"127.0.0.1:8080", "no http:// scheme"},
           {"ftp://x:1", "only http"},
           {"http://:8080", "no host"},
           {"http://127.0.0.1:0", "port must be 1..65535"},
           {"http://127.0.0.1:70000", "port must be 1..65535"},
           {"http://127.0.0.1:80x", "port must be 1..65535"},
           {"http://127.0.0.1:", "empty port"},
           {"http://::1:8080", "brackets"},
           {"http://[::1:8080", "missing ']'"},
           {"http://h:1/?a=b", "query"},
           {"http://u@h:1", "user info"},
       }) {
    auto u = ParseHttpUrl(c.url);
    ASSERT_FALSE(u.ok()) << c.url;
    EXPECT_EQ(u.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(u.status().message().find(c.says), std::string::npos) << u.status().message();
    EXPECT_NE(u.status().message().find("http://127.0.0.1:8080"), std::string::npos);
  }
}

// ---------------------------------------------------------------------------
// SseParser
// ---------------------------------------------------------------------------

struct Ev {
  std::string id, type, data;
  bool operator==(const Ev&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Ev& e) {
  return os << "{" << e.id << "," << e.type << "," << e.data << "}";
}

std::vector<Ev> ParseAll(const std::vector<std::string>& chunks) {
  std::vector<Ev> out;
  SseParser p([&](const std::string& id, const std::string& type, const std::string& data) {
    out.push_back({id, type, data});
    return true;
  });
  for (const auto& c : chunks) EXPECT_TRUE(p.Feed(c));
  return out;
}

TEST(SseParserTest, FieldsCommentsMultiLineDataAndLineEndings) {
  const std::string text =
      ": hello, a comment\n"
      "id: 1\nevent: tip_received\ndata: {\"a\":1}\n\n"
      "data: two\r\ndata:lines\r\n\r\n"  // id persists; default type; no space
      "id: 3\rdata\r\r"                  // CR endings; "data" alone is an empty value
      "retry: 100\nunknown: x\nid: 4\nevent: ack\ndata:  padded\n\n"
      "event: nodata\n\n"         // no data: not dispatched
      "id: 5\ndata: incomplete";  // never terminated: not dispatched
  const std::vector<Ev> want = {{"1", "tip_received", "{\"a\":1}"},
                                {"1", "message", "two\nlines"},
                                {"3", "message", ""},
                                {"4", "ack", " padded"}};
  EXPECT_EQ(ParseAll({text}), want);
  // The same bytes split at every position parse the same.
  for (size_t i = 1; i < text.size(); ++i) {
    EXPECT_EQ(ParseAll({text.substr(0, i), text.substr(i)}), want) << "split at " << i;
  }
}

TEST(SseParserTest, StopsWhenTheCallbackSaysSo) {
  int calls = 0;
  SseParser p(
      [&](const std::string&, const std::string&, const std::string&) { return ++calls < 2; });
  EXPECT_FALSE(p.Feed("data: 1\n\ndata: 2\n\ndata: 3\n\n"));
  EXPECT_EQ(calls, 2);
  EXPECT_FALSE(p.Feed("data: 4\n\n"));
  EXPECT_EQ(calls, 2);
}

// ---------------------------------------------------------------------------
// HttpClient against a real RpcServer on loopback
// ---------------------------------------------------------------------------

class HttpClientTest : public ::testing::Test {
 protected:
  HttpClientTest() : authority_(MakeKey()) {}
  static crypto::Key32 MakeKey() {
    crypto::Key32 k;
    k.fill(0x17);
    return k;
  }

  void Start(RpcLimits limits = {}) {
    server_ = std::make_unique<RpcServer>(io_, authority_, clock_, limits);
    server_->Handle(HttpMethod::kGet, "/v1/info", RouteAuth::Needs(Scope::kRead),
                    [](const ApiRequest& r) {
                      tipd::v1::InfoResponse info;
                      info.set_node_id("n");
                      info.set_version(r.target);
                      return ApiResponse::Json(info);
                    });
    server_->Handle(HttpMethod::kPost, "/v1/echo", RouteAuth::Needs(Scope::kAdmin),
                    [](const ApiRequest& r) {
                      tipd::v1::TransferRequest req;
                      Status s = ParseJson(r.body, &req);
                      if (!s.ok()) return ApiResponse::FromStatus(s);
                      return ApiResponse::Json(req);
                    });
    server_->HandleAsync(HttpMethod::kGet, "/v1/never", RouteAuth::Public(),
                         [this](ApiRequest, Responder r) { parked_.push_back(std::move(r)); });
    server_->HandleAsync(HttpMethod::kGet, "/v1/events", RouteAuth::Needs(Scope::kRead),
                         [this](ApiRequest req, Responder r) {
                           auto s = r.StartEventStream();
                           ASSERT_NE(s, nullptr);
                           s->SendComment("keepalive");
                           s->Send("41", "tip_received", "{\"n\":1}");
                           s->Send("42", "ack", "multi\nline");
                           std::lock_guard<std::mutex> l(mu_);
                           last_event_id_ = req.Header("last-event-id");
                           stream_ = s;
                           cv_.notify_all();
                         });
    auto port = server_->Listen("127.0.0.1", 0);
    ASSERT_TRUE(port.ok()) << port.status().ToString();
    url_.host = "127.0.0.1";
    url_.port = *port;
    thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    if (thread_.joinable()) {
      net::post(io_, [this] {
        parked_.clear();
        stream_.reset();
        server_->Stop();
      });
      guard_.reset();
      thread_.join();
    }
  }

  template <class F>
  void OnIo(F f) {
    std::promise<void> done;
    net::post(io_, [&] {
      f();
      done.set_value();
    });
    ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  }

  std::string Token(Scope scope) {
    return authority_.Issue(
        TokenAuthority::NewClaims(static_cast<uint32_t>(scope), 0, 0, crypto::SystemRng()));
  }

  net::io_context io_;
  net::executor_work_guard<net::io_context::executor_type> guard_{io_.get_executor()};
  TokenAuthority authority_;
  ManualClock clock_{1'700'000'000'000};
  std::unique_ptr<RpcServer> server_;
  HttpUrl url_;
  std::thread thread_;
  std::vector<Responder> parked_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<EventStream> stream_;
  std::string last_event_id_;
};

TEST_F(HttpClientTest, RequestsReuseOneConnection) {
  Start();
  HttpClient client(url_, Token(Scope::kAdmin));
  for (int i = 0; i < 5; ++i) {
    auto res = client.Request("GET", "/v1/info?i=" + std::to_string(i));
    ASSERT_TRUE(res.ok()) << res.status().ToString();
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->headers["content-type"], "application/json");
    EXPECT_NE(res->body.find("\"version\":\"/v1/info?i=" + std::to_string(i) + "\""),
              std::string::npos)
        << res->body;
  }
  auto res = client.Request("POST", "/v1/echo", R"({"to":"ab","amount":"7"})");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->body.find("\"amount\":\"7\""), std::string::npos) << res->body;
  // An error answer is a response, not a transport error; the connection stays.
  res = client.Request("POST", "/v1/echo", R"({"bogus":1})");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 400);
  Status s = HttpClient::ApiErrorStatus(*res);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("(invalid_argument, HTTP 400)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("bogus"), std::string::npos) << s.message();
  EXPECT_EQ(client.connections_opened(), 1);
}

TEST_F(HttpClientTest, ReconnectsOnceWhenTheServerClosedTheIdleConnection) {
  RpcLimits limits;
  limits.read_timeout = std::chrono::milliseconds(200);  // also the keep-alive idle time
  Start(limits);
  HttpClient client(url_, Token(Scope::kRead));
  auto res = client.Request("GET", "/v1/info");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  // Wait (with a deadline) until the server has closed the idle connection.
  auto open_connections = [&] {
    std::promise<size_t> count;
    auto answer = count.get_future();
    net::post(io_, [&] { count.set_value(server_->connection_count()); });
    return answer.get();
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (open_connections() != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(open_connections(), 0u);
  res = client.Request("GET", "/v1/info");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(client.connections_opened(), 2);
}

TEST_F(HttpClientTest, MissingTokenIsAnAnswerWithTheApiError) {
  Start();
  HttpClient client(url_, "");
  auto res = client.Request("GET", "/v1/info");
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(res->headers.count("www-authenticate"), 1u);
  Status s = HttpClient::ApiErrorStatus(*res);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("(unauthenticated, HTTP 401)"), std::string::npos) << s.message();
}

TEST_F(HttpClientTest, TimeoutNamesTheTimeout) {
  Start();
  HttpClient client(url_, "", std::chrono::milliseconds(300));
  auto t0 = std::chrono::steady_clock::now();
  auto res = client.Request("GET", "/v1/never");
  ASSERT_FALSE(res.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(res.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(res.status().message().find("did not answer within 300ms (GET /v1/never)"),
            std::string::npos)
      << res.status().message();
}

TEST(HttpClientNoServerTest, ConnectionRefusedSaysIsTheNodeRunning) {
  // Bind then close a socket to get a port nobody listens on.
  uint16_t port = 0;
  {
    net::io_context io;
    net::ip::tcp::acceptor a(io, {net::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }
  HttpClient client(HttpUrl{"127.0.0.1", port, ""}, "t", std::chrono::seconds(5));
  auto res = client.Request("GET", "/v1/info");
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(res.status().message(),
            "cannot reach tipd at http://127.0.0.1:" + std::to_string(port) +
                ": connection refused; is the node running? (GET "
                "/v1/info)");
  Status s = client.Stream("/v1/events", {}, [](auto&, auto&, auto&) { return true; });
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("connection refused"), std::string::npos) << s.message();
}

TEST_F(HttpClientTest, StreamDeliversEventsUntilTheCallbackStops) {
  Start();
  HttpClient client(url_, Token(Scope::kRead));
  std::vector<Ev> got;
  Status s =
      client.Stream("/v1/events", {{"Last-Event-ID", "40"}},
                    [&](const std::string& id, const std::string& type, const std::string& data) {
                      got.push_back({id, type, data});
                      return got.size() < 2;
                    });
  ASSERT_TRUE(s.ok()) << s.ToString();
  const std::vector<Ev> want = {{"41", "tip_received", "{\"n\":1}"}, {"42", "ack", "multi\nline"}};
  EXPECT_EQ(got, want);
  std::lock_guard<std::mutex> l(mu_);
  EXPECT_EQ(last_event_id_, "40");
}

TEST_F(HttpClientTest, StreamEndsWhenTheServerClosesOrOnCancel) {
  Start();
  HttpClient client(url_, Token(Scope::kRead));
  std::mutex m;
  std::condition_variable cv;
  int count = 0;
  Status result = Status::Internal("not run");
  auto run = [&] {
    Status s = client.Stream("/v1/events", {}, [&](auto&, auto&, auto&) {
      std::lock_guard<std::mutex> l(m);
      ++count;
      cv.notify_all();
      return true;
    });
    std::lock_guard<std::mutex> l(m);
    result = s;
  };
  // The server closes the stream.
  std::thread t(run);
  {
    std::unique_lock<std::mutex> l(m);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(10), [&] { return count == 2; }));
  }
  OnIo([&] { stream_->Close(); });
  t.join();
  EXPECT_TRUE(result.ok()) << result.ToString();

  // Cancel from another thread while the stream is idle.
  count = 0;
  result = Status::Internal("not run");
  std::thread t2(run);
  {
    std::unique_lock<std::mutex> l(m);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(10), [&] { return count == 2; }));
  }
  client.Cancel();
  t2.join();
  EXPECT_TRUE(result.ok()) << result.ToString();
}

TEST_F(HttpClientTest, StreamErrorAnswerIsAStatusAndTheResponse) {
  Start();
  HttpClient client(url_, Token(Scope::kTip));  // no read scope
  HttpResponse error;
  Status s = client.Stream(
      "/v1/events", {}, [](auto&, auto&, auto&) { return true; }, &error);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("(permission_denied, HTTP 403)"), std::string::npos) << s.message();
  EXPECT_EQ(error.status, 403);
  EXPECT_NE(error.body.find("permission_denied"), std::string::npos) << error.body;
}

TEST(ApiErrorStatusTest, NonJsonBody) {
  HttpResponse r;
  r.status = 502;
  r.body = "bad gateway\n";
  Status s = HttpClient::ApiErrorStatus(r);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(), "HTTP 502: bad gateway");
}

}  // namespace
}  // namespace tipd::api
