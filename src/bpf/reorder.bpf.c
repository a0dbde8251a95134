// For the one-NIC tests: at a client interface's tc egress, in front of an HTB qdisc, puts
// every fourth TCP segment that carries bytes into a slow class (1:20, by skb->priority)
// and the rest into a fast one (1:10): the server receives the segments after a held-back
// one first, as a network that reorders delivers them (tests/one_nic_test.cc sets it up).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} reorder_seen SEC(".maps");

SEC("tc")
int gaon_reorder(struct __sk_buff* skb) {
  struct iphdr ip;
  struct tcphdr th;
  skb->priority = TC_H_MAKE(1 << 16, 0x10);
  if (skb->protocol != bpf_htons(ETH_P_IP) || bpf_skb_load_bytes(skb, 14, &ip, sizeof(ip)) ||
      ip.protocol != IPPROTO_TCP || bpf_skb_load_bytes(skb, 14 + ip.ihl * 4, &th, sizeof(th)))
    return TC_ACT_OK;
  skb->priority = TC_H_MAKE(1 << 16, 0x10);
  if (14 + ip.ihl * 4 + th.doff * 4 >= skb->len) return TC_ACT_OK;  // no bytes
  __u32 zero = 0;
  __u64* n = bpf_map_lookup_elem(&reorder_seen, &zero);
  if (n && __sync_fetch_and_add(n, 1) % 4 == 3) skb->priority = TC_H_MAKE(1 << 16, 0x20);
  return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
