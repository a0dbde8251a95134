// topk — counts keys in the traffic (count-min sketch) and keeps the K heaviest; passes every
// packet.
//
// Attach it to any UDP service's flows. For each datagram from the wire it extracts keys by
// a declared rule and counts them; every packet passes on unchanged (it only watches).
//   key=mc_get      memcached GET keys (ASCII get/gets, also multi-key; binary GET*), one
//                   count per key
//   key=src         the source IP address
//   key=bytes       payload bytes [offset, offset+length); shorter datagrams are not counted
// Counting: a count-min sketch with conservative update, its width and depth derived from
// the error the owner asks for — width ⌈e/error⌉, depth ⌈ln(1/(1-confidence))⌉ — so an
// estimate is never below the true count and, with probability `confidence`, at most
// error × N above it (N: keys counted since the last reset). The top K keys by estimate
// are kept in a min-heap with an index (no scan per packet). All state lives in the
// instance's region, within its quota: sketch 8 × width × depth bytes, heap K entries of
// the longest key it keeps.
//
// Parameters:
//   key=mc_get        mc_get | src | bytes
//   offset=0          (key=bytes) first payload byte of the key
//   length=8          (key=bytes) bytes in the key (1..64)
//   k=10              keys kept (1..1024)
//   error=0.001       the sketch's error bound, as a share of N
//   confidence=0.99   the probability that the bound holds for a key
//   max_key=64        (key=mc_get) longer keys are counted by their first max_key bytes
// State operations:
//   top      the current top K: [{key, count}] by count (keys: text for mc_get, an address
//            for src, hex for bytes), and N and the error bound
//   reset    forget everything (counts, heap)
//   stats    packets, keys counted, datagrams without a key, N, width, depth, error bound
// Counters (stats): packets, keys, no_key (datagrams from which the rule got nothing).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gaon/ikernel.h"

namespace gaon::ikernels {

class TopK : public PerPacketIKernel<TopK> {
 public:
  static std::vector<ParamSpec> param_specs();
  static std::vector<StateOpSpec> state_ops();

  Result<void> configure(const Params& p) override;
  size_t state_bytes() const override;
  Result<void> init(StateRegion& region) override;
  Verdict on_packet(Context& ctx, Packet& p);
  Result<nlohmann::json> call(std::string_view op, std::span<const std::string> args) override;

  // Counts one occurrence of `key` (public for tests and benchmarks).
  void count(std::string_view key);

 private:
  enum class Rule : uint8_t { mc_get, src, bytes };
  struct Entry {  // a heap entry
    uint64_t hash;
    uint64_t count;
    uint16_t klen;
    uint16_t kslot;  // where its key's bytes are in keys_ (stable while it stays)
    uint32_t islot;  // its slot in index_
  };
  struct Header {
    uint64_t n, packets, no_key, heap_size;  // n: keys counted since the last reset
  };

  // depth = ⌈ln(1/(1-confidence))⌉ with confidence ≤ 0.999999 (its parameter bound): ≤ 14
  static constexpr uint64_t kMaxDepth = 16;
  uint64_t estimate_and_add(uint64_t h);
  void sift_down(uint32_t i);
  void sift_up(uint32_t i);
  void swap_entries(uint32_t a, uint32_t b);
  uint32_t* index_slot(uint64_t h, std::string_view key);  // the index slot for key (or free)
  void index_erase(uint32_t* slot);
  std::string render(std::string_view key) const;

  Rule rule_ = Rule::mc_get;
  uint32_t offset_ = 0, length_ = 8, k_ = 10, max_key_ = 64;
  uint64_t width_ = 0, depth_ = 0, nindex_ = 0;
  double error_ = 0.001, confidence_ = 0.99;
  // state (inside the region)
  Header* hdr_ = nullptr;
  uint64_t* sketch_ = nullptr;  // depth rows of width counters
  Entry* heap_ = nullptr;       // min-heap by count, heap_size entries
  char* keys_ = nullptr;        // k slots of max_key bytes
  uint32_t* index_ = nullptr;   // open addressing: heap position + 1, 0 = free
};

}  // namespace gaon::ikernels
