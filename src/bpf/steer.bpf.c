// gaon's XDP steering program, attached (native mode) to both interfaces of a bump: the
// wire (clients) and the host (the application). It sends to gaond's AF_XDP sockets only
// the frames of attached flows — on the wire, IPv4 UDP/TCP to an attached local
// address; on the host, from one — and forwards everything else to the other interface
// inside the kernel (devmap). When gaond's socket for an interface is gone (gaond stopped
// or crashed: the kernel empties its XSKMAP slot), attached flows are forwarded too:
// fail-open.
//
// Maps (gaond fills them; one copy shared by both interfaces):
//   gaon_ports  ifindex -> {role, peer slot}: which side a frame arrived on
//   gaon_xsks   slot (0 wire, 1 host) -> gaond's AF_XDP socket for that interface
//   gaon_peers  slot -> ifindex to forward to (devmap)
//   gaon_flows  {ip, port, proto} -> 1: the local addresses of attached flows (ip 0: any)
//   gaon_stats  per-CPU counters: steered, forwarded, fail_open, not_ours
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

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

enum { STAT_STEERED, STAT_FORWARDED, STAT_FAIL_OPEN, STAT_NOT_OURS, STAT_N };

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

// Is this frame one of an attached flow? (IPv4 UDP/TCP, local side by role.)
static __always_inline int attached(void* data, void* end, __u32 role) {
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return 0;
  struct iphdr* ip = (void*)(eth + 1);
  if ((void*)(ip + 1) > end || ip->ihl < 5) return 0;
  if (ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_TCP) return 0;
  if (ip->frag_off & bpf_htons(0x3fff)) return 0;  // fragments pass (no ports to match)
  __u16* ports = (void*)ip + ip->ihl * 4;          // source, destination: UDP and TCP alike
  if ((void*)(ports + 2) > end) return 0;
  struct gaon_flow k = {};
  k.proto = ip->protocol;
  k.ip = role == 0 ? ip->daddr : ip->saddr;
  k.port = role == 0 ? ports[1] : ports[0];
  if (bpf_map_lookup_elem(&gaon_flows, &k)) return 1;
  k.ip = 0;
  return bpf_map_lookup_elem(&gaon_flows, &k) != 0;
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
  if (attached(data, end, port->role)) {
    __u32 slot = port->role;
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
