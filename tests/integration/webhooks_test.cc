// Webhooks of real `tipd node` processes on loopback (docs/api.md
// "Webhooks"): a receiver in the test (plain HTTP, or TLS with a CA made at
// test time by the `openssl` CLI) that checks every signature with its own
// HMAC (OpenSSL's one-shot HMAC, not the node's crypto/), kill -9 of the
// node mid-delivery, a receiver that never answers, one that answers a
// huge body, and the URL policy of POST /v1/webhooks.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "tests/integration/channel_fixture.h"

namespace tipd::testing {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

std::string B64(const unsigned char* p, size_t n) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = uint32_t{p[i]} << 16;
    if (i + 1 < n) v |= uint32_t{p[i + 1]} << 8;
    if (i + 2 < n) v |= p[i + 2];
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += i + 1 < n ? k[(v >> 6) & 63] : '=';
    out += i + 2 < n ? k[v & 63] : '=';
  }
  return out;
}

std::string UnB64(const std::string& in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char* at = std::strchr(k, c);
    if (c == '=' || at == nullptr) break;
    acc = (acc << 6) | static_cast<uint32_t>(at - k);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

// The receiver's own check of a Standard Webhooks signature header.
bool Verifies(const std::string& secret, const std::string& id, const std::string& ts,
              const std::string& body, const std::string& header) {
  const std::string content = id + "." + ts + "." + body;
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(content.data()), content.size(), mac, &len);
  const std::string expected = "v1," + B64(mac, len);
  size_t pos = 0;
  while (pos < header.size()) {
    size_t end = header.find(' ', pos);
    if (end == std::string::npos) end = header.size();
    if (header.substr(pos, end - pos) == expected) return true;
    pos = end + 1;
  }
  return false;
}

// A webhook receiver on 127.0.0.1: one thread accepts, one thread per
// connection reads one request and answers as the mode says.
class Receiver {
 public:
  enum class Mode { kOk, kHold, kHugeBody, kFail };
  struct Got {
    uint64_t event_id = 0;
    std::string type;
    std::string body;
    bool verified = false;
  };

  explicit Receiver(net::ssl::context* tls = nullptr) : tls_(tls), acceptor_(io_) {
    acceptor_.open(tcp::v4());
    acceptor_.bind(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    acceptor_.listen();
    acceptor_.non_blocking(true);
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~Receiver() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    accept_thread_.join();
    {
      // A connection blocked in a read or write must not hang the test:
      // shut every open one down (its thread then sees EOF or an error).
      std::lock_guard<std::mutex> lock(mu_);
      for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : conns_) t.join();
  }

  uint16_t port() const { return port_; }
  void SetSecret(const std::string& whsec) {
    std::lock_guard<std::mutex> lock(mu_);
    secret_ = UnB64(whsec.substr(6));
  }
  void SetMode(Mode m) {
    std::lock_guard<std::mutex> lock(mu_);
    mode_ = m;
    cv_.notify_all();  // held connections are dropped on a mode change
  }
  std::vector<Got> got() {
    std::lock_guard<std::mutex> lock(mu_);
    return got_;
  }
  // Ids answered with a 2xx, in arrival order.
  std::vector<uint64_t> acked() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_;
  }
  size_t held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_;
  }
  size_t handshake_failures() {
    std::lock_guard<std::mutex> lock(mu_);
    return handshake_failures_;
  }

 private:
  void AcceptLoop() {
    while (true) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopping_) return;
      }
      boost::system::error_code ec;
      tcp::socket s(io_);
      acceptor_.accept(s, ec);
      if (ec == net::error::would_block || ec == net::error::try_again) {
        std::this_thread::sleep_for(5ms);
        continue;
      }
      if (ec) continue;
      s.non_blocking(false);
      std::lock_guard<std::mutex> lock(mu_);
      conns_.emplace_back([this, sock = std::move(s)]() mutable { Serve(std::move(sock)); });
    }
  }

  template <class Stream>
  void Handle(Stream& stream) {
    beast::flat_buffer buffer;
    http::request<http::string_body> req;
    boost::system::error_code ec;
    http::read(stream, buffer, req, ec);
    if (ec) return;
    Got g;
    const std::string id(req["webhook-id"]);
    g.event_id = id.rfind("evt_", 0) == 0 ? std::stoull(id.substr(4)) : 0;
    g.body = req.body();
    const size_t t = g.body.find("\"type\":\"");
    if (t != std::string::npos) g.type = g.body.substr(t + 8, g.body.find('"', t + 8) - t - 8);
    Mode mode;
    {
      std::lock_guard<std::mutex> lock(mu_);
      g.verified = Verifies(secret_, id, std::string(req["webhook-timestamp"]), g.body,
                            std::string(req["webhook-signature"]));
      got_.push_back(g);
      mode = mode_;
    }
    if (mode == Mode::kHold) {
      std::unique_lock<std::mutex> lock(mu_);
      ++held_;
      cv_.wait(lock, [&] { return stopping_ || mode_ != Mode::kHold; });
      --held_;
      return;  // dropped without an answer
    }
    if (mode == Mode::kHugeBody) {
      // 64 MiB announced and streamed until the node stops reading.
      const std::string head =
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 67108864\r\n\r\n";
      net::write(stream, net::buffer(head), ec);
      const std::string chunk(64 * 1024, 'x');
      for (int i = 0; i < 1024 && !ec; ++i) net::write(stream, net::buffer(chunk), ec);
      std::lock_guard<std::mutex> lock(mu_);
      acked_.push_back(g.event_id);
      return;
    }
    http::response<http::string_body> res{
        mode == Mode::kFail ? http::status::service_unavailable : http::status::ok, 11};
    res.body() = mode == Mode::kFail ? "try later" : "ok";
    res.prepare_payload();
    http::write(stream, res, ec);
    if (!ec && mode == Mode::kOk) {
      std::lock_guard<std::mutex> lock(mu_);
      acked_.push_back(g.event_id);
    }
  }

  void Serve(tcp::socket socket) {
    // Declared first so it is closed last, after the fd is unregistered.
    std::optional<net::ssl::stream<tcp::socket>> tls_stream;
    const int fd = socket.native_handle();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      open_fds_.insert(fd);
    }
    // Unregisters before the socket (a parameter) or the stream is closed.
    struct Unregister {
      Receiver* r;
      int fd;
      ~Unregister() {
        std::lock_guard<std::mutex> lock(r->mu_);
        r->open_fds_.erase(fd);
      }
    } unregister{this, fd};
    if (tls_ == nullptr) return Handle(socket);
    tls_stream.emplace(std::move(socket), *tls_);
    boost::system::error_code ec;
    tls_stream->handshake(net::ssl::stream_base::server, ec);
    if (ec) {
      std::lock_guard<std::mutex> lock(mu_);
      ++handshake_failures_;
      return;
    }
    Handle(*tls_stream);
  }

  net::ssl::context* tls_;
  net::io_context io_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::thread accept_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  Mode mode_ = Mode::kOk;
  std::string secret_;
  std::vector<Got> got_;
  std::vector<uint64_t> acked_;
  size_t held_ = 0;
  size_t handshake_failures_ = 0;
  std::vector<std::thread> conns_;
  std::set<int> open_fds_;
};

class WebhooksTest : public ChannelFixture {
 protected:
  void TwoNodes(Node* a, Node* b, std::string* ch, const std::vector<std::string>& b_flags = {}) {
    InitLedger(50);
    StartLedger();
    *a = Up("a", 0);
    *b = Up("b", 1, b_flags);
    Connect(*a, *b);
    *ch = Open(*a, *b, 100'000, 0);
    ASSERT_FALSE(ch->empty());
  }

  // POST /v1/webhooks; the answer.
  v1::CreateWebhookResponse CreateHook(const Node& n, const std::string& url,
                                       const std::string& types_json = "[]") {
    auto r = Call(n, "POST", "/v1/webhooks",
                  R"({"url":")" + url + R"(","event_types":)" + types_json + "}");
    EXPECT_EQ(r.status, 201) << r.body;
    return FromJson<v1::CreateWebhookResponse>(r.body);
  }

  static std::string Url(const Receiver& r, bool https = false) {
    return std::string(https ? "https" : "http") + "://127.0.0.1:" + std::to_string(r.port()) +
           "/hook";
  }

  std::vector<v1::WebhookDelivery> Deliveries(const Node& n, const std::string& id) {
    auto r = Call(n, "GET", "/v1/webhooks/" + id + "/deliveries?limit=100");
    EXPECT_EQ(r.status, 200) << r.body;
    auto parsed = FromJson<v1::ListWebhookDeliveriesResponse>(r.body);
    return {parsed.deliveries().begin(), parsed.deliveries().end()};
  }
};

TEST_F(WebhooksTest, SignedInOrderAndAKilledNodeResendsWithNothingSkipped) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(&a, &b, &ch));
  Receiver rx;
  const auto created = CreateHook(b, Url(rx), R"(["tip_received"])");
  rx.SetSecret(created.secret());
  const std::string id = created.webhook().id();

  constexpr int kBefore = 5;
  for (int i = 0; i < kBefore; ++i) {
    ASSERT_EQ(Tip(a, ch, 1, "hook " + std::to_string(i), "k" + std::to_string(i)).status, 200);
  }
  ASSERT_TRUE(WaitFor([&] { return rx.acked().size() == kBefore; })) << rx.acked().size();

  // The next delivery is held by the receiver; the node dies mid-delivery.
  rx.SetMode(Receiver::Mode::kHold);
  ASSERT_EQ(Tip(a, ch, 1, "in flight", "k-held").status, 200);
  ASSERT_TRUE(WaitFor([&] { return rx.held() == 1; }));
  const uint64_t held_id = rx.got().back().event_id;
  ASSERT_NO_FATAL_FAILURE(Kill(b, SIGKILL));
  rx.SetMode(Receiver::Mode::kOk);
  ASSERT_NO_FATAL_FAILURE(Restart(b));
  constexpr int kAfter = 4;
  for (int i = 0; i < kAfter; ++i) {
    // b may still be reconnecting: a tip is answered 200 once acked.
    ASSERT_TRUE(WaitFor([&] {
      return Tip(a, ch, 1, "after " + std::to_string(i), "a" + std::to_string(i)).status == 200;
    }));
  }
  const size_t total = kBefore + 1 + kAfter;
  ASSERT_TRUE(WaitFor([&] {
    const std::vector<uint64_t> acked = rx.acked();
    return std::set<uint64_t>(acked.begin(), acked.end()).size() == total;
  })) << rx.acked().size();

  // The held event was sent again after the restart (at least once).
  const std::vector<uint64_t> acked = rx.acked();
  EXPECT_NE(std::find(acked.begin(), acked.end(), held_id), acked.end());
  // In order: the acked ids never go backwards.
  EXPECT_TRUE(std::is_sorted(acked.begin(), acked.end()));
  // Every delivery was signed right and is a tip_received event; nothing
  // skipped: b's received-tip history has exactly as many tips.
  for (const auto& g : rx.got()) {
    EXPECT_TRUE(g.verified) << g.body;
    EXPECT_EQ(g.type, "tip_received") << g.body;
  }
  const auto received = History(b, ch, "received");
  EXPECT_EQ(received.size(), total);
  // The tip body is loaded from the tip history for every delivery (events
  // are stored by reference): each carries its tip whole, and the held event
  // sent before the kill and again after the restart is byte for byte the
  // same.
  std::vector<std::string> held_bodies;
  for (const auto& g : rx.got()) {
    const auto event = FromJson<v1::Event>(g.body);
    EXPECT_EQ(g.body.find("tip_unavailable"), std::string::npos) << g.body;
    auto it = received.find(event.tip().tip().index());
    ASSERT_NE(it, received.end()) << g.body;
    EXPECT_EQ(event.tip().tip().SerializeAsString(), it->second.tip().SerializeAsString())
        << g.body;
    EXPECT_EQ(event.tip().tip().amount(), 1u);
    EXPECT_FALSE(event.tip().tip().message().empty()) << g.body;
    if (g.event_id == held_id) held_bodies.push_back(g.body);
  }
  ASSERT_GE(held_bodies.size(), 2u);
  for (const std::string& body : held_bodies) EXPECT_EQ(body, held_bodies.front());
  EXPECT_EQ(FromJson<v1::Event>(held_bodies.front()).tip().tip().message(), "in flight");
  auto hook = FromJson<v1::Webhook>(Call(b, "GET", "/v1/webhooks/" + id).body);
  EXPECT_TRUE(hook.enabled());
  EXPECT_GE(hook.cursor(), acked.back());  // later events of other types are skipped
}

TEST_F(WebhooksTest, TlsReceiverIsTrustedWithTheCaFileAndRefusedWithout) {
  const std::filesystem::path dir = dir_.path() / "tls";
  std::filesystem::create_directories(dir);
  const std::string d = dir.string();
  const std::string script =
      "cd '" + d + "' && " +
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
      "-keyout ca.key -out ca.pem -days 2 -subj /CN=tipd-test-ca >/dev/null 2>&1 && "
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key "
      "-out server.csr -subj /CN=127.0.0.1 >/dev/null 2>&1 && "
      "printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem "
      "-days 2 -extfile ext.cnf >/dev/null 2>&1";
  ASSERT_EQ(std::system(script.c_str()), 0) << "openssl CLI failed in " << d;
  net::ssl::context tls(net::ssl::context::tls_server);
  tls.use_certificate_chain_file(d + "/server.pem");
  tls.use_private_key_file(d + "/server.key", net::ssl::context::pem);
  Receiver rx(&tls);

  InitLedger(50);
  StartLedger();
  Node a = Up("a", 0, {"--webhook-ca-file", d + "/ca.pem"});
  Node b = Up("b", 1);
  // Both want peer events; connecting them makes one on each side.
  const auto trusted = CreateHook(a, Url(rx, true), R"(["peer"])");
  const auto untrusted = CreateHook(b, Url(rx, true), R"(["peer"])");
  rx.SetSecret(trusted.secret());
  Connect(a, b);
  ASSERT_TRUE(WaitFor([&] { return !rx.acked().empty(); }));
  EXPECT_TRUE(rx.got().front().verified);
  EXPECT_EQ(rx.got().front().type, "peer");
  // b does not know the test CA: the handshake fails, nothing is sent, and
  // the attempt says why.
  ASSERT_TRUE(WaitFor([&] { return !Deliveries(b, untrusted.webhook().id()).empty(); }));
  const auto failed = Deliveries(b, untrusted.webhook().id()).back();
  EXPECT_EQ(failed.status_code(), 0u);
  EXPECT_NE(failed.error().find("TLS handshake"), std::string::npos) << failed.error();
  EXPECT_NE(failed.error().find("certificate verify failed"), std::string::npos) << failed.error();
  EXPECT_GT(failed.next_attempt_at_ms(), 0u);
  EXPECT_GE(rx.handshake_failures(), 1u);
  for (const auto& g : rx.got()) EXPECT_TRUE(g.verified);  // only a's requests arrived
  auto hook =
      FromJson<v1::Webhook>(Call(b, "GET", "/v1/webhooks/" + untrusted.webhook().id()).body);
  EXPECT_EQ(hook.cursor(), 0u);
  EXPECT_GT(hook.failing_since_ms(), 0u);
}

TEST_F(WebhooksTest, ASilentEndpointDelaysNeitherTipsNorAnotherEndpoint) {
  Node a, b;
  std::string ch;
  // The silent receiver's request would time out only after 10 minutes.
  ASSERT_NO_FATAL_FAILURE(TwoNodes(&a, &b, &ch, {"--webhook-timeout", "600s"}));
  Receiver silent, fast;
  silent.SetMode(Receiver::Mode::kHold);
  CreateHook(b, Url(silent), R"(["tip_received"])");
  const auto f = CreateHook(b, Url(fast), R"(["tip_received"])");
  fast.SetSecret(f.secret());
  constexpr int kTips = 20;
  for (int i = 0; i < kTips; ++i) {
    ASSERT_EQ(Tip(a, ch, 1, "t" + std::to_string(i), "t" + std::to_string(i)).status, 200);
  }
  ASSERT_TRUE(WaitFor([&] { return fast.acked().size() == kTips; })) << fast.acked().size();
  // The silent one still holds its first request, and only that one.
  EXPECT_EQ(silent.held(), 1u);
  EXPECT_EQ(silent.got().size(), 1u);
  EXPECT_EQ(History(b, ch, "received").size(), static_cast<size_t>(kTips));
}

TEST_F(WebhooksTest, AHugeResponseBodyIsCutOffAndTheCursorMovesOn) {
  Node a, b;
  std::string ch;
  ASSERT_NO_FATAL_FAILURE(TwoNodes(&a, &b, &ch));
  Receiver rx;
  rx.SetMode(Receiver::Mode::kHugeBody);
  const auto created = CreateHook(b, Url(rx), R"(["tip_received"])");
  rx.SetSecret(created.secret());
  const std::string id = created.webhook().id();
  ASSERT_EQ(Tip(a, ch, 1, "one", "h1").status, 200);
  ASSERT_EQ(Tip(a, ch, 1, "two", "h2").status, 200);
  ASSERT_TRUE(WaitFor([&] { return Deliveries(b, id).size() >= 2; }));
  const auto deliveries = Deliveries(b, id);
  for (const auto& d : deliveries) {
    EXPECT_EQ(d.status_code(), 200u);
    EXPECT_NE(d.error().find("cut off"), std::string::npos)
        << Call(b, "GET", "/v1/webhooks/" + id + "/deliveries").body;
    EXPECT_EQ(d.attempt(), 1u);  // a 2xx: not retried
  }
  auto hook = FromJson<v1::Webhook>(Call(b, "GET", "/v1/webhooks/" + id).body);
  EXPECT_GE(hook.cursor(), deliveries.front().event_id());
  EXPECT_EQ(hook.consecutive_failures(), 0u);
}

TEST_F(WebhooksTest, RefusesBadUrlsEachWithItsErrorAndManagesEndpoints) {
  InitLedger(50);
  StartLedger();
  Node a = Up("a", 0);
  struct Case {
    std::string body;
    int status;
    std::string code;
  };
  const std::vector<Case> cases = {
      {R"({"url":"ftp://127.0.0.1/x"})", 400, "BAD_WEBHOOK_URL"},
      {R"({"url":"https://user:secret@127.0.0.1/x"})", 400, "BAD_WEBHOOK_URL"},
      {R"({"url":"not a url"})", 400, "BAD_WEBHOOK_URL"},
      {R"({"url":"https://127.0.0.1:99999/"})", 400, "BAD_WEBHOOK_URL"},
      {R"({"url":"http://10.0.0.1/hook"})", 400, "FORBIDDEN_WEBHOOK_ADDRESS"},
      {R"({"url":"http://169.254.169.254/latest/meta-data"})", 400, "FORBIDDEN_WEBHOOK_ADDRESS"},
      {R"({"url":"https://[fe80::1]/hook"})", 400, "FORBIDDEN_WEBHOOK_ADDRESS"},
      {R"({"url":"https://192.168.0.10/hook"})", 400, "FORBIDDEN_WEBHOOK_ADDRESS"},
      {R"({"url":"http://8.8.8.8/hook"})", 400, "INSECURE_WEBHOOK_URL"},
      {R"({"url":"http://8.8.8.8/hook","allow_insecure_http":true})", 400, "INSECURE_WEBHOOK_URL"},
      {R"({"url":"https://no-such-host.invalid/hook"})", 400, "WEBHOOK_HOST_UNRESOLVED"},
      {R"({"url":"http://127.0.0.1/x","event_types":["tips"]})", 400, "UNKNOWN_EVENT_TYPE"},
  };
  for (const Case& c : cases) {
    auto r = Call(a, "POST", "/v1/webhooks", c.body);
    EXPECT_EQ(r.status, c.status) << c.body << " -> " << r.body;
    EXPECT_EQ(FromJson<v1::ApiError>(r.body).code(), c.code) << c.body << " -> " << r.body;
  }
  // Admin only.
  const std::string read = Token(a, R"(["read","tip","receive"])");
  EXPECT_EQ(CallAs(a, read, "GET", "/v1/webhooks").status, 403);
  EXPECT_EQ(CallAs(a, read, "POST", "/v1/webhooks", R"({"url":"http://127.0.0.1/x"})").status, 403);
  // Create, list, rotate, delete.
  auto created = CreateHook(a, "http://localhost:9/x");
  EXPECT_EQ(created.secret().rfind("whsec_", 0), 0u);
  EXPECT_EQ(UnB64(created.secret().substr(6)).size(), 32u);
  const std::string id = created.webhook().id();
  EXPECT_EQ(id.size(), 32u);
  auto list = FromJson<v1::ListWebhooksResponse>(Call(a, "GET", "/v1/webhooks").body);
  ASSERT_EQ(list.webhooks_size(), 1);
  EXPECT_EQ(Call(a, "GET", "/v1/webhooks").body.find("whsec_"), std::string::npos);
  auto rotated =
      Call(a, "POST", "/v1/webhooks/" + id + "/rotate-secret", R"({"overlap_ms":"1000"})");
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  EXPECT_NE(FromJson<v1::RotateWebhookSecretResponse>(rotated.body).secret(), created.secret());
  EXPECT_EQ(
      Call(a, "POST", "/v1/webhooks/" + id + "/redeliver", R"({"from_event_id":"999"})").status,
      400);
  EXPECT_EQ(Call(a, "DELETE", "/v1/webhooks/" + id).status, 200);
  auto gone = Call(a, "GET", "/v1/webhooks/" + id);
  EXPECT_EQ(gone.status, 404);
  EXPECT_EQ(FromJson<v1::ApiError>(gone.body).code(), "WEBHOOK_NOT_FOUND");
}

}  // namespace
}  // namespace tipd::testing
