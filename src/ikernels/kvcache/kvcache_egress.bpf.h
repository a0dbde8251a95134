// kvcache on a server with one NIC: memcached's UDP replies on their way out of its
// interface (tc egress), included by kvcache.bpf.c. A reply to a request remembered in
// kv_pend (by client, request id and instance):
//   - to a UDP write: its acknowledgement, which ends the bucket's outstanding state;
//   - to a GET that missed: the value is learned into the table, memcached's reply text as
//     it is (kv_abi.h), if the bucket's version is still the one the GET saw, the table's
//     generation too, and the key's expiry is known (kvcache_local.bpf.h).
// memcached's TCP replies on watched connections are followed too (kv_tcp_replies,
// kvcache_stream.bpf.h): a write's reply ends its outstanding state. The reply itself always
// goes on unchanged.
#pragma once

#include <linux/pkt_cls.h>

// A decimal number at line[at..] of at most `digits` digits, ended by a byte that is not
// one. Its end, or 0 when there is none.
static __always_inline __u32 kv_dec(const struct kv_wscratch* w, __u32 at, __u32 digits, __u64* v) {
  __u64 x = 0;
  __u32 i = 0;
  for (; i < 21; ++i) {
    if (i > digits) return 0;
    const __u8 c = w->line[(at + i) & (KV_LINE - 1)];
    if (c < '0' || c > '9') break;
    x = x * 10 + (c - '0');
  }
  if (i == 0) return 0;
  *v = x;
  return at + i;
}

// The first space at or after `from` (before `end`), by bpf_loop: at (0: none).
struct kv_space_ctx {
  const struct kv_wscratch* w;
  __u32 from, end, at;
};
static long kv_space_step(__u64 i, void* arg) {
  struct kv_space_ctx* x = arg;
  const __u32 p = x->from + (__u32)i;
  if (p >= x->end) return 1;
  if (x->w->line[p & (KV_LINE - 1)] != ' ') return 0;
  x->at = p;
  return 1;
}

// The expiry a value learned now for key hash h gets (0: learn nothing): its own ttl
// record, else none unless another key's expiry was lost there; max_ttl and a delayed
// flush bound it.
static __always_inline __u64 kv_fill_expiry(struct kv_tab* k, __u64 h, __u64 now) {
  struct kv_vbucket* b = kv_bucket(k, h);
  __u64 exp = ~0ull;
  int found = 0;
  for (__u32 i = 0; i < 4; ++i) {
    const __u64 r = *(volatile __u64*)&b->ttl[i];
    if (r == 0 || (__u32)r != (__u32)h) continue;
    found = 1;
    const __u64 e = (r >> 32) == KV_TTL_NEVER ? ~0ull : (r >> 32) << KV_TTL_SHIFT;
    if (e < exp) exp = e;
  }
  if (!found && *(volatile __u64*)&b->lost_ns > now) return 0;
  const __u64 max_ttl = k->t->max_ttl_ns;
  if (max_ttl && now + max_ttl < exp) exp = now + max_ttl;
  const __u64 fa = *(volatile __u64*)&k->t->flush_at_ns;
  if (fa > now && fa < exp) exp = fa;
  return exp > now ? exp : 0;
}

static __always_inline struct kv_slot* kv_slot_at(__u8* mem, __u32 off, __u32 w, __u32 slot_bytes) {
  __u32 soff = off + sizeof(struct kv_set) + w * slot_bytes;
  if (soff > GAON_FP_CHUNK - KV_CHUNK_SLACK) return 0;
  soff &= ~7u;  // slots are 8-byte aligned; atomics need the verifier to see it
  BARRIER_VAR(soff);
  return (void*)(mem + soff);
}

// Learns the reply at `at` (n bytes after memcached's frame header) for the GET `pv`.
static __always_inline int kv_fill(struct __sk_buff* skb, __u32 fp, __u32 at, __u32 n,
                                   const struct kv_pend* pv) {
  struct kv_tab k;
  if (!kv_tab_of(fp, &k)) return 0;
  struct kv_table_hdr* t = k.t;
  __u32 zero = 0;
  struct kv_wscratch* w = bpf_map_lookup_elem(&kv_wscratch, &zero);
  if (!w) return 0;
  if (n < 6 + 1 + 4 + KV_TAIL || n > KV_SLOT_MAX) return 0;
  const __u32 head = n < KV_LINE ? n : KV_LINE;
  if (bpf_skb_load_bytes(skb, at, w->line, LEN(head, KV_LINE))) return 0;
  if ((kv_word_at(w, 0) & kv_low(6)) != W6('V', 'A', 'L', 'U', 'E', ' ')) return 0;
  // "VALUE " KEY " FLAGS BYTES" [" CAS"] "\r\n"
  struct kv_space_ctx sp = {.w = w, .from = 6, .end = head};
  bpf_loop(KV_MAX_KEY + 1, kv_space_step, &sp, 0);
  const __u32 ke = sp.at;
  const __u32 klen = ke - 6;
  if (ke == 0 || klen == 0 || klen > t->max_key) return 0;
  __u64 flags = 0, bytes = 0, cas = 0;
  const __u32 fe = kv_dec(w, ke + 1, 10, &flags);
  if (fe == 0 || flags > 0xffffffffull || w->line[fe & (KV_LINE - 1)] != ' ') return 0;
  const __u32 be = kv_dec(w, fe + 1, 7, &bytes);
  if (be == 0 || bytes > t->max_value) return 0;
  __u32 ce = be;
  if (w->line[be & (KV_LINE - 1)] == ' ') {
    ce = kv_dec(w, be + 1, 20, &cas);
    if (ce == 0) return 0;
  }
  if (w->line[ce & (KV_LINE - 1)] != '\r' || w->line[(ce + 1) & (KV_LINE - 1)] != '\n') return 0;
  const __u32 hl = ce + 2;
  if (n != hl + bytes + KV_TAIL) return 0;  // one item, then END
  __u8 tail[8] = {};
  if (bpf_skb_load_bytes(skb, at + n - KV_TAIL, tail, KV_TAIL)) return 0;
  if ((*(__u64*)tail & kv_low(KV_TAIL)) != W7('\r', '\n', 'E', 'N', 'D', '\r', '\n')) return 0;
  const __u64 h = kv_key_hash(w, 6, klen);
  if (h != pv->hash) return 0;  // not the key its GET asked for
  const __u32 ftext = be - ke, ctext = ce - be;
  if (ftext > KV_FTEXT_MAX || ctext > KV_CTEXT_MAX) return 0;
  const __u32 slot_bytes = t->slot_bytes;
  if (n + sizeof(struct kv_slot) > slot_bytes || slot_bytes > KV_SLOT_MAX) return 0;
  // Nothing written since its GET (the version), no flush (the generation), an expiry.
  const __u64 now = bpf_ktime_get_coarse_ns();
  struct kv_vbucket* b = kv_bucket(&k, h);
  if (t->generation != pv->generation || *(volatile __u32*)&b->ver != pv->ver) return 0;
  const __u64 expire = kv_fill_expiry(&k, h, now);
  if (expire == 0) return 0;

  // The way: its own entry, a free one, a dead one, else CLOCK's victim.
  const __u32 nsets = t->nsets;
  if (nsets == 0) return 0;
  __u32 chunk = 0, off = 0;
  kv_set_pos(t, kv_set_of(h, nsets), &chunk, &off);
  if (chunk >= t->vb_chunk || chunk >= k.nchunks) return 0;
  __u32 ck = k.first + chunk;
  __u8* mem = bpf_map_lookup_elem(&gaon_fp_mem, &ck);
  if (!mem || off > GAON_FP_CHUNK - KV_CHUNK_SLACK) return 0;
  off &= ~63u;
  BARRIER_VAR(off);
  struct kv_set* set = (void*)(mem + off);
  const __u32 tag = kv_tag(h);
  const __u64 gen = t->generation;
  __u32 way = KV_WAYS;
  for (__u32 i = 0; i < KV_WAYS; ++i) {
    struct kv_slot* s = kv_slot_at(mem, off, i, slot_bytes);
    if (!s) return 0;
    if (set->tag[i] == tag && s->hash == h) {
      way = i;
      break;
    }
  }
  for (__u32 i = 0; i < KV_WAYS && way == KV_WAYS; ++i) {
    struct kv_slot* s = kv_slot_at(mem, off, i, slot_bytes);
    if (!s) return 0;
    if (set->tag[i] == 0 || s->hash == 0 || s->generation != gen || s->expire_ns <= now) way = i;
  }
  if (way == KV_WAYS) {
    const __u32 hand = set->hand, ref = set->ref;
    for (__u32 i = 0; i < KV_WAYS; ++i) {
      const __u32 x = (hand + i) & (KV_WAYS - 1);
      if (!(ref & (1u << x))) {
        way = x;
        break;
      }
    }
    if (way == KV_WAYS) way = hand & (KV_WAYS - 1);
    set->ref = 0;  // a hint: every way gets a second chance from here
    set->hand = (way + 1) & (KV_WAYS - 1);
  }
  struct kv_slot* s = kv_slot_at(mem, off, way & (KV_WAYS - 1), slot_bytes);
  if (!s) return 0;
  const __u32 seq = *(volatile __u32*)&s->seq;
  if ((seq & 1) || __sync_val_compare_and_swap(&s->seq, seq, seq + 1) != seq) return 0;
  // The slot is this writer's (odd) until the end.
  int bad = bpf_skb_load_bytes(skb, at, (__u8*)(s + 1), LEN(n, KV_SLOT_MAX));
  s->klen = (__u16)klen;
  s->vlen = (__u16)bytes;
  s->hash = bad ? 0 : h;
  s->generation = gen;
  s->expire_ns = expire;
  s->cas = cas;
  s->flags = (__u32)flags;
  s->has_cas = ctext != 0;
  s->ftext = (__u8)ftext;
  s->ctext = (__u8)ctext;
  s->ver = pv->ver;
  __sync_fetch_and_add(&s->seq, 1);  // even: readers may take it
  set->tag[way & (KV_WAYS - 1)] = tag;
  return !bad;
}

SEC("tc")
int gaon_kvcache_egress(struct __sk_buff* skb) {
  struct gaon_flow fk = {};
  struct kv_pend_key pk = {};
  __u32 l4;
  __u16 eth_proto;
  if (bpf_skb_load_bytes(skb, 12, &eth_proto, 2)) return TC_ACT_OK;
  if (eth_proto == bpf_htons(ETH_P_IP)) {
    struct iphdr ip;
    if (bpf_skb_load_bytes(skb, 14, &ip, sizeof(ip))) return TC_ACT_OK;
    if (ip.protocol == IPPROTO_TCP && !(ip.frag_off & bpf_htons(0x3fff))) {
      struct tcphdr th;
      if (bpf_skb_load_bytes(skb, 14 + ip.ihl * 4, &th, sizeof(th)) == 0)
        kv_tcp_replies(skb, 14 + ip.ihl * 4, th.seq, th.doff);
      return TC_ACT_OK;
    }
    if (ip.ihl != 5 || ip.protocol != IPPROTO_UDP || (ip.frag_off & bpf_htons(0x3fff)))
      return TC_ACT_OK;
    fk.family = 4;
    fk.ip[10] = fk.ip[11] = pk.ip[10] = pk.ip[11] = 0xff;
    __builtin_memcpy(&fk.ip[12], &ip.saddr, 4);
    __builtin_memcpy(&pk.ip[12], &ip.daddr, 4);
    l4 = 14 + 20;
  } else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr ip6;
    if (bpf_skb_load_bytes(skb, 14, &ip6, sizeof(ip6))) return TC_ACT_OK;
    if (ip6.nexthdr == IPPROTO_TCP) {
      struct tcphdr th;
      if (bpf_skb_load_bytes(skb, 14 + 40, &th, sizeof(th)) == 0)
        kv_tcp_replies(skb, 14 + 40, th.seq, th.doff);
      return TC_ACT_OK;
    }
    if (ip6.nexthdr != IPPROTO_UDP) return TC_ACT_OK;
    fk.family = 6;
    __builtin_memcpy(fk.ip, &ip6.saddr, 16);
    __builtin_memcpy(pk.ip, &ip6.daddr, 16);
    l4 = 14 + 40;
  } else {
    return TC_ACT_OK;
  }
  struct udphdr uh;
  if (bpf_skb_load_bytes(skb, l4, &uh, sizeof(uh))) return TC_ACT_OK;
  fk.proto = IPPROTO_UDP;
  fk.port = uh.source;
  struct gaon_flow_target* ft = gaon_flow_lookup(&fk);
  if (!ft || ft->fp_slot == 0) return TC_ACT_OK;
  const __u32 fp = ft->fp_slot;
  const __u32 ulen = bpf_ntohs(uh.len);
  if (ulen < sizeof(uh) + MC_HDR || ulen > skb->len - l4) return TC_ACT_OK;
  __u8 mh[MC_HDR];
  if (bpf_skb_load_bytes(skb, l4 + sizeof(uh), mh, MC_HDR)) return TC_ACT_OK;
  pk.port = uh.dest;
  pk.req_id = *(__u16*)mh;
  pk.fp_slot = fp;
  struct kv_pend* e = bpf_map_lookup_elem(&kv_pend, &pk);
  if (!e) return TC_ACT_OK;
  const struct kv_pend pv = *e;
  bpf_map_delete_elem(&kv_pend, &pk);
  if (pv.kind == KV_PEND_WRITE) {  // acknowledged: one write less outstanding
    struct kv_tab k;
    if (!kv_tab_of(fp, &k)) return TC_ACT_OK;
    kv_acked(&k, pv.hash);
    return TC_ACT_OK;
  }
  if (mh[2] | mh[3] | mh[4] | (mh[5] ^ 1)) {  // not datagram 0 of 1: not learned
    gaon_fp_count(fp, GAON_FP_STAT_fills_rejected);
    return TC_ACT_OK;
  }
  const __u32 n = ulen - sizeof(uh) - MC_HDR;
  if (n == 5) return TC_ACT_OK;  // END: a miss, nothing to learn
  if (kv_fill(skb, fp, l4 + sizeof(uh) + MC_HDR, n, &pv))
    gaon_fp_count(fp, GAON_FP_STAT_fills);
  else
    gaon_fp_count(fp, GAON_FP_STAT_fills_rejected);
  return TC_ACT_OK;
}
