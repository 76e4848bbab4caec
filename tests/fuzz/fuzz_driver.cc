// A stand-in for libFuzzer's main() on compilers without -fsanitize=fuzzer.
//
//   fuzz_<target> [--random N] [--seed S] [FILE|DIR]...
//
// Replays every given file, and every file under every given directory (in
// sorted order), through LLVMFuzzerTestOneInput; then feeds N more inputs:
// with a corpus, half of them are corpus files mutated (bytes flipped,
// replaced, inserted, removed; truncated; spliced with another file), the
// rest pseudo-random bytes (lengths 0..512). The ctest smoke runs use this,
// so every fuzz target is built and run in CI (under ASan/UBSan in the
// sanitizer pass) even without clang.
//
// Like every randomized test, the seed comes from `--seed`, else from
// $TIPD_TEST_SEED, else is fresh; it is printed (and flushed) before the first
// input, so a run that crashes can be replayed with TIPD_TEST_SEED=<seed>.
// Before each generated input the driver can write it to a file
// ($TIPD_FUZZ_LAST_INPUT), to keep a crashing input as a regression.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using Input = std::vector<uint8_t>;

bool ReadFile(const std::filesystem::path& path, Input* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), {});
  return true;
}

void Mutate(std::mt19937_64& rng, const std::vector<Input>& corpus, Input* in) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const size_t pos = in->empty() ? 0 : rng() % in->size();
    switch (rng() % 6) {
      case 0:  // flip a bit
        if (!in->empty()) (*in)[pos] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:  // replace a byte (often with an edge value)
        if (!in->empty()) {
          static constexpr uint8_t kEdges[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
          (*in)[pos] = rng() % 2 ? kEdges[rng() % 5] : static_cast<uint8_t>(rng());
        }
        break;
      case 2:  // insert a byte
        in->insert(in->begin() + static_cast<std::ptrdiff_t>(pos), static_cast<uint8_t>(rng()));
        break;
      case 3:  // remove a run
        if (!in->empty()) {
          const size_t n = std::min<size_t>(1 + rng() % 8, in->size() - pos);
          in->erase(in->begin() + static_cast<std::ptrdiff_t>(pos),
                    in->begin() + static_cast<std::ptrdiff_t>(pos + n));
        }
        break;
      case 4:  // truncate
        in->resize(pos);
        break;
      case 5: {  // splice: our head, another file's tail
        const Input& other = corpus[rng() % corpus.size()];
        if (other.empty()) break;
        const size_t from = rng() % other.size();
        in->resize(pos);
        in->insert(in->end(), other.begin() + static_cast<std::ptrdiff_t>(from), other.end());
        break;
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t random_runs = 0, seed = 0;
  bool seed_given = false;
  if (const char* env = std::getenv("TIPD_TEST_SEED")) {
    seed = std::strtoull(env, nullptr, 10);
    seed_given = true;
  }
  const char* last_input = std::getenv("TIPD_FUZZ_LAST_INPUT");
  std::vector<std::filesystem::path> files;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--random") == 0 && i + 1 < argc) {
      random_runs = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
      seed_given = true;
    } else if (std::filesystem::is_directory(argv[i])) {
      std::vector<std::filesystem::path> in_dir;
      for (const auto& entry : std::filesystem::recursive_directory_iterator(argv[i])) {
        if (entry.is_regular_file()) in_dir.push_back(entry.path());
      }
      std::sort(in_dir.begin(), in_dir.end());
      files.insert(files.end(), in_dir.begin(), in_dir.end());
    } else {
      files.push_back(argv[i]);
    }
  }
  if (!seed_given) {
    std::random_device rd;
    seed = (static_cast<uint64_t>(rd()) << 32) | rd();
  }
  std::printf("fuzz driver: TIPD_TEST_SEED=%llu, %zu files, then %llu generated inputs\n",
              static_cast<unsigned long long>(seed), files.size(),
              static_cast<unsigned long long>(random_runs));
  std::fflush(stdout);  // a crashing input must not take the seed with it

  std::vector<Input> corpus;
  for (const auto& f : files) {
    Input data;
    if (!ReadFile(f, &data)) {
      std::fprintf(stderr, "cannot read %s\n", f.c_str());
      return 2;
    }
    std::fprintf(stderr, "replaying %s\n", f.c_str());
    LLVMFuzzerTestOneInput(data.data(), data.size());
    corpus.push_back(std::move(data));
  }

  std::mt19937_64 rng(seed);
  Input buf;
  for (uint64_t r = 0; r < random_runs; ++r) {
    if (!corpus.empty() && rng() % 2 == 0) {
      buf = corpus[rng() % corpus.size()];
      Mutate(rng, corpus, &buf);
    } else {
      buf.resize(rng() % 513);
      for (auto& b : buf) b = static_cast<uint8_t>(rng());
    }
    if (last_input != nullptr) {
      std::ofstream(last_input, std::ios::binary | std::ios::trunc)
          .write(reinterpret_cast<const char*>(buf.data()),
                 static_cast<std::streamsize>(buf.size()));
    }
    LLVMFuzzerTestOneInput(buf.data(), buf.size());
  }
  std::printf("fuzz driver: no crash in %zu files and %llu generated inputs\n", files.size(),
              static_cast<unsigned long long>(random_runs));
  return 0;
}
