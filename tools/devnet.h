// `tipd devnet`: a local test network in one command (docs/devnet.md).
//
// RunDevnet writes a genesis with funded accounts, starts a ledger and N nodes
// as separate `tipd` processes on loopback, connects them in a ring, opens a
// channel per ring edge, writes DIR/devnet.json and prints what to run next.
// With `stream` it sends demo tips (message + bLIP-10 style metadata) between
// the nodes over their HTTP API and shows a live status line. SIGINT/SIGTERM
// stop every child (SIGTERM, then SIGKILL after a grace period). Running it
// again on the same DIR brings the same network back: same keys and genesis,
// the recorded ports when they are free, the existing channels.
//
// The manifest and latency helpers are public so tests can read devnet.json
// and check the percentile arithmetic.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "util/status.h"

namespace tipd::tools {

struct DevnetOptions {
  std::filesystem::path dir = "devnet";
  // Unset: the count recorded in DIR/devnet.json, or 3 for a new devnet.
  // A count that differs from a recorded devnet is refused (the genesis
  // funds exactly the recorded nodes).
  std::optional<uint32_t> nodes;
  bool stream = false;
  // 0: any free loopback ports. Otherwise the ledger listens on base_port and
  // node i on base_port+1+2i (p2p) and base_port+2+2i (API), for a new
  // devnet and whenever a recorded port is taken.
  uint16_t base_port = 0;
  uint64_t tips_per_second = 0;  // 0: as fast as the nodes answer
  // Stop after this long (printing a summary line) and exit 0; unset: run
  // until SIGINT/SIGTERM.
  std::optional<uint64_t> duration_ms;
  // The binary started as ledger and nodes; empty: this process's own
  // executable (/proc/self/exe).
  std::filesystem::path tipd_binary;
};

inline constexpr uint32_t kDevnetMaxNodes = 16;

// Runs the devnet until a signal or the duration; returns the process exit
// code: 0 after a clean stop, 1 if setting up failed or a child died
// (the message names the child's log file), 2 for bad options.
int RunDevnet(const DevnetOptions& options);

// ---------------------------------------------------------------------------
// DIR/devnet.json
// ---------------------------------------------------------------------------

struct DevnetLedger {
  std::filesystem::path datadir;
  std::string sequencer_id;  // 66 hex (the sequencer's node id)
  uint16_t port = 0;         // p2p listen port on 127.0.0.1
  pid_t pid = 0;             // of the last run; 0 before the first start
  // "127.0.0.1:PORT@SEQUENCER_ID", what `tipd node --ledger` takes.
  std::string LedgerArg() const;
};

struct DevnetNode {
  std::string name;     // "node-0", ...
  std::string node_id;  // 66 hex
  std::filesystem::path datadir;
  uint16_t p2p_port = 0;
  uint16_t rpc_port = 0;
  pid_t pid = 0;                   // of the last run
  std::string P2pAddress() const;  // "127.0.0.1:PORT"
  std::string RpcUrl() const;      // "http://127.0.0.1:PORT"
  std::filesystem::path TokenFile() const { return datadir / "admin.token"; }
};

struct DevnetChannel {
  std::string channel_id;  // hex; empty until opened
  uint32_t opener = 0;     // index into nodes
  uint32_t peer = 0;
  uint64_t deposit = 0;       // opener's side
  uint64_t push_deposit = 0;  // peer's side
};

struct DevnetManifest {
  std::string chain_id;
  pid_t devnet_pid = 0;  // the `tipd devnet` process of the last run
  DevnetLedger ledger;
  std::vector<DevnetNode> nodes;
  std::vector<DevnetChannel> channels;
};

// Pretty-printed JSON (docs/devnet.md shows the layout). Paths are written as
// given; RunDevnet gives absolute ones.
std::string ManifestToJson(const DevnetManifest& manifest);
// Parses ManifestToJson's output. Fails with kCorruption naming the field that
// is missing or malformed.
Result<DevnetManifest> ParseManifest(const std::string& json);

// ---------------------------------------------------------------------------
// Latency statistics
// ---------------------------------------------------------------------------

// A log-scale histogram of latencies in microseconds: buckets grow by 2%, so
// a percentile is within 2% of the exact value (nearest-rank), in constant
// memory however long the devnet streams. Not thread-safe.
class LatencyHistogram {
 public:
  void Record(uint64_t micros);
  void Merge(const LatencyHistogram& other);
  void Clear();
  uint64_t count() const { return count_; }
  // The nearest-rank percentile (0 < p <= 100) in microseconds; 0 when empty.
  uint64_t Percentile(double p) const;

 private:
  static constexpr size_t kBuckets = 1200;  // 1 us * 1.02^1200 > 10^10 us
  static size_t Bucket(uint64_t micros);
  static uint64_t BucketValue(size_t bucket);
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
};

}  // namespace tipd::tools
