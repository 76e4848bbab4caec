// NodeApi's channel and tip routes (docs/api.md), over the ChannelManager.
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cctype>
#include <charconv>
#include <memory>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "api/node_api.h"
#include "api/token_registry.h"
#include "tipd/api.pb.h"

namespace tipd::api {
namespace net = boost::asio;

// The channel manager's request and answer types (node/tip_requests.h).
using node::TipCharge;
using node::TipError;
using node::TipOutcome;
using node::TipRequestIn;

namespace {

// A token's daily cap as the budget a tip is charged to (no registry).
class TokenCapCharge final : public TipCharge {
 public:
  TokenCapCharge(SpendLimiter& limiter, TokenClaims token) : limiter_(limiter), token_(token) {}
  Status Reserve(uint64_t amount) override {
    auto r = limiter_.Reserve(token_, amount);
    if (!r.ok()) return r.status();
    reservation_ = std::move(*r);
    return Status::Ok();
  }
  void CommitToBatch(storage::WriteBatch* batch) override {
    limiter_.CommitToBatch(std::move(reservation_), batch);
  }

 private:
  SpendLimiter& limiter_;
  TokenClaims token_;
  Reservation reservation_;  // released on destruction unless committed
};

// A token's record (its largest tip, channels and peers, rate) and then its
// daily cap, checked once the manager has resolved the channel.
class TokenRecordCharge final : public TipCharge {
 public:
  TokenRecordCharge(TokenRegistry& registry, TokenClaims token)
      : registry_(registry), token_(token) {}
  Status Reserve(uint64_t) override {
    return Status::Internal("TokenRecordCharge is admitted with Admit");
  }
  std::optional<node::ChargeRefusal> Admit(const std::string& channel_id,
                                           const crypto::PublicKey& peer,
                                           uint64_t amount) override {
    TokenRefusal refusal;
    auto admitted = registry_.AdmitTip(token_, channel_id, peer.Hex(), amount, &refusal);
    if (admitted.ok()) {
      admission_ = std::move(*admitted);
      return std::nullopt;
    }
    node::ChargeRefusal out;
    out.kind = refusal.http_status == 429 && refusal.code == "TOKEN_RATE_LIMITED"
                   ? node::ChargeRefusal::Kind::kRateLimited
               : refusal.http_status == 429 ? node::ChargeRefusal::Kind::kBudget
                                            : node::ChargeRefusal::Kind::kNotAllowed;
    out.code = refusal.code == "SPEND_CAP_EXCEEDED" ? std::string() : refusal.code;
    out.message = refusal.message.empty() ? admitted.status().message() : refusal.message;
    out.retry_after_ms = refusal.retry_after_ms;
    return out;
  }
  void CommitToBatch(storage::WriteBatch* batch) override {
    if (admission_) admission_->CommitToBatch(batch);
  }

 private:
  TokenRegistry& registry_;
  TokenClaims token_;
  std::unique_ptr<TokenRegistry::TipAdmission> admission_;  // gives back unless committed
};

// The one place a tip refusal becomes an HTTP status and code.
int TipRefusalStatus(TipError error) {
  switch (error) {
    case TipError::kNotFound:
      return 404;
    case TipError::kInvalidArgument:
    case TipError::kChannelRule:
      return 400;
    case TipError::kIdempotencyKeyReused:
    case TipError::kChannelNotOpen:
    case TipError::kRefundRefused:
      return 409;
    case TipError::kSpendCapExceeded:
    case TipError::kQueueFull:
    case TipError::kAnomalyHold:
      return 429;
    case TipError::kPeerOffline:
    case TipError::kNodeReadOnly:
      return 503;
    case TipError::kInternal:
      return 500;
    case TipError::kNotAllowed:
      return 403;
    case TipError::kRateLimited:
      return 429;
  }
  return 500;
}

Result<std::string> ParseChannelId(const std::string& hex) {
  auto bytes = HexDecode(hex);
  if (!bytes.ok() || bytes->size() != 32) {
    return Status::InvalidArgument("channel id must be 64 hex characters, got '" + hex + "'");
  }
  return std::string(AsStringView(*bytes));
}

Result<TipRequestIn> ToTipRequest(const v1::TipRequest& in, const ApiRequest& req,
                                  SpendLimiter& spend, TokenRegistry* registry) {
  TipRequestIn out;
  if (in.channel_id().empty() == in.peer_node_id().empty()) {
    return Status::InvalidArgument("give exactly one of channel_id and peer_node_id");
  }
  if (!in.channel_id().empty()) {
    TIPD_ASSIGN_OR_RETURN(out.channel_id, ParseChannelId(in.channel_id()));
  } else {
    auto peer = crypto::PublicKey::FromHex(in.peer_node_id());
    if (!peer.ok()) {
      return Status::InvalidArgument("peer_node_id must be a 66-hex compressed public key");
    }
    out.peer = *peer;
  }
  if (in.amount() == 0) return Status::InvalidArgument("amount must be at least 1");
  out.draft.amount = in.amount();
  out.draft.message = in.message();
  for (const auto& [k, v] : in.metadata()) {
    // Refund links are made by POST /v1/tips/{channel_id}/{index}/refund only.
    if (k == node::kRefundOfKey) {
      return Status::InvalidArgument(
          "metadata key 'refund_of' is set by POST /v1/tips/{channel_id}/{index}/refund");
    }
    out.draft.metadata[k] = v;
  }
  out.idempotency_key = in.idempotency_key();
  // Keys belong to the token that used them.
  out.key_owner = req.token ? req.token->IdHex() : "-";
  if (req.token) out.charge = MakeTokenCharge(registry, spend, *req.token);
  return out;
}

constexpr int kMaxBatchTips = 1000;
constexpr const char* kProtobufContentType = "application/x-protobuf";

// "application/x-protobuf" (parameters and case ignored).
bool IsProtobuf(std::string_view content_type) {
  content_type = content_type.substr(0, content_type.find(';'));
  while (!content_type.empty() && content_type.back() == ' ') content_type.remove_suffix(1);
  if (content_type.size() != std::string_view(kProtobufContentType).size()) return false;
  for (size_t i = 0; i < content_type.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(content_type[i])) != kProtobufContentType[i]) {
      return false;
    }
  }
  return true;
}

// An Accept header that names application/x-protobuf among its types.
bool AcceptsProtobuf(std::string_view accept) {
  size_t start = 0;
  while (start <= accept.size()) {
    const size_t comma = accept.find(',', start);
    std::string_view item =
        accept.substr(start, comma == accept.npos ? accept.npos : comma - start);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    if (IsProtobuf(item)) return true;
    if (comma == accept.npos) break;
    start = comma + 1;
  }
  return false;
}

}  // namespace

ApiResponse TipAnswer(const TipOutcome& r) {
  if (r.refusal) {
    ApiResponse res = ApiResponse::Error(TipRefusalStatus(r.refusal->error), r.refusal->code(),
                                         r.refusal->message);
    if (r.refusal->retry_after_ms > 0) {
      res.headers.emplace_back("Retry-After",
                               std::to_string((r.refusal->retry_after_ms + 999) / 1000));
    }
    return res;
  }
  if (r.receipt && !r.response.has_receipt()) {
    v1::TipResponse with_receipt = r.response;
    *with_receipt.mutable_receipt() = *r.receipt;
    return ApiResponse::Json(with_receipt, r.acked ? 200 : 202);
  }
  return ApiResponse::Json(r.response, r.acked ? 200 : 202);
}

std::shared_ptr<node::TipCharge> MakeTokenCharge(TokenRegistry* registry, SpendLimiter& spend,
                                                 const TokenClaims& token) {
  // Every token's record is checked (restrictions, rate, cap); without a
  // registry, tokens with a daily cap are charged.
  if (registry != nullptr) return std::make_shared<TokenRecordCharge>(*registry, token);
  if (token.daily_cap != 0) return std::make_shared<TokenCapCharge>(spend, token);
  return nullptr;
}

void NodeApi::RegisterChannelRoutes(RpcServer& server) {
  auto sync = [this](ApiResponse (NodeApi::*fn)(const ApiRequest&)) {
    return [this, fn](const ApiRequest& req) { return (this->*fn)(req); };
  };
  auto async = [this](void (NodeApi::*fn)(ApiRequest, Responder)) {
    return [this, fn](ApiRequest req, Responder r) { (this->*fn)(std::move(req), r); };
  };
  server.HandleAsync(HttpMethod::kPost, "/v1/channels", RouteAuth::Needs(Scope::kAdmin),
                     async(&NodeApi::OpenChannel));
  server.Handle(HttpMethod::kGet, "/v1/channels", RouteAuth::Needs(Scope::kRead),
                sync(&NodeApi::ListChannels));
  server.Handle(HttpMethod::kGet, "/v1/channels/{id}", RouteAuth::Needs(Scope::kRead),
                sync(&NodeApi::GetChannel));
  server.HandleAsync(HttpMethod::kPost, "/v1/channels/{id}/deposit",
                     RouteAuth::Needs(Scope::kAdmin), async(&NodeApi::DepositChannel));
  server.HandleAsync(HttpMethod::kPost, "/v1/channels/{id}/close", RouteAuth::Needs(Scope::kAdmin),
                     async(&NodeApi::CloseChannel));
  server.HandleAsync(HttpMethod::kPost, "/v1/tips", RouteAuth::Needs(Scope::kTip),
                     async(&NodeApi::SendTip));
  // 1000 tips with 200-byte messages and metadata fit in 1 MiB; every other
  // route keeps the server's 64 KiB limit.
  server.HandleAsync(HttpMethod::kPost, "/v1/tips/batch", RouteAuth::Needs(Scope::kTip),
                     async(&NodeApi::SendTipBatch), RouteOptions{.max_body_bytes = 1 << 20});
  server.Handle(HttpMethod::kGet, "/v1/tips", RouteAuth::Needs(Scope::kRead),
                sync(&NodeApi::ListTips));
  RegisterStreamRoutes(server);
}

void NodeApi::OpenChannel(ApiRequest req, Responder responder) {
  v1::OpenChannelRequest in;
  if (Status st = ParseJson(req.body, &in); !st.ok()) {
    return responder.Send(ApiResponse::FromStatus(st));
  }
  auto peer = crypto::PublicKey::FromHex(in.peer_node_id());
  if (!peer.ok()) {
    return responder.Send(ApiResponse::Error(
        400, "INVALID_NODE_ID", "peer_node_id must be a 66-hex compressed public key"));
  }
  s_.channels->Open(*peer, in.deposit(), in.push_deposit(), in.settle_timeout(), channel_wait,
                    [responder](Result<v1::ChannelApi> ch, std::string) {
                      if (!ch.ok()) return responder.Send(ApiResponse::FromStatus(ch.status()));
                      v1::OpenChannelResponse out;
                      *out.mutable_channel() = *ch;
                      responder.Send(ApiResponse::Json(out, ch->state() == "open" ? 200 : 202));
                    });
}

ApiResponse NodeApi::ListChannels(const ApiRequest& req) {
  auto limit_it = req.query.find("limit");
  auto cursor_it = req.query.find("cursor");
  if (limit_it == req.query.end() && cursor_it == req.query.end()) {
    // No paging asked for: every channel, as before paging existed.
    v1::ListChannelsResponse out;
    for (v1::ChannelApi& c : s_.channels->ListChannels()) *out.add_channels() = std::move(c);
    return ApiResponse::Json(out);
  }
  uint32_t limit = 100;
  if (limit_it != req.query.end() && !limit_it->second.empty()) {
    const std::string& text = limit_it->second;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), limit);
    if (ec != std::errc() || ptr != text.data() + text.size() || limit == 0 || limit > 1000) {
      return ApiResponse::Error(400, "invalid_argument", "limit must be 1..1000");
    }
  }
  auto page = s_.channels->ListChannelsPage(
      limit, cursor_it == req.query.end() ? std::string() : cursor_it->second);
  if (!page.ok()) return ApiResponse::FromStatus(page.status());
  return ApiResponse::Json(*page);
}

ApiResponse NodeApi::GetChannel(const ApiRequest& req) {
  auto id = ParseChannelId(req.params.at("id"));
  if (!id.ok()) return ApiResponse::FromStatus(id.status());
  auto ch = s_.channels->GetChannel(*id);
  if (!ch.ok()) return ApiResponse::FromStatus(ch.status());
  v1::GetChannelResponse out;
  *out.mutable_channel() = *ch;
  return ApiResponse::Json(out);
}

void NodeApi::DepositChannel(ApiRequest req, Responder responder) {
  auto id = ParseChannelId(req.params.at("id"));
  if (!id.ok()) return responder.Send(ApiResponse::FromStatus(id.status()));
  v1::DepositRequest in;
  if (Status st = ParseJson(req.body, &in); !st.ok()) {
    return responder.Send(ApiResponse::FromStatus(st));
  }
  s_.channels->Deposit(*id, in.amount(), channel_wait,
                       [responder](Result<v1::ChannelApi> ch, std::string tx_id) {
                         if (!ch.ok()) return responder.Send(ApiResponse::FromStatus(ch.status()));
                         v1::DepositResponse out;
                         *out.mutable_channel() = *ch;
                         out.set_tx_id(tx_id);
                         responder.Send(ApiResponse::Json(out));
                       });
}

void NodeApi::CloseChannel(ApiRequest req, Responder responder) {
  auto id = ParseChannelId(req.params.at("id"));
  if (!id.ok()) return responder.Send(ApiResponse::FromStatus(id.status()));
  v1::CloseChannelRequest in;
  if (Status st = ParseJson(req.body, &in); !st.ok()) {
    return responder.Send(ApiResponse::FromStatus(st));
  }
  s_.channels->Close(*id, in.force(), channel_wait,
                     [responder](Result<v1::ChannelApi> ch, std::string tx_id) {
                       if (!ch.ok()) return responder.Send(ApiResponse::FromStatus(ch.status()));
                       v1::CloseChannelResponse out;
                       *out.mutable_channel() = *ch;
                       out.set_tx_id(tx_id);
                       responder.Send(ApiResponse::Json(out, ch->state() == "closed" ? 200 : 202));
                     });
}

// The JSON body is parsed and the answer rendered on the work pool; the io
// thread checks the request against node state and queues the tip.
void NodeApi::SendTip(ApiRequest req, Responder responder) {
  struct Parsed {
    std::string body;
    v1::TipRequest in;
    Status status;
  };
  auto p = std::make_shared<Parsed>();
  p->body = std::move(req.body);
  const size_t body_bytes = p->body.size();
  OffIoThread(
      body_bytes, [p] { p->status = ParseJson(p->body, &p->in); },
      [this, alive = std::weak_ptr<bool>(alive_), p, req = std::move(req),
       responder = std::move(responder)]() mutable {
        if (alive.expired()) return;
        if (!p->status.ok()) return responder.Send(ApiResponse::FromStatus(p->status));
        auto tip = ToTipRequest(p->in, req, *s_.spend, s_.registry);
        if (!tip.ok()) return responder.Send(ApiResponse::FromStatus(tip.status()));
        s_.channels->SendTip(std::move(*tip), [this, alive, responder](TipOutcome r) {
          if (alive.expired()) return responder.Send(TipAnswer(r));
          auto outcome = std::make_shared<TipOutcome>(std::move(r));
          auto answer = std::make_shared<ApiResponse>();
          // One tip's answer: its message and metadata, a receipt.
          const size_t answer_bytes = 1024 + outcome->response.ByteSizeLong();
          OffIoThread(
              answer_bytes,
              [outcome, answer]() mutable {
                *answer = TipAnswer(*outcome);
                outcome.reset();
              },
              [answer, responder] { responder.Send(std::move(*answer)); });
        });
      });
}

void NodeApi::OffIoThread(size_t bytes, std::function<void()> work, std::function<void()> then) {
  if (s_.work == nullptr || bytes <= kInlineWorkBytes) {
    work();
    then();
    return;
  }
  net::post(*s_.work, [io = &s_.io, work = std::move(work), then = std::move(then)]() mutable {
    work();
    net::post(*io, std::move(then));
  });
}

// The body (up to 1 MiB of JSON) is parsed on the work pool: the io thread
// only routes it and queues the tips.
void NodeApi::SendTipBatch(ApiRequest req, Responder responder) {
  struct Parsed {
    std::string body;
    bool proto_in = false;
    v1::TipBatchRequest in;
    std::optional<ApiResponse> error;
  };
  auto p = std::make_shared<Parsed>();
  p->body = std::move(req.body);
  p->proto_in = IsProtobuf(req.Header("content-type"));
  const size_t body_bytes = p->body.size();
  OffIoThread(
      body_bytes,
      [p] {
        if (p->proto_in) {
          if (!p->in.ParseFromString(p->body)) {
            p->error =
                ApiResponse::Error(400, "invalid_argument",
                                   "the body is not a valid tipd.v1.TipBatchRequest protobuf");
          }
        } else if (Status st = ParseJson(p->body, &p->in); !st.ok()) {
          p->error = ApiResponse::FromStatus(st);
        }
        p->body.clear();
        p->body.shrink_to_fit();
      },
      [this, alive = std::weak_ptr<bool>(alive_), p, req = std::move(req),
       responder = std::move(responder)]() mutable {
        if (alive.expired()) return;
        if (p->error) return responder.Send(std::move(*p->error));
        SendParsedTipBatch(std::move(req), std::move(responder), p->in);
      });
}

void NodeApi::SendParsedTipBatch(ApiRequest req, Responder responder, v1::TipBatchRequest& in) {
  if (in.tips_size() == 0 || in.tips_size() > kMaxBatchTips) {
    return responder.Send(
        ApiResponse::Error(400, "invalid_argument", "a batch holds 1 to 1000 tips"));
  }
  bool compact = in.compact();
  if (auto a = req.query.find("answer"); a != req.query.end()) {
    if (a->second != "compact" && a->second != "full") {
      return responder.Send(ApiResponse::Error(
          400, "invalid_argument", "answer must be 'compact' or 'full', got '" + a->second + "'"));
    }
    compact = compact || a->second == "compact";
  }
  const bool proto_out = AcceptsProtobuf(req.Header("accept"));
  // Every tip is checked before any is queued: a bad one refuses the batch.
  std::vector<TipRequestIn> tips;
  tips.reserve(static_cast<size_t>(in.tips_size()));
  for (int i = 0; i < in.tips_size(); ++i) {
    auto tip = ToTipRequest(in.tips(i), req, *s_.spend, s_.registry);
    if (!tip.ok()) {
      return responder.Send(ApiResponse::Error(
          400, "invalid_argument", "tips[" + std::to_string(i) + "]: " + tip.status().message()));
    }
    tips.push_back(std::move(*tip));
  }
  // Results come back in request order; each tip succeeds or fails alone
  // (the ones before a refused tip stay paid).
  struct Gather {
    bool compact = false;
    bool proto_out = false;
    v1::TipBatchResponse full;
    v1::TipBatchCompactResponse brief;
    // (channel id hex, nonce) of the receipts already in `brief`.
    std::set<std::pair<std::string, uint64_t>> receipts_seen;
    std::vector<TipOutcome> outcomes;  // compact: filled as answers arrive
    size_t remaining = 0;
  };
  auto g = std::make_shared<Gather>();
  g->compact = compact;
  g->proto_out = proto_out;
  g->remaining = tips.size();
  if (compact) {
    g->outcomes.resize(tips.size());
  } else {
    for (size_t i = 0; i < tips.size(); ++i) g->full.add_results();
  }
  auto finish = [](Gather& g) -> const google::protobuf::Message* {
    const google::protobuf::Message* out = &g.full;
    if (g.compact) {
      // Receipts in order of first appearance, so walk in request order.
      for (size_t i = 0; i < g.outcomes.size(); ++i) {
        TipOutcome& r = g.outcomes[i];
        v1::TipBatchCompactResult& line = *g.brief.add_results();
        line.set_index(static_cast<uint32_t>(i));
        if (r.refusal) {
          line.set_status("refused");
          line.set_error_code(r.refusal->code());
          line.set_error_message(r.refusal->message);
          continue;
        }
        const v1::TipApi& tip = r.response.tip();
        line.set_nonce(tip.nonce());
        line.set_tip_index(tip.tip().index());
        line.set_channel_id(tip.channel_id());
        line.set_status(r.acked ? "acked" : "pending");
        const v1::TipReceiptApi* receipt = r.acked ? r.Receipt() : nullptr;
        if (receipt != nullptr &&
            g.receipts_seen.emplace(receipt->channel_id(), receipt->nonce()).second) {
          *g.brief.add_receipts() = *receipt;
        }
      }
      out = &g.brief;
    }
    return out;
  };
  // The answer (up to ~1 MB of JSON for 1,000 tips in full) is rendered on
  // the work pool; the io thread only sends it.
  const size_t answer_bytes = tips.size() * (compact ? 200 : 1200);  // per tip, about
  auto render = [this, finish, answer_bytes](std::shared_ptr<Gather> g, Responder responder) {
    const google::protobuf::Message* out = finish(*g);
    auto body = std::make_shared<std::string>();
    const bool proto_out = g->proto_out;
    // `g` (a thousand tips and their answers) is freed on the pool too.
    OffIoThread(
        answer_bytes,
        [g = std::move(g), out, body]() mutable {
          *body = g->proto_out ? out->SerializeAsString() : ToJson(*out);
          g.reset();
        },
        [proto_out, body, responder = std::move(responder)] {
          responder.Send(ApiResponse::Text(
              200, proto_out ? kProtobufContentType : "application/json", std::move(*body)));
        });
  };
  for (size_t i = 0; i < tips.size(); ++i) {
    s_.channels->SendTip(std::move(tips[i]), [g, i, responder, render](TipOutcome r) {
      if (g->compact) {
        g->outcomes[i] = std::move(r);
      } else {
        v1::TipResponse& slot = *g->full.mutable_results(static_cast<int>(i));
        if (!r.refusal) {
          slot = r.TakeResponse();
        } else {
          slot.mutable_tip()->set_direction("sent");
          slot.set_error_code(r.refusal->code());
          slot.set_error_message(r.refusal->message);
        }
      }
      if (--g->remaining == 0) render(g, responder);
    });
  }
}

ApiResponse NodeApi::ListTips(const ApiRequest& req) {
  auto q = [&](const char* name) -> std::string {
    auto it = req.query.find(name);
    return it == req.query.end() ? std::string() : it->second;
  };
  std::string channel_id;
  if (!q("channel_id").empty()) {
    auto id = ParseChannelId(q("channel_id"));
    if (!id.ok()) return ApiResponse::FromStatus(id.status());
    channel_id = *id;
  }
  uint32_t limit = 0;
  if (const std::string text = q("limit"); !text.empty()) {
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), limit);
    if (ec != std::errc() || ptr != text.data() + text.size()) {
      return ApiResponse::Error(400, "invalid_argument", "limit must be a decimal number");
    }
  }
  auto page = s_.channels->ListTips(q("direction"), channel_id, limit, q("cursor"));
  if (!page.ok()) return ApiResponse::FromStatus(page.status());
  return ApiResponse::Json(*page);
}

}  // namespace tipd::api
