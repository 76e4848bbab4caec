#include "node/config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cassert>
#include <cctype>
#include <fstream>
#include <limits>
#include <sstream>
#include <system_error>

#include <CLI/CLI.hpp>

namespace tipd::node {
namespace {

constexpr char kHostPortExpected[] =
    "expected HOST:PORT such as 127.0.0.1:9735, localhost:9735 or [::1]:9735";

std::string Quote(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Decimal digits only; fails on overflow.
bool ParseDecimal(std::string_view s, uint64_t* out) {
  if (!AllDigits(s)) return false;
  uint64_t v = 0;
  for (char c : s) {
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

// RFC 1123 host name: dot-separated labels of letters, digits and hyphens,
// 1..63 characters each, not starting or ending with a hyphen.
bool IsHostName(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  size_t start = 0;
  while (start <= host.size()) {
    size_t dot = host.find('.', start);
    std::string_view label =
        host.substr(start, dot == std::string_view::npos ? host.npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return true;
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

const OptionSpec* FindSpec(const std::vector<OptionSpec>& specs, std::string_view name) {
  for (const OptionSpec& s : specs) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::vector<std::string> SpecNames(const std::vector<OptionSpec>& specs, bool file_keys_only) {
  std::vector<std::string> names;
  for (const OptionSpec& s : specs) {
    if (!file_keys_only || s.in_config_file) names.push_back(s.name);
  }
  return names;
}

std::string JoinChoices(const std::vector<std::string>& choices) {
  std::string out;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i > 0) out += i + 1 == choices.size() ? " or " : ", ";
    out += choices[i];
  }
  return out;
}

// Checks `text` against the spec's type; the error explains what is expected.
Status CheckValue(const OptionSpec& spec, std::string_view text) {
  switch (spec.type) {
    case OptionType::kString:
      if (!spec.choices.empty() &&
          std::find(spec.choices.begin(), spec.choices.end(), text) == spec.choices.end()) {
        return Status::InvalidArgument("expected one of " + JoinChoices(spec.choices));
      }
      return Status::Ok();
    case OptionType::kPath:
      if (text.empty()) return Status::InvalidArgument("expected a non-empty path");
      return Status::Ok();
    case OptionType::kUint64: {
      uint64_t v;
      if (!ParseDecimal(text, &v)) {
        return Status::InvalidArgument("expected a non-negative decimal integer below 2^64");
      }
      return Status::Ok();
    }
    case OptionType::kBool:
      return ParseBool(text).status();
    case OptionType::kDurationMs:
      return ParseDurationMs(text).status();
    case OptionType::kHostPort:
      return ParseHostPort(text, spec.allow_port_zero).status();
    case OptionType::kLedgerAddress:
      return ParseLedgerAddress(text).status();
    case OptionType::kPeerAddress:
      return ParsePeerAddress(text).status();
  }
  return Status::Internal("unknown option type");
}

std::string MissingRequired(std::string_view name) {
  if (name == "datadir") {
    return "missing required option --datadir (a command-line flag, or `datadir = ...` in a "
           "file given with --config)";
  }
  return "missing required option --" + std::string(name) + " (a command-line flag, or `" +
         std::string(name) + " = ...` in the config file)";
}

OptionSpec Spec(std::string name, OptionType type, std::string default_value, std::string help) {
  OptionSpec s;
  s.name = std::move(name);
  s.type = type;
  s.default_value = std::move(default_value);
  s.help = std::move(help);
  return s;
}

OptionSpec ConfigSpec() {
  OptionSpec s = Spec("config", OptionType::kPath, "",
                      "config file to read (default: <datadir>/tipd.conf if it exists)");
  s.in_config_file = false;
  return s;
}

OptionSpec DataDirSpec() {
  OptionSpec s = Spec("datadir", OptionType::kPath, "",
                      "data directory: keys, database, pid lock, tipd.conf (required)");
  s.required = true;
  return s;
}

OptionSpec ListenSpec(std::string default_value, std::string help) {
  OptionSpec s = Spec("listen", OptionType::kHostPort, std::move(default_value), std::move(help));
  s.allow_port_zero = true;
  return s;
}

OptionSpec LogLevelSpec() {
  OptionSpec s = Spec("log-level", OptionType::kString, "info", "minimum level logged");
  s.choices = {"trace", "debug", "info", "warn", "error"};
  return s;
}

OptionSpec LogFileSpec() {
  return Spec("log-file", OptionType::kPath, "",
              "append log lines to this file (default: stderr); reopened on SIGHUP");
}

// A positive duration from `options`, or an error naming its origin.
Result<uint64_t> PositiveDuration(const Options& options, std::string_view name) {
  uint64_t ms = options.GetDurationMs(name);
  if (ms == 0) {
    return Status::InvalidArgument(options.Origin(name) + ": " + std::string(name) +
                                   " must be greater than zero");
  }
  return ms;
}

}  // namespace

// ---------------------------------------------------------------------------
// Value parsers
// ---------------------------------------------------------------------------

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<HostPort> ParseHostPort(std::string_view text, bool allow_port_zero) {
  auto fail = [&](const std::string& why) -> Status {
    return Status::InvalidArgument(why + " in " + Quote(text) + "; " + kHostPortExpected);
  };
  std::string_view host, port_text;
  bool bracketed = false;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return fail("missing ']'");
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') return fail("missing ':PORT' after ']'");
    port_text = rest.substr(1);
    bracketed = true;
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail("missing ':PORT'");
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return fail("an IPv6 address must be written in brackets");
    }
  }
  if (host.empty()) return fail("missing host");
  std::string host_str(host);
  if (bracketed) {
    in6_addr addr6;
    if (inet_pton(AF_INET6, host_str.c_str(), &addr6) != 1) {
      return fail("invalid IPv6 address " + Quote(host));
    }
  } else if (std::all_of(host.begin(), host.end(),
                         [](char c) { return (c >= '0' && c <= '9') || c == '.'; })) {
    in_addr addr4;
    if (inet_pton(AF_INET, host_str.c_str(), &addr4) != 1) {
      return fail("invalid IPv4 address " + Quote(host));
    }
  } else if (!IsHostName(host)) {
    return fail("invalid host name " + Quote(host));
  }
  uint64_t port;
  if (port_text.empty()) return fail("missing port");
  if (port_text.size() > 5 || !ParseDecimal(port_text, &port) || port > 65535) {
    return fail("port " + Quote(port_text) + " is not a number in 0..65535");
  }
  if (port == 0 && !allow_port_zero) return fail("port 0 is not allowed here");
  return HostPort{host_str, static_cast<uint16_t>(port)};
}

Result<uint64_t> ParseDurationMs(std::string_view text) {
  auto fail = [&](const std::string& why) -> Status {
    return Status::InvalidArgument(why + " in " + Quote(text) +
                                   "; expected a duration such as 500ms, 5s, 2m or 1h");
  };
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return fail("missing number");
  std::string_view unit = text.substr(digits);
  uint64_t factor;
  if (unit == "ms") {
    factor = 1;
  } else if (unit == "s") {
    factor = 1000;
  } else if (unit == "m") {
    factor = 60'000;
  } else if (unit == "h") {
    factor = 3'600'000;
  } else if (unit.empty()) {
    return fail("missing unit (ms, s, m or h)");
  } else {
    return fail("unknown unit " + Quote(unit));
  }
  uint64_t n;
  if (!ParseDecimal(text.substr(0, digits), &n) ||
      n > std::numeric_limits<uint64_t>::max() / factor) {
    return fail("number too large");
  }
  return n * factor;
}

Result<bool> ParseBool(std::string_view text) {
  std::string v = Lower(text);
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  return Status::InvalidArgument("expected true or false (also 1/0, yes/no, on/off), got " +
                                 Quote(text));
}

Result<LedgerAddress> ParseLedgerAddress(std::string_view text) {
  constexpr char kExpected[] =
      "expected HOST:PORT@PUBKEYHEX with the sequencer's 32-byte x-only (64 hex) or 33-byte "
      "compressed (66 hex) public key";
  size_t at = text.find('@');
  if (at == std::string_view::npos || text.find('@', at + 1) != std::string_view::npos) {
    return Status::InvalidArgument("need exactly one '@' in " + Quote(text) + "; " + kExpected);
  }
  auto address = ParseHostPort(text.substr(0, at));
  if (!address.ok()) return address.status();
  std::string_view hex = text.substr(at + 1);
  LedgerAddress out;
  out.address = *address;
  if (hex.size() == 64) {
    auto raw = HexDecodeFixed<32>(hex);
    if (!raw.ok()) return Status::InvalidArgument("bad hex in " + Quote(hex) + "; " + kExpected);
    auto xonly = crypto::ParseXOnly(*raw);
    if (!xonly.ok()) {
      return Status::InvalidArgument("key " + Quote(hex) + " is not a valid x-only public key");
    }
    out.sequencer_xonly = *xonly;
  } else if (hex.size() == 66) {
    auto pk = crypto::PublicKey::FromHex(hex);
    if (!pk.ok()) {
      return Status::InvalidArgument("key " + Quote(hex) +
                                     " is not a valid compressed public key (hex, 02/03 prefix, "
                                     "point on the curve)");
    }
    out.sequencer_xonly = pk->XOnly();
    out.sequencer_pubkey = *pk;
  } else {
    return Status::InvalidArgument("key has " + std::to_string(hex.size()) + " hex characters in " +
                                   Quote(text) + "; " + kExpected);
  }
  return out;
}

std::string PeerAddress::ToString() const { return address.ToString() + "@" + node_id.Hex(); }

Result<PeerAddress> ParsePeerAddress(std::string_view text) {
  constexpr char kExpected[] =
      "expected HOST:PORT@NODEIDHEX with the peer's 33-byte compressed node id (66 hex)";
  size_t at = text.find('@');
  if (at == std::string_view::npos || text.find('@', at + 1) != std::string_view::npos) {
    return Status::InvalidArgument("need exactly one '@' in " + Quote(text) + "; " + kExpected);
  }
  auto address = ParseHostPort(text.substr(0, at));
  if (!address.ok()) return address.status();
  std::string_view hex = text.substr(at + 1);
  if (hex.size() != 66) {
    return Status::InvalidArgument("node id has " + std::to_string(hex.size()) +
                                   " hex characters in " + Quote(text) + "; " + kExpected);
  }
  auto pk = crypto::PublicKey::FromHex(hex);
  if (!pk.ok()) {
    return Status::InvalidArgument("node id " + Quote(hex) +
                                   " is not a valid compressed public key (hex, 02/03 prefix, "
                                   "point on the curve)");
  }
  return PeerAddress{*address, *pk};
}

const char* OptionTypeName(OptionType type) {
  switch (type) {
    case OptionType::kString:
      return "string";
    case OptionType::kPath:
      return "path";
    case OptionType::kUint64:
      return "uint64";
    case OptionType::kBool:
      return "bool";
    case OptionType::kDurationMs:
      return "duration";
    case OptionType::kHostPort:
      return "HOST:PORT";
    case OptionType::kLedgerAddress:
      return "HOST:PORT@PUBKEY";
    case OptionType::kPeerAddress:
      return "HOST:PORT@NODEID";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

const std::vector<OptionSpec>& NodeOptionSpecs() {
  static const std::vector<OptionSpec> specs = [] {
    std::vector<OptionSpec> s;
    s.push_back(ConfigSpec());
    s.push_back(DataDirSpec());
    s.push_back(
        ListenSpec("127.0.0.1:9735", "peer-to-peer listen address (port 0: any free port)"));
    OptionSpec ledger = Spec("ledger", OptionType::kLedgerAddress, "",
                             "the sequencer to follow: HOST:PORT@PUBKEYHEX (required)");
    ledger.required = true;
    s.push_back(ledger);
    OptionSpec connect = Spec("connect", OptionType::kPeerAddress, "",
                              "persistent peer HOST:PORT@NODEIDHEX; repeat for several");
    connect.repeatable = true;
    s.push_back(connect);
    s.push_back(Spec("chain-id", OptionType::kString, "",
                     "expected chain id; must match the genesis when given"));
    OptionSpec rule = Spec("anomaly-rule", OptionType::kString, "",
                           "an anomaly rule, e.g. `rate per=token max=600/min hold=true`; repeat "
                           "for several (docs/configuration.md, Anomaly rules)");
    rule.repeatable = true;
    rule.check = [](std::string_view text) { return ParseAnomalyRule(text).status(); };
    s.push_back(rule);
    s.push_back(Spec("genesis", OptionType::kPath, "",
                     "genesis JSON file of the ledger (default: <datadir>/genesis.json)"));
    OptionSpec rpc = Spec("rpc-listen", OptionType::kHostPort, "127.0.0.1:8080",
                          "HTTP API listen address (port 0: any free port)");
    rpc.allow_port_zero = true;
    s.push_back(rpc);
    s.push_back(LogLevelSpec());
    s.push_back(LogFileSpec());
    s.push_back(
        Spec("ping-interval", OptionType::kDurationMs, "30s", "how often idle peers are pinged"));
    s.push_back(Spec("peer-timeout", OptionType::kDurationMs, "90s",
                     "disconnect a peer silent for this long"));
    s.push_back(Spec("settle-timeout", OptionType::kUint64, "20",
                     "settle window (blocks) of channels this node opens when the request "
                     "gives none; clamped to the genesis bounds"));
    s.push_back(Spec("max-accept-deposit", OptionType::kUint64, "0",
                     "most this node puts into a channel a peer opens (the peer's push_deposit); "
                     "0 refuses to fund"));
    s.push_back(Spec("min-settle-seconds", OptionType::kUint64, "60",
                     "shortest settle window this node accepts or opens, in seconds of the "
                     "ledger's block interval: its watcher must be online within it"));
    s.push_back(Spec("max-updates-in-flight", OptionType::kUint64, "16",
                     "balance updates of ours that may await their ack at once, per channel"));
    s.push_back(Spec("max-tips-per-update", OptionType::kUint64, "256",
                     "most queued tips folded into one update under load"));
    s.push_back(Spec("max-queued-tips", OptionType::kUint64, "4096",
                     "tips waiting for a window slot per channel before new ones are refused"));
    s.push_back(Spec("stream-max-per-second", OptionType::kUint64, "100000",
                     "most all active metered streams together may pay per second (a new or "
                     "resumed stream above it is refused with BAD_STREAM_RATE)"));
    s.push_back(Spec("stream-min-interval", OptionType::kDurationMs, "1s",
                     "shortest interval of a metered stream (at least 100ms)"));
    s.push_back(Spec("max-inbound-per-address", OptionType::kUint64, "8",
                     "inbound p2p connections accepted from one IP address, handshaking ones "
                     "included; loopback counts too (0: no limit)"));
    s.push_back(Spec("p2p-max-send-queue", OptionType::kUint64, "4096",
                     "p2p: messages queued unsent to one peer before the session is dropped as "
                     "too slow (64..1048576); reestablishing many channels is paced under it"));
    s.push_back(Spec("debug-proof-log", OptionType::kPath, "",
                     "test/debug only: append every balance proof this node sends to this file"));
    s.push_back(Spec("rpc-read-timeout", OptionType::kDurationMs, "15s",
                     "API: an HTTP request's header, then its body, must arrive within this; "
                     "also the keep-alive idle time"));
    s.push_back(Spec("rpc-write-timeout", OptionType::kDurationMs, "15s",
                     "API: a client must take a response (or an event stream chunk) within this"));
    s.push_back(Spec("rpc-max-connections", OptionType::kUint64, "256",
                     "API: open connections; at the limit the longest-idle one makes room, and "
                     "if all are busy the newcomer gets 503 (1..100000)"));
    s.push_back(Spec("rpc-max-event-streams", OptionType::kUint64, "64",
                     "API: open GET /v1/events streams; more get 503 (1..rpc-max-connections)"));
    s.push_back(Spec("rpc-max-stream-buffer", OptionType::kUint64, "1048576",
                     "API: bytes an event stream may have unsent before it is closed as too slow "
                     "(65536..1073741824)"));
    s.push_back(Spec("rpc-threads", OptionType::kUint64, "0",
                     "API: threads that parse batch bodies and render large answers off the "
                     "io thread (0: one per core beyond the first, at least 1; 1..64)"));
    s.push_back(Spec("db-write-buffer", OptionType::kUint64, "64",
                     "storage: MiB of writes LevelDB gathers in memory before it writes them "
                     "out as a table (4..1024); larger means fewer, later compactions"));
    s.push_back(Spec("ready-max-ledger-lag", OptionType::kUint64, "10",
                     "GET /readyz: blocks the ledger follower may be behind the sequencer (or, "
                     "while disconnected, block intervals without contact) and still be ready"));
    s.push_back(Spec("token-flush-interval", OptionType::kDurationMs, "5s",
                     "API: how often token last-used times are written and expired tokens' "
                     "event streams ended (100ms..1h)"));
    s.push_back(Spec("webhook-retry-for", OptionType::kDurationMs, "72h",
                     "webhooks: an endpoint failing this long is disabled"));
    s.push_back(Spec("webhook-retry-base", OptionType::kDurationMs, "1s",
                     "webhooks: shortest wait before a retry; the n-th waits a random time up "
                     "to base * 2^(n-1), capped by webhook-retry-cap"));
    s.push_back(Spec("webhook-retry-cap", OptionType::kDurationMs, "1h",
                     "webhooks: longest wait between two attempts"));
    s.push_back(Spec("webhook-connect-timeout", OptionType::kDurationMs, "10s",
                     "webhooks: DNS lookup and TCP connect of one delivery"));
    s.push_back(Spec("webhook-timeout", OptionType::kDurationMs, "15s",
                     "webhooks: TLS handshake, request and the whole answer of one delivery"));
    s.push_back(Spec("webhook-max-response-bytes", OptionType::kUint64, "65536",
                     "webhooks: response body bytes read; the rest is cut off (1024..16777216)"));
    s.push_back(Spec("webhook-max-concurrency", OptionType::kUint64, "8",
                     "webhooks: deliveries in flight, all endpoints together (1..1024); each "
                     "endpoint has at most one"));
    s.push_back(Spec("webhook-max-endpoints", OptionType::kUint64, "32",
                     "webhooks: endpoints this node accepts (1..10000)"));
    s.push_back(Spec("webhook-max-backlog", OptionType::kUint64, "1000000",
                     "webhooks: events kept beyond the event log's retention for enabled "
                     "endpoints that have not received them; an endpoint further behind is "
                     "disabled"));
    s.push_back(Spec("webhook-allow-insecure-http", OptionType::kBool, "false",
                     "webhooks: allow http:// to non-loopback hosts for webhooks created with "
                     "allow_insecure_http"));
    s.push_back(Spec("webhook-allow-private", OptionType::kBool, "false",
                     "webhooks: allow private, link-local and metadata addresses"));
    s.push_back(Spec("webhook-ca-file", OptionType::kPath, "",
                     "webhooks: PEM file of CA certificates trusted besides the system store"));
    return s;
  }();
  return specs;
}

const std::vector<OptionSpec>& LedgerOptionSpecs() {
  static const std::vector<OptionSpec> specs = [] {
    std::vector<OptionSpec> s;
    s.push_back(ConfigSpec());
    s.push_back(DataDirSpec());
    s.push_back(Spec("genesis", OptionType::kPath, "",
                     "genesis JSON file (default: <datadir>/genesis.json)"));
    s.push_back(ListenSpec("127.0.0.1:9736", "ledger listen address (port 0: any free port)"));
    s.push_back(Spec("sequencer-key", OptionType::kPath, "",
                     "sequencer secret key file (default: <datadir>/sequencer.key)"));
    s.push_back(Spec("block-interval", OptionType::kDurationMs, "",
                     "time between blocks (default: the genesis value)"));
    s.push_back(Spec("seal-on-submit", OptionType::kBool, "false",
                     "seal a block as soon as a transaction arrives (for tests)"));
    {
      // Flag only, so a config file can never turn it on: a ledger that
      // seals only when signalled stops producing blocks (and settle windows
      // stop closing) the moment nobody signals it.
      OptionSpec demand = Spec("seal-on-demand", OptionType::kBool, "false",
                               "TESTS ONLY: no block timer; seal one block per SIGUSR1 "
                               "(docs/ledger.md)");
      demand.in_config_file = false;
      s.push_back(demand);
    }
    s.push_back(Spec("max-inbound-per-address", OptionType::kUint64, "8",
                     "inbound p2p connections accepted from one IP address, handshaking ones "
                     "included; loopback counts too (0: no limit)"));
    s.push_back(LogLevelSpec());
    s.push_back(LogFileSpec());
    return s;
  }();
  return specs;
}

// ---------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------

Status AddFlags(CLI::App* app, const std::vector<OptionSpec>& specs, RawValues* out) {
  try {
    for (const OptionSpec& spec : specs) {
      std::string flag = "--" + spec.name;
      std::string help = spec.help;
      if (!spec.default_value.empty()) help += " (default: " + spec.default_value + ")";
      if (!spec.in_config_file) help += " [flag only]";
      std::string name = spec.name;
      bool is_bool = spec.type == OptionType::kBool;
      auto callback = [out, name, flag, is_bool](const std::vector<std::string>& results) {
        std::vector<RawValue>& dest = out->values[name];
        if (results.empty() && is_bool) dest.push_back({"true", flag});
        for (const std::string& r : results) {
          dest.push_back({r.empty() && is_bool ? "true" : r, flag});
        }
      };
      CLI::Option* opt = app->add_option_function<std::vector<std::string>>(flag, callback, help);
      opt->type_name(OptionTypeName(spec.type));
      // One value per occurrence (a bool's is optional); every occurrence is
      // kept so resolution can reject repeats of a non-repeatable option.
      if (is_bool) {
        opt->expected(0, 1);
      } else {
        opt->type_size(1);
        opt->expected(1);
      }
      opt->allow_extra_args(false);
      opt->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    }
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("cannot register flags: ") + e.what());
  }
  return Status::Ok();
}

Result<RawValues> ParseFlags(const std::vector<std::string>& args,
                             const std::vector<OptionSpec>& specs) {
  RawValues out;
  CLI::App app("tipd");
  TIPD_RETURN_IF_ERROR(AddFlags(&app, specs, &out));
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 consumes from the back
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    return Status::InvalidArgument(std::string("command line: ") + e.what());
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("command line: ") + e.what());
  }
  return out;
}

Result<RawValues> ParseConfigText(std::string_view text, std::string_view file_name,
                                  const std::vector<OptionSpec>& specs) {
  RawValues out;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    std::string where = std::string(file_name) + " line " + std::to_string(line_no);
    // A comment starts at a '#' at the start of the line or after whitespace.
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '#' && (i == 0 || std::isspace(static_cast<unsigned char>(line[i - 1])))) {
        line = line.substr(0, i);
        break;
      }
    }
    line = Trim(line);
    if (line.empty()) continue;
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      return Status::InvalidArgument(where + ": malformed line " + Quote(line) +
                                     "; expected `key = value`");
    }
    std::string_view key = Trim(line.substr(0, eq));
    std::string_view value = Trim(line.substr(eq + 1));
    if (key.empty()) {
      return Status::InvalidArgument(where + ": malformed line " + Quote(line) +
                                     "; missing key before '='");
    }
    const OptionSpec* spec = FindSpec(specs, key);
    if (spec == nullptr) {
      std::string msg = where + ": unknown key " + Quote(key);
      std::string hint = ClosestMatch(key, SpecNames(specs, /*file_keys_only=*/true));
      if (!hint.empty()) msg += " (did you mean " + Quote(hint) + "?)";
      return Status::InvalidArgument(msg);
    }
    if (!spec->in_config_file) {
      return Status::InvalidArgument(where + ": " + Quote(key) +
                                     " can only be given on the command line (--" + spec->name +
                                     ")");
    }
    if (value.empty()) {
      return Status::InvalidArgument(where + ": missing value for " + Quote(key) + "; expected " +
                                     OptionTypeName(spec->type));
    }
    std::vector<RawValue>& dest = out.values[spec->name];
    if (!dest.empty() && !spec->repeatable) {
      return Status::InvalidArgument(where + ": duplicate key " + Quote(key) + " (first set at " +
                                     dest.front().origin + "); only repeatable keys may repeat");
    }
    dest.push_back({std::string(value), where});
  }
  return out;
}

Result<RawValues> ReadConfigFile(const std::filesystem::path& path,
                                 const std::vector<OptionSpec>& specs) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return Status::NotFound("config file " + path.string() + " does not exist");
  }
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Status::InvalidArgument("config file " + path.string() + " is not a regular file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IOError("cannot open config file " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::IOError("cannot read config file " + path.string());
  return ParseConfigText(text.str(), path.string(), specs);
}

// ---------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------

const Options::Entry& Options::Get(std::string_view name, OptionType type) const {
  auto it = entries_.find(name);
  assert(it != entries_.end() && "option not in the table");
  assert((it->second.spec->type == type ||
          (type == OptionType::kString && it->second.spec->type == OptionType::kPath)) &&
         "getter does not match the option type");
  (void)type;
  return it->second;
}

bool Options::Has(std::string_view name) const {
  auto it = entries_.find(name);
  assert(it != entries_.end() && "option not in the table");
  return !it->second.texts.empty();
}

const std::string& Options::Origin(std::string_view name) const {
  auto it = entries_.find(name);
  assert(it != entries_.end() && !it->second.texts.empty());
  return it->second.origin;
}

std::string Options::GetString(std::string_view name) const {
  const Entry& e = Get(name, OptionType::kString);
  assert(!e.texts.empty());
  return e.texts.front();
}

uint64_t Options::GetUint(std::string_view name) const {
  const Entry& e = Get(name, OptionType::kUint64);
  assert(!e.texts.empty());
  uint64_t v = 0;
  bool ok = ParseDecimal(e.texts.front(), &v);
  assert(ok);
  (void)ok;
  return v;
}

bool Options::GetBool(std::string_view name) const {
  const Entry& e = Get(name, OptionType::kBool);
  assert(!e.texts.empty());
  return ParseBool(e.texts.front()).value();
}

uint64_t Options::GetDurationMs(std::string_view name) const {
  const Entry& e = Get(name, OptionType::kDurationMs);
  assert(!e.texts.empty());
  return ParseDurationMs(e.texts.front()).value();
}

HostPort Options::GetHostPort(std::string_view name) const {
  const Entry& e = Get(name, OptionType::kHostPort);
  assert(!e.texts.empty());
  return ParseHostPort(e.texts.front(), e.spec->allow_port_zero).value();
}

LedgerAddress Options::GetLedgerAddress(std::string_view name) const {
  const Entry& e = Get(name, OptionType::kLedgerAddress);
  assert(!e.texts.empty());
  return ParseLedgerAddress(e.texts.front()).value();
}

std::vector<std::string> Options::GetList(std::string_view name) const {
  auto it = entries_.find(name);
  assert(it != entries_.end() && "option not in the table");
  return it->second.texts;
}

std::vector<PeerAddress> Options::GetPeerAddresses(std::string_view name) const {
  const Entry& e = Get(name, OptionType::kPeerAddress);
  std::vector<PeerAddress> out;
  for (const std::string& t : e.texts) out.push_back(ParsePeerAddress(t).value());
  return out;
}

Result<Options> ResolveOptions(const std::vector<OptionSpec>& specs, const RawValues& flags) {
  // Flags: known names only, non-repeatable ones at most once.
  for (const auto& [name, values] : flags.values) {
    const OptionSpec* spec = FindSpec(specs, name);
    if (spec == nullptr) {
      std::string msg = "unknown option --" + name;
      std::string hint = ClosestMatch(name, SpecNames(specs, /*file_keys_only=*/false));
      if (!hint.empty()) msg += " (did you mean --" + hint + "?)";
      return Status::InvalidArgument(msg);
    }
    if (values.size() > 1 && !spec->repeatable) {
      return Status::InvalidArgument("--" + name + " given " + std::to_string(values.size()) +
                                     " times; it takes one value");
    }
  }
  auto flag_value = [&](std::string_view name) -> const RawValue* {
    auto it = flags.values.find(std::string(name));
    return it == flags.values.end() || it->second.empty() ? nullptr : &it->second.front();
  };

  // Config file discovery.
  Options options;
  RawValues file;
  bool has_config_spec = FindSpec(specs, "config") != nullptr;
  bool has_datadir_spec = FindSpec(specs, "datadir") != nullptr;
  const RawValue* config_flag = has_config_spec ? flag_value("config") : nullptr;
  const RawValue* datadir_flag = has_datadir_spec ? flag_value("datadir") : nullptr;
  if (config_flag != nullptr) {
    if (config_flag->text.empty()) return Status::InvalidArgument("--config: empty path");
    auto read = ReadConfigFile(config_flag->text, specs);
    if (!read.ok()) {
      return Status(read.status().code(), "--config: " + read.status().message());
    }
    file = std::move(read).value();
    options.config_file_ = config_flag->text;
  } else if (datadir_flag != nullptr && !datadir_flag->text.empty()) {
    std::filesystem::path candidate = std::filesystem::path(datadir_flag->text) / "tipd.conf";
    std::error_code ec;
    if (std::filesystem::exists(candidate, ec)) {
      auto read = ReadConfigFile(candidate, specs);
      if (!read.ok()) return read.status();
      file = std::move(read).value();
      options.config_file_ = candidate;
      auto it = file.values.find("datadir");
      if (it != file.values.end()) {
        return Status::InvalidArgument(it->second.front().origin +
                                       ": 'datadir' has no effect in the data dir's own "
                                       "tipd.conf; use --datadir, or move the file and pass "
                                       "--config");
      }
    }
  }

  // Merge and type-check.
  for (const OptionSpec& spec : specs) {
    Options::Entry entry;
    entry.spec = &spec;
    const std::vector<RawValue>* chosen = nullptr;
    if (auto it = flags.values.find(spec.name); it != flags.values.end() && !it->second.empty()) {
      chosen = &it->second;
    } else if (auto f = file.values.find(spec.name); f != file.values.end() && !f->second.empty()) {
      chosen = &f->second;
    }
    if (chosen != nullptr) {
      for (const RawValue& v : *chosen) {
        Status st = CheckValue(spec, v.text);
        if (st.ok() && spec.check != nullptr) st = spec.check(v.text);
        if (!st.ok()) {
          return Status::InvalidArgument(v.origin + ": invalid value " + Quote(v.text) + " for " +
                                         Quote(spec.name) + ": " + st.message());
        }
        entry.texts.push_back(v.text);
      }
      entry.origin = chosen->front().origin;
    } else if (!spec.default_value.empty()) {
      Status st = CheckValue(spec, spec.default_value);
      if (!st.ok()) {
        return Status::Internal("default of " + spec.name + " is invalid: " + st.message());
      }
      entry.texts.push_back(spec.default_value);
      entry.origin = "default";
    } else if (spec.required) {
      return Status::InvalidArgument(MissingRequired(spec.name));
    }
    options.entries_.emplace(spec.name, std::move(entry));
  }
  return options;
}

Result<NodeConfig> ResolveNodeConfig(const RawValues& flags) {
  TIPD_ASSIGN_OR_RETURN(Options o, ResolveOptions(NodeOptionSpecs(), flags));
  NodeConfig c;
  c.datadir = o.GetString("datadir");
  c.config_file = o.config_file();
  c.listen = o.GetHostPort("listen");
  c.ledger = o.GetLedgerAddress("ledger");
  c.connect = o.GetPeerAddresses("connect");
  for (const std::string& text : o.GetList("anomaly-rule")) {
    TIPD_ASSIGN_OR_RETURN(AnomalyRule rule, ParseAnomalyRule(text));
    c.anomaly_rules.push_back(std::move(rule));
  }
  if (o.Has("chain-id")) c.chain_id = o.GetString("chain-id");
  c.genesis =
      o.Has("genesis") ? std::filesystem::path(o.GetString("genesis")) : c.datadir / "genesis.json";
  c.rpc_listen = o.GetHostPort("rpc-listen");
  c.log_level = ParseLogLevel(o.GetString("log-level")).value();
  if (o.Has("log-file")) c.log_file = o.GetString("log-file");
  TIPD_ASSIGN_OR_RETURN(c.ping_interval_ms, PositiveDuration(o, "ping-interval"));
  TIPD_ASSIGN_OR_RETURN(c.peer_timeout_ms, PositiveDuration(o, "peer-timeout"));
  c.max_inbound_per_address = o.GetUint("max-inbound-per-address");
  c.p2p_max_send_queue = o.GetUint("p2p-max-send-queue");
  if (c.p2p_max_send_queue < 64 || c.p2p_max_send_queue > (1u << 20)) {
    return Status::InvalidArgument("p2p-max-send-queue must be 64..1048576, got " +
                                   std::to_string(c.p2p_max_send_queue));
  }
  c.settle_timeout = o.GetUint("settle-timeout");
  c.max_accept_deposit = o.GetUint("max-accept-deposit");
  if (o.Has("debug-proof-log")) c.debug_proof_log = o.GetString("debug-proof-log");
  c.min_settle_seconds = o.GetUint("min-settle-seconds");
  const uint64_t in_flight = o.GetUint("max-updates-in-flight");
  const uint64_t per_update = o.GetUint("max-tips-per-update");
  const uint64_t queued = o.GetUint("max-queued-tips");
  if (in_flight < 1 || in_flight > 1024) {
    return Status::InvalidArgument("max-updates-in-flight must be 1..1024, got " +
                                   std::to_string(in_flight));
  }
  if (per_update < 1 || per_update > 4096) {
    return Status::InvalidArgument("max-tips-per-update must be 1..4096, got " +
                                   std::to_string(per_update));
  }
  if (queued < 1 || queued > 1'000'000) {
    return Status::InvalidArgument("max-queued-tips must be 1..1000000, got " +
                                   std::to_string(queued));
  }
  c.max_updates_in_flight = static_cast<uint32_t>(in_flight);
  c.max_tips_per_update = static_cast<uint32_t>(per_update);
  c.max_queued_tips = static_cast<size_t>(queued);
  c.stream_max_per_second = o.GetUint("stream-max-per-second");
  TIPD_ASSIGN_OR_RETURN(c.stream_min_interval_ms, PositiveDuration(o, "stream-min-interval"));
  if (c.stream_max_per_second == 0 || c.stream_min_interval_ms < 100) {
    return Status::InvalidArgument(
        "stream-max-per-second must be at least 1 and stream-min-interval at least 100ms");
  }
  TIPD_ASSIGN_OR_RETURN(c.rpc_read_timeout_ms, PositiveDuration(o, "rpc-read-timeout"));
  TIPD_ASSIGN_OR_RETURN(c.rpc_write_timeout_ms, PositiveDuration(o, "rpc-write-timeout"));
  c.rpc_max_connections = o.GetUint("rpc-max-connections");
  c.rpc_max_event_streams = o.GetUint("rpc-max-event-streams");
  c.rpc_max_stream_buffer = o.GetUint("rpc-max-stream-buffer");
  if (c.rpc_max_connections < 1 || c.rpc_max_connections > 100'000) {
    return Status::InvalidArgument("rpc-max-connections must be 1..100000, got " +
                                   std::to_string(c.rpc_max_connections));
  }
  if (c.rpc_max_event_streams < 1 || c.rpc_max_event_streams > c.rpc_max_connections) {
    return Status::InvalidArgument("rpc-max-event-streams must be 1..rpc-max-connections (" +
                                   std::to_string(c.rpc_max_connections) + "), got " +
                                   std::to_string(c.rpc_max_event_streams));
  }
  if (c.rpc_max_stream_buffer < 65536 || c.rpc_max_stream_buffer > (uint64_t{1} << 30)) {
    return Status::InvalidArgument("rpc-max-stream-buffer must be 65536..1073741824, got " +
                                   std::to_string(c.rpc_max_stream_buffer));
  }
  c.rpc_threads = o.GetUint("rpc-threads");
  if (c.rpc_threads > 64) {
    return Status::InvalidArgument(
        "rpc-threads must be 0 (one per core beyond the first) or "
        "1..64, got " +
        std::to_string(c.rpc_threads));
  }
  c.db_write_buffer_mib = o.GetUint("db-write-buffer");
  if (c.db_write_buffer_mib < 4 || c.db_write_buffer_mib > 1024) {
    return Status::InvalidArgument("db-write-buffer must be 4..1024 (MiB), got " +
                                   std::to_string(c.db_write_buffer_mib));
  }
  c.ready_max_ledger_lag = o.GetUint("ready-max-ledger-lag");
  TIPD_ASSIGN_OR_RETURN(c.token_flush_interval_ms, PositiveDuration(o, "token-flush-interval"));
  if (c.token_flush_interval_ms < 100 || c.token_flush_interval_ms > 3'600'000) {
    return Status::InvalidArgument("token-flush-interval must be 100ms..1h, got " +
                                   std::to_string(c.token_flush_interval_ms) + " ms");
  }
  TIPD_ASSIGN_OR_RETURN(c.webhook_retry_for_ms, PositiveDuration(o, "webhook-retry-for"));
  TIPD_ASSIGN_OR_RETURN(c.webhook_retry_base_ms, PositiveDuration(o, "webhook-retry-base"));
  TIPD_ASSIGN_OR_RETURN(c.webhook_retry_cap_ms, PositiveDuration(o, "webhook-retry-cap"));
  TIPD_ASSIGN_OR_RETURN(c.webhook_connect_timeout_ms,
                        PositiveDuration(o, "webhook-connect-timeout"));
  TIPD_ASSIGN_OR_RETURN(c.webhook_timeout_ms, PositiveDuration(o, "webhook-timeout"));
  if (c.webhook_retry_cap_ms < c.webhook_retry_base_ms) {
    return Status::InvalidArgument("webhook-retry-cap must be at least webhook-retry-base");
  }
  c.webhook_max_response_bytes = o.GetUint("webhook-max-response-bytes");
  if (c.webhook_max_response_bytes < 1024 || c.webhook_max_response_bytes > (1u << 24)) {
    return Status::InvalidArgument("webhook-max-response-bytes must be 1024..16777216, got " +
                                   std::to_string(c.webhook_max_response_bytes));
  }
  c.webhook_max_concurrency = o.GetUint("webhook-max-concurrency");
  if (c.webhook_max_concurrency < 1 || c.webhook_max_concurrency > 1024) {
    return Status::InvalidArgument("webhook-max-concurrency must be 1..1024, got " +
                                   std::to_string(c.webhook_max_concurrency));
  }
  c.webhook_max_endpoints = o.GetUint("webhook-max-endpoints");
  if (c.webhook_max_endpoints < 1 || c.webhook_max_endpoints > 10'000) {
    return Status::InvalidArgument("webhook-max-endpoints must be 1..10000, got " +
                                   std::to_string(c.webhook_max_endpoints));
  }
  c.webhook_max_backlog = o.GetUint("webhook-max-backlog");
  c.webhook_allow_insecure_http = o.GetBool("webhook-allow-insecure-http");
  c.webhook_allow_private = o.GetBool("webhook-allow-private");
  if (o.Has("webhook-ca-file")) c.webhook_ca_file = o.GetString("webhook-ca-file");
  return c;
}

Result<LedgerConfig> ResolveLedgerConfig(const RawValues& flags) {
  TIPD_ASSIGN_OR_RETURN(Options o, ResolveOptions(LedgerOptionSpecs(), flags));
  LedgerConfig c;
  c.datadir = o.GetString("datadir");
  c.config_file = o.config_file();
  c.genesis =
      o.Has("genesis") ? std::filesystem::path(o.GetString("genesis")) : c.datadir / "genesis.json";
  c.listen = o.GetHostPort("listen");
  c.sequencer_key = o.Has("sequencer-key") ? std::filesystem::path(o.GetString("sequencer-key"))
                                           : c.datadir / "sequencer.key";
  if (o.Has("block-interval")) {
    TIPD_ASSIGN_OR_RETURN(c.block_interval_ms, PositiveDuration(o, "block-interval"));
  }
  c.seal_on_submit = o.GetBool("seal-on-submit");
  c.seal_on_demand = o.GetBool("seal-on-demand");
  c.max_inbound_per_address = o.GetUint("max-inbound-per-address");
  c.log_level = ParseLogLevel(o.GetString("log-level")).value();
  if (o.Has("log-file")) c.log_file = o.GetString("log-file");
  return c;
}

std::string ClosestMatch(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  std::string lowered = Lower(word);
  for (const std::string& c : candidates) {
    size_t d = EditDistance(lowered, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  size_t limit = std::max<size_t>(2, word.size() / 3);
  return best_distance <= limit ? best : std::string();
}

}  // namespace tipd::node
