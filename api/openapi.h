// The API contract: docs/openapi.json (OpenAPI 3.1), compiled into the binary
// at build time (api/CMakeLists.txt embeds the file; no network, no
// converter) and served without a token at GET /v1/openapi.json.
#pragma once

#include <string_view>

namespace tipd::api {

class RpcServer;

// The bytes of docs/openapi.json as the binary was built with it.
std::string_view OpenApiDocument();

// GET /v1/openapi.json (public): the document, application/json.
void RegisterOpenApiRoute(RpcServer& server);

}  // namespace tipd::api
