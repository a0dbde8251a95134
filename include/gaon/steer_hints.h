// Steering hints: how an ikernel in a bump in the wire keeps the requests it would only
// pass (and their replies) inside the kernel, so they never cross gaond.
//
// In a bump (afxdp ports) every frame of an attached flow goes to gaond through AF_XDP,
// and what the ikernel passes crosses AF_XDP again on its way to the application: on
// veth, where AF_XDP has no zero-copy, a passed request and its reply cost more than the
// kernel's whole forwarding path. An ikernel type that declares a HintKind gets a hint
// table shared with the XDP steering program (a memory-mapped BPF array), one per instance,
// which it keeps in step with what it holds. The program reads it before steering:
//
//   memcached_get (kvcache)  an ASCII `get KEY` in one UDP datagram is steered to gaond
//                            only if KEY's slot counts a cached key, or KEY was not seen
//                            since the table was last aged (so a key not cached yet still
//                            reaches gaond once and can be learned from its reply); other
//                            GETs go straight to the application. memcached's miss reply
//                            (a datagram of just "END\r\n") stays in the kernel too.
//                            Every other request and reply is steered as before.
//
// The table is a hint, never a source of truth: a GET kept in the kernel is answered by
// the application itself, and a request steered needlessly is only a miss in gaond. So
// collisions, saturated counters and races with the program can cost speed but never
// correctness.
//
// Layout (kBytes per table, mirrored by src/bpf/steer.bpf.c): kSlots one-byte counters of
// cached keys (written by gaond only), then kSlots "seen" bits (set by the program, cleared
// by gaond: one by forget() when its key is written, leaves the cache or could not be
// learned; all of them by a flush and by age() every period).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace gaon {

enum class HintKind : uint8_t { none, memcached_get };

class SteerHints {
 public:
  static constexpr uint32_t kSlots = 1u << 18;
  static constexpr size_t kCounterBytes = kSlots;
  static constexpr size_t kSeenBytes = kSlots / 8;
  static constexpr size_t kBytes = kCounterBytes + kSeenBytes;

  explicit SteerHints(uint8_t* base) : base_(base) {}

  // FNV-1a (32 bits) of the key, the hash the XDP program computes; its low bits pick the slot.
  static uint32_t hash(std::string_view key) {
    uint32_t h = 2166136261u;
    for (unsigned char c : key) h = (h ^ c) * 16777619u;
    return h;
  }
  static uint32_t slot(std::string_view key) { return hash(key) & (kSlots - 1); }

  // A key entered the cache / left it. Counters saturate at 255 and then stay (steered).
  void add(std::string_view key) {
    std::atomic_ref<uint8_t> c(base_[slot(key)]);
    const uint8_t v = c.load(std::memory_order_relaxed);
    if (v != 255) c.store(uint8_t(v + 1), std::memory_order_relaxed);
  }
  void remove(std::string_view key) { remove_slot(slot(key)); }
  // remove() and forget() at once (one hash): the key left, and its next GET is steered.
  void left(std::string_view key) {
    const uint32_t s = slot(key);
    remove_slot(s);
    forget_slot(s);
  }
  // Nothing is cached any more (a flush): every counter to zero, and every key's next GET
  // reaches gaond again.
  void clear() {
    for (size_t i = 0; i < kCounterBytes; ++i)
      std::atomic_ref<uint8_t>(base_[i]).store(0, std::memory_order_relaxed);
    forget_all();
  }
  // The next GET for `key` reaches gaond again (a write may have made it cacheable).
  void forget(std::string_view key) { forget_slot(slot(key)); }
  // Once every `period_ns`: every key not cached reaches gaond once more (a key whose
  // reply was lost; bounded work: 32 KiB cleared).
  void age(uint64_t now_ns, uint64_t period_ns) {
    if (aged_ns_ == 0) aged_ns_ = now_ns;  // the first period starts now
    if (now_ns - aged_ns_ < period_ns) return;
    aged_ns_ = now_ns;
    forget_all();
  }
  void forget_all() {
    for (uint32_t w = 0; w < kSlots / 64; ++w)
      seen_word(w * 64).store(0, std::memory_order_relaxed);
  }

  uint8_t count(std::string_view key) const {
    return std::atomic_ref<uint8_t>(base_[slot(key)]).load(std::memory_order_relaxed);
  }
  bool seen(std::string_view key) const {
    const uint32_t s = slot(key);
    return (seen_word(s).load(std::memory_order_relaxed) >> (s & 63)) & 1;
  }

 private:
  void remove_slot(uint32_t s) {
    std::atomic_ref<uint8_t> c(base_[s]);
    const uint8_t v = c.load(std::memory_order_relaxed);
    if (v != 0 && v != 255) c.store(uint8_t(v - 1), std::memory_order_relaxed);
  }
  void forget_slot(uint32_t s) {
    seen_word(s).fetch_and(~(uint64_t(1) << (s & 63)), std::memory_order_relaxed);
  }
  std::atomic_ref<uint64_t> seen_word(uint32_t s) const {
    return std::atomic_ref<uint64_t>(reinterpret_cast<uint64_t*>(base_ + kCounterBytes)[s / 64]);
  }
  uint8_t* base_;
  uint64_t aged_ns_ = 0;
};

}  // namespace gaon
