// kvcache's fast path: GET hits answered in the driver (XDP), before gaond or the host see
// them. The steering program (src/bpf/steer.bpf.c) tail-calls it with the frames of the
// flows attached to a kvcache instance that has one, while gaond's lease is fresh.
//
// Wire side (requests), one UDP datagram (memcached's frame header: sequence 0 of 1):
//   ASCII `get KEY\r\n` / `gets KEY\r\n`, binary GET / GETQ / GETK / GETKQ (one request)
//     hit:  the reply is built in place — memcached's own bytes (request id and opaque
//           echoed, flags, cas where asked) — and sent back on the wire (XDP_TX)
//     miss: forwarded to the application in the kernel, unless a GET of the key has not
//           reached gaond lately ("seen" bits): then handed up, so gaond learns the value
//           from memcached's reply
//   everything else (writes, multi-key gets, TCP, anything odd): handed up to gaond,
//   which invalidates before any write reaches memcached.
// Host side (replies): memcached's bare miss ("END\r\n") goes to the client in the
// kernel; every other reply is handed up (gaond learns values and sees acknowledgements).
//
// The table (kv_abi.h) is gaond's: this program only reads it, under each slot's sequence
// counter, and only inside its instance's run of chunks. IPv4 and IPv6; the UDP checksum
// of a reply is computed in full over IPv6 (and over IPv4 when the instance asks), else 0.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "gaon/xdp_abi.h"
#include "gaon_maps.bpf.h"
#include "kv_abi.h"
#include "kvcache_local.bpf.h"

#define MC_HDR 8              // memcached's UDP frame header
#define REQ_MAX 288           // the longest request handled: 8 + 24 + 250 (binary GETK)
#define UDP_MAX_PAYLOAD 1400  // memcached's datagram payload limit (mc_proto.h)
#define BIN_HDR 24
#define ONES 0x0101010101010101ull  // times a byte: that byte in each of 8
// A length the verifier can bound: 1..m (m a power of two) for a value known to be in it.
#define LEN(x, m) ((((x)-1) & ((m)-1)) + 1)
// Keeps the compiler from recomputing a bounds-checked value elsewhere, where the verifier
// no longer knows its bounds.
#define BARRIER_VAR(v) asm volatile("" : "+r"(v))

struct kv_scratch {
  __u8 req[768];  // the request's payload (at most 512 bytes), copied: parsed from here,
                  // restored from here (and read 8 bytes at a time past its end)
  __u8 hdr[32];   // a binary reply's header and flags
  __u8 hdrs[64];  // the frame's headers, while the frame grows at its head
  __u32 klen;     // see forget_bounds()
  __u32 pl;
};

// A loop that stops at `i >= klen` teaches the verifier klen's exact value on each way out,
// so what follows would be verified once per possible length. Reading klen back from
// memory after the loop forgets that (and the checks are made again).
static __always_inline __u32 forget_bounds(struct kv_scratch* sc) {
  return *(volatile __u32*)&sc->klen;
}
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct kv_scratch);
} kv_scratch SEC(".maps");

enum { ASCII_GET, ASCII_GETS, BINARY };

struct frame {
  __u32 l4;    // offset of the UDP header
  __u32 ulen;  // UDP length
  __u32 is6;
  __u32 len;  // the frame's length
};

static __always_inline __u16 csum_fold(__u64 s) {
  s = (s & 0xffffffff) + (s >> 32);
  s = (s & 0xffffffff) + (s >> 32);
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return (__u16)s;
}

// The low n bytes of a 64-bit word loaded in native (little-endian) order; all 8 for n >= 8.
static __always_inline __u64 low_bytes(__u32 n) { return n >= 8 ? ~0ull : (1ull << (n * 8)) - 1; }
// An 8-byte piece of a one's-complement sum, as its two 32-bit halves (their sum folds to
// the sum of its 16-bit words).
static __always_inline __u64 csum_word(__u64 w) { return (w & 0xffffffff) + (w >> 32); }

// The UDP datagram of an Ethernet/IPv4 (no options) or Ethernet/IPv6 (no extension
// header) frame that gaond's parser would accept; 0 when it is anything else.
static __always_inline int parse_udp(struct xdp_md* ctx, struct frame* f) {
  void* data = (void*)(long)ctx->data;
  void* end = (void*)(long)ctx->data_end;
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > end) return 0;
  f->len = (__u32)(end - data);
  if (eth->h_proto == bpf_htons(ETH_P_IP)) {
    struct iphdr* ip = (void*)(eth + 1);
    if ((void*)(ip + 1) > end || ip->version != 4 || ip->ihl != 5) return 0;
    const __u32 total = bpf_ntohs(ip->tot_len);
    if (total < sizeof(*ip) + sizeof(struct udphdr) || total > f->len - sizeof(*eth)) return 0;
    if (ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(0x3fff))) return 0;
    __u64 s = 0;
    __u16* w = (__u16*)ip;
#pragma unroll
    for (int i = 0; i < 10; ++i) s += w[i];
    if (csum_fold(s) != 0xffff) return 0;
    struct udphdr* udp = (void*)(ip + 1);
    if ((void*)(udp + 1) > end) return 0;
    f->ulen = bpf_ntohs(udp->len);
    if (f->ulen < sizeof(*udp) || f->ulen > total - sizeof(*ip)) return 0;
    f->l4 = sizeof(*eth) + sizeof(*ip);
    f->is6 = 0;
    return 1;
  }
  if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr* ip6 = (void*)(eth + 1);
    if ((void*)(ip6 + 1) > end || ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP) return 0;
    const __u32 plen = bpf_ntohs(ip6->payload_len);
    if (plen > f->len - sizeof(*eth) - sizeof(*ip6)) return 0;
    struct udphdr* udp = (void*)(ip6 + 1);
    if ((void*)(udp + 1) > end) return 0;
    f->ulen = bpf_ntohs(udp->len);
    if (f->ulen < sizeof(*udp) || f->ulen > plen) return 0;
    f->l4 = sizeof(*eth) + sizeof(*ip6);
    f->is6 = 1;
    return 1;
  }
  return 0;
}

// Would gaond's parser take this datagram's UDP checksum? Valid; 0 over IPv4 ("none");
// or the pseudo-header sum alone (a checksum left to offload by a local sender). Anything
// else goes up to gaond, which passes it on as it is (and the host drops it).
static __always_inline int udp_csum_ok(struct xdp_md* ctx, const struct frame* f,
                                       struct kv_scratch* sc, __u32 pl) {
  sc->pl = pl;  // read back by the caller, on every way out
  void* data = (void*)(long)ctx->data;
  void* end = (void*)(long)ctx->data_end;
  __u64 ph = bpf_htons(IPPROTO_UDP) + bpf_htons((__u16)f->ulen);
  struct udphdr* udp;
  if (!f->is6) {
    struct iphdr* ip = data + sizeof(struct ethhdr);
    if ((void*)(ip + 1) > end) return 0;
    ph += (ip->saddr & 0xffff) + (ip->saddr >> 16) + (ip->daddr & 0xffff) + (ip->daddr >> 16);
    udp = (void*)(ip + 1);
  } else {
    struct ipv6hdr* ip6 = data + sizeof(struct ethhdr);
    if ((void*)(ip6 + 1) > end) return 0;
    __u16* w = (__u16*)&ip6->saddr;
#pragma unroll
    for (int i = 0; i < 16; ++i) ph += w[i];
    udp = (void*)(ip6 + 1);
  }
  if ((void*)(udp + 1) > end) return 0;
  const __u16 field = udp->check;
  if (!f->is6 && field == 0) return 1;
  __u16* uw = (__u16*)udp;
  __u64 sum = ph + uw[0] + uw[1] + uw[2] + uw[3];
  // 8 bytes at a time; past the end zeros: an odd last byte is padded with one (low in
  // this order).
  const __u8* q = sc->req;
  for (__u32 i = 0; i < REQ_MAX; i += 8) {
    if (i >= pl) break;
    sum += csum_word(*(const __u64*)(q + i) & low_bytes(pl - i));
  }
  if (csum_fold(sum) == 0xffff) return 1;
  return field == csum_fold(ph);
}

// Grows (or shrinks) the frame by `delta` bytes, keeping its first `keep` bytes (the
// headers) in front: at the tail where the driver left room there, else at the head — veth
// gives the frames of local sockets XDP's 256 bytes of headroom but almost no tailroom.
// Either way the frame is then its headers and a payload `delta` bytes longer, and
// shrinking it at the tail by `delta` gives back its old length.
static __always_inline int resize(struct xdp_md* ctx, int delta, __u32 keep,
                                  struct kv_scratch* sc) {
  if (!bpf_xdp_adjust_tail(ctx, delta)) return 0;
  if (delta <= 0 || bpf_xdp_load_bytes(ctx, 0, sc->hdrs, LEN(keep, 64))) return -1;
  if (bpf_xdp_adjust_head(ctx, -delta)) return -1;
  if (bpf_xdp_store_bytes(ctx, 0, sc->hdrs, LEN(keep, 64))) {
    bpf_xdp_adjust_head(ctx, delta);  // as it was
    return -1;
  }
  return 0;
}

// Host side: memcached's reply to a get that found nothing, alone in a datagram?
static __always_inline int bare_miss(struct xdp_md* ctx, const struct frame* f) {
  if (f->ulen != sizeof(struct udphdr) + MC_HDR + 5) return 0;
  void* data = (void*)(long)ctx->data;
  void* end = (void*)(long)ctx->data_end;
  __u8* p = data + (f->is6 ? 14 + 40 + 8 : 14 + 20 + 8);
  if ((void*)(p + MC_HDR + 5) > end) return 0;
  if (p[2] | p[3] | p[4] | (p[5] ^ 1)) return 0;  // sequence 0 of 1
  return p[8] == 'E' && p[9] == 'N' && p[10] == 'D' && p[11] == '\r' && p[12] == '\n';
}

// Swap the addresses and ports, set the lengths for a UDP payload of `n` bytes, and the
// checksums. The frame already has its final length.
static __always_inline int finish_reply(struct xdp_md* ctx, __u32 is6, __u32 n, int full_csum) {
  void* data = (void*)(long)ctx->data;
  void* end = (void*)(long)ctx->data_end;
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > end) return 0;
  __u8 mac[6];
  __builtin_memcpy(mac, eth->h_source, 6);
  __builtin_memcpy(eth->h_source, eth->h_dest, 6);
  __builtin_memcpy(eth->h_dest, mac, 6);
  struct udphdr* udp;
  __u64 sum = 0;
  const __u32 ulen = sizeof(struct udphdr) + n;
  if (!is6) {
    struct iphdr* ip = (void*)(eth + 1);
    if ((void*)(ip + 1) > end) return 0;
    const __u32 a = ip->saddr;
    ip->saddr = ip->daddr;
    ip->daddr = a;
    // The header checksum, updated for the new total length (RFC 1624), as gaond does.
    const __u16 old_total = bpf_ntohs(ip->tot_len);
    const __u16 total = (__u16)(sizeof(*ip) + ulen);
    ip->tot_len = bpf_htons(total);
    __u32 s = (__u16)~bpf_ntohs(ip->check) + (__u16)~old_total + total;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    ip->check = bpf_htons((__u16)~s);
    udp = (void*)(ip + 1);
    if ((void*)(udp + 1) > end) return 0;
    if (full_csum) {
      sum += (ip->saddr & 0xffff) + (ip->saddr >> 16) + (ip->daddr & 0xffff) + (ip->daddr >> 16);
      sum += bpf_htons(IPPROTO_UDP) + bpf_htons((__u16)ulen);
    }
  } else {
    struct ipv6hdr* ip6 = (void*)(eth + 1);
    if ((void*)(ip6 + 1) > end) return 0;
    struct in6_addr a = ip6->saddr;
    ip6->saddr = ip6->daddr;
    ip6->daddr = a;
    ip6->payload_len = bpf_htons((__u16)ulen);
    udp = (void*)(ip6 + 1);
    if ((void*)(udp + 1) > end) return 0;
    full_csum = 1;  // mandatory over IPv6
    __u16* w = (__u16*)&ip6->saddr;
#pragma unroll
    for (int i = 0; i < 16; ++i) sum += w[i];
    sum += bpf_htons(IPPROTO_UDP) + bpf_htons((__u16)ulen);
  }
  const __u16 port = udp->source;
  udp->source = udp->dest;
  udp->dest = port;
  udp->len = bpf_htons((__u16)ulen);
  udp->check = 0;
  if (!full_csum) return 1;
  // 8 bytes at a time, then the last 2-byte words, then an odd last byte.
  __u8* u = (__u8*)udp;
  __u32 at = 0;
  for (__u32 i = 0; i < (UDP_MAX_PAYLOAD + 8) / 8; ++i) {
    if (at + 8 > ulen) break;
    if ((void*)(u + at + 8) > end) return 0;
    sum += csum_word(*(__u64*)(u + at));
    at += 8;
  }
  for (__u32 i = 0; i < 3; ++i) {
    if (at + 2 > ulen) break;
    if ((void*)(u + at + 2) > end) return 0;
    sum += *(__u16*)(u + at);
    at += 2;
  }
  if (ulen & 1) {
    __u8* last = (__u8*)udp + (ulen - 1);
    if ((void*)(last + 1) > end) return 0;
    sum += *last;  // the odd byte, padded with a zero: first in network order, i.e. low here
  }
  __u16 c = (__u16)~csum_fold(sum);
  udp->check = c ? c : 0xffff;
  return 1;
}

// One NIC (GAON_LOCAL): what the fast path does not answer passes to the host stack.
static __always_inline int to_stack(__u32 fp) {
  gaon_fp_count(fp, GAON_FP_STAT_passed);
  return XDP_PASS;
}

// One NIC: a request the fast path does not answer goes to the writes program (which
// invalidates what it writes, then passes it to the stack). It is always loaded with this
// one; were it missing, everything goes (nothing stale can then be served).
static __always_inline int to_writes(struct xdp_md* ctx, struct kv_table_hdr* t, __u32 fp) {
  bpf_tail_call(ctx, &gaon_fp_progs, GAON_FP_KVCACHE_WRITES);
  if (t) kv_flush(t, fp, 0, 0);
  return to_stack(fp);
}

// The client of a request (its source address and port) as kv_pend's key.
static __always_inline int client_of(struct xdp_md* ctx, const struct frame* f,
                                     struct kv_pend_key* k) {
  void* data = (void*)(long)ctx->data;
  void* end = (void*)(long)ctx->data_end;
  struct udphdr* udp;
  if (!f->is6) {
    struct iphdr* ip = data + sizeof(struct ethhdr);
    if ((void*)(ip + 1) > end) return 0;
    k->ip[10] = k->ip[11] = 0xff;
    __builtin_memcpy(&k->ip[12], &ip->saddr, 4);
    udp = (void*)(ip + 1);
  } else {
    struct ipv6hdr* ip6 = data + sizeof(struct ethhdr);
    if ((void*)(ip6 + 1) > end) return 0;
    __builtin_memcpy(k->ip, &ip6->saddr, 16);
    udp = (void*)(ip6 + 1);
  }
  if ((void*)(udp + 1) > end) return 0;
  k->port = udp->source;
  return 1;
}

SEC("xdp")
int gaon_fp_kvcache(struct xdp_md* ctx) {
  __u32 zero = 0;
  struct gaon_fp_ctx* fc = bpf_map_lookup_elem(&gaon_fp_ctx, &zero);
  if (!fc) return XDP_PASS;
  const __u32 role = fc->role, peer = fc->peer, fp = fc->fp_slot, xsk = fc->xsk;
  const __u64 now = fc->now_ns;  // coarse: memcached's own clock ticks once a second
  const int local = role == GAON_LOCAL;
  struct gaon_fp_slot* fs = bpf_map_lookup_elem(&gaon_fp_slots, &fp);
  if (!fs || fs->chunks == 0) return local ? to_stack(fp) : gaon_hand_up(xsk, peer, fp);
  const __u32 first = fs->first_chunk, nchunks = fs->chunks;
  __u32 c0 = first;
  struct kv_table_hdr* t = bpf_map_lookup_elem(&gaon_fp_mem, &c0);
  if (!t || t->magic != KV_ABI_MAGIC) return local ? to_stack(fp) : gaon_hand_up(xsk, peer, fp);
    // Not answered here: to gaond (a bump), or (one NIC) to the writes program.
#define UP() (local ? to_writes(ctx, t, fp) : gaon_hand_up(xsk, peer, fp))

  struct frame f = {};
  if (!parse_udp(ctx, &f)) return UP();
  if (role == GAON_HOST) {
    if (bare_miss(ctx, &f)) {
      gaon_fp_count(fp, GAON_FP_STAT_forwarded);
      return bpf_redirect_map(&gaon_peers, peer, XDP_PASS);
    }
    return gaon_hand_up(xsk, peer, fp);
  }

  // ---- the request, copied out of the frame
  __u32 pl = f.ulen - sizeof(struct udphdr);
  if (pl < MC_HDR + 7 || pl > REQ_MAX) return UP();
  struct kv_scratch* sc = bpf_map_lookup_elem(&kv_scratch, &zero);
  if (!sc) return UP();
  const __u32 poff = f.l4 + sizeof(struct udphdr);
  if (bpf_xdp_load_bytes(ctx, poff, sc->req, LEN(pl, 512))) return UP();
  __u8* q = sc->req;
  __u8* fh = (void*)(long)ctx->data + poff;  // read in the frame: the copy is still in flight
  if ((void*)(fh + MC_HDR) > (void*)(long)ctx->data_end) return UP();
  if (fh[2] | fh[3] | fh[4] | (fh[5] ^ 1)) return UP();  // 0 of 1
  if (!udp_csum_ok(ctx, &f, sc, pl)) return UP();
  pl = *(volatile __u32*)&sc->pl;  // forget what the checksum loop taught (forget_bounds)
  if (pl < MC_HDR + 7 || pl > REQ_MAX) return UP();

  int kind;
  __u32 ko, klen;
  __u8 opcode = 0;
  if (q[MC_HDR] == 0x80) {  // binary: one request, nothing after it
    __u8* b = q + MC_HDR;
    opcode = b[1];
    klen = ((__u32)b[2] << 8) | b[3];
    const __u32 body = ((__u32)b[8] << 24) | ((__u32)b[9] << 16) | ((__u32)b[10] << 8) | b[11];
    if (opcode != 0x00 && opcode != 0x09 && opcode != 0x0c && opcode != 0x0d) return UP();
    if (b[4] != 0 || body != klen || pl != MC_HDR + BIN_HDR + klen) return UP();
    kind = BINARY;
    ko = MC_HDR + BIN_HDR;
  } else {
    if (q[8] != 'g' || q[9] != 'e' || q[10] != 't') return UP();
    if (q[11] == ' ') {
      kind = ASCII_GET;
      ko = MC_HDR + 4;
    } else if (q[11] == 's' && q[12] == ' ') {
      kind = ASCII_GETS;
      ko = MC_HDR + 5;
    } else {
      return UP();
    }
    if (q[(pl - 2) & 511] != '\r' || q[(pl - 1) & 511] != '\n') return UP();
    klen = pl - 2 - ko;
  }
  if (klen == 0 || klen > KV_MAX_KEY || klen > t->max_key) return UP();
  sc->klen = klen;
  // The hash (kv_abi.h), 8 bytes at a time; an ASCII key must hold no control character,
  // space or DEL (found a word at a time: a byte below 0x21, or one equal to 0x7f).
  __u64 h = kv_hash_init(klen), odd = 0;
  for (__u32 i = 0; i < (KV_MAX_KEY + 7) / 8; ++i) {
    const __u32 at = i * 8;
    if (at >= klen) break;
    const __u64 m = low_bytes(klen - at);
    const __u64 w = *(const __u64*)(q + ((ko + at) & 511)) & m;
    const __u64 y = w | (ONES * '!' & ~m), z = y ^ (ONES * 0x7f);  // '!': a byte allowed
    odd |= ((y - ONES * 0x21) & ~y) | ((z - ONES) & ~z);
    h = kv_hash_step(h, w);
  }
  if (kind != BINARY && (odd & (ONES * 0x80))) return UP();
  h = kv_hash_final(h);
  klen = forget_bounds(sc);
  if (klen == 0 || klen > KV_MAX_KEY) return UP();

  // ---- the set, then the way whose entry is this key
  const __u32 nsets = t->nsets;
  if (nsets == 0) return UP();
  __u32 chunk = 0, off = 0;
  kv_set_pos(t, kv_set_of(h, nsets), &chunk, &off);
  if (chunk >= nchunks) return UP();
  __u32 ck = first + chunk;
  __u8* mem = bpf_map_lookup_elem(&gaon_fp_mem, &ck);
  if (!mem || off > GAON_FP_CHUNK - KV_CHUNK_SLACK) return UP();
  off &= ~63u;  // sets are 64-byte aligned (kv_abi.h): the verifier may know it too
  BARRIER_VAR(off);
  struct kv_set* set = (void*)(mem + off);
  const __u32 tag = kv_tag(h), slot_bytes = t->slot_bytes;
  const __u64 gen = t->generation;
  // Writers in the kernel (one NIC): a slot is live while its version is its bucket's.
  struct kv_vbucket* vb = 0;
  // (kv_tab_at's lookup inline: with its other checks the verifier's work grows by half)
  if (t->flags & KV_F_KERNEL) {
    const __u32 vc = t->vb_chunk;
    if (vc == 0 || vc >= nchunks) return UP();
    __u32 vck = first + vc;
    struct kv_vbucket* vbs = bpf_map_lookup_elem(&gaon_fp_mem, &vck);
    if (!vbs) return UP();
    vb = &vbs[kv_vb_of(h, KV_VB_PER_CHUNK) & (KV_VB_PER_CHUNK - 1)];
  }
  struct kv_slot* hit = 0;
  __u32 seq = 0, way = 0;
  // The way whose entry has this hash (64 bits: another key with it is so unlikely that it
  // is only checked below, and then gaond decides).
  for (__u32 w = 0; w < KV_WAYS; ++w) {
    if (set->tag[w] != tag) continue;
    const __u32 soff = off + sizeof(struct kv_set) + w * slot_bytes;
    __u32 soff2 = soff;
    if (soff2 > GAON_FP_CHUNK - KV_CHUNK_SLACK) break;
    BARRIER_VAR(soff2);
    struct kv_slot* s = (void*)(mem + soff2);
    const __u32 s1 = *(volatile __u32*)&s->seq;
    if (s1 & 1) {  // being written: gaond decides
      gaon_fp_count(fp, GAON_FP_STAT_torn);
      return UP();
    }
    if (s->hash != h || s->klen != klen || s->generation != gen || s->expire_ns <= now) continue;
    if (vb && s->ver != *(volatile __u32*)&vb->ver) continue;  // written since it was read
    hit = s;
    seq = s1;
    way = w;
    break;
  }
  if (hit) {  // the key itself, 8 bytes at a time
    const __u8* kd = (__u8*)(hit + 1) + 6;
    for (__u32 i = 0; i < (KV_MAX_KEY + 7) / 8; ++i) {
      const __u32 at = i * 8;
      if (at >= klen) break;
      const __u64 a = *(const __u64*)(kd + at);
      const __u64 b = *(const __u64*)(q + ((ko + at) & 511));
      if ((a ^ b) & low_bytes(klen - at)) return UP();  // a hash collision
    }
    klen = forget_bounds(sc);
    if (klen == 0 || klen > KV_MAX_KEY) return UP();
  }

  // A binary miss always goes to gaond: memcached's binary GET reply carries no key, so
  // gaond can only match it to its request by request id, and a request it did not see
  // could be taken for one it did (and its value learned under the other's key).
  if (!hit && local) {  // to memcached; an ASCII GET's reply may be learned (tc egress)
    struct kv_tab k;
    __u32 ver = 0;
    if (kind != BINARY && kv_tab_at(t, first, nchunks, &k) && kv_idle(&k, h, now, &ver)) {
      struct kv_pend_key pk = {};
      struct kv_pend pv = {.hash = h, .generation = gen, .ver = ver, .kind = KV_PEND_GET};
      pk.req_id = *(__u16*)q;
      pk.fp_slot = fp;
      if (client_of(ctx, &f, &pk)) bpf_map_update_elem(&kv_pend, &pk, &pv, BPF_ANY);
    }
    return to_stack(fp);
  }
  if (!hit && kind == BINARY) return UP();
  if (!hit) {  // a miss: to memcached in the kernel, or to gaond to learn it
    const __u32 bit = kv_seen_bit(h);
    __u64* seen = (__u64*)((__u8*)t + KV_SEEN_OFF + (bit / 64) * 8);
    const __u64 m = 1ull << (bit & 63);
    if (*(volatile __u64*)seen & m) {
      gaon_fp_count(fp, GAON_FP_STAT_forwarded);
      return bpf_redirect_map(&gaon_peers, peer, XDP_PASS);
    }
    __sync_fetch_and_or(seen, m);
    return UP();
  }

  // ---- the reply's pieces, from the slot
  const __u32 hklen = hit->klen, vlen = hit->vlen, ftext = hit->ftext, ctext = hit->ctext;
  const int has_cas = hit->has_cas;
  if ((kind != ASCII_GET && !has_cas) || ctext > KV_CTEXT_MAX || ftext > KV_FTEXT_MAX ||
      vlen > KV_SLOT_MAX || hklen > KV_MAX_KEY)
    return UP();  // gaond serves or passes it as it would
  const __u32 vo = kv_value_off(hklen, ftext, ctext);
  __u32 n;                                // the UDP payload of the reply
  __u32 a_len = 0, b_off = 0, b_len = 0;  // ASCII: two pieces of the data
  const int with_key = opcode == 0x0c || opcode == 0x0d;
  if (kind == BINARY) {
    n = MC_HDR + BIN_HDR + 4 + (with_key ? hklen : 0) + vlen;
  } else {
    a_len = 6 + hklen + ftext + (kind == ASCII_GETS ? ctext : 0);
    b_off = vo - 2;
    b_len = 2 + vlen + KV_TAIL;
    n = MC_HDR + a_len + b_len;
  }
  if (n > UDP_MAX_PAYLOAD || vo + vlen + KV_TAIL > slot_bytes - sizeof(struct kv_slot)) return UP();

  const int delta = (int)(poff + n) - (int)f.len;
  if (resize(ctx, delta, poff, sc)) return UP();  // no room: gaond
  __u8* d = (__u8*)(hit + 1);
  int bad = 0;
  if (kind == BINARY) {
    __u8* r = sc->hdr;
    const __u32 k = with_key ? hklen : 0, body = 4 + k + vlen;
    const __u64 cas = hit->cas;
    const __u32 flags = hit->flags;
    r[0] = 0x81;
    r[1] = opcode;
    r[2] = (__u8)(k >> 8);
    r[3] = (__u8)k;
    r[4] = 4;
    r[5] = 0;
    r[6] = r[7] = 0;
    r[8] = (__u8)(body >> 24);
    r[9] = (__u8)(body >> 16);
    r[10] = (__u8)(body >> 8);
    r[11] = (__u8)body;
    __builtin_memcpy(&r[12], &q[MC_HDR + 12], 4);  // opaque
#pragma unroll
    for (int i = 0; i < 8; ++i) r[16 + i] = (__u8)(cas >> (56 - 8 * i));
    r[24] = (__u8)(flags >> 24);
    r[25] = (__u8)(flags >> 16);
    r[26] = (__u8)(flags >> 8);
    r[27] = (__u8)flags;
    bad |= bpf_xdp_store_bytes(ctx, poff + MC_HDR, r, BIN_HDR + 4);
    __u32 at = poff + MC_HDR + BIN_HDR + 4;
    if (with_key) {
      bad |= bpf_xdp_store_bytes(ctx, at, d + 6, LEN(hklen, 256));
      at += hklen;
    }
    if (vlen)
      bad |= bpf_xdp_store_bytes(ctx, at, d + (vo & (KV_SLOT_MAX - 1)), LEN(vlen, KV_SLOT_MAX));
  } else if (a_len == b_off) {  // gets, or no cas in the slot: the reply is one piece
    bad |= bpf_xdp_store_bytes(ctx, poff + MC_HDR, d, LEN(a_len + b_len, KV_SLOT_MAX));
  } else {  // get of an item with its cas: the text around the " CAS" part
    bad |= bpf_xdp_store_bytes(ctx, poff + MC_HDR, d, LEN(a_len, 512));
    bad |= bpf_xdp_store_bytes(ctx, poff + MC_HDR + a_len, d + (b_off & (KV_SLOT_MAX - 1)),
                               LEN(b_len, KV_SLOT_MAX));
  }
  // Was the slot rewritten while it was copied? Then put the request back: gaond decides.
  if (bad || *(volatile __u32*)&hit->seq != seq) {
    gaon_fp_count(fp, GAON_FP_STAT_torn);
    if (bpf_xdp_adjust_tail(ctx, -delta) || bpf_xdp_store_bytes(ctx, poff, sc->req, LEN(pl, 512)))
      return XDP_DROP;  // cannot happen: the frame had this length a moment ago
    return UP();
  }
  // The frame header: the request id echoed, datagram 0 of 1 (written in place: a helper
  // call costs more than these 8 bytes).
  __u8* mh = (void*)(long)ctx->data + poff;
  if ((void*)(mh + MC_HDR) > (void*)(long)ctx->data_end) return XDP_DROP;
  mh[0] = q[0];
  mh[1] = q[1];
  *(__u16*)(mh + 2) = 0;
  *(__u32*)(mh + 4) = bpf_htonl(0x00010000);
  if (!finish_reply(ctx, f.is6, n, (t->flags & KV_F_UDP_CSUM) != 0)) return XDP_DROP;
  const __u32 bit = 1u << way;
  if (!(*(volatile __u32*)&set->ref & bit)) __sync_fetch_and_or(&set->ref, bit);
  gaon_fp_count(fp, GAON_FP_STAT_answered);
  return XDP_TX;
}

#undef UP

// ---- one NIC: the writes program (tail-called by the fast path for what it does not
// answer). It reads the request's command line, invalidates what it writes (or everything,
// for what it cannot read), and passes the frame to the host stack unchanged.
static __always_inline int is_tcp(struct xdp_md* ctx) {
  void* data = (void*)(long)ctx->data;
  void* end = (void*)(long)ctx->data_end;
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > end) return 0;
  if (eth->h_proto == bpf_htons(ETH_P_IP)) {
    struct iphdr* ip = (void*)(eth + 1);
    return (void*)(ip + 1) <= end && ip->protocol == IPPROTO_TCP;
  }
  if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr* ip6 = (void*)(eth + 1);
    return (void*)(ip6 + 1) <= end && ip6->nexthdr == IPPROTO_TCP;
  }
  return 0;
}

SEC("xdp")
int gaon_fp_kvcache_writes(struct xdp_md* ctx) {
  __u32 zero = 0;
  struct gaon_fp_ctx* fc = bpf_map_lookup_elem(&gaon_fp_ctx, &zero);
  if (!fc) return XDP_PASS;
  const __u32 fp = fc->fp_slot;
  const __u64 now = fc->now_ns;
  struct kv_tab k;
  if (!kv_tab_of(fp, &k)) return to_stack(fp);
  struct frame f = {};
  if (!parse_udp(ctx, &f)) {
    // TCP goes to memcached's socket, where the stream reader reads it. Anything else of
    // an attached flow that is not a datagram read here (a first fragment, an IP header
    // with options): memcached might read it, so everything goes.
    if (!is_tcp(ctx)) kv_flush(k.t, fp, 0, now);
    return to_stack(fp);
  }
  const __u32 pl = f.ulen - sizeof(struct udphdr);
  if (pl <= MC_HDR) return to_stack(fp);  // memcached reads no command from it
  const __u32 poff = f.l4 + sizeof(struct udphdr);
  __u8* fh = (void*)(long)ctx->data + poff;
  if ((void*)(fh + MC_HDR) > (void*)(long)ctx->data_end) return to_stack(fp);
  const __u16 req_id = *(__u16*)fh;
  struct kv_wscratch* w = bpf_map_lookup_elem(&kv_wscratch, &zero);
  if (!w) return to_stack(fp);
  __u32 n = pl - MC_HDR;
  if (n > KV_LINE) n = KV_LINE;
  if (fh[2] | fh[3] | fh[4] | (fh[5] ^ 1) ||  // not datagram 0 of 1: not read here
      bpf_xdp_load_bytes(ctx, poff + MC_HDR, w->line, LEN(n, KV_LINE))) {
    kv_flush(k.t, fp, 0, now);
    return to_stack(fp);
  }
  if (w->line[0] == 0x80) {
    if (n < 24) {
      kv_flush(k.t, fp, 0, now);
      return to_stack(fp);
    }
    kv_read_binary(w, n);
  } else {
    __u32 nl = KV_LINE;
    for (__u32 i = 0; i < KV_LINE; ++i) {
      if (i >= n) break;
      if (w->line[i] == '\n') {
        nl = i;
        break;
      }
    }
    if (nl >= KV_LINE) {  // no whole line in what is read: everything
      kv_flush(k.t, fp, 0, now);
      return to_stack(fp);
    }
    kv_read_ascii(w, nl + 1);
  }
  // memcached reads every command in a datagram: one that holds more than this one
  // command (and its data) is not read whole here, so everything goes.
  if (w->cmd.kind != KV_C_FLUSH && w->cmd.line_len + w->cmd.data != pl - MC_HDR) {
    kv_flush(k.t, fp, 0, now);
    return to_stack(fp);
  }
  const __u64 acked = kv_apply(&k, fp, w, 1, now);
  if (acked) {  // its acknowledgement ends the bucket's outstanding state (tc egress)
    struct kv_pend_key pk = {};
    struct kv_pend pv = {.hash = acked, .kind = KV_PEND_WRITE};
    pk.req_id = req_id;
    pk.fp_slot = fp;
    if (client_of(ctx, &f, &pk)) bpf_map_update_elem(&kv_pend, &pk, &pv, BPF_ANY);
  }
  return to_stack(fp);
}

#include "kvcache_stream.bpf.h"
// (after the stream programs: it follows their connections' replies)
#include "kvcache_egress.bpf.h"

char LICENSE[] SEC("license") = "GPL";
