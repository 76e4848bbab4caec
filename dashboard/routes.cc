#include "api/rpc_server.h"
#include "dashboard/dashboard.h"

namespace tipd::dashboard {
namespace {

// True if an If-None-Match header value names `etag` (a list of entity
// tags, or "*"). Weak tags ("W/...") compare by their opaque part, as
// RFC 9110 asks for If-None-Match.
bool IfNoneMatchHits(std::string_view header, std::string_view etag) {
  size_t pos = 0;
  while (pos < header.size()) {
    size_t comma = header.find(',', pos);
    std::string_view tag = header.substr(pos, comma == header.npos ? header.npos : comma - pos);
    pos = comma == header.npos ? header.size() : comma + 1;
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    if (tag == "*" || tag == etag) return true;
  }
  return false;
}

api::ApiResponse Serve(const Asset& asset, const api::ApiRequest& req) {
  api::ApiResponse r;
  r.content_type = std::string(asset.content_type);
  if (IfNoneMatchHits(req.Header("if-none-match"), asset.etag)) {
    r.status = 304;
  } else {
    r.status = 200;
    r.body = std::string(asset.body);
  }
  // no-cache: the browser may keep a copy but asks each time (a 304 costs a
  // few bytes), so a node upgrade never mixes old and new files.
  r.headers = {
      {"Cache-Control", "no-cache"},
      {"ETag", std::string(asset.etag)},
      {"Content-Security-Policy", std::string(kContentSecurityPolicy)},
      {"X-Content-Type-Options", "nosniff"},
      {"X-Frame-Options", "DENY"},
      {"Referrer-Policy", "no-referrer"},
      {"Cross-Origin-Opener-Policy", "same-origin"},
      {"Cross-Origin-Resource-Policy", "same-origin"},
  };
  return r;
}

}  // namespace

void RegisterDashboardRoutes(api::RpcServer& server) {
  for (const Asset& asset : Assets()) {
    auto handler = [&asset](const api::ApiRequest& req) { return Serve(asset, req); };
    server.Handle(api::HttpMethod::kGet, asset.url_path, api::RouteAuth::Public(), handler);
    if (asset.url_path == "/dashboard/index.html") {
      server.Handle(api::HttpMethod::kGet, "/", api::RouteAuth::Public(), handler);
    }
  }
}

}  // namespace tipd::dashboard
