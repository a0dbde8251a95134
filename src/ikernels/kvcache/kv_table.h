// kvcache's item table: a set-associative table of fixed-size slots (KV_WAYS ways per
// set, CLOCK eviction within a set), in the layout of kv_abi.h, which kvcache's XDP fast
// path reads concurrently. This class is the only writer. It knows nothing of memcached's
// protocol beyond the reply text it keeps rendered in each slot.
//
//   Geometry g = Table::geometry(capacity, max_key, max_value);   // set-up: may fail
//   Table t;  t.lay_out(mem, g, flags);                           // zeroed memory, g.bytes
//   const kv_slot* s = t.find(h, key, now);                       // h = Table::hash(key)
//   t.insert(h, key, item, expire_ns);  t.invalidate(h);  t.drop_all();
//
// Writes follow the sequence-counter protocol of kv_abi.h: a slot's counter is odd while
// it changes, so a concurrent reader never serves a torn or invalidated entry.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "gaon/result.h"
#include "kv_abi.h"

namespace gaon::kv {

// The hash reads keys as native-order words and pads the last with zeros in its high
// bytes, as the fast path does: right on little-endian machines only.
static_assert(std::endian::native == std::endian::little);

struct Geometry {
  uint32_t nsets = 0, set_bytes = 0, slot_bytes = 0, sets_chunk0 = 0, sets_chunk = 0;
  uint32_t chunks = 0;    // GAON_FP_CHUNK-byte chunks spanned
  uint32_t vb_chunk = 0;  // writers in the kernel: the chunk of version buckets (0: none)
  uint32_t max_key = 0, max_value = 0;
  size_t bytes = 0;  // from the start of chunk 0 to the end of the last set
};

// What a slot holds, to insert.
struct Item {
  std::string_view value;
  uint32_t flags = 0;
  uint64_t cas = 0;
  bool has_cas = false;
};

// What writers in the kernel need to know (kv_table_hdr; KV_F_KERNEL only).
struct TableLimits {
  uint64_t write_timeout_ns = 1'000'000'000;
  uint64_t max_ttl_ns = 0;
  uint64_t now_ns = 0;  // CLOCK_MONOTONIC at the lay-out
};

class Table {
 public:
  // `kernel`: the table has writers in the kernel (KV_F_KERNEL; kv_abi.h), and one more
  // chunk, its last, for their version buckets.
  static Result<Geometry> geometry(uint64_t capacity, uint32_t max_key, uint32_t max_value,
                                   bool kernel = false);
  using Limits = TableLimits;
  static uint64_t hash(std::string_view key) {
    uint64_t h = kv_hash_init(uint32_t(key.size()));
    for (size_t i = 0; i < key.size(); i += 8) {
      uint64_t w = 0;  // the last word zero-padded (native order, as the fast path loads it)
      std::memcpy(&w, key.data() + i, std::min<size_t>(8, key.size() - i));
      h = kv_hash_step(h, w);
    }
    return kv_hash_final(h);
  }

  // Lays the table out over `mem` (zeroed, g.bytes long; GAON_FP_CHUNK-aligned runs are
  // what the fast path maps), header last. `flags`: KV_F_*. `generation`: the first one
  // (above any the caller handed out for an earlier table, so nothing learned for that
  // one can be taken for this one's).
  void lay_out(uint8_t* mem, const Geometry& g, uint32_t flags, uint64_t generation = 1,
               const Limits& limits = {});
  bool kernel_writers() const { return vb_ != nullptr; }
  bool laid_out() const { return hdr_ != nullptr; }
  const Geometry& geom() const { return g_; }
  uint8_t* memory() const { return mem_; }

  // The live entry for `key` (hash h), or nullptr; an expired one found is dropped (with
  // writers in the kernel: skipped). A hit sets the way's CLOCK bit.
  const kv_slot* find(uint64_t h, std::string_view key, uint64_t now);
  // For a burst: the set of `h`, then the slots whose tags match (header and key).
  void prefetch_set(uint64_t h) const { __builtin_prefetch(set(kv_set_of(h, g_.nsets))); }
  void prefetch_slots(uint64_t h) const {
    kv_set* st = set(kv_set_of(h, g_.nsets));
    for (uint32_t w = 0; w < KV_WAYS; ++w)
      if (st->tag[w] == kv_tag(h)) {
        const auto* s = reinterpret_cast<const uint8_t*>(slot(st, w));
        __builtin_prefetch(s);
        __builtin_prefetch(s + 64);
      }
  }
  // Puts `key` in its set: over its own entry, a free or dead way, or CLOCK's victim.
  void insert(uint64_t h, std::string_view key, const Item& item, uint64_t expire_ns);
  // Drops every entry whose hash is h; true if a live one went. Every live entry that
  // leaves the table (invalidated, evicted, expired, replaced) also clears its seen bit.
  // With writers in the kernel: bumps the key's bucket version instead (false).
  bool invalidate(uint64_t h);
  // Writers in the kernel: the live entries and their key and value bytes, counted.
  struct Census {
    uint64_t items = 0, bytes = 0;
  };
  Census census(uint64_t now) const;
  const kv_vbucket* bucket(uint64_t h) const { return vb_ + kv_vb_of(h, KV_VB_PER_CHUNK); }
  // Drops everything at once (a new generation; slots are reclaimed as they are reused).
  void drop_all();

  // "Seen" bits (the fast path's: a GET of this hash class went to gaond lately).
  void forget(uint64_t h);
  void forget_all();
  bool seen(uint64_t h) const;

  uint64_t items() const { return items_; }
  uint64_t bytes_used() const { return bytes_used_; }
  uint64_t evictions() const { return evictions_; }
  uint64_t generation() const;

  // Views of a slot's pieces (kv_abi.h).
  static std::string_view key(const kv_slot& s) {
    return {reinterpret_cast<const char*>(data(s)) + kv_key_off(), s.klen};
  }
  static std::string_view value(const kv_slot& s) {
    return {reinterpret_cast<const char*>(data(s)) + kv_value_off(s.klen, s.ftext, s.ctext),
            s.vlen};
  }
  static const uint8_t* data(const kv_slot& s) { return reinterpret_cast<const uint8_t*>(&s + 1); }
  // memcached's reply to `get KEY` / `gets KEY` for this entry, with or without the final
  // "END\r\n": `head` then `tail` (two pieces of the slot's text).
  struct Text {
    std::string_view head, tail;
  };
  static Text reply_text(const kv_slot& s, bool with_cas, bool with_end);

 private:
  kv_set* set(uint32_t s) const;
  kv_slot* slot(kv_set* set, uint32_t way) const {
    return reinterpret_cast<kv_slot*>(reinterpret_cast<uint8_t*>(set + 1) + way * g_.slot_bytes);
  }
  void leave(kv_set* st, uint32_t way, kv_slot* s);  // a live entry goes: uncount, empty
  uint64_t* seen_word(uint64_t h) const;

  Geometry g_;
  uint8_t* mem_ = nullptr;
  kv_table_hdr* hdr_ = nullptr;
  kv_vbucket* vb_ = nullptr;  // writers in the kernel: their version buckets
  uint64_t items_ = 0, bytes_used_ = 0, evictions_ = 0;
};

}  // namespace gaon::kv
