#include "kv_table.h"

#include <atomic>
#include <bit>
#include <cstring>

namespace gaon::kv {

namespace {

static_assert(sizeof(kv_set) == 64 && sizeof(kv_slot) == 64 && sizeof(kv_table_hdr) <= 128);
static_assert(sizeof(kv_vbucket) == 64 && KV_VB_PER_CHUNK * 64 == GAON_FP_CHUNK);
static_assert(KV_SETS_OFF % 64 == 0);
// kv_set_pos divides by a multiply: exact while sets < 2^30 (Table::geometry's bound).

template <class T>
std::atomic_ref<T> at(T& v) {
  return std::atomic_ref<T>(v);
}

// The writer's half of the sequence counter (kv_abi.h): odd, then the changes, then even.
// The fence keeps the changes after the odd value for any reader that sees them.
void write_begin(kv_slot* s) {
  at(s->seq).store(s->seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
}
void write_end(kv_slot* s) { at(s->seq).store(s->seq + 1, std::memory_order_release); }

char* put_u64(char* p, uint64_t v) {
  char buf[20];
  int n = 0;
  do buf[n++] = char('0' + v % 10);
  while ((v /= 10) != 0);
  while (n) *p++ = buf[--n];
  return p;
}

}  // namespace

Result<Geometry> Table::geometry(uint64_t capacity, uint32_t max_key, uint32_t max_value,
                                 bool kernel) {
  Geometry g;
  g.max_key = max_key;
  g.max_value = max_value;
  g.slot_bytes = kv_slot_bytes(max_key, max_value);
  if (max_key == 0 || max_key > KV_MAX_KEY || g.slot_bytes > KV_SLOT_MAX)
    return make_error("max_key={} max_value={}: a slot of {} bytes, at most {} fit the table",
                      max_key, max_value, g.slot_bytes, KV_SLOT_MAX);
  g.set_bytes = uint32_t(sizeof(kv_set)) + KV_WAYS * g.slot_bytes;
  const uint64_t sets = capacity / g.set_bytes;
  if (sets == 0)
    return make_error("capacity={} is too small for one set of {} slots of {} bytes", capacity,
                      KV_WAYS, g.slot_bytes);
  g.nsets = uint32_t(std::min<uint64_t>(sets, 1u << 30));  // kv_set_of: any number
  g.sets_chunk0 = (GAON_FP_CHUNK - KV_CHUNK_SLACK - KV_SETS_OFF) / g.set_bytes;
  g.sets_chunk = (GAON_FP_CHUNK - KV_CHUNK_SLACK) / g.set_bytes;
  if (g.nsets <= g.sets_chunk0) {
    g.chunks = 1;
    g.bytes = KV_SETS_OFF + size_t(g.nsets) * g.set_bytes;
  } else {
    const uint64_t rest = g.nsets - g.sets_chunk0;
    g.chunks = uint32_t(1 + (rest + g.sets_chunk - 1) / g.sets_chunk);
    const uint64_t last = rest - uint64_t(g.chunks - 2) * g.sets_chunk;
    g.bytes = size_t(g.chunks - 1) * GAON_FP_CHUNK + last * g.set_bytes;
  }
  if (kernel) {  // the version buckets: a chunk of their own, after the sets
    g.vb_chunk = g.chunks++;
    g.bytes = size_t(g.chunks) * GAON_FP_CHUNK;
  }
  return g;
}

void Table::lay_out(uint8_t* mem, const Geometry& g, uint32_t flags, uint64_t generation,
                    const Limits& limits) {
  g_ = g;
  vb_ = nullptr;
  mem_ = mem;
  items_ = bytes_used_ = 0;
  auto* h = reinterpret_cast<kv_table_hdr*>(mem);
  h->generation = generation;
  h->nsets = g.nsets;
  h->set_bytes = g.set_bytes;
  h->slot_bytes = g.slot_bytes;
  h->sets_chunk0 = g.sets_chunk0;
  h->sets_chunk = g.sets_chunk;
  h->chunks = g.chunks;
  h->max_key = g.max_key;
  h->max_value = g.max_value;
  h->flags = flags;
  h->sets_chunk_k = 30 + uint32_t(std::bit_width(g.sets_chunk - 1));  // 30 + ceil(log2 d)
  h->sets_chunk_m = uint32_t(((uint64_t(1) << h->sets_chunk_k) + g.sets_chunk - 1) / g.sets_chunk);
  if (g.vb_chunk != 0) {
    h->flags |= KV_F_KERNEL;
    h->vb_chunk = g.vb_chunk;
    h->nvb = KV_VB_PER_CHUNK;
    h->write_timeout_ns = limits.write_timeout_ns;
    h->max_ttl_ns = limits.max_ttl_ns;
    vb_ = reinterpret_cast<kv_vbucket*>(mem + size_t(g.vb_chunk) * GAON_FP_CHUNK);
    // Writes that went by before the table was there were not seen: every bucket is busy
    // for a write timeout, so no reply read before one of them applied is learned.
    const uint64_t now = limits.now_ns;
    for (uint32_t i = 0; i < KV_VB_PER_CHUNK; ++i) at(vb_[i].timed_ns).store(now);
  }
  at(h->magic).store(KV_ABI_MAGIC, std::memory_order_release);  // readers may start
  hdr_ = h;
}

uint64_t Table::generation() const { return hdr_->generation; }

kv_set* Table::set(uint32_t s) const {
  uint32_t chunk, off;
  kv_set_pos(hdr_, s, &chunk, &off);
  return reinterpret_cast<kv_set*>(mem_ + size_t(chunk) * GAON_FP_CHUNK + off);
}

uint64_t* Table::seen_word(uint64_t h) const {
  return reinterpret_cast<uint64_t*>(mem_ + KV_SEEN_OFF) + kv_seen_bit(h) / 64;
}
void Table::forget(uint64_t h) {
  at(*seen_word(h)).fetch_and(~(uint64_t(1) << (kv_seen_bit(h) & 63)), std::memory_order_relaxed);
}
void Table::forget_all() {
  auto* w = reinterpret_cast<uint64_t*>(mem_ + KV_SEEN_OFF);
  for (uint32_t i = 0; i < KV_SEEN_BITS / 64; ++i) at(w[i]).store(0, std::memory_order_relaxed);
}
bool Table::seen(uint64_t h) const {
  return (at(*seen_word(h)).load(std::memory_order_relaxed) >> (kv_seen_bit(h) & 63)) & 1;
}

void Table::leave(kv_set* st, uint32_t way, kv_slot* s) {
  at(st->tag[way]).store(0, std::memory_order_relaxed);
  forget(s->hash);  // its next GET reaches gaond, to be learned again
  --items_;
  bytes_used_ -= s->klen + s->vlen;
  write_begin(s);
  s->hash = 0;
  write_end(s);
}

const kv_slot* Table::find(uint64_t h, std::string_view key, uint64_t now) {
  kv_set* st = set(kv_set_of(h, g_.nsets));
  const uint32_t tag = kv_tag(h);
  for (uint32_t w = 0; w < KV_WAYS; ++w) {
    if (st->tag[w] != tag) continue;
    kv_slot* s = slot(st, w);
    if (s->hash != h || s->klen != key.size() ||
        std::memcmp(data(*s) + kv_key_off(), key.data(), key.size()) != 0)
      continue;
    if (vb_ != nullptr) {  // the kernel's writers own the slots: only read them
      const uint32_t seq = at(s->seq).load(std::memory_order_acquire);
      if ((seq & 1) || s->generation != hdr_->generation || s->expire_ns <= now ||
          s->ver != at(vb_[kv_vb_of(h, hdr_->nvb)].ver).load(std::memory_order_acquire))
        continue;
      return s;
    }
    if (s->generation != hdr_->generation) {  // flushed: already uncounted
      at(st->tag[w]).store(0, std::memory_order_relaxed);
      return nullptr;
    }
    if (s->expire_ns <= now) {
      leave(st, w, s);
      return nullptr;
    }
    const uint32_t bit = 1u << w;
    if (!(at(st->ref).load(std::memory_order_relaxed) & bit))
      at(st->ref).fetch_or(bit, std::memory_order_relaxed);
    return s;
  }
  return nullptr;
}

void Table::insert(uint64_t h, std::string_view key, const Item& item, uint64_t expire_ns) {
  kv_set* st = set(kv_set_of(h, g_.nsets));
  const uint32_t tag = kv_tag(h);
  const uint64_t gen = hdr_->generation;
  int way = -1;
  for (uint32_t w = 0; w < KV_WAYS && way < 0; ++w) {  // the same key: replace it
    const kv_slot* s = slot(st, w);
    if (st->tag[w] == tag && s->hash == h && s->klen == key.size() &&
        std::memcmp(data(*s) + kv_key_off(), key.data(), key.size()) == 0)
      way = int(w);
  }
  for (uint32_t w = 0; w < KV_WAYS && way < 0; ++w)  // a free or dead slot
    if (st->tag[w] == 0 || slot(st, w)->generation != gen) way = int(w);
  while (way < 0) {  // CLOCK: second chance for recently hit entries
    const uint32_t w = st->hand;
    st->hand = (st->hand + 1) % KV_WAYS;
    const uint32_t bit = 1u << w;
    if (at(st->ref).load(std::memory_order_relaxed) & bit) {
      at(st->ref).fetch_and(~bit, std::memory_order_relaxed);
    } else {
      way = int(w);
      ++evictions_;
    }
  }
  const uint32_t w = uint32_t(way);
  kv_slot* s = slot(st, w);
  uint32_t ver = 0;
  if (vb_ != nullptr) {  // as a filler in the kernel: take the slot, or give up
    ver = at(vb_[kv_vb_of(h, hdr_->nvb)].ver).load(std::memory_order_acquire);
    uint32_t seq = at(s->seq).load(std::memory_order_relaxed);
    if ((seq & 1) || !at(s->seq).compare_exchange_strong(seq, seq + 1, std::memory_order_acquire))
      return;
  } else {
    if (st->tag[w] != 0 && s->hash != 0 && s->generation == gen) leave(st, w, s);
    write_begin(s);
  }
  // The text: "VALUE " KEY " FLAGS BYTES" [" CAS"] "\r\n" VALUE "\r\nEND\r\n".
  char* d = reinterpret_cast<char*>(s + 1);
  std::memcpy(d, "VALUE ", 6);
  std::memcpy(d + 6, key.data(), key.size());
  char* p = d + 6 + key.size();
  *p++ = ' ';
  p = put_u64(p, item.flags);
  *p++ = ' ';
  p = put_u64(p, item.value.size());
  s->ftext = uint8_t(p - (d + 6 + key.size()));
  char* c = p;
  if (item.has_cas) {
    *p++ = ' ';
    p = put_u64(p, item.cas);
  }
  s->ctext = uint8_t(p - c);
  *p++ = '\r';
  *p++ = '\n';
  std::memcpy(p, item.value.data(), item.value.size());
  p += item.value.size();
  std::memcpy(p, "\r\nEND\r\n", KV_TAIL);
  s->hash = h;
  s->generation = gen;
  s->expire_ns = expire_ns;
  s->cas = item.cas;
  s->has_cas = item.has_cas;
  s->flags = item.flags;
  s->klen = uint16_t(key.size());
  s->vlen = uint16_t(item.value.size());
  s->ver = ver;
  write_end(s);
  at(st->tag[w]).store(tag, std::memory_order_release);
  at(st->ref).fetch_and(~(1u << w), std::memory_order_relaxed);
  ++items_;
  bytes_used_ += key.size() + item.value.size();
}

bool Table::invalidate(uint64_t h) {
  if (vb_ != nullptr) {  // as the kernel's writers do: the bucket's version moves on
    at(vb_[kv_vb_of(h, hdr_->nvb)].ver).fetch_add(1, std::memory_order_acq_rel);
    return false;
  }
  kv_set* st = set(kv_set_of(h, g_.nsets));
  const uint32_t tag = kv_tag(h);
  bool found = false;
  for (uint32_t w = 0; w < KV_WAYS; ++w) {
    if (st->tag[w] != tag) continue;
    kv_slot* s = slot(st, w);
    if (s->hash != h) continue;
    if (s->generation == hdr_->generation) {
      leave(st, w, s);
      found = true;
    } else {
      at(st->tag[w]).store(0, std::memory_order_relaxed);
    }
  }
  return found;
}

void Table::drop_all() {
  at(hdr_->generation).fetch_add(1, std::memory_order_release);
  items_ = bytes_used_ = 0;
  forget_all();
}

Table::Census Table::census(uint64_t now) const {
  Census c;
  const uint64_t gen = hdr_->generation;
  for (uint32_t i = 0; i < g_.nsets; ++i) {
    kv_set* st = set(i);
    for (uint32_t w = 0; w < KV_WAYS; ++w) {
      const kv_slot* s = slot(st, w);
      if (st->tag[w] == 0 || s->hash == 0 || (s->seq & 1) || s->generation != gen ||
          s->expire_ns <= now || (vb_ && s->ver != vb_[kv_vb_of(s->hash, hdr_->nvb)].ver))
        continue;
      ++c.items;
      c.bytes += s->klen + s->vlen;
    }
  }
  return c;
}

Table::Text Table::reply_text(const kv_slot& s, bool with_cas, bool with_end) {
  const char* d = reinterpret_cast<const char*>(data(s));
  const size_t head = 6 + s.klen + s.ftext + (with_cas ? s.ctext : 0);
  const size_t vo = kv_value_off(s.klen, s.ftext, s.ctext);
  return {{d, head}, {d + vo - 2, size_t(2 + s.vlen + (with_end ? KV_TAIL : 2))}};
}

}  // namespace gaon::kv
