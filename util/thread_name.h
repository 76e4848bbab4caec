// Names the calling thread, as `top -H`, `ps -L`, perf and /proc/PID/task/*/comm
// show it. The node's threads: "tipd" (the io thread: network, API, channel
// state), "tipd-commit" (the group committer's synced writes), "tipd-work"
// (the API's work pool), "tipd-leveldb" (LevelDB's compactions),
// "tipd-backup" (a running backup). Linux keeps 15 bytes of a name.
#pragma once

#include <string>
#include <string_view>

namespace tipd {

void SetThreadName(std::string_view name);

// The calling thread's name ("" where the platform cannot say).
std::string CurrentThreadName();

}  // namespace tipd
