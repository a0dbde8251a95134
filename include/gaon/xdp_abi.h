// What gaond and its XDP programs share: every map's name, key and value, every constant
// and counter, written once. A C header on purpose: src/bpf/steer.bpf.c, each ikernel's
// fast path (src/ikernels/<name>/<name>.bpf.c) and gaond (src/ports/xdp_prog.cc) include
// it, and gaond checks each map's key and value sizes against it when it loads the
// programs (one line naming the map when they differ).
//
// The steering program runs on both interfaces of a bump: the wire (clients) and the host
// (the application). It finds the attached flow a frame belongs to (gaon_flows) and, when
// the flow's instance has a fast path, tail-calls that type's program (gaon_fp_progs) with
// the frame; otherwise it hands the frame to gaond (gaon_xsks) or forwards it to the other
// interface in the kernel (gaon_peers).
//
// A fast path's state: gaon_fp_mem is one memory-mapped array of GAON_FP_CHUNK-byte
// chunks. Each instance with a fast path owns a run of them (gaon_fp_slots: the first
// chunk and how many), laid out by its type (for kvcache: kv_abi.h). gaond writes it; the
// fast path reads it, and never outside its own instance's run (it is handed only that
// run's slot, and checks every chunk index against it).
#pragma once

#include <linux/types.h>

// ---- maps (names as the programs declare them)
#define GAON_MAP_PORTS "gaon_ports"
#define GAON_MAP_XSKS "gaon_xsks"
#define GAON_MAP_PEERS "gaon_peers"
#define GAON_MAP_FLOWS "gaon_flows"
#define GAON_MAP_LEASE "gaon_lease"
#define GAON_MAP_STATS "gaon_stats"
#define GAON_MAP_FP_PROGS "gaon_fp_progs"
#define GAON_MAP_FP_SLOTS "gaon_fp_slots"
#define GAON_MAP_FP_MEM "gaon_fp_mem"
#define GAON_MAP_FP_CTX "gaon_fp_ctx"
#define GAON_MAP_FP_STATS "gaon_fp_stats"

#define GAON_MAX_PORTS 64           // gaon_ports entries (interfaces a program may run on)
#define GAON_MAX_QUEUES 64          // receive queues per interface gaond takes frames from
#define GAON_MAX_FLOWS 65536        // gaon_flows entries
#define GAON_FP_SLOTS 64            // instances with a fast path at once (slot 0 is never used)
#define GAON_FP_PROGS 8             // fast path programs (by gaon_fp_prog)
#define GAON_FP_CHUNK (1u << 20)    // bytes per gaon_fp_mem element
#define GAON_FP_CHUNKS_DEFAULT 256  // gaon_fp_mem entries unless gaond says otherwise

// The steering program's run priority in libxdp's multi-program dispatcher (lower runs
// first; libxdp's default is 50, xdp-filter's 10). gaon runs after filters and programs of
// the default priority: what they drop never reaches it, and in a bump it forwards every
// frame it does not steer to the other interface, so nothing after it would see them.
// Its XDP_PASS (one NIC: every frame it does not answer) goes on to the next program.
#define GAON_XDP_RUN_PRIO 100

// Which side a frame arrived on. gaon_ports is an array of GAON_MAX_PORTS (a power of
// two) probed linearly from gaon_port_home(ifindex) up to the first empty element
// (ifindex 0): one inlined array lookup per frame where a hash lookup cost ~20 ns.
// GAON_LOCAL: an interface of a server with one NIC (gaond --local): frames of attached
// flows are addressed to it, as on a bump's wire, and what the programs do not answer
// passes to the host stack (no peer, no AF_XDP socket).
enum gaon_role { GAON_WIRE = 0, GAON_HOST = 1, GAON_LOCAL = 2 };
struct gaon_port {
  __u32 ifindex;  // 0: empty
  __u32 role;     // enum gaon_role
  __u32 peer;     // slot in gaon_peers of the other interface
};
static inline __u32 gaon_port_home(__u32 ifindex) { return ifindex & (GAON_MAX_PORTS - 1); }

// gaon_xsks: one AF_XDP socket per receive queue of each interface (an AF_XDP socket only
// takes frames from the queue it is bound to), keyed by role and queue. A queue beyond
// GAON_MAX_QUEUES gets a key with no socket (gaond refuses such interfaces).
static inline __u32 gaon_xsk_key(__u32 role, __u32 queue) {
  return queue < GAON_MAX_QUEUES ? role * GAON_MAX_QUEUES + queue : 2 * GAON_MAX_QUEUES;
}

// An attached flow's local address (gaon_flows key): IPv4 as ::ffff:a.b.c.d.
struct gaon_flow {
  __u8 ip[16];  // network order; all zero: any local address of the family
  __u16 port;   // network order
  __u8 proto;   // IPPROTO_UDP / IPPROTO_TCP
  __u8 family;  // 4 or 6
};
// gaon_flows value: the instance's fast path slot (0: none; the frame goes to gaond).
struct gaon_flow_target {
  __u32 fp_slot;
};

// The lease gaond holds on the programs (gaon_lease, one element, memory-mapped). gaond
// writes renewed_ns (CLOCK_MONOTONIC) at every poll of its datapath. Frames of attached
// flows go to gaond or to a fast path only while now - renewed_ns <= bound_ns; once gaond
// stalls longer, they are forwarded in the kernel (fail-safe: a write gaond would not see
// must not leave a stale value served), until gaond renews. bound_ns 0: no lease.
// The programs' `now` is bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC as of the last tick: a
// few ns to read, against ~15 for the precise clock), read before renewed_ns. It lags
// gaond's clock (by a tick, more on a CPU back from idle) and never leads it, so the
// programs see a lease lapse no earlier than gaond does (a renewal "in the future" counts
// as fresh); docs/fast-path.md has why that is safe.
struct gaon_lease {
  __u64 renewed_ns;
  __u64 bound_ns;
};

// The fast paths known to gaond (gaon_fp_progs index, gaon_fp_slot.prog).
// GAON_FP_KVCACHE_WRITES is kvcache's second XDP program, tail-called by its fast path
// on a server with one NIC for every request it does not answer (writes are invalidated
// there before memcached sees them).
enum gaon_fp_prog { GAON_FP_NONE = 0, GAON_FP_KVCACHE = 1, GAON_FP_KVCACHE_WRITES = 2 };

// gaon_fp_slots value: one instance's fast path. Written by gaond before any flow points
// at the slot; prog 0 = free.
struct gaon_fp_slot {
  __u32 prog;         // enum gaon_fp_prog
  __u32 first_chunk;  // its run in gaon_fp_mem
  __u32 chunks;
  __u32 instance;  // gaond's instance id (for its stats)
};

// What the steering program hands the fast path it tail-calls (gaon_fp_ctx, per CPU).
struct gaon_fp_ctx {
  __u32 role;     // enum gaon_role
  __u32 peer;     // gaon_peers slot of the other interface
  __u32 fp_slot;  // the instance's gaon_fp_slots entry
  __u32 xsk;      // the frame's gaon_xsks key (gaon_xsk_key of its role and queue)
  __u64 now_ns;   // the steering program's `now` (gaon_lease), for the fast path's expiry
};

// ---- counters
// The steering program's (gaon_stats, per CPU): X(name, what it counts).
#define GAON_STEER_STATS(X)                                                             \
  X(steered, "frames of attached flows handed to gaond")                                \
  X(forwarded, "frames of no attached flow, forwarded to the other interface")          \
  X(fail_open, "frames of attached flows forwarded because gaond has no socket there")  \
  X(not_ours, "frames on an interface the program does not know (passed to the stack)") \
  X(lease_expired, "frames of attached flows forwarded because gaond's lease lapsed")   \
  X(fast_path, "frames of attached flows given to their instance's fast path")          \
  X(fast_path_missing, "frames whose fast path program is not loaded (handed to gaond)")

#define GAON_X_ENUM(name, doc) GAON_STAT_##name,
enum gaon_steer_stat { GAON_STEER_STATS(GAON_X_ENUM) GAON_STEER_NSTATS };

// Each fast path's, per instance (gaon_fp_stats, per CPU, at fp_slot * GAON_FP_NSTATS + stat).
#define GAON_FP_STATS(X)                                                                     \
  X(answered, "requests answered on the wire by the fast path (XDP_TX)")                     \
  X(forwarded, "frames forwarded in the kernel to the other interface by the fast path")     \
  X(handed_up, "frames handed to gaond by the fast path (what it does not handle)")          \
  X(torn, "reads that found an entry being written, or changed while read (handed up)")      \
  X(fail_open, "frames the fast path would hand up but gaond had no socket (forwarded)")     \
  X(lease_expired, "frames forwarded around the fast path and gaond: gaond's lease lapsed")  \
  X(passed, "one NIC: frames the fast path passed to the host stack")                        \
  X(writes, "one NIC: writes seen in the kernel (their keys invalidated)")                   \
  X(flushes, "one NIC: flushes, and what could not be read, invalidating everything")        \
  X(fills, "one NIC: values learned in the kernel from the application's replies")           \
  X(fills_rejected, "one NIC: replies not learned (a write since their request, busy...)")   \
  X(tcp_commands, "one NIC: commands framed on the application's TCP connections")           \
  X(tcp_unframed, "one NIC: TCP segments that could not be framed (everything invalidated)") \
  X(tcp_out_of_order,                                                                        \
    "one NIC: TCP segments dropped as they came before a missing one (the sender resends)")   \
  X(tcp_resent_unread,                                                                       \
    "one NIC: resends of TCP bytes read that the stack had not taken (everything invalidated)")

#define GAON_X_FP_ENUM(name, doc) GAON_FP_STAT_##name,
enum gaon_fp_stat { GAON_FP_STATS(GAON_X_FP_ENUM) GAON_FP_NSTATS };
