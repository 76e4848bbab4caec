// tipd: the payment-channel node, the ledger sequencer, and their tools.
//
//   tipd node   --datadir D [--ledger HOST:PORT@ID] [--listen HOST:PORT] ...
//   tipd ledger init --datadir D [--fund ACCOUNT=AMOUNT]...
//   tipd ledger --datadir D [--listen HOST:PORT] ...
//   tipd devnet [--nodes N] [--dir DIR] [--stream] ...   (docs/devnet.md)
//   tipd bench [--quick] [--json FILE] [--seconds N] [--cores LIST]   (docs/performance.md)
//   tipd restore --datadir D (--backup FILE | --recovery FILE) [--force]
//               [--verify-only]              (docs/operator-guide.md, Backups)
//
// Options come from flags, then <datadir>/tipd.conf (or --config), then
// defaults: docs/configuration.md.
#include <CLI/CLI.hpp>
#include <charconv>
#include <chrono>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "node/backup.h"
#include "node/config.h"
#include "node/daemons.h"
#include "node/lifecycle.h"
#include "node/recovery.h"
#include "tools/bench.h"
#include "tools/devnet.h"
#include "util/allocator.h"

#if defined(TIPD_WITH_JEMALLOC)
#include <jemalloc/jemalloc.h>
// util/allocator.cc purges every arena through "arena.4096.purge".
static_assert(MALLCTL_ARENAS_ALL == 4096);
#endif

namespace {

int Fail(const tipd::Status& s) {
  std::cerr << "tipd: " << s.message() << "\n";
  return 2;
}

tipd::Result<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return tipd::Status::NotFound("cannot read " + path);
  std::ostringstream buf;
  buf << in.rdbuf();
  if (!in.good() && !in.eof()) return tipd::Status::IOError("error reading " + path);
  return buf.str();
}

struct RestoreArgs {
  std::string datadir, backup, recovery;
  bool force = false;
  bool verify_only = false;
};

// tipd restore: checks the whole file before writing anything, refuses a data
// dir a node is running on (its pid lock) or whose db/ is not empty (unless
// --force), and writes the new db/ next to it, renaming it into place last.
int RunRestore(const RestoreArgs& a) {
  namespace fs = std::filesystem;
  const fs::path datadir = a.datadir;
  auto file = ReadWholeFile(a.backup.empty() ? a.recovery : a.backup);
  if (!file.ok()) return Fail(file.status());
  const fs::path key_path = datadir / "node.key";
  const uint64_t now_ms =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());

  if (!a.backup.empty()) {
    auto secret = tipd::crypto::LoadKeyFile(key_path);
    if (!secret.ok()) {
      return Fail(tipd::Status::FailedPrecondition(
          "the backup is encrypted with the node key: put the node's node.key in " +
          datadir.string() + " first (" + secret.status().message() + ")"));
    }
    const auto key = tipd::crypto::KeyPair::FromSecret(*secret);
    if (a.verify_only) {
      auto opened = tipd::node::OpenBackup(*file, key);
      if (!opened.ok()) return Fail(opened.status());
      std::cout << "backup OK: node " << opened->info.node_id << ", " << opened->info.records
                << " records, " << opened->info.channels << " channel(s), taken at unix ms "
                << opened->info.created_at_ms << "\n";
      return 0;
    }
    auto lock = tipd::node::PidLock::Acquire(datadir);
    if (!lock.ok()) return Fail(lock.status());
    auto report = tipd::node::RestoreBackup(datadir, *file, key, a.force, now_ms);
    if (!report.ok()) return Fail(report.status());
    std::cout << "restored " << report->info.records << " records of node " << report->info.node_id
              << " into " << (datadir / "db").string() << "\n"
              << report->channels_marked
              << " open or closing channel(s) wait for their peer: tips on them are refused "
                 "until the node has reestablished with it\n";
    if (!report->replaced.empty()) {
      std::cout << "the previous database is kept in " << report->replaced.string() << "\n";
    }
    return 0;
  }

  // --recovery: the static export, for a lost database.
  auto ex = tipd::node::ParseRecoveryExport(*file);
  if (!ex.ok()) return Fail(ex.status());
  tipd::Status prepared = tipd::node::PrepareDataDir(datadir);
  if (!prepared.ok()) return Fail(prepared);
  auto loaded = tipd::crypto::LoadKeyFile(key_path);
  std::optional<tipd::crypto::SecretKey> secret;
  if (loaded.ok()) {
    secret = *loaded;
  } else {
    if (loaded.status().code() != tipd::StatusCode::kNotFound || ex->node_secret_key().empty()) {
      return Fail(tipd::Status::FailedPrecondition(
          "no usable node.key in " + datadir.string() +
          " and the export carries none: " + loaded.status().message()));
    }
    auto bytes = tipd::HexDecode(ex->node_secret_key());
    if (!bytes.ok()) return Fail(tipd::Status::InvalidArgument("node_secret_key is not hex"));
    auto sk = tipd::crypto::SecretKey::FromBytes(*bytes);
    if (!sk.ok()) return Fail(sk.status());
    secret = *sk;
  }
  const auto key = tipd::crypto::KeyPair::FromSecret(*secret);
  auto records = tipd::node::RecoveryRecords(*ex, key);
  if (!records.ok()) return Fail(records.status());
  if (a.verify_only) {
    std::cout << "recovery export OK: node " << ex->node_id() << ", " << ex->channels_size()
              << " channel(s), " << ex->peers_size() << " peer(s)\n";
    return 0;
  }
  auto lock = tipd::node::PidLock::Acquire(datadir);
  if (!lock.ok()) return Fail(lock.status());
  if (!a.force && tipd::node::DatabaseDirInUse(datadir)) {
    return Fail(tipd::Status::FailedPrecondition(
        (datadir / "db").string() +
        " holds a database; pass --force to replace it (it is kept as db.replaced-<time>)"));
  }
  if (!fs::exists(key_path)) {
    tipd::Status saved = tipd::crypto::SaveKeyFile(key_path, *secret);
    if (!saved.ok()) return Fail(saved);
  }
  const fs::path fresh = datadir / "db.restoring";
  std::error_code ec;
  fs::remove_all(fresh, ec);
  auto marked = tipd::node::WriteFreshDatabase(fresh, *records);
  if (!marked.ok()) {
    fs::remove_all(fresh, ec);
    return Fail(marked.status());
  }
  auto replaced = tipd::node::InstallDatabase(datadir, fresh, a.force, now_ms);
  if (!replaced.ok()) {
    fs::remove_all(fresh, ec);
    return Fail(replaced.status());
  }
  std::cout << "recovered " << ex->channels_size() << " channel(s) and " << ex->peers_size()
            << " peer(s) of node " << ex->node_id() << " into " << (datadir / "db").string()
            << "\nstart the node: it follows the ledger from genesis, dials the peers, and "
               "learns each channel's newest state from its peer at reestablish\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
#if defined(TIPD_WITH_JEMALLOC)
  tipd::UseJemalloc(&mallctl);
#endif
  CLI::App app{"tipd: payment channels for per-message tips"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tipd 0.1.0");

  CLI::App* node_cmd = app.add_subcommand("node", "run a payment-channel node");
  tipd::node::RawValues node_flags;
  if (auto s = tipd::node::AddFlags(node_cmd, tipd::node::NodeOptionSpecs(), &node_flags);
      !s.ok()) {
    return Fail(s);
  }

  CLI::App* ledger_cmd = app.add_subcommand("ledger", "run the ledger sequencer");
  tipd::node::RawValues ledger_flags;
  if (auto s = tipd::node::AddFlags(ledger_cmd, tipd::node::LedgerOptionSpecs(), &ledger_flags);
      !s.ok()) {
    return Fail(s);
  }
  CLI::App* init_cmd =
      ledger_cmd->add_subcommand("init", "write a devnet genesis and sequencer key");
  tipd::node::LedgerInitOptions init;
  std::string init_datadir, init_listen = "127.0.0.1:9736";
  std::vector<std::string> funds;
  init_cmd->add_option("--datadir", init_datadir, "ledger data directory")->required();
  init_cmd->add_option("--chain-id", init.chain_id, "chain id")->capture_default_str();
  init_cmd->add_option("--fund", funds,
                       "ACCOUNT=AMOUNT to allocate (x-only key or node id, hex); repeatable");
  init_cmd->add_option("--fee", init.fee_per_tx, "fee per transaction")->capture_default_str();
  init_cmd->add_option("--min-settle-timeout", init.min_settle_timeout, "blocks")
      ->capture_default_str();
  init_cmd->add_option("--max-settle-timeout", init.max_settle_timeout, "blocks")
      ->capture_default_str();
  init_cmd->add_option("--block-interval-ms", init.block_interval_ms, "milliseconds")
      ->capture_default_str();
  init_cmd->add_option("--listen", init_listen, "address the ledger will listen on")
      ->capture_default_str();

  CLI::App* devnet_cmd = app.add_subcommand(
      "devnet", "start a local ledger and N nodes with channels, optionally streaming tips");
  tipd::tools::DevnetOptions devnet;
  uint32_t devnet_nodes = 3;
  std::string devnet_duration;
  devnet_cmd
      ->add_option("--nodes", devnet_nodes,
                   "number of nodes, 1..16 (default 3, or the count recorded in DIR)")
      ->check(CLI::Range(1u, tipd::tools::kDevnetMaxNodes))
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // scripts/devnet.sh --nodes 5
  devnet_cmd->add_option("--dir", devnet.dir, "devnet directory (state, logs, devnet.json)")
      ->capture_default_str()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  devnet_cmd->add_flag("--stream", devnet.stream, "stream demo tips and show a live status line");
  devnet_cmd->add_option("--base-port", devnet.base_port,
                         "ledger on PORT, node i on PORT+1+2i (p2p) and PORT+2+2i (API); "
                         "default: free ports");
  devnet_cmd
      ->add_option("--tips-per-second", devnet.tips_per_second,
                   "limit the demo stream (0 = as fast as the nodes answer)")
      ->capture_default_str();
  devnet_cmd->add_option(
      "--duration", devnet_duration,
      "stop after this long (e.g. 30s, 5m) with a summary; default: until Ctrl-C");

  CLI::App* bench_cmd = app.add_subcommand(
      "bench", "measure throughput, latency, restart, memory, disk and listing on a local network");
  tipd::tools::BenchOptions bench;
  std::string bench_cores;
  bench_cmd->add_flag("--quick", bench.quick, "CI smoke: everything scaled down (< 1 minute)");
  bench_cmd->add_option("--json", bench.json, "also write every figure to this JSON file");
  bench_cmd->add_option("--seconds", bench.seconds,
                        "seconds of each closed-loop measurement (default 10, quick 3)");
  bench_cmd->add_option("--cores", bench_cores,
                        "core counts of the scaling run, e.g. 1,2 (default: 1 and all)");
  bench_cmd->add_option("--tips", bench.history_tips,
                        "history the size section builds (default 1000000, quick 20000)");
  bench_cmd->add_option("--channels", bench.channels,
                        "channels the size section opens (default 10000, quick 200)");
  bench_cmd->add_option("--dir", bench.dir, "where the nodes live (default: a new temp dir)");
  bench_cmd
      ->add_option("--only", bench.only,
                   "run only these sections: raw, throughput, loads, http, scaling, size, "
                   "listing (comma-separated); skipped ones print zeros")
      ->delimiter(',')
      ->check(CLI::IsMember({"raw", "throughput", "loads", "http", "scaling", "size", "listing"}));
  bench_cmd
      ->add_option("--node-arg", bench.node_args,
                   "an extra option for the coalescing pair's nodes (repeat for each word), e.g. "
                   "--node-arg=--max-updates-in-flight --node-arg=4")
      ->allow_extra_args(false);
  bench_cmd->add_flag("--keep", bench.keep, "keep the directory (state and logs) afterwards");
  bench_cmd->add_option("--slow-ms", bench.slow_ms,
                        "fixed loads: list the requests slower than this, by 100 ms of UTC time, "
                        "to line the tail up with the nodes' logs and db/LOG (default: off)");
  bench_cmd->add_option("--tipd", bench.tipd_binary,
                        "run the ledger and nodes from this tipd binary (e.g. an older build, "
                        "for before/after figures); default: this one");

  CLI::App* restore_cmd = app.add_subcommand(
      "restore", "write a node's db/ from an online backup or a recovery export");
  RestoreArgs restore;
  restore_cmd
      ->add_option("--datadir", restore.datadir, "the node's data directory (holds node.key)")
      ->required();
  auto* backup_opt =
      restore_cmd->add_option("--backup", restore.backup, "a file written by `tipctl backup`");
  auto* recovery_opt = restore_cmd->add_option("--recovery", restore.recovery,
                                               "a file written by `tipctl export-recovery`");
  backup_opt->excludes(recovery_opt);
  restore_cmd->add_flag("--force", restore.force,
                        "replace a non-empty db/ (kept as db.replaced-<time>)");
  restore_cmd->add_flag("--verify-only", restore.verify_only,
                        "check the file (decrypt, digest, records) and write nothing");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (init_cmd->parsed()) {
    init.datadir = init_datadir;
    auto listen = tipd::node::ParseHostPort(init_listen);
    if (!listen.ok()) return Fail(listen.status());
    init.listen = *listen;
    for (const std::string& f : funds) {
      size_t eq = f.find('=');
      uint64_t amount = 0;
      const char* end = f.data() + f.size();
      if (eq == std::string::npos || eq + 1 == f.size() ||
          std::from_chars(f.data() + eq + 1, end, amount).ptr != end) {
        return Fail(
            tipd::Status::InvalidArgument("--fund expects ACCOUNT=AMOUNT, got '" + f + "'"));
      }
      init.allocations.emplace_back(f.substr(0, eq), amount);
    }
    return tipd::node::RunLedgerInit(init);
  }
  if (ledger_cmd->parsed()) {
    auto config = tipd::node::ResolveLedgerConfig(ledger_flags);
    if (!config.ok()) return Fail(config.status());
    return tipd::node::RunLedger(*config);
  }
  if (bench_cmd->parsed()) {
    for (size_t pos = 0; pos < bench_cores.size();) {
      size_t end = bench_cores.find(',', pos);
      if (end == std::string::npos) end = bench_cores.size();
      uint32_t k = 0;
      const char* first = bench_cores.data() + pos;
      const char* last = bench_cores.data() + end;
      if (std::from_chars(first, last, k).ptr != last || k == 0) {
        return Fail(tipd::Status::InvalidArgument("--cores expects counts like 1,2, got '" +
                                                  bench_cores + "'"));
      }
      bench.cores.push_back(k);
      pos = end + 1;
    }
    return tipd::tools::RunBench(bench);
  }
  if (devnet_cmd->parsed()) {
    if (devnet_cmd->count("--nodes") > 0) devnet.nodes = devnet_nodes;
    if (!devnet_duration.empty()) {
      auto ms = tipd::node::ParseDurationMs(devnet_duration);
      if (!ms.ok()) {
        return Fail(tipd::Status::InvalidArgument("--duration: " + ms.status().message()));
      }
      devnet.duration_ms = *ms;
    }
    return tipd::tools::RunDevnet(devnet);
  }
  if (restore_cmd->parsed()) {
    if (restore.backup.empty() == restore.recovery.empty()) {
      return Fail(tipd::Status::InvalidArgument("give exactly one of --backup and --recovery"));
    }
    return RunRestore(restore);
  }
  if (node_cmd->parsed()) {
    auto config = tipd::node::ResolveNodeConfig(node_flags);
    if (!config.ok()) return Fail(config.status());
    return tipd::node::RunNode(*config);
  }
  return 1;
}
