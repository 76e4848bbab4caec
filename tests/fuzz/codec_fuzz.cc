// Fuzz target: the canonical codecs (channel/codec.h, ledger/codec.h).
//
// Signed bytes must have exactly one form. The first input byte picks a
// codec, the rest is its input:
//  - canonical tip / balance proof bytes: a decode that succeeds must encode
//    back to the very same bytes (decode -> encode -> decode is the identity,
//    so no two byte strings decode to the same object), and a decoded tip
//    obeys every content rule;
//  - protobuf Transaction, BlockHeader, GenesisParams, Tip, BalanceProof,
//    Ack: the canonical encoding is a function of the decoded values only —
//    serialising and re-parsing the message (which drops nothing the
//    encoder reads) gives the same canonical bytes and ids; an encoding that
//    succeeds for a tip or proof decodes back to the same values.
#include <cstdint>
#include <string>

#include "channel/codec.h"
#include "ledger/codec.h"
#include "ledger/rules.h"
#include "tests/fuzz/fuzz_util.h"

namespace tipd::fuzz {
namespace {

void CanonicalTip(ByteSpan in) {
  auto tip = channel::DecodeTip(in);
  if (!tip.ok()) return;
  Require(channel::CheckTipContent(*tip).ok(), "a decoded tip obeys the content rules");
  auto again = channel::EncodeTip(*tip);
  Require(again.ok(), "a decoded tip encodes");
  Require(*again == Bytes(in.begin(), in.end()), "tip: decode -> encode is the identity");
  auto twice = channel::DecodeTip(*again);
  Require(twice.ok() && twice->SerializeAsString() == tip->SerializeAsString(),
          "tip: decode -> encode -> decode is equal");
}

void CanonicalProof(ByteSpan in) {
  auto proof = channel::DecodeBalanceProof(in);
  if (!proof.ok()) return;
  Require(proof->signature().empty(), "a decoded proof carries no signature");
  auto again = channel::EncodeBalanceProof(*proof);
  Require(again.ok(), "a decoded proof encodes");
  Require(*again == Bytes(in.begin(), in.end()), "proof: decode -> encode is the identity");
  auto twice = channel::DecodeBalanceProof(*again);
  Require(twice.ok() && twice->SerializeAsString() == proof->SerializeAsString(),
          "proof: decode -> encode -> decode is equal");
}

// Parses `M` from protobuf bytes; on success the same message re-parsed from
// its own serialisation.
template <typename M>
bool ParseTwice(const std::string& bytes, M* first, M* second) {
  if (!first->ParseFromString(bytes)) return false;
  Require(second->ParseFromString(first->SerializeAsString()), "a parsed message re-parses");
  return true;
}

void ProtoTip(const std::string& bytes) {
  v1::Tip a, b;
  if (!ParseTwice(bytes, &a, &b)) return;
  auto ea = channel::EncodeTip(a);
  auto eb = channel::EncodeTip(b);
  Require(ea.ok() == eb.ok(), "tip: encodability depends on the values only");
  if (!ea.ok()) return;
  Require(*ea == *eb, "tip: encoding depends on the values only");
  auto back = channel::DecodeTip(*ea);
  Require(back.ok(), "an encoded tip decodes");
  Require(back->SerializeAsString() == a.SerializeAsString() ||
              (back->index() == a.index() && back->amount() == a.amount() &&
               back->message() == a.message() && back->created_at_ms() == a.created_at_ms() &&
               back->metadata_size() == a.metadata_size()),
          "tip: encode -> decode gives the values back");
  for (int i = 0; i < a.metadata_size(); ++i) {
    Require(back->metadata(i).key() == a.metadata(i).key() &&
                back->metadata(i).value() == a.metadata(i).value(),
            "tip: metadata round-trips");
  }
  auto ha = channel::TipHash(a);
  Require(ha.ok() && *ha == *channel::TipHash(*back), "tip: hash of the round trip");
}

void ProtoProof(const std::string& bytes) {
  v1::BalanceProof a, b;
  if (!ParseTwice(bytes, &a, &b)) return;
  auto ea = channel::EncodeBalanceProof(a);
  auto eb = channel::EncodeBalanceProof(b);
  Require(ea.ok() == eb.ok(), "proof: encodability depends on the values only");
  if (!ea.ok()) return;
  Require(*ea == *eb, "proof: encoding depends on the values only");
  auto back = channel::DecodeBalanceProof(*ea);
  Require(back.ok(), "an encoded proof decodes");
  // Unknown fields and the signature are not part of the signed bytes.
  v1::BalanceProof unsigned_a = a;
  unsigned_a.clear_signature();
  unsigned_a.DiscardUnknownFields();
  Require(back->SerializeAsString() == unsigned_a.SerializeAsString(),
          "proof: encode -> decode gives the values back");
  // Verification never crashes and never accepts garbage for a fixed key.
  static const crypto::XOnlyPubKey key = KeyFromByte(0x01).XOnly();
  (void)channel::VerifyBalanceProof(a, key);
}

void ProtoAck(const std::string& bytes) {
  v1::Ack a, b;
  if (!ParseTwice(bytes, &a, &b)) return;
  auto ea = channel::EncodeAck("tipd-fuzz", a);
  auto eb = channel::EncodeAck("tipd-fuzz", b);
  Require(ea.ok() == eb.ok() && (!ea.ok() || *ea == *eb), "ack: encoding depends on the values");
}

void ProtoTransaction(const std::string& bytes) {
  v1::Transaction a, b;
  if (!ParseTwice(bytes, &a, &b)) return;
  auto ea = ledger::EncodeTransaction(a);
  auto eb = ledger::EncodeTransaction(b);
  Require(ea.ok() == eb.ok(), "tx: encodability depends on the values only");
  if (!ea.ok()) return;
  Require(*ea == *eb, "tx: encoding depends on the values only");
  auto id = ledger::TransactionId(a);
  Require(id.ok() && *id == *ledger::TransactionId(b), "tx: id depends on the values only");
  // The id is the tagged hash of exactly these bytes.
  Require(*id == crypto::TaggedHash(ledger::kTxTag, *ea), "tx: id = TaggedHash(tag, bytes)");
  (void)ledger::VerifyTransactionSignature(a);
}

void ProtoHeader(const std::string& bytes) {
  v1::BlockHeader a, b;
  if (!ParseTwice(bytes, &a, &b)) return;
  auto ea = ledger::EncodeBlockHeader(a);
  auto eb = ledger::EncodeBlockHeader(b);
  Require(ea.ok() == eb.ok() && (!ea.ok() || *ea == *eb), "header: encoding depends on values");
  if (!ea.ok()) return;
  // The signature is not part of what is signed.
  v1::BlockHeader unsigned_a = a;
  unsigned_a.clear_signature();
  auto eu = ledger::EncodeBlockHeader(unsigned_a);
  Require(eu.ok() && *eu == *ea, "header: the signature is not encoded");
  Require(*ledger::BlockHash(a) == crypto::TaggedHash(ledger::kBlockTag, *ea),
          "header: hash = TaggedHash(tag, bytes)");
}

void ProtoGenesis(const std::string& bytes) {
  v1::GenesisParams a, b;
  if (!ParseTwice(bytes, &a, &b)) return;
  auto ha = ledger::GenesisHash(a);
  auto hb = ledger::GenesisHash(b);
  Require(ha.ok() == hb.ok() && (!ha.ok() || *ha == *hb), "genesis: hash depends on values");
  (void)ledger::ValidateGenesis(a);
}

void Merkle(FuzzInput& in) {
  std::vector<Hash32> leaves(in.Below(9));
  for (auto& leaf : leaves) {
    const std::string s = in.Fixed(32);
    std::copy(s.begin(), s.end(), leaf.begin());
  }
  const Hash32 root = ledger::MerkleRoot(leaves);
  Require(root == ledger::MerkleRoot(leaves), "merkle: deterministic");
  if (leaves.empty()) {
    Require(root == Hash32{}, "merkle: empty is zeros");
    return;
  }
  if (leaves.size() == 1) Require(root == leaves[0], "merkle: one leaf is the root");
  // Appending a leaf changes the root (no duplication of odd nodes).
  std::vector<Hash32> longer = leaves;
  longer.push_back(leaves.back());
  Require(ledger::MerkleRoot(longer) != root, "merkle: a duplicated last leaf changes the root");
}

}  // namespace
}  // namespace tipd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tipd::fuzz;
  if (size == 0) return 0;
  const tipd::ByteSpan rest(data + 1, size - 1);
  const std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 9) {
    case 0:
      CanonicalTip(rest);
      break;
    case 1:
      CanonicalProof(rest);
      break;
    case 2:
      ProtoTip(bytes);
      break;
    case 3:
      ProtoProof(bytes);
      break;
    case 4:
      ProtoAck(bytes);
      break;
    case 5:
      ProtoTransaction(bytes);
      break;
    case 6:
      ProtoHeader(bytes);
      break;
    case 7:
      ProtoGenesis(bytes);
      break;
    case 8: {
      FuzzInput in(data + 1, size - 1);
      Merkle(in);
      break;
    }
  }
  return 0;
}
