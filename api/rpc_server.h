// The node's HTTP/1.1 JSON API server (docs/api.md), on Boost.Beast.
//
// An RpcServer listens (loopback by default), parses requests with size and
// time limits, routes them by method and path pattern, checks the bearer
// token and the route's scope, and hands a parsed `ApiRequest` to the route's
// handler. A handler answers at once (returning an ApiResponse) or later
// through a `Responder` (e.g. POST /v1/tips answers once the tip is acked),
// or turns the response into a Server-Sent Events stream (`EventStream`, for
// GET /v1/events). Beast stays inside rpc_server.cc.
//
// Threading contract: an RpcServer is driven by the caller's io_context and
// is not thread-safe. Construct it, register routes, Listen, Stop and
// destroy it on the one thread that runs the io_context (or while no thread
// runs it). Handlers run on that thread, from inside io_context::run().
// Responder and EventStream methods must be called on that thread too; other
// threads hand work in with boost::asio::post(io, ...). The io_context must
// outlive the server. A Responder or EventStream may outlive the server;
// after Stop its calls do nothing.
//
// Per connection: requests are read one at a time (no pipelining overlap),
// the header and then the body each within `read_timeout` (also the
// keep-alive idle time), else the connection is closed. The body limit is
// the matched route's (RouteOptions), else RpcLimits::max_body_bytes. While a handler has
// not answered, no timeout applies: the handler owns that wait. Memory per
// connection is bounded by the header and body limits (and, for an event
// stream, max_stream_buffer_bytes); connections by max_connections.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/auth.h"
#include "node/lifecycle.h"
#include "util/status.h"

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace tipd {
class MetricsRegistry;
}  // namespace tipd

namespace tipd::api {

// The bounds one hostile client runs into (docs/api.md, "Limits").
struct RpcLimits {
  size_t max_body_bytes = 64 * 1024;   // larger: 413
  size_t max_header_bytes = 8 * 1024;  // larger: 431
  // Header and body of one request must each arrive within this (a deadline
  // from the start of the read, not an idle time: a byte every second does
  // not extend it); also the keep-alive idle time.
  std::chrono::milliseconds read_timeout{15'000};
  // One response write, or one event stream chunk the client must accept.
  std::chrono::milliseconds write_timeout{15'000};
  // Open connections. At the limit a new connection takes the place of the
  // one that has waited longest for its request (idle keep-alive, slow
  // header or body, or closing); only if every connection is busy (handler
  // running or event stream) is it answered 503 and closed.
  size_t max_connections = 256;
  // Open event streams (GET /v1/events); more are answered 503, so streams
  // can never take every connection.
  size_t max_event_streams = 64;
  // An event stream whose unsent data exceeds this is closed (slow reader).
  size_t max_stream_buffer_bytes = 1 << 20;
};

enum class HttpMethod { kGet, kPost, kPut, kDelete, kPatch };
const char* HttpMethodName(HttpMethod m);

// A JSON (or other) response. Errors use ApiResponse::Error.
struct ApiResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers

  // `message` rendered with the API JSON options (see ToJson).
  static ApiResponse Json(const google::protobuf::Message& message, int status = 200);
  // {"code": code, "message": message} with `status`.
  static ApiResponse Error(int status, std::string_view code, std::string_view message);
  // Maps a Status: kInvalidArgument 400 invalid_argument, kNotFound 404
  // not_found, kAlreadyExists 409 already_exists, kFailedPrecondition 409
  // failed_precondition, kPermissionDenied 403 permission_denied,
  // kResourceExhausted 429 resource_exhausted, kUnavailable 503 unavailable,
  // kCorruption/kIOError/kInternal 500 internal. REQUIRES: !status.ok().
  static ApiResponse FromStatus(const Status& status);
  static ApiResponse Text(int status, std::string_view content_type, std::string body);
};

struct ApiRequest {
  HttpMethod method = HttpMethod::kGet;
  std::string target;                          // as sent, e.g. /v1/tips?limit=5
  std::string path;                            // percent-decoded, no query
  std::map<std::string, std::string> params;   // from {name} segments, decoded
  std::map<std::string, std::string> query;    // decoded; last value wins
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::optional<TokenClaims> token;  // set on every authenticated route
  std::string remote;                // "ip:port" of the client

  // The header's value or "" (name in lower case).
  const std::string& Header(const std::string& lower_name) const;
};

// Parses a JSON request body into `out` with protobuf's JSON mapping. An
// empty body reads as {}. Unknown fields are rejected. kInvalidArgument
// "invalid JSON for tipd.v1.TipRequest: <parser's reason>".
Status ParseJson(std::string_view json, google::protobuf::Message* out);
// Renders with proto field names kept, primitive fields printed even when
// zero, 64-bit integers as strings (protobuf's JSON mapping).
std::string ToJson(const google::protobuf::Message& message);

// A long-lived `text/event-stream` response. Writes are queued and sent in
// order. Once the client disconnects (or Close is called, or the buffer
// limit is hit, or a chunk waits longer than write_timeout; those two reset
// the connection) `closed()` turns true, later sends return false, and the
// on_close callback runs once (on the io thread).
class EventStream {
 public:
  virtual ~EventStream() = default;
  // Sends one event: `id:` (omitted if empty), `event:` (omitted if empty)
  // and `data:` (one `data:` line per line of `data`), then a blank line.
  // Returns false if the stream is closed.
  virtual bool Send(std::string_view id, std::string_view event, std::string_view data) = 0;
  // Sends `: text` (a comment; keeps proxies from timing out idle streams).
  virtual bool SendComment(std::string_view text) = 0;
  virtual bool closed() const = 0;
  // Bytes queued but not yet written to the socket (0 once closed). A sender
  // with much to send (e.g. a replay) waits while this is high instead of
  // running into max_stream_buffer_bytes, which closes the stream.
  virtual size_t buffered_bytes() const = 0;
  // Replaces the close callback; runs at once (synchronously) if already
  // closed.
  virtual void OnClose(std::function<void()> on_close) = 0;
  // Flushes nothing more; closes the connection.
  virtual void Close() = 0;
};

// The answer channel of one request. Copyable handle; the first Send (or
// StartEventStream) wins and later calls do nothing. If every copy is
// destroyed without an answer, the client gets 500 "handler did not answer".
class Responder {
 public:
  void Send(ApiResponse response) const;
  // Answers 200 with `Content-Type: text/event-stream` and returns the
  // stream; nullptr if an answer was already given or the connection is
  // gone.
  std::shared_ptr<EventStream> StartEventStream() const;
  bool answered() const;

  struct State;  // defined in rpc_server.cc
  explicit Responder(std::shared_ptr<State> state) : state_(std::move(state)) {}

 private:
  std::shared_ptr<State> state_;
};

// Which token a route needs. A route with kPublic needs none (use sparingly:
// DESIGN.md requires a token on every RPC call).
struct RouteAuth {
  static RouteAuth Public() { return RouteAuth{true, Scope::kRead}; }
  static RouteAuth Needs(Scope s) { return RouteAuth{false, s}; }
  // Any valid token, whatever its scopes (e.g. GET /v1/tokens/self).
  static RouteAuth AnyToken() { return RouteAuth{false, Scope::kRead, true}; }
  bool is_public = false;
  Scope scope = Scope::kRead;
  bool any_scope = false;
};

class TokenRegistry;
// One registered route, as `RpcServer::routes()` lists it (the contract test
// compares them with docs/openapi.json).
struct RouteInfo {
  HttpMethod method = HttpMethod::kGet;
  std::string pattern;  // e.g. "/v1/channels/{id}/close"
  RouteAuth auth;
};

// Per-route options.
struct RouteOptions {
  // The body limit of this route instead of RpcLimits::max_body_bytes (0 =
  // the server's). Checked once the request line and headers are read: a
  // larger Content-Length (or chunked body) is answered 413. Routes that
  // take bulk input (POST /v1/tips/batch: 1 MiB) raise it; every other
  // route keeps the small default. A raised limit is granted only once the
  // request's token passes the route's auth (checked on the header): without
  // one, a body above the default is answered 401/403 unread, so an
  // unauthenticated client still holds at most the default per connection.
  size_t max_body_bytes = 0;
};

using SyncHandler = std::function<ApiResponse(const ApiRequest&)>;
using AsyncHandler = std::function<void(ApiRequest request, Responder responder)>;

class RpcServer {
 public:
  // `authority` verifies tokens, `clock` supplies now for expiry. `metrics`
  // (optional) gets tipd_rpc_requests_total{route,code} and
  // tipd_rpc_request_duration_seconds{route}. All must outlive the server.
  RpcServer(boost::asio::io_context& io, const TokenAuthority& authority, const Clock& clock,
            RpcLimits limits = {}, MetricsRegistry* metrics = nullptr);
  ~RpcServer();  // Stop()s.
  RpcServer(const RpcServer&) = delete;
  RpcServer& operator=(const RpcServer&) = delete;

  // Registers a route. `pattern` is a path whose segments are literals or
  // `{name}` captures (a non-empty segment), e.g. "/v1/channels/{id}/close".
  // On a path several patterns match, the one with more literal segments
  // wins. Register before Listen.
  void Handle(HttpMethod method, std::string_view pattern, RouteAuth auth, SyncHandler handler);
  void HandleAsync(HttpMethod method, std::string_view pattern, RouteAuth auth,
                   AsyncHandler handler, RouteOptions options = {});

  // Binds and starts accepting; returns the bound port (pass 0 for any free
  // port). kInvalidArgument for a bad host, kUnavailable if the address is
  // in use or cannot be bound. REQUIRES: called at most once.
  Result<uint16_t> Listen(const std::string& host, uint16_t port);
  // Stops accepting and closes every connection and event stream.
  // Idempotent.
  void Stop();

  // Every registered route, in registration order.
  std::vector<RouteInfo> routes() const;

  // Open connections (closed ones no longer count, even before their
  // pending operations have finished).
  size_t connection_count() const;

  // Token records (api/token_registry.h): with one set, every authenticated
  // request is also checked against its token's record (401 TOKEN_REVOKED)
  // and notes the token's use. Null (the default): tokens are checked by
  // signature and expiry only. REQUIRES: outlives the server.
  void SetTokenRegistry(TokenRegistry* registry);

  // Ends the open event streams whose token `verdict` refuses: each gets a
  // final `event: error` whose data is the ApiError {code, message} the
  // verdict returns, and its connection is closed once that is written.
  // Returns how many were ended. (A revoked token's streams end at once; the
  // daemon also sweeps expired ones.)
  using StreamVerdict =
      std::function<std::optional<std::pair<std::string, std::string>>(const TokenClaims&)>;
  size_t EndTokenStreams(const StreamVerdict& verdict);

  struct Shared;  // defined in rpc_server.cc

 private:
  std::shared_ptr<Shared> shared_;
};

}  // namespace tipd::api
