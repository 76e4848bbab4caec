// NodeContext: one `tipd node` as an object — the composition root (Bitcoin
// Core's NodeContext plays this part). It owns every subsystem, builds them
// in dependency order and tears them down in reverse:
//
//   key, genesis -> database -> chain -> io_context, timers, p2p host
//     -> ledger follower (LedgerLink) -> group committer -> event log
//     -> spend caps -> channel manager -> tokens -> metrics -> webhooks
//     -> RPC server
//
// `tipd node` (daemons.cc) parses options, takes the data dir's lock, starts
// logging, and then only Creates, Starts and runs one of these. Tests build
// the same object in-process (tests/unit/node/context_test.cc); the channel
// manager's own in-process tests replace its seams instead (node/seams.h).
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <memory>

#include "crypto/crypto.h"
#include "node/config.h"
#include "util/clock.h"
#include "util/status.h"

namespace leveldb {
class Env;
}
namespace tipd::ledger {
class Chain;
class LedgerClient;
}  // namespace tipd::ledger
namespace tipd::p2p {
class Host;
}
namespace tipd::storage {
class Database;
class GroupCommitter;
}  // namespace tipd::storage

namespace tipd::api {
class EventLog;
class RpcServer;
}  // namespace tipd::api

namespace tipd::node {

class ChannelManager;

class NodeContext {
 public:
  // Opens the key, genesis, database and chain and builds every subsystem;
  // nothing listens or connects yet. `clock` must outlive the context.
  // `db_env` is for tests only: every file access of the node's database goes
  // through it (storage/fault_env.h injects disk faults); nullptr = the real
  // filesystem. It must outlive the context.
  static Result<std::unique_ptr<NodeContext>> Create(const NodeConfig& config, const Clock& clock,
                                                     leveldb::Env* db_env = nullptr);
  ~NodeContext();
  NodeContext(const NodeContext&) = delete;
  NodeContext& operator=(const NodeContext&) = delete;

  // Listens (p2p and API), restores channels, starts following the ledger,
  // dials persistent peers, writes rpc.url. Call once, before io().run().
  Status Start();
  // Graceful stop, on the io thread: stops the API and the peers, then the
  // io_context. The destructor then flushes every pending write.
  void Stop();

  boost::asio::io_context& io();
  const crypto::KeyPair& key() const;
  ledger::Chain& chain();
  ledger::LedgerClient& ledger();
  p2p::Host& host();
  ChannelManager& channels();
  storage::Database& db();
  uint16_t p2p_port() const;
  uint16_t rpc_port() const;
  // The HTTP API server with every route registered (the contract test lists
  // its routes).
  const api::RpcServer& rpc() const;

 private:
  NodeContext();
  struct Parts;
  std::unique_ptr<Parts> parts_;
};

}  // namespace tipd::node
