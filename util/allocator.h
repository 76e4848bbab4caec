// The memory allocator the process runs on. The tipd binary is linked with
// jemalloc unless built with sanitizers (CMake TIPD_JEMALLOC; docs/
// performance.md "The allocator"): its main() calls UseJemalloc. Test
// binaries and sanitizer builds run on glibc's malloc.
#pragma once

#include <cstddef>
#include <string>

namespace tipd {

// jemalloc's mallctl (its control interface).
using MallctlFunction = int (*)(const char*, void*, size_t*, void*, size_t);

// Says the process runs on jemalloc; called once by main() before any
// other thread starts.
void UseJemalloc(MallctlFunction mallctl);

// "jemalloc 5.3.0-..." or "glibc malloc", for the startup log line.
std::string AllocatorName();

// Hands memory the process has freed back to the kernel, once (after a
// restore freed its temporaries): jemalloc purges every arena's unused
// pages, glibc trims its heap (malloc_trim). Costs a few milliseconds.
void ReleaseFreeMemory();

}  // namespace tipd
