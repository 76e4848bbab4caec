// HTTP/1.1 on Boost.Beast: one Session per TCP connection, driven by the
// caller's io_context (one thread; see rpc_server.h).
//
// Session lifecycle: read header (timeout) -> [100 Continue] -> read body
// (same timeout) -> route, auth, handler -> write answer (write timeout) ->
// keep-alive: read the next header; else graceful close (shutdown send, drain
// until the client closes or the timeout). A Session is kept alive by its
// pending operation or by a Responder that has not answered yet. An event
// stream keeps one read pending to notice the client going away.

#include "api/rpc_server.h"

#include "api/json_fast.h"
#include "api/token_registry.h"

#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>

// GCC 12 with -fsanitize reports a false -Wmaybe-uninitialized inside
// Beast's parser (boost::optional content length); it is not our code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#pragma GCC diagnostic pop
#include <cctype>
#include <deque>
#include <exception>

#include "node/logging.h"
#include "tipd/api.pb.h"
#include "util/metrics.h"

namespace tipd::api {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = boost::asio::ip::tcp;

namespace {

struct Route {
  HttpMethod method;
  std::string pattern;
  std::vector<std::string> segments;  // literal, or "{name}"
  int literals = 0;
  RouteAuth auth;
  AsyncHandler handler;
  size_t max_body_bytes = 0;  // 0: RpcLimits::max_body_bytes
};

std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> out;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  if (path.empty()) return out;
  size_t start = 0;
  while (true) {
    size_t slash = path.find('/', start);
    out.emplace_back(
        path.substr(start, slash == std::string_view::npos ? path.npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return out;
}

bool IsParam(const std::string& seg) {
  return seg.size() >= 2 && seg.front() == '{' && seg.back() == '}';
}

int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding; `plus_is_space` for query strings.
std::optional<std::string> PercentDecode(std::string_view in, bool plus_is_space) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%') {
      if (i + 2 >= in.size()) return std::nullopt;
      const int hi = HexVal(in[i + 1]), lo = HexVal(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi << 4 | lo));
      i += 2;
    } else if (plus_is_space && in[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

std::optional<HttpMethod> FromVerb(http::verb v) {
  switch (v) {
    case http::verb::get:
      return HttpMethod::kGet;
    case http::verb::post:
      return HttpMethod::kPost;
    case http::verb::put:
      return HttpMethod::kPut;
    case http::verb::delete_:
      return HttpMethod::kDelete;
    case http::verb::patch:
      return HttpMethod::kPatch;
    default:
      return std::nullopt;
  }
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Sv(beast::string_view s) { return {s.data(), s.size()}; }

// SSE field values must not contain line breaks.
std::string OneLine(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

}  // namespace

class Session;
class StreamImpl;

struct RpcServer::Shared {
  Shared(net::io_context& io_in, const TokenAuthority& auth_in, const Clock& clock_in,
         RpcLimits limits_in)
      : io(io_in), authority(auth_in), clock(clock_in), limits(limits_in), accept_retry(io_in) {}
  net::io_context& io;
  const TokenAuthority& authority;
  const Clock& clock;
  const RpcLimits limits;
  Family<Counter>* requests = nullptr;
  Family<Histogram>* durations = nullptr;
  std::vector<Route> routes;
  TokenRegistry* registry = nullptr;
  // The largest body any route accepts (the parser's first limit; the
  // matched route's is applied once the header is read).
  size_t max_route_body_bytes = 0;
  std::optional<tcp::acceptor> acceptor;
  bool stopped = false;
  size_t connections = 0;  // open (not yet closed) sessions
  size_t streams = 0;      // open event streams among them
  std::map<Session*, std::weak_ptr<Session>> sessions;
  std::shared_ptr<spdlog::logger> log = node::Logger("rpc");
  // Out of file descriptors (or memory): accepting again at once would spin,
  // so the next accept waits on this timer.
  net::steady_timer accept_retry;
  // Out-of-descriptor failures are logged at most once per 10 s (with the
  // count since), not once per attempt.
  std::chrono::steady_clock::time_point accept_warned;
  uint64_t accept_failures = 0;

  void Accept(const std::shared_ptr<Shared>& self);
  // The route that `verb` and `target` (raw path) reach, or nullptr; the
  // same choice as Session::Dispatch (the match with most literals).
  const Route* FindRoute(http::verb verb, std::string_view target) const;
  // Checks the bearer token (`authz`, the Authorization header) against
  // `auth`: nullopt and `token` set if it passes, else the 401/403 answer.
  std::optional<ApiResponse> Authenticate(const RouteAuth& auth, const std::string& authz,
                                          std::optional<TokenClaims>* token) const;
  // Closes the connection that has waited longest for its client (a closing
  // one first, then the oldest still reading its request); false if every
  // connection is busy (handler running or event stream).
  bool EvictIdle();
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<RpcServer::Shared> shared, tcp::socket socket)
      : shared_(std::move(shared)),
        stream_(std::move(socket)),
        buffer_(shared_->limits.max_header_bytes +
                std::max(shared_->limits.max_body_bytes, shared_->max_route_body_bytes) + 4096) {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    ++shared_->connections;
  }
  ~Session() {
    Release();
    shared_->sessions.erase(this);
  }

  // What the connection waits for; decides which one EvictIdle closes.
  enum class Phase { kReading, kBusy, kStream, kClosing };
  Phase phase() const { return phase_; }
  std::chrono::steady_clock::time_point phase_since() const { return phase_since_; }
  // True if bytes of the client's next request wait in the socket, unread
  // (the io thread was busy): such a connection is not idle. Bytes already
  // read do not count: a slowloris client's partial header sits in the
  // buffer, and it must stay the first to go.
  bool HasInput() const {
    beast::error_code ec;
    return stream_.socket().available(ec) > 0 && !ec;
  }

  void Start(bool over_limit) {
    shared_->sessions[this] = weak_from_this();
    if (over_limit) {
      keep_alive_ = false;
      route_label_ = "overload";
      Answer(ApiResponse::Error(503, "unavailable",
                                "too many connections; retry later or raise the limit"));
      return;
    }
    ReadHeader();
  }

  // Sends the answer to the current request (at most once per request).
  void Answer(ApiResponse r);
  std::shared_ptr<EventStream> StartStream();
  bool QueueStreamWrite(std::string data);
  size_t stream_buffered_bytes() const { return sse_bytes_; }
  void Close();
  // Ends an event stream: queues `last` (a final event), refuses further
  // sends, and closes once everything queued is written.
  void FinishStream(std::string last);
  const std::optional<TokenClaims>& token() const { return token_; }
  // Closes with a reset (SO_LINGER 0): the unsent data of a client that
  // does not read is dropped at once instead of lingering in the kernel.
  void Abort();
  bool closed() const { return closed_; }

 private:
  void ReadHeader();
  void OnHeader(beast::error_code ec);
  void ReadBody();
  void OnBody(beast::error_code ec);
  void Dispatch();
  void Respond(ApiResponse r, bool close_after) {
    if (close_after) keep_alive_ = false;
    Answer(std::move(r));
  }
  ApiResponse TooLarge() const {
    return ApiResponse::Error(413, "payload_too_large",
                              "request body exceeds " + std::to_string(body_limit_) + " bytes");
  }
  void GracefulClose();
  void Drain();
  void WriteNextStreamChunk();
  void WatchStreamClose();
  void RecordMetrics(int status);
  void SetPhase(Phase p) {
    phase_ = p;
    phase_since_ = std::chrono::steady_clock::now();
  }
  // Stops counting this connection (and its event stream). Idempotent.
  void Release() {
    if (counted_) --shared_->connections;
    if (stream_counted_) --shared_->streams;
    counted_ = stream_counted_ = false;
  }

  std::shared_ptr<RpcServer::Shared> shared_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<http::response<http::string_body>> res_;
  std::string remote_;
  size_t body_limit_ = 0;  // of the request being read
  bool closed_ = false;
  bool keep_alive_ = true;
  std::string route_label_ = "unmatched";
  std::chrono::steady_clock::time_point started_;
  std::array<char, 512> scratch_{};
  // Event stream state.
  std::shared_ptr<StreamImpl> sse_;
  std::deque<std::string> sse_queue_;
  size_t sse_bytes_ = 0;
  bool sse_writing_ = false;
  uint64_t sse_write_gen_ = 0;
  net::steady_timer sse_timer_{stream_.get_executor()};
  Phase phase_ = Phase::kBusy;
  std::chrono::steady_clock::time_point phase_since_ = std::chrono::steady_clock::now();
  bool counted_ = true;               // in shared_->connections
  bool stream_counted_ = false;       // in shared_->streams
  std::optional<TokenClaims> token_;  // of the current request (kept for an event stream)
  bool finishing_ = false;            // FinishStream: close once the queue is written
};

class StreamImpl final : public EventStream {
 public:
  explicit StreamImpl(std::weak_ptr<Session> session) : session_(std::move(session)) {}

  bool Send(std::string_view id, std::string_view event, std::string_view data) override {
    std::string msg;
    if (!id.empty()) msg += "id: " + OneLine(id) + "\n";
    if (!event.empty()) msg += "event: " + OneLine(event) + "\n";
    size_t start = 0;
    while (true) {
      size_t nl = data.find('\n', start);
      std::string_view line = data.substr(start, nl == data.npos ? data.npos : nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      msg += "data: ";
      msg += line;
      msg += "\n";
      if (nl == data.npos) break;
      start = nl + 1;
    }
    msg += "\n";
    return Write(std::move(msg));
  }
  bool SendComment(std::string_view text) override { return Write(": " + OneLine(text) + "\n\n"); }
  bool closed() const override { return closed_; }
  size_t buffered_bytes() const override {
    if (closed_) return 0;
    auto s = session_.lock();
    return s ? s->stream_buffered_bytes() : 0;
  }
  void OnClose(std::function<void()> on_close) override {
    if (closed_) {
      if (on_close) on_close();
      return;
    }
    on_close_ = std::move(on_close);
  }
  void Close() override {
    if (auto s = session_.lock()) s->Close();
    MarkClosed();
  }
  void MarkClosed() {
    if (closed_) return;
    closed_ = true;
    auto cb = std::move(on_close_);
    on_close_ = nullptr;
    if (cb) cb();
  }

 private:
  bool Write(std::string msg) {
    if (closed_) return false;
    auto s = session_.lock();
    if (!s) {
      MarkClosed();
      return false;
    }
    return s->QueueStreamWrite(std::move(msg));
  }
  std::weak_ptr<Session> session_;
  bool closed_ = false;
  std::function<void()> on_close_;
};

struct Responder::State {
  explicit State(std::shared_ptr<Session> s) : session(std::move(s)) {}
  ~State() {
    if (!answered && session) {
      session->Answer(ApiResponse::Error(500, "internal", "handler did not answer"));
    }
  }
  std::shared_ptr<Session> session;
  bool answered = false;
};

// ---- Session ----

void Session::ReadHeader() {
  if (closed_) return;
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(shared_->limits.max_header_bytes));
  // The largest any route takes; OnHeader narrows it to the route's.
  body_limit_ = std::max(shared_->limits.max_body_bytes, shared_->max_route_body_bytes);
  parser_->body_limit(body_limit_);
  route_label_ = "unmatched";
  SetPhase(Phase::kReading);
  stream_.expires_after(shared_->limits.read_timeout);
  http::async_read_header(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
}

void Session::OnHeader(beast::error_code ec) {
  if (closed_) return;
  started_ = std::chrono::steady_clock::now();
  if (ec) {
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      return Respond(
          ApiResponse::Error(431, "header_too_large",
                             "request headers exceed " +
                                 std::to_string(shared_->limits.max_header_bytes) + " bytes"),
          true);
    }
    if (ec == http::error::body_limit) {
      return Respond(TooLarge(), true);
    }
    if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      return Respond(
          ApiResponse::Error(400, "bad_request", "malformed HTTP request: " + ec.message()), true);
    }
    // end of stream, timeout, reset, aborted: nothing to answer.
    return Close();
  }
  const auto& req = parser_->get();
  // The route's body limit. A raised one (the batch route) is granted only
  // to a client whose token the route accepts, so an unauthenticated client
  // holds at most the default per connection; others get the route's 401 or
  // 403 before their body is read.
  body_limit_ = shared_->limits.max_body_bytes;
  const auto length = parser_->content_length();
  if (const Route* route = shared_->FindRoute(req.method(), Sv(req.target()));
      route != nullptr && route->max_body_bytes > body_limit_) {
    std::optional<TokenClaims> token;
    auto refused = shared_->Authenticate(route->auth,
                                         std::string(Sv(req[http::field::authorization])), &token);
    if (!refused) {
      body_limit_ = route->max_body_bytes;
    } else if (!length || *length > body_limit_) {
      route_label_ = route->pattern;
      return Respond(std::move(*refused), true);
    }
  }
  if (length && *length > body_limit_) return Respond(TooLarge(), true);
  if (!parser_->is_done()) parser_->body_limit(body_limit_);
  if (beast::iequals(req[http::field::expect], "100-continue") && !parser_->is_done()) {
    static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    stream_.expires_after(shared_->limits.write_timeout);
    net::async_write(stream_, net::buffer(kContinue),
                     [self = shared_from_this()](beast::error_code wec, size_t) {
                       if (wec) return self->Close();
                       self->ReadBody();
                     });
    return;
  }
  ReadBody();
}

void Session::ReadBody() {
  if (closed_) return;
  if (parser_->is_done()) return OnBody({});
  stream_.expires_after(shared_->limits.read_timeout);
  http::async_read(stream_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
}

void Session::OnBody(beast::error_code ec) {
  if (closed_) return;
  if (ec) {
    if (ec == http::error::body_limit || ec == http::error::buffer_overflow) {
      return Respond(TooLarge(), true);
    }
    if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      return Respond(
          ApiResponse::Error(400, "bad_request", "malformed HTTP request: " + ec.message()), true);
    }
    return Close();
  }
  // No timeout while the handler works; the write sets its own.
  stream_.expires_never();
  SetPhase(Phase::kBusy);
  Dispatch();
}

void Session::Dispatch() {
  auto& req = parser_->get();
  keep_alive_ = req.keep_alive();

  ApiRequest ar;
  ar.target = std::string(Sv(req.target()));
  ar.remote = remote_;
  for (const auto& f : req) {
    ar.headers[Lower(Sv(f.name_string()))] = std::string(Sv(f.value()));
  }
  ar.body = std::move(req.body());

  const std::string_view target = Sv(req.target());
  std::string_view raw_path = target.substr(0, target.find('?'));
  std::string_view raw_query =
      target.find('?') == target.npos ? std::string_view() : target.substr(target.find('?') + 1);
  if (raw_path.empty() || raw_path.front() != '/') {
    return Respond(ApiResponse::Error(400, "bad_request", "request target must be a path"), false);
  }
  std::vector<std::string> segs;
  for (const std::string& raw : SplitPath(raw_path)) {
    auto d = PercentDecode(raw, false);
    if (!d)
      return Respond(ApiResponse::Error(400, "bad_request", "bad percent-encoding in path"), false);
    segs.push_back(std::move(*d));
    ar.path += "/" + segs.back();
  }
  if (ar.path.empty()) ar.path = "/";
  size_t qstart = 0;
  while (qstart < raw_query.size()) {
    size_t amp = raw_query.find('&', qstart);
    std::string_view pair =
        raw_query.substr(qstart, amp == raw_query.npos ? raw_query.npos : amp - qstart);
    qstart = amp == raw_query.npos ? raw_query.size() : amp + 1;
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    auto k = PercentDecode(pair.substr(0, eq), true);
    auto v = PercentDecode(eq == pair.npos ? std::string_view() : pair.substr(eq + 1), true);
    if (!k || !v) {
      return Respond(ApiResponse::Error(400, "bad_request", "bad percent-encoding in query"),
                     false);
    }
    ar.query[*k] = *v;
  }

  const std::optional<HttpMethod> method = FromVerb(req.method());
  const Route* best = nullptr;
  std::string allowed;
  std::map<std::string, std::string> best_params;
  for (const Route& r : shared_->routes) {
    if (r.segments.size() != segs.size()) continue;
    std::map<std::string, std::string> params;
    bool match = true;
    for (size_t i = 0; i < segs.size() && match; ++i) {
      if (IsParam(r.segments[i])) {
        if (segs[i].empty()) match = false;
        params[r.segments[i].substr(1, r.segments[i].size() - 2)] = segs[i];
      } else if (r.segments[i] != segs[i]) {
        match = false;
      }
    }
    if (!match) continue;
    if (!method || r.method != *method) {
      if (allowed.find(HttpMethodName(r.method)) == std::string::npos) {
        allowed += (allowed.empty() ? "" : ", ") + std::string(HttpMethodName(r.method));
      }
      continue;
    }
    if (best == nullptr || r.literals > best->literals) {
      best = &r;
      best_params = std::move(params);
    }
  }
  if (best == nullptr) {
    if (!allowed.empty()) {
      ApiResponse r = ApiResponse::Error(405, "method_not_allowed",
                                         std::string(Sv(req.method_string())) +
                                             " is not allowed on " + ar.path + "; use " + allowed);
      r.headers.emplace_back("Allow", allowed);
      return Respond(std::move(r), false);
    }
    return Respond(ApiResponse::Error(404, "not_found", "no API endpoint at " + ar.path), false);
  }
  route_label_ = best->pattern;
  ar.method = best->method;
  ar.params = std::move(best_params);

  if (auto refused = shared_->Authenticate(best->auth, ar.Header("authorization"), &ar.token)) {
    return Respond(std::move(*refused), false);
  }
  token_ = ar.token;

  auto state = std::make_shared<Responder::State>(shared_from_this());
  Responder responder(state);
  try {
    best->handler(std::move(ar), responder);
  } catch (const std::exception& e) {
    shared_->log->error("handler for {} threw: {}", best->pattern, e.what());
    responder.Send(ApiResponse::Error(500, "internal", "internal error"));
  } catch (...) {
    shared_->log->error("handler for {} threw", best->pattern);
    responder.Send(ApiResponse::Error(500, "internal", "internal error"));
  }
}

void Session::RecordMetrics(int status) {
  if (shared_->requests != nullptr) {
    shared_->requests->WithLabels({route_label_, std::to_string(status)}).Inc();
  }
  if (shared_->durations != nullptr && started_.time_since_epoch().count() != 0) {
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    shared_->durations->WithLabels({route_label_}).Observe(secs);
  }
}

void Session::Answer(ApiResponse r) {
  if (closed_ || shared_->stopped) return;
  RecordMetrics(r.status);
  res_ =
      std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status), 11);
  res_->set(http::field::server, "tipd");
  res_->set(http::field::content_type, r.content_type);
  res_->set(http::field::cache_control, "no-store");
  for (const auto& [k, v] : r.headers) res_->set(k, v);
  res_->body() = std::move(r.body);
  res_->keep_alive(keep_alive_);
  res_->prepare_payload();
  stream_.expires_after(shared_->limits.write_timeout);
  http::async_write(stream_, *res_, [self = shared_from_this()](beast::error_code ec, size_t) {
    self->res_.reset();
    if (ec) return self->Close();
    if (self->keep_alive_) return self->ReadHeader();
    self->GracefulClose();
  });
}

void Session::GracefulClose() {
  SetPhase(Phase::kClosing);
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (ec) return Close();
  stream_.expires_after(shared_->limits.read_timeout);
  Drain();
}

// Reads and discards until the client closes, so unread request bytes do
// not turn our close into a reset that could destroy the response in flight.
void Session::Drain() {
  stream_.async_read_some(net::buffer(scratch_),
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            if (ec || self->closed_) return self->Close();
                            self->Drain();
                          });
}

void Session::Close() {
  if (closed_) return;
  closed_ = true;
  Release();
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.socket().close(ec);
  sse_queue_.clear();
  sse_bytes_ = 0;
  sse_timer_.cancel();
  if (sse_) {
    auto s = std::move(sse_);
    s->MarkClosed();
  }
}

void Session::Abort() {
  if (closed_) return;
  beast::error_code ec;
  stream_.socket().set_option(net::socket_base::linger(true, 0), ec);
  stream_.socket().close(ec);  // before Close's shutdown, which would send FIN
  Close();
}

std::shared_ptr<EventStream> Session::StartStream() {
  if (closed_ || shared_->stopped) return nullptr;
  if (shared_->streams >= shared_->limits.max_event_streams) {
    keep_alive_ = false;
    Answer(ApiResponse::Error(503, "unavailable",
                              "too many event streams (" +
                                  std::to_string(shared_->limits.max_event_streams) +
                                  "); retry later or raise rpc-max-event-streams"));
    return nullptr;
  }
  ++shared_->streams;
  stream_counted_ = true;
  SetPhase(Phase::kStream);
  RecordMetrics(200);
  stream_.expires_never();  // each chunk write has its own deadline (sse_timer_)
  sse_ = std::make_shared<StreamImpl>(weak_from_this());
  auto keep = sse_;
  WatchStreamClose();
  // No Content-Length: the body runs until the connection closes.
  QueueStreamWrite(
      "HTTP/1.1 200 OK\r\nServer: tipd\r\nContent-Type: text/event-stream\r\n"
      "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n");
  return keep;
}

void Session::WatchStreamClose() {
  stream_.async_read_some(net::buffer(scratch_),
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            if (ec || self->closed_) return self->Close();
                            self->WatchStreamClose();  // ignore what the client sends
                          });
}

void Session::FinishStream(std::string last) {
  if (closed_ || finishing_ || phase_ != Phase::kStream) return;
  QueueStreamWrite(std::move(last));
  finishing_ = true;
  if (sse_) {
    auto s = std::move(sse_);
    s->MarkClosed();  // the route stops sending; the queue still drains
  }
  if (!closed_ && sse_queue_.empty()) Close();
}

bool Session::QueueStreamWrite(std::string data) {
  if (closed_ || finishing_) return false;
  if (sse_bytes_ + data.size() > shared_->limits.max_stream_buffer_bytes) {
    shared_->log->warn("closing event stream to {}: client reads too slowly ({} bytes unsent)",
                       remote_, sse_bytes_);
    Abort();
    return false;
  }
  sse_bytes_ += data.size();
  sse_queue_.push_back(std::move(data));
  if (!sse_writing_) WriteNextStreamChunk();
  return true;
}

void Session::WriteNextStreamChunk() {
  if (closed_ || sse_queue_.empty()) return;
  sse_writing_ = true;
  // A client that does not take this chunk within write_timeout is reset.
  // (Not the stream's own timeout: that would close without a reset and
  // share its timer with the pending read.)
  const uint64_t gen = ++sse_write_gen_;
  sse_timer_.expires_after(shared_->limits.write_timeout);
  sse_timer_.async_wait([weak = weak_from_this(), gen](const beast::error_code& ec) {
    auto self = weak.lock();
    if (ec || !self || self->closed_ || !self->sse_writing_ || self->sse_write_gen_ != gen) return;
    self->shared_->log->warn("closing event stream to {}: client took nothing for {} ms",
                             self->remote_, self->shared_->limits.write_timeout.count());
    self->Abort();
  });
  net::async_write(stream_, net::buffer(sse_queue_.front()),
                   [self = shared_from_this()](beast::error_code ec, size_t) {
                     self->sse_writing_ = false;
                     self->sse_timer_.cancel();
                     if (ec || self->closed_) return self->Close();
                     self->sse_bytes_ -= self->sse_queue_.front().size();
                     self->sse_queue_.pop_front();
                     if (self->finishing_ && self->sse_queue_.empty()) return self->Close();
                     self->WriteNextStreamChunk();
                   });
}

// ---- Responder ----

void Responder::Send(ApiResponse response) const {
  if (!state_ || state_->answered) return;
  state_->answered = true;
  state_->session->Answer(std::move(response));
}

std::shared_ptr<EventStream> Responder::StartEventStream() const {
  if (!state_ || state_->answered) return nullptr;
  state_->answered = true;
  return state_->session->StartStream();
}

bool Responder::answered() const { return state_ && state_->answered; }

// ---- RpcServer ----

void RpcServer::Shared::Accept(const std::shared_ptr<Shared>& self) {
  if (stopped || !acceptor) return;
  acceptor->async_accept([self](beast::error_code ec, tcp::socket socket) {
    if (self->stopped) return;
    if (ec) {
      if (ec == net::error::operation_aborted) return;
      if (ec == net::error::no_descriptors || ec == net::error::no_buffer_space ||
          ec == net::error::no_memory || ec == boost::system::errc::too_many_files_open_in_system) {
        // The connection waits in the listen backlog. If an idle connection
        // holds a descriptor, free it and accept again at once; otherwise
        // wait: accepting at once would fail again and spin.
        ++self->accept_failures;
        const auto now = std::chrono::steady_clock::now();
        if (self->accept_warned.time_since_epoch().count() == 0 ||
            now - self->accept_warned >= std::chrono::seconds(10)) {
          self->log->warn(
              "accept failed: {} ({} API connections open, {} failures); closing idle "
              "connections, check the descriptor limit (ulimit -n) against "
              "rpc-max-connections",
              ec.message(), self->connections, self->accept_failures);
          self->accept_warned = now;
          self->accept_failures = 0;
        }
        if (self->EvictIdle()) return self->Accept(self);
        self->accept_retry.expires_after(std::chrono::milliseconds(50));
        self->accept_retry.async_wait([self](const beast::error_code& wec) {
          if (!wec) self->Accept(self);
        });
        return;
      }
      self->log->warn("accept failed: {}", ec.message());
    } else {
      if (self->connections >= self->limits.max_connections) self->EvictIdle();
      const bool over = self->connections >= self->limits.max_connections;
      if (over && self->connections >= 2 * self->limits.max_connections) {
        // Even the 503 answers are at their bound: drop without an answer.
        beast::error_code cec;
        socket.close(cec);
      } else {
        auto session = std::make_shared<Session>(self, std::move(socket));
        session->Start(over);
      }
    }
    self->Accept(self);
  });
}

const Route* RpcServer::Shared::FindRoute(http::verb verb, std::string_view target) const {
  const std::optional<HttpMethod> method = FromVerb(verb);
  if (!method) return nullptr;
  std::vector<std::string> segs;
  for (const std::string& raw : SplitPath(target.substr(0, target.find('?')))) {
    auto d = PercentDecode(raw, false);
    if (!d) return nullptr;  // Dispatch answers 400
    segs.push_back(std::move(*d));
  }
  const Route* best = nullptr;
  for (const Route& r : routes) {
    if (r.method != *method || r.segments.size() != segs.size()) continue;
    bool match = true;
    for (size_t i = 0; i < segs.size() && match; ++i) {
      match = IsParam(r.segments[i]) ? !segs[i].empty() : r.segments[i] == segs[i];
    }
    if (match && (best == nullptr || r.literals > best->literals)) best = &r;
  }
  return best;
}

std::optional<ApiResponse> RpcServer::Shared::Authenticate(
    const RouteAuth& auth, const std::string& authz, std::optional<TokenClaims>* token) const {
  if (auth.is_public) return std::nullopt;
  std::optional<ApiResponse> unauth;
  if (authz.empty()) {
    unauth = ApiResponse::Error(401, "unauthenticated",
                                "missing 'Authorization: Bearer <token>' header (tipctl reads "
                                "the admin token from <datadir>/admin.token)");
  } else if (authz.size() < 7 || Lower(std::string_view(authz).substr(0, 7)) != "bearer ") {
    unauth = ApiResponse::Error(401, "unauthenticated",
                                "the Authorization header must be 'Bearer <token>'");
  } else {
    std::string_view tok = std::string_view(authz).substr(7);
    while (!tok.empty() && tok.front() == ' ') tok.remove_prefix(1);
    Result<TokenClaims> claims = authority.VerifySignature(tok);
    if (!claims.ok()) {
      unauth = ApiResponse::Error(401, "unauthenticated", claims.status().message());
    } else if (claims->ExpiredAt(clock.NowMs())) {
      unauth = ApiResponse::Error(401, "TOKEN_EXPIRED",
                                  "token expired at " + std::to_string(claims->expires_at_ms) +
                                      " ms (Unix); create a new one");
    } else if (registry != nullptr) {
      if (auto refused = registry->Authenticate(*claims)) {
        unauth = ApiResponse::Error(refused->http_status, refused->code, refused->message);
      }
    }
    if (!unauth) *token = *claims;
  }
  if (unauth) {
    unauth->headers.emplace_back("WWW-Authenticate", "Bearer realm=\"tipd\"");
    return unauth;
  }
  Status scope = auth.any_scope ? Status::Ok() : CheckScope(**token, auth.scope);
  if (!scope.ok()) return ApiResponse::Error(403, "permission_denied", scope.message());
  return std::nullopt;
}

bool RpcServer::Shared::EvictIdle() {
  // The victim: a closing connection first, then one that has sent nothing
  // of its next request, oldest first. A client whose request is already in
  // the socket but not yet read (the io thread was busy accepting a flood)
  // is evicted only when no idle connection is left.
  std::shared_ptr<Session> victim;
  int victim_rank = 0;  // 0 closing, 1 reading with no input, 2 reading with input
  for (auto& [p, w] : sessions) {
    auto s = w.lock();
    if (!s || s->closed()) continue;
    const Session::Phase ph = s->phase();
    if (ph != Session::Phase::kClosing && ph != Session::Phase::kReading) continue;
    const int rank = ph == Session::Phase::kClosing ? 0 : (s->HasInput() ? 2 : 1);
    if (!victim || rank < victim_rank ||
        (rank == victim_rank && s->phase_since() < victim->phase_since())) {
      victim = std::move(s);
      victim_rank = rank;
    }
  }
  if (!victim) return false;
  victim->Close();
  return true;
}

RpcServer::RpcServer(net::io_context& io, const TokenAuthority& authority, const Clock& clock,
                     RpcLimits limits, MetricsRegistry* metrics)
    : shared_(std::make_shared<Shared>(io, authority, clock, limits)) {
  if (metrics != nullptr) {
    shared_->requests = &metrics->CounterFamily(
        "tipd_rpc_requests_total", "API requests answered, by route pattern and HTTP status.",
        {"route", "code"});
    shared_->durations =
        &metrics->HistogramFamily("tipd_rpc_request_duration_seconds",
                                  "Time from a request's header to its answer, by route pattern.",
                                  {"route"}, ExponentialBuckets(0.0005, 4, 10));
  }
}

RpcServer::~RpcServer() { Stop(); }

void RpcServer::Handle(HttpMethod method, std::string_view pattern, RouteAuth auth,
                       SyncHandler handler) {
  HandleAsync(method, pattern, auth,
              [h = std::move(handler)](ApiRequest request, Responder responder) {
                responder.Send(h(request));
              });
}

void RpcServer::HandleAsync(HttpMethod method, std::string_view pattern, RouteAuth auth,
                            AsyncHandler handler, RouteOptions options) {
  Route r;
  r.max_body_bytes = options.max_body_bytes;
  shared_->max_route_body_bytes = std::max(shared_->max_route_body_bytes, options.max_body_bytes);
  r.method = method;
  r.pattern = std::string(pattern);
  r.segments = SplitPath(pattern);
  for (const auto& s : r.segments) r.literals += IsParam(s) ? 0 : 1;
  r.auth = auth;
  r.handler = std::move(handler);
  shared_->routes.push_back(std::move(r));
}

std::vector<RouteInfo> RpcServer::routes() const {
  std::vector<RouteInfo> out;
  out.reserve(shared_->routes.size());
  for (const Route& r : shared_->routes) out.push_back(RouteInfo{r.method, r.pattern, r.auth});
  return out;
}

Result<uint16_t> RpcServer::Listen(const std::string& host, uint16_t port) {
  beast::error_code ec;
  const std::string h = host == "localhost" ? "127.0.0.1" : host;
  const net::ip::address addr = net::ip::make_address(h, ec);
  if (ec) {
    return Status::InvalidArgument("rpc listen host '" + host +
                                   "' is not an IP address (e.g. 127.0.0.1 or ::1)");
  }
  const tcp::endpoint ep(addr, port);
  tcp::acceptor acc(shared_->io);
  const std::string where = h + ":" + std::to_string(port);
  if (acc.open(ep.protocol(), ec); ec) {
    return Status::Unavailable("rpc: cannot open socket for " + where + ": " + ec.message());
  }
  if (acc.set_option(net::socket_base::reuse_address(true), ec); ec) {
    return Status::Unavailable("rpc: setsockopt on " + where + ": " + ec.message());
  }
  if (acc.bind(ep, ec); ec) {
    return Status::Unavailable("rpc: cannot listen on " + where + ": " + ec.message());
  }
  if (acc.listen(net::socket_base::max_listen_connections, ec); ec) {
    return Status::Unavailable("rpc: cannot listen on " + where + ": " + ec.message());
  }
  const uint16_t bound = acc.local_endpoint(ec).port();
  if (ec) return Status::Unavailable("rpc: local_endpoint: " + ec.message());
  shared_->acceptor.emplace(std::move(acc));
  shared_->Accept(shared_);
  shared_->log->info("API listening on {}:{}", h, bound);
  return bound;
}

void RpcServer::Stop() {
  if (shared_->stopped) return;
  shared_->stopped = true;
  if (shared_->acceptor) {
    beast::error_code ec;
    shared_->acceptor->close(ec);
  }
  shared_->accept_retry.cancel();
  std::vector<std::shared_ptr<Session>> live;
  for (auto& [p, w] : shared_->sessions) {
    if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->Close();
}

size_t RpcServer::connection_count() const { return shared_->connections; }

void RpcServer::SetTokenRegistry(TokenRegistry* registry) { shared_->registry = registry; }

size_t RpcServer::EndTokenStreams(const StreamVerdict& verdict) {
  std::vector<std::shared_ptr<Session>> live;
  for (auto& [p, w] : shared_->sessions) {
    auto s = w.lock();
    if (s && !s->closed() && s->phase() == Session::Phase::kStream && s->token()) {
      live.push_back(std::move(s));
    }
  }
  size_t ended = 0;
  for (auto& s : live) {
    auto reason = verdict(*s->token());
    if (!reason) continue;
    tipd::v1::ApiError e;
    e.set_code(reason->first);
    e.set_message(reason->second);
    s->FinishStream("event: error\ndata: " + ToJson(e) + "\n\n");
    ++ended;
  }
  return ended;
}

// ---- requests, responses, JSON ----

const char* HttpMethodName(HttpMethod m) {
  switch (m) {
    case HttpMethod::kGet:
      return "GET";
    case HttpMethod::kPost:
      return "POST";
    case HttpMethod::kPut:
      return "PUT";
    case HttpMethod::kDelete:
      return "DELETE";
    case HttpMethod::kPatch:
      return "PATCH";
  }
  return "?";
}

const std::string& ApiRequest::Header(const std::string& lower_name) const {
  static const std::string kEmpty;
  auto it = headers.find(lower_name);
  return it == headers.end() ? kEmpty : it->second;
}

ApiResponse ApiResponse::Json(const google::protobuf::Message& message, int status) {
  ApiResponse r;
  r.status = status;
  r.body = ToJson(message);
  return r;
}

ApiResponse ApiResponse::Error(int status, std::string_view code, std::string_view message) {
  tipd::v1::ApiError e;
  e.set_code(std::string(code));
  e.set_message(std::string(message));
  return Json(e, status);
}

ApiResponse ApiResponse::FromStatus(const Status& status) {
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
      return Error(400, "invalid_argument", status.message());
    case StatusCode::kNotFound:
      return Error(404, "not_found", status.message());
    case StatusCode::kAlreadyExists:
      return Error(409, "already_exists", status.message());
    case StatusCode::kFailedPrecondition:
      return Error(409, "failed_precondition", status.message());
    case StatusCode::kPermissionDenied:
      return Error(403, "permission_denied", status.message());
    case StatusCode::kResourceExhausted:
      return Error(429, "resource_exhausted", status.message());
    case StatusCode::kUnavailable:
      return Error(503, "unavailable", status.message());
    case StatusCode::kCorruption:
    case StatusCode::kIOError:
    case StatusCode::kInternal:
    case StatusCode::kOk:
      return Error(500, "internal", status.message());
  }
  return Error(500, "internal", status.message());
}

ApiResponse ApiResponse::Text(int status, std::string_view content_type, std::string body) {
  ApiResponse r;
  r.status = status;
  r.content_type = std::string(content_type);
  r.body = std::move(body);
  return r;
}

Status ParseJson(std::string_view json, google::protobuf::Message* out) {
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  if (json.find_first_not_of(" \t\r\n") == std::string_view::npos) json = "{}";
  // The common request shapes, read directly (api/json_fast.h); anything
  // else, and every error, from protobuf's parser.
  if (FastFromJson(json, out)) return Status::Ok();
  const std::string text(json);
  auto st = google::protobuf::util::JsonStringToMessage(text, out, opts);
  if (!st.ok()) {
    const auto m = st.message();
    return Status::InvalidArgument("invalid JSON for " + out->GetDescriptor()->full_name() + ": " +
                                   std::string(m.data(), m.size()));
  }
  return Status::Ok();
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  // The same bytes protobuf's printer writes, without its binary round trip
  // (api/json_fast.h); types it does not render go to protobuf's printer.
  if (FastToJson(message, &out)) return out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  auto st = google::protobuf::util::MessageToJsonString(message, &out, opts);
  if (!st.ok()) return "{}";  // only for invalid UTF-8 in strings, which we never build
  return out;
}

}  // namespace tipd::api
