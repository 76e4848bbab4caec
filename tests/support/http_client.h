// A minimal blocking HTTP/1.1 client for tests against a real server on
// loopback: one request per connection (Connection: close), with a deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tipd::testing {

struct HttpResult {
  int status = 0;  // 0: no answer (connect failed or timed out)
  std::string headers;
  std::string body;
};

HttpResult HttpRequest(uint16_t port, const std::string& method, const std::string& path,
                       const std::string& bearer_token = "", const std::string& body = "",
                       std::chrono::milliseconds timeout = std::chrono::seconds(30));
// The same with extra request headers (a Content-Type among them replaces
// the default application/json).
HttpResult HttpRequest(uint16_t port, const std::string& method, const std::string& path,
                       const std::string& bearer_token, const std::string& body,
                       const std::vector<std::pair<std::string, std::string>>& headers,
                       std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace tipd::testing
