#include "kv_table.h"

#include <atomic>
#include <bit>
#include <cstring>

namespace gaon::kv {

namespace {

static_assert(sizeof(kv_set) == 64 && sizeof(kv_slot) == 64 && sizeof(kv_table_hdr) <= 64);
static_assert(GAON_FP_CHUNK % sizeof(kv_set) == 0);  // no set straddles a chunk
static_assert(KV_SETS_OFF % 64 == 0);
// kv_slot_pos divides by a multiply: exact while positions < 2^30 (Table::geometry's bound).

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

Result<Geometry> Table::geometry(uint64_t capacity, uint32_t max_key, uint32_t max_value) {
  Geometry g;
  g.max_key = max_key;
  g.max_value = max_value;
  g.slot_bytes = kv_slot_bytes(max_key, max_value);
  if (max_key == 0 || max_key > KV_MAX_KEY || g.slot_bytes > KV_SLOT_MAX)
    return make_error("max_key={} max_value={}: a slot of {} bytes, at most {} fit the table",
                      max_key, max_value, g.slot_bytes, KV_SLOT_MAX);
  // A slot, and its share of the sets: 2 ways of 8 bytes (sets at most half full on average).
  uint64_t n = std::min<uint64_t>(capacity / (g.slot_bytes + 2 * 8), 1u << 29);  // < 2^30
  g.slots_chunk = (GAON_FP_CHUNK - KV_CHUNK_SLACK) / g.slot_bytes;
  for (;;) {  // the sets, then as many slots as fit the capacity with them
    if (n == 0)
      return make_error("capacity={} is too small for one slot of {} bytes and its set", capacity,
                        g.slot_bytes);
    g.nslots = uint32_t(n);
    g.nsets = uint32_t(std::bit_ceil((n + 3) / 4));
    const uint64_t sets_end = KV_SETS_OFF + uint64_t(g.nsets) * sizeof(kv_set);
    g.slots_first = uint32_t(sets_end / GAON_FP_CHUNK);
    g.slots_skip = uint32_t((sets_end % GAON_FP_CHUNK + g.slot_bytes - 1) / g.slot_bytes);
    if (g.slots_skip >= g.slots_chunk) {  // no room after the sets: from the next chunk
      ++g.slots_first;
      g.slots_skip = 0;
    }
    const uint64_t last = uint64_t(g.slots_skip) + n - 1;  // the last slot's position
    g.chunks = uint32_t(g.slots_first + last / g.slots_chunk + 1);
    g.bytes = size_t(g.chunks - 1) * GAON_FP_CHUNK + (last % g.slots_chunk + 1) * g.slot_bytes;
    const uint64_t used = g.bytes - KV_SETS_OFF;  // the header and seen bits are extra
    if (used <= capacity) break;
    n -= std::min<uint64_t>(n, (used - capacity) / g.slot_bytes + 1);
  }
  return g;
}

kv_table_hdr Table::header(const Geometry& g, uint32_t flags, uint64_t generation) {
  kv_table_hdr h{};
  h.generation = generation;
  h.nsets = g.nsets;
  h.nslots = g.nslots;
  h.slot_bytes = g.slot_bytes;
  h.slots_first = g.slots_first;
  h.slots_chunk = g.slots_chunk;
  h.slots_skip = g.slots_skip;
  h.chunks = g.chunks;
  h.max_key = g.max_key;
  h.max_value = g.max_value;
  h.flags = flags;
  h.slots_chunk_k = 30 + uint32_t(std::bit_width(g.slots_chunk - 1));  // 30 + ceil(log2 d)
  h.slots_chunk_m =
      uint32_t(((uint64_t(1) << h.slots_chunk_k) + g.slots_chunk - 1) / g.slots_chunk);
  return h;
}

void Table::lay_out(uint8_t* mem, const Geometry& g, uint32_t flags, uint64_t generation) {
  g_ = g;
  mem_ = mem;
  items_ = bytes_used_ = 0;
  clock_ = 0;
  hands_.assign(g.nsets, 0);
  auto* h = reinterpret_cast<kv_table_hdr*>(mem);
  *h = header(g, flags, generation);  // magic still 0: readers wait
  hdr_ = h;
  free_all();
  at(h->magic).store(KV_ABI_MAGIC, std::memory_order_release);  // readers may start
}

uint64_t Table::generation() const { return hdr_->generation; }

kv_set* Table::set(uint32_t s) const {
  uint32_t chunk, off;
  kv_set_pos(s, &chunk, &off);
  return reinterpret_cast<kv_set*>(mem_ + size_t(chunk) * GAON_FP_CHUNK + off);
}
kv_slot* Table::slot(uint32_t i) const {
  uint32_t chunk, off;
  kv_slot_pos(hdr_, i, &chunk, &off);
  return reinterpret_cast<kv_slot*>(mem_ + size_t(chunk) * GAON_FP_CHUNK + off);
}

void Table::free_all() {
  for (uint32_t s = 0; s < g_.nsets; ++s) {
    kv_set* st = set(s);
    for (uint32_t w = 0; w < KV_WAYS; ++w) at(st->tag[w]).store(0, std::memory_order_relaxed);
  }
  free_.resize(g_.nslots);
  for (uint32_t i = 0; i < g_.nslots; ++i) free_[i] = g_.nslots - 1 - i;  // slot 0 first
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

void Table::leave(kv_set* st, uint32_t way) {
  const uint32_t i = st->slot[way];
  kv_slot* s = slot(i);
  at(st->tag[way]).store(0, std::memory_order_relaxed);
  forget(s->hash);  // its next GET reaches gaond, to be learned again
  --items_;
  bytes_used_ -= s->klen + s->vlen;
  write_begin(s);
  s->hash = 0;
  write_end(s);
  free_.push_back(i);
}

const kv_slot* Table::find(uint64_t h, std::string_view key, uint64_t now) {
  kv_set* st = set(uint32_t(h) & (g_.nsets - 1));
  const uint32_t tag = kv_tag(h);
  for (uint32_t w = 0; w < KV_WAYS; ++w) {
    if (st->tag[w] != tag) continue;
    kv_slot* s = slot(st->slot[w]);
    if (s->hash != h || s->klen != key.size() ||
        std::memcmp(data(*s) + kv_key_off(), key.data(), key.size()) != 0)
      continue;
    if (s->expire_ns <= now) {
      leave(st, w);
      return nullptr;
    }
    if (!at(s->ref).load(std::memory_order_relaxed))
      at(s->ref).fetch_or(1, std::memory_order_relaxed);
    return s;
  }
  return nullptr;
}

bool Table::evict_one() {
  // Two rounds at most: the first may only clear reference bits.
  for (uint64_t n = 0; n < 2 * uint64_t(g_.nslots) + 1; ++n) {
    const uint32_t i = clock_;
    clock_ = clock_ + 1 == g_.nslots ? 0 : clock_ + 1;
    kv_slot* s = slot(i);
    if (s->hash == 0) continue;  // free (then free_ would not be empty) or leaving
    if (at(s->ref).load(std::memory_order_relaxed)) {
      at(s->ref).store(0, std::memory_order_relaxed);
      continue;
    }
    kv_set* st = set(uint32_t(s->hash) & (g_.nsets - 1));
    for (uint32_t w = 0; w < KV_WAYS; ++w)
      if (st->tag[w] != 0 && st->slot[w] == i) {
        leave(st, w);
        ++evictions_;
        return true;
      }
  }
  return false;
}

void Table::insert(uint64_t h, std::string_view key, const Item& item, uint64_t expire_ns) {
  const uint32_t si = uint32_t(h) & (g_.nsets - 1);
  kv_set* st = set(si);
  const uint32_t tag = kv_tag(h);
  int way = -1;
  for (uint32_t w = 0; w < KV_WAYS && way < 0; ++w) {  // the same key: replace it
    if (st->tag[w] != tag) continue;
    const kv_slot* s = slot(st->slot[w]);
    if (s->hash == h && s->klen == key.size() &&
        std::memcmp(data(*s) + kv_key_off(), key.data(), key.size()) == 0)
      way = int(w);
  }
  for (uint32_t w = 0; w < KV_WAYS && way < 0; ++w)  // a free way
    if (st->tag[w] == 0) way = int(w);
  while (way < 0) {  // a full set, CLOCK: second chance for recently hit entries
    const uint32_t w = hands_[si];
    hands_[si] = uint8_t((w + 1) % KV_WAYS);
    kv_slot* s = slot(st->slot[w]);
    if (at(s->ref).load(std::memory_order_relaxed)) {
      at(s->ref).store(0, std::memory_order_relaxed);
    } else {
      way = int(w);
      ++evictions_;
    }
  }
  const uint32_t w = uint32_t(way);
  if (st->tag[w] != 0) leave(st, w);  // its slot is the next one taken
  if (free_.empty() && !evict_one()) return;
  const uint32_t i = free_.back();
  free_.pop_back();
  kv_slot* s = slot(i);
  // The text: "VALUE " KEY " FLAGS BYTES" [" CAS"] "\r\n" VALUE "\r\nEND\r\n".
  char* d = reinterpret_cast<char*>(s + 1);
  write_begin(s);
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
  s->generation = hdr_->generation;
  s->expire_ns = expire_ns;
  s->cas = item.cas;
  s->has_cas = item.has_cas;
  s->flags = item.flags;
  s->klen = uint16_t(key.size());
  s->vlen = uint16_t(item.value.size());
  at(s->ref).store(0, std::memory_order_relaxed);
  write_end(s);
  at(st->slot[w]).store(i, std::memory_order_relaxed);
  at(st->tag[w]).store(tag, std::memory_order_release);
  ++items_;
  bytes_used_ += key.size() + item.value.size();
}

bool Table::invalidate(uint64_t h) {
  kv_set* st = set(uint32_t(h) & (g_.nsets - 1));
  const uint32_t tag = kv_tag(h);
  bool found = false;
  for (uint32_t w = 0; w < KV_WAYS; ++w) {
    if (st->tag[w] != tag || slot(st->slot[w])->hash != h) continue;
    leave(st, w);
    found = true;
  }
  return found;
}

void Table::drop_all() {
  at(hdr_->generation).fetch_add(1, std::memory_order_release);  // readers serve no older
  items_ = bytes_used_ = 0;
  free_all();
  forget_all();
}

Table::Text Table::reply_text(const kv_slot& s, bool with_cas, bool with_end) {
  const char* d = reinterpret_cast<const char*>(data(s));
  const size_t head = 6 + s.klen + s.ftext + (with_cas ? s.ctext : 0);
  const size_t vo = kv_value_off(s.klen, s.ftext, s.ctext);
  return {{d, head}, {d + vo - 2, size_t(2 + s.vlen + (with_end ? KV_TAIL : 2))}};
}

}  // namespace gaon::kv
