// NodeApi's refund and stream routes (docs/api.md "Refunds", "Streams").
#include <charconv>
#include <memory>

#include "api/node_api.h"
#include "tipd/api.pb.h"

namespace tipd::api {

using node::StreamError;
using node::StreamOwner;
using node::TipOutcome;
using node::TipRequestIn;

namespace {

StreamOwner OwnerOf(const ApiRequest& req) {
  StreamOwner o;
  if (!req.token) return o;
  o.token_id.assign(req.token->id.begin(), req.token->id.end());
  o.scopes = req.token->scopes;
  o.expires_at_ms = req.token->expires_at_ms;
  o.daily_cap = req.token->daily_cap;
  o.admin = (req.token->scopes & static_cast<uint32_t>(Scope::kAdmin)) != 0;
  return o;
}

node::StreamResult StreamAnswer(Responder responder, int ok_status = 200) {
  return [responder, ok_status](const v1::Stream* stream, const StreamError* error) {
    if (error != nullptr) {
      return responder.Send(ApiResponse::Error(error->http, error->code, error->message));
    }
    responder.Send(ApiResponse::Json(*stream, ok_status));
  };
}

}  // namespace

void NodeApi::RegisterStreamRoutes(RpcServer& server) {
  server.HandleAsync(HttpMethod::kPost, "/v1/tips/{channel_id}/{index}/refund",
                     RouteAuth::Needs(Scope::kReceive),
                     [this](ApiRequest req, Responder r) { RefundTip(std::move(req), r); });
  if (s_.streams == nullptr) return;
  server.HandleAsync(HttpMethod::kPost, "/v1/streams", RouteAuth::Needs(Scope::kTip),
                     [this](ApiRequest req, Responder r) { CreateStream(std::move(req), r); });
  server.Handle(HttpMethod::kGet, "/v1/streams", RouteAuth::Needs(Scope::kTip),
                [this](const ApiRequest& req) { return ListStreams(req); });
  server.Handle(HttpMethod::kGet, "/v1/streams/{id}", RouteAuth::Needs(Scope::kTip),
                [this](const ApiRequest& req) { return GetStream(req); });
  for (const char* action : {"pause", "resume", "stop"}) {
    server.HandleAsync(HttpMethod::kPost, std::string("/v1/streams/{id}/") + action,
                       RouteAuth::Needs(Scope::kTip),
                       [this, action = std::string(action)](ApiRequest req, Responder r) {
                         ControlStream(std::move(req), r, action);
                       });
  }
}

void NodeApi::RefundTip(ApiRequest req, Responder responder) {
  v1::RefundRequest in;
  if (!req.body.empty()) {
    if (Status st = ParseJson(req.body, &in); !st.ok()) {
      return responder.Send(ApiResponse::FromStatus(st));
    }
  }
  auto id = HexDecode(req.params.at("channel_id"));
  if (!id.ok() || id->size() != 32) {
    return responder.Send(
        ApiResponse::Error(400, "INVALID_ARGUMENT", "channel id must be 64 hex characters"));
  }
  const std::string& text = req.params.at("index");
  uint64_t index = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), index);
  if (ec != std::errc() || ptr != text.data() + text.size() || index == 0) {
    return responder.Send(
        ApiResponse::Error(400, "INVALID_ARGUMENT", "index must be a tip index (1, 2, ...)"));
  }
  TipRequestIn tip;
  tip.channel_id = std::string(AsStringView(*id));
  tip.draft.amount = in.amount();
  tip.draft.message = in.message();
  tip.idempotency_key = in.idempotency_key();
  // Refund keys live apart from tip keys of the same token.
  tip.key_owner = "refund/" + (req.token ? req.token->IdHex() : std::string("-"));
  if (req.token) tip.charge = MakeTokenCharge(s_.registry, *s_.spend, *req.token);
  s_.channels->Refund(std::move(tip), index,
                      [responder](TipOutcome r) { responder.Send(TipAnswer(r)); });
}

void NodeApi::CreateStream(ApiRequest req, Responder responder) {
  v1::CreateStreamRequest in;
  if (Status st = ParseJson(req.body, &in); !st.ok()) {
    return responder.Send(ApiResponse::FromStatus(st));
  }
  s_.streams->Create(in, OwnerOf(req), StreamAnswer(responder, 201));
}

ApiResponse NodeApi::ListStreams(const ApiRequest& req) {
  v1::ListStreamsResponse out;
  for (v1::Stream& s : s_.streams->List(OwnerOf(req))) *out.add_streams() = std::move(s);
  return ApiResponse::Json(out);
}

ApiResponse NodeApi::GetStream(const ApiRequest& req) {
  ApiResponse answer = ApiResponse::Error(500, "INTERNAL", "no answer");
  s_.streams->Get(req.params.at("id"), OwnerOf(req),
                  [&answer](const v1::Stream* stream, const StreamError* error) {
                    answer = error ? ApiResponse::Error(error->http, error->code, error->message)
                                   : ApiResponse::Json(*stream);
                  });
  return answer;
}

void NodeApi::ControlStream(ApiRequest req, Responder responder, const std::string& action) {
  s_.streams->Control(req.params.at("id"), action, OwnerOf(req), StreamAnswer(responder));
}

}  // namespace tipd::api
