// Real child processes for integration tests: the shared ChildProcess of
// tools/process.h (also what `tipd devnet` starts its ledger and nodes with),
// used here with its output captured; plus a loopback port that is held
// closed.
//
// There is deliberately no "free port" helper: a port found free and then
// released can be taken by a parallel test (ctest -j) before it is used.
// Processes under test bind port 0 and report the bound port (the ledger and
// node log "listening on 127.0.0.1:PORT", nodes write <datadir>/rpc.url);
// tests/integration/harness.h reads it from there.
#pragma once

#include <cstdint>

#include "tools/process.h"

namespace tipd::testing {

// Process::Start(argv, log_path, &error) starts a binary with its output
// captured and appended to log_path; WaitForOutput / Wait / Signal / Output.
using Process = tools::ChildProcess;

// A TCP port on 127.0.0.1 that nobody listens on for as long as this object
// lives: a socket is bound to it (without SO_REUSEADDR) but never listens,
// so a connection to it is refused and no other process can bind it. For
// "nobody is there" tests (an unreachable peer, API or ledger).
class ClosedLoopbackPort {
 public:
  ClosedLoopbackPort();  // aborts the test binary if no port can be bound
  ~ClosedLoopbackPort();
  ClosedLoopbackPort(const ClosedLoopbackPort&) = delete;
  ClosedLoopbackPort& operator=(const ClosedLoopbackPort&) = delete;

  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

}  // namespace tipd::testing
