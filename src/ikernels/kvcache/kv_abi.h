// kvcache's item table, as laid out in memory: the one definition shared by the C++ table
// (kv_table.h, the only writer) and the XDP fast path (kvcache.bpf.c, a reader). A C
// header on purpose. In a bump the table lives in the instance's run of gaon_fp_mem chunks
// (gaon/xdp_abi.h), memory-mapped by gaond; elsewhere in the instance's state region. The
// layout is the same in both.
//
// The table is a run of GAON_FP_CHUNK-byte chunks. Chunk 0 starts with the header (struct
// kv_table_hdr) and the "seen" bits; then come the sets, which never straddle a chunk and
// never use a chunk's last KV_CHUNK_SLACK bytes (so the BPF verifier can bound every read
// of a slot by the chunk's size). A set is a struct kv_set (tags, CLOCK bits) followed by
// KV_WAYS slots of slot_bytes each; a slot is a struct kv_slot followed by its data:
//
//   "VALUE " KEY " FLAGS BYTES" [" CAS"] "\r\n" VALUE "\r\n" "END\r\n"
//
// i.e. memcached's whole reply to `gets KEY` (to `get KEY` without the " CAS" part), so the
// fast path answers with one copy (two for a `get` of an item that has its cas); the binary
// reply takes the key and the value from it. A key's set is kv_set_of its hash.
//
// Concurrency (docs/fast-path.md has the argument): each slot has a sequence counter. The
// writer makes it odd, changes the slot, makes it even again (with release ordering); a
// reader reads it before and after copying and serves nothing if it was odd or changed.
// Tags and CLOCK bits are only hints: the slot itself (hash, key, generation, expiry) is
// what a reader checks, under the counter. The header's generation is the table's: a flush
// bumps it and every slot of an older one is dead. Readers set CLOCK bits with atomic ORs
// (and only when a bit is clear).
//
// Writers in the kernel (KV_F_KERNEL: a server with one NIC, where memcached's own
// interface and sockets run the programs and gaond is not in the data path) use the same
// layout and a chunk of version buckets (struct kv_vbucket, the run's chunk vb_chunk): an
// invalidation is an atomic increment of the key's bucket version, a fill takes the slot's
// counter from even to odd with a compare-and-swap (and gives up if it cannot) and records
// the bucket version its GET saw in the slot (ver); a reader serves a slot only while its
// ver is still its bucket's. docs/one-nic.md has the argument.
#pragma once

#include <linux/types.h>

#include "gaon/xdp_abi.h"

#define KV_ABI_MAGIC 0x3576636b6e6f6167ull  // "gaonkcv5", little endian; 0: not laid out
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
#define KV_F_KERNEL 2u    // writers in the kernel: a slot is live while its ver is its bucket's
#define KV_F_UNSAFE \
  4u  // KV_F_KERNEL, for the checker's negative control only: writes
      // invalidate nothing (kvcache's unsafe_no_invalidation)

struct kv_table_hdr {
  __u64 magic;        // KV_ABI_MAGIC once the geometry below is written
  __u64 generation;   // the live generation (a flush bumps it)
  __u32 nsets;        // any number: kv_set_of
  __u32 set_bytes;    // sizeof(struct kv_set) + KV_WAYS * slot_bytes
  __u32 slot_bytes;   // a multiple of 64, at most KV_SLOT_MAX
  __u32 sets_chunk0;  // sets in chunk 0
  __u32 sets_chunk;   // sets in every further chunk
  __u32 chunks;       // chunks the table spans
  __u32 max_key;
  __u32 max_value;
  __u32 flags;  // KV_F_*
  // r / sets_chunk as (r * sets_chunk_m) >> sets_chunk_k (kv_set_pos): k = 30 +
  // ceil(log2 sets_chunk), m = ceil(2^k / sets_chunk) (below 2^31 + 1).
  __u32 sets_chunk_m;
  __u32 sets_chunk_k;
  __u32 vb_chunk;  // KV_F_KERNEL: the chunk of the version buckets (from the run's first)
  // KV_F_KERNEL only, below: written by gaond when it lays the table out (flush_at_ns and
  // flushed_ns: by the writers).
  __u32 nvb;               // version buckets (a power of two, KV_VB_PER_CHUNK)
  __u64 write_timeout_ns;  // a write not acknowledged blocks fills of its bucket this long
  __u64 max_ttl_ns;        // no entry lives longer (0: no limit)
  __u64 flush_at_ns;       // a delayed flush_all: no entry filled before it lives past it
  __u64 flushed_ns;        // the last flush a writer saw: memcached carries it out after
                           // that, so nothing is learned for write_timeout from it
};

// A version bucket (KV_F_KERNEL): the writes of every key hashing to it (kv_vb_of). 64
// bytes: one cache line, so two buckets never share one.
struct kv_vbucket {
  __u32 ver;       // +1 at every write seen of a key in it (atomic)
  __u32 out;       // UDP writes seen and not yet acknowledged (atomic)
  __u64 udp_ns;    // when the last UDP write was seen (out is stale after write_timeout)
  __u64 timed_ns;  // the last write whose acknowledgement is not followed (TCP, noreply):
                   // such writes block fills until write_timeout has passed
  __u64 lost_ns;   // the latest expiry of a ttl record replaced by another key's
  __u64 ttl[4];    // the expiries writes gave keys: (expire_units << 32) | (__u32)hash; 0: none
};
#define KV_VB_PER_CHUNK (GAON_FP_CHUNK / 64)
#define KV_TTL_SHIFT 30           // ttl records count time in units of 2^30 ns (~1.07 s)
#define KV_TTL_NEVER 0xffffffffu  // a ttl record's expiry: none
static inline __u32 kv_vb_of(__u64 h, __u32 nvb) { return (__u32)(h >> 40) & (nvb - 1); }

struct kv_set {
  __u32 tag[KV_WAYS];  // (hash >> 32) | 1 of each way's entry; 0: empty
  __u32 ref;           // CLOCK reference bits, one per way
  __u32 hand;          // CLOCK hand (writer only)
  __u8 pad[24];
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
  __u32 ver;  // KV_F_KERNEL: the version of the key's bucket its value was read under
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
// The set of hash h: its low 32 bits scaled to nsets (a multiply and a shift, not a mask:
// nsets need not be a power of two, so a table uses its whole capacity).
static inline __u32 kv_set_of(__u64 h, __u32 nsets) {
  return (__u32)(((__u64)(__u32)h * nsets) >> 32);
}
static inline __u32 kv_tag(__u64 h) { return (__u32)(h >> 32) | 1; }
static inline __u32 kv_seen_bit(__u64 h) { return (__u32)(h >> 8) & (KV_SEEN_BITS - 1); }

// Where set `s` starts: its chunk and its byte offset in it.
static inline void kv_set_pos(const struct kv_table_hdr* t, __u32 s, __u32* chunk, __u32* off) {
  if (s < t->sets_chunk0) {
    *chunk = 0;
    *off = KV_SETS_OFF + s * t->set_bytes;
    return;
  }
  // r / sets_chunk by a multiply, exact for r < 2^30: with d = sets_chunk, the rounded-up
  // reciprocal errs by less than r / 2^k < 2^(30-k) <= 1/d, which never crosses an integer.
  const __u32 r = s - t->sets_chunk0;
  const __u32 q = (__u32)(((__u64)r * t->sets_chunk_m) >> (t->sets_chunk_k & 63));
  *chunk = 1 + q;
  *off = (r - q * t->sets_chunk) * t->set_bytes;
}
