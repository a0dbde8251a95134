// XDP_PASS, nothing else. For the testbed: a veth that receives frames sent with XDP_TX or
// redirected by XDP only has its NAPI scheduled when it has an XDP program itself (see
// MACHINE-FACTS), so the client's interface gets this one when the bump runs native XDP.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

SEC("xdp")
int gaon_xdp_pass(struct xdp_md* ctx) { return XDP_PASS; }

char LICENSE[] SEC("license") = "GPL";
