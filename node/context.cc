#include "node/context.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <latch>
#include <memory>
#include <thread>

#include "api/auth.h"
#include "api/events.h"
#include "api/node_api.h"
#include "api/rpc_server.h"
#include "api/token_registry.h"
#include "api/webhooks.h"
#include "dashboard/dashboard.h"
#include "ledger/chain.h"
#include "ledger/client.h"
#include "ledger/genesis.h"
#include "node/anomaly.h"
#include "node/channel_manager.h"
#include "node/logging.h"
#include "node/seams.h"
#include "p2p/p2p.h"
#include "storage/storage.h"
#include "util/allocator.h"
#include "util/metrics.h"
#include "util/thread_name.h"

namespace tipd::node {

using api::EnsureAdminToken;
using api::EventLog;
using api::LoadPersistentPeers;
using api::NodeApi;
using api::NodeServices;
using api::RegisterEventRoutes;
using api::RpcLimits;
using api::RpcServer;
using api::SpendLimiter;
using api::TokenAuthority;
using api::TokenRegistry;
using api::WriteFileAtomic0600;

namespace {

std::string NumericHost(const std::string& host) {
  return host == "localhost" ? "127.0.0.1" : host;
}

// The event log as the channel manager's EventSink.
class EventLogSink final : public EventSink {
 public:
  explicit EventLogSink(EventLog& log) : log_(log) {}
  uint64_t Stage(storage::WriteBatch* batch, v1::Event* event) override {
    return log_.Stage(batch, event);
  }
  void Publish(const v1::Event& event) override { log_.Publish(event); }
  void Append(v1::Event event) override { log_.Append(std::move(event)); }
  void Abandon(uint64_t id) override { log_.Abandon(id); }

 private:
  EventLog& log_;
};

}  // namespace

// Members in dependency order: each may use those declared before it, and
// they are destroyed in reverse (the RPC server first, the database last).
struct NodeContext::Parts {
  NodeConfig config;
  const Clock* clock = nullptr;
  std::shared_ptr<spdlog::logger> log;
  crypto::KeyPair key;
  ledger::Params params;
  std::unique_ptr<storage::Database> db;
  std::unique_ptr<ledger::Chain> chain;
  boost::asio::io_context io;
  std::unique_ptr<AsioTimers> timers;
  std::unique_ptr<p2p::Host> host;
  std::unique_ptr<HostTransport> transport;
  std::unique_ptr<ledger::LedgerClient> ledger;
  MetricsRegistry metrics;
  std::unique_ptr<storage::GroupCommitter> committer;
  std::unique_ptr<EventLog> events;
  std::unique_ptr<EventLogSink> event_sink;
  std::unique_ptr<SpendLimiter> spend;
  // Before the channels: waiting tips hold token admissions.
  std::unique_ptr<TokenRegistry> registry;
  std::unique_ptr<AnomalyDetector> anomalies;
  std::unique_ptr<ChannelManager> channels;
  std::unique_ptr<node::StreamScheduler> streams;
  std::unique_ptr<TokenAuthority> tokens;
  std::unique_ptr<api::HttpWebhookSender> webhook_sender;
  std::unique_ptr<api::WebhookDispatcher> webhooks;
  std::unique_ptr<RpcServer> rpc;
  std::unique_ptr<NodeApi> api;
  // The API's work pool (parsing, rendering); destroyed first, so its
  // threads are joined while everything they hand work back to exists.
  std::unique_ptr<boost::asio::thread_pool> work;
  uint16_t p2p_port = 0;
  uint16_t rpc_port = 0;
  // The ledger connection as GET /readyz sees it.
  bool ledger_connected = false;
  int64_t ledger_disconnected_since_ms = 0;

  explicit Parts(crypto::KeyPair k) : key(std::move(k)) {}
  ~Parts() {
    // Everything submitted is durable before the database closes, and so
    // are the tokens' last-used times.
    if (committer) committer->Stop();
    if (registry) {
      Status s = registry->Flush();
      if (!s.ok() && log) log->warn("token last-used times not written: {}", s.ToString());
    }
  }
  // Every token_flush_interval: writes changed token records and ends the
  // event streams of tokens that expired meanwhile.
  void TokenTick() {
    Status s = registry->Flush();
    if (!s.ok()) log->warn("token last-used times not written: {}", s.ToString());
    const int64_t now = clock->NowMs();
    rpc->EndTokenStreams(
        [now](const api::TokenClaims& c) -> std::optional<std::pair<std::string, std::string>> {
          if (!c.ExpiredAt(now)) return std::nullopt;
          return std::make_pair(
              std::string("TOKEN_EXPIRED"),
              "token expired at " + std::to_string(c.expires_at_ms) + " ms (Unix)");
        });
    timers->After(std::chrono::milliseconds(config.token_flush_interval_ms),
                  [this] { TokenTick(); });
  }
};

NodeContext::NodeContext() = default;
NodeContext::~NodeContext() = default;

Result<std::unique_ptr<NodeContext>> NodeContext::Create(const NodeConfig& config,
                                                         const Clock& clock, leveldb::Env* db_env) {
  TIPD_ASSIGN_OR_RETURN(crypto::KeyPair key, crypto::LoadOrCreateKeyFile(
                                                 config.datadir / "node.key", crypto::SystemRng()));
  TIPD_ASSIGN_OR_RETURN(v1::GenesisParams genesis, ledger::LoadGenesisFile(config.genesis));
  TIPD_ASSIGN_OR_RETURN(ledger::Params params, ledger::ValidateGenesis(genesis));
  if (!config.chain_id.empty() && config.chain_id != params.chain_id) {
    return Status::InvalidArgument("configured chain_id '" + config.chain_id +
                                   "' differs from the genesis chain '" + params.chain_id + "'");
  }
  if (!config.ledger.sequencer_pubkey) {
    return Status::InvalidArgument(
        "give the ledger as HOST:PORT@NODEID with the sequencer's 66-hex node id (printed by "
        "`tipd ledger init`)");
  }
  std::unique_ptr<NodeContext> ctx(new NodeContext());
  ctx->parts_ = std::make_unique<Parts>(std::move(key));
  Parts& p = *ctx->parts_;
  p.config = config;
  p.clock = &clock;
  p.log = Logger("main");
  p.params = params;
  storage::Options db_options;
  db_options.env = db_env;
  db_options.write_buffer_bytes = static_cast<size_t>(config.db_write_buffer_mib) << 20;
  TIPD_ASSIGN_OR_RETURN(p.db, storage::Database::Open(config.datadir / "db", db_options));
  TIPD_ASSIGN_OR_RETURN(p.chain, ledger::Chain::Open(p.db.get(), params));
  p.timers = std::make_unique<AsioTimers>(p.io);

  p2p::HostOptions host_options;
  host_options.chain_id = params.chain_id;
  host_options.ping_interval = std::chrono::milliseconds(config.ping_interval_ms);
  host_options.idle_timeout = std::chrono::milliseconds(config.peer_timeout_ms);
  host_options.max_inbound_per_address = config.max_inbound_per_address;
  host_options.max_send_queue_messages = static_cast<size_t>(config.p2p_max_send_queue);
  p.host = std::make_unique<p2p::Host>(p.io, p.key, crypto::SystemRng(), host_options);
  p.transport = std::make_unique<HostTransport>(*p.host, host_options.max_send_queue_messages);
  p.ledger = std::make_unique<ledger::LedgerClient>(
      *p.host, *p.chain, *config.ledger.sequencer_pubkey, NumericHost(config.ledger.address.host),
      config.ledger.address.port, Logger("follower"));

  // One writer thread merges every channel step, event and spend into synced
  // LevelDB writes (storage/storage.h GroupCommitter).
  Histogram& batch_writes =
      p.metrics.AddHistogram("tipd_group_commit_writes", "Put/Delete operations per synced write",
                             ExponentialBuckets(1, 4, 9));
  Histogram& batch_submissions = p.metrics.AddHistogram(
      "tipd_group_commit_submissions", "caller batches merged into one synced write",
      ExponentialBuckets(1, 2, 12));
  Histogram& sync_latency =
      p.metrics.AddHistogram("tipd_group_commit_sync_seconds", "time of one synced write",
                             ExponentialBuckets(5e-5, 2, 14));
  storage::GroupCommitOptions commit_options;
  commit_options.on_batch = [&batch_writes, &batch_submissions,
                             &sync_latency](const storage::CommitBatchInfo& info) {
    batch_writes.Observe(static_cast<double>(info.writes));
    batch_submissions.Observe(static_cast<double>(info.submissions));
    sync_latency.Observe(std::chrono::duration<double>(info.sync_latency).count());
  };
  p.committer = std::make_unique<storage::GroupCommitter>(p.db.get(), commit_options);
  api::EventLogOptions event_log_options;
  event_log_options.max_held = config.webhook_max_backlog;
  TIPD_ASSIGN_OR_RETURN(
      p.events, EventLog::Open(p.io, p.db.get(), p.committer.get(), clock, event_log_options));
  p.event_sink = std::make_unique<EventLogSink>(*p.events);
  p.spend = std::make_unique<SpendLimiter>(p.db.get(), clock);
  TIPD_ASSIGN_OR_RETURN(p.registry, TokenRegistry::Open(p.db.get(), clock, p.spend.get()));

  ChannelManagerOptions channel_options;
  channel_options.open.default_settle_timeout = config.settle_timeout;
  channel_options.open.max_accept_deposit = config.max_accept_deposit;
  channel_options.open.max_updates_in_flight = config.max_updates_in_flight;
  channel_options.open.max_tips_per_update = config.max_tips_per_update;
  channel_options.open.max_queued_tips = config.max_queued_tips;
  channel_options.debug_proof_log = config.debug_proof_log.string();
  // The minimum window in blocks of this ledger (rounded up).
  const uint64_t interval = std::max<uint64_t>(1, params.block_interval_ms);
  const uint64_t seconds = std::min<uint64_t>(config.min_settle_seconds, UINT64_MAX / 1000 - 1);
  channel_options.open.min_settle_timeout = (seconds * 1000 + interval - 1) / interval;
  p.channels =
      std::make_unique<ChannelManager>(p.io, p.key, *p.transport, *p.ledger, *p.db, *p.committer,
                                       clock, *p.timers, crypto::SystemRng(), channel_options);
  p.channels->SetEventSink(p.event_sink.get());
  p.channels->RegisterMetrics(p.metrics);
  // Anomaly rules from the config (node/anomaly.h); holds survive restarts.
  p.anomalies =
      std::make_unique<AnomalyDetector>(p.io, *p.db, *p.committer, clock, config.anomaly_rules);
  TIPD_RETURN_IF_ERROR(p.anomalies->Load());
  p.anomalies->SetEventSink(p.event_sink.get());
  p.anomalies->RegisterMetrics(p.metrics);
  p.channels->SetAnomalyDetector(p.anomalies.get());
  node::StreamOptions stream_options;
  stream_options.max_per_second = config.stream_max_per_second;
  stream_options.min_interval_ms = config.stream_min_interval_ms;
  p.streams =
      std::make_unique<node::StreamScheduler>(p.io, *p.db, *p.committer, clock, *p.timers,
                                              *p.channels, crypto::SystemRng(), stream_options);
  p.streams->SetEventSink(p.event_sink.get());
  p.streams->SetChargeFor(
      [spend = p.spend.get(), registry = p.registry.get()](const v1::StoredStream& s) {
        api::TokenClaims claims;
        std::copy_n(s.token_id().begin(), std::min<size_t>(s.token_id().size(), claims.id.size()),
                    claims.id.begin());
        claims.scopes = s.token_scopes();
        claims.expires_at_ms = s.token_expires_at_ms();
        claims.daily_cap = s.token_daily_cap();
        return api::MakeTokenCharge(registry, *spend, claims);
      });

  // HTTP/JSON API with bearer tokens (rpc.key and admin.token in the data dir).
  TIPD_ASSIGN_OR_RETURN(TokenAuthority authority,
                        TokenAuthority::LoadOrCreate(config.datadir, crypto::SystemRng()));
  p.tokens = std::make_unique<TokenAuthority>(authority);
  // A revoked admin.token is replaced at start (docs/security.md).
  TIPD_ASSIGN_OR_RETURN(
      std::string admin,
      EnsureAdminToken(config.datadir, *p.tokens, crypto::SystemRng(), clock.NowMs(),
                       [&p](const api::TokenClaims& c) { return !p.registry->IsRevoked(c.id); }));
  TIPD_ASSIGN_OR_RETURN(api::TokenClaims admin_claims, p.tokens->Verify(admin, clock.NowMs()));
  TIPD_RETURN_IF_ERROR(
      p.registry->Ensure(admin_claims, api::kCreatedByAdminToken, api::kCreatedByAdminToken));
  Gauge& height_gauge =
      p.metrics.AddGauge("tipd_ledger_height", "ledger height this node followed");
  Gauge& peers_gauge = p.metrics.AddGauge("tipd_peers", "connected peers (Init done)");
  p.metrics.AddCollectHook([&p, &height_gauge, &peers_gauge] {
    height_gauge.Set(static_cast<double>(p.chain->height()));
    peers_gauge.Set(static_cast<double>(p.host->Peers().size()));
  });
  RpcLimits rpc_limits;
  rpc_limits.read_timeout = std::chrono::milliseconds(config.rpc_read_timeout_ms);
  rpc_limits.write_timeout = std::chrono::milliseconds(config.rpc_write_timeout_ms);
  rpc_limits.max_connections = static_cast<size_t>(config.rpc_max_connections);
  rpc_limits.max_event_streams = static_cast<size_t>(config.rpc_max_event_streams);
  rpc_limits.max_stream_buffer_bytes = static_cast<size_t>(config.rpc_max_stream_buffer);
  // Webhooks: signed deliveries of the event log (api/webhooks.h).
  api::HttpWebhookSenderOptions sender_options;
  sender_options.connect_timeout = std::chrono::milliseconds(config.webhook_connect_timeout_ms);
  sender_options.response_timeout = std::chrono::milliseconds(config.webhook_timeout_ms);
  sender_options.max_response_bytes = static_cast<size_t>(config.webhook_max_response_bytes);
  sender_options.allow_private = config.webhook_allow_private;
  sender_options.ca_file = config.webhook_ca_file;
  TIPD_ASSIGN_OR_RETURN(p.webhook_sender, api::HttpWebhookSender::Create(p.io, sender_options));
  api::WebhookOptions webhook_options;
  webhook_options.retry_for = std::chrono::milliseconds(config.webhook_retry_for_ms);
  webhook_options.retry_base = std::chrono::milliseconds(config.webhook_retry_base_ms);
  webhook_options.retry_cap = std::chrono::milliseconds(config.webhook_retry_cap_ms);
  webhook_options.max_concurrent = static_cast<size_t>(config.webhook_max_concurrency);
  webhook_options.max_endpoints = static_cast<size_t>(config.webhook_max_endpoints);
  webhook_options.allow_insecure_http = config.webhook_allow_insecure_http;
  TIPD_ASSIGN_OR_RETURN(
      p.webhooks, api::WebhookDispatcher::Open(p.io, p.db.get(), p.committer.get(), p.events.get(),
                                               p.webhook_sender.get(), clock, *p.timers,
                                               crypto::SystemRng(), webhook_options, &p.metrics));
  p.rpc = std::make_unique<RpcServer>(p.io, *p.tokens, clock, rpc_limits, &p.metrics);
  p.rpc->SetTokenRegistry(p.registry.get());
  NodeServices services{
      p.io,      p.key, *p.chain,  *p.ledger,           *p.host,          *p.db,        *p.tokens,
      p.metrics, clock, *p.timers, crypto::SystemRng(), p.channels.get(), p.spend.get()};
  services.registry = p.registry.get();
  p.ledger_disconnected_since_ms = clock.NowMs();
  services.ledger_state = [&p] {
    api::LedgerFollowState st;
    st.connected = p.ledger_connected;
    st.synced = p.ledger->synced();
    if (!p.ledger->health().ok()) st.halted = p.ledger->health().message();
    st.height = p.ledger->height();
    st.sequencer_height = p.ledger->sequencer_height();
    st.disconnected_since_ms = p.ledger_disconnected_since_ms;
    st.block_interval_ms = p.params.block_interval_ms;
    return st;
  };
  services.anomalies = p.anomalies.get();
  services.streams = p.streams.get();
  {
    size_t threads = static_cast<size_t>(config.rpc_threads);
    if (threads == 0) threads = std::max<size_t>(1, std::thread::hardware_concurrency() - 1);
    p.work = std::make_unique<boost::asio::thread_pool>(threads);
    // Name each pool thread: one job per thread, each held until all have
    // started, so that no thread takes two. The latch is shared: a pool
    // thread may still be leaving arrive_and_wait() when this one returns.
    auto started = std::make_shared<std::latch>(static_cast<std::ptrdiff_t>(threads));
    for (size_t i = 0; i < threads; ++i) {
      boost::asio::post(*p.work, [started] {
        SetThreadName("tipd-work");
        started->arrive_and_wait();
      });
    }
    started->wait();
    services.work = p.work.get();
  }

  p.api = std::make_unique<NodeApi>(services);
  p.api->ready_max_ledger_lag = config.ready_max_ledger_lag;
  p.api->admin_token_id = admin_claims.id;
  p.api->Register(*p.rpc);
  api::EventRouteOptions event_options;
  // Replay pauses well below the stream buffer bound (docs/api.md "Limits").
  event_options.replay_high_water_bytes =
      std::min(event_options.replay_high_water_bytes, rpc_limits.max_stream_buffer_bytes / 2);
  RegisterEventRoutes(*p.rpc, *p.events, event_options);
  api::HttpWebhookSender* sender = p.webhook_sender.get();
  p.webhooks->RegisterRoutes(
      *p.rpc, [sender](const api::WebhookUrl& url, bool allow_insecure_http,
                       std::function<void(std::optional<api::WebhookUrlError>)> done) {
        sender->CheckUrl(url, allow_insecure_http, std::move(done));
      });
  // The web dashboard at / (public files; the page asks for a token).
  dashboard::RegisterDashboardRoutes(*p.rpc);

  // Host events, routed to the follower first and then to the channels.
  p2p::Callbacks cb;
  cb.on_connected = [&p](const p2p::PeerInfo& info) {
    if (p.ledger->OnConnected(info)) {
      p.ledger_connected = true;
      return;
    }
    p.log->info("peer {} connected ({} {})", info.node_id.Hex(), p2p::DirectionName(info.direction),
                info.address);
    p.channels->OnPeerConnected(info);
  };
  cb.on_disconnected = [&p](const p2p::DisconnectEvent& ev) {
    if (p.ledger->OnDisconnected(ev)) {
      if (p.ledger_connected) p.ledger_disconnected_since_ms = p.clock->NowMs();
      p.ledger_connected = p.ledger->connected();
      return;
    }
    if (ev.was_connected) {
      p.log->info("peer {} disconnected: {}", ev.address, ev.reason.ToString());
    }
    p.channels->OnPeerDisconnected(ev);
  };
  cb.on_message = [&p](p2p::PeerId peer, const v1::Envelope& env) {
    if (p.ledger->OnMessage(peer, env)) return;
    if (p.channels->OnMessage(peer, env)) return;
    p.log->debug("message {} from peer {} has no handler", static_cast<int>(env.msg_case()), peer);
  };
  cb.on_error = [&p](p2p::PeerId peer, const v1::Error& error) {
    p.channels->OnPeerError(peer, error);
  };
  p.host->SetCallbacks(std::move(cb));
  return ctx;
}

Status NodeContext::Start() {
  Parts& p = *parts_;
  const NodeConfig& config = p.config;
  TIPD_ASSIGN_OR_RETURN(p.p2p_port,
                        p.host->Listen(NumericHost(config.listen.host), config.listen.port));
  TIPD_RETURN_IF_ERROR(p.channels->Start());
  TIPD_RETURN_IF_ERROR(p.streams->Start());
  TIPD_RETURN_IF_ERROR(p.ledger->Start());
  // Restoring freed its temporaries (every channel record read at once, the
  // restored states, the stats index's scans) between the objects that stay:
  // the allocator keeps such free pages resident until something reuses them.
  // Hand them back once, so a restarted node holds what it uses (issue 11:
  // resident memory per idle channel, docs/performance.md).
  ReleaseFreeMemory();
  TIPD_ASSIGN_OR_RETURN(auto saved_peers, LoadPersistentPeers(*p.db));
  for (const auto& [id, address] : saved_peers) {
    Status s = p.host->AddPersistentPeer(NumericHost(address.host), address.port, id);
    if (!s.ok()) p.log->warn("peer {}@{}: {}", id.Hex(), address.ToString(), s.ToString());
  }
  for (const PeerAddress& peer : config.connect) {
    Status s =
        p.host->AddPersistentPeer(NumericHost(peer.address.host), peer.address.port, peer.node_id);
    if (!s.ok()) p.log->warn("peer {}: {}", peer.ToString(), s.ToString());
  }
  TIPD_ASSIGN_OR_RETURN(p.rpc_port,
                        p.rpc->Listen(NumericHost(config.rpc_listen.host), config.rpc_listen.port));
  p.timers->After(std::chrono::milliseconds(config.token_flush_interval_ms),
                  [&p] { p.TokenTick(); });
  // tipctl finds the API through this file (docs/operator-guide.md).
  TIPD_RETURN_IF_ERROR(WriteFileAtomic0600(
      config.datadir / "rpc.url",
      "http://" + config.rpc_listen.host + ":" + std::to_string(p.rpc_port) + "\n"));
  // Before the "API on" line, which scripts and tests wait for.
  p.log->info("memory allocator: {}; database write buffer {} MiB", AllocatorName(),
              config.db_write_buffer_mib);
  p.log->info("node {} on chain {} at ledger height {}, listening on {}:{}, API on http://{}:{}",
              p.key.public_key().Hex(), p.params.chain_id, p.chain->height(), config.listen.host,
              p.p2p_port, config.rpc_listen.host, p.rpc_port);
  return Status::Ok();
}

void NodeContext::Stop() {
  Parts& p = *parts_;
  p.rpc->Stop();
  p.host->Shutdown();
  p.io.stop();
}

boost::asio::io_context& NodeContext::io() { return parts_->io; }
const crypto::KeyPair& NodeContext::key() const { return parts_->key; }
ledger::Chain& NodeContext::chain() { return *parts_->chain; }
ledger::LedgerClient& NodeContext::ledger() { return *parts_->ledger; }
p2p::Host& NodeContext::host() { return *parts_->host; }
ChannelManager& NodeContext::channels() { return *parts_->channels; }
storage::Database& NodeContext::db() { return *parts_->db; }
uint16_t NodeContext::p2p_port() const { return parts_->p2p_port; }
uint16_t NodeContext::rpc_port() const { return parts_->rpc_port; }
const api::RpcServer& NodeContext::rpc() const { return *parts_->rpc; }

}  // namespace tipd::node
