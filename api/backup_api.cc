// Backup and recovery routes (docs/api.md, "Backups"):
//   POST /v1/backup    (admin) the encrypted online backup, as the file's bytes
//   GET  /v1/recovery  (admin) the static recovery export (JSON)
//
// The backup is built on a worker thread from a database snapshot taken on
// the event thread, so tips keep flowing while it is read, encrypted and
// verified; one backup runs at a time (a second request gets 409). Nothing is
// written in the data dir: the caller (tipctl) writes and checks the file.
#include <boost/asio/post.hpp>
#include <mutex>
#include <set>
#include <thread>

#include "api/node_api.h"
#include "node/backup.h"
#include "util/thread_name.h"

namespace tipd::api {

struct NodeApi::BackupJobs {
  std::mutex mu;
  std::thread worker;    // guarded by mu
  bool running = false;  // guarded by mu

  // Waits for a running backup (its thread uses the NodeApi's services).
  void Join() {
    std::thread t;
    {
      std::lock_guard<std::mutex> lock(mu);
      t = std::move(worker);
    }
    if (!t.joinable()) return;
    if (t.get_id() == std::this_thread::get_id()) {
      t.detach();  // the last reference died on the worker itself
    } else {
      t.join();
    }
  }
  ~BackupJobs() { Join(); }
};

void NodeApi::StopBackups() {
  if (backups_) backups_->Join();
}

void NodeApi::RegisterBackupRoutes(RpcServer& server) {
  backups_ = std::make_shared<BackupJobs>();
  server.HandleAsync(HttpMethod::kPost, "/v1/backup", RouteAuth::Needs(Scope::kAdmin),
                     [this](ApiRequest req, Responder r) { Backup(std::move(req), r); });
  server.Handle(HttpMethod::kGet, "/v1/recovery", RouteAuth::Needs(Scope::kAdmin),
                [this](const ApiRequest& req) { return RecoveryExport(req); });
}

void NodeApi::Backup(ApiRequest, Responder responder) {
  std::shared_ptr<BackupJobs> jobs = backups_;
  std::lock_guard<std::mutex> lock(jobs->mu);
  if (jobs->running) {
    return responder.Send(
        ApiResponse::Error(409, "BACKUP_IN_PROGRESS", "another backup is being taken; retry"));
  }
  if (jobs->worker.joinable()) jobs->worker.join();  // the previous one, finished
  jobs->running = true;
  // The snapshot is the backup's moment: everything durable before this
  // line, nothing after.
  std::shared_ptr<storage::Database::Snapshot> snapshot = s_.db.NewSnapshot();
  const uint64_t now_ms = static_cast<uint64_t>(s_.clock.NowMs());
  jobs->worker = std::thread([this, jobs, snapshot, now_ms, responder, alive = alive_] {
    SetThreadName("tipd-backup");
    node::BackupInfo info;
    auto file = node::BuildBackup(s_.db, *snapshot, s_.key, s_.rng, now_ms, &info);
    boost::asio::post(s_.io, [jobs, alive, responder, file = std::move(file), info]() mutable {
      {
        std::lock_guard<std::mutex> lock(jobs->mu);
        jobs->running = false;
      }
      if (!*alive) return;
      if (!file.ok()) return responder.Send(ApiResponse::FromStatus(file.status()));
      ApiResponse out = ApiResponse::Text(200, "application/octet-stream", std::move(*file));
      out.headers.emplace_back("X-Tipd-Backup-Sha256", HexEncode(info.file_sha256));
      out.headers.emplace_back("X-Tipd-Backup-Records", std::to_string(info.records));
      out.headers.emplace_back("X-Tipd-Backup-Channels", std::to_string(info.channels));
      out.headers.emplace_back("X-Tipd-Backup-Node", info.node_id);
      responder.Send(std::move(out));
    });
  });
}

ApiResponse NodeApi::RecoveryExport(const ApiRequest&) {
  if (s_.channels == nullptr) {
    return ApiResponse::Error(503, "UNAVAILABLE", "this node runs no channels");
  }
  v1::RecoveryExport out;
  out.set_format_version(1);
  out.set_node_id(s_.key.public_key().Hex());
  out.set_chain_id(s_.chain.params().chain_id);
  out.set_exported_at_ms(static_cast<uint64_t>(s_.clock.NowMs()));
  out.set_ledger_height(s_.chain.height());
  for (v1::RecoveryChannel& c : s_.channels->RecoveryChannels()) {
    *out.add_channels() = std::move(c);
  }
  // Persistent peers first (their addresses are the ones to dial), then any
  // other connected peer with the address it was reached at.
  std::set<std::string> seen;
  auto persistent = LoadPersistentPeers(s_.db);
  if (!persistent.ok()) return ApiResponse::FromStatus(persistent.status());
  for (const auto& [id, addr] : *persistent) {
    v1::RecoveryPeer* p = out.add_peers();
    p->set_node_id(id.Hex());
    p->set_address(addr.ToString());
    seen.insert(id.Hex());
  }
  for (const p2p::PeerInfo& info : s_.host.Peers()) {
    if (info.direction != p2p::Direction::kOutbound || !seen.insert(info.node_id.Hex()).second) {
      continue;
    }
    v1::RecoveryPeer* p = out.add_peers();
    p->set_node_id(info.node_id.Hex());
    p->set_address(info.address);
  }
  return ApiResponse::Json(out);
}

}  // namespace tipd::api
