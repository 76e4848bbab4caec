// NodeApi's analytics and anomaly routes (docs/api.md, "Stats" and
// "Anomalies"): GET /v1/stats over the channel manager's StatsIndex, and the
// anomaly records and holds of node/anomaly.h.
#include <charconv>

#include "api/node_api.h"
#include "node/anomaly.h"
#include "node/stats.h"
#include "tipd/api.pb.h"

namespace tipd::api {

namespace {

// A decimal query parameter; nullopt when absent, an error when malformed.
Result<std::optional<uint64_t>> QueryU64(const ApiRequest& req, const char* name) {
  auto it = req.query.find(name);
  if (it == req.query.end() || it->second.empty()) return std::optional<uint64_t>();
  const std::string& text = it->second;
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return Status::InvalidArgument(
        std::string(name) + " must be a decimal number of Unix milliseconds, got '" + text + "'");
  }
  return std::optional<uint64_t>(v);
}

}  // namespace

void NodeApi::RegisterStatsRoutes(RpcServer& server) {
  server.Handle(HttpMethod::kGet, "/v1/stats", RouteAuth::Needs(Scope::kRead),
                [this](const ApiRequest& req) { return Stats(req); });
  if (s_.anomalies == nullptr) return;
  server.Handle(HttpMethod::kGet, "/v1/anomalies", RouteAuth::Needs(Scope::kRead),
                [this](const ApiRequest& req) { return ListAnomalies(req); });
  server.HandleAsync(HttpMethod::kPost, "/v1/anomalies/{id}/release",
                     RouteAuth::Needs(Scope::kAdmin),
                     [this](ApiRequest req, Responder r) { ReleaseAnomaly(std::move(req), r); });
}

ApiResponse NodeApi::Stats(const ApiRequest& req) {
  auto from = QueryU64(req, "from_ms");
  if (!from.ok()) return ApiResponse::Error(400, "BAD_ARGUMENT", from.status().message());
  auto to = QueryU64(req, "to_ms");
  if (!to.ok()) return ApiResponse::Error(400, "BAD_ARGUMENT", to.status().message());
  std::string group_text;
  if (auto it = req.query.find("group_by"); it != req.query.end()) group_text = it->second;
  auto group_by = node::ParseStatsGroupBy(group_text);
  if (!group_by.ok()) return ApiResponse::Error(400, "BAD_ARGUMENT", group_by.status().message());
  // Defaults: up to now, the last 30 days.
  const uint64_t now = static_cast<uint64_t>(s_.clock.NowMs());
  const uint64_t to_ms = to->value_or(now + 1);
  constexpr uint64_t kDefaultSpan = 30ull * 24 * 3600 * 1000;
  const uint64_t from_ms = from->value_or(to_ms > kDefaultSpan ? to_ms - kDefaultSpan : 0);
  if (from_ms >= to_ms) {
    return ApiResponse::Error(400, "BAD_RANGE",
                              "from_ms (" + std::to_string(from_ms) + ") must be before to_ms (" +
                                  std::to_string(to_ms) + ")");
  }
  if (to_ms - from_ms > node::kMaxStatsRangeMs) {
    return ApiResponse::Error(400, "BAD_RANGE",
                              "the range spans " + std::to_string((to_ms - from_ms) / 86'400'000) +
                                  " days; at most 400 days per query");
  }
  return ApiResponse::Json(s_.channels->stats().Query(from_ms, to_ms, *group_by));
}

ApiResponse NodeApi::ListAnomalies(const ApiRequest& req) {
  size_t limit = 100;
  if (auto it = req.query.find("limit"); it != req.query.end() && !it->second.empty()) {
    const std::string& text = it->second;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), limit);
    if (ec != std::errc() || ptr != text.data() + text.size() || limit == 0 || limit > 1000) {
      return ApiResponse::Error(400, "BAD_ARGUMENT", "limit must be 1..1000");
    }
  }
  auto list = s_.anomalies->List(limit);
  if (!list.ok()) return ApiResponse::FromStatus(list.status());
  v1::ListAnomaliesResponse out;
  for (v1::Anomaly& a : *list) *out.add_anomalies() = std::move(a);
  return ApiResponse::Json(out);
}

void NodeApi::ReleaseAnomaly(ApiRequest req, Responder responder) {
  s_.anomalies->Release(req.params.at("id"), [responder](Result<v1::Anomaly> a) {
    if (!a.ok()) {
      if (a.status().code() == StatusCode::kNotFound) {
        return responder.Send(ApiResponse::Error(404, "ANOMALY_NOT_FOUND", a.status().message()));
      }
      if (a.status().code() == StatusCode::kFailedPrecondition) {
        return responder.Send(ApiResponse::Error(409, "ANOMALY_NOT_HELD", a.status().message()));
      }
      return responder.Send(ApiResponse::FromStatus(a.status()));
    }
    v1::ReleaseAnomalyResponse out;
    *out.mutable_anomaly() = *a;
    responder.Send(ApiResponse::Json(out));
  });
}

}  // namespace tipd::api
