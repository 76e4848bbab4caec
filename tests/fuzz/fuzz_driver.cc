// A stand-in for libFuzzer's main() on compilers without -fsanitize=fuzzer:
// replays the given input files through LLVMFuzzerTestOneInput, or with
// `--random N [--seed S]` feeds N pseudo-random inputs (lengths 0..512). The
// ctest smoke runs use the latter, so every fuzz target is built and run in
// CI (under ASan/UBSan in the sanitizer pass) even without clang.
//
// Like every randomized test, the seed comes from `--seed`, else from
// $TIPD_TEST_SEED, else is fresh; it is printed (and flushed) before the first
// input, so a run that crashes can be replayed with TIPD_TEST_SEED=<seed>.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  uint64_t random_runs = 0, seed = 0;
  bool seed_given = false;
  if (const char* env = std::getenv("TIPD_TEST_SEED")) {
    seed = std::strtoull(env, nullptr, 10);
    seed_given = true;
  }
  std::vector<const char*> files;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--random") == 0 && i + 1 < argc) {
      random_runs = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
      seed_given = true;
    } else {
      files.push_back(argv[i]);
    }
  }
  if (!seed_given) {
    std::random_device rd;
    seed = (static_cast<uint64_t>(rd()) << 32) | rd();
  }
  for (const char* f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", f);
      return 2;
    }
    std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), {});
    LLVMFuzzerTestOneInput(data.data(), data.size());
  }
  std::printf("fuzz driver: TIPD_TEST_SEED=%llu, %llu random inputs, %zu files\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(random_runs),
              files.size());
  std::fflush(stdout);  // a crashing input must not take the seed with it
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> buf;
  for (uint64_t r = 0; r < random_runs; ++r) {
    buf.resize(rng() % 513);
    for (auto& b : buf) b = static_cast<uint8_t>(rng());
    LLVMFuzzerTestOneInput(buf.data(), buf.size());
  }
  std::printf("fuzz driver: no crash\n");
  return 0;
}
