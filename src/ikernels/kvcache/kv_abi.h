// kvcache's item table, as laid out in memory: the one definition shared by the C++ table
// (kv_table.h, the only writer) and the XDP fast path (kvcache.bpf.c, a reader). A C
// header on purpose. In a bump the table lives in the instance's run of gaon_fp_mem chunks
// (gaon/xdp_abi.h), memory-mapped by gaond; elsewhere in the instance's state region. The
// layout is the same in both.
//
// The table is a run of GAON_FP_CHUNK-byte chunks, dense: what a hit touches sits on few
// pages. Chunk 0 starts with the header (struct kv_table_hdr) and the "seen" bits; then
// come the sets, 64 bytes each and back to back (so none straddles a chunk), on into as
// many chunks as they need. A set (struct kv_set) holds KV_WAYS tags and, for each, the
// number of the slot that holds the entry. The slots follow the sets (in the chunk where
// the sets end, past them, then on): slots_chunk of slot_bytes in each chunk, never in a
// chunk's last KV_CHUNK_SLACK bytes (so the BPF verifier can bound every read of a slot by
// the chunk's size). The writer hands out free slots lowest first and reuses the last
// freed first, so the live ones stay packed. A slot is a struct kv_slot followed by its
// data:
//
//   "VALUE " KEY " FLAGS BYTES" [" CAS"] "\r\n" VALUE "\r\n" "END\r\n"
//
// i.e. memcached's whole reply to `gets KEY` (to `get KEY` without the " CAS" part), so the
// fast path answers with one or two copies; the binary reply takes the key and the value
// from it.
//
// Concurrency (docs/fast-path.md has the argument): each slot has a sequence counter. The
// writer makes it odd, changes the slot, makes it even again (with release ordering); a
// reader reads it before and after copying and serves nothing if it was odd or changed.
// Tags, slot numbers and CLOCK bits are only hints: the slot itself (hash, key,
// generation, expiry) is what a reader checks, under the counter. The header's generation
// is the table's: a flush bumps it and every slot of an older one is dead. Readers set a
// slot's CLOCK bit with an atomic OR (and only when it is clear). Free slots are the
// writer's own list (not in the table): writers in the kernel, added later with atomics
// on the same layout, would take slots from a supply of their own (docs/fast-path.md).
#pragma once

#include <linux/types.h>

#include "gaon/xdp_abi.h"

#define KV_ABI_MAGIC 0x3376636b6e6f6167ull  // "gaonkcv3", little endian; 0: not laid out
#define KV_WAYS 8
#define KV_SEEN_BITS (1u << 18)  // one bit per hash class: "a GET of it reached gaond lately"
#define KV_HDR_BYTES 4096
#define KV_SEEN_OFF KV_HDR_BYTES
#define KV_SETS_OFF (KV_HDR_BYTES + KV_SEEN_BITS / 8)  // where chunk 0's sets begin
#define KV_CHUNK_SLACK 8192  // bytes at the end of every chunk that hold no set
#define KV_SLOT_MAX 2048     // the largest slot (key 250, value 1 360 and their text fit)
#define KV_MAX_KEY 250
#define KV_FTEXT_MAX 16  // " 4294967295 1360"
#define KV_CTEXT_MAX 21  // " 18446744073709551615"
#define KV_TAIL 7        // "\r\nEND\r\n" after the value

// Header flags.
#define KV_F_UDP_CSUM 1u  // replies carry a full UDP checksum over IPv4 (IPv6: always)

struct kv_table_hdr {
  __u64 magic;       // KV_ABI_MAGIC once the geometry below is written
  __u64 generation;  // the live generation (a flush bumps it)
  __u32 nsets;       // a power of two; set s is at KV_SETS_OFF + 64 s from chunk 0's start
  __u32 nslots;
  __u32 slot_bytes;   // a multiple of 64, at most KV_SLOT_MAX
  __u32 slots_first;  // the chunk of slot 0
  __u32 slots_chunk;  // slots in each chunk from slots_first on
  __u32 chunks;       // chunks the table spans
  __u32 max_key;
  __u32 max_value;
  __u32 flags;  // KV_F_*
  // i / slots_chunk as (i * slots_chunk_m) >> slots_chunk_k (kv_slot_pos): k = 30 +
  // ceil(log2 slots_chunk), m = ceil(2^k / slots_chunk) (below 2^31 + 1).
  __u32 slots_chunk_m;
  __u32 slots_chunk_k;
  // Slot positions of chunk slots_first that the sets' end takes: slot i is at position
  // i + slots_skip, counted from slots_first's start, slots_chunk positions a chunk.
  __u32 slots_skip;
};

struct kv_set {
  __u32 tag[KV_WAYS];   // (hash >> 32) | 1 of each way's entry; 0: empty
  __u32 slot[KV_WAYS];  // the slot number of each way's entry
};

struct kv_slot {
  __u32 seq;  // even: stable; odd: being written
  __u16 klen;
  __u16 vlen;
  __u64 hash;  // 0: empty
  __u64 generation;
  __u64 expire_ns;  // CLOCK_MONOTONIC; ~0: never
  __u64 cas;
  __u32 flags;   // memcached's client flags
  __u8 has_cas;  // cas is memcached's (learned from a gets or a binary get)
  __u8 ftext;    // bytes of " FLAGS BYTES" in the data
  __u8 ctext;    // bytes of " CAS" in the data (0 without has_cas)
  __u8 pad0;
  __u32 ref;  // CLOCK reference bit: readers set it (atomic OR), the writer clears it
  __u8 pad[12];
};

// Where a slot's pieces are in its data (after struct kv_slot).
static inline __u32 kv_key_off(void) { return 6; }
static inline __u32 kv_value_off(__u32 klen, __u32 ftext, __u32 ctext) {
  return 6 + klen + ftext + ctext + 2;
}
static inline __u32 kv_data_len(__u32 klen, __u32 vlen, __u32 ftext, __u32 ctext) {
  return kv_value_off(klen, ftext, ctext) + vlen + KV_TAIL;
}
static inline __u32 kv_slot_bytes(__u32 max_key, __u32 max_value) {
  const __u32 n = (__u32)sizeof(struct kv_slot) + 6 + max_key + KV_FTEXT_MAX + KV_CTEXT_MAX + 2 +
                  max_value + KV_TAIL;
  return (n + 63) & ~63u;
}

// The key hash both sides compute, 8 bytes at a time: the key as native-order 64-bit words
// (x86 and arm64: little endian), the last one zero-padded, each xored in and mixed by a
// multiply and a shift, starting from a value that depends on the key's length; then
// murmur3's finalizer (the low bits pick the set). Never 0 (an empty slot). A word at a
// time, as both sides read the key, so the fast path spends a few instructions per 8 bytes.
#define KV_HASH_INIT 0xcbf29ce484222325ull
static inline __u64 kv_hash_init(__u32 klen) { return KV_HASH_INIT ^ klen; }
static inline __u64 kv_hash_step(__u64 h, __u64 w) {
  h = (h ^ w) * 0x9e3779b97f4a7c15ull;
  return h ^ (h >> 29);
}
static inline __u64 kv_hash_final(__u64 h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h ? h : 1;
}
static inline __u32 kv_tag(__u64 h) { return (__u32)(h >> 32) | 1; }
static inline __u32 kv_seen_bit(__u64 h) { return (__u32)(h >> 8) & (KV_SEEN_BITS - 1); }

// Where set `s` is: its chunk and its byte offset in it (64-byte aligned).
static inline void kv_set_pos(__u32 s, __u32* chunk, __u32* off) {
  const __u64 at = KV_SETS_OFF + (__u64)s * sizeof(struct kv_set);
  *chunk = (__u32)(at / GAON_FP_CHUNK);
  *off = (__u32)(at % GAON_FP_CHUNK);
}
// Where slot `i` is. Its position v over slots_chunk by a multiply, exact for v < 2^30:
// with d = slots_chunk, the rounded-up reciprocal errs by less than v / 2^k < 2^(30-k) <=
// 1/d, which never crosses an integer.
static inline void kv_slot_pos(const struct kv_table_hdr* t, __u32 i, __u32* chunk, __u32* off) {
  const __u32 v = i + t->slots_skip;
  const __u32 q = (__u32)(((__u64)v * t->slots_chunk_m) >> (t->slots_chunk_k & 63));
  *chunk = t->slots_first + q;
  *off = (v - q * t->slots_chunk) * t->slot_bytes;
}
