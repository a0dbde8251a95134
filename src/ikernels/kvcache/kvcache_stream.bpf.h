// kvcache on a server with one NIC: memcached's own TCP connections, watched in stream
// order (included by kvcache.bpf.c).
//
//   - gaon_kvcache_sockops (sock_ops, on the cgroup): a connection memcached accepts on an
//     attached TCP flow's address and port joins kv_socks, with its state in kv_conns;
//   - gaon_kvcache_verdict (sk_skb verdict, no strparser): the kernel hands it each chunk
//     of the connection's bytes in stream order (after TCP reassembly), before memcached
//     can read them. It frames memcached's text and meta commands across chunks (a line
//     started in one chunk is kept in the connection's state until its end comes; a
//     storage command's data block is passed unread), invalidates their writes, and passes
//     every byte on unchanged (SK_PASS).
// What it cannot frame (binary protocol, a line it cannot read, a storage line memcached
// would not frame as it does): the instance's table is flushed for that chunk and every
// later one on the connection (it never guesses where a command starts).
//
// (The kernel's strparser, the other way to frame a stream for sk_skb, was tried first: on
// 6.x it left a command's reply pending now and then until the client sent more — about 1
// in 300 commands sent a byte at a time; docs/one-nic.md.)
#pragma once

// A connection by its addresses and ports, as sock_ops, sk_skb and sk_msg all read them
// from the socket (sk_msg has no socket cookie). IPv4: the first 4 bytes of each address.
struct kv_conn_key {
  __u32 family;
  __u32 ports;  // local (host order) << 16 | remote (host order)
  __u32 local[4];
  __u32 remote[4];
};
// (remote_port: network order, in the upper half on some kernels' contexts)
static __always_inline __u32 kv_ports(__u32 local, __u32 remote) {
  if (remote > 0xffff) remote >>= 16;
  return (local & 0xffff) << 16 | bpf_ntohs((__u16)remote);
}
#define KV_CONN_KEY(ctx, k)                                       \
  do {                                                            \
    (k)->family = (ctx)->family;                                  \
    (k)->ports = kv_ports((ctx)->local_port, (ctx)->remote_port); \
    if ((k)->family == 10) {                                      \
      (k)->local[0] = (ctx)->local_ip6[0];                        \
      (k)->local[1] = (ctx)->local_ip6[1];                        \
      (k)->local[2] = (ctx)->local_ip6[2];                        \
      (k)->local[3] = (ctx)->local_ip6[3];                        \
      (k)->remote[0] = (ctx)->remote_ip6[0];                      \
      (k)->remote[1] = (ctx)->remote_ip6[1];                      \
      (k)->remote[2] = (ctx)->remote_ip6[2];                      \
      (k)->remote[3] = (ctx)->remote_ip6[3];                      \
    } else {                                                      \
      (k)->local[0] = (ctx)->local_ip4;                           \
      (k)->remote[0] = (ctx)->remote_ip4;                         \
    }                                                             \
  } while (0)

#include <linux/tcp.h>

#define KV_ACKQ 32  // commands awaiting memcached's reply, per connection
struct kv_conn {
  __u32 fp_slot;  // the instance
  __u32 state;    // KV_CONN_*
  __u64 skip;     // bytes of a data block still to pass unread
  __u32 have;     // bytes of a line begun in an earlier chunk, kept in ws.line
  // Replies followed (kv_tcp_replies, at tc egress): the commands in order, qout..qin, each
  // with the kind of reply it gets (KV_R_*) and the hash of its write whose
  // acknowledgement that reply is (0: none). Once they cannot be followed (acks_lost),
  // writes on the connection clear by write_timeout instead.
  __u32 acks_lost;
  __u32 qin, qout;
  __u32 rseq;  // the reply stream's next sequence number (once rseq_ok)
  __u32 rseq_ok;
  __u32 rhave;  // bytes of a reply line begun in an earlier segment, kept in rws.line
  __u32 pad;
  __u64 rskip;  // reply bytes (a value's data) still to pass unread
  __u64 qhash[KV_ACKQ];
  __u8 qkind[KV_ACKQ];
  // Working space, the connection's own: its verdicts run one at a time (as do its
  // transmits), but a per-CPU buffer could be shared with a program that interrupts one
  // running in process context (socket backlog processing runs with softirqs on).
  struct kv_wscratch ws;   // the command side
  struct kv_wscratch rws;  // the reply side
};
enum {
  KV_CONN_LINES = 0,     // in command lines
  KV_CONN_LONG_GET = 1,  // inside a get line longer than KV_LINE (read-only)
  KV_CONN_UNFRAMED = 2,  // lost: every message flushes
};
// (Not an LRU: a watched connection's state must never be evicted. Removed at close.)
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __uint(map_flags, BPF_F_NO_PREALLOC);  // (memory only for the connections there are)
  __type(key, struct kv_conn_key);
  __type(value, struct kv_conn);
} kv_conns SEC(".maps");
struct {  // a new connection's state, made here before it is copied into kv_conns
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct kv_conn);
} kv_conn_new SEC(".maps");
struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, 65536);
  __type(key, struct kv_conn_key);
  __type(value, __u64);
} kv_socks SEC(".maps");

// A connection that cannot be watched (the maps full): its writes would go unseen, so the
// instance's table is given up (its magic broken: nothing is served or learned again).
static __always_inline void kv_give_up(__u32 fp) {
  struct kv_tab k;
  if (kv_tab_of(fp, &k)) {
    __sync_lock_test_and_set(&k.t->magic, KV_ABI_MAGIC ^ 1);
    gaon_fp_count(fp, GAON_FP_STAT_tcp_unframed);
  }
}

SEC("sockops")
int gaon_kvcache_sockops(struct bpf_sock_ops* so) {
  struct kv_conn_key ck = {};
  if (so->op == BPF_SOCK_OPS_STATE_CB) {  // its state goes with it
    if (so->args[1] == BPF_TCP_CLOSE) {
      KV_CONN_KEY(so, &ck);
      bpf_map_delete_elem(&kv_conns, &ck);
    }
    return 1;
  }
  if (so->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) return 1;
  struct gaon_flow fk = {};
  fk.proto = IPPROTO_TCP;
  __u32 a[4];
  if (so->family == 2 /* AF_INET */) {
    fk.family = 4;
    fk.ip[10] = fk.ip[11] = 0xff;
    a[0] = so->local_ip4;
    __builtin_memcpy(&fk.ip[12], &a[0], 4);
  } else if (so->family == 10 /* AF_INET6 */) {
    a[0] = so->local_ip6[0];
    a[1] = so->local_ip6[1];
    a[2] = so->local_ip6[2];
    a[3] = so->local_ip6[3];
    __builtin_memcpy(fk.ip, a, 16);
    // IPv4 accepted on a dual-stack socket (::ffff:a.b.c.d): the IPv4 flow's
    fk.family = (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff)) ? 4 : 6;
  } else {
    return 1;
  }
  fk.port = bpf_htons((__u16)so->local_port);
  struct gaon_flow_target* ft = gaon_flow_lookup(&fk);
  if (!ft || ft->fp_slot == 0) return 1;
  const __u32 fp = ft->fp_slot;
  KV_CONN_KEY(so, &ck);
  __u32 zero = 0;
  // The state is too big for the stack: a per-CPU template goes in, then its fields are
  // set in the map (the connection is not in the socket map yet: nothing reads them).
  struct kv_conn* t = bpf_map_lookup_elem(&kv_conn_new, &zero);
  struct kv_conn* c = 0;
  if (t && bpf_map_update_elem(&kv_conns, &ck, t, BPF_ANY) == 0)
    c = bpf_map_lookup_elem(&kv_conns, &ck);
  if (!c) {
    bpf_map_delete_elem(&kv_conns, &ck);
    kv_give_up(fp);
    return 1;
  }
  c->fp_slot = fp;
  c->state = KV_CONN_LINES;
  c->skip = 0;
  c->have = 0;
  c->acks_lost = 0;
  c->qin = c->qout = 0;
  c->rseq = c->rseq_ok = c->rhave = 0;
  c->rskip = 0;
  if (bpf_sock_hash_update(so, &kv_socks, &ck, BPF_NOEXIST)) {
    bpf_map_delete_elem(&kv_conns, &ck);
    kv_give_up(fp);
    return 1;
  }
  bpf_sock_ops_cb_flags_set(so, BPF_SOCK_OPS_STATE_CB_FLAG);
  return 1;
}

// Bytes read per step of the stream programs: what one line usually fits in.
#define KV_PIECE 64

// The first '\n' in w->line from `from` to `end` (at most KV_PIECE bytes), a word at a
// time: its offset + 1 (0: none).
static __always_inline __u32 kv_find_nl(const struct kv_wscratch* w, __u32 from, __u32 end) {
  for (__u32 i = 0; i < KV_PIECE / 8; ++i) {
    const __u32 p = from + i * 8;
    if (p >= end) break;
    const __u64 x = kv_word_at(w, p) ^ 0x0a0a0a0a0a0a0a0aull;
    const __u64 m = (x - 0x0101010101010101ull) & ~x & 0x8080808080808080ull;
    if (!m) continue;
    // the lowest flagged byte is the first '\n' (flags above it may be borrows)
    __u32 b = 0;
    if (!(m & 0xffffffffull)) b += 4;
    if (!((m >> (b * 8)) & 0xffff)) b += 2;
    if (!((m >> (b * 8)) & 0xff)) b += 1;
    return p + b < end ? p + b + 1 : 0;
  }
  return 0;
}

// A decimal number ending just before line[end] (at most 20 digits; by bpf_loop): its
// start, or -1.
struct kv_numb_ctx {
  const struct kv_wscratch* w;
  __u64 v, scale;
  __u32 end, n;
};
static long kv_numb_step(__u64 i, void* arg) {
  struct kv_numb_ctx* x = arg;
  if (i >= x->end) return 1;
  const __u8 c = x->w->line[(x->end - 1 - (__u32)i) & (KV_LINE - 1)];
  if (c < '0' || c > '9') return 1;
  x->v += (__u64)(c - '0') * x->scale;
  x->scale *= 10;
  x->n++;
  return 0;
}
static __always_inline int kv_num_before(const struct kv_wscratch* w, __u32 end, __u64* v) {
  struct kv_numb_ctx x = {.w = w, .scale = 1, .end = end};
  bpf_loop(20, kv_numb_step, &x, 0);
  if (x.n == 0) return -1;
  *v = x.v;
  return (int)(end - x.n);
}

// One chunk of a watched connection (kv_chunk_step, by bpf_loop: a command per step).
struct kv_chunk {
  struct __sk_buff* skb;
  struct kv_conn* c;
  struct kv_wscratch* w;
  __u64 now;
  __u32 pos, len, fp;
};

static __always_inline void kv_lost(struct kv_conn* c, __u32 fp, __u64 now) {
  c->state = KV_CONN_UNFRAMED;
  struct kv_tab k;
  if (kv_tab_of(fp, &k)) kv_flush(k.t, fp, 0, now);
  gaon_fp_count(fp, GAON_FP_STAT_tcp_unframed);
}

static long kv_chunk_step(__u64 unused, void* arg) {
  struct kv_chunk* x = arg;
  struct kv_conn* c = x->c;
  struct kv_wscratch* w = x->w;
  if (x->pos >= x->len || c->state == KV_CONN_UNFRAMED) return 1;
  const __u32 rest = x->len - x->pos;
  if (c->skip) {  // a data block: passed unread
    const __u32 n = c->skip < rest ? (__u32)c->skip : rest;
    c->skip -= n;
    x->pos += n;
    return 0;
  }
  // The line so far (begun in an earlier chunk, in w->line), then what this chunk has.
  const __u32 have = c->have & (KV_LINE - 1);
  __u32 n = KV_LINE - have;
  if (n > rest) n = rest;
  if (n > KV_PIECE) n = KV_PIECE;
  if (n == 0 || bpf_skb_load_bytes(x->skb, x->pos, w->line + have, n & (KV_PIECE * 2 - 1))) {
    kv_lost(c, x->fp, x->now);
    return 1;
  }
  const __u32 end =
      kv_find_nl(w, have, have + n);   // the line's length with its '\n' (0: not in what is read)
  if (c->state == KV_CONN_LONG_GET) {  // the rest of a long get line, up to its end
    c->have = 0;
    if (end) {
      c->state = KV_CONN_LINES;
      x->pos += end - have;
    } else {
      x->pos += n;
    }
    return 0;
  }
  if (w->line[0] == 0x80) {  // binary: not framed here
    kv_lost(c, x->fp, x->now);
    return 1;
  }
  if (end == 0) {
    if (have + n < KV_LINE) {  // the chunk ends inside the line: kept for the next one
      c->have = have + n;
      x->pos += n;
      return 0;
    }
    // Longer than what is read: a multi-get memcached reads in parts, else lost.
    const __u64 w0 = kv_word_at(w, 0);
    if ((w0 & kv_low(4)) == W4('g', 'e', 't', ' ') ||
        (w0 & kv_low(5)) == W5('g', 'e', 't', 's', ' ')) {
      c->state = KV_CONN_LONG_GET;
      c->have = 0;
      x->pos += n;
      if (!c->acks_lost && c->qin - c->qout < KV_ACKQ) {  // its reply: VALUEs, then END
        c->qhash[c->qin & (KV_ACKQ - 1)] = 0;
        c->qkind[c->qin & (KV_ACKQ - 1)] = KV_R_END;
        __sync_fetch_and_add(&c->qin, 1);
      } else {
        c->acks_lost = 1;
      }
      return 0;
    }
    kv_lost(c, x->fp, x->now);
    return 1;
  }
  c->have = 0;
  x->pos += end - have;
  kv_read_ascii(w, end);
  if (w->cmd.unframed) {
    kv_lost(c, x->fp, x->now);
    return 1;
  }
  // Its reply will be followed when it is known what it is and there is room; then a
  // write's acknowledgement ends its outstanding state (else write_timeout does).
  const __u32 rk = kv_reply_kind(w);
  const __u32 qin = c->qin;
  if (rk == KV_R_UNKNOWN || qin - *(volatile __u32*)&c->qout >= KV_ACKQ) c->acks_lost = 1;
  const int follow = !c->acks_lost && rk != KV_R_NONE;
  struct kv_tab k;
  __u64 acked = 0;
  if (kv_tab_of(x->fp, &k)) acked = kv_apply(&k, x->fp, w, follow, x->now);
  if (follow) {
    c->qhash[qin & (KV_ACKQ - 1)] = acked;
    c->qkind[qin & (KV_ACKQ - 1)] = (__u8)rk;
    __sync_fetch_and_add(&c->qin, 1);  // (after the entry: the reply side reads it then)
  }
  gaon_fp_count(x->fp, GAON_FP_STAT_tcp_commands);
  c->skip = w->cmd.data;
  return 0;
}

// Every chunk passes on unchanged; its commands' writes are invalidated first.
// (attached as BPF_SK_SKB_VERDICT: xdp_program.cc; libbpf 1.1 has no section name for it)
SEC("sk_skb")
int gaon_kvcache_verdict(struct __sk_buff* skb) {
  struct kv_conn_key ck = {};
  KV_CONN_KEY(skb, &ck);
  struct kv_conn* c = bpf_map_lookup_elem(&kv_conns, &ck);
  if (!c) return SK_PASS;  // (every watched connection has its state)
  struct kv_chunk x = {.skb = skb, .c = c, .w = &c->ws, .len = skb->len, .fp = c->fp_slot};
  x.now = bpf_ktime_get_coarse_ns();
  if (c->state == KV_CONN_UNFRAMED) {
    kv_lost(c, x.fp, x.now);
    return SK_PASS;
  }
  // A command per step: a chunk of 64 KiB of the smallest commands ("mn\r\n") fits.
  bpf_loop(1 << 15, kv_chunk_step, &x, 0);
  if (x.pos < x.len && c->state != KV_CONN_UNFRAMED) kv_lost(c, x.fp, x.now);
  return SK_PASS;
}

// ---- memcached's replies on a watched connection, at tc egress (kvcache_egress.bpf.h)
//
// The segments a socket sends leave in sequence order but for retransmissions, which are
// skipped by sequence number; a gap (a segment not seen) loses track. (An sk_msg program
// on the socket map would see the replies too, but made every send on the connection go
// through the socket map's copying path: +50-70 % CPU per request on all-TCP traffic.)

struct kv_reply {
  struct __sk_buff* skb;
  struct kv_conn* c;
  struct kv_wscratch* w;
  __u32 pos, end, fp;
};

// One reply line per step (or a value's data, passed unread). A line that ends a command's
// reply pops it, and acknowledges its write.
static long kv_reply_step(__u64 unused, void* arg) {
  struct kv_reply* x = arg;
  struct kv_conn* c = x->c;
  struct kv_wscratch* w = x->w;
  if (x->pos >= x->end || c->acks_lost) return 1;
  const __u32 rest = x->end - x->pos;
  if (c->rskip) {
    const __u32 n = c->rskip < rest ? (__u32)c->rskip : rest;
    c->rskip -= n;
    x->pos += n;
    return 0;
  }
  const __u32 qout = c->qout;
  if (qout == *(volatile __u32*)&c->qin) {  // a reply to nothing followed: lost track
    c->acks_lost = 1;
    return 1;
  }
  const __u32 have = c->rhave & (KV_LINE - 1);  // a line begun in an earlier piece
  __u32 n = KV_LINE - have;
  if (n > rest) n = rest;
  if (n > KV_PIECE) n = KV_PIECE;
  if (n == 0 || bpf_skb_load_bytes(x->skb, x->pos, w->line + have, n & (KV_PIECE * 2 - 1))) {
    c->acks_lost = 1;
    return 1;
  }
  const __u32 at = kv_find_nl(w, have, have + n);
  if (at == 0) {
    if (have + n < KV_LINE) {  // the piece ends inside the line: kept for the next
      c->rhave = have + n;
      x->pos += n;
      return 0;
    }
    c->acks_lost = 1;  // a reply line longer than KV_LINE (a stats line?): not followed
    return 1;
  }
  c->rhave = 0;
  x->pos += at - have;
  const __u64 w0 = kv_word_at(w, 0);
  const __u32 kind = c->qkind[qout & (KV_ACKQ - 1)];
  int done = 1;
  const int value = (w0 & kv_low(6)) == W6('V', 'A', 'L', 'U', 'E', ' ');
  if (value || (w0 & kv_low(3)) == W3('V', 'A', ' ')) {
    // VALUE KEY FLAGS BYTES [CAS]\r\n (read from its end) / VA BYTES FLAGS...: data follows
    __u64 bytes = 0;
    if (value) {
      if (kind != KV_R_END && kind != KV_R_END_CAS) {
        c->acks_lost = 1;
        return 1;
      }
      int e = (int)at - 2;  // before "\r\n"
      if (e < 8 || w->line[(e + 1) & (KV_LINE - 1)] != '\n' || w->line[e & (KV_LINE - 1)] != '\r') {
        c->acks_lost = 1;
        return 1;
      }
      if (kind == KV_R_END_CAS) {  // the cas first
        __u64 cas = 0;
        e = kv_num_before(w, (__u32)e, &cas) - 1;
        if (e < 7 || w->line[e & (KV_LINE - 1)] != ' ') {
          c->acks_lost = 1;
          return 1;
        }
      }
      if (kv_num_before(w, (__u32)e, &bytes) < 7) {
        c->acks_lost = 1;
        return 1;
      }
    } else {
      __s64 b = 0;
      if (!kv_tokenize(w, at) || kv_tok_num(w, 1, 0, &b) || b < 0) {
        c->acks_lost = 1;
        return 1;
      }
      bytes = (__u64)b;
    }
    if (bytes > (1 << 30)) {
      c->acks_lost = 1;
      return 1;
    }
    c->rskip = bytes + 2;
    done = !value;  // VA: the whole reply of a meta command; VALUE: more until END
  } else if (kind == KV_R_END || kind == KV_R_END_CAS) {
    // END ends it, and so does an error; STAT and the like come before END
    done = (w0 & kv_low(5)) == W5('E', 'N', 'D', '\r', '\n') ||
           (w0 & kv_low(5)) == W5('E', 'R', 'R', 'O', 'R') ||
           (w0 & kv_low(7)) == W7('C', 'L', 'I', 'E', 'N', 'T', '_') ||
           (w0 & kv_low(7)) == W7('S', 'E', 'R', 'V', 'E', 'R', '_');
  }
  if (!done) return 0;
  const __u64 h = c->qhash[qout & (KV_ACKQ - 1)];
  __sync_fetch_and_add(&c->qout, 1);
  if (h) {
    struct kv_tab k;
    if (kv_tab_of(x->fp, &k)) kv_acked(&k, h);
  }
  return 0;
}

// A TCP segment memcached sends (its IP header at 14, TCP header at l4): if it belongs to
// a watched connection, its payload is followed as replies. `ck` has the family and the
// addresses (the local side first: memcached's); the ports are filled in here.
static __always_inline void kv_tcp_replies(struct __sk_buff* skb, struct kv_conn_key* ck,
                                           __u32 l4) {
  struct tcphdr th;
  if (bpf_skb_load_bytes(skb, l4, &th, sizeof(th))) return;
  const __u32 off = l4 + th.doff * 4;
  if (off >= skb->len) return;  // no payload
  ck->ports = (__u32)bpf_ntohs(th.source) << 16 | bpf_ntohs(th.dest);
  struct kv_conn* c = bpf_map_lookup_elem(&kv_conns, ck);
  if (!c && ck->family == 2) {  // IPv4 on a dual-stack socket: ::ffff:a.b.c.d
    ck->family = 10;
    ck->local[3] = ck->local[0];
    ck->remote[3] = ck->remote[0];
    ck->local[0] = ck->local[1] = ck->remote[0] = ck->remote[1] = 0;
    ck->local[2] = ck->remote[2] = bpf_htonl(0xffff);
    c = bpf_map_lookup_elem(&kv_conns, ck);
  }
  if (!c || c->acks_lost) return;
  const __u32 seq = bpf_ntohl(th.seq), len = skb->len - off;
  __u32 skip = 0;
  if (c->rseq_ok) {
    const __s32 d = (__s32)(seq - c->rseq);
    if (d > 0) {  // a segment not seen before this one: lost track
      c->acks_lost = 1;
      return;
    }
    skip = (__u32)-d;  // (a retransmission: what was followed already)
    if (skip >= len) return;
  }
  c->rseq_ok = 1;
  c->rseq = seq + len;
  struct kv_reply x = {
      .skb = skb, .c = c, .w = &c->rws, .pos = off + skip, .end = skb->len, .fp = c->fp_slot};
  bpf_loop(1 << 15, kv_reply_step, &x, 0);
  if (x.pos < x.end) c->acks_lost = 1;
}
