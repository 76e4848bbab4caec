#include "node/daemons.h"

#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <fstream>
#include <iostream>

#include "ledger/chain.h"
#include "ledger/genesis.h"
#include "node/channel_manager.h"
#include "node/events.h"
#include "node/ledger_client.h"
#include "node/ledger_server.h"
#include "node/lifecycle.h"
#include "node/logging.h"
#include "node/metrics.h"
#include "node/node_api.h"
#include "node/rpc_server.h"
#include "p2p/p2p.h"
#include "storage/storage.h"

namespace tipd::node {
namespace {

int Fail(const std::string& what, const Status& s) {
  auto log = Logger("main");
  log->critical("{}: {}", what, s.ToString());
  FlushLogs();
  std::cerr << "tipd: " << what << ": " << s.message() << "\n";
  return 1;
}

// A key pair whose public key has even Y, so its x-only form (what the
// genesis records) and its node id (02 || x) name the same key.
crypto::KeyPair EvenYKey(crypto::RandomSource& rng) {
  for (;;) {
    crypto::KeyPair kp = crypto::KeyPair::Generate(rng);
    if (kp.public_key().bytes()[0] == 0x02) return kp;
  }
}

Result<crypto::XOnlyPubKey> ParseAccount(const std::string& text) {
  auto bytes = HexDecode(text);
  if (bytes.ok() && bytes->size() == 33) {
    TIPD_ASSIGN_OR_RETURN(crypto::PublicKey pk, crypto::PublicKey::Parse(*bytes));
    return pk.XOnly();
  }
  if (bytes.ok() && bytes->size() == 32) return crypto::ParseXOnly(*bytes);
  return Status::InvalidArgument("account '" + text +
                                 "' is neither a 64-hex x-only key nor a 66-hex node id");
}

}  // namespace

std::string NumericHost(const std::string& host) {
  return host == "localhost" ? "127.0.0.1" : host;
}

int RunLedgerInit(const LedgerInitOptions& o) {
  Status s = PrepareDataDir(o.datadir);
  if (!s.ok()) return Fail("data dir", s);
  auto genesis_path = o.datadir / "genesis.json";
  auto key_path = o.datadir / "sequencer.key";
  if (std::filesystem::exists(genesis_path)) {
    return Fail("ledger init",
                Status::AlreadyExists(genesis_path.string() + " exists; refusing to overwrite"));
  }
  crypto::KeyPair seq = EvenYKey(crypto::SystemRng());
  if (std::filesystem::exists(key_path)) {
    auto existing = crypto::LoadKeyFile(key_path);
    if (!existing.ok()) return Fail("sequencer key", existing.status());
    seq = crypto::KeyPair::FromSecret(*existing);
  } else {
    s = crypto::SaveKeyFile(key_path, seq.secret());
    if (!s.ok()) return Fail("sequencer key", s);
  }
  std::vector<std::pair<ledger::AccountId, uint64_t>> allocations;
  for (const auto& [text, amount] : o.allocations) {
    auto acct = ParseAccount(text);
    if (!acct.ok()) return Fail("--fund", acct.status());
    allocations.emplace_back(*acct, amount);
  }
  SystemClock clock;
  v1::GenesisParams g = ledger::MakeDevnetGenesis(o.chain_id, seq.XOnly(), allocations,
                                                  static_cast<uint64_t>(clock.NowMs()));
  g.set_fee_per_tx(o.fee_per_tx);
  g.set_min_settle_timeout(o.min_settle_timeout);
  g.set_max_settle_timeout(o.max_settle_timeout);
  g.set_block_interval_ms(o.block_interval_ms);
  if (auto valid = ledger::ValidateGenesis(g); !valid.ok()) return Fail("genesis", valid.status());
  s = ledger::WriteGenesisFile(genesis_path, g);
  if (!s.ok()) return Fail("genesis", s);
  auto conf_path = o.datadir / "tipd.conf";
  if (!std::filesystem::exists(conf_path)) {
    std::ofstream conf(conf_path);
    conf << "# tipd ledger configuration (docs/configuration.md)\nlisten = " << o.listen.ToString()
         << "\n";
  }
  std::cout << "wrote " << genesis_path.string() << " (chain " << g.chain_id() << ", "
            << allocations.size() << " funded account(s))\n"
            << "sequencer key " << key_path.string() << "\n"
            << "start it:   tipd ledger --datadir " << o.datadir.string() << "\n"
            << "nodes use:  --ledger " << o.listen.ToString() << "@" << seq.public_key().Hex()
            << " and a copy of genesis.json in their data dir\n";
  return 0;
}

int RunLedger(const LedgerConfig& config) {
  Status s = PrepareDataDir(config.datadir);
  if (!s.ok()) return Fail("data dir", s);
  auto lock = PidLock::Acquire(config.datadir);
  if (!lock.ok()) return Fail("data dir", lock.status());
  s = InitLogging(config.log_level, config.log_file, "tipd-ledger");
  if (!s.ok()) return Fail("logging", s);
  auto log = Logger("main");

  auto genesis = ledger::LoadGenesisFile(config.genesis);
  if (!genesis.ok()) return Fail("genesis", genesis.status());
  auto params = ledger::ValidateGenesis(*genesis);
  if (!params.ok()) return Fail("genesis", params.status());
  auto secret = crypto::LoadKeyFile(config.sequencer_key);
  if (!secret.ok()) return Fail("sequencer key", secret.status());
  crypto::KeyPair sequencer = crypto::KeyPair::FromSecret(*secret);
  if (sequencer.XOnly() != params->sequencer) {
    return Fail("sequencer key", Status::PermissionDenied(config.sequencer_key.string() +
                                                          " is not the sequencer key named in " +
                                                          config.genesis.string()));
  }
  auto db = storage::Database::Open(config.datadir / "db");
  if (!db.ok()) return Fail("database", db.status());
  auto chain = ledger::Chain::Open(db->get(), *params);
  if (!chain.ok()) return Fail("chain", chain.status());

  boost::asio::io_context io;
  SystemClock clock;
  p2p::HostOptions host_options;
  host_options.chain_id = params->chain_id;
  host_options.max_inbound_per_address = config.max_inbound_per_address;
  p2p::Host host(io, sequencer, crypto::SystemRng(), host_options);
  auto port = host.Listen(NumericHost(config.listen.host), config.listen.port);
  if (!port.ok()) return Fail("listen " + config.listen.ToString(), port.status());

  LedgerServerOptions server_options;
  server_options.block_interval_ms = config.block_interval_ms.value_or(params->block_interval_ms);
  server_options.seal_on_submit = config.seal_on_submit;
  LedgerServer server(io, host, **chain, sequencer, crypto::SystemRng(), clock, server_options);
  server.Start();
  log->info("ledger {} at height {} listening on {}:{} as {} (block interval {} ms{})",
            params->chain_id, (*chain)->height(), config.listen.host, *port,
            sequencer.public_key().Hex(), server_options.block_interval_ms,
            server_options.seal_on_submit ? ", sealing on submit" : "");

  ShutdownSignals signals(io, [&](int signo) {
    log->info("signal {}: stopping", signo);
    server.Stop();
    host.Shutdown();
    io.stop();
  });
  io.run();
  log->info("stopped at height {}", (*chain)->height());
  FlushLogs();
  return (*chain)->health().ok() ? 0 : 1;
}

int RunNode(const NodeConfig& config) {
  Status s = PrepareDataDir(config.datadir);
  if (!s.ok()) return Fail("data dir", s);
  auto lock = PidLock::Acquire(config.datadir);
  if (!lock.ok()) return Fail("data dir", lock.status());
  s = InitLogging(config.log_level, config.log_file, "tipd-node");
  if (!s.ok()) return Fail("logging", s);
  auto log = Logger("main");

  auto key = crypto::LoadOrCreateKeyFile(config.datadir / "node.key", crypto::SystemRng());
  if (!key.ok()) return Fail("node key", key.status());
  auto genesis = ledger::LoadGenesisFile(config.genesis);
  if (!genesis.ok()) return Fail("genesis", genesis.status());
  auto params = ledger::ValidateGenesis(*genesis);
  if (!params.ok()) return Fail("genesis", params.status());
  if (!config.chain_id.empty() && config.chain_id != params->chain_id) {
    return Fail("chain", Status::InvalidArgument("configured chain_id '" + config.chain_id +
                                                 "' differs from the genesis chain '" +
                                                 params->chain_id + "'"));
  }
  if (!config.ledger.sequencer_pubkey) {
    return Fail("--ledger",
                Status::InvalidArgument("give the ledger as HOST:PORT@NODEID with the sequencer's "
                                        "66-hex node id (printed by `tipd ledger init`)"));
  }
  auto db = storage::Database::Open(config.datadir / "db");
  if (!db.ok()) return Fail("database", db.status());
  auto chain = ledger::Chain::Open(db->get(), *params);
  if (!chain.ok()) return Fail("chain", chain.status());

  boost::asio::io_context io;
  p2p::HostOptions host_options;
  host_options.chain_id = params->chain_id;
  host_options.ping_interval = std::chrono::milliseconds(config.ping_interval_ms);
  host_options.idle_timeout = std::chrono::milliseconds(config.peer_timeout_ms);
  host_options.max_inbound_per_address = config.max_inbound_per_address;
  p2p::Host host(io, *key, crypto::SystemRng(), host_options);
  auto port = host.Listen(NumericHost(config.listen.host), config.listen.port);
  if (!port.ok()) return Fail("listen " + config.listen.ToString(), port.status());

  LedgerClient ledger_client(host, **chain, *config.ledger.sequencer_pubkey,
                             NumericHost(config.ledger.address.host), config.ledger.address.port);
  SystemClock clock;
  MetricsRegistry metrics;
  // One writer thread merges every channel step, event and spend into synced
  // LevelDB writes (storage/storage.h GroupCommitter).
  Histogram& batch_writes =
      metrics.AddHistogram("tipd_group_commit_writes", "Put/Delete operations per synced write",
                           ExponentialBuckets(1, 4, 9));
  Histogram& batch_submissions = metrics.AddHistogram("tipd_group_commit_submissions",
                                                      "caller batches merged into one synced write",
                                                      ExponentialBuckets(1, 2, 12));
  Histogram& sync_latency =
      metrics.AddHistogram("tipd_group_commit_sync_seconds", "time of one synced write",
                           ExponentialBuckets(5e-5, 2, 14));
  storage::GroupCommitOptions commit_options;
  commit_options.on_batch = [&](const storage::CommitBatchInfo& info) {
    batch_writes.Observe(static_cast<double>(info.writes));
    batch_submissions.Observe(static_cast<double>(info.submissions));
    sync_latency.Observe(std::chrono::duration<double>(info.sync_latency).count());
  };
  storage::GroupCommitter committer(db->get(), commit_options);
  auto events = EventLog::Open(io, db->get(), &committer, clock);
  if (!events.ok()) return Fail("event log", events.status());
  struct EventAdapter final : EventSink {
    EventLog& log;
    explicit EventAdapter(EventLog& l) : log(l) {}
    uint64_t Stage(storage::WriteBatch* batch, v1::Event* event) override {
      return log.Stage(batch, event);
    }
    void Publish(const v1::Event& event) override { log.Publish(event); }
    void Append(v1::Event event) override { log.Append(std::move(event)); }
    void Abandon(uint64_t id) override { log.Abandon(id); }
  } event_sink(**events);
  SpendLimiter spend(db->get(), clock);
  ChannelManagerOptions channel_options;
  channel_options.default_settle_timeout = config.settle_timeout;
  channel_options.max_accept_deposit = config.max_accept_deposit;
  channel_options.max_updates_in_flight = config.max_updates_in_flight;
  channel_options.max_tips_per_update = config.max_tips_per_update;
  channel_options.local_limits.max_queued_tips = config.max_queued_tips;
  ChannelManager channels(io, *key, host, ledger_client, **db, committer, spend, clock,
                          crypto::SystemRng(), channel_options);
  channels.SetEventSink(&event_sink);
  channels.RegisterMetrics(metrics);

  p2p::Callbacks cb;
  cb.on_connected = [&](const p2p::PeerInfo& info) {
    if (ledger_client.OnConnected(info)) return;
    log->info("peer {} connected ({} {})", info.node_id.Hex(), p2p::DirectionName(info.direction),
              info.address);
    channels.OnPeerConnected(info);
  };
  cb.on_disconnected = [&](const p2p::DisconnectEvent& ev) {
    if (ledger_client.OnDisconnected(ev)) return;
    if (ev.was_connected) log->info("peer {} disconnected: {}", ev.address, ev.reason.ToString());
    channels.OnPeerDisconnected(ev);
  };
  cb.on_message = [&](p2p::PeerId peer, const v1::Envelope& env) {
    if (ledger_client.OnMessage(peer, env)) return;
    if (channels.OnMessage(peer, env)) return;
    log->debug("message {} from peer {} has no handler", static_cast<int>(env.msg_case()), peer);
  };
  cb.on_error = [&](p2p::PeerId peer, const v1::Error& error) {
    channels.OnPeerError(peer, error);
  };
  host.SetCallbacks(std::move(cb));
  s = channels.Start();
  if (!s.ok()) return Fail("channels", s);
  s = ledger_client.Start();
  if (!s.ok()) return Fail("ledger", s);
  auto saved_peers = LoadPersistentPeers(**db);
  if (!saved_peers.ok()) return Fail("peers", saved_peers.status());
  for (const auto& [id, address] : *saved_peers) {
    s = host.AddPersistentPeer(NumericHost(address.host), address.port, id);
    if (!s.ok()) log->warn("peer {}@{}: {}", id.Hex(), address.ToString(), s.ToString());
  }
  for (const PeerAddress& peer : config.connect) {
    s = host.AddPersistentPeer(NumericHost(peer.address.host), peer.address.port, peer.node_id);
    if (!s.ok()) log->warn("peer {}: {}", peer.ToString(), s.ToString());
  }
  // HTTP/JSON API with bearer tokens (rpc.key and admin.token in the data dir).
  auto authority = TokenAuthority::LoadOrCreate(config.datadir, crypto::SystemRng());
  if (!authority.ok()) return Fail("rpc key", authority.status());
  auto admin = EnsureAdminToken(config.datadir, *authority, crypto::SystemRng(), clock.NowMs());
  if (!admin.ok()) return Fail("admin token", admin.status());
  Gauge& height_gauge = metrics.AddGauge("tipd_ledger_height", "ledger height this node followed");
  Gauge& peers_gauge = metrics.AddGauge("tipd_peers", "connected peers (Init done)");
  metrics.AddCollectHook([&] {
    height_gauge.Set(static_cast<double>((*chain)->height()));
    peers_gauge.Set(static_cast<double>(host.Peers().size()));
  });
  RpcServer rpc(io, *authority, clock, RpcLimits{}, &metrics);
  NodeApi api(NodeServices{io, *key, **chain, ledger_client, host, **db, *authority, metrics, clock,
                           crypto::SystemRng(), &channels});
  api.Register(rpc);
  RegisterEventRoutes(rpc, **events);
  auto rpc_port = rpc.Listen(NumericHost(config.rpc_listen.host), config.rpc_listen.port);
  if (!rpc_port.ok()) return Fail("rpc listen " + config.rpc_listen.ToString(), rpc_port.status());
  // tipctl finds the API through this file (docs/operator-guide.md).
  s = WriteFileAtomic0600(config.datadir / "rpc.url", "http://" + config.rpc_listen.host + ":" +
                                                          std::to_string(*rpc_port) + "\n");
  if (!s.ok()) return Fail("rpc.url", s);

  log->info("node {} on chain {} at ledger height {}, listening on {}:{}, API on http://{}:{}",
            key->public_key().Hex(), params->chain_id, (*chain)->height(), config.listen.host,
            *port, config.rpc_listen.host, *rpc_port);

  ShutdownSignals signals(io, [&](int signo) {
    log->info("signal {}: stopping", signo);
    rpc.Stop();
    host.Shutdown();
    io.stop();
  });
  io.run();
  committer.Stop();  // everything submitted is durable before the process exits
  log->info("stopped at ledger height {}", (*chain)->height());
  FlushLogs();
  return 0;
}

}  // namespace tipd::node
