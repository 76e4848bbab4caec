// The node's HTTP/JSON endpoints (docs/api.md): node info, balances, peers,
// channels and tips (over the ChannelManager; channel_api.cc), ledger
// transfers and blocks, tokens, metrics.
//
// Threading: handlers run on the io_context thread that drives the Host, the
// follower and the RpcServer, so they use those objects directly.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "api/auth.h"
#include "api/rpc_server.h"
#include "api/token_registry.h"
#include "crypto/crypto.h"
#include "ledger/chain.h"
#include "ledger/link.h"
#include "node/anomaly.h"
#include "node/channel_manager.h"
#include "node/config.h"
#include "node/lifecycle.h"
#include "node/streams.h"
#include "p2p/p2p.h"
#include "storage/storage.h"
#include "util/metrics.h"

namespace tipd::api {

// The ledger follower as GET /readyz sees it (ledger/client.h).
struct LedgerFollowState {
  bool connected = false;
  bool synced = false;                // caught up with the sequencer at least once
  std::string halted;                 // why following stopped for good; "" if it did not
  uint64_t height = 0;                // this node's height
  uint64_t sequencer_height = 0;      // the highest height the sequencer announced
  int64_t disconnected_since_ms = 0;  // Clock ms of the last disconnect (or of start)
  uint64_t block_interval_ms = 0;     // the genesis block interval
};

struct NodeServices {
  boost::asio::io_context& io;
  const crypto::KeyPair& key;
  ledger::Chain& chain;
  ledger::LedgerLink& ledger;
  p2p::Host& host;
  storage::Database& db;
  const TokenAuthority& tokens;
  MetricsRegistry& metrics;
  const Clock& clock;
  Timers& timers;
  crypto::RandomSource& rng;
  node::ChannelManager* channels = nullptr;  // channel and tip routes need it
  SpendLimiter* spend = nullptr;             // token caps charged by tips
  TokenRegistry* registry = nullptr;         // token records; null: tokens are stateless
  // What GET /readyz reports of the ledger follower; null: the ledger
  // check only asks LedgerLink::connected().
  std::function<LedgerFollowState()> ledger_state = nullptr;
  node::AnomalyDetector* anomalies = nullptr;  // GET /v1/anomalies; null: no routes
  node::StreamScheduler* streams = nullptr;    // the stream routes need it
  // CPU work that needs no node state (parsing a batch body, rendering a
  // large answer) runs here, off the io thread; null: inline on it.
  boost::asio::thread_pool* work = nullptr;
};

// A tip request's outcome as the API answers it (200, 202 or the refusal).
ApiResponse TipAnswer(const node::TipOutcome& outcome);

// Persistent peers added through the API survive restarts: ConnectPeer
// stores them, RunNode redials them at start.
Status SavePersistentPeer(storage::Database& db, const crypto::PublicKey& node_id,
                          const std::string& address);
Result<std::vector<std::pair<crypto::PublicKey, node::HostPort>>> LoadPersistentPeers(
    storage::Database& db);

// What a tip sent on behalf of `token` is charged to: its record's
// restrictions and daily cap (with a registry), else its cap alone; null for
// an uncapped token without a registry. Streams and refunds sent for a token
// use this too, so its limits hold whichever route sends the tip.
std::shared_ptr<node::TipCharge> MakeTokenCharge(TokenRegistry* registry, SpendLimiter& spend,
                                                 const TokenClaims& token);

class NodeApi {
 public:
  explicit NodeApi(NodeServices services);
  ~NodeApi();
  // Registers every route on `server`.
  void Register(RpcServer& server);

  // How long POST /v1/ledger/transfer waits for inclusion before answering
  // 202 with height 0 (the transfer stays pending; GET the block later).
  std::chrono::milliseconds inclusion_wait{30'000};
  // GET /readyz fails its ledger check when the follower is more than this
  // many blocks behind (config ready-max-ledger-lag; while disconnected, the
  // blocks the interval would have produced since count).
  uint64_t ready_max_ledger_lag = 10;
  // The id of the node's admin.token: tokens it mints are recorded as
  // created_by "admin.token".
  std::optional<TokenId> admin_token_id;

 private:
  ApiResponse Info(const ApiRequest& req);
  ApiResponse Balance(const ApiRequest& req);
  ApiResponse ListPeers(const ApiRequest& req);
  ApiResponse ConnectPeer(const ApiRequest& req);
  ApiResponse GetBlock(const ApiRequest& req);
  ApiResponse CreateToken(const ApiRequest& req);
  ApiResponse ListTokens(const ApiRequest& req);
  ApiResponse RevokeToken(const ApiRequest& req);
  ApiResponse TokenSelf(const ApiRequest& req);
  ApiResponse Healthz(const ApiRequest& req);
  ApiResponse Readyz(const ApiRequest& req);
  ApiResponse Metrics(const ApiRequest& req);
  void Transfer(ApiRequest req, Responder responder);

  // Channels and tips (channel_api.cc).
  void RegisterChannelRoutes(RpcServer& server);
  void OpenChannel(ApiRequest req, Responder responder);
  ApiResponse ListChannels(const ApiRequest& req);
  ApiResponse GetChannel(const ApiRequest& req);
  void DepositChannel(ApiRequest req, Responder responder);
  void CloseChannel(ApiRequest req, Responder responder);
  void SendTip(ApiRequest req, Responder responder);
  void SendTipBatch(ApiRequest req, Responder responder);
  void SendParsedTipBatch(ApiRequest req, Responder responder, v1::TipBatchRequest& in);
  ApiResponse ListTips(const ApiRequest& req);
  // Runs `work` on the work pool, then `then` on the io thread. `work` must
  // touch no node state; `then` may (and owns anything that must be released
  // on the io thread, such as a Responder). Work on at most kInlineWorkBytes
  // (`bytes`: the size of what it reads or writes) runs inline, as without a
  // pool: two thread hand-offs cost more than parsing or rendering one tip.
  static constexpr size_t kInlineWorkBytes = 4096;
  void OffIoThread(size_t bytes, std::function<void()> work, std::function<void()> then);

  // Stats and anomalies (stats_api.cc).
  void RegisterStatsRoutes(RpcServer& server);
  ApiResponse Stats(const ApiRequest& req);
  ApiResponse ListAnomalies(const ApiRequest& req);
  void ReleaseAnomaly(ApiRequest req, Responder responder);
  // Refunds and metered streams (stream_api.cc).
  void RegisterStreamRoutes(RpcServer& server);
  void RefundTip(ApiRequest req, Responder responder);
  void CreateStream(ApiRequest req, Responder responder);
  ApiResponse ListStreams(const ApiRequest& req);
  ApiResponse GetStream(const ApiRequest& req);
  void ControlStream(ApiRequest req, Responder responder, const std::string& action);

  // Backups and the recovery export (backup_api.cc).
  struct BackupJobs;
  void RegisterBackupRoutes(RpcServer& server);
  void Backup(ApiRequest req, Responder responder);
  ApiResponse RecoveryExport(const ApiRequest& req);
  void StopBackups();

  // How long channel open/close/deposit calls wait for the ledger before
  // answering 202 with the channel as it is.
  std::chrono::milliseconds channel_wait{30'000};

  NodeServices s_;
  RpcServer* server_ = nullptr;  // set by Register (revocation ends its streams)
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  // Keyed transfers waiting for their nonce (node/tx_sender.h): their record
  // is written only at their turn, so a retry meanwhile must not pay again.
  std::set<std::string> transfers_queued_;
  std::shared_ptr<BackupJobs> backups_;  // last: joined before s_ goes
};

}  // namespace tipd::api
