// `tipd bench` (docs/performance.md): a ledger and four nodes as separate
// processes on loopback in a temporary directory, and every figure of issue
// 11's benchmark list in one run:
//   1. closed-loop maximum through the batch endpoint (coalescing on);
//   2. the naive mode (a node pair with max-tips-per-update 1) the same way;
//   3. fixed offered loads, open loop: submit -> signed receipt p50/p99/p99.9;
//   4. the HTTP API: single tips over N keep-alive connections, the batch
//      endpoint, and the load generator's own CPU (getrusage);
//   5. raw limits in this process: Schnorr sign/verify per second on one
//      core, synced LevelDB batches per second;
//   6. restart-to-ready and resident memory of a node holding a large tip
//      history and many real channels (opened through the ledger), bytes on
//      disk per tip;
//   7. listing tips (first page, a deep cursor, the newest page) and channels.
// Plus the scaling of (1) over core counts (--cores, by CPU affinity).
// It prints a table and, with `json`, writes every figure to a file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace tipd::tools {

struct BenchOptions {
  // CI smoke: everything scaled down (20k tips of history, 200 channels,
  // 1-3 s per measurement); finishes in under a minute on a quiet machine.
  bool quick = false;
  std::filesystem::path json;  // empty: no JSON file
  // Seconds of the closed-loop measurements (1, 2, single tips); 0: 10
  // (quick: 3). The fixed loads take half of it each.
  uint64_t seconds = 0;
  // Core counts for the scaling run, e.g. {1, 2}; empty: 1 and every core
  // this process may use (one entry if that is 1).
  std::vector<uint32_t> cores;
  // Size of the state for (6) and (7); 0: 1,000,000 tips and 10,000
  // channels (quick: 20,000 and 200).
  uint64_t history_tips = 0;
  uint64_t channels = 0;
  // Where the nodes live; empty: a new directory under $TMPDIR, removed at
  // the end unless `keep`.
  std::filesystem::path dir;
  bool keep = false;
  // The binary started as ledger and nodes; empty: /proc/self/exe.
  std::filesystem::path tipd_binary;
  // Run only these sections (names: raw, throughput, loads, http, scaling,
  // size, listing); empty: all. Skipped sections print and write zeros.
  std::vector<std::string> only;
  // Extra options for the coalescing pair (a and b), e.g. to compare
  // settings: {"--max-updates-in-flight", "4"}.
  std::vector<std::string> node_args;
  // Fixed loads: list the requests slower than this many ms, by 100 ms of
  // wall-clock time (UTC), to line the tail up with the nodes' logs and
  // LevelDB's db/LOG (docs/performance.md "Where the tail comes from");
  // 0: off.
  uint64_t slow_ms = 0;
};

// Runs the benchmark; returns the exit code: 0 when every section ran, 1 if
// one failed (the message says which and names the logs), 2 for bad options.
int RunBench(const BenchOptions& options);

}  // namespace tipd::tools
