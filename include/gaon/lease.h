// The lease gaond holds on its XDP steering program, shared by the program (steer.bpf.c)
// and gaond (afxdp.cc): one definition for both sides. A C header on purpose.
//
// gaond writes `renewed_ns` (CLOCK_MONOTONIC, the clock bpf_ktime_get_ns reads) at every
// poll of its datapath through a memory-mapped array (no syscall). The program hands
// frames of attached flows to gaond only while now - renewed_ns <= bound_ns; once gaond
// stalls (SIGSTOP, a hang, a debugger, a page-in storm) for longer than that, it forwards
// them in the kernel, as for a gaond that is gone, until gaond renews. bound_ns 0: no
// lease (frames go to gaond's sockets while they exist).
#pragma once

#include <linux/types.h>

#define GAON_LEASE_MAP "gaon_lease"

struct gaon_lease {
  __u64 renewed_ns;
  __u64 bound_ns;
};
