// Configuration of the tipd processes: one option table per command, three
// sources, typed results.
//
// Every option of `tipd node` and `tipd ledger` is a row of an OptionSpec
// table (NodeOptionSpecs(), LedgerOptionSpecs()). The same table drives the
// command-line flags (`--name value` / `--name=value`), the config file keys
// (`name = value`) and docs/configuration.md (a test checks that every name
// is documented). Values are resolved with this precedence:
//
//   built-in default  <  config file  <  command-line flag
//
// The config file is `--config PATH` if given (it must exist), otherwise
// `<datadir>/tipd.conf` if that file exists, otherwise none. A repeatable
// option (e.g. `connect`) takes all values of the winning source: flags
// replace the file's list, they do not append to it.
//
// Typical use in main() with CLI11 subcommands:
//
//   CLI::App app{"tipd"};
//   CLI::App* node_cmd = app.add_subcommand("node", "run a payment-channel node");
//   tipd::node::RawValues node_flags;
//   TIPD_RETURN_IF_ERROR(tipd::node::AddFlags(node_cmd, tipd::node::NodeOptionSpecs(),
//                                             &node_flags));
//   ... app.parse(argc, argv) (catch CLI::ParseError; app.exit(e)) ...
//   if (node_cmd->parsed()) {
//     auto config = tipd::node::ResolveNodeConfig(node_flags);
//     if (!config.ok()) { print config.status().message(); exit 2; }
//   }
//
// Nothing here throws; every failure is a Status whose message names the
// source ("--listen", "/path/tipd.conf line 7") and says what was expected.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/crypto.h"
#include "node/anomaly_rules.h"
#include "node/logging.h"
#include "util/status.h"

namespace CLI {
class App;
}

namespace tipd::node {

// ---------------------------------------------------------------------------
// Value types and their parsers (public so tests, tipctl and devnet reuse them)
// ---------------------------------------------------------------------------

// A TCP endpoint. `host` is an IPv4 literal, an IPv6 literal (written in
// brackets on input, stored without them), or a DNS name such as `localhost`.
struct HostPort {
  std::string host;
  uint16_t port = 0;

  // "127.0.0.1:9735", "[::1]:9735", "localhost:9735".
  std::string ToString() const;
  bool operator==(const HostPort&) const = default;
};

// Parses "HOST:PORT" where HOST is `a.b.c.d`, `[ipv6]` or a DNS name and PORT
// is decimal 1..65535 (0 too when `allow_port_zero`, meaning "any free port",
// documented for listen addresses in tests). Fails with kInvalidArgument
// saying what was expected.
Result<HostPort> ParseHostPort(std::string_view text, bool allow_port_zero = false);

// Parses a duration: a non-negative integer followed by a unit, one of
// `ms`, `s`, `m`, `h` ("500ms", "5s", "2m", "1h"). A bare number is rejected
// (the unit would be a guess). Returns milliseconds.
Result<uint64_t> ParseDurationMs(std::string_view text);

// Parses `true/false`, `1/0`, `yes/no`, `on/off` (case-insensitive).
Result<bool> ParseBool(std::string_view text);

// The sequencer a node follows: `HOST:PORT@PUBKEYHEX`.
struct LedgerAddress {
  HostPort address;
  // The sequencer's BIP-340 signing key; always set.
  crypto::XOnlyPubKey sequencer_xonly{};
  // The full compressed key, set only when 33 bytes (66 hex) were given.
  // Needed where the parity matters (e.g. a Noise handshake to the sequencer).
  std::optional<crypto::PublicKey> sequencer_pubkey;
};

// PUBKEYHEX is a 32-byte x-only key (64 hex) or a 33-byte compressed key
// (66 hex); either must be a valid curve point. Port 0 is rejected.
Result<LedgerAddress> ParseLedgerAddress(std::string_view text);

// A persistent peer: `HOST:PORT@NODEIDHEX` with the 33-byte compressed node
// id (66 hex). Port 0 is rejected.
struct PeerAddress {
  HostPort address;
  crypto::PublicKey node_id;
  // "HOST:PORT@NODEIDHEX" with lower-case hex.
  std::string ToString() const;
};
Result<PeerAddress> ParsePeerAddress(std::string_view text);

// ---------------------------------------------------------------------------
// The option table
// ---------------------------------------------------------------------------

enum class OptionType {
  kString,         // any text; `choices`, when non-empty, lists the allowed values
  kPath,           // a filesystem path (any text; relative paths stay relative)
  kUint64,         // decimal 0..2^64-1
  kBool,           // see ParseBool; a flag given without value means true
  kDurationMs,     // see ParseDurationMs
  kHostPort,       // see ParseHostPort (port 0 allowed only if allow_port_zero)
  kLedgerAddress,  // see ParseLedgerAddress
  kPeerAddress,    // see ParsePeerAddress
};

// "string", "path", "uint64", "bool", "duration", "HOST:PORT", ...
const char* OptionTypeName(OptionType type);

struct OptionSpec {
  std::string name;  // flag `--name`, config file key `name`
  OptionType type = OptionType::kString;
  // Textual default, parsed like any other value; empty = no default (unset
  // unless a source provides it). Defaults relative to the data dir are
  // resolved by ResolveNodeConfig / ResolveLedgerConfig, not written here.
  std::string default_value;
  std::string help;                  // one line, shown by --help
  bool in_config_file = true;        // false: flag only (e.g. `config`)
  bool repeatable = false;           // may be given several times; values kept in order
  bool required = false;             // resolution fails if no source provides it
  bool allow_port_zero = false;      // kHostPort only
  std::vector<std::string> choices;  // kString only; empty = any
  // Checks a value beyond its type (e.g. an anomaly rule's grammar); its
  // error is reported with the value's origin (file and line). May be null.
  Status (*check)(std::string_view text) = nullptr;
};

// The tables. Stable for the life of the process.
const std::vector<OptionSpec>& NodeOptionSpecs();
const std::vector<OptionSpec>& LedgerOptionSpecs();

// ---------------------------------------------------------------------------
// Raw values (one source) and resolution
// ---------------------------------------------------------------------------

// One textual value and where it came from, e.g. "--listen" or
// "/data/tipd.conf line 7". The origin prefixes every error about the value.
struct RawValue {
  std::string text;
  std::string origin;
};
// Option name -> values in the order given (one entry unless repeatable).
struct RawValues {
  std::map<std::string, std::vector<RawValue>> values;
};

// Registers one CLI11 option per spec on `app` (typically a subcommand):
// `--name VALUE`, `--name=VALUE`, and for kBool also a bare `--name`. Each
// parsed flag is appended to `*out`, which must outlive `app`'s parse call.
// Values are not checked here; ResolveNodeConfig/ResolveLedgerConfig check
// them. Fails (no exception) if a name clashes with an option already on `app`.
Status AddFlags(CLI::App* app, const std::vector<OptionSpec>& specs, RawValues* out);

// Convenience for tests and tools without subcommands: parses `args` (flags
// only, no program name) against `specs` with CLI11. Fails with
// kInvalidArgument on an unknown flag or a missing value.
Result<RawValues> ParseFlags(const std::vector<std::string>& args,
                             const std::vector<OptionSpec>& specs);

// Parses config file text (`key = value` lines, `#` comments, blank lines).
// `file_name` is used in error messages only. Fails with kInvalidArgument
// naming the file and line for: a line without `=`, an empty key, an unknown
// key (suggesting the closest known one), a key that is flag-only, a
// repeated non-repeatable key. Values are not type-checked here.
Result<RawValues> ParseConfigText(std::string_view text, std::string_view file_name,
                                  const std::vector<OptionSpec>& specs);
// Reads and parses a config file; kNotFound if it does not exist, kIOError if
// it cannot be read.
Result<RawValues> ReadConfigFile(const std::filesystem::path& path,
                                 const std::vector<OptionSpec>& specs);

// The merged, type-checked values of one command. Getters take an option
// name from the table the Options were resolved against.
// REQUIRES (asserted): the name exists and its type matches the getter.
class Options {
 public:
  // True if a default or a source gave the option a value.
  bool Has(std::string_view name) const;
  // Where the winning value came from: "default", "--name" or "FILE line N".
  // REQUIRES: Has(name).
  const std::string& Origin(std::string_view name) const;

  // REQUIRES: Has(name) (use Has first for options without a default).
  std::string GetString(std::string_view name) const;  // kString, kPath
  uint64_t GetUint(std::string_view name) const;
  bool GetBool(std::string_view name) const;
  uint64_t GetDurationMs(std::string_view name) const;
  HostPort GetHostPort(std::string_view name) const;
  LedgerAddress GetLedgerAddress(std::string_view name) const;
  // Any type; all values in order (empty if unset). For repeatable options.
  std::vector<std::string> GetList(std::string_view name) const;
  std::vector<PeerAddress> GetPeerAddresses(std::string_view name) const;
  // The config file that was read, empty if none.
  const std::filesystem::path& config_file() const { return config_file_; }

 private:
  friend Result<Options> ResolveOptions(const std::vector<OptionSpec>&, const RawValues&);
  struct Entry {
    const OptionSpec* spec = nullptr;
    std::vector<std::string> texts;
    std::string origin;
  };
  const Entry& Get(std::string_view name, OptionType type) const;
  std::map<std::string, Entry, std::less<>> entries_;
  std::filesystem::path config_file_;
};

// Merges defaults < config file < `flags` for `specs`, type-checks every
// value and enforces `required`. Config file discovery needs the table to
// contain `config` and `datadir`: `--config PATH` (must exist), else
// `<datadir>/tipd.conf` if it exists. A `datadir` key is honoured only in a
// file named by --config (the auto-discovered file lives inside the datadir,
// so a `datadir` key there is rejected as having no effect).
Result<Options> ResolveOptions(const std::vector<OptionSpec>& specs, const RawValues& flags);

// ---------------------------------------------------------------------------
// Typed configs
// ---------------------------------------------------------------------------

struct NodeConfig {
  std::filesystem::path datadir;      // required
  std::filesystem::path config_file;  // the file read, empty if none
  HostPort listen;                    // p2p listen address, default 127.0.0.1:9735
  LedgerAddress ledger;               // required: the sequencer to follow
  std::vector<PeerAddress> connect;   // persistent peers, may be empty
  std::string chain_id;               // empty: the genesis decides
  std::filesystem::path genesis;      // default <datadir>/genesis.json
  HostPort rpc_listen;                // HTTP API, default 127.0.0.1:8080
  LogLevel log_level = LogLevel::kInfo;
  std::filesystem::path log_file;  // empty: stderr
  uint64_t ping_interval_ms = 30'000;
  uint64_t peer_timeout_ms = 90'000;
  uint64_t max_inbound_per_address = 8;  // p2p::HostOptions; 0 = no limit
  uint64_t p2p_max_send_queue = 4096;    // p2p::HostOptions::max_send_queue_messages
  // Channels (node/channel_manager.h ChannelManagerOptions).
  uint64_t settle_timeout = 20;
  uint64_t max_accept_deposit = 0;
  uint64_t min_settle_seconds = 60;
  uint32_t max_updates_in_flight = 16;
  uint32_t max_tips_per_update = 256;
  size_t max_queued_tips = 4096;
  // Metered streams (node/streams.h).
  uint64_t stream_max_per_second = 100'000;
  uint64_t stream_min_interval_ms = 1000;
  // Test/debug only: every balance proof sent is appended here (empty: off).
  std::filesystem::path debug_proof_log;
  // HTTP API bounds (api::RpcLimits; docs/api.md "Limits").
  uint64_t rpc_read_timeout_ms = 15'000;
  uint64_t rpc_write_timeout_ms = 15'000;
  uint64_t rpc_max_connections = 256;
  uint64_t rpc_max_event_streams = 64;
  uint64_t rpc_max_stream_buffer = 1 << 20;
  // Work-pool threads for the API's CPU work (0: cores - 1, at least 1).
  uint64_t rpc_threads = 0;
  // MiB LevelDB gathers in its memtable before writing a level-0 table
  // (docs/performance.md "LevelDB's write buffer").
  uint64_t db_write_buffer_mib = 64;
  // GET /readyz: the ledger check fails beyond this many blocks behind.
  uint64_t ready_max_ledger_lag = 10;
  // How often token last-used times are written (and expired tokens' event
  // streams ended).
  uint64_t token_flush_interval_ms = 5'000;
  // Webhooks (api::WebhookOptions, api::HttpWebhookSenderOptions; docs/api.md
  // "Webhooks").
  uint64_t webhook_retry_for_ms = 72ULL * 3600 * 1000;
  uint64_t webhook_retry_base_ms = 1'000;
  uint64_t webhook_retry_cap_ms = 3'600'000;
  uint64_t webhook_connect_timeout_ms = 10'000;
  uint64_t webhook_timeout_ms = 15'000;
  uint64_t webhook_max_response_bytes = 64 * 1024;
  uint64_t webhook_max_concurrency = 8;
  uint64_t webhook_max_endpoints = 32;
  uint64_t webhook_max_backlog = 1'000'000;
  bool webhook_allow_insecure_http = false;
  bool webhook_allow_private = false;
  std::filesystem::path webhook_ca_file;  // empty: the system CA store only
  // Anomaly rules (node/anomaly_rules.h), in the order given.
  std::vector<AnomalyRule> anomaly_rules;
};

struct LedgerConfig {
  std::filesystem::path datadir;              // required
  std::filesystem::path config_file;          // the file read, empty if none
  std::filesystem::path genesis;              // default <datadir>/genesis.json
  HostPort listen;                            // default 127.0.0.1:9736
  std::filesystem::path sequencer_key;        // default <datadir>/sequencer.key
  std::optional<uint64_t> block_interval_ms;  // unset: the genesis value
  bool seal_on_submit = false;  // seal a block as soon as a transaction arrives (tests)
  bool seal_on_demand = false;  // no block timer; SIGUSR1 seals one block (tests; flag only)
  uint64_t max_inbound_per_address = 8;  // p2p::HostOptions; 0 = no limit
  LogLevel log_level = LogLevel::kInfo;
  std::filesystem::path log_file;  // empty: stderr
};

// ResolveOptions over NodeOptionSpecs() / LedgerOptionSpecs(), then the typed
// struct. Relative log_file/genesis/sequencer_key paths are kept as given
// (relative to the working directory); defaults under the datadir are built
// from the resolved datadir.
Result<NodeConfig> ResolveNodeConfig(const RawValues& flags);
Result<LedgerConfig> ResolveLedgerConfig(const RawValues& flags);

// The closest of `candidates` to `word` by edit distance, or empty if none
// is close enough to be a plausible typo. Used for "did you mean" hints.
std::string ClosestMatch(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace tipd::node
