// kvcache on a server with one NIC: memcached's own TCP connections, read in stream order
// (included by kvcache.bpf.c).
//
//   - gaon_kvcache_sockops (sock_ops, on the cgroup): a connection memcached accepts on an
//     attached TCP flow's address and port gets its state in kv_conns (the socket's own
//     storage, freed with it), with the sequence number of the first byte to read;
//   - gaon_kvcache_ingress (cgroup_skb/ingress, on the cgroup): each TCP segment for a
//     watched connection, as the stack takes it for the socket (after its checksum and
//     socket lookup, before it is queued: before memcached can read it). The connection's
//     bytes are read in sequence order: a segment that starts where the reading stands is
//     read; one resent (already read) passes; one that comes before a missing one is dropped
//     (the sender sends it again, after the missing one; counted: tcp_out_of_order), so no
//     byte reaches memcached unread. It frames memcached's text and meta commands across
//     segments (a line started in one is kept in the connection's state until its end
//     comes; a storage command's data block is passed unread), invalidates their writes,
//     and passes every byte on unchanged.
// What it cannot frame (binary protocol, a line it cannot read, a storage line memcached
// would not frame as it does, bytes the stack took that it did not read): the instance's
// table is flushed for that segment and every later one on the connection (it never guesses
// where a command starts).
//
// (Measured first: a socket map with an sk_skb verdict sees the same bytes after
// reassembly, but the socket map's receive path alone — programs that only pass — made
// all-TCP traffic 13-18 % dearer per request on 6.18, against 2 % without it; and the
// kernel's strparser left a reply pending now and then. docs/one-nic.md.)
#pragma once

#include <linux/tcp.h>

#define KV_ACKQ 32  // commands awaiting memcached's reply, per connection
struct kv_conn {
  // (What every segment reads, in and out, first: one cache line, then the reply kinds.)
  __u32 fp_slot;  // the instance (0 until sockops has made the rest)
  __u32 state;    // KV_CONN_*
  __u32 have;     // bytes of a line begun in an earlier segment, kept in ws.line
  __u32 rcv;      // the sequence number of the next byte to read
  __u32 busy;     // a CPU is reading a segment (another's waits for a resend: dropped)
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
  __u64 skip;  // bytes of a data block still to pass unread
  // A storage command's write, applied when the last byte of its data block is read (what
  // memcached waits for to carry it out): dpending, its key's hash, how (kv_write's).
  __u64 dhash;
  __s64 dexptime;
  __u8 dpending, dacked, dttl, duntimed;
  __u64 rskip;  // reply bytes (a value's data) still to pass unread
  __u8 qkind[KV_ACKQ];
  __u64 qhash[KV_ACKQ];
  // Working space, the connection's own: its segments are read one at a time (busy), as
  // its transmits are followed (under the socket's lock), but a per-CPU buffer could be
  // shared with a program that interrupts one running in process context.
  struct kv_wscratch ws;   // the command side
  struct kv_wscratch rws;  // the reply side
};
enum {
  KV_CONN_LINES = 0,     // in command lines
  KV_CONN_LONG_GET = 1,  // inside a get line longer than KV_LINE (read-only)
  KV_CONN_UNFRAMED = 2,  // lost: every message flushes
};
// The socket's own storage: found from the socket the segment belongs to (no lookup by
// key), created for a watched connection and freed with it.
struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct kv_conn);
} kv_conns SEC(".maps");

// A segment's watched connection (its state), if it is one.
static __always_inline struct kv_conn* kv_conn_of(struct __sk_buff* skb) {
  struct bpf_sock* sk = skb->sk;
  if (!sk) return 0;
  sk = bpf_sk_fullsock(sk);
  if (!sk) return 0;
  return bpf_sk_storage_get(&kv_conns, sk, 0, 0);
}

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
  struct bpf_sock* sk = so->sk;
  struct kv_conn* c = sk ? bpf_sk_storage_get(&kv_conns, sk, 0, BPF_SK_STORAGE_GET_F_CREATE) : 0;
  if (!c) {
    kv_give_up(fp);
    return 1;
  }
  c->state = KV_CONN_LINES;
  c->skip = 0;
  c->dpending = 0;
  c->have = 0;
  c->acks_lost = 0;
  c->qin = c->qout = 0;
  c->rseq = c->rseq_ok = c->rhave = 0;
  c->rskip = 0;
  c->busy = 0;
  c->rcv = so->rcv_nxt;
  // Bytes in the segment that completes the handshake were filtered on the listening
  // socket, unread: the connection starts lost (they reach memcached after this).
  {
    void* d = (void*)(long)so->skb_data;
    void* e = (void*)(long)so->skb_data_end;
    struct tcphdr* th = d;
    if ((void*)(th + 1) > e || so->skb_len > th->doff * 4) c->state = KV_CONN_UNFRAMED;
  }
  // Ready: the instance last. (The socket is in the stack's tables already; a segment read
  // for it on another CPU before this finds fp_slot 0 and is dropped, to come again.)
  __sync_lock_test_and_set(&c->fp_slot, fp);
  return 1;
}

// Windows of lines (kv_chunk, kv_reply), per CPU: 0 for the segments read, 1 for those
// followed. (Kept hot in the cache, unlike a connection's own working space; a program
// that uses one runs to its end before another on the same CPU can: the reader in softirq,
// the follower with softirqs held off.)
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 2);
  __type(key, __u32);
  __type(value, struct kv_wscratch);
} kv_win SEC(".maps");

// Bytes read per step of the stream programs: what one line usually fits in.
#define KV_PIECE 64
// Bytes read at once for a window of lines (kv_window): several pipelined commands.
#define KV_WIN 256

// The window of lines at `pos` (rest > 0 bytes left in the frame): pw->line[0..*wlen) holds
// the frame's bytes from *win; loaded anew unless pos is inside it already (*wlen 0: none).
static __always_inline void kv_window(struct __sk_buff* skb, struct kv_wscratch* pw, __u32 pos,
                                      __u32 rest, __u32* win, __u32* wlen) {
  if (*wlen != 0 && pos - *win < *wlen) return;
  const __u32 m = rest < KV_WIN ? rest : KV_WIN;
  if (bpf_skb_load_bytes(skb, pos, pw->line, ((m - 1) & (KV_WIN - 1)) + 1) == 0) {
    *win = pos;
    *wlen = m;
  } else {
    *wlen = 0;
  }
}

// The first '\n' in w->line from `from` to `end` (at most KV_PIECE bytes), a word at a
// time: its offset + 1 (0: none).
__attribute__((noinline)) __u32 kv_find_nl(const struct kv_wscratch* w, __u32 from, __u32 end) {
  if (!w) return 0;
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

// The bytes of a segment of a watched connection (kv_chunk_step, by bpf_loop: a command per step).
// w->line[0..wlen) holds the segment's bytes from `win` while wlen != 0 (a window that the
// get lines in it are read from, without a load each).
struct kv_chunk {
  struct __sk_buff* skb;
  struct kv_conn* c;
  struct kv_wscratch* w;
  struct kv_wscratch* pw;  // the window (kv_win)
  __u64 now;
  __u32 pos, len, fp;
  __u32 win, wlen;
  __u32 cmds;  // commands framed (counted once, at the end)
};

static __always_inline void kv_lost(struct kv_conn* c, __u32 fp, __u64 now) {
  c->state = KV_CONN_UNFRAMED;
  kv_flush_fp(fp, 0, now);
  gaon_fp_count(fp, GAON_FP_STAT_tcp_unframed);
}

// The next command's reply, of kind rk (KV_R_*), acknowledges write h (0: none): queued
// for the reply follower at qin (the entry first, then qin: the follower reads it after).
static __always_inline void kv_push(struct kv_conn* c, __u32 qin, __u32 rk, __u64 h) {
  c->qhash[qin & (KV_ACKQ - 1)] = h;
  c->qkind[qin & (KV_ACKQ - 1)] = (__u8)rk;
  __sync_fetch_and_add(&c->qin, 1);
}
// A read's reply: queued while replies are followed and there is room, else no longer
// followed (acks_lost).
static __always_inline void kv_expect(struct kv_conn* c, __u32 rk) {
  const __u32 qin = c->qin;
  if (c->acks_lost || qin - *(volatile __u32*)&c->qout >= KV_ACKQ)
    c->acks_lost = 1;
  else
    kv_push(c, qin, rk, 0);
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
    if (c->skip == 0 && c->dpending)  // its end: the write now
      kv_write_fp(x->fp, c->dhash, kv_write_how(c->dacked, c->dttl, c->duntimed), c->dexptime,
                  x->now);
    if (c->skip == 0) c->dpending = 0;
    return 0;
  }
  // A get line that begins here and ends in the window: a read, whose reply is VALUEs and
  // END; nothing else to learn from it. (Most of a read-mostly stream: no load, no tokens.)
  if (c->state == KV_CONN_LINES && c->have == 0) {
    kv_window(x->skb, x->pw, x->pos, rest, &x->win, &x->wlen);
    if (x->wlen) {
      const __u32 b = (x->pos - x->win) & (KV_WIN - 1);
      const __u64 w0 = kv_word_at(x->pw, b);
      __u32 rk = 0;
      if ((w0 & kv_low(4)) == W4('g', 'e', 't', ' '))
        rk = KV_R_END;
      else if ((w0 & kv_low(5)) == W5('g', 'e', 't', 's', ' '))
        rk = KV_R_END_CAS;
      const __u32 end = rk ? kv_find_nl(x->pw, b, x->wlen) : 0;
      if (end) {
        kv_expect(c, rk);
        x->pos += end - b;
        x->cmds++;
        return 0;
      }
    }
  }
  // (The window is still good here, but forgetting it keeps the verifier's work down: 0.3 M
  // instructions with this, 0.9 M of the 1 M limit without.)
  x->wlen = 0;
  // The line so far (begun in an earlier segment, in w->line), then what this segment has.
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
    if (have + n < KV_LINE) {  // the segment ends inside the line: kept for the next one
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
      kv_expect(c, KV_R_END);  // its reply: VALUEs, then END
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
  const struct kv_cmd* cmd = &w->cmd;
  if (!kv_tab_of(x->fp, &k)) {
  } else if (cmd->kind == KV_C_WRITE && cmd->data && cmd->nkeys == 1 &&
             !(k.t->flags & KV_F_UNSAFE)) {
    // A storage command: memcached carries it out once its data block is all there, which
    // may be long after this line (a segment of it lost and sent again after the sender's
    // timeout, longer than write_timeout): its write is applied at the block's end (kv_write
    // in the skip above), its acknowledgement followed from here.
    c->dacked = follow && !cmd->noreply;
    c->dttl = (__u8)cmd->ttl;
    c->duntimed = (__u8)cmd->untimed;
    c->dexptime = cmd->exptime;
    c->dhash = kv_key_hash(w, cmd->key_off[0], cmd->key_len[0] & 255);
    c->dpending = 1;
    acked = c->dacked ? c->dhash : 0;
  } else {
    acked = kv_apply(&k, x->fp, w, follow, x->now);
  }
  if (follow) kv_push(c, qin, rk, acked);
  x->cmds++;
  c->skip = w->cmd.data;
  return 0;
}

// Every segment of a watched connection that it reads or has read passes on unchanged (1),
// its commands' writes invalidated first; one ahead of the reading is dropped (0).
SEC("cgroup_skb/ingress")
int gaon_kvcache_ingress(struct __sk_buff* skb) {
  struct kv_conn* c = kv_conn_of(skb);
  if (!c) return 1;  // (every watched connection has its state)
  __u32 l4;          // (skb->data: the IP header)
  if (skb->protocol == bpf_htons(ETH_P_IP)) {
    struct iphdr ip;
    if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) || ip.protocol != IPPROTO_TCP) return 1;
    l4 = ip.ihl * 4;
  } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr ip6;
    if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6))) return 1;
    if (ip6.nexthdr != IPPROTO_TCP) {  // extension headers: where its bytes are is not known
      kv_lost(c, c->fp_slot, bpf_ktime_get_coarse_ns());
      return 1;
    }
    l4 = 40;
  } else {
    return 1;
  }
  struct tcphdr th;
  if (bpf_skb_load_bytes(skb, l4, &th, sizeof(th))) return 1;
  const __u32 off = l4 + th.doff * 4;
  if (off >= skb->len) return 1;                     // no bytes of the stream
  if (*(volatile __u32*)&c->fp_slot == 0) return 0;  // not ready (sockops): sent again
  __u32 zero = 0;
  struct kv_wscratch* pw = bpf_map_lookup_elem(&kv_win, &zero);
  struct kv_chunk x = {
      .skb = skb, .c = c, .w = &c->ws, .pw = pw, .len = skb->len, .fp = c->fp_slot};
  x.now = bpf_ktime_get_coarse_ns();
  if (c->state == KV_CONN_UNFRAMED || !pw) {
    kv_lost(c, x.fp, x.now);
    return 1;
  }
  if (__sync_val_compare_and_swap(&c->busy, 0, 1) != 0) {  // another CPU reads one of its
    gaon_fp_count(x.fp, GAON_FP_STAT_tcp_out_of_order);    // segments: this one later
    return 0;
  }
  const __u32 seq = bpf_ntohl(th.seq), len = skb->len - off;
  const __s32 d = (__s32)(seq - c->rcv);
  int pass = 1;
  if (d > 0) {  // bytes before it are missing
    struct bpf_sock* sk = skb->sk;
    if (sk) sk = bpf_sk_fullsock(sk);
    struct bpf_tcp_sock* tp = sk ? bpf_tcp_sock(sk) : 0;
    if (tp && (__s32)(tp->rcv_nxt - c->rcv) > 0) {
      kv_lost(c, x.fp, x.now);  // the stack took bytes not read here: lost
    } else {
      gaon_fp_count(x.fp, GAON_FP_STAT_tcp_out_of_order);
      pass = 0;  // sent again after the missing ones
    }
  } else if (d < 0) {
    // A resend of bytes read already: if the stack did not take them the first time (it
    // dropped the segment: memory), memcached carries out their writes only now, so
    // everything is invalidated again. (rcv_nxt read without the socket's lock may lag
    // behind segments queued for it: a flush more, never one less.)
    struct bpf_sock* sk = skb->sk;
    if (sk) sk = bpf_sk_fullsock(sk);
    struct bpf_tcp_sock* tp = sk ? bpf_tcp_sock(sk) : 0;
    const __u32 upto = (__u32)-d < len ? c->rcv : seq + len;  // the end of what was read
    if (!tp || (__s32)(upto - tp->rcv_nxt) > 0) {
      kv_flush_fp(x.fp, 0, x.now);
      gaon_fp_count(x.fp, GAON_FP_STAT_tcp_resent_unread);
    }
  }
  if (d <= 0 && (__u32)-d < len) {  // (else resent: read already)
    c->rcv = seq + len;
    x.pos = off + (__u32)-d;
    // A command per step: a segment of 64 KiB of the smallest commands ("mn\r\n") fits.
    bpf_loop(1 << 15, kv_chunk_step, &x, 0);
    if (x.pos < x.len && c->state != KV_CONN_UNFRAMED) kv_lost(c, x.fp, x.now);
    if (x.cmds) gaon_fp_add(x.fp, GAON_FP_STAT_tcp_commands, x.cmds);
  }
  __sync_lock_test_and_set(&c->busy, 0);
  return pass;
}

// ---- memcached's replies on a watched connection, at tc egress (kvcache_egress.bpf.h)
//
// The segments a socket sends leave in sequence order but for retransmissions, which are
// skipped by sequence number; a gap (a segment not seen) loses track. (An sk_msg program
// on a socket map would see the replies too, but made every send on the connection go
// through the socket map's copying path: +50-70 % CPU per request on all-TCP traffic.)

struct kv_reply {
  struct __sk_buff* skb;
  struct kv_conn* c;
  struct kv_wscratch* w;
  struct kv_wscratch* pw;  // the window (kv_win)
  __u32 pos, end, fp;
  __u32 win, wlen;  // pw->line[0..wlen) holds the segment's bytes from `win` (as kv_chunk)
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
  // The line: in the window (lw = pw; b: where it begins), else read from its start (lw =
  // w, b 0) after what an earlier segment had of it.
  __u32 b = 0, at = 0, inwin = 0;
  struct kv_wscratch* lw = w;
  if (c->rhave == 0) {
    kv_window(x->skb, x->pw, x->pos, rest, &x->win, &x->wlen);
    if (x->wlen) {
      b = (x->pos - x->win) & (KV_WIN - 1);
      at = kv_find_nl(x->pw, b, x->wlen);
      if (at) {
        x->pos += at - b;
        lw = x->pw;
        inwin = 1;
      }
    }
  }
  if (at == 0) {
    b = 0;
    const __u32 have = c->rhave & (KV_LINE - 1);  // a line begun in an earlier piece
    __u32 n = KV_LINE - have;
    if (n > rest) n = rest;
    if (n > KV_PIECE) n = KV_PIECE;
    if (n == 0 || bpf_skb_load_bytes(x->skb, x->pos, w->line + have, n & (KV_PIECE * 2 - 1))) {
      c->acks_lost = 1;
      return 1;
    }
    at = kv_find_nl(w, have, have + n);
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
  }
  // (from here, the line is lw->line[b..at), at most KV_LINE bytes; `at` is past its '\n')
  b &= KV_WIN - 1;
  at &= KV_LINE * 2 - 1;
  const __u64 w0 = kv_word_at(lw, b);
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
      if (e < (int)b + 8 || lw->line[(e + 1) & (KV_LINE - 1)] != '\n' ||
          lw->line[e & (KV_LINE - 1)] != '\r') {
        c->acks_lost = 1;
        return 1;
      }
      if (kind == KV_R_END_CAS) {  // the cas first
        __u64 cas = 0;
        e = kv_num_before(lw, (__u32)e, &cas) - 1;
        if (e < (int)b + 7 || lw->line[e & (KV_LINE - 1)] != ' ') {
          c->acks_lost = 1;
          return 1;
        }
      }
      if (kv_num_before(lw, (__u32)e, &bytes) < (int)b + 7) {
        c->acks_lost = 1;
        return 1;
      }
    } else {
      // VA: tokenized, which needs the line at w->line[0]
      __s64 v = 0;
      if (inwin) {  // (into the connection's own space)
        const __u32 len = ((at - b - 1) & (KV_LINE - 1)) + 1;
        if (bpf_skb_load_bytes(x->skb, x->pos - (at - b), w->line, len)) {
          c->acks_lost = 1;
          return 1;
        }
        at -= b;
        b = 0;
      }
      lw = w;
      if (!kv_tokenize(w, at) || kv_tok_num(w, 1, 0, &v) || v < 0) {
        c->acks_lost = 1;
        return 1;
      }
      bytes = (__u64)v;
    }
    if (bytes > (1 << 30)) {
      c->acks_lost = 1;
      return 1;
    }
    c->rskip = bytes + 2;
    done = !value;         // VA: the whole reply of a meta command; VALUE: more until END
    if (value && inwin) {  // one value and its END in the window: the reply ends here
      const __u32 nx = x->pos - x->win + (__u32)bytes + 2;
      if (nx + 5 <= x->wlen &&
          (kv_word_at(x->pw, nx) & kv_low(5)) == W5('E', 'N', 'D', '\r', '\n')) {
        x->pos += (__u32)bytes + 2 + 5;
        c->rskip = 0;
        done = 1;
      }
    }
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

// A TCP segment memcached sends (its TCP header at l4, its sequence number and data offset
// read from it): if it belongs to a watched connection, its payload is followed as replies.
static __always_inline void kv_tcp_replies(struct __sk_buff* skb, __u32 l4, __u32 seq_be,
                                           __u32 doff) {
  const __u32 off = l4 + doff * 4;
  if (off >= skb->len) return;  // no payload
  const __u32 seq = bpf_ntohl(seq_be), len = skb->len - off;
  struct kv_conn* c = kv_conn_of(skb);
  if (!c || c->acks_lost || c->fp_slot == 0) return;
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
  __u32 one = 1;
  struct kv_wscratch* pw = bpf_map_lookup_elem(&kv_win, &one);
  if (!pw) {
    c->acks_lost = 1;
    return;
  }
  struct kv_reply x = {.skb = skb,
                       .c = c,
                       .w = &c->rws,
                       .pw = pw,
                       .pos = off + skip,
                       .end = skb->len,
                       .fp = c->fp_slot};
  bpf_loop(1 << 15, kv_reply_step, &x, 0);
  if (x.pos < x.end) c->acks_lost = 1;
}
