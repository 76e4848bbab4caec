#include "api/openapi.h"

#include <string>

#include "api/rpc_server.h"

namespace tipd::api {

// Defined in the file api/CMakeLists.txt generates from docs/openapi.json.
extern const unsigned char kOpenApiJson[];
extern const size_t kOpenApiJsonSize;

std::string_view OpenApiDocument() {
  return std::string_view(reinterpret_cast<const char*>(kOpenApiJson), kOpenApiJsonSize);
}

void RegisterOpenApiRoute(RpcServer& server) {
  // Public like /healthz: the contract holds nothing secret, and clients
  // generate code from it before they have a token.
  server.Handle(HttpMethod::kGet, "/v1/openapi.json", RouteAuth::Public(), [](const ApiRequest&) {
    ApiResponse r = ApiResponse::Text(200, "application/json", std::string(OpenApiDocument()));
    r.headers.emplace_back("Cache-Control", "no-cache");
    return r;
  });
}

}  // namespace tipd::api
