// Blocking calls over Beast's async operations: each operation is started
// and the private io_context is run until it completes, so beast::tcp_stream's
// deadline (expires_at) gives every step a timeout.
#include "api/http_client.h"

#include <google/protobuf/util/json_util.h>
#include <sys/socket.h>

// GCC 12 reports a false -Wmaybe-uninitialized inside Beast's parser
// (boost::optional content length); it is not our code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#pragma GCC diagnostic pop
#include <cctype>
#include <charconv>
#include <limits>
#include <optional>

#include "tipd/api.pb.h"

namespace tipd::api {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

// ---------------------------------------------------------------------------
// URL
// ---------------------------------------------------------------------------

std::string HttpUrl::ToString() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return "http://" + h + ":" + std::to_string(port) + base_path;
}

Result<HttpUrl> ParseHttpUrl(std::string_view url) {
  while (!url.empty() && std::isspace(static_cast<unsigned char>(url.front()))) {
    url.remove_prefix(1);
  }
  while (!url.empty() && std::isspace(static_cast<unsigned char>(url.back()))) {
    url.remove_suffix(1);
  }
  const std::string shown(url);
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument("invalid tipd API URL '" + shown + "': " + std::string(why) +
                                   " (expected e.g. http://127.0.0.1:8080)");
  };
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return bad("no http:// scheme");
  std::string scheme(url.substr(0, scheme_end));
  for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme == "https") {
    return bad("https is not supported; the API speaks plain http on loopback");
  }
  if (scheme != "http") return bad("unsupported scheme '" + scheme + "', only http");
  std::string_view rest = url.substr(scheme_end + 3);
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return bad("a query or fragment is not allowed");
  }
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos) return bad("user info is not supported");

  HttpUrl out;
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("missing ']' after the IPv6 address");
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("expected ':PORT' after ']'");
      port_text = after.substr(1);
      if (port_text.empty()) return bad("empty port");
    }
  } else {
    size_t colon = authority.find(':');
    if (colon != std::string_view::npos) {
      if (authority.find(':', colon + 1) != std::string_view::npos) {
        return bad("IPv6 addresses must be written in brackets");
      }
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return bad("empty port");
    }
    out.host = std::string(authority.substr(0, colon));
  }
  if (out.host.empty()) return bad("no host");
  out.port = 80;
  if (!port_text.empty()) {
    unsigned port = 0;
    auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || ptr != port_text.data() + port_text.size() || port == 0 ||
        port > 65535) {
      return bad("port must be 1..65535");
    }
    out.port = static_cast<uint16_t>(port);
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  out.base_path = std::string(path);
  return out;
}

// ---------------------------------------------------------------------------
// Server-Sent Events
// ---------------------------------------------------------------------------

bool SseParser::Feed(std::string_view chunk) {
  for (char c : chunk) {
    if (stopped_) return false;
    if (c == '\n' && last_was_cr_) {  // the LF of a CRLF
      last_was_cr_ = false;
      continue;
    }
    last_was_cr_ = c == '\r';
    if (c == '\n' || c == '\r') {
      if (!Line(line_)) stopped_ = true;
      line_.clear();
    } else {
      line_.push_back(c);
    }
  }
  return !stopped_;
}

bool SseParser::Line(std::string_view line) {
  if (line.empty()) {  // dispatch
    bool keep_going = true;
    if (has_data_) keep_going = on_event_(id_, type_.empty() ? "message" : type_, data_);
    data_.clear();
    type_.clear();
    has_data_ = false;
    return keep_going;
  }
  if (line.front() == ':') return true;  // comment
  size_t colon = line.find(':');
  std::string_view field = line.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) data_.push_back('\n');
    data_.append(value);
    has_data_ = true;
  } else if (field == "event") {
    type_ = std::string(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) id_ = std::string(value);
  }
  return true;
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

namespace {

constexpr uint64_t kMaxBodyBytes = 64ull << 20;
using Clock = std::chrono::steady_clock;

std::string DurationText(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

std::string ToStd(beast::string_view s) { return std::string(s.data(), s.size()); }

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Starts an async operation with a handler that records its error code, runs
// the io_context until nothing is left to do, and returns the error code.
template <class Start>
beast::error_code RunOp(net::io_context& io, Start&& start) {
  beast::error_code result = net::error::would_block;
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  io.restart();
  io.run();
  return result;
}

bool IsStaleConnection(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == net::error::eof ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe ||
         ec == net::error::connection_aborted;
}

}  // namespace

struct HttpClient::Impl {
  net::io_context io;
  std::optional<beast::tcp_stream> conn;  // the keep-alive connection of Request
  beast::flat_buffer buf;

  void CloseConn() {
    if (conn) {
      beast::error_code ignored;
      conn->socket().shutdown(tcp::socket::shutdown_both, ignored);
      conn->socket().close(ignored);
      conn.reset();
    }
    buf.clear();
  }
};

HttpClient::HttpClient(HttpUrl url, std::string bearer_token, std::chrono::milliseconds timeout)
    : url_(std::move(url)),
      token_(std::move(bearer_token)),
      timeout_(timeout),
      impl_(std::make_unique<Impl>()) {}

HttpClient::~HttpClient() {
  if (impl_) impl_->CloseConn();
}

namespace {

// The message of a transport failure while doing `what` ("GET /v1/info").
Status TransportError(const HttpUrl& url, std::chrono::milliseconds timeout,
                      const beast::error_code& ec, bool connecting, const std::string& what) {
  const std::string where = url.ToString();
  if (ec == beast::error::timeout) {
    return Status::Unavailable("tipd at " + where + " did not answer within " +
                               DurationText(timeout) + " (" + what + ")");
  }
  if (connecting) {
    std::string why = ec.message();
    if (ec == net::error::connection_refused) {
      why = "connection refused; is the node running?";
    }
    return Status::Unavailable("cannot reach tipd at " + where + ": " + why + " (" + what + ")");
  }
  return Status::Unavailable("lost the connection to tipd at " + where + ": " + ec.message() +
                             " (" + what + ")");
}

// Resolves and connects `stream` before `deadline`.
Status Connect(net::io_context& io, beast::tcp_stream& stream, const HttpUrl& url,
               std::chrono::milliseconds timeout, Clock::time_point deadline,
               const std::string& what) {
  tcp::resolver resolver(io);
  beast::error_code ec;
  auto endpoints = resolver.resolve(url.host, std::to_string(url.port), ec);
  if (ec) {
    return Status::Unavailable("cannot reach tipd at " + url.ToString() + ": cannot resolve '" +
                               url.host + "': " + ec.message() + " (" + what + ")");
  }
  stream.expires_at(deadline);
  ec = RunOp(io, [&](auto handler) { stream.async_connect(endpoints, std::move(handler)); });
  if (ec) return TransportError(url, timeout, ec, /*connecting=*/true, what);
  stream.socket().set_option(tcp::no_delay(true), ec);
  return Status::Ok();
}

std::string HostHeader(const HttpUrl& url) {
  std::string h = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  return url.port == 80 ? h : h + ":" + std::to_string(url.port);
}

HttpResponse ToResponse(const http::response_header<>& header) {
  HttpResponse out;
  out.status = static_cast<int>(header.result_int());
  for (const auto& field : header) {
    out.headers[Lower(ToStd(field.name_string()))] = ToStd(field.value());
  }
  return out;
}

}  // namespace

Result<HttpResponse> HttpClient::Request(std::string_view method, std::string_view target,
                                         std::string_view json_body) {
  http::verb verb = http::string_to_verb(beast::string_view(method.data(), method.size()));
  if (verb == http::verb::unknown) {
    return Status::InvalidArgument("unknown HTTP method '" + std::string(method) + "'");
  }
  const std::string full_target = url_.base_path + std::string(target);
  const std::string what = std::string(method) + " " + std::string(target);
  http::request<http::string_body> req(verb, full_target, 11);
  req.set(http::field::host, HostHeader(url_));
  req.set(http::field::user_agent, "tipd-http-client/0.1");
  req.set(http::field::accept, "application/json");
  if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
  if (!json_body.empty() || verb == http::verb::post) {
    req.set(http::field::content_type, "application/json");
    req.body() = std::string(json_body);
  }
  req.keep_alive(true);
  req.prepare_payload();

  const Clock::time_point deadline = Clock::now() + timeout_;
  Impl& im = *impl_;
  for (int attempt = 0;; ++attempt) {
    const bool reused = im.conn.has_value();
    if (!reused) {
      im.conn.emplace(im.io);
      im.buf.clear();
      Status s = Connect(im.io, *im.conn, url_, timeout_, deadline, what);
      if (!s.ok()) {
        im.CloseConn();
        return s;
      }
      ++connections_opened_;
    }
    im.conn->expires_at(deadline);
    beast::error_code ec =
        RunOp(im.io, [&](auto handler) { http::async_write(*im.conn, req, std::move(handler)); });
    http::response_parser<http::string_body> parser;
    parser.body_limit(max_body_bytes_);
    if (!ec) {
      ec = RunOp(im.io, [&](auto handler) {
        http::async_read(*im.conn, im.buf, parser, std::move(handler));
      });
    }
    if (!ec) {
      auto& res = parser.get();
      HttpResponse out = ToResponse(res.base());
      out.body = std::move(res.body());
      if (!res.keep_alive()) im.CloseConn();
      return out;
    }
    im.CloseConn();
    // A reused connection the server had closed while idle: nothing of the
    // answer arrived, so send the request once more on a fresh connection.
    if (reused && attempt == 0 && !parser.got_some() && IsStaleConnection(ec)) continue;
    return TransportError(url_, timeout_, ec, /*connecting=*/false, what);
  }
}

Status HttpClient::Stream(std::string_view target,
                          const std::map<std::string, std::string>& headers,
                          const std::function<bool(const std::string&, const std::string&,
                                                   const std::string&)>& on_event) {
  return Stream(target, headers, on_event, nullptr);
}

Status HttpClient::Stream(
    std::string_view target, const std::map<std::string, std::string>& headers,
    const std::function<bool(const std::string&, const std::string&, const std::string&)>& on_event,
    HttpResponse* non_ok_response) {
  cancelled_ = false;
  const std::string what = "GET " + std::string(target);
  http::request<http::empty_body> req(http::verb::get, url_.base_path + std::string(target), 11);
  req.set(http::field::host, HostHeader(url_));
  req.set(http::field::user_agent, "tipd-http-client/0.1");
  req.set(http::field::accept, "text/event-stream");
  req.set(http::field::cache_control, "no-store");
  if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
  for (const auto& [name, value] : headers) req.set(name, value);

  net::io_context& io = impl_->io;
  beast::tcp_stream stream(io);
  const Clock::time_point deadline = Clock::now() + timeout_;
  TIPD_RETURN_IF_ERROR(Connect(io, stream, url_, timeout_, deadline, what));
  {
    std::lock_guard<std::mutex> lock(cancel_mu_);
    stream_fd_ = stream.socket().native_handle();
  }
  struct Unregister {
    HttpClient* self;
    ~Unregister() {
      std::lock_guard<std::mutex> lock(self->cancel_mu_);
      self->stream_fd_ = -1;
    }
  } unregister{this};
  if (cancelled_) return Status::Ok();

  stream.expires_at(deadline);
  beast::error_code ec =
      RunOp(io, [&](auto handler) { http::async_write(stream, req, std::move(handler)); });
  beast::flat_buffer buf;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(std::numeric_limits<uint64_t>::max());
  if (!ec) {
    ec = RunOp(io, [&](auto handler) {
      http::async_read_header(stream, buf, parser, std::move(handler));
    });
  }
  if (ec) {
    if (cancelled_) return Status::Ok();
    return TransportError(url_, timeout_, ec, /*connecting=*/false, what);
  }
  const int status = static_cast<int>(parser.get().result_int());
  HttpResponse error_response;
  if (status != 200)
    error_response = ToResponse(parser.get().base());
  else
    stream.expires_never();

  SseParser sse(on_event);
  char chunk[16 * 1024];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof(chunk);
    ec = RunOp(
        io, [&](auto handler) { http::async_read_some(stream, buf, parser, std::move(handler)); });
    if (ec == http::error::need_buffer) ec = {};
    const size_t n = sizeof(chunk) - parser.get().body().size;
    if (status != 200) {
      error_response.body.append(chunk, n);
      if (error_response.body.size() > kMaxBodyBytes) break;
    } else if (!sse.Feed(std::string_view(chunk, n))) {
      return Status::Ok();
    }
    if (cancelled_) return Status::Ok();
    if (ec) {
      if (status == 200) {
        return Status::Unavailable("the event stream from tipd at " + url_.ToString() +
                                   " broke: " + ec.message() + " (" + what + ")");
      }
      break;  // report the error answer with what arrived of its body
    }
  }
  if (status == 200) return Status::Ok();
  if (non_ok_response != nullptr) *non_ok_response = error_response;
  return ApiErrorStatus(error_response);
}

void HttpClient::Cancel() {
  cancelled_ = true;
  std::lock_guard<std::mutex> lock(cancel_mu_);
  // shutdown(2) on the descriptor is safe while the owning thread waits in
  // a read: the read completes with end-of-file.
  if (stream_fd_ >= 0) ::shutdown(stream_fd_, SHUT_RDWR);
}

Status HttpClient::ApiErrorStatus(const HttpResponse& response) {
  StatusCode code = StatusCode::kInternal;
  switch (response.status) {
    case 400:
      code = StatusCode::kInvalidArgument;
      break;
    case 401:
    case 403:
      code = StatusCode::kPermissionDenied;
      break;
    case 404:
      code = StatusCode::kNotFound;
      break;
    case 409:
      code = StatusCode::kFailedPrecondition;
      break;
    case 429:
      code = StatusCode::kResourceExhausted;
      break;
    case 503:
      code = StatusCode::kUnavailable;
      break;
    default:
      break;
  }
  tipd::v1::ApiError error;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  const std::string status_text = "HTTP " + std::to_string(response.status);
  if (google::protobuf::util::JsonStringToMessage(response.body, &error, options).ok() &&
      !error.code().empty()) {
    return Status(code, error.message() + " (" + error.code() + ", " + status_text + ")");
  }
  std::string body = response.body.substr(0, 200);
  while (!body.empty() && std::isspace(static_cast<unsigned char>(body.back()))) body.pop_back();
  return Status(code, status_text + (body.empty() ? "" : ": " + body));
}

}  // namespace tipd::api
