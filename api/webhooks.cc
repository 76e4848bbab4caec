#include "api/webhooks.h"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <charconv>
#include <limits>
#include <set>
#include <utility>

#include "api/events.h"
#include "api/rpc_server.h"
#include "node/logging.h"
#include "storage/storage.h"
#include "util/bytes.h"
#include "util/metrics.h"

namespace tipd::api {

namespace net = boost::asio;

// ---- URLs ----

namespace {

WebhookUrlError BadUrl(std::string message) {
  return WebhookUrlError{kBadWebhookUrl, std::move(message)};
}

bool IsHostChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.';
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace

Result<WebhookUrl, WebhookUrlError> ParseWebhookUrl(std::string_view url) {
  if (url.empty()) return BadUrl("url is required");
  if (url.size() > 2048) return BadUrl("url is longer than 2048 characters");
  for (char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      return BadUrl("url contains a space, control or non-ASCII character (percent-encode it)");
    }
  }
  WebhookUrl out;
  const size_t colon = url.find("://");
  if (colon == url.npos) return BadUrl("url must start with https:// or http://");
  const std::string scheme = Lower(url.substr(0, colon));
  if (scheme == "https") {
    out.https = true;
  } else if (scheme != "http") {
    return BadUrl("url scheme '" + scheme + "' is not allowed (use https:// or http://)");
  }
  std::string_view rest = url.substr(colon + 3);
  if (rest.find('#') != rest.npos) return BadUrl("url must not have a fragment (#...)");
  const size_t path_at = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, path_at);
  std::string_view target = path_at == rest.npos ? std::string_view() : rest.substr(path_at);
  if (authority.find('@') != authority.npos) {
    return BadUrl("url must not carry a user name or password (userinfo before '@')");
  }
  if (authority.empty()) return BadUrl("url has no host");
  std::string_view host, port_text;
  if (authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == authority.npos) return BadUrl("url has an unclosed '[' in its IPv6 host");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return BadUrl("unexpected characters after the IPv6 host");
      port_text = after.substr(1);
      if (port_text.empty()) return BadUrl("url has an empty port");
    }
    boost::system::error_code ec;
    auto address = net::ip::make_address_v6(std::string(host), ec);
    if (ec || host.find('%') != host.npos) {
      return BadUrl("'" + std::string(host) + "' is not an IPv6 address");
    }
    (void)address;
  } else {
    const size_t c = authority.rfind(':');
    host = authority.substr(0, c);
    if (c != authority.npos) {
      port_text = authority.substr(c + 1);
      if (port_text.empty()) return BadUrl("url has an empty port");
    }
    if (host.empty()) return BadUrl("url has no host");
    if (host.size() > 253) return BadUrl("url host is longer than 253 characters");
    for (char ch : host) {
      if (!IsHostChar(ch)) {
        return BadUrl("url host '" + std::string(host) + "' has a character other than letters, " +
                      "digits, '-' and '.'");
      }
    }
    if (host.front() == '.' || host.front() == '-' || host.find("..") != host.npos) {
      return BadUrl("url host '" + std::string(host) + "' is not a valid name");
    }
  }
  out.host = Lower(host);
  out.port = out.https ? 443 : 80;
  if (!port_text.empty()) {
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc() || ptr != port_text.data() + port_text.size() || value == 0 ||
        value > 65535) {
      return BadUrl("url port '" + std::string(port_text) + "' must be 1..65535");
    }
    out.port = static_cast<uint16_t>(value);
  }
  out.target = target.empty() ? "/" : std::string(target);
  if (out.target.front() == '?') out.target.insert(out.target.begin(), '/');
  return out;
}

namespace {

bool InV4(uint32_t a, uint32_t net, int bits) {
  const uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  return (a & mask) == (net & mask);
}

constexpr uint32_t V4(int a, int b, int c, int d) {
  return (static_cast<uint32_t>(a) << 24) | (static_cast<uint32_t>(b) << 16) |
         (static_cast<uint32_t>(c) << 8) | static_cast<uint32_t>(d);
}

std::optional<std::string> ForbiddenV4(uint32_t a, bool allow_private) {
  if (InV4(a, V4(127, 0, 0, 0), 8)) return std::nullopt;  // loopback
  struct Range {
    uint32_t net;
    int bits;
    const char* name;
  };
  static constexpr Range kRanges[] = {
      {V4(0, 0, 0, 0), 8, "unspecified (0.0.0.0/8)"},
      {V4(10, 0, 0, 0), 8, "private (10.0.0.0/8)"},
      {V4(100, 64, 0, 0), 10, "shared/CGNAT (100.64.0.0/10)"},
      {V4(169, 254, 0, 0), 16, "link-local or cloud metadata (169.254.0.0/16)"},
      {V4(172, 16, 0, 0), 12, "private (172.16.0.0/12)"},
      {V4(192, 0, 0, 0), 24, "IETF protocol assignments (192.0.0.0/24)"},
      {V4(192, 168, 0, 0), 16, "private (192.168.0.0/16)"},
      {V4(198, 18, 0, 0), 15, "benchmarking (198.18.0.0/15)"},
      {V4(224, 0, 0, 0), 4, "multicast (224.0.0.0/4)"},
      {V4(240, 0, 0, 0), 4, "reserved or broadcast (240.0.0.0/4)"},
  };
  if (allow_private) return std::nullopt;
  for (const Range& r : kRanges) {
    if (InV4(a, r.net, r.bits)) return std::string(r.name);
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> ForbiddenAddressReason(const net::ip::address& address,
                                                  bool allow_private) {
  if (address.is_v4()) return ForbiddenV4(address.to_v4().to_uint(), allow_private);
  const net::ip::address_v6 v6 = address.to_v6();
  if (v6.is_v4_mapped()) {
    return ForbiddenV4(net::ip::make_address_v4(net::ip::v4_mapped, v6).to_uint(), allow_private);
  }
  if (v6.is_loopback()) return std::nullopt;
  if (allow_private) return std::nullopt;
  const auto b = v6.to_bytes();
  if (v6.is_unspecified()) return "unspecified (::)";
  if ((b[0] & 0xfe) == 0xfc) return "unique local (fc00::/7)";
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return "link-local (fe80::/10)";
  if (b[0] == 0xff) return "multicast (ff00::/8)";
  if (std::all_of(b.begin(), b.begin() + 12, [](uint8_t x) { return x == 0; })) {
    return "IPv4-compatible (::/96)";  // :: and ::1 were handled above
  }
  // 64:ff9b::/96 (NAT64) embeds an IPv4 address: judge that one.
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b &&
      std::all_of(b.begin() + 4, b.begin() + 12, [](uint8_t x) { return x == 0; })) {
    const uint32_t a = V4(b[12], b[13], b[14], b[15]);
    if (InV4(a, V4(127, 0, 0, 0), 8)) return "NAT64 of loopback (64:ff9b::/96)";
    return ForbiddenV4(a, false);
  }
  return std::nullopt;
}

// ---- Signatures ----

std::string Base64Encode(ByteSpan data) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const uint32_t v = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8) | data[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i + 1 == data.size()) {
    const uint32_t v = uint32_t{data[i]} << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == data.size()) {
    const uint32_t v = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string EncodeWebhookSecret(ByteSpan secret) { return "whsec_" + Base64Encode(secret); }

std::string SignWebhook(ByteSpan secret, std::string_view msg_id, int64_t timestamp_s,
                        std::string_view body) {
  std::string content;
  content.reserve(msg_id.size() + body.size() + 24);
  content.append(msg_id).append(".").append(std::to_string(timestamp_s)).append(".").append(body);
  const Hash32 mac = crypto::HmacSha256(secret, AsSpan(content));
  return "v1," + Base64Encode(mac);
}

// ---- The dispatcher ----

namespace {

using WebhookRecords = storage::RecordStore<v1::StoredWebhook>;
using DeliveryRecords = storage::RecordStore<v1::StoredWebhookDelivery>;

constexpr char kWebhookFamily = static_cast<char>(storage::KeyFamily::kWebhook);
constexpr char kDeliveryFamily = static_cast<char>(storage::KeyFamily::kWebhookDelivery);
constexpr size_t kIdBytes = 16;
constexpr size_t kSecretBytes = 32;

std::string WebhookKey(std::string_view id_bytes) {
  std::string key(1, kWebhookFamily);
  key.append(id_bytes);
  return key;
}

std::string DeliveryPrefix(std::string_view id_bytes) {
  std::string key(1, kDeliveryFamily);
  key.append(id_bytes);
  return key;
}

std::string DeliveryKey(std::string_view id_bytes, uint64_t seq) {
  std::string key = DeliveryPrefix(id_bytes);
  storage::AppendBigEndian64(&key, seq);
  return key;
}

WebhookApiError NotFound(const std::string& id) {
  return {404, "WEBHOOK_NOT_FOUND", "no webhook with id '" + id + "'"};
}

WebhookApiError StorageError(const Status& s) {
  return {500, "INTERNAL", "the webhook could not be stored: " + s.ToString()};
}

uint64_t NowMsOf(const Clock& clock) {
  return static_cast<uint64_t>(std::max<int64_t>(0, clock.NowMs()));
}

std::string Truncated(std::string s, size_t max) {
  if (s.size() > max) s.resize(max);
  return s;
}

}  // namespace

struct WebhookDispatcher::Endpoint {
  v1::StoredWebhook record;  // as last written (or being written)
  std::string id_bytes;      // 16 bytes
  std::string id_hex;
  std::set<std::string> types;  // empty = every type
  // Every id <= cursor is handled (delivered with a 2xx, or unwanted); may
  // run ahead of durable_cursor by skipped events not yet written.
  uint64_t cursor = 0;
  uint64_t durable_cursor = 0;
  bool in_flight = false;
  bool waiting_slot = false;
  size_t writes = 0;  // Persist calls not yet completed
  Timers::Id retry_timer = 0;
  uint64_t generation = 0;  // bumped when the cursor is moved by hand
  bool deleted = false;

  bool enabled() const { return record.webhook().enabled(); }
  bool Wants(const v1::Event& e) const { return types.empty() || types.count(e.type()) != 0; }
};

Result<std::unique_ptr<WebhookDispatcher>> WebhookDispatcher::Open(
    net::io_context& io, storage::Database* db, storage::GroupCommitter* committer, EventLog* log,
    WebhookSender* sender, const Clock& clock, Timers& timers, crypto::RandomSource& rng,
    WebhookOptions options, MetricsRegistry* metrics) {
  if (options.max_concurrent < 1) options.max_concurrent = 1;
  if (options.deliveries_kept < 1) options.deliveries_kept = 1;
  if (options.read_page < 1) options.read_page = 1;
  if (options.retry_base.count() < 1) options.retry_base = std::chrono::milliseconds(1);
  options.retry_cap = std::max(options.retry_cap, options.retry_base);
  std::unique_ptr<WebhookDispatcher> d(new WebhookDispatcher(
      io, db, committer, log, sender, clock, timers, rng, std::move(options), metrics));
  WebhookRecords records(db);
  const std::string prefix(1, kWebhookFamily);
  Status s = records.Scan(
      prefix, storage::PrefixEnd(prefix), std::numeric_limits<size_t>::max(),
      [&](std::string_view key, v1::StoredWebhook record) -> Status {
        if (key.size() != 1 + kIdBytes || record.secret().size() != kSecretBytes) {
          return Status::Corruption("malformed webhook record " + storage::EscapeKey(key));
        }
        auto ep = std::make_shared<Endpoint>();
        ep->id_bytes = std::string(key.substr(1));
        ep->id_hex = HexEncode(AsSpan(ep->id_bytes));
        for (const std::string& t : record.webhook().event_types()) ep->types.insert(t);
        ep->cursor = ep->durable_cursor = record.webhook().cursor();
        ep->record = std::move(record);
        d->endpoints_.emplace(ep->id_hex, std::move(ep));
        return Status::Ok();
      });
  TIPD_RETURN_IF_ERROR(s);
  WebhookDispatcher* raw = d.get();
  log->SetRetentionHold([raw] { return raw->OldestNeeded(); });
  d->subscription_ = log->Subscribe({}, [raw](const v1::Event& e) { raw->OnPublished(e); });
  // Start (or resume) every enabled endpoint once the io_context runs: a
  // pending retry at its time, the rest at once (a node killed mid-delivery
  // sends that event again).
  std::weak_ptr<bool> alive = d->alive_;
  net::post(io, [raw, alive] {
    if (alive.expired()) return;
    const uint64_t now = NowMsOf(raw->clock_);
    for (auto& [id, ep] : raw->endpoints_) {
      if (!ep->enabled()) continue;
      const uint64_t next = ep->record.webhook().next_attempt_at_ms();
      if (next > now) {
        std::shared_ptr<Endpoint> e = ep;
        ep->retry_timer = raw->timers_.After(std::chrono::milliseconds(next - now), [raw, e] {
          e->retry_timer = 0;
          raw->Pump(e);
        });
        continue;
      }
      raw->Pump(ep);
    }
  });
  return d;
}

WebhookDispatcher::WebhookDispatcher(net::io_context& io, storage::Database* db,
                                     storage::GroupCommitter* committer, EventLog* log,
                                     WebhookSender* sender, const Clock& clock, Timers& timers,
                                     crypto::RandomSource& rng, WebhookOptions options,
                                     MetricsRegistry* metrics)
    : io_(io),
      db_(db),
      committer_(committer),
      log_(log),
      sender_(sender),
      clock_(clock),
      timers_(timers),
      rng_(rng),
      options_(std::move(options)),
      alive_(std::make_shared<bool>(true)) {
  if (metrics != nullptr) {
    deliveries_ok_ = &metrics->AddCounter("tipd_webhook_deliveries_ok_total",
                                          "webhook deliveries answered with a 2xx");
    deliveries_failed_ =
        &metrics->AddCounter("tipd_webhook_delivery_failures_total",
                             "webhook delivery attempts that failed (no answer, timeout, non-2xx)");
    disabled_total_ = &metrics->AddCounter("tipd_webhooks_disabled_total",
                                           "webhook endpoints disabled by the node");
  }
}

WebhookDispatcher::~WebhookDispatcher() {
  log_->SetRetentionHold({});
  if (subscription_) log_->Unsubscribe(subscription_);
  for (auto& [id, ep] : endpoints_) {
    if (ep->retry_timer) timers_.Cancel(ep->retry_timer);
  }
}

uint64_t WebhookDispatcher::OldestNeeded() const {
  uint64_t oldest = std::numeric_limits<uint64_t>::max();
  for (const auto& [id, ep] : endpoints_) {
    if (ep->enabled()) oldest = std::min(oldest, ep->durable_cursor + 1);
  }
  return oldest;
}

std::vector<v1::Webhook> WebhookDispatcher::List() const {
  std::vector<v1::Webhook> out;
  for (const auto& [id, ep] : endpoints_) {
    out.push_back(ep->record.webhook());
    out.back().set_cursor(ep->cursor);
  }
  return out;
}

std::optional<v1::Webhook> WebhookDispatcher::Get(const std::string& id) const {
  auto it = endpoints_.find(id);
  if (it == endpoints_.end()) return std::nullopt;
  v1::Webhook w = it->second->record.webhook();
  w.set_cursor(it->second->cursor);
  return w;
}

void WebhookDispatcher::Persist(const std::shared_ptr<Endpoint>& ep, storage::WriteBatch extra,
                                std::function<void(Status)> then) {
  storage::WriteBatch batch;
  v1::StoredWebhook record = ep->record;
  record.mutable_webhook()->set_cursor(ep->cursor);
  batch.Put(WebhookKey(ep->id_bytes), WebhookRecords::Encode(record));
  batch.Append(extra);
  const uint64_t cursor = ep->cursor;
  const uint64_t generation = ep->generation;
  ++ep->writes;
  std::weak_ptr<bool> alive = alive_;
  net::io_context& io = io_;
  committer_->Submit(std::move(batch), [alive, &io, ep, cursor, generation,
                                        then = std::move(then)](Status status) mutable {
    net::post(
        io, [alive, ep, cursor, generation, then = std::move(then), status = std::move(status)] {
          if (alive.expired()) return;
          --ep->writes;
          // A cursor moved back by hand (redeliver) since is not undone here.
          if (status.ok() && generation == ep->generation) {
            ep->durable_cursor = std::max(ep->durable_cursor, cursor);
          } else {
            node::Logger("webhooks")
                ->error("webhook {}: writing its record failed: {}", ep->id_hex, status.ToString());
          }
          if (then) then(status);
        });
  });
}

void WebhookDispatcher::AddDelivery(Endpoint& ep, const v1::WebhookDelivery& delivery,
                                    storage::WriteBatch* batch) {
  const uint64_t seq = ep.record.next_delivery_seq();
  v1::StoredWebhookDelivery stored;
  *stored.mutable_delivery() = delivery;
  batch->Put(DeliveryKey(ep.id_bytes, seq), DeliveryRecords::Encode(std::move(stored)));
  if (seq >= options_.deliveries_kept) {
    batch->Delete(DeliveryKey(ep.id_bytes, seq - options_.deliveries_kept));
  }
  ep.record.set_next_delivery_seq(seq + 1);
}

std::chrono::milliseconds WebhookDispatcher::RetryDelay(uint32_t failures) {
  // Full jitter over [base, min(cap, base * 2^(failures-1))].
  const int64_t base = options_.retry_base.count();
  const int64_t cap = options_.retry_cap.count();
  int64_t ceiling = base;
  for (uint32_t i = 1; i < failures && ceiling < cap; ++i) ceiling = std::min(cap, ceiling * 2);
  ceiling = std::min(ceiling, cap);
  uint8_t bytes[8];
  rng_.Fill(bytes);
  uint64_t r = 0;
  for (uint8_t b : bytes) r = (r << 8) | b;
  const uint64_t span = static_cast<uint64_t>(ceiling - base) + 1;
  return std::chrono::milliseconds(base + static_cast<int64_t>(r % span));
}

std::string WebhookDispatcher::SignatureHeader(const Endpoint& ep, std::string_view msg_id,
                                               int64_t ts, std::string_view body) const {
  std::string header = SignWebhook(AsSpan(ep.record.secret()), msg_id, ts, body);
  if (!ep.record.previous_secret().empty() &&
      NowMsOf(clock_) < ep.record.webhook().previous_secret_expires_at_ms()) {
    header += " " + SignWebhook(AsSpan(ep.record.previous_secret()), msg_id, ts, body);
  }
  return header;
}

void WebhookDispatcher::OnPublished(const v1::Event& event) {
  // Each idle endpoint that was caught up takes the new event straight away
  // (no read); the others read it from the log when they get there.
  std::vector<std::shared_ptr<Endpoint>> ready;
  for (auto& [id, ep] : endpoints_) {
    if (!ep->enabled() || ep->in_flight || ep->waiting_slot || ep->retry_timer || ep->writes > 0)
      continue;
    ready.push_back(ep);
  }
  for (auto& ep : ready) {
    if (ep->deleted || ep->in_flight) continue;
    if (event.id() == ep->cursor + 1 && !ep->Wants(event)) {
      ep->cursor = event.id();
      if (ep->cursor > ep->durable_cursor + options_.read_page) Pump(ep);
      continue;
    }
    if (event.id() == ep->cursor + 1 && in_flight_ < options_.max_concurrent &&
        ep->cursor + 1 >= log_->first_id()) {
      StartAttempt(ep, event);  // the next one, in hand: no read
      continue;
    }
    Pump(ep);
  }
}

void WebhookDispatcher::Pump(const std::shared_ptr<Endpoint>& ep) {
  if (ep->deleted || !ep->enabled() || ep->in_flight || ep->waiting_slot || ep->retry_timer ||
      ep->writes > 0) {
    return;
  }
  if (ep->cursor + 1 < log_->first_id()) {
    return Disable(ep, "fell behind the event log: events " + std::to_string(ep->cursor + 1) +
                           ".." + std::to_string(log_->first_id() - 1) +
                           " were pruned before this endpoint received them (redeliver from " +
                           std::to_string(log_->first_id()) + " to go on)");
  }
  const uint64_t end = log_->published_id();
  if (ep->cursor < end) {
    if (in_flight_ >= options_.max_concurrent) {
      ep->waiting_slot = true;
      return;
    }
    Result<std::vector<v1::Event>> page = log_->ReadAfter(ep->cursor, options_.read_page);
    if (!page.ok()) {
      node::Logger("webhooks")
          ->error("webhook {}: reading the event log after id {} failed: {}", ep->id_hex,
                  ep->cursor, page.status().ToString());
      std::shared_ptr<Endpoint> e = ep;
      ep->retry_timer = timers_.After(options_.retry_cap, [this, e] {
        e->retry_timer = 0;
        Pump(e);
      });
      return;
    }
    bool read_all = page->size() < options_.read_page;
    for (v1::Event& event : *page) {
      if (event.id() > end) {
        read_all = true;
        break;
      }
      if (ep->Wants(event)) return StartAttempt(ep, std::move(event));
      ep->cursor = event.id();
    }
    if (read_all) {
      ep->cursor = std::max(ep->cursor, end);  // every stored id <= end was read
    } else {
      // A full page of unwanted events: note the progress, then read on.
      return Persist(ep, storage::WriteBatch(), [this, ep](Status) { Pump(ep); });
    }
  }
  // Caught up. Note skipped progress now and then so pruning moves on.
  if (ep->cursor > ep->durable_cursor && ep->cursor - ep->durable_cursor >= options_.read_page) {
    Persist(ep, storage::WriteBatch(), [this, ep](Status) { Pump(ep); });
  }
}

void WebhookDispatcher::PumpWaiting() {
  for (auto& [id, ep] : endpoints_) {
    if (in_flight_ >= options_.max_concurrent) return;
    if (!ep->waiting_slot) continue;
    ep->waiting_slot = false;
    Pump(ep);
  }
}

void WebhookDispatcher::StartAttempt(const std::shared_ptr<Endpoint>& ep, v1::Event event) {
  ep->in_flight = true;
  ++in_flight_;
  WebhookHttpRequest request;
  // Checked when the endpoint was created; a record that no longer parses
  // fails its attempt below like an unreachable host.
  auto url = ParseWebhookUrl(ep->record.webhook().url());
  request.allow_insecure_http =
      ep->record.webhook().allow_insecure_http() && options_.allow_insecure_http;
  request.body = ToJson(event);
  const std::string msg_id = "evt_" + std::to_string(event.id());
  const int64_t ts = clock_.NowMs() / 1000;
  request.headers = {
      {"content-type", "application/json"},
      {"user-agent", "tipd-webhooks/1"},
      {"webhook-id", msg_id},
      {"webhook-timestamp", std::to_string(ts)},
      {"webhook-signature", SignatureHeader(*ep, msg_id, ts, request.body)},
  };
  const int64_t started =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_.SteadyNow().time_since_epoch())
          .count();
  std::weak_ptr<bool> alive = alive_;
  auto done = [this, alive, ep, generation = ep->generation, event = std::move(event),
               started](WebhookHttpResult result) mutable {
    if (alive.expired()) return;
    OnAttemptDone(ep, generation, std::move(event), started, std::move(result));
  };
  if (!url.ok()) {
    WebhookHttpResult result;
    result.error = url.error().message;
    result.refused_by_policy = true;
    net::post(io_, [done = std::move(done), result = std::move(result)]() mutable {
      done(std::move(result));
    });
    return;
  }
  request.url = std::move(*url);
  sender_->Send(std::move(request), std::move(done));
}

void WebhookDispatcher::OnAttemptDone(const std::shared_ptr<Endpoint>& ep, uint64_t generation,
                                      v1::Event event, int64_t started_ms,
                                      WebhookHttpResult result) {
  ep->in_flight = false;
  --in_flight_;
  if (ep->deleted) return PumpWaiting();
  const uint64_t now = NowMsOf(clock_);
  const int64_t steady_now =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_.SteadyNow().time_since_epoch())
          .count();
  const bool ok = result.status_code >= 200 && result.status_code < 300;
  v1::Webhook* w = ep->record.mutable_webhook();
  v1::WebhookDelivery delivery;
  delivery.set_event_id(event.id());
  delivery.set_event_type(event.type());
  delivery.set_attempt(w->consecutive_failures() + 1);
  delivery.set_status_code(static_cast<uint32_t>(std::max(0, result.status_code)));
  delivery.set_latency_ms(static_cast<uint64_t>(std::max<int64_t>(0, steady_now - started_ms)));
  delivery.set_at_ms(now);
  if (!ok && result.error.empty()) {
    result.error = "answered HTTP " + std::to_string(result.status_code);
  }
  delivery.set_error(Truncated(result.error, 512));
  storage::WriteBatch batch;
  if (generation != ep->generation) {
    // The cursor was moved by hand (redeliver) while this was in flight:
    // record the attempt, move nothing.
    AddDelivery(*ep, delivery, &batch);
    Persist(ep, std::move(batch), [this, ep](Status) { Pump(ep); });
    return PumpWaiting();
  }
  if (ok) {
    if (deliveries_ok_) deliveries_ok_->Inc();
    ep->cursor = std::max(ep->cursor, event.id());
    w->set_last_success_at_ms(now);
    w->set_failing_since_ms(0);
    w->set_consecutive_failures(0);
    w->set_next_attempt_at_ms(0);
    AddDelivery(*ep, delivery, &batch);
    // The next event leaves once this cursor is durable.
    Persist(ep, std::move(batch), [this, ep](Status) { Pump(ep); });
    return PumpWaiting();
  }
  if (deliveries_failed_) deliveries_failed_->Inc();
  w->set_last_failure_at_ms(now);
  if (w->failing_since_ms() == 0) w->set_failing_since_ms(now);
  w->set_consecutive_failures(w->consecutive_failures() + 1);
  const uint64_t failing_for = now - std::min(now, w->failing_since_ms());
  if (failing_for >= static_cast<uint64_t>(options_.retry_for.count())) {
    AddDelivery(*ep, delivery, &batch);
    w->set_next_attempt_at_ms(0);
    Persist(ep, std::move(batch), {});
    Disable(ep, "deliveries failed for " + std::to_string(failing_for / 1000) + " s (since " +
                    std::to_string(w->failing_since_ms()) + " ms), the limit is " +
                    std::to_string(options_.retry_for.count() / 1000) +
                    " s; last error: " + delivery.error());
    return PumpWaiting();
  }
  const std::chrono::milliseconds delay = RetryDelay(w->consecutive_failures());
  delivery.set_next_attempt_at_ms(now + static_cast<uint64_t>(delay.count()));
  w->set_next_attempt_at_ms(delivery.next_attempt_at_ms());
  AddDelivery(*ep, delivery, &batch);
  Persist(ep, std::move(batch), [this, ep](Status) { Pump(ep); });
  std::shared_ptr<Endpoint> e = ep;
  ep->retry_timer = timers_.After(delay, [this, e] {
    e->retry_timer = 0;
    Pump(e);
  });
  PumpWaiting();
}

void WebhookDispatcher::Disable(const std::shared_ptr<Endpoint>& ep, std::string reason) {
  v1::Webhook* w = ep->record.mutable_webhook();
  if (!w->enabled()) return;
  w->set_enabled(false);
  w->set_disabled_reason(reason);
  w->set_next_attempt_at_ms(0);
  if (ep->retry_timer) timers_.Cancel(ep->retry_timer);
  ep->retry_timer = 0;
  ep->waiting_slot = false;
  if (disabled_total_) disabled_total_->Inc();
  node::Logger("webhooks")->warn("webhook {} ({}) disabled: {}", ep->id_hex, w->url(), reason);
  Persist(ep, storage::WriteBatch(), [this, ep, reason](Status status) {
    if (!status.ok()) return;
    v1::Event event;
    event.set_type(std::string(kEventWebhookDisabled));
    v1::Webhook* view = event.mutable_webhook()->mutable_webhook();
    *view = ep->record.webhook();
    view->set_cursor(ep->cursor);
    event.mutable_webhook()->set_reason(reason);
    log_->Append(std::move(event));
  });
}

// ---- Operations ----

void WebhookDispatcher::Create(const v1::CreateWebhookRequest& request,
                               std::function<void(WebhookResult<Created>)> done) {
  auto url = ParseWebhookUrl(request.url());
  if (!url.ok())
    return done(WebhookApiError{400, std::string(url.error().code), url.error().message});
  if (request.allow_insecure_http() && !options_.allow_insecure_http) {
    return done(WebhookApiError{400, std::string(kInsecureWebhookUrl),
                                "allow_insecure_http needs the node's config "
                                "webhook-allow-insecure-http=true"});
  }
  std::set<std::string> types;
  for (const std::string& t : request.event_types()) {
    if (!IsEventType(t)) {
      return done(WebhookApiError{400, "UNKNOWN_EVENT_TYPE",
                                  "unknown event type '" + t +
                                      "' (valid: tip_received, tip_sent, ack, channel, peer, "
                                      "webhook_disabled)"});
    }
    types.insert(t);
  }
  if (request.description().size() > 256) {
    return done(
        WebhookApiError{400, "BAD_WEBHOOK_DESCRIPTION", "description is longer than 256 bytes"});
  }
  if (endpoints_.size() >= options_.max_endpoints) {
    return done(WebhookApiError{409, "TOO_MANY_WEBHOOKS",
                                "this node already has " + std::to_string(endpoints_.size()) +
                                    " webhooks (webhook-max-endpoints); delete one first"});
  }
  auto ep = std::make_shared<Endpoint>();
  uint8_t id[kIdBytes];
  rng_.Fill(id);
  ep->id_bytes.assign(reinterpret_cast<const char*>(id), kIdBytes);
  ep->id_hex = HexEncode(AsSpan(ep->id_bytes));
  if (endpoints_.count(ep->id_hex)) {
    return done(WebhookApiError{500, "INTERNAL", "webhook id collision; try again"});
  }
  uint8_t secret[kSecretBytes];
  rng_.Fill(secret);
  ep->record.set_secret(reinterpret_cast<const char*>(secret), kSecretBytes);
  const std::string secret_text = EncodeWebhookSecret(secret);
  crypto::SecureWipe(secret, sizeof(secret));
  v1::Webhook* w = ep->record.mutable_webhook();
  w->set_id(ep->id_hex);
  w->set_url(request.url());
  for (const std::string& t : types) w->add_event_types(t);
  w->set_description(request.description());
  w->set_enabled(true);
  w->set_created_at_ms(NowMsOf(clock_));
  w->set_allow_insecure_http(request.allow_insecure_http());
  // Delivers the events published from now on.
  ep->cursor = log_->published_id();
  ep->types = std::move(types);
  Persist(ep, storage::WriteBatch(),
          [this, ep, secret_text, done = std::move(done)](Status status) {
            if (!status.ok()) return done(StorageError(status));
            ep->durable_cursor = ep->cursor;
            endpoints_.emplace(ep->id_hex, ep);
            v1::Webhook view = ep->record.webhook();
            view.set_cursor(ep->cursor);
            done(Created{std::move(view), secret_text});
            Pump(ep);
          });
}

void WebhookDispatcher::Delete(const std::string& id,
                               std::function<void(WebhookResult<v1::Webhook>)> done) {
  auto it = endpoints_.find(id);
  if (it == endpoints_.end()) return done(NotFound(id));
  std::shared_ptr<Endpoint> ep = it->second;
  endpoints_.erase(it);
  ep->deleted = true;
  if (ep->retry_timer) timers_.Cancel(ep->retry_timer);
  ep->retry_timer = 0;
  storage::WriteBatch batch;
  batch.Delete(WebhookKey(ep->id_bytes));
  const std::string prefix = DeliveryPrefix(ep->id_bytes);
  Status s = db_->ScanPrefix(prefix, std::numeric_limits<size_t>::max(),
                             [&](std::string_view key, std::string_view) {
                               batch.Delete(key);
                               return Status::Ok();
                             });
  if (!s.ok()) {
    node::Logger("webhooks")
        ->warn("webhook {}: listing its delivery records failed: {}", id, s.ToString());
  }
  v1::Webhook view = ep->record.webhook();
  view.set_cursor(ep->cursor);
  std::weak_ptr<bool> alive = alive_;
  net::io_context& io = io_;
  committer_->Submit(std::move(batch), [alive, &io, view = std::move(view),
                                        done = std::move(done)](Status status) mutable {
    net::post(io, [alive, view = std::move(view), done = std::move(done),
                   status = std::move(status)]() mutable {
      if (alive.expired()) return;
      if (!status.ok()) return done(StorageError(status));
      done(std::move(view));
    });
  });
}

void WebhookDispatcher::Redeliver(const std::string& id, uint64_t from_event_id,
                                  std::function<void(WebhookResult<v1::Webhook>)> done) {
  auto it = endpoints_.find(id);
  if (it == endpoints_.end()) return done(NotFound(id));
  std::shared_ptr<Endpoint> ep = it->second;
  if (from_event_id < log_->first_id() || from_event_id > log_->published_id() + 1) {
    return done(WebhookApiError{
        400, "EVENT_NOT_RETAINED",
        "from_event_id must be an event the log holds: " + std::to_string(log_->first_id()) + ".." +
            std::to_string(log_->published_id() + 1) + ", got " + std::to_string(from_event_id)});
  }
  ++ep->generation;
  if (ep->retry_timer) timers_.Cancel(ep->retry_timer);
  ep->retry_timer = 0;
  ep->cursor = from_event_id - 1;
  ep->durable_cursor = std::min(ep->durable_cursor, ep->cursor);
  v1::Webhook* w = ep->record.mutable_webhook();
  w->set_enabled(true);
  w->set_disabled_reason("");
  w->set_failing_since_ms(0);
  w->set_consecutive_failures(0);
  w->set_next_attempt_at_ms(0);
  Persist(ep, storage::WriteBatch(), [this, ep, done = std::move(done)](Status status) {
    if (!status.ok()) return done(StorageError(status));
    v1::Webhook view = ep->record.webhook();
    view.set_cursor(ep->cursor);
    done(std::move(view));
    Pump(ep);
  });
}

void WebhookDispatcher::RotateSecret(
    const std::string& id, uint64_t overlap_ms,
    std::function<void(WebhookResult<v1::RotateWebhookSecretResponse>)> done) {
  auto it = endpoints_.find(id);
  if (it == endpoints_.end()) return done(NotFound(id));
  if (overlap_ms > static_cast<uint64_t>(options_.max_overlap.count())) {
    return done(WebhookApiError{400, "BAD_OVERLAP",
                                "overlap_ms must be at most " +
                                    std::to_string(options_.max_overlap.count()) + " (7 days)"});
  }
  if (overlap_ms == 0) overlap_ms = static_cast<uint64_t>(options_.default_overlap.count());
  std::shared_ptr<Endpoint> ep = it->second;
  const uint64_t now = NowMsOf(clock_);
  uint8_t secret[kSecretBytes];
  rng_.Fill(secret);
  const std::string secret_text = EncodeWebhookSecret(secret);
  ep->record.set_previous_secret(ep->record.secret());
  ep->record.set_secret(reinterpret_cast<const char*>(secret), kSecretBytes);
  crypto::SecureWipe(secret, sizeof(secret));
  ep->record.mutable_webhook()->set_secret_rotated_at_ms(now);
  ep->record.mutable_webhook()->set_previous_secret_expires_at_ms(now + overlap_ms);
  Persist(ep, storage::WriteBatch(), [ep, secret_text, done = std::move(done)](Status status) {
    if (!status.ok()) return done(StorageError(status));
    v1::RotateWebhookSecretResponse out;
    out.set_secret(secret_text);
    *out.mutable_webhook() = ep->record.webhook();
    out.mutable_webhook()->set_cursor(ep->cursor);
    done(std::move(out));
  });
}

WebhookResult<std::vector<v1::WebhookDelivery>> WebhookDispatcher::Deliveries(const std::string& id,
                                                                              size_t limit) const {
  auto it = endpoints_.find(id);
  if (it == endpoints_.end()) return NotFound(id);
  const Endpoint& ep = *it->second;
  limit = std::clamp<size_t>(limit, 1, options_.deliveries_kept);
  const uint64_t next = ep.record.next_delivery_seq();
  const uint64_t from = next > limit ? next - limit : 0;
  std::vector<v1::WebhookDelivery> out;
  DeliveryRecords records(db_);
  Status s =
      records.Scan(DeliveryKey(ep.id_bytes, from), storage::PrefixEnd(DeliveryPrefix(ep.id_bytes)),
                   limit, [&](std::string_view, v1::StoredWebhookDelivery record) {
                     out.push_back(std::move(*record.mutable_delivery()));
                     return Status::Ok();
                   });
  if (!s.ok()) return WebhookApiError{500, "INTERNAL", s.ToString()};
  std::reverse(out.begin(), out.end());
  return out;
}

// ---- Routes ----

namespace {

ApiResponse ErrorResponse(const WebhookApiError& e) {
  return ApiResponse::Error(e.http_status, e.code, e.message);
}

}  // namespace

void WebhookDispatcher::RegisterRoutes(RpcServer& server, WebhookUrlChecker checker) {
  const RouteAuth admin = RouteAuth::Needs(Scope::kAdmin);
  server.HandleAsync(
      HttpMethod::kPost, "/v1/webhooks", admin,
      [this, checker](ApiRequest request, Responder responder) {
        v1::CreateWebhookRequest in;
        if (Status st = ParseJson(request.body, &in); !st.ok()) {
          return responder.Send(ApiResponse::FromStatus(st));
        }
        auto url = ParseWebhookUrl(in.url());
        if (!url.ok()) {
          return responder.Send(ApiResponse::Error(400, url.error().code, url.error().message));
        }
        auto create = [this, in, responder] {
          Create(in, [responder](WebhookResult<Created> r) {
            if (!r.ok()) return responder.Send(ErrorResponse(r.error()));
            v1::CreateWebhookResponse out;
            *out.mutable_webhook() = std::move(r->webhook);
            out.set_secret(std::move(r->secret));
            responder.Send(ApiResponse::Json(out, 201));
          });
        };
        if (!checker) return create();
        std::weak_ptr<bool> alive = alive_;
        checker(*url, in.allow_insecure_http() && options_.allow_insecure_http,
                [alive, responder, create](std::optional<WebhookUrlError> refusal) {
                  if (alive.expired()) return;
                  if (refusal) {
                    return responder.Send(ApiResponse::Error(400, refusal->code, refusal->message));
                  }
                  create();
                });
      });
  server.Handle(HttpMethod::kGet, "/v1/webhooks", admin, [this](const ApiRequest&) {
    v1::ListWebhooksResponse out;
    for (v1::Webhook& w : List()) *out.add_webhooks() = std::move(w);
    return ApiResponse::Json(out);
  });
  server.Handle(HttpMethod::kGet, "/v1/webhooks/{id}", admin, [this](const ApiRequest& req) {
    const std::string& id = req.params.at("id");
    std::optional<v1::Webhook> w = Get(id);
    if (!w) return ErrorResponse(NotFound(id));
    return ApiResponse::Json(*w);
  });
  server.HandleAsync(HttpMethod::kDelete, "/v1/webhooks/{id}", admin,
                     [this](ApiRequest request, Responder responder) {
                       Delete(request.params.at("id"), [responder](WebhookResult<v1::Webhook> r) {
                         if (!r.ok()) return responder.Send(ErrorResponse(r.error()));
                         v1::DeleteWebhookResponse out;
                         *out.mutable_webhook() = std::move(*r);
                         responder.Send(ApiResponse::Json(out));
                       });
                     });
  server.Handle(
      HttpMethod::kGet, "/v1/webhooks/{id}/deliveries", admin, [this](const ApiRequest& req) {
        size_t limit = 50;
        if (auto it = req.query.find("limit"); it != req.query.end()) {
          const std::string& text = it->second;
          uint64_t v = 0;
          auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
          if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() || v == 0) {
            return ApiResponse::Error(
                400, "BAD_LIMIT", "limit must be a positive decimal number, got '" + text + "'");
          }
          limit = static_cast<size_t>(std::min<uint64_t>(v, options_.deliveries_kept));
        }
        auto deliveries = Deliveries(req.params.at("id"), limit);
        if (!deliveries.ok()) return ErrorResponse(deliveries.error());
        v1::ListWebhookDeliveriesResponse out;
        for (v1::WebhookDelivery& d : *deliveries) *out.add_deliveries() = std::move(d);
        return ApiResponse::Json(out);
      });
  server.HandleAsync(HttpMethod::kPost, "/v1/webhooks/{id}/redeliver", admin,
                     [this](ApiRequest request, Responder responder) {
                       v1::RedeliverWebhookRequest in;
                       if (Status st = ParseJson(request.body, &in); !st.ok()) {
                         return responder.Send(ApiResponse::FromStatus(st));
                       }
                       Redeliver(request.params.at("id"), in.from_event_id(),
                                 [responder](WebhookResult<v1::Webhook> r) {
                                   if (!r.ok()) return responder.Send(ErrorResponse(r.error()));
                                   v1::RedeliverWebhookResponse out;
                                   *out.mutable_webhook() = std::move(*r);
                                   responder.Send(ApiResponse::Json(out));
                                 });
                     });
  server.HandleAsync(HttpMethod::kPost, "/v1/webhooks/{id}/rotate-secret", admin,
                     [this](ApiRequest request, Responder responder) {
                       v1::RotateWebhookSecretRequest in;
                       if (Status st = ParseJson(request.body, &in); !st.ok()) {
                         return responder.Send(ApiResponse::FromStatus(st));
                       }
                       RotateSecret(request.params.at("id"), in.overlap_ms(),
                                    [responder](WebhookResult<v1::RotateWebhookSecretResponse> r) {
                                      if (!r.ok()) return responder.Send(ErrorResponse(r.error()));
                                      responder.Send(ApiResponse::Json(*r));
                                    });
                     });
}

}  // namespace tipd::api
