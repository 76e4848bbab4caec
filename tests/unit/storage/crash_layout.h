// The records the crash test's child writes and the parent checks, shared so
// both sides agree on one layout.
//
// Each submission ("record") is one WriteBatch of kParts part keys plus the
// writer thread's counter key; all of it must be present or none of it.
#pragma once

#include <cstdint>
#include <string>

#include "storage/storage.h"

namespace tipd::storage::crashtest {

inline constexpr int kParts = 4;
inline constexpr int kThreads = 4;
inline constexpr int kInFlightPerThread = 4;

// seq = round << 32 | thread << 24 | i: unique across rounds, and ordered per
// (round, thread) in submission order.
inline uint64_t MakeSeq(uint32_t round, uint32_t thread, uint32_t i) {
  return (uint64_t{round} << 32) | (uint64_t{thread} << 24) | i;
}
inline uint32_t SeqRound(uint64_t seq) { return static_cast<uint32_t>(seq >> 32); }
inline uint32_t SeqThread(uint64_t seq) { return static_cast<uint32_t>(seq >> 24) & 0xff; }
inline uint32_t SeqIndex(uint64_t seq) { return static_cast<uint32_t>(seq) & 0xffffff; }

// 'r' seq[8] part[1]
inline std::string PartKey(uint64_t seq, int part) {
  std::string key = "r";
  AppendBigEndian64(&key, seq);
  key.push_back(static_cast<char>(part));
  return key;
}
inline std::string PartValue(uint64_t seq, int part) {
  return "seq=" + std::to_string(seq) + " part=" + std::to_string(part) + " " +
         std::string(64, static_cast<char>('a' + part));
}
// 'n' MakeSeq(round, thread, 0)[8] -> the latest seq[8] that writer committed.
inline std::string CounterKey(uint32_t round, uint32_t thread) {
  std::string key = "n";
  AppendBigEndian64(&key, MakeSeq(round, thread, 0));
  return key;
}

inline WriteBatch RecordBatch(uint64_t seq) {
  WriteBatch batch;
  for (int p = 0; p < kParts; ++p) batch.Put(PartKey(seq, p), PartValue(seq, p));
  std::string counter;
  AppendBigEndian64(&counter, seq);
  batch.Put(CounterKey(SeqRound(seq), SeqThread(seq)), counter);
  return batch;
}

}  // namespace tipd::storage::crashtest
