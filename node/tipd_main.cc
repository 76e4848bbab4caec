// tipd: the payment-channel node, the ledger sequencer, and their tools.
//
//   tipd node   --datadir D [--ledger HOST:PORT@ID] [--listen HOST:PORT] ...
//   tipd ledger init --datadir D [--fund ACCOUNT=AMOUNT]...
//   tipd ledger --datadir D [--listen HOST:PORT] ...
//   tipd devnet [--nodes N] [--dir DIR] [--stream] ...   (docs/devnet.md)
//
// Options come from flags, then <datadir>/tipd.conf (or --config), then
// defaults: docs/configuration.md.
#include <CLI/CLI.hpp>
#include <charconv>
#include <iostream>

#include "node/config.h"
#include "node/daemons.h"
#include "tools/devnet.h"

namespace {

int Fail(const tipd::Status& s) {
  std::cerr << "tipd: " << s.message() << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
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
  if (node_cmd->parsed()) {
    auto config = tipd::node::ResolveNodeConfig(node_flags);
    if (!config.ok()) return Fail(config.status());
    return tipd::node::RunNode(*config);
  }
  return 1;
}
