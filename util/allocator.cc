#include "util/allocator.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace tipd {
namespace {

MallctlFunction g_mallctl = nullptr;

// MALLCTL_ARENAS_ALL (jemalloc.h): "arena.4096.purge" purges every arena.
constexpr const char* kPurgeAllArenas = "arena.4096.purge";

}  // namespace

void UseJemalloc(MallctlFunction mallctl) { g_mallctl = mallctl; }

std::string AllocatorName() {
  if (g_mallctl == nullptr) return "glibc malloc";
  const char* version = nullptr;
  size_t size = sizeof(version);
  if (g_mallctl("version", &version, &size, nullptr, 0) != 0 || version == nullptr) {
    return "jemalloc";
  }
  return std::string("jemalloc ") + version;
}

void ReleaseFreeMemory() {
  if (g_mallctl != nullptr) {
    g_mallctl(kPurgeAllArenas, nullptr, nullptr, nullptr, 0);
    return;
  }
#if defined(__GLIBC__)
  ::malloc_trim(0);
#endif
}

}  // namespace tipd
