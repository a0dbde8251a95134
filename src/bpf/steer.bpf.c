// gaon's XDP steering program, attached (native mode) to both interfaces of a bump: the
// wire (clients) and the host (the application). It sends to gaond's AF_XDP sockets only
// the frames of attached flows — on the wire, IPv4 UDP/TCP to an attached local
// address; on the host, from one — and forwards everything else to the other interface
// inside the kernel (devmap). When gaond's socket for an interface is gone (gaond stopped
// or crashed: the kernel empties its XSKMAP slot), attached flows are forwarded too:
// fail-open. So are they while gaond is alive but stalled: it renews a lease at every poll,
// and a lease older than its bound sends attached flows around gaond (fail-safe).
//
// Maps (gaond fills them; one copy shared by both interfaces):
//   gaon_ports  ifindex -> {role, peer slot}: which side a frame arrived on
//   gaon_xsks   slot (0 wire, 1 host) -> gaond's AF_XDP socket for that interface
//   gaon_peers  slot -> ifindex to forward to (devmap)
//   gaon_flows  {ip, port, proto} -> hint table + 1 (0: none): the local addresses of
//               attached flows (ip 0: any)
//   gaon_hints  the hint tables (include/gaon/steer_hints.h), memory-mapped by gaond:
//               per table, one-byte counters of cached keys by slot, then "seen" bits
//   gaon_lease  gaond's lease (include/gaon/lease.h), memory-mapped by gaond: attached
//               flows go to gaond only while gaond keeps renewing it
//   gaon_stats  per-CPU counters: steered, forwarded, fail_open, not_ours, kept_gets,
//               kept_replies, lease_expired
//
// Hints (memcached_get, for kvcache): on the wire, an ASCII `get KEY` alone in a UDP
// datagram is steered only when KEY's slot counts a cached key or KEY was not seen since
// gaond last aged the table (the program sets the bit); otherwise it is kept in the kernel
// (forwarded to the application). On the host, memcached's bare miss reply ("END\r\n") is
// kept in the kernel. Everything else of an attached flow is steered.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "gaon/lease.h"

struct gaon_port {
  __u32 role;  // 0: wire, 1: host
  __u32 peer;  // slot in gaon_peers of the other interface
};

struct gaon_flow {
  __u32 ip;    // network order; 0: any local address
  __u16 port;  // network order
  __u8 proto;  // IPPROTO_UDP / IPPROTO_TCP
  __u8 pad;
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 64);
  __type(key, __u32);
  __type(value, struct gaon_port);
} gaon_ports SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_XSKMAP);
  __uint(max_entries, 2);
  __type(key, __u32);
  __type(value, __u32);
} gaon_xsks SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_DEVMAP);
  __uint(max_entries, 2);
  __type(key, __u32);
  __type(value, __u32);
} gaon_peers SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, struct gaon_flow);
  __type(value, __u32);
} gaon_flows SEC(".maps");

// Mirrors SteerHints (include/gaon/steer_hints.h).
#define HINT_SLOTS (1u << 18)
#define HINT_WORDS ((HINT_SLOTS + HINT_SLOTS / 8) / 8)  // per table, in 64-bit words
#define HINT_TABLES 16

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(map_flags, BPF_F_MMAPABLE);
  __uint(max_entries, HINT_TABLES * HINT_WORDS);
  __type(key, __u32);
  __type(value, __u64);
} gaon_hints SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(map_flags, BPF_F_MMAPABLE);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct gaon_lease);
} gaon_lease SEC(".maps");

// Is gaond's lease fresh (or is there no lease)?
static __always_inline int lease_fresh(void) {
  __u32 zero = 0;
  struct gaon_lease* l = bpf_map_lookup_elem(&gaon_lease, &zero);
  if (!l) return 0;
  const __u64 bound = *(volatile __u64*)&l->bound_ns;
  if (bound == 0) return 1;
  const __u64 renewed = *(volatile __u64*)&l->renewed_ns;
  return bpf_ktime_get_ns() - renewed <= bound;
}

enum {
  STAT_STEERED,
  STAT_FORWARDED,
  STAT_FAIL_OPEN,
  STAT_NOT_OURS,
  STAT_KEPT_GETS,
  STAT_KEPT_REPLIES,
  STAT_LEASE_EXPIRED,
  STAT_N
};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, STAT_N);
  __type(key, __u32);
  __type(value, __u64);
} gaon_stats SEC(".maps");

static __always_inline void count(__u32 what) {
  __u64* c = bpf_map_lookup_elem(&gaon_stats, &what);
  if (c) *c += 1;
}

// The attached flow this frame belongs to (IPv4 UDP/TCP, local side by role): its map
// value (hint table + 1, or 0), or -1 when it is not attached.
static __always_inline long attached(void* data, void* end, __u32 role, struct iphdr** ipp) {
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return -1;
  struct iphdr* ip = (void*)(eth + 1);
  if ((void*)(ip + 1) > end || ip->ihl < 5) return -1;
  if (ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_TCP) return -1;
  if (ip->frag_off & bpf_htons(0x3fff)) return -1;  // fragments pass (no ports to match)
  __u16* ports = (void*)ip + ip->ihl * 4;           // source, destination: UDP and TCP alike
  if ((void*)(ports + 2) > end) return -1;
  *ipp = ip;
  struct gaon_flow k = {};
  k.proto = ip->protocol;
  k.ip = role == 0 ? ip->daddr : ip->saddr;
  k.port = role == 0 ? ports[1] : ports[0];
  __u32* v = bpf_map_lookup_elem(&gaon_flows, &k);
  if (!v) {
    k.ip = 0;
    v = bpf_map_lookup_elem(&gaon_flows, &k);
  }
  return v ? (long)*v : -1;
}

// The UDP payload after memcached's 8-byte frame header of a single-datagram message, and
// its length; 0 when the frame is something else.
static __always_inline __u8* mc_payload(struct iphdr* ip, void* end, __u32* len) {
  if (ip->protocol != IPPROTO_UDP) return 0;
  struct udphdr* udp = (void*)ip + ip->ihl * 4;
  if ((void*)(udp + 1) > end) return 0;
  __u32 n = bpf_ntohs(udp->len);
  __u8* f = (void*)(udp + 1);
  if (n < sizeof(*udp) + 8 || (void*)(f + 8) > end) return 0;
  if (f[2] | f[3] | f[4] | (f[5] ^ 1)) return 0;  // sequence 0 of 1 datagram
  *len = n - sizeof(*udp) - 8;
  return f + 8;
}

// Wire side: keep this GET in the kernel? (An ASCII `get KEY\r\n` whose key is not cached
// and was seen since the table was aged.)
static __always_inline int keep_get(struct iphdr* ip, void* end, __u32 table) {
  __u32 len = 0;
  __u8* p = mc_payload(ip, end, &len);
  if (!p || len < 7 || len > 4 + 250 + 2 || (void*)(p + 4) > end) return 0;
  if (p[0] != 'g' || p[1] != 'e' || p[2] != 't' || p[3] != ' ') return 0;
  const __u32 klen = len - 6;
  __u32 h = 2166136261u;  // FNV-1a, as SteerHints::hash
  for (__u32 i = 0; i < 250; ++i) {
    if (i >= klen) break;
    __u8* c = p + 4 + i;
    if ((void*)(c + 1) > end) return 0;
    if (*c <= ' ' || *c == 0x7f) return 0;  // more keys, or odd bytes: gaond decides
    h = (h ^ *c) * 16777619u;
  }
  __u8* crlf = p + 4 + (klen & 0xff);
  if ((void*)(crlf + 2) > end || crlf[0] != '\r' || crlf[1] != '\n') return 0;
  const __u32 slot = h & (HINT_SLOTS - 1);
  __u32 w = table * HINT_WORDS + slot / 8;
  __u64* counters = bpf_map_lookup_elem(&gaon_hints, &w);
  if (!counters || ((*counters >> ((slot & 7) * 8)) & 0xff)) return 0;  // cached: steer
  w = table * HINT_WORDS + HINT_SLOTS / 8 + slot / 64;
  __u64* seen = bpf_map_lookup_elem(&gaon_hints, &w);
  if (!seen) return 0;
  const __u64 bit = 1ull << (slot & 63);
  if (*seen & bit) return 1;
  __sync_fetch_and_or(seen, bit);  // first sighting: gaond may learn the key from the reply
  return 0;
}

// Host side: keep this reply in the kernel? (memcached's bare miss reply "END\r\n".)
static __always_inline int keep_reply(struct iphdr* ip, void* end) {
  __u32 len = 0;
  __u8* p = mc_payload(ip, end, &len);
  if (!p || len != 5 || (void*)(p + 5) > end) return 0;
  return p[0] == 'E' && p[1] == 'N' && p[2] == 'D' && p[3] == '\r' && p[4] == '\n';
}

SEC("xdp")
int gaon_steer(struct xdp_md* ctx) {
  __u32 ifindex = ctx->ingress_ifindex;
  struct gaon_port* port = bpf_map_lookup_elem(&gaon_ports, &ifindex);
  if (!port) {
    count(STAT_NOT_OURS);
    return XDP_PASS;
  }
  void* data = (void*)(long)ctx->data;
  void* end = (void*)(long)ctx->data_end;
  struct iphdr* ip = 0;
  const long flow = attached(data, end, port->role, &ip);
  if (flow >= 0 && !lease_fresh()) {
    count(STAT_LEASE_EXPIRED);  // gaond stalled: around it, in the kernel
  } else if (flow >= 0) {
    __u32 slot = port->role;
    if (flow > 0 && flow <= HINT_TABLES && ip) {
      if (slot == 0 && keep_get(ip, end, (__u32)flow - 1)) {
        count(STAT_KEPT_GETS);
        return bpf_redirect_map(&gaon_peers, port->peer, XDP_PASS);
      }
      if (slot == 1 && keep_reply(ip, end)) {
        count(STAT_KEPT_REPLIES);
        return bpf_redirect_map(&gaon_peers, port->peer, XDP_PASS);
      }
    }
    if (bpf_map_lookup_elem(&gaon_xsks, &slot)) {
      count(STAT_STEERED);
      return bpf_redirect_map(&gaon_xsks, slot, XDP_DROP);
    }
    count(STAT_FAIL_OPEN);
  } else {
    count(STAT_FORWARDED);
  }
  return bpf_redirect_map(&gaon_peers, port->peer, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
