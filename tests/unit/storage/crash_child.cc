// Usage: tipd_storage_crash_child <db_dir> <round>
//
// Opens the database and, from kThreads threads, submits records through a
// GroupCommitter forever. After a record's completion has fired OK (and only
// then) it writes the record's 8-byte sequence number to stdout, which the
// parent reads from a pipe. The parent ends it with SIGKILL.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <semaphore>
#include <string>
#include <thread>
#include <vector>

#include "storage/storage.h"
#include "tests/unit/storage/crash_layout.h"

namespace {

using namespace tipd::storage;
using namespace tipd::storage::crashtest;

void WriteAck(uint64_t seq) {
  const char* p = reinterpret_cast<const char*>(&seq);
  size_t left = sizeof(seq);
  while (left > 0) {
    ssize_t n = ::write(STDOUT_FILENO, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) std::_Exit(4);  // parent gone
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <db_dir> <round>\n", argv[0]);
    return 2;
  }
  const uint32_t round = static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 10));
  auto db = Database::Open(argv[1]);
  if (!db.ok()) {
    std::fprintf(stderr, "open: %s\n", db.status().ToString().c_str());
    return 3;
  }
  GroupCommitter committer(db->get());

  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&committer, round, t] {
      std::counting_semaphore<kInFlightPerThread> slots(kInFlightPerThread);
      for (uint32_t i = 0;; ++i) {
        slots.acquire();
        const uint64_t seq = MakeSeq(round, t, i);
        committer.Submit(RecordBatch(seq), [seq, &slots](tipd::Status s) {
          if (!s.ok()) {
            std::fprintf(stderr, "commit: %s\n", s.ToString().c_str());
            std::_Exit(5);
          }
          WriteAck(seq);
          slots.release();
        });
      }
    });
  }
  for (auto& t : threads) t.join();  // never returns: killed by the parent
  return 0;
}
