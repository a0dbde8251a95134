// The maps every gaon XDP program shares (the steering program and each fast path), as
// BPF C declares them, and the small helpers over them. The steering program's object
// creates them; gaond gives each fast path's object the same maps (bpf_map__reuse_fd)
// before loading it. Layouts: gaon/xdp_abi.h.
#pragma once

#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

#include "gaon/xdp_abi.h"

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, GAON_MAX_PORTS);
  __type(key, __u32);  // gaon_port_home(ifindex), then the next ones (xdp_abi.h)
  __type(value, struct gaon_port);
} gaon_ports SEC(".maps");

// The interface's gaon_ports entry, or 0: not one gaon was given.
static __always_inline struct gaon_port* gaon_port_of(__u32 ifindex) {
  for (__u32 i = 0; i < GAON_MAX_PORTS; ++i) {
    __u32 k = (gaon_port_home(ifindex) + i) & (GAON_MAX_PORTS - 1);
    struct gaon_port* p = bpf_map_lookup_elem(&gaon_ports, &k);
    if (!p || p->ifindex == 0) return 0;
    if (p->ifindex == ifindex) return p;
  }
  return 0;
}

struct {
  __uint(type, BPF_MAP_TYPE_XSKMAP);
  __uint(max_entries, 2 * GAON_MAX_QUEUES);
  __type(key, __u32);  // gaon_xsk_key(role, queue)
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
  __uint(max_entries, GAON_MAX_FLOWS);
  __type(key, struct gaon_flow);
  __type(value, struct gaon_flow_target);
} gaon_flows SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(map_flags, BPF_F_MMAPABLE);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct gaon_lease);
} gaon_lease SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, GAON_STEER_NSTATS);
  __type(key, __u32);
  __type(value, __u64);
} gaon_stats SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
  __uint(max_entries, GAON_FP_PROGS);
  __type(key, __u32);
  __type(value, __u32);
} gaon_fp_progs SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, GAON_FP_SLOTS);
  __type(key, __u32);
  __type(value, struct gaon_fp_slot);
} gaon_fp_slots SEC(".maps");

struct gaon_fp_chunk {
  __u8 b[GAON_FP_CHUNK];
};
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(map_flags, BPF_F_MMAPABLE);
  __uint(max_entries, GAON_FP_CHUNKS_DEFAULT);  // gaond sets it (--xdp-memory)
  __type(key, __u32);
  __type(value, struct gaon_fp_chunk);
} gaon_fp_mem SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct gaon_fp_ctx);
} gaon_fp_ctx SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, GAON_FP_SLOTS* GAON_FP_NSTATS);
  __type(key, __u32);
  __type(value, __u64);
} gaon_fp_stats SEC(".maps");

// The attached flow of a local address (its gaon_flows value), or of any local address of
// its family; 0: none. `k` is changed.
static __always_inline struct gaon_flow_target* gaon_flow_lookup(struct gaon_flow* k) {
  struct gaon_flow_target* v = bpf_map_lookup_elem(&gaon_flows, k);
  if (!v) {
    __builtin_memset(k->ip, 0, sizeof(k->ip));
    v = bpf_map_lookup_elem(&gaon_flows, k);
  }
  return v;
}

static __always_inline void gaon_count(__u32 what) {
  __u64* c = bpf_map_lookup_elem(&gaon_stats, &what);
  if (c) *c += 1;
}

static __always_inline void gaon_fp_add(__u32 fp_slot, __u32 what, __u64 n) {
  __u32 k = fp_slot * GAON_FP_NSTATS + what;
  __u64* c = bpf_map_lookup_elem(&gaon_fp_stats, &k);
  if (c) *c += n;
}
static __always_inline void gaon_fp_count(__u32 fp_slot, __u32 what) {
  gaon_fp_add(fp_slot, what, 1);
}

// Is gaond's lease fresh at `now` (bpf_ktime_get_coarse_ns, read before this), or is there
// no lease? A renewal after `now` (gaond reads the precise clock, which leads the coarse
// one) is fresh. The clock first, then renewed_ns: a lapse seen here is one gaond sees.
static __always_inline int gaon_lease_fresh(__u64 now) {
  __u32 zero = 0;
  struct gaon_lease* l = bpf_map_lookup_elem(&gaon_lease, &zero);
  if (!l) return 0;
  const __u64 bound = *(volatile __u64*)&l->bound_ns;
  if (bound == 0) return 1;
  const __u64 renewed = *(volatile __u64*)&l->renewed_ns;
  return now <= renewed || now - renewed <= bound;
}

// Hand the frame to gaond (its socket for the interface and queue it arrived on: `xsk`,
// gaon_xsk_key), or, when gaond has no socket there, forward it to the other side
// (fail-open). Counted as the steering program's (fp_slot 0) or the fast path's.
static __always_inline int gaon_hand_up(__u32 xsk, __u32 peer, __u32 fp_slot) {
  if (bpf_map_lookup_elem(&gaon_xsks, &xsk)) {
    if (fp_slot)
      gaon_fp_count(fp_slot, GAON_FP_STAT_handed_up);
    else
      gaon_count(GAON_STAT_steered);
    return bpf_redirect_map(&gaon_xsks, xsk, XDP_DROP);
  }
  if (fp_slot)
    gaon_fp_count(fp_slot, GAON_FP_STAT_fail_open);
  else
    gaon_count(GAON_STAT_fail_open);
  return bpf_redirect_map(&gaon_peers, peer, XDP_PASS);
}
