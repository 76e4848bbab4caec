#include "tests/support/process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace tipd::testing {

ClosedLoopbackPort::ClosedLoopbackPort() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::fprintf(stderr, "ClosedLoopbackPort: cannot bind 127.0.0.1:0: %s\n", std::strerror(errno));
    std::abort();
  }
  port_ = ntohs(addr.sin_port);
}

ClosedLoopbackPort::~ClosedLoopbackPort() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace tipd::testing
