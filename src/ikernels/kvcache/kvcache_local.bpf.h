// kvcache on a server with one NIC (gaond --local): the writers in the kernel. Included by
// kvcache.bpf.c, whose fast path answers GET hits on memcached's own interface. Here:
//
//   - the command reader: one memcached command line (ASCII, meta or binary header) in a
//     scratch buffer -> what it writes (keys, exptime) or flushes;
//   - kv_write / kv_flush: a write's keys invalidated (their bucket versions moved on,
//     kv_abi.h), their exptimes recorded; a flush moves the table's generation on;
//   - kv_miss_record: a GET that missed remembers its bucket version (kv_pend), so the
//     reply may be learned (kvcache_egress.bpf.h) unless a write came in between.
//
// Consistency (docs/one-nic.md): a write is invalidated before memcached can read it (XDP
// for UDP, the stream reader for TCP, both before the bytes reach its socket); a reply is
// learned only under the bucket version its GET saw, when at that GET every write seen of
// the bucket had been acknowledged (UDP) or was older than write_timeout (TCP, noreply).
// What it cannot read whole, it answers with a flush: it never guesses.
#pragma once

#define KV_LINE 512   // the part of a command line read (a key and its numbers fit)
#define KV_TOKENS 24  // memcached's own limit
#define KV_TOKMASK 31
#define KV_MAX_KEYS 8  // keys of one gat/gats handled; more: a flush

// A request remembered until its reply (kv_pend): a GET that may be learned, or a UDP write
// whose acknowledgement ends its bucket's outstanding state.
struct kv_pend_key {
  __u8 ip[16];  // the client (IPv4 as ::ffff:a.b.c.d)
  __u16 port;   // network order
  __u16 req_id;
  __u32 fp_slot;
};
enum { KV_PEND_GET = 1, KV_PEND_WRITE = 2 };
struct kv_pend {
  __u64 hash;
  __u64 generation;
  __u32 ver;  // KV_PEND_GET: the bucket's version at the GET
  __u32 kind;
};
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 65536);
  __type(key, struct kv_pend_key);
  __type(value, struct kv_pend);
} kv_pend SEC(".maps");

// What a command line asks (kv_read_cmd).
enum {
  KV_C_OTHER = 0,  // changes nothing (get, stats, version, mn, ...)
  KV_C_WRITE,      // writes its keys
  KV_C_FLUSH,      // flush_all (delay in exptime), or what cannot be read: everything
};
struct kv_cmd {
  __u32 kind;
  __u32 nkeys;
  __u32 key_off[KV_MAX_KEYS];
  __u32 key_len[KV_MAX_KEYS];
  __s64 exptime;   // seconds, as memcached reads it
  __u32 ttl;       // 1: exptime sets the keys' expiry (0: the write leaves it as it was)
  __u32 noreply;   // no acknowledgement will come
  __u32 data;      // bytes of data block after the line (+2 for its \r\n), ASCII storage
  __u32 line_len;  // the line's bytes including its \n
  __u32 untimed;   // incr/decr that may create the item: its expiry is not known
  __u32 unframed;  // KV_C_FLUSH: where the command (and its data) ends is not known
};

// Scratch for the writers (per CPU): the line, its tokens, the command read from it.
struct kv_wscratch {
  __u8 line[KV_LINE + 256];  // read 8 bytes at a time past a token's end
  __u32 tok_off[KV_TOKMASK + 1];
  __u32 tok_len[KV_TOKMASK + 1];
  __u32 ntok;
  __u32 pad;
  struct kv_cmd cmd;
};
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct kv_wscratch);
} kv_wscratch SEC(".maps");

// "set" and the like as the little-endian word of their bytes.
#define W2(a, b) ((__u64)(a) | (__u64)(b) << 8)
#define W3(a, b, c) (W2(a, b) | (__u64)(c) << 16)
#define W4(a, b, c, d) (W3(a, b, c) | (__u64)(d) << 24)
#define W5(a, b, c, d, e) (W4(a, b, c, d) | (__u64)(e) << 32)
#define W6(a, b, c, d, e, f) (W5(a, b, c, d, e) | (__u64)(f) << 40)
#define W7(a, b, c, d, e, f, g) (W6(a, b, c, d, e, f) | (__u64)(g) << 48)

static __always_inline __u64 kv_low(__u32 n) { return n >= 8 ? ~0ull : (1ull << (n * 8)) - 1; }

static __always_inline __u64 kv_word_at(const struct kv_wscratch* w, __u32 off) {
  return *(const __u64*)(w->line + (off & (KV_LINE - 1)));
}

// A token's first 8 bytes as a word (0 past its end); tokens longer than 8: ~0.
static __always_inline __u64 kv_tok_word(const struct kv_wscratch* w, __u32 i) {
  if (i >= KV_TOKENS) return ~0ull;
  const __u32 len = w->tok_len[i];
  if (len > 8 || len == 0) return ~0ull;
  return kv_word_at(w, w->tok_off[i]) & kv_low(len);
}

// A token as a number: unsigned (neg 0) or, with neg, possibly negative. -1: not one.
static __always_inline int kv_tok_num(const struct kv_wscratch* w, __u32 i, int neg, __s64* out) {
  if (i >= KV_TOKENS) return -1;
  const __u32 off = w->tok_off[i], len = w->tok_len[i];
  if (len == 0 || len > 20) return -1;
  __u64 v = 0;
  int minus = 0;
  for (__u32 j = 0; j < 20; ++j) {
    if (j >= len) break;
    const __u8 c = w->line[(off + j) & (KV_LINE - 1)];
    if (j == 0 && c == '-' && neg && len > 1) {
      minus = 1;
      continue;
    }
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  *out = minus ? -(__s64)v : (__s64)v;
  return 0;
}

// Splits the line (line_len bytes, ending "\n", maybe "\r\n") into tokens at spaces, as
// memcached does. 0: too many tokens. One byte per bpf_loop step: the verifier checks the
// step once, not KV_LINE times.
struct kv_tok_ctx {
  struct kv_wscratch* w;
  __u32 n, start, in, end, over;
};
static long kv_tok_step(__u64 i, void* arg) {
  struct kv_tok_ctx* t = arg;
  struct kv_wscratch* w = t->w;
  if (i >= t->end) return 1;
  const __u8 c = w->line[i & (KV_LINE - 1)];
  if (c == ' ') {
    if (t->in) {
      if (t->n >= KV_TOKENS) {
        t->over = 1;
        return 1;
      }
      w->tok_off[t->n & KV_TOKMASK] = t->start;  // (bounds for the verifier)
      w->tok_len[t->n & KV_TOKMASK] = (__u32)i - t->start;
      t->n++;
      t->in = 0;
    }
  } else if (!t->in) {
    t->in = 1;
    t->start = (__u32)i;
  }
  return 0;
}
static __always_inline int kv_tokenize(struct kv_wscratch* w, __u32 line_len) {
  struct kv_tok_ctx t = {.w = w};
  t.end = line_len >= 2 && w->line[(line_len - 2) & (KV_LINE - 1)] == '\r' ? line_len - 2
                                                                           : line_len - 1;
  bpf_loop(KV_LINE, kv_tok_step, &t, 0);
  w->ntok = t.n;  // (too many: the first KV_TOKENS)
  if (t.over) return 0;
  if (t.in) {
    if (t.n >= KV_TOKENS) return 0;
    w->tok_off[t.n & KV_TOKMASK] = t.start;
    w->tok_len[t.n & KV_TOKMASK] = t.end - t.start;
    t.n++;
  }
  w->ntok = t.n;
  return 1;
}

static __always_inline void kv_add_key(struct kv_cmd* c, struct kv_wscratch* w, __u32 tok) {
  if (c->nkeys >= KV_MAX_KEYS || tok >= KV_TOKENS) {
    c->kind = KV_C_FLUSH;
    return;
  }
  const __u32 len = w->tok_len[tok];
  if (len == 0 || len > KV_MAX_KEY) {  // memcached refuses it: nothing written
    return;
  }
  c->key_off[c->nkeys & (KV_MAX_KEYS - 1)] = w->tok_off[tok];
  c->key_len[c->nkeys & (KV_MAX_KEYS - 1)] = len;
  c->nkeys++;
}

// The first token is "flush_all" (9 bytes: longer than kv_tok_word reads).
static __always_inline int kv_is_flush_all(const struct kv_wscratch* w) {
  const __u32 off = w->tok_off[0];
  return w->tok_len[0] == 9 &&
         (kv_word_at(w, off) & kv_low(7)) == W7('f', 'l', 'u', 's', 'h', '_', 'a') &&
         w->line[(off + 7) & (KV_LINE - 1)] == 'l' && w->line[(off + 8) & (KV_LINE - 1)] == 'l';
}

// A meta command's flag token i (from `first`, below nt): b (a base64 key): everything
// goes; q: no reply; T (and N but for md): the expiry it sets. By bpf_loop.
struct kv_meta_ctx {
  struct kv_wscratch* w;
  __u32 first, nt, md;
};
static long kv_meta_flag(__u64 i, void* arg) {
  struct kv_meta_ctx* m = arg;
  struct kv_wscratch* w = m->w;
  struct kv_cmd* c = &w->cmd;
  if (i >= m->nt) return 1;
  if (i < m->first) return 0;
  const __u32 off = w->tok_off[i & KV_TOKMASK], len = w->tok_len[i & KV_TOKMASK];
  const __u8 f = w->line[off & (KV_LINE - 1)];
  if (f == 'b') {
    c->kind = KV_C_FLUSH;
    c->exptime = 0;  // (a flush now, not one delayed by an earlier T)
    return 1;
  }
  if (f == 'q') c->noreply = 1;
  if (f != 'T' && (f != 'N' || m->md)) return 0;
  __s64 e = 0;  // the number after the flag letter
  int neg = 0, digits = 0;
  for (__u32 j = 1; j < 21; ++j) {
    if (j >= len) break;
    const __u8 d = w->line[(off + j) & (KV_LINE - 1)];
    if (j == 1 && d == '-') {
      neg = 1;
      continue;
    }
    if (d < '0' || d > '9') {
      digits = -1;
      break;
    }
    e = e * 10 + (d - '0');
    ++digits;
  }
  if (digits <= 0) {
    c->kind = KV_C_FLUSH;
    c->exptime = 0;
    return 1;
  }
  c->exptime = neg ? -e : e;
  c->ttl = 1;
  if (f == 'N') c->untimed = 1;  // the expiry of an item it may create
  return 0;
}

// Reads the ASCII (or meta) command line in w->line, line_len bytes long including its
// "\n", into w->cmd.
// (A function of its own, verified once, not at every caller.)
__attribute__((noinline)) int kv_read_ascii(struct kv_wscratch* w, __u32 line_len) {
  if (!w) return 0;
  struct kv_cmd* c = &w->cmd;
  __builtin_memset(c, 0, sizeof(*c));
  c->line_len = line_len;
  if (line_len > KV_LINE) {
    c->kind = KV_C_FLUSH;
    c->unframed = 1;
    return 0;
  }
  if (!kv_tokenize(w, line_len)) {  // more tokens than memcached reads at once
    const __u64 n0 = kv_tok_word(w, 0);
    if (n0 == W3('g', 'e', 't') || n0 == W4('g', 'e', 't', 's')) return 0;  // a long multi-get
    c->kind = KV_C_FLUSH;
    c->unframed = 1;
    return 0;
  }
  if (w->ntok == 0) {  // an empty line: an error reply, nothing written
    return 0;
  }
  const __u32 nt = w->ntok;
  const __u64 name = kv_tok_word(w, 0);
  const __u64 last = kv_tok_word(w, nt - 1);
  c->noreply = nt > 1 && last == W7('n', 'o', 'r', 'e', 'p', 'l', 'y');
  const __u32 args = nt - c->noreply;  // tokens up to noreply
  __s64 v = 0;
  if (name == W3('s', 'e', 't') || name == W3('a', 'd', 'd') ||
      name == W7('r', 'e', 'p', 'l', 'a', 'c', 'e') || name == W3('c', 'a', 's') ||
      name == W6('a', 'p', 'p', 'e', 'n', 'd') || name == W7('p', 'r', 'e', 'p', 'e', 'n', 'd')) {
    // NAME KEY FLAGS EXPTIME BYTES [CAS] [noreply]
    const __u32 want = name == W3('c', 'a', 's') ? 6 : 5;
    if (args != want || kv_tok_num(w, 4, 0, &v) || v > (1 << 30) ||
        kv_tok_num(w, 3, 1, &c->exptime)) {
      c->kind = KV_C_FLUSH;  // memcached would not frame it as we do: lose nothing
      c->unframed = 1;       // (on a TCP stream, where its data ends is not known)
      return 0;
    }
    c->kind = KV_C_WRITE;
    c->data = (__u32)v + 2;
    // append and prepend keep the item's expiry
    c->ttl =
        name != W6('a', 'p', 'p', 'e', 'n', 'd') && name != W7('p', 'r', 'e', 'p', 'e', 'n', 'd');
    kv_add_key(c, w, 1);
    return 0;
  }
  if (name == W6('d', 'e', 'l', 'e', 't', 'e') || name == W4('i', 'n', 'c', 'r') ||
      name == W4('d', 'e', 'c', 'r')) {
    if (args < 2) return 0;  // an error reply, nothing written
    c->kind = KV_C_WRITE;
    kv_add_key(c, w, 1);
    return 0;
  }
  if (name == W5('t', 'o', 'u', 'c', 'h')) {  // touch KEY EXPTIME [noreply]
    if (args != 3 || kv_tok_num(w, 2, 1, &c->exptime)) return 0;
    c->kind = KV_C_WRITE;
    c->ttl = 1;
    kv_add_key(c, w, 1);
    return 0;
  }
  if (name == W3('g', 'a', 't') || name == W4('g', 'a', 't', 's')) {  // gat EXPTIME KEY...
    if (args < 3 || kv_tok_num(w, 1, 1, &c->exptime)) return 0;
    c->kind = KV_C_WRITE;
    c->ttl = 1;
    for (__u32 i = 2; i < KV_TOKENS; ++i) {
      if (i >= args) break;
      kv_add_key(c, w, i);
    }
    return 0;
  }
  if (name == W2('m', 's') || name == W2('m', 'd') || name == W2('m', 'a') ||
      name == W2('m', 'g')) {
    // Meta: KEY [DATALEN for ms] FLAGS... A base64 key ('b') is not the key the table
    // keeps: everything goes. T sets the expiry (ms without it: none); ma's N too.
    if (nt < 2) return 0;
    __u32 first_flag = 2;
    if (name == W2('m', 's')) {
      if (nt < 3 || kv_tok_num(w, 2, 0, &v) || v > (1 << 30)) {
        c->kind = KV_C_FLUSH;
        c->unframed = 1;
        return 0;
      }
      c->data = (__u32)v + 2;
      first_flag = 3;
      c->ttl = 1;  // exptime 0 unless T
    }
    c->kind = KV_C_WRITE;
    struct kv_meta_ctx m = {.w = w, .first = first_flag, .nt = nt, .md = name == W2('m', 'd')};
    bpf_loop(KV_TOKENS, kv_meta_flag, &m, 0);
    if (c->kind == KV_C_FLUSH) return 0;
    // mg reads, unless it sets an expiry (T) or may create the item (N)
    if (name == W2('m', 'g') && !c->ttl) c->kind = KV_C_OTHER;
    kv_add_key(c, w, 1);
    return 0;
  }
  if (kv_is_flush_all(w)) {
    c->kind = KV_C_FLUSH;
    if (args >= 2 && kv_tok_num(w, 1, 1, &c->exptime)) c->exptime = 0;
    return 0;
  }
  if (name == W3('g', 'e', 't') || name == W4('g', 'e', 't', 's') ||
      name == W5('s', 't', 'a', 't', 's') || name == W7('v', 'e', 'r', 's', 'i', 'o', 'n') ||
      name == W2('m', 'n') || name == W2('m', 'e') || name == W4('q', 'u', 'i', 't') ||
      (name == ~0ull && w->tok_len[0] == 9 &&  // verbosity
       kv_word_at(w, w->tok_off[0]) == W7('v', 'e', 'r', 'b', 'o', 's', 'i') + ((__u64)'t' << 56)))
    return 0;            // reads, or changes no item
  c->kind = KV_C_FLUSH;  // anything else (unknown, shutdown, slabs, ...): everything
  return 0;
}

// A binary request's header (24 bytes, at w->line) and its extras and key after it.
static __always_inline void kv_read_binary(struct kv_wscratch* w, __u32 have) {
  struct kv_cmd* c = &w->cmd;
  __builtin_memset(c, 0, sizeof(*c));
  const __u8* b = w->line;
  const __u8 op = b[1], extlen = b[4];
  const __u32 klen = ((__u32)b[2] << 8) | b[3];
  const __u32 body = ((__u32)b[8] << 24) | ((__u32)b[9] << 16) | ((__u32)b[10] << 8) | b[11];
  c->line_len = 24 + extlen + klen;
  if (body < extlen + klen || c->line_len > have || c->line_len > KV_LINE) {
    c->kind = KV_C_FLUSH;
    return;
  }
  c->data = body - extlen - klen;
  switch (op) {
    case 0x00:
    case 0x09:
    case 0x0c:
    case 0x0d:  // get, getq, getk, getkq
    case 0x07:
    case 0x17:
    case 0x0a:
    case 0x0b:
    case 0x10:  // quit, noop, version, stat
      return;
    case 0x01:
    case 0x02:
    case 0x03:
    case 0x11:
    case 0x12:
    case 0x13:  // set add replace
    case 0x1c:
    case 0x1d:
    case 0x1e: {  // touch gat gatq: exptime at extras' end
      c->kind = KV_C_WRITE;
      c->ttl = 1;
      const __u32 eo = (op >= 0x1c ? 24 : 28) & (KV_LINE - 1);
      if ((op >= 0x1c && extlen != 4) || (op < 0x1c && extlen != 8)) {
        c->kind = KV_C_FLUSH;
        return;
      }
      c->exptime = (__s64)(__s32)(((__u32)w->line[eo] << 24) | ((__u32)w->line[eo + 1] << 16) |
                                  ((__u32)w->line[eo + 2] << 8) | w->line[eo + 3]);
      break;
    }
    case 0x05:
    case 0x06:
    case 0x15:
    case 0x16:  // incr decr: may create, with an expiry
      c->kind = KV_C_WRITE;
      c->untimed = 1;
      break;
    case 0x04:
    case 0x14:
    case 0x0e:
    case 0x0f:
    case 0x19:
    case 0x1a:  // delete append prepend
      c->kind = KV_C_WRITE;
      break;
    case 0x08:
    case 0x18:  // flush, flushq (an expiration in its extras)
      c->kind = KV_C_FLUSH;
      if (extlen == 4)
        c->exptime =
            (__s64)(((__u32)b[24] << 24) | ((__u32)b[25] << 16) | ((__u32)b[26] << 8) | b[27]);
      return;
    default:
      c->kind = KV_C_FLUSH;
      return;
  }
  c->noreply = op >= 0x11 && op <= 0x1a;  // the quiet forms
  if (klen == 0 || klen > KV_MAX_KEY) {
    c->kind = KV_C_FLUSH;
    return;
  }
  c->nkeys = 1;
  c->key_off[0] = 24 + extlen;
  c->key_len[0] = klen;
}

// The key's hash (kv_abi.h), from the line: a word per bpf_loop step.
struct kv_hash_ctx {
  const struct kv_wscratch* w;
  __u64 h;
  __u32 off, klen;
};
static long kv_hash_word(__u64 i, void* arg) {
  struct kv_hash_ctx* x = arg;
  const __u32 at = (__u32)i * 8;
  if (at >= x->klen) return 1;
  x->h = kv_hash_step(x->h, kv_word_at(x->w, x->off + at) & kv_low(x->klen - at));
  return 0;
}
static __always_inline __u64 kv_key_hash(const struct kv_wscratch* w, __u32 off, __u32 klen) {
  struct kv_hash_ctx x = {.w = w, .h = kv_hash_init(klen), .off = off, .klen = klen};
  bpf_loop((KV_MAX_KEY + 7) / 8, kv_hash_word, &x, 0);
  return kv_hash_final(x.h);
}

// An instance's table and its version buckets, from its fast-path slot.
struct kv_tab {
  struct kv_table_hdr* t;
  struct kv_vbucket* vb;  // KV_VB_PER_CHUNK of them
  __u32 first, nchunks;
};
// The same from a table header already found (t, in chunk `first` of `nchunks`), as the
// fast path has it.
static __always_inline int kv_tab_at(struct kv_table_hdr* t, __u32 first, __u32 nchunks,
                                     struct kv_tab* k) {
  k->t = t;
  k->first = first;
  k->nchunks = nchunks;
  if (!t || t->magic != KV_ABI_MAGIC || !(t->flags & KV_F_KERNEL)) return 0;
  const __u32 vc = t->vb_chunk;
  if (vc == 0 || vc >= nchunks || t->nvb != KV_VB_PER_CHUNK) return 0;
  __u32 ck = first + vc;
  k->vb = bpf_map_lookup_elem(&gaon_fp_mem, &ck);
  return k->vb != 0;
}
static __always_inline int kv_tab_of(__u32 fp, struct kv_tab* k) {
  struct gaon_fp_slot* fs = bpf_map_lookup_elem(&gaon_fp_slots, &fp);
  if (!fs || fs->chunks == 0) return 0;
  __u32 c0 = fs->first_chunk;
  return kv_tab_at(bpf_map_lookup_elem(&gaon_fp_mem, &c0), fs->first_chunk, fs->chunks, k);
}
static __always_inline struct kv_vbucket* kv_bucket(struct kv_tab* k, __u64 h) {
  return &k->vb[kv_vb_of(h, KV_VB_PER_CHUNK) & (KV_VB_PER_CHUNK - 1)];
}

// Everything goes (a new generation); a delay (seconds) leaves entries until then, and
// bounds the expiry of what is learned before it.
static __always_inline void kv_flush(struct kv_table_hdr* t, __u32 fp, __s64 delay, __u64 now) {
  if (delay > 0 && delay <= 2592000) {
    const __u64 at = now + (__u64)delay * 1000000000ull;
    const __u64 cur = t->flush_at_ns;
    if (cur <= now || at < cur) __sync_lock_test_and_set(&t->flush_at_ns, at);
  }
  // (a delay memcached reads as an absolute time, or none: now, which is never later)
  // Busy first (as a write's bucket): a GET that misses between this and memcached's doing
  // it must not have its reply, read before the flush, learned under the new generation.
  for (int i = 0; i < 4; ++i) {
    const __u64 cur = *(volatile __u64*)&t->flushed_ns;
    if (cur >= now || __sync_val_compare_and_swap(&t->flushed_ns, cur, now) == cur) break;
  }
  __sync_fetch_and_add(&t->generation, 1);
  gaon_fp_count(fp, GAON_FP_STAT_flushes);
}

// kv_flush for instance fp, verified once (as kv_write_fp below).
__attribute__((noinline)) int kv_flush_fp(__u32 fp, __s64 delay, __u64 now) {
  struct kv_tab k;
  if (!kv_tab_of(fp, &k)) return 0;
  kv_flush(k.t, fp, delay, now);
  return 1;
}

// A ttl record's expiry (kv_abi.h) for an exptime read at `now`: memcached's rules
// (0: none; negative: gone; above 30 days: an absolute time, which is not followed here:
// "now", so nothing is learned for the key until a write gives it an expiry again).
static __always_inline __u32 kv_ttl_units(__s64 exptime, __u64 now) {
  if (exptime == 0) return KV_TTL_NEVER;
  if (exptime < 0 || exptime > 2592000) return (__u32)(now >> KV_TTL_SHIFT);
  return (__u32)((now + (__u64)exptime * 1000000000ull) >> KV_TTL_SHIFT);  // rounded down
}

// A write of key hash h: its bucket busy (until acknowledged: `acked`; else for
// write_timeout), then its version moved on; its expiry recorded when the write sets one.
static __always_inline void kv_write(struct kv_tab* k, __u32 fp, __u64 h, int acked, int ttl,
                                     int untimed, __s64 exptime, __u64 now) {
  struct kv_vbucket* b = kv_bucket(k, h);
  if (acked) {
    __sync_fetch_and_add(&b->out, 1);
    __sync_lock_test_and_set(&b->udp_ns, now);
  } else {
    __sync_lock_test_and_set(&b->timed_ns, now);
  }
  if (ttl || untimed) {
    const __u32 units = untimed ? (__u32)(now >> KV_TTL_SHIFT) : kv_ttl_units(exptime, now);
    const __u64 rec = ((__u64)units << 32) | (__u32)h;
    // Its own record, else a free or dead one, else the one its hash picks.
    __u32 pick = 4;
    for (__u32 i = 0; i < 4; ++i) {
      const __u64 r = b->ttl[i];
      if (r != 0 && (__u32)r == (__u32)h) {
        pick = i;
        break;
      }
    }
    for (__u32 i = 0; i < 4 && pick == 4; ++i) {
      const __u64 r = b->ttl[i];
      if (r == 0 || ((r >> 32) != KV_TTL_NEVER && ((r >> 32) << KV_TTL_SHIFT) <= now)) pick = i;
    }
    if (pick == 4) pick = (__u32)(h >> 16) & 3;
    const __u64 old = __sync_lock_test_and_set(&b->ttl[pick & 3], rec);
    const __u64 oexp = (old >> 32) << KV_TTL_SHIFT;
    if (old != 0 && (__u32)old != (__u32)h && (old >> 32) != KV_TTL_NEVER && oexp > now) {
      // Another key's expiry is no longer known: learn nothing of the bucket's other keys
      // until it has passed.
      int done = 0;
      for (int i = 0; i < 4 && !done; ++i) {
        const __u64 cur = b->lost_ns;
        if (cur >= oexp)
          done = 1;
        else if (__sync_val_compare_and_swap(&b->lost_ns, cur, oexp) == cur)
          done = 1;
      }
      if (!done) kv_flush(k->t, fp, 0, now);  // contended: everything, which is always right
    }
  }
  __sync_fetch_and_add(&b->ver, 1);
}

// kv_write for instance fp, as a function of its own: a global function, verified once
// rather than at every place that writes (inlined there, its branches multiplied the
// reader's states past the verifier's million instructions). how: KV_W_*.
enum { KV_W_ACKED = 1, KV_W_TTL = 2, KV_W_UNTIMED = 4 };
__attribute__((noinline)) int kv_write_fp(__u32 fp, __u64 h, __u32 how, __s64 exptime, __u64 now) {
  struct kv_tab k;
  if (!kv_tab_of(fp, &k)) return 0;
  kv_write(&k, fp, h, how & KV_W_ACKED, how & KV_W_TTL, how & KV_W_UNTIMED, exptime, now);
  gaon_fp_count(fp, GAON_FP_STAT_writes);
  return 1;
}
static __always_inline __u32 kv_write_how(int acked, int ttl, int untimed) {
  return (acked ? KV_W_ACKED : 0) | (ttl ? KV_W_TTL : 0) | (untimed ? KV_W_UNTIMED : 0);
}

// Applies w->cmd (read from `w->line`): invalidates its keys or flushes. The hash of the
// write whose acknowledgement is to be followed, if any (else 0).
static __always_inline __u64 kv_apply(struct kv_tab* k, __u32 fp, struct kv_wscratch* w, int follow,
                                      __u64 now) {
  struct kv_cmd* c = &w->cmd;
  if (k->t->flags & KV_F_UNSAFE) return 0;  // (the negative control: nothing invalidated)
  if (c->kind == KV_C_FLUSH) {
    kv_flush_fp(fp, c->exptime, now);
    return 0;
  }
  if (c->kind != KV_C_WRITE) return 0;
  const int acked = follow && !c->noreply && c->nkeys == 1;
  __u64 first = 0;
  for (__u32 i = 0; i < KV_MAX_KEYS; ++i) {
    if (i >= c->nkeys) break;
    const __u64 h = kv_key_hash(w, c->key_off[i], c->key_len[i] & 255);
    // The acknowledgement of a UDP write of one key is followed (kv_pend); the rest clear
    // by the timeout.
    kv_write_fp(fp, h, kv_write_how(acked, c->ttl, c->untimed), c->exptime, now);
    if (i == 0) first = h;
  }
  return acked ? first : 0;
}

// A followed write of key hash h was acknowledged: one outstanding write less (bounded
// CAS; a count left too high clears with write_timeout).
static __always_inline void kv_acked(struct kv_tab* k, __u64 h) {
  struct kv_vbucket* b = kv_bucket(k, h);
  for (int i = 0; i < 4; ++i) {
    const __u32 cur = *(volatile __u32*)&b->out;
    if (cur == 0 || __sync_val_compare_and_swap(&b->out, cur, cur - 1) == cur) break;
  }
}

// What memcached answers the command line in w (read by kv_read_ascii) with, on TCP.
enum {
  KV_R_NONE = 0,  // nothing (noreply, quit)
  KV_R_LINE,      // one line ("VA n" and its data for meta)
  KV_R_END,       // VALUE/STAT lines (with data) up to END, or an error line
  KV_R_END_CAS,   // the same, VALUE lines ending with a cas (gets, gats)
  KV_R_UNKNOWN,   // not known here (meta's q, other commands): replies are not followed
};
static __always_inline __u32 kv_reply_kind(const struct kv_wscratch* w) {
  if (w->ntok == 0) return KV_R_LINE;  // ERROR
  const __u64 name = kv_tok_word(w, 0);
  const int meta = (name & ~0xffffull) == 0 && (name & 0xff) == 'm';
  if (meta) {
    const __u64 m2 = name >> 8;
    if (m2 != 's' && m2 != 'g' && m2 != 'd' && m2 != 'a' && m2 != 'n' && m2 != 'e')
      return KV_R_UNKNOWN;
    return w->cmd.noreply ? KV_R_UNKNOWN : KV_R_LINE;  // (q: a reply only sometimes)
  }
  if (name == W4('g', 'e', 't', 's') || name == W4('g', 'a', 't', 's')) return KV_R_END_CAS;
  if (name == W3('g', 'e', 't') || name == W3('g', 'a', 't') || name == W5('s', 't', 'a', 't', 's'))
    return KV_R_END;
  if (name == W4('q', 'u', 'i', 't')) return KV_R_NONE;
  if (name == W3('s', 'e', 't') || name == W3('a', 'd', 'd') ||
      name == W7('r', 'e', 'p', 'l', 'a', 'c', 'e') || name == W3('c', 'a', 's') ||
      name == W6('a', 'p', 'p', 'e', 'n', 'd') || name == W7('p', 'r', 'e', 'p', 'e', 'n', 'd') ||
      name == W6('d', 'e', 'l', 'e', 't', 'e') || name == W4('i', 'n', 'c', 'r') ||
      name == W4('d', 'e', 'c', 'r') || name == W5('t', 'o', 'u', 'c', 'h') ||
      name == W7('v', 'e', 'r', 's', 'i', 'o', 'n') || kv_is_flush_all(w))
    return w->cmd.noreply ? KV_R_NONE : KV_R_LINE;
  return KV_R_UNKNOWN;
}

// May a GET of key hash h that misses now have its reply learned? Its bucket must have no
// write outstanding; what it remembers is the version it saw (read first: a write moves
// the version after it marks the bucket busy).
static __always_inline int kv_idle(struct kv_tab* k, __u64 h, __u64 now, __u32* ver) {
  struct kv_vbucket* b = kv_bucket(k, h);
  *ver = *(volatile __u32*)&b->ver;
  const __u64 timeout = k->t->write_timeout_ns;
  const __u64 timed = *(volatile __u64*)&b->timed_ns, udp = *(volatile __u64*)&b->udp_ns;
  // (another CPU's coarse clock may be ahead of this one's: "now - t" could wrap)
  if (timed != 0 && timed + timeout >= now) return 0;
  if (*(volatile __u32*)&b->out != 0 && udp + timeout >= now) return 0;
  const __u64 fl = *(volatile __u64*)&k->t->flushed_ns;
  if (fl != 0 && fl + timeout >= now) return 0;
  return 1;
}
