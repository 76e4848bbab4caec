// Real child processes for integration tests: the shared ChildProcess of
// tools/process.h (also what `tipd devnet` starts its ledger and nodes with),
// used here with its output captured; plus a free loopback port.
#pragma once

#include <cstdint>

#include "tools/process.h"

namespace tipd::testing {

// Process::Start(argv, log_path, &error) starts a binary with its output
// captured and appended to log_path; WaitForOutput / Wait / Signal / Output.
using Process = tools::ChildProcess;

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then
// released). Good enough on a test machine.
uint16_t FreeLoopbackPort();

}  // namespace tipd::testing
