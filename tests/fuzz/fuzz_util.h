// Helpers shared by the fuzz targets: a reader that turns the fuzzer's bytes
// into typed choices, a check that aborts with a message (an invariant
// broken is a crash the fuzzer keeps), fixed keys and deterministic
// randomness (a crash replays byte for byte).
//
// The reader never fails: past the end it yields zeros and empty strings, so
// every input, however short, is a valid (if boring) program.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "crypto/crypto.h"
#include "util/bytes.h"

namespace tipd::fuzz {

// Protobuf logs every string field with invalid UTF-8 it parses; the fuzzer
// makes millions. Silenced once per process (the parse result is what counts).
inline const bool kProtobufLogsSilenced = (google::protobuf::SetLogHandler(nullptr), true);

// Aborts with `what` unless `condition` holds: an invariant of the code under
// test is broken. libFuzzer keeps the input as a crash artifact.
inline void Require(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
  std::abort();
}

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const { return pos_ >= size_; }
  size_t remaining() const { return size_ - pos_; }

  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() << 8 | U8()); }
  uint32_t U32() { return static_cast<uint32_t>(U16()) << 16 | U16(); }
  uint64_t U64() { return static_cast<uint64_t>(U32()) << 32 | U32(); }
  bool Bool() { return (U8() & 1) != 0; }
  // A value in [0, n) (n >= 1).
  uint32_t Below(uint32_t n) { return n <= 256 ? U8() % n : U16() % n; }
  // An amount biased towards the interesting: small values, the u64 edges.
  uint64_t Amount() {
    switch (U8() % 8) {
      case 0:
        return 0;
      case 1:
        return UINT64_MAX - U8();
      case 2:
        return U64();
      default:
        return U8();
    }
  }
  // Up to `max` bytes, the length taken from the input.
  std::string Str(size_t max) {
    size_t n = std::min<size_t>({max, U8(), remaining()});
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  // Exactly `n` bytes (zero-padded past the end).
  std::string Fixed(size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(U8());
    return s;
  }
  // Everything not read yet.
  std::string Rest() {
    std::string s(reinterpret_cast<const char*>(data_ + pos_), remaining());
    pos_ = size_;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// BIP-340 aux bytes of all zeros: signatures are reproducible, so a crash
// replays exactly.
class ZeroRandom final : public crypto::RandomSource {
 public:
  void Fill(std::span<uint8_t> out) override { std::fill(out.begin(), out.end(), 0); }
};

inline crypto::KeyPair KeyFromByte(uint8_t b) {
  auto sk = crypto::SecretKey::FromBytes(Bytes(32, b));
  Require(sk.ok(), "fixed secret key");
  return crypto::KeyPair::FromSecret(*sk);
}

}  // namespace tipd::fuzz
