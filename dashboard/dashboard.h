// The live dashboard's web page (dashboard/README.md, docs/dashboard.md),
// built into the tipd binary and served by the node's API server.
//
// The page's files (dashboard/index.html, app.css, js/*.js and the vendored
// uPlot chart library) are turned into byte arrays at build time by
// dashboard/embed_assets.cmake: no network, no npm and no files to install
// beside the binary. `RegisterDashboardRoutes` serves them without a token
// (they hold no data; the page asks the user for a token and calls the API
// with it, same origin), each with its content type, a strict
// Content-Security-Policy and an ETag for revalidation.
#pragma once

#include <span>
#include <string_view>

namespace tipd::api {
class RpcServer;
}  // namespace tipd::api

namespace tipd::dashboard {

// One embedded file. Every view points into static storage.
struct Asset {
  std::string_view url_path;      // e.g. "/dashboard/js/app.js"
  std::string_view content_type;  // e.g. "text/javascript; charset=utf-8"
  std::string_view etag;          // quoted: "\"<sha-256 prefix of the body>\""
  std::string_view body;
};

// Every embedded file, in the order dashboard/CMakeLists.txt lists them.
// Defined in the generated dashboard_assets.cc.
std::span<const Asset> Assets();

// The response headers every dashboard file carries (CSP, nosniff, ...).
// Exposed for the tests that check them.
inline constexpr std::string_view kContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// Registers GET for each asset's url_path, and GET / for the page itself
// (index.html). Public routes (RouteAuth::Public): no token needed.
// A request whose If-None-Match names the asset's ETag gets 304.
void RegisterDashboardRoutes(api::RpcServer& server);

}  // namespace tipd::dashboard
