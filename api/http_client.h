// A small blocking HTTP/1.1 client for tipd's own tools (tipctl, tipd devnet)
// talking to a node's API (docs/api.md). Beast stays inside http_client.cc.
//
//   auto url = ParseHttpUrl("http://127.0.0.1:8080");
//   HttpClient client(*url, token);
//   auto res = client.Request("GET", "/v1/info");
//   if (!res.ok()) ...                 // transport: kUnavailable, says what to check
//   if (res->status != 200) return HttpClient::ApiErrorStatus(*res);
//
// Errors: a transport failure (cannot connect, connection lost, timeout) is a
// kUnavailable Status whose message names the URL, the cause and the request,
// e.g. "cannot reach tipd at http://127.0.0.1:8080: connection refused; is the
// node running? (GET /v1/info)". An HTTP answer of any status is not an error
// of Request: the caller looks at HttpResponse::status (ApiErrorStatus turns
// a non-2xx answer into a Status).
//
// Threading: an HttpClient is used by one thread at a time, except Cancel(),
// which may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "util/status.h"

namespace tipd::api {

// A parsed "http://HOST[:PORT][/BASE]" URL.
struct HttpUrl {
  std::string host;       // DNS name, IPv4 literal, or IPv6 literal without brackets
  uint16_t port = 0;      // 80 when the URL has none
  std::string base_path;  // "" or "/prefix" (no trailing slash); prepended to every target

  // "http://127.0.0.1:8080" (+ base_path); IPv6 hosts in brackets.
  std::string ToString() const;
};

// Parses an http URL such as "http://127.0.0.1:8080" or "http://[::1]:8080/".
// Surrounding whitespace (e.g. the newline of <datadir>/rpc.url) is ignored.
// Only plain http is supported (the API listens on loopback); https, a
// missing host, a bad port, or a query/fragment fail with kInvalidArgument
// saying what was expected.
Result<HttpUrl> ParseHttpUrl(std::string_view url);

struct HttpResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names; repeated: last wins
};

// Incremental text/event-stream parser (the WHATWG Server-Sent Events rules):
// lines end in LF, CRLF or CR; `:` lines are comments; `data:` lines are
// joined with "\n"; `event:` sets the type (default "message"); `id:` sets
// the last event id, which persists for later events until another `id:`; a
// blank line dispatches the event if it has data. One space after the colon
// is stripped. Unknown fields (and `retry:`) are ignored.
class SseParser {
 public:
  // Returns false to stop; Feed then returns false too and ignores the rest.
  using Callback =
      std::function<bool(const std::string& id, const std::string& type, const std::string& data)>;
  explicit SseParser(Callback on_event) : on_event_(std::move(on_event)) {}
  // Feeds a chunk of the body (any split). Returns false once a callback
  // returned false.
  bool Feed(std::string_view chunk);

 private:
  bool Line(std::string_view line);
  Callback on_event_;
  std::string line_;
  bool last_was_cr_ = false;
  bool stopped_ = false;
  std::string id_, type_, data_;
  bool has_data_ = false;
};

class HttpClient {
 public:
  // `bearer_token` is sent as `Authorization: Bearer <token>` (omitted when
  // empty). `timeout` bounds each Request as a whole (resolve excluded:
  // connect, write, read), and a Stream until its response headers arrived.
  HttpClient(HttpUrl url, std::string bearer_token,
             std::chrono::milliseconds timeout = std::chrono::seconds(60));
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // One request; `target` is the path and query (e.g. "/v1/tips?limit=5"),
  // appended to the URL's base_path. A non-empty `json_body` (and every POST)
  // is sent with `Content-Type: application/json`.
  // Keeps the connection alive between calls and reconnects transparently
  // once if the server closed it: if a reused connection fails before any
  // byte of the answer arrived (the server closed an idle connection), the
  // request is sent again on a fresh one. As with any HTTP client, a server
  // that died after acting on a request can make a POST run twice; the API's
  // idempotency keys make that safe.
  Result<HttpResponse> Request(std::string_view method, std::string_view target,
                               std::string_view json_body = {});

  // GETs a text/event-stream (on a connection of its own) and calls
  // on_event(id, type, data) per event (see SseParser) until it returns false,
  // the server ends the stream, Cancel() is called, or an error. Extra
  // `headers`, e.g. {"Last-Event-ID", "42"}. Returns OK in the first three
  // cases; kUnavailable for transport errors; a non-200 answer gives
  // ApiErrorStatus of it. The timeout applies until the response headers
  // arrived; after that the stream may stay idle indefinitely.
  Status Stream(std::string_view target, const std::map<std::string, std::string>& headers,
                const std::function<bool(const std::string& id, const std::string& type,
                                         const std::string& data)>& on_event);
  // As above; on a non-200 answer also stores it in `*non_ok_response` (when
  // not null) so the caller can tell an API error from a transport error.
  Status Stream(std::string_view target, const std::map<std::string, std::string>& headers,
                const std::function<bool(const std::string& id, const std::string& type,
                                         const std::string& data)>& on_event,
                HttpResponse* non_ok_response);

  // Thread-safe: makes a Stream running on another thread return OK soon
  // (its connection is shut down). No effect on calls that start later.
  void Cancel();

  // A non-2xx answer as a Status: the API's {"code","message"} body becomes
  // "<message> (<code>, HTTP <status>)"; a body that is not such JSON gives
  // "HTTP <status>: <start of body>". Codes: 400 kInvalidArgument, 401/403
  // kPermissionDenied, 404 kNotFound, 409 kFailedPrecondition, 429
  // kResourceExhausted, 503 kUnavailable, others kInternal.
  // REQUIRES: response.status is not 2xx.
  static Status ApiErrorStatus(const HttpResponse& response);

  // Largest response body Request accepts (default 64 MiB); `tipctl backup`
  // raises it to the largest backup a node builds.
  void set_max_body_bytes(uint64_t n) { max_body_bytes_ = n; }

  const HttpUrl& url() const { return url_; }
  // Connections opened by Request so far (tests check keep-alive reuse).
  int connections_opened() const { return connections_opened_; }

 private:
  struct Impl;
  HttpUrl url_;
  std::string token_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Impl> impl_;
  int connections_opened_ = 0;
  uint64_t max_body_bytes_ = 64ull << 20;
  // Cancel(): the native socket of the running Stream, -1 if none.
  std::mutex cancel_mu_;
  int stream_fd_ = -1;
  std::atomic<bool> cancelled_{false};
};

}  // namespace tipd::api
