#include "api/node_api.h"

#include <boost/asio/steady_timer.hpp>
#include <charconv>

#include "api/openapi.h"
#include "ledger/codec.h"
#include "tipd/api.pb.h"
#include "tipd/storage.pb.h"

namespace tipd::api {
namespace {

using IdempotencyRecords = storage::RecordStore<v1::StoredIdempotentResult>;

std::string IdempotencyKey(std::string_view kind, std::string_view key) {
  std::string k(1, static_cast<char>(storage::KeyFamily::kIdempotency));
  k.append(kind).append("/").append(key);
  return k;
}

std::string Str(ByteSpan b) { return std::string(AsStringView(b)); }

// Transfers and other ledger transactions take a 1..200 byte key.
Status CheckIdempotencyKey(const std::string& key) {
  if (key.size() > 200) return Status::InvalidArgument("idempotency_key is longer than 200 bytes");
  return Status::Ok();
}

}  // namespace

Status SavePersistentPeer(storage::Database& db, const crypto::PublicKey& node_id,
                          const std::string& address) {
  storage::RecordStore<v1::StoredPeer> peers(&db);
  v1::StoredPeer rec;
  rec.set_node_id(Str(node_id.bytes()));
  rec.set_address(address);
  std::string key(1, static_cast<char>(storage::KeyFamily::kPeer));
  key += Str(node_id.bytes());
  storage::WriteBatch batch;
  peers.Put(&batch, key, rec);
  return db.Write(batch);
}

Result<std::vector<std::pair<crypto::PublicKey, node::HostPort>>> LoadPersistentPeers(
    storage::Database& db) {
  std::vector<std::pair<crypto::PublicKey, node::HostPort>> out;
  const std::string prefix(1, static_cast<char>(storage::KeyFamily::kPeer));
  TIPD_RETURN_IF_ERROR(
      db.ScanPrefix(prefix, 10'000, [&](std::string_view key, std::string_view value) -> Status {
        TIPD_ASSIGN_OR_RETURN(v1::StoredPeer rec,
                              storage::RecordStore<v1::StoredPeer>::Decode(key, value));
        auto id = crypto::PublicKey::Parse(AsSpan(rec.node_id()));
        auto address = node::ParseHostPort(rec.address());
        if (!id.ok() || !address.ok()) {
          return Status::Corruption("peer record " + storage::EscapeKey(key) + " is malformed");
        }
        out.emplace_back(*id, *address);
        return Status::Ok();
      }));
  return out;
}

NodeApi::NodeApi(NodeServices services) : s_(services) {}

NodeApi::~NodeApi() {
  *alive_ = false;
  StopBackups();
}

void NodeApi::Register(RpcServer& server) {
  auto sync = [this](ApiResponse (NodeApi::*fn)(const ApiRequest&)) {
    return [this, fn](const ApiRequest& req) { return (this->*fn)(req); };
  };
  server.Handle(HttpMethod::kGet, "/v1/info", RouteAuth::Needs(Scope::kRead), sync(&NodeApi::Info));
  server.Handle(HttpMethod::kGet, "/v1/balance", RouteAuth::Needs(Scope::kRead),
                sync(&NodeApi::Balance));
  server.Handle(HttpMethod::kGet, "/v1/peers", RouteAuth::Needs(Scope::kRead),
                sync(&NodeApi::ListPeers));
  server.Handle(HttpMethod::kPost, "/v1/peers", RouteAuth::Needs(Scope::kAdmin),
                sync(&NodeApi::ConnectPeer));
  server.Handle(HttpMethod::kGet, "/v1/ledger/blocks/{height}", RouteAuth::Needs(Scope::kRead),
                sync(&NodeApi::GetBlock));
  server_ = &server;
  server.Handle(HttpMethod::kPost, "/v1/tokens", RouteAuth::Needs(Scope::kAdmin),
                sync(&NodeApi::CreateToken));
  if (s_.registry != nullptr) {
    server.Handle(HttpMethod::kGet, "/v1/tokens", RouteAuth::Needs(Scope::kAdmin),
                  sync(&NodeApi::ListTokens));
    server.Handle(HttpMethod::kDelete, "/v1/tokens/{id}", RouteAuth::Needs(Scope::kAdmin),
                  sync(&NodeApi::RevokeToken));
    server.Handle(HttpMethod::kGet, "/v1/tokens/self", RouteAuth::AnyToken(),
                  sync(&NodeApi::TokenSelf));
  }
  server.Handle(HttpMethod::kGet, "/healthz", RouteAuth::Public(), sync(&NodeApi::Healthz));
  server.Handle(HttpMethod::kGet, "/readyz", RouteAuth::Public(), sync(&NodeApi::Readyz));
  server.Handle(HttpMethod::kGet, "/metrics", RouteAuth::Needs(Scope::kRead),
                sync(&NodeApi::Metrics));
  server.HandleAsync(HttpMethod::kPost, "/v1/ledger/transfer", RouteAuth::Needs(Scope::kAdmin),
                     [this](ApiRequest req, Responder r) { Transfer(std::move(req), r); });
  if (s_.channels != nullptr) RegisterChannelRoutes(server);
  if (s_.channels != nullptr) RegisterStatsRoutes(server);
  RegisterBackupRoutes(server);
  RegisterOpenApiRoute(server);
}

ApiResponse NodeApi::Info(const ApiRequest&) {
  v1::InfoResponse out;
  out.set_node_id(s_.key.public_key().Hex());
  out.set_chain_id(s_.chain.params().chain_id);
  out.set_version("tipd/0.1.0");
  out.set_ledger_height(s_.chain.height());
  out.set_peers_count(static_cast<uint32_t>(s_.host.Peers().size()));
  out.set_channels_count(s_.channels ? static_cast<uint32_t>(s_.channels->channel_count()) : 0);
  // Read-only once any write failed: a channel's (the manager stops), or
  // another's, such as the ledger follower's block (the database then
  // refuses every later write, so the next tip would fail too).
  Status read_only = s_.db.write_health();
  if (s_.channels && !s_.channels->health().ok()) read_only = s_.channels->health();
  out.set_read_only(!read_only.ok());
  if (!read_only.ok()) out.set_read_only_reason(read_only.message());
  if (s_.channels) out.set_fee_reserve(s_.channels->FeeReserve());
  return ApiResponse::Json(out);
}

ApiResponse NodeApi::Balance(const ApiRequest&) {
  v1::BalanceResponse out;
  const ledger::Account* a = s_.chain.state().FindAccount(s_.key.XOnly());
  out.set_onchain(a ? a->balance : 0);
  if (s_.channels) s_.channels->Balances(&out);
  return ApiResponse::Json(out);
}

ApiResponse NodeApi::ListPeers(const ApiRequest&) {
  v1::ListPeersResponse out;
  for (const p2p::PeerInfo& p : s_.host.Peers()) {
    v1::PeerApi* peer = out.add_peers();
    peer->set_node_id(p.node_id.Hex());
    peer->set_address(p.address);
    peer->set_inbound(p.direction == p2p::Direction::kInbound);
  }
  return ApiResponse::Json(out);
}

ApiResponse NodeApi::ConnectPeer(const ApiRequest& req) {
  v1::ConnectPeerRequest in;
  if (Status st = ParseJson(req.body, &in); !st.ok()) return ApiResponse::FromStatus(st);
  auto node_id = crypto::PublicKey::FromHex(in.node_id());
  if (!node_id.ok()) {
    return ApiResponse::Error(400, "INVALID_NODE_ID",
                              "node_id must be a 66-hex compressed public key");
  }
  auto address = node::ParseHostPort(in.address());
  if (!address.ok()) return ApiResponse::Error(400, "INVALID_ADDRESS", address.status().message());
  std::string host = address->host == "localhost" ? "127.0.0.1" : address->host;
  Status st;
  if (in.persistent()) {
    st = SavePersistentPeer(s_.db, *node_id, address->ToString());
    if (st.ok()) st = s_.host.AddPersistentPeer(host, address->port, *node_id);
    if (st.code() == StatusCode::kAlreadyExists) st = Status::Ok();
  } else {
    auto id = s_.host.Connect(host, address->port, *node_id);
    st = id.status();
  }
  if (!st.ok()) return ApiResponse::FromStatus(st);
  v1::ConnectPeerResponse out;
  out.mutable_peer()->set_node_id(node_id->Hex());
  out.mutable_peer()->set_address(address->ToString());
  out.mutable_peer()->set_persistent(in.persistent());
  return ApiResponse::Json(out, 202);
}

ApiResponse NodeApi::GetBlock(const ApiRequest& req) {
  uint64_t height = 0;
  const std::string& text = req.params.at("height");
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), height);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return ApiResponse::Error(400, "INVALID_HEIGHT", "height must be a decimal number");
  }
  auto block = s_.chain.GetBlock(height);
  if (!block.ok()) return ApiResponse::FromStatus(block.status());
  if (!block->has_value()) {
    return ApiResponse::Error(
        404, "NOT_FOUND",
        "no block " + text + "; this node's ledger height is " + std::to_string(s_.chain.height()));
  }
  v1::BlockResponse out;
  *out.mutable_block() = **block;
  out.set_block_hash(HexEncode(*ledger::BlockHash((*block)->header())));
  return ApiResponse::Json(out);
}

ApiResponse NodeApi::CreateToken(const ApiRequest& req) {
  v1::CreateTokenRequest in;
  if (Status st = ParseJson(req.body, &in); !st.ok()) return ApiResponse::FromStatus(st);
  uint32_t scopes = 0;
  for (const std::string& name : in.scopes()) {
    auto scope = ParseScope(name);
    if (!scope.ok()) return ApiResponse::Error(400, "INVALID_SCOPE", scope.status().message());
    scopes |= static_cast<uint32_t>(*scope);
  }
  if (scopes == 0) {
    return ApiResponse::Error(400, "INVALID_SCOPE",
                              "give at least one scope: read, receive, tip, admin");
  }
  if (in.expires_at_ms() != 0 && in.ttl_ms() != 0) {
    return ApiResponse::Error(400, "INVALID_EXPIRY", "give expires_at_ms or ttl_ms, not both");
  }
  uint64_t expires = in.expires_at_ms();
  if (in.ttl_ms() != 0) expires = static_cast<uint64_t>(s_.clock.NowMs()) + in.ttl_ms();
  TokenClaims claims = TokenAuthority::NewClaims(scopes, expires, in.daily_spend_cap(), s_.rng);
  v1::CreateTokenResponse out;
  if (s_.registry != nullptr) {
    // The record is durable before the token text is handed out.
    std::string created_by = req.token ? req.token->IdHex() : std::string(kCreatedByLegacy);
    if (req.token && admin_token_id && req.token->id == *admin_token_id) {
      created_by = kCreatedByAdminToken;
    }
    auto record = NewTokenRecord(claims, in, created_by, s_.clock.NowMs());
    if (!record.ok()) {
      return ApiResponse::Error(400, "INVALID_TOKEN_RESTRICTION", record.status().message());
    }
    if (Status st = s_.registry->Create(claims, *record); !st.ok()) {
      return ApiResponse::FromStatus(st);
    }
    out.set_label(record->label());
    out.set_max_per_tip(record->max_per_tip());
    out.set_rate_per_minute(record->rate_per_minute());
    *out.mutable_channels() = record->channels();
    *out.mutable_peers() = record->peers();
    out.set_created_by(record->created_by());
    out.set_created_at_ms(record->created_at_ms());
  } else if (in.max_per_tip() != 0 || in.rate_per_minute() != 0 || in.channels_size() != 0 ||
             in.peers_size() != 0 || !in.label().empty()) {
    return ApiResponse::Error(400, "INVALID_TOKEN_RESTRICTION",
                              "this node keeps no token records, so it cannot restrict tokens");
  }
  out.set_token(s_.tokens.Issue(claims));
  out.set_token_id(claims.IdHex());
  for (const std::string& name : in.scopes()) out.add_scopes(name);
  out.set_expires_at_ms(expires);
  out.set_daily_spend_cap(in.daily_spend_cap());
  return ApiResponse::Json(out, 201);
}

ApiResponse NodeApi::ListTokens(const ApiRequest&) {
  v1::ListTokensResponse out;
  for (v1::TokenRecord& r : s_.registry->List()) *out.add_tokens() = std::move(r);
  return ApiResponse::Json(out);
}

ApiResponse NodeApi::RevokeToken(const ApiRequest& req) {
  auto id = HexDecodeFixed<16>(req.params.at("id"));
  if (!id.ok()) {
    return ApiResponse::Error(400, "INVALID_TOKEN_ID", "a token id is 32 hex characters");
  }
  TokenId tid;
  std::copy(id->begin(), id->end(), tid.begin());
  auto force_it = req.query.find("force");
  const bool force = force_it != req.query.end() && force_it->second == "true";
  auto record = s_.registry->Revoke(tid, force);
  if (!record.ok()) {
    if (record.status().code() == StatusCode::kNotFound) {
      return ApiResponse::Error(404, "TOKEN_NOT_FOUND", record.status().message());
    }
    return ApiResponse::FromStatus(record.status());
  }
  // Durable: now end the token's open event streams.
  if (server_ != nullptr) {
    const std::string message = "token " + HexEncode(tid) + " was revoked";
    server_->EndTokenStreams(
        [&](const TokenClaims& c) -> std::optional<std::pair<std::string, std::string>> {
          if (c.id != tid) return std::nullopt;
          return std::make_pair(std::string("TOKEN_REVOKED"), message);
        });
  }
  v1::RevokeTokenResponse out;
  *out.mutable_token() = std::move(*record);
  return ApiResponse::Json(out);
}

ApiResponse NodeApi::TokenSelf(const ApiRequest& req) {
  v1::TokenSelfResponse out;
  auto record = s_.registry->Get(req.token->id);
  if (!record) {
    return ApiResponse::Error(404, "TOKEN_NOT_FOUND", "this token has no record");
  }
  *out.mutable_token() = std::move(*record);
  if (req.token->daily_cap != 0 && s_.spend != nullptr) {
    auto spent = s_.spend->SpentToday(req.token->id);
    if (!spent.ok()) return ApiResponse::FromStatus(spent.status());
    const uint64_t reserved = s_.spend->ReservedToday(req.token->id);
    const uint64_t cap = req.token->daily_cap;
    out.set_has_daily_cap(true);
    out.set_spent_today(*spent);
    out.set_reserved_today(reserved);
    const uint64_t used = *spent + reserved;
    out.set_remaining_today(used >= cap ? 0 : cap - used);
  }
  return ApiResponse::Json(out);
}

ApiResponse NodeApi::Healthz(const ApiRequest&) {
  v1::HealthResponse out;
  out.set_status("ok");
  return ApiResponse::Json(out);
}

ApiResponse NodeApi::Readyz(const ApiRequest&) {
  v1::ReadinessResponse out;
  bool ready = true;
  auto add = [&](const char* name, bool ok, std::string detail) {
    v1::ReadinessCheck* c = out.add_checks();
    c->set_name(name);
    c->set_ok(ok);
    c->set_detail(std::move(detail));
    ready = ready && ok;
  };
  // Storage: a failed write makes the database (and the channels) read-only.
  Status writable = s_.db.write_health();
  if (writable.ok() && s_.channels && !s_.channels->health().ok()) {
    writable = s_.channels->health();
  }
  add("storage", writable.ok(),
      writable.ok() ? std::string("writable")
                    : std::string("read-only after a failed write; see the node's log"));
  // Ledger: following, and no more than ready_max_ledger_lag blocks behind.
  if (s_.ledger_state) {
    const LedgerFollowState st = s_.ledger_state();
    const uint64_t behind = st.sequencer_height > st.height ? st.sequencer_height - st.height : 0;
    uint64_t missed = 0;  // blocks the interval would have produced while disconnected
    if (!st.connected && st.block_interval_ms != 0) {
      const int64_t gone = std::max<int64_t>(0, s_.clock.NowMs() - st.disconnected_since_ms);
      missed = static_cast<uint64_t>(gone) / st.block_interval_ms;
    }
    const uint64_t lag = std::max(behind, missed);
    const std::string at = "height " + std::to_string(st.height) + ", sequencer at " +
                           std::to_string(st.sequencer_height);
    if (!st.halted.empty()) {
      add("ledger", false, "stopped following the ledger at height " + std::to_string(st.height));
    } else if (!st.synced) {
      add("ledger", false,
          std::string("not yet caught up with the sequencer (") +
              (st.connected ? "connected" : "not connected") + ", " + at + ")");
    } else if (lag > ready_max_ledger_lag) {
      add("ledger", false,
          (st.connected ? std::string("behind by ") + std::to_string(lag) + " blocks"
                        : std::string("not connected for about ") + std::to_string(missed) +
                              " block intervals") +
              " (limit " + std::to_string(ready_max_ledger_lag) + "; " + at + ")");
    } else {
      add("ledger", true, std::string(st.connected ? "following" : "reconnecting") + ", " + at);
    }
  } else {
    add("ledger", s_.ledger.connected(),
        s_.ledger.connected() ? "connected" : "not connected to the sequencer");
  }
  // The API answers (this answer is the proof).
  add("api", true, "serving");
  out.set_ready(ready);
  return ApiResponse::Json(out, ready ? 200 : 503);
}

ApiResponse NodeApi::Metrics(const ApiRequest&) {
  return ApiResponse::Text(200, kMetricsContentType, s_.metrics.Render());
}

void NodeApi::Transfer(ApiRequest req, Responder responder) {
  v1::TransferRequest in;
  if (Status st = ParseJson(req.body, &in); !st.ok()) {
    return responder.Send(ApiResponse::FromStatus(st));
  }
  auto to = HexDecode(in.to());
  if (!to.ok() || to->size() != 32 || !crypto::ParseXOnly(*to).ok()) {
    return responder.Send(
        ApiResponse::Error(400, "INVALID_ACCOUNT", "to must be a 64-hex x-only account key"));
  }
  if (in.amount() == 0) {
    return responder.Send(ApiResponse::Error(400, "INVALID_AMOUNT", "amount must be >= 1"));
  }
  if (Status st = CheckIdempotencyKey(in.idempotency_key()); !st.ok()) {
    return responder.Send(ApiResponse::FromStatus(st));
  }
  IdempotencyRecords records(&s_.db);
  // Keys belong to the token that used them: another token can neither
  // replay this answer nor squat the key.
  const std::string owner = req.token ? req.token->IdHex() : std::string("-");
  const std::string record_key = IdempotencyKey("transfer", owner + "/" + in.idempotency_key());
  Hash32 request_hash = crypto::Sha256(AsSpan(in.to() + "/" + std::to_string(in.amount())));
  if (!in.idempotency_key().empty()) {
    auto prior = records.Get(record_key);
    if (!prior.ok()) return responder.Send(ApiResponse::FromStatus(prior.status()));
    if (prior->has_value()) {
      if ((*prior)->request_hash() != AsStringView(request_hash)) {
        return responder.Send(
            ApiResponse::Error(409, "IDEMPOTENCY_KEY_REUSED",
                               "idempotency_key was used for a different transfer; use a new key"));
      }
      v1::TransferResponse first;
      first.ParseFromString((*prior)->response());
      auto id = HexDecodeFixed<32>(first.tx_id());
      if (id.ok()) {
        auto loc = s_.chain.FindTransaction(*id);
        if (loc.ok() && loc->has_value()) first.set_height((*loc)->height());
      }
      return responder.Send(ApiResponse::Json(first, first.height() ? 200 : 202));
    }
  }

  // A transfer never spends the fee reserve the node keeps to defend its
  // channels (docs/channels.md, "Fee reserve").
  {
    const ledger::Account* acct = s_.chain.state().FindAccount(s_.key.XOnly());
    const uint64_t balance = acct ? acct->balance : 0;
    const uint64_t reserve = s_.channels ? s_.channels->FeeReserve() : 0;
    const uint64_t fee = s_.chain.params().fee_per_tx;
    if (static_cast<unsigned __int128>(in.amount()) + fee + reserve > balance) {
      return responder.Send(ApiResponse::Error(
          409, "INSUFFICIENT_FUNDS",
          "the ledger balance " + std::to_string(balance) + " cannot cover " +
              std::to_string(in.amount()) + " plus the fee " + std::to_string(fee) +
              " plus the fee reserve " + std::to_string(reserve) +
              " this node keeps to close, update and settle its channels"));
    }
  }
  v1::Transaction tx;
  tx.set_chain_id(s_.chain.params().chain_id);
  tx.set_signer(Str(s_.key.XOnly()));
  tx.set_fee(s_.chain.params().fee_per_tx);
  tx.mutable_transfer()->set_to(Str(*to));
  tx.mutable_transfer()->set_amount(in.amount());
  if (!in.idempotency_key().empty() && transfers_queued_.count(record_key) > 0) {
    return responder.Send(
        ApiResponse::Error(503, "TRANSFER_IN_PROGRESS",
                           "the transfer with this idempotency_key is still waiting for its "
                           "turn; retry with the same key"));
  }
  auto response = std::make_shared<v1::TransferResponse>();
  auto tx_id = std::make_shared<Hash32>();
  // Runs with the signed transaction right before it leaves.
  auto before_send = [this, responder, response, tx_id, record_key, request_hash,
                      keyed = !in.idempotency_key().empty()](const v1::Transaction& signed_tx) {
    transfers_queued_.erase(record_key);
    *tx_id = *ledger::TransactionId(signed_tx);
    response->set_tx_id(HexEncode(*tx_id));
    response->set_nonce(signed_tx.nonce());
    response->set_fee(signed_tx.fee());
    if (!keyed) return Status::Ok();
    // Persisted before the transaction leaves: a retry after a crash finds
    // this record and never pays twice.
    v1::StoredIdempotentResult rec;
    rec.set_request_hash(Str(request_hash));
    rec.set_response(response->SerializeAsString());
    storage::WriteBatch batch;
    IdempotencyRecords(&s_.db).Put(&batch, record_key, rec);
    Status st = s_.db.Write(batch);
    if (!st.ok()) responder.Send(ApiResponse::FromStatus(st));
    return st;
  };
  auto alive = alive_;
  auto answered = [this, alive, responder, response, record_key, tx_id,
                   keyed = !in.idempotency_key().empty()](const ledger::SubmitOutcome& out) {
    if (!*alive) return;
    transfers_queued_.erase(record_key);  // (a transaction that could not be signed)
    if (out.kind == ledger::SubmitOutcome::Kind::kRefused) {
      if (keyed) {
        // Refused by a ledger rule: never included, so the key may be retried.
        storage::WriteBatch batch;
        batch.Delete(record_key);
        (void)s_.db.Write(batch);
      }
      return responder.Send(ApiResponse::Error(400, out.code(), out.message));
    }
    if (out.kind == ledger::SubmitOutcome::Kind::kUnknown) {
      // The sequencer may have taken it: the key keeps its record, so a retry
      // answers with this transfer (and its height once included) instead of
      // paying a second time.
      return responder.Send(ApiResponse::Error(503, out.code(), out.message));
    }
    struct Wait {
      bool answered = false;
      Timers::Id timer = 0;
      ledger::LedgerLink::WaitId wait = 0;
    };
    auto w = std::make_shared<Wait>();
    w->wait = s_.ledger.WhenIncluded(*tx_id, [this, alive, responder, response, w](uint64_t h) {
      if (!*alive || w->answered) return;
      w->answered = true;
      s_.timers.Cancel(w->timer);
      response->set_height(h);
      responder.Send(ApiResponse::Json(*response, 200));
    });
    if (w->answered) return;
    w->timer = s_.timers.After(inclusion_wait, [this, alive, responder, response, w] {
      if (!*alive || w->answered) return;
      w->answered = true;
      s_.ledger.CancelWait(w->wait);
      responder.Send(ApiResponse::Json(*response, 202));  // still pending
    });
  };
  if (s_.channels != nullptr) {
    if (!in.idempotency_key().empty()) transfers_queued_.insert(record_key);
    // This node's account nonces have one owner (node/tx_sender.h): the
    // transfer takes its turn after the channel transactions queued before it.
    s_.channels->tx_sender().Submit(std::move(tx), std::move(answered), std::move(before_send));
    return;
  }
  tx.set_nonce(s_.ledger.NextNonce(s_.key.XOnly()));
  if (Status st = ledger::SignTransaction(&tx, s_.key, s_.rng); !st.ok()) {
    return responder.Send(ApiResponse::FromStatus(st));
  }
  if (!before_send(tx).ok()) return;
  s_.ledger.Submit(tx, [this, alive, answered](const ledger::SubmitOutcome& out) {
    if (!*alive) return;
    if (!out.accepted()) s_.ledger.ResetNonces();  // resynchronise with the chain on the next one
    answered(out);
  });
}

}  // namespace tipd::api
