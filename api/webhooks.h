// Signed, durable, retried webhooks (docs/api.md "Webhooks").
//
// Tour: an operator registers an endpoint (`POST /v1/webhooks`); the node
// generates its secret, stores the endpoint under 'W' and shows the secret
// once. A `WebhookDispatcher` then walks the persisted event log (events.h)
// for every enabled endpoint from its durable cursor, one event at a time:
//
//   read the next event after the cursor -> not a wanted type? skip it
//     -> POST it (Standard Webhooks headers, HMAC-SHA256 signature)
//     -> 2xx: record the attempt, move the cursor, write both (synced), next
//     -> anything else: record the attempt, wait a backed-off, jittered
//        delay, try the same event again; failing for `retry_for` (72 h)
//        disables the endpoint (event "webhook_disabled", warn log, metric).
//
// So delivery is at least once and in order per endpoint: the cursor moves
// only after a 2xx is durable, and a node killed mid-delivery sends the same
// event again after its restart. Nothing is skipped: the dispatcher holds
// the event log's pruning back to the slowest enabled endpoint (within
// EventLogOptions::max_held); an endpoint so far behind that the log prunes
// past its cursor anyway is disabled with a reason naming the lost ids.
//
// Nothing here blocks tips or the event log: each endpoint has at most one
// request in flight, at most `max_concurrent` run at once, every request has
// connect and response deadlines and a response body limit, and records are
// written through the GroupCommitter.
//
// The HTTP side is a seam (`WebhookSender`): the daemon uses
// `HttpWebhookSender` (Boost.Beast, TLS through Asio's OpenSSL stream,
// addresses checked after DNS resolution and connected to as checked);
// in-process tests plug in a fake together with ManualClock/ManualTimers.
//
// Threading contract: like EventLog and RpcServer, everything runs on the
// node's io thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/crypto.h"
#include "tipd/api.pb.h"
#include "tipd/storage.pb.h"
#include "util/clock.h"
#include "util/status.h"

namespace boost::asio {
class io_context;
namespace ip {
class address;
}  // namespace ip
}  // namespace boost::asio

namespace tipd {
class MetricsRegistry;
class Counter;
}  // namespace tipd

namespace tipd::storage {
class Database;
class GroupCommitter;
class WriteBatch;
}  // namespace tipd::storage

namespace tipd::api {

class EventLog;
class RpcServer;

// ---- URLs and addresses ----

// Error codes of the URL policy (HTTP 400).
inline constexpr std::string_view kBadWebhookUrl = "BAD_WEBHOOK_URL";
inline constexpr std::string_view kInsecureWebhookUrl = "INSECURE_WEBHOOK_URL";
inline constexpr std::string_view kForbiddenWebhookAddress = "FORBIDDEN_WEBHOOK_ADDRESS";
inline constexpr std::string_view kUnresolvedWebhookHost = "WEBHOOK_HOST_UNRESOLVED";

struct WebhookUrl {
  bool https = false;
  std::string host;  // a DNS name, or an IP literal without brackets
  uint16_t port = 0;
  std::string target;  // path and query, at least "/"
};

// A refusal with its API code (one of the k...Webhook... codes).
struct WebhookUrlError {
  std::string_view code;
  std::string message;
};

// Parses an absolute http(s) URL: scheme http or https, a host (DNS name,
// IPv4, or [IPv6]), an optional port, path and query. Refuses (with
// kBadWebhookUrl) anything else: other schemes, userinfo, fragments, spaces
// and control characters, an empty host, port 0 or > 65535, more than 2048
// characters.
Result<WebhookUrl, WebhookUrlError> ParseWebhookUrl(std::string_view url);

// Whether a webhook may be sent to `address`: loopback always; private
// (RFC 1918, unique local fc00::/7, CGNAT 100.64/10), link-local (169.254/16
// with the cloud metadata address, fe80::/10), unspecified, multicast,
// broadcast and reserved ranges only with `allow_private`. IPv4-mapped IPv6
// addresses are judged as their IPv4 address. The error names the range.
std::optional<std::string> ForbiddenAddressReason(const boost::asio::ip::address& address,
                                                  bool allow_private);

// ---- Signatures (Standard Webhooks) ----

// "whsec_" + base64 of the secret bytes.
std::string EncodeWebhookSecret(ByteSpan secret);
// "v1," + base64(HMAC-SHA256(secret, msg_id + "." + timestamp + "." + body)).
std::string SignWebhook(ByteSpan secret, std::string_view msg_id, int64_t timestamp_s,
                        std::string_view body);
std::string Base64Encode(ByteSpan data);

// ---- The HTTP seam ----

struct WebhookHttpRequest {
  WebhookUrl url;
  bool allow_insecure_http = false;  // this endpoint's flag AND the node's config
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct WebhookHttpResult {
  int status_code = 0;  // 0: no HTTP answer (error says why)
  std::string error;    // "" on a complete 2xx answer
  // The connection was refused before a request left (a forbidden address,
  // http:// to a non-loopback host): worth the same retry, but said apart.
  bool refused_by_policy = false;
};

class WebhookSender {
 public:
  virtual ~WebhookSender() = default;
  // Sends one POST; `done` runs exactly once on the io thread, never inside
  // Send itself.
  virtual void Send(WebhookHttpRequest request, std::function<void(WebhookHttpResult)> done) = 0;
};

struct HttpWebhookSenderOptions {
  std::chrono::milliseconds connect_timeout{10'000};  // DNS + TCP connect
  // TLS handshake, request and the whole answer.
  std::chrono::milliseconds response_timeout{15'000};
  size_t max_response_bytes = 64 * 1024;  // more is cut off (the status still counts)
  bool allow_private = false;             // see ForbiddenAddressReason
  std::filesystem::path ca_file;          // trusted besides the system CA store
};

// Boost.Beast over TCP or TLS (Asio's ssl::stream, peer and host name
// verified). Resolves the host, checks every address (ForbiddenAddressReason;
// for http:// every address must be loopback unless allow_insecure_http),
// and connects only to those checked addresses: no second lookup, no
// rebinding gap.
class HttpWebhookSender final : public WebhookSender {
 public:
  // kInvalidArgument if the CA file cannot be loaded.
  static Result<std::unique_ptr<HttpWebhookSender>> Create(boost::asio::io_context& io,
                                                           HttpWebhookSenderOptions options);
  ~HttpWebhookSender() override;
  void Send(WebhookHttpRequest request, std::function<void(WebhookHttpResult)> done) override;

  // Resolves `url`'s host and checks its addresses as Send would, for the
  // answer to POST /v1/webhooks. `done` gets nullopt (acceptable) or the
  // refusal.
  void CheckUrl(const WebhookUrl& url, bool allow_insecure_http,
                std::function<void(std::optional<WebhookUrlError>)> done);

  struct Impl;  // defined in webhook_sender.cc

 private:
  explicit HttpWebhookSender(std::unique_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// ---- The dispatcher ----

// A refused webhook operation: HTTP status, API code, message.
struct WebhookApiError {
  int http_status = 400;
  std::string code;
  std::string message;
};
template <typename T>
using WebhookResult = Result<T, WebhookApiError>;

struct WebhookOptions {
  // Failing this long (since the first failure of a run) disables an endpoint.
  std::chrono::milliseconds retry_for{72LL * 3600 * 1000};
  // Retry n (n = 1, 2, ...) waits a uniformly random time in
  // [retry_base, min(retry_cap, retry_base * 2^(n-1))] (full jitter).
  std::chrono::milliseconds retry_base{1'000};
  std::chrono::milliseconds retry_cap{3'600'000};
  size_t max_concurrent = 8;         // requests in flight, all endpoints together
  size_t max_endpoints = 32;         // more are refused (409)
  size_t deliveries_kept = 100;      // attempts kept per endpoint
  bool allow_insecure_http = false;  // config webhook-allow-insecure-http
  std::chrono::milliseconds default_overlap{24LL * 3600 * 1000};  // rotate-secret
  std::chrono::milliseconds max_overlap{7LL * 24 * 3600 * 1000};
  // Events read from the log per step (skipping unwanted types).
  size_t read_page = 256;
};

// Checks a URL for POST /v1/webhooks beyond ParseWebhookUrl (DNS and
// address policy). The daemon passes HttpWebhookSender::CheckUrl; tests may
// pass a fake.
using WebhookUrlChecker =
    std::function<void(const WebhookUrl& url, bool allow_insecure_http,
                       std::function<void(std::optional<WebhookUrlError>)> done)>;

class WebhookDispatcher {
 public:
  // Loads every 'W' record from `db` and starts delivering (on `io`, after
  // Open returns) to the enabled ones. Sets the log's retention hold.
  // Everything must outlive the dispatcher. `committer` writes to `db`.
  static Result<std::unique_ptr<WebhookDispatcher>> Open(
      boost::asio::io_context& io, storage::Database* db, storage::GroupCommitter* committer,
      EventLog* log, WebhookSender* sender, const Clock& clock, Timers& timers,
      crypto::RandomSource& rng, WebhookOptions options, MetricsRegistry* metrics = nullptr);
  ~WebhookDispatcher();
  WebhookDispatcher(const WebhookDispatcher&) = delete;
  WebhookDispatcher& operator=(const WebhookDispatcher&) = delete;

  // The routes of docs/api.md "Webhooks" (scope admin). `checker` may be
  // empty (only ParseWebhookUrl then).
  void RegisterRoutes(RpcServer& server, WebhookUrlChecker checker);

  // The operations behind the routes; `done` runs on the io thread once the
  // change is durable (or failed). Errors carry API codes (see docs/api.md).
  struct Created {
    v1::Webhook webhook;
    std::string secret;  // whsec_...
  };
  void Create(const v1::CreateWebhookRequest& request,
              std::function<void(WebhookResult<Created>)> done);
  std::vector<v1::Webhook> List() const;
  std::optional<v1::Webhook> Get(const std::string& id) const;
  void Delete(const std::string& id, std::function<void(WebhookResult<v1::Webhook>)> done);
  void Redeliver(const std::string& id, uint64_t from_event_id,
                 std::function<void(WebhookResult<v1::Webhook>)> done);
  void RotateSecret(const std::string& id, uint64_t overlap_ms,
                    std::function<void(WebhookResult<v1::RotateWebhookSecretResponse>)> done);
  WebhookResult<std::vector<v1::WebhookDelivery>> Deliveries(const std::string& id,
                                                             size_t limit) const;

  // The oldest event id an enabled endpoint still needs (UINT64_MAX: none).
  uint64_t OldestNeeded() const;
  // Requests now in flight (all endpoints).
  size_t in_flight() const { return in_flight_; }

 private:
  struct Endpoint;
  WebhookDispatcher(boost::asio::io_context& io, storage::Database* db,
                    storage::GroupCommitter* committer, EventLog* log, WebhookSender* sender,
                    const Clock& clock, Timers& timers, crypto::RandomSource& rng,
                    WebhookOptions options, MetricsRegistry* metrics);

  void OnPublished(const v1::Event& event);
  // Moves `ep` on: skips unwanted events, starts the next delivery, or waits.
  void Pump(const std::shared_ptr<Endpoint>& ep);
  void PumpWaiting();
  void StartAttempt(const std::shared_ptr<Endpoint>& ep, v1::Event event);
  void OnAttemptDone(const std::shared_ptr<Endpoint>& ep, uint64_t generation, v1::Event event,
                     int64_t started_ms, WebhookHttpResult result);
  void Disable(const std::shared_ptr<Endpoint>& ep, std::string reason);
  // Writes the endpoint's record (plus `extra`) through the committer; `then`
  // runs on the io thread with the outcome.
  void Persist(const std::shared_ptr<Endpoint>& ep, storage::WriteBatch extra,
               std::function<void(Status)> then);
  void AddDelivery(Endpoint& ep, const v1::WebhookDelivery& delivery, storage::WriteBatch* batch);
  std::chrono::milliseconds RetryDelay(uint32_t failures);
  std::string SignatureHeader(const Endpoint& ep, std::string_view msg_id, int64_t ts,
                              std::string_view body) const;
  void RecountEnabled();

  boost::asio::io_context& io_;
  storage::Database* const db_;
  storage::GroupCommitter* const committer_;
  EventLog* const log_;
  WebhookSender* const sender_;
  const Clock& clock_;
  Timers& timers_;
  crypto::RandomSource& rng_;
  const WebhookOptions options_;
  std::map<std::string, std::shared_ptr<Endpoint>> endpoints_;  // by id (hex)
  size_t in_flight_ = 0;
  uint64_t subscription_ = 0;
  Counter* deliveries_ok_ = nullptr;
  Counter* deliveries_failed_ = nullptr;
  Counter* disabled_total_ = nullptr;
  std::shared_ptr<bool> alive_;
};

}  // namespace tipd::api
