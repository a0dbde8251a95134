// gaon's XDP steering program, attached to both interfaces of a bump: the wire (clients)
// and the host (the application). For each frame it finds the attached flow it belongs to
// — on the wire, IPv4 or IPv6 UDP/TCP to an attached local address; on the host, from one
// — and then:
//   - the flow's instance has a fast path (gaon_flows value): tail-call it (gaon_fp_progs),
//     which answers, forwards or hands the frame to gaond itself;
//   - otherwise: hand the frame to gaond's AF_XDP socket for that interface and receive
//     queue (gaon_xsks);
//   - no attached flow: forward it to the other interface in the kernel (gaon_peers).
// When gaond's socket is gone (gaond stopped or crashed: the kernel empties its XSKMAP
// slot), attached flows are forwarded too: fail-open. So are they, fast paths included,
// while gaond is alive but stalled: it renews a lease at every poll, and a lease older than
// its bound sends attached flows around gaond (fail-safe: what gaond does not see, such as
// a write, must not leave a fast path serving a stale value).
//
// On a server with one NIC (GAON_LOCAL) TCP passes at once: its connections are watched at
// memcached's own sockets, after reassembly (kvcache_stream.bpf.h), not here.
//
// Every map, layout and counter is defined in gaon/xdp_abi.h.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <xdp/xdp_helpers.h>

#include "gaon/xdp_abi.h"
#include "gaon_maps.bpf.h"

// The attached flow this frame belongs to (its gaon_flows value), or 0.
static __always_inline struct gaon_flow_target* attached(void* data, void* end, __u32 role) {
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > end) return 0;
  struct gaon_flow k = {};
  __u16* ports;
  if (eth->h_proto == bpf_htons(ETH_P_IP)) {
    struct iphdr* ip = (void*)(eth + 1);
    if ((void*)(ip + 1) > end || ip->ihl < 5) return 0;
    if (ip->protocol != IPPROTO_UDP && (ip->protocol != IPPROTO_TCP || role == GAON_LOCAL))
      return 0;
    // Fragments pass (no ports to match); but one NIC (GAON_LOCAL): a first fragment has
    // its ports, and goes to the flow's programs (they cannot read it: a write might be in
    // it, so everything of the instance goes).
    if (ip->frag_off & bpf_htons(role == GAON_LOCAL ? 0x1fff : 0x3fff)) return 0;
    ports = (void*)ip + ip->ihl * 4;  // source, destination: UDP and TCP alike
    if ((void*)(ports + 2) > end) return 0;
    k.family = 4;
    k.proto = ip->protocol;
    k.ip[10] = k.ip[11] = 0xff;
    __builtin_memcpy(&k.ip[12], role != GAON_HOST ? &ip->daddr : &ip->saddr, 4);
  } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr* ip6 = (void*)(eth + 1);
    if ((void*)(ip6 + 1) > end) return 0;
    // Extension headers (fragments among them) are not followed: such frames pass. One NIC:
    // a first fragment's ports are found behind its fragment header (as for IPv4).
    ports = (void*)(ip6 + 1);
    __u8 next = ip6->nexthdr;
    if (next == 44 && role == GAON_LOCAL) {  // the fragment header: next, 0, offset, id
      __u8* fh = (void*)(ip6 + 1);
      if ((void*)(fh + 8) > end || (fh[2] | (fh[3] & 0xf8))) return 0;  // not the first
      next = fh[0];
      ports = (void*)(fh + 8);
    }
    if (next != IPPROTO_UDP && (next != IPPROTO_TCP || role == GAON_LOCAL)) return 0;
    if ((void*)(ports + 2) > end) return 0;
    k.family = 6;
    k.proto = next;
    __builtin_memcpy(k.ip, role != GAON_HOST ? &ip6->daddr : &ip6->saddr, 16);
  } else {
    return 0;
  }
  k.port = role != GAON_HOST ? ports[1] : ports[0];
  return gaon_flow_lookup(&k);
}

// For libxdp's dispatcher (GAON_XDP_RUN_PRIO): the next program runs after an XDP_PASS.
// Everything else ends the chain: XDP_REDIRECT (to gaond's socket, the other interface),
// XDP_TX and XDP_DROP (fast paths).
struct {
  __uint(priority, GAON_XDP_RUN_PRIO);
  __uint(XDP_PASS, 1);
} XDP_RUN_CONFIG(gaon_steer);

SEC("xdp")
int gaon_steer(struct xdp_md* ctx) {
  struct gaon_port* port = gaon_port_of(ctx->ingress_ifindex);
  if (!port) {
    gaon_count(GAON_STAT_not_ours);
    return XDP_PASS;
  }
  const __u32 role = port->role, peer = port->peer;
  struct gaon_flow_target* t = attached((void*)(long)ctx->data, (void*)(long)ctx->data_end, role);
  if (!t) {
    gaon_count(GAON_STAT_forwarded);
    return bpf_redirect_map(&gaon_peers, peer, XDP_PASS);
  }
  const __u32 fp = t->fp_slot, xsk = gaon_xsk_key(role, ctx->rx_queue_index);
  const __u64 now = bpf_ktime_get_coarse_ns();
  if (!gaon_lease_fresh(now)) {  // gaond stalled: around it (and its fast paths), in the kernel
    gaon_count(GAON_STAT_lease_expired);
    if (fp) gaon_fp_count(fp, GAON_FP_STAT_lease_expired);
    return bpf_redirect_map(&gaon_peers, peer, XDP_PASS);
  }
  if (fp) {
    struct gaon_fp_slot* s = bpf_map_lookup_elem(&gaon_fp_slots, &fp);
    __u32 zero = 0;
    struct gaon_fp_ctx* c = bpf_map_lookup_elem(&gaon_fp_ctx, &zero);
    if (s && c && s->prog) {
      c->role = role;
      c->peer = peer;
      c->fp_slot = fp;
      c->xsk = xsk;
      c->now_ns = now;
      gaon_count(GAON_STAT_fast_path);
      bpf_tail_call(ctx, &gaon_fp_progs, s->prog);
    }
    gaon_count(GAON_STAT_fast_path_missing);  // not loaded: gaond does it all
  }
  return gaon_hand_up(xsk, peer, 0);
}

char LICENSE[] SEC("license") = "GPL";
