// The node's HTTP/JSON endpoints (docs/api.md): node info, balances, peers,
// channels and tips (over the ChannelManager; channel_api.cc), ledger
// transfers and blocks, tokens, metrics.
//
// Threading: handlers run on the io_context thread that drives the Host, the
// follower and the RpcServer, so they use those objects directly.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "api/auth.h"
#include "api/rpc_server.h"
#include "crypto/crypto.h"
#include "ledger/chain.h"
#include "ledger/link.h"
#include "node/channel_manager.h"
#include "node/config.h"
#include "node/lifecycle.h"
#include "node/streams.h"
#include "p2p/p2p.h"
#include "storage/storage.h"
#include "util/metrics.h"

namespace tipd::api {

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
  node::StreamScheduler* streams = nullptr;  // the stream routes need it
};

// A token's daily cap as the budget a tip is charged to (null if it has none).
std::shared_ptr<node::TipCharge> TokenCapChargeFor(SpendLimiter& spend, const TokenClaims& token);
// A tip request's outcome as the API answers it (200, 202 or the refusal).
ApiResponse TipAnswer(const node::TipOutcome& outcome);

// Persistent peers added through the API survive restarts: ConnectPeer
// stores them, RunNode redials them at start.
Status SavePersistentPeer(storage::Database& db, const crypto::PublicKey& node_id,
                          const std::string& address);
Result<std::vector<std::pair<crypto::PublicKey, node::HostPort>>> LoadPersistentPeers(
    storage::Database& db);

class NodeApi {
 public:
  explicit NodeApi(NodeServices services);
  ~NodeApi();
  // Registers every route on `server`.
  void Register(RpcServer& server);

  // How long POST /v1/ledger/transfer waits for inclusion before answering
  // 202 with height 0 (the transfer stays pending; GET the block later).
  std::chrono::milliseconds inclusion_wait{30'000};

 private:
  ApiResponse Info(const ApiRequest& req);
  ApiResponse Balance(const ApiRequest& req);
  ApiResponse ListPeers(const ApiRequest& req);
  ApiResponse ConnectPeer(const ApiRequest& req);
  ApiResponse GetBlock(const ApiRequest& req);
  ApiResponse CreateToken(const ApiRequest& req);
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
  ApiResponse ListTips(const ApiRequest& req);

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
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::shared_ptr<BackupJobs> backups_;  // last: joined before s_ goes
};

}  // namespace tipd::api
