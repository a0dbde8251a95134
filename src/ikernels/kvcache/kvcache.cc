#include "kvcache.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <new>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "gaon/clock.h"
#include "gaon/net.h"
#include "gaon/reply.h"

// kvcache.bpf.o, embedded at build time (CMake: kvcache_bpf_obj.cc).
extern const unsigned char gaon_kvcache_bpf_obj[];
extern const unsigned long gaon_kvcache_bpf_obj_len;

namespace gaon::ikernels {

using namespace kv;

namespace {

uint64_t key_hash(std::string_view k) { return kv::Table::hash(k); }

constexpr uint64_t kSecond = kSecondNs;
constexpr uint64_t kNever = UINT64_MAX;

std::string_view reject_name(size_t r) {
  static constexpr std::string_view names[] = {
      "version", "outstanding_write", "flushed", "suspect", "unknown_key", "too_big", "expired"};
  return names[r];
}

}  // namespace

std::vector<ParamSpec> KvCache::param_specs() {
  return {
      {"capacity", ParamType::size, "48M", "bytes for the item table", 512, 1e12},
      {"max_key", ParamType::u64, "250", "longest key cached", 1, 250},
      {"max_value", ParamType::size, "1000", "largest value cached", 1, 1360},
      {"max_ttl", ParamType::u64, "0", "seconds an entry may live (0: no limit)", 0, 1e9},
      {"write_timeout_ms", ParamType::u64, "1000",
       "how long an unacknowledged write blocks learning its keys", 1, 3.6e6},
      {"pending", ParamType::u64, "4096", "requests awaiting a reply that are tracked", 16,
       1 << 22},
      {"versions", ParamType::u64, "65536", "version buckets", 16, 1 << 26},
      {"tcp_connections", ParamType::u64, "256",
       "client TCP connections scanned for writes at once", 1, 1 << 20},
      {"udp_checksum", ParamType::boolean, "false",
       "compute UDP checksums of replies (false: 0, none, on IPv4)"},
      {"fast_path", ParamType::boolean, "true",
       "in a bump, serve GET hits in XDP and keep misses in the kernel"},
      {"hint_age_ms", ParamType::u64, "60000",
       "how often each key not cached gets a GET through to gaond again", 1, 3.6e6},
      {"unsafe_no_invalidation", ParamType::boolean, "false",
       "TESTING ONLY: ignore writes and flushes (serves stale values; proves the checker)"},
  };
}

std::vector<StateOpSpec> KvCache::state_ops() {
  return {{"stats", "", "counters and table geometry"},
          {"get", "KEY", "the cached item for KEY, if any"},
          {"invalidate", "KEY", "drop KEY from the cache"},
          {"clear", "", "drop every item"}};
}

Result<void> KvCache::configure(const Params& p) {
  capacity_ = p.u64("capacity");
  max_key_ = p.u64("max_key");
  max_value_ = p.u64("max_value");
  max_ttl_ns_ = p.u64("max_ttl") * kSecond;
  write_timeout_ns_ = p.u64("write_timeout_ms") * 1000000ull;
  npend_ = std::bit_ceil(p.u64("pending"));
  nver_ = std::bit_ceil(p.u64("versions"));
  ntcp_ = std::bit_ceil(p.u64("tcp_connections"));
  udp_checksum_ = p.flag("udp_checksum");
  no_invalidation_ = p.flag("unsafe_no_invalidation");
  fast_path_ = p.flag("fast_path");
  hint_age_ns_ = p.u64("hint_age_ms") * 1000000ull;
  auto g = kv::Table::geometry(capacity_, uint32_t(max_key_), uint32_t(max_value_));
  if (!g) return Error{g.error()};
  geom_ = *g;
  auto gk = kv::Table::geometry(capacity_, uint32_t(max_key_), uint32_t(max_value_), true);
  if (!gk) return Error{gk.error()};
  geom_kernel_ = *gk;
  wall_minus_mono_s_ = wall_minus_mono_s();
  return ok();
}

size_t KvCache::state_bytes() const {
  return sizeof(Header) + geom_.bytes + nver_ * sizeof(VerBucket) + npend_ * sizeof(Pending) +
         ntcp_ * sizeof(TcpConn) + 4096 + 4 * 64;
}

Result<void> KvCache::init(StateRegion& region) {
  hdr_ = region.carve<Header>(1, 64);
  uint8_t* table = region.carve<uint8_t>(geom_.bytes, 4096);
  vers_ = region.carve<VerBucket>(nver_, 64);
  pend_ = region.carve<Pending>(npend_, 64);
  tcp_ = region.carve<TcpConn>(ntcp_, 64);
  if (!hdr_ || !table || !vers_ || !pend_ || !tcp_) return make_error("state region too small");
  for (uint64_t i = 0; i < ntcp_; ++i) new (&tcp_[i]) TcpConn{};
  table_.lay_out(table, geom_, table_flags(), 1);
  return ok();
}

// ---------------------------------------------------------------- the table

FastPathSpec KvCache::fast_path() const {
  if (!fast_path_) return {};
  // One NIC: requests it does not answer go to the writes program (kvcache_local.bpf.h).
  static constexpr FastPathExtra kExtras[] = {{GAON_FP_KVCACHE_WRITES, "gaon_fp_kvcache_writes"}};
  return {GAON_FP_KVCACHE, "gaon_fp_kvcache",  {gaon_kvcache_bpf_obj, gaon_kvcache_bpf_obj_len},
          geom_.bytes,     geom_kernel_.bytes, kExtras};
}

// In a bump the table moves, with the instance's first flow, into the fast-path memory
// the ports give it (its XDP program reads it there): empty, and with a generation above
// any handed out so far, so nothing pending from before is learned into it.
//
// On a server with one NIC (fp.kernel_writers) the programs on memcached's interface and
// sockets fill and invalidate it themselves (docs/one-nic.md); gaond only lays it out,
// clears it and answers its state operations.
void KvCache::on_fast_path(FastPathState& fp) {
  const kv::Geometry& g = fp.kernel_writers ? geom_kernel_ : geom_;
  if (!fast_path_ || &fp == fp_ || fp.bytes < g.bytes) return;
  fp_ = &fp;
  table_.lay_out(
      fp.mem, g, table_flags(), table_.generation() + 1,
      {.write_timeout_ns = write_timeout_ns_, .max_ttl_ns = max_ttl_ns_, .now_ns = mono_ns()});
}

// The seen bits of kv_abi.h keep the misses of keys gaond has tried to learn in the
// kernel. A key whose GET reached gaond but was not learned gets its next GET through
// again at once where gaond sees why (a rejected fill, a reply it cannot read). A reply
// that never reached gaond says nothing: memcached's miss (END) goes to the client in the
// kernel, which is the common case, and a lost reply looks the same. So every key gets
// one GET through again once per period (bounded work: 32 KiB cleared).
void KvCache::age(Context& ctx) {
  if (hint_age_ns_ && ctx.now_ns() - aged_ns_ >= hint_age_ns_) {
    if (aged_ns_ != 0) table_.forget_all();
    aged_ns_ = ctx.now_ns();
  }
}

bool KvCache::invalidate_hash(uint64_t h) {
  const bool found = table_.invalidate(h);
  if (found) ++hdr_->c.invalidations;
  return found;
}

uint64_t KvCache::expiry_for(int64_t e, uint64_t now) const {
  if (e == 0) return 0;
  if (e < 0) return now;
  int64_t rel = e;
  if (e > 60 * 60 * 24 * 30) rel = e - (int64_t(now / kSecond) + wall_minus_mono_s_);
  rel -= 1;  // memcached's clock ticks in whole seconds: it may expire the item early
  if (rel <= 0) return now;
  return now + uint64_t(rel) * kSecond;
}

// A write's keys may exist now, cacheable: their next GETs reach gaond (the seen bits).
// write_seen does this for each key it invalidates; this is for when nothing is
// invalidated (unsafe_no_invalidation).
void KvCache::hint_written(const Request& r) {
  for (size_t i = 0; i < r.nkeys; ++i) table_.forget(key_hash(r.keys[i]));
}

uint64_t KvCache::write_seen(std::string_view key, const Request& r, uint64_t now) {
  const uint64_t h = key_hash(key);
  table_.forget(h);  // it may exist now: its next GET reaches gaond
  invalidate_hash(h);
  VerBucket& b = bucket(h);
  ++b.version;
  if (now - b.last_write_ns >= write_timeout_ns_) b.outstanding = 0;  // stale counts
  ++b.outstanding;  // noreply writes too: they clear by time
  b.last_write_ns = now;
  if (r.has_exptime) {
    const uint64_t e = expiry_for(r.exptime, now);
    if (b.expire_ns == 0 || b.expire_ns <= now)
      b.expire_ns = e;
    else if (e != 0 && e < b.expire_ns)
      b.expire_ns = e;
  }
  return h;
}

void KvCache::write_done(uint64_t h, uint64_t now) {
  invalidate_hash(h);
  VerBucket& b = bucket(h);
  ++b.version;
  if (b.outstanding) --b.outstanding;
}

// ---------------------------------------------------------------- pending requests

uint64_t KvCache::client_of(const Packet& p, bool ingress) {
  const uint8_t* ip = p.data() + p.hdr.l3;
  const uint8_t* l4 = p.data() + p.hdr.l4;
  const uint16_t port = net::load16(l4 + (ingress ? net::udp::sport : net::udp::dport));
  if (p.hdr.l3_proto == L3::ipv4) {
    return uint64_t{net::load32(ip + (ingress ? net::ip4::src : net::ip4::dst))} << 16 | port;
  }
  return XXH3_64bits(ip + (ingress ? net::ip6::src : net::ip6::dst), 16) ^ port ^ (1ull << 63);
}

static size_t pend_index(uint64_t client, uint16_t req_id, uint64_t n) {
  return (client * 0x9e3779b97f4a7c15ull ^ req_id * 0xbf58476d1ce4e5b9ull) >> 17 & (n - 1);
}

KvCache::Pending* KvCache::track(uint64_t client, uint16_t req_id, uint64_t now, PendKind kind) {
  Pending& e = pend_[pend_index(client, req_id, npend_)];
  const bool live = e.kind != p_free && now - e.issue_ns < write_timeout_ns_;
  const bool same = live && e.client == client && e.req_id == req_id;
  if (live && !same) ++hdr_->c.pending_evicted;
  e.client = client;
  e.req_id = req_id;
  e.issue_ns = now;
  e.generation = table_.generation();
  e.kind = kind;
  e.nkeys = 0;
  // A request id reused while the previous request is in flight: the replies cannot be
  // told apart, so nothing is learned from them.
  e.suspect = same;
  e.klen = 0;
  return &e;
}

KvCache::Pending* KvCache::match(uint64_t client, uint16_t req_id, uint64_t now) {
  Pending& e = pend_[pend_index(client, req_id, npend_)];
  if (e.kind == p_free || e.client != client || e.req_id != req_id ||
      now - e.issue_ns >= write_timeout_ns_)
    return nullptr;
  return &e;
}

// ---------------------------------------------------------------- ingress

bool KvCache::serve(Context& ctx, Packet& p, const Request& r, uint16_t req_id,
                    std::array<const kv_slot*, kMaxKeys>& hits) {
  const auto csum = udp_checksum_ ? reply::UdpChecksum::full : reply::UdpChecksum::none;
  uint8_t* pl = p.payload();
  if (r.proto == Proto::binary) {
    const kv_slot* s = hits[0];
    if (!s->has_cas) return false;
    const bool with_key = r.opcode == bin::GETK || r.opcode == bin::GETKQ;
    const size_t klen = with_key ? s->klen : 0;
    const size_t len = kUdpHeader + kBinHeader + 4 + klen + s->vlen;
    if (len > kUdpMaxPayload || !reply::set_payload_len(p, uint32_t(len))) return false;
    uint8_t* h = pl + kUdpHeader;
    if (with_key) std::memmove(h + kBinHeader + 4, h + kBinHeader, klen);  // the request's key
    write_udp_header(pl, req_id);
    h[0] = bin::kRes;  // opcode (h[1]) and opaque (h[12..15]) stay as requested
    net::store16(h + 2, uint16_t(klen));
    h[4] = 4;
    h[5] = 0;
    net::store16(h + 6, 0);
    net::store32(h + 8, uint32_t(4 + klen + s->vlen));
    net::store32(h + 16, uint32_t(s->cas >> 32));
    net::store32(h + 20, uint32_t(s->cas));
    net::store32(h + kBinHeader, s->flags);
    std::memcpy(h + kBinHeader + 4 + klen, kv::Table::value(*s).data(), s->vlen);
  } else {
    // One datagram per key, "END" in the last, as memcached sends them. The request's
    // packet carries the first; the others are emitted from the pool.
    const size_t n = r.nkeys;
    std::array<size_t, kMaxKeys> len;  // the first n are set
    std::array<kv::Table::Text, kMaxKeys> text;
    for (size_t i = 0; i < n; ++i) {
      const kv_slot* s = hits[i];
      if (r.cas && !s->has_cas) return false;
      text[i] = kv::Table::reply_text(*s, r.cas, i + 1 == n);
      len[i] = kUdpHeader + text[i].head.size() + text[i].tail.size();
      if (len[i] > kUdpMaxPayload) {
        ++hdr_->c.replies_too_big;
        return false;
      }
    }
    if (p.data_off + p.hdr.payload + len[0] > kFrameSize) return false;
    std::array<Packet*, kMaxKeys> extra;  // 1..n-1 are set
    for (size_t i = 1; i < n; ++i) {
      extra[i] = ctx.alloc();
      if (extra[i] == nullptr) {
        for (size_t j = 1; j < i; ++j) ctx.free(extra[j]);
        ++hdr_->c.emit_failed;
        return false;
      }
    }
    auto build = [&](Packet& q, size_t i) {
      reply::set_payload_len(q, uint32_t(len[i]));
      uint8_t* out = q.payload() + kUdpHeader;  // the slot's text: memcached's reply
      std::memcpy(out, text[i].head.data(), text[i].head.size());
      std::memcpy(out + text[i].head.size(), text[i].tail.data(), text[i].tail.size());
      write_udp_header(q.payload(), req_id);
      reply::swap_addresses(q);
      reply::finish_udp(q, csum);
    };
    for (size_t i = 1; i < n; ++i) {  // before the request's bytes are overwritten
      Packet& q = *extra[i];
      std::memcpy(q.data(), p.data(), p.hdr.payload);
      q.len = p.hdr.payload;
      q.hdr = p.hdr;
      q.parsed = true;
      build(q, i);
      ctx.emit(&q, Verdict::to_wire);
    }
    build(p, 0);
    return true;
  }
  write_udp_header(pl, req_id);
  reply::swap_addresses(p);
  reply::finish_udp(p, csum);
  return true;
}

// Two stages over the burst: the set (tags) of each GET's first key, then the slot whose tag
// matches (its header and key; the value follows). A miss's other lookups (pending table,
// version bucket) are left to the hardware: they are one line each and rarer.
void KvCache::prefetch(Context&, std::span<Packet*> burst) {
  pre_n_ = pre_next_ = 0;
  for (Packet* p : burst) {
    if (!p->is_udp() || pre_n_ == pre_.size()) continue;
    Parsed& e = pre_[pre_n_++];
    e.pkt = p;
    parse_request({p->payload(), p->hdr.payload_len}, e.req);
    e.hashed = e.req.kind == Kind::get && e.req.issue == ReqIssue::none && e.req.nkeys != 0;
    if (!e.hashed) continue;
    e.hash0 = key_hash(e.req.keys[0]);
    table_.prefetch_set(e.hash0);
  }
  for (uint32_t i = 0; i < pre_n_; ++i)
    if (pre_[i].hashed) table_.prefetch_slots(pre_[i].hash0);
}

// The request prefetch() parsed for `p` (they come in the burst's order), or parsed now.
// Anything out of order drops what prefetch() kept.
const Request& KvCache::request_of(const Packet& p, const uint64_t*& hash0) {
  hash0 = nullptr;
  if (pre_next_ < pre_n_ && pre_[pre_next_].pkt == &p) {
    const Parsed& e = pre_[pre_next_];
    if (++pre_next_ == pre_n_) pre_n_ = pre_next_ = 0;
    if (e.hashed) hash0 = &e.hash0;
    return e.req;
  }
  pre_n_ = pre_next_ = 0;
  parse_request({p.payload(), p.hdr.payload_len}, one_);
  return one_;
}

// Everything cached goes; replies already in flight are not learned (the generation), nor
// those to requests that pass before memcached has done what caused this (outstanding
// until acknowledged or write_timeout_ms).
// A flush_all with a delay (seconds) also bounds the life of what is learned until then.
void KvCache::flush_all(uint64_t now, int64_t delay_s) {
  table_.drop_all();
  if (now - hdr_->last_flush_ns >= write_timeout_ns_) hdr_->flush_outstanding = 0;
  ++hdr_->flush_outstanding;
  hdr_->last_flush_ns = now;
  if (delay_s > 0) {
    const uint64_t at = now + uint64_t(std::max<int64_t>(delay_s - 1, 0)) * kSecond;
    if (hdr_->flush_until_ns <= now || at < hdr_->flush_until_ns) hdr_->flush_until_ns = at;
  }
}

// ---------------------------------------------------------------- TCP: write invalidation

KvCache::TcpConn* KvCache::tcp_find(uint64_t key, bool create, uint64_t now) {
  // 4 places to look, from the key's own; a new connection takes a free one or the least
  // recently used (whose later segments then count as untracked).
  TcpConn* victim = nullptr;
  for (uint64_t i = 0; i < std::min<uint64_t>(4, ntcp_); ++i) {
    TcpConn* t = &tcp_[(key + i) & (ntcp_ - 1)];
    if (t->key == key) return t;
    if (!create) continue;
    if (t->key == 0) {
      if (victim == nullptr || victim->key != 0) victim = t;
    } else if (victim == nullptr || (victim->key != 0 && t->last_ns < victim->last_ns)) {
      victim = t;
    }
  }
  if (!create) return nullptr;
  if (victim->key != 0) ++hdr_->c.tcp.evicted;
  victim->key = key;
  victim->last_ns = now;
  victim->scan.reset();
  victim->replies.reset();
  return victim;
}

void KvCache::tcp_command(TcpConn& t, const Request& r, uint64_t now) {
  Counters& c = hdr_->c;
  ++c.tcp.commands;
  // What memcached's reply to it will mean: a single-key ASCII write's reply says the
  // write is done. Only gets, writes and flush_all are matched (a reply of one line, or
  // VALUE lines ending in END): after a binary or meta command, or any other (stats,
  // watch, lru_crawler, unknown, ...) whose output could pass for the replies of the
  // writes behind it, the connection's replies are not followed and its writes clear by
  // write_timeout_ms.
  const bool plain = r.kind == Kind::get || r.kind == Kind::write || r.kind == Kind::flush;
  if (t.acks && (r.proto == Proto::binary || r.meta || !plain || t.fifo_n == kTcpFifo)) {
    t.acks = false;
    ++c.tcp.acks_untracked;
  }
  const bool write1 = r.kind == Kind::write && r.nkeys == 1 && !no_invalidation_;
  if (t.acks && !r.noreply) {
    t.fifo[(t.fifo_head + t.fifo_n) % kTcpFifo] =
        write1 ? key_hash(r.keys[0]) : 0;  // (a hash of 0: cleared by time)
    ++t.fifo_n;
  }
  if (no_invalidation_) {
    if (r.kind == Kind::write) hint_written(r);  // (write_seen does it otherwise)
    return;
  }
  switch (r.kind) {
    case Kind::write:
      ++c.writes;
      ++c.tcp.writes;
      for (size_t i = 0; i < r.nkeys; ++i) write_seen(r.keys[i], r, now);
      break;
    case Kind::unknown:
      ++c.unknown_commands;
      [[fallthrough]];
    case Kind::flush:
      if (r.kind == Kind::flush) ++c.flushes;
      flush_all(now, r.kind == Kind::flush ? r.flush_delay : 0);
      break;
    case Kind::get:
    case Kind::read:
      break;
  }
}

// The client's address and both ports: one key per connection, from either direction.
static uint64_t tcp_key(const Packet& p, bool from_client) {
  uint8_t who[20] = {};
  const uint8_t* ip = p.data() + p.hdr.l3;
  const uint8_t* th = p.data() + p.hdr.l4;
  if (p.hdr.l3_proto == L3::ipv4)
    std::memcpy(who, ip + (from_client ? 12 : 16), 4);
  else
    std::memcpy(who, ip + (from_client ? 8 : 24), 16);
  std::memcpy(who + 16, th + (from_client ? 0 : 2), 2);  // the client's port
  std::memcpy(who + 18, th + (from_client ? 2 : 0), 2);  // memcached's
  return XXH3_64bits(who, sizeof(who)) | 1;
}

// The bytes of a segment not seen yet, when it continues its stream at `next` (which
// then moves past them; retransmitted bytes are left out). `gap`: bytes are missing
// before it (lost, or reordered), and nothing is returned.
static std::span<const uint8_t> unseen(uint32_t seq, std::span<const uint8_t> data, uint32_t& next,
                                       bool& gap) {
  const int32_t ahead = int32_t(seq - next);
  gap = ahead > 0;
  if (gap || int32_t(seq + uint32_t(data.size()) - next) <= 0) return {};
  const auto fresh = data.subspan(uint32_t(-ahead));
  next += uint32_t(fresh.size());
  return fresh;
}

// memcached's replies on a followed connection: each complete reply answers the oldest
// request waiting; a write's reply ends its outstanding state at once (as a UDP write's
// acknowledgement does).
Verdict KvCache::on_tcp_reply(Context& ctx, Packet& p) {
  const uint8_t* th = p.l4();
  const uint32_t seq = net::load32(th + 4);
  const uint8_t flags = th[13];
  constexpr uint8_t kSyn = 0x02, kRst = 0x04, kAck = 0x10;
  TcpConn* t = tcp_find(tcp_key(p, false), false, 0);
  if (t == nullptr) return Verdict::to_wire;
  if ((flags & kSyn) && (flags & kAck)) {
    t->next_rseq = seq + 1;
    t->rsynced = true;
    return Verdict::to_wire;
  }
  if (flags & kRst) {
    t->key = 0;
    return Verdict::to_wire;
  }
  const std::span<const uint8_t> data(p.payload(), p.hdr.payload_len);
  if (!t->acks || data.empty()) return Verdict::to_wire;
  Counters& c = hdr_->c;
  bool gap = false;
  const auto fresh = t->rsynced ? unseen(seq, data, t->next_rseq, gap) : data.first(0);
  if (!t->rsynced || gap) {  // replies we cannot place: stop matching them
    t->acks = false;
    ++c.tcp.acks_untracked;
    return Verdict::to_wire;
  }
  if (fresh.empty()) return Verdict::to_wire;
  const uint64_t now = ctx.now_ns();
  const bool ok = t->replies.feed(fresh, [&] {
    if (t->fifo_n == 0) {  // a reply to nothing we saw: lost track
      t->acks = false;
      return;
    }
    const uint64_t h = t->fifo[t->fifo_head];
    t->fifo_head = uint8_t((t->fifo_head + 1) % kTcpFifo);
    --t->fifo_n;
    if (h != 0 && t->acks) {
      write_done(h, now);
      ++c.tcp.acks;
    }
  });
  if (!ok || !t->acks) {
    t->acks = false;
    ++c.tcp.acks_untracked;
  }
  return Verdict::to_wire;
}

Verdict KvCache::on_tcp(Context& ctx, Packet& p) {
  Counters& c = hdr_->c;
  const uint8_t* th = p.l4();
  const uint32_t seq = net::load32(th + 4);
  const uint8_t flags = th[13];
  constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kAck = 0x10;
  const std::span<const uint8_t> data(p.payload(), p.hdr.payload_len);
  const uint64_t now = ctx.now_ns();
  ++c.tcp.segments;
  const uint64_t key = tcp_key(p, true);
  auto distrust = [&] {  // this segment's commands cannot be known: invalidate everything
    if (!no_invalidation_) flush_all(now), ++c.tcp.flushes;
  };
  if ((flags & kSyn) && !(flags & kAck)) {  // a new connection: follow it from here
    TcpConn* t = tcp_find(key, true, now);
    t->next_seq = seq + 1;
    t->rsynced = false;
    t->acks = true;
    t->fifo_head = t->fifo_n = 0;
    if (!data.empty()) {  // data on a SYN (TCP Fast Open): not followed, be safe
      ++c.tcp.untracked;
      distrust();
      t->key = 0;
    }
    return Verdict::to_host;
  }
  TcpConn* t = tcp_find(key, false, now);
  if (t == nullptr) {
    if (!data.empty()) {  // a connection we did not see open: its framing is unknown
      ++c.tcp.untracked;
      distrust();
    }
    return Verdict::to_host;
  }
  t->last_ns = now;
  if (!data.empty()) {
    bool gap = false;
    const auto fresh = unseen(seq, data, t->next_seq, gap);
    if (gap) {  // a segment was lost or comes later
      ++c.tcp.gaps;
      distrust();
      t->key = 0;
      return Verdict::to_host;
    }
    if (!fresh.empty() &&
        !t->scan.feed(fresh, [&](const Request& r) { tcp_command(*t, r, now); })) {
      ++c.tcp.lost;  // tcp_command saw it as unknown: everything was invalidated
      t->key = 0;
      return Verdict::to_host;
    }
  }
  if (flags & (kFin | kRst)) t->key = 0;
  return Verdict::to_host;
}

Verdict KvCache::on_packet(Context& ctx, Packet& p) {
  age(ctx);
  if (p.parsed && p.hdr.l4_proto == L4::tcp) return on_tcp(ctx, p);
  if (!p.is_udp()) return Verdict::to_host;
  Counters& c = hdr_->c;
  ++c.requests;
  const std::span<const uint8_t> payload(p.payload(), p.hdr.payload_len);
  const uint64_t* hash0;
  const Request& r = request_of(p, hash0);
  const uint64_t now = ctx.now_ns();
  UdpHeader uh;
  read_udp_header(payload, uh);
  switch (r.kind) {
    case Kind::get: {
      if (r.issue != ReqIssue::none) {
        ++c.passed[size_t(r.issue)];
        return Verdict::to_host;
      }
      std::array<const kv_slot*, kMaxKeys> hits;  // the first nkeys are set
      std::array<uint64_t, kMaxKeys> hashes;
      size_t nhit = 0;
      for (size_t i = 0; i < r.nkeys; ++i) {
        hashes[i] = i == 0 && hash0 ? *hash0 : key_hash(r.keys[i]);
        hits[i] = table_.find(hashes[i], r.keys[i], now);
        nhit += hits[i] != nullptr;
      }
      if (nhit == r.nkeys && serve(ctx, p, r, uh.req_id, hits)) {
        ++c.hits;
        c.hit_keys += nhit;
        return Verdict::to_wire;
      }
      ++c.misses;
      c.miss_keys += r.nkeys - nhit;
      Pending* e = track(client_of(p, true), uh.req_id, now, p_get);
      e->proto = uint8_t(r.proto);
      e->nkeys = r.nkeys;
      for (size_t i = 0; i < r.nkeys; ++i) {
        e->hash[i] = hashes[i];
        e->version[i] = bucket(hashes[i]).version;
      }
      if (r.proto == Proto::binary) {
        e->klen = uint16_t(r.keys[0].size());
        std::memcpy(e->key, r.keys[0].data(), r.keys[0].size());
      }
      return Verdict::to_host;
    }
    case Kind::write:
    case Kind::unknown:
    case Kind::flush:
      udp_change(p, r, uh.req_id, now);
      return Verdict::to_host;
    case Kind::read:
      if (r.issue != ReqIssue::none) ++c.passed[size_t(r.issue)];
      return Verdict::to_host;
  }
  return Verdict::to_host;
}

// A UDP request that may change data (a write, a flush, or one not understood), on its way
// to memcached: invalidate first, and track its acknowledgement.
void KvCache::udp_change(const Packet& p, const Request& r, uint16_t req_id, uint64_t now) {
  Counters& c = hdr_->c;
  switch (r.kind) {
    case Kind::write: {
      ++c.writes;
      if (no_invalidation_) {
        hint_written(r);  // (write_seen does it otherwise)
        return;
      }
      Pending* e = r.noreply ? nullptr : track(client_of(p, true), req_id, now, p_write);
      for (size_t i = 0; i < r.nkeys; ++i) {
        const uint64_t h = write_seen(r.keys[i], r, now);
        if (e) e->hash[e->nkeys++] = h;
      }
      return;
    }
    case Kind::unknown:
    case Kind::flush:
      if (r.kind == Kind::flush)
        ++c.flushes;
      else
        ++c.unknown_commands;
      if (no_invalidation_) return;
      flush_all(now, r.kind == Kind::flush ? r.flush_delay : 0);
      if (r.kind == Kind::flush && !r.noreply) track(client_of(p, true), req_id, now, p_flush);
      return;
    case Kind::get:
    case Kind::read:
      return;
  }
}

// A datagram too large for a frame: only its head is here, and it passes whole. A request's
// command line (ASCII) or header, extras and key (binary) fit the head, so a write is
// invalidated like any other and its acknowledgement tracked, when the head shows it is the
// datagram's only command (its data block ends where the datagram does). Anything else — a
// line longer than the head, more commands after the first — counts as unknown
// (everything is invalidated); gets and reads pass (their replies are not learned: nothing
// waits for them). A reply this large is never learned.
Verdict KvCache::on_oversize(Context& ctx, Packet& p, Direction dir) {
  if (!p.is_udp()) return p.verdict;
  Counters& c = hdr_->c;
  const std::span<const uint8_t> payload(p.payload(), p.hdr.payload_len);
  UdpHeader uh;
  const bool framed = read_udp_header(payload, uh);
  const uint64_t now = ctx.now_ns();
  if (dir == Direction::egress) {
    ++c.oversize_replies;
    if (Pending* e = framed ? match(client_of(p, false), uh.req_id, now) : nullptr)
      reply_done(*e, now);
    return Verdict::to_wire;
  }
  ++c.requests;
  ++c.oversize_requests;
  Request r;
  r.kind = Kind::unknown;
  uint8_t head[kv::kBinMaxHead];
  const uint64_t whole = p.oversize_len;  // the datagram's payload, frame header included
  const std::span<const uint8_t> body =
      framed ? payload.subspan(kv::kUdpHeader) : std::span<const uint8_t>{};
  if (framed && (uh.total != 1 || uh.seq != 0)) {
    r.kind = Kind::read;  // a request in several datagrams: memcached refuses those
  } else if (!body.empty() && body[0] == kv::bin::kReq && body.size() >= kv::kBinHeader) {
    // One request, exactly as long as the datagram, or it is not understood.
    const size_t n = kv::kBinHeader + body[4] + net::load16(body.data() + 2);
    if (n <= std::min(body.size(), sizeof(head)) &&
        kv::kBinHeader + uint64_t(net::load32(body.data() + 8)) == whole - kv::kUdpHeader) {
      std::memcpy(head, body.data(), n);
      kv::parse_binary_head({head, n}, r);
    }
  } else if (!body.empty()) {
    // One command line and its data block, ending where the datagram ends: anything after
    // it would be another command, which this head cannot show.
    const std::string_view text(reinterpret_cast<const char*>(body.data()), body.size());
    if (const size_t eol = text.find('\n'); eol != std::string_view::npos) {
      bool has_data = false;
      uint64_t data_len = 0;
      const bool ok = kv::parse_ascii_line(text.substr(0, eol), r, has_data, data_len);
      const uint64_t end = kv::kUdpHeader + eol + 1 + (has_data ? data_len + 2 : 0);
      if (!ok || end != whole) r.kind = Kind::unknown;
    }
  }
  if (r.kind == Kind::get) r.kind = Kind::read;  // never served, not waited for
  udp_change(p, r, uh.req_id, now);
  return Verdict::to_host;
}

// ---------------------------------------------------------------- egress: learning

void KvCache::learn(const Response& resp, Pending& e, uint64_t now) {
  Counters& c = hdr_->c;
  for (size_t v = 0; v < resp.nvalues; ++v) {
    const Value& val = resp.values[v];
    const std::string_view key =
        val.key.empty() && e.klen ? std::string_view(e.key, e.klen) : val.key;
    const uint64_t h = key_hash(key);
    size_t i = 0;
    while (i < e.nkeys && e.hash[i] != h) ++i;
    Reject why = r_count;
    const VerBucket& b = bucket(h);
    if (i == e.nkeys)
      why = r_unknown_key;
    else if (e.suspect)
      why = r_suspect;
    else if (e.generation != table_.generation() ||
             (hdr_->flush_outstanding && now - hdr_->last_flush_ns < write_timeout_ns_))
      why = r_flushed;
    else if (b.version != e.version[i])
      why = r_version;
    else if (b.outstanding && now - b.last_write_ns < write_timeout_ns_)
      why = r_outstanding;
    else if (key.size() > max_key_ || val.data.size() > max_value_ ||
             kUdpHeader + ascii_value_len(key, val.flags, val.data.size(), val.has_cas, val.cas) +
                     5 >
                 kUdpMaxPayload ||
             kUdpHeader + kBinHeader + 4 + key.size() + val.data.size() > kUdpMaxPayload)
      why = r_too_big;
    uint64_t expire = kNever;
    if (max_ttl_ns_) expire = now + max_ttl_ns_;
    if (b.expire_ns > now) expire = std::min(expire, b.expire_ns);
    if (hdr_->flush_until_ns > now) expire = std::min(expire, hdr_->flush_until_ns);
    if (why == r_count && expire <= now) why = r_expired;
    if (why != r_count) {
      ++c.rejected[why];
      table_.forget(h);  // its next GET reaches gaond: learned then
      continue;
    }
    table_.insert(h, key, kv::Item{val.data, val.flags, val.cas, val.has_cas}, expire);
    ++c.fills;
  }
}

void KvCache::on_gap(Context& ctx) {
  ++hdr_->c.gaps;
  if (!no_invalidation_) flush_all(ctx.now_ns());
}

// A reply that ends what `e` waited for, learning nothing from it.
void KvCache::reply_done(Pending& e, uint64_t now) {
  switch (e.kind) {
    case p_write:
      for (size_t i = 0; i < e.nkeys; ++i) write_done(e.hash[i], now);
      break;
    case p_flush:
      table_.drop_all();
      if (hdr_->flush_outstanding) --hdr_->flush_outstanding;
      break;
    case p_get:
      ++hdr_->c.not_learned;
      break;
    default:
      return;
  }
  e.kind = p_free;
}

Verdict KvCache::on_egress(Context& ctx, Packet& p) {
  age(ctx);
  if (p.parsed && p.hdr.l4_proto == L4::tcp) return on_tcp_reply(ctx, p);
  if (!p.is_udp()) return Verdict::to_wire;
  const std::span<const uint8_t> payload(p.payload(), p.hdr.payload_len);
  UdpHeader uh;
  if (!read_udp_header(payload, uh)) return Verdict::to_wire;
  const uint64_t now = ctx.now_ns();
  Pending* e = match(client_of(p, false), uh.req_id, now);
  if (e == nullptr) {
    ++hdr_->c.unmatched_replies;
    return Verdict::to_wire;
  }
  switch (e->kind) {
    case p_write:
    case p_flush:
      reply_done(*e, now);
      break;
    case p_get: {
      Response resp;
      if (uh.total == 1 && uh.seq == 0) parse_get_response(payload.subspan(kUdpHeader), resp);
      if (!resp.ok) {
        ++hdr_->c.not_learned;
        for (size_t i = 0; i < e->nkeys; ++i) table_.forget(e->hash[i]);  // learned next time
        e->kind = p_free;
        break;
      }
      learn(resp, *e, now);
      if (resp.end) e->kind = p_free;
      break;
    }
    default:
      break;
  }
  return Verdict::to_wire;
}

// ---------------------------------------------------------------- state operations

Result<nlohmann::json> KvCache::call(std::string_view op, std::span<const std::string> args) {
  const uint64_t now = mono_ns();
  Counters& c = hdr_->c;
  if (op == "stats") {
    nlohmann::json rejected = nlohmann::json::object(), passed = nlohmann::json::object();
    uint64_t rejected_total = 0;
    for (size_t i = 0; i < r_count; ++i) {
      rejected[std::string(reject_name(i))] = c.rejected[i];
      rejected_total += c.rejected[i];
    }
    for (size_t i = 1; i < size_t(ReqIssue::count_); ++i)
      passed[std::string(to_string(ReqIssue(i)))] = c.passed[i];
    const uint64_t lookups = c.hits + c.misses;
    nlohmann::json j, tcp;
#define GAON_KVCACHE_JSON(name, doc) j[#name] = c.name;
    GAON_KVCACHE_COUNTERS(GAON_KVCACHE_JSON)
#undef GAON_KVCACHE_JSON
#define GAON_KVCACHE_JSON(name, doc) tcp[#name] = c.tcp.name;
    GAON_KVCACHE_TCP_COUNTERS(GAON_KVCACHE_JSON)
#undef GAON_KVCACHE_JSON
    j["tcp"] = tcp;
    j["hit_rate"] = lookups ? double(c.hits) / double(lookups) : 0.0;
    j["rejected_fills"] = rejected_total;
    j["rejected_by_reason"] = rejected;
    j["passed_by_issue"] = passed;
    j["evictions"] = table_.evictions();
    if (table_.kernel_writers()) {  // the kernel's writers keep no count: one is taken
      const kv::Table::Census census = table_.census(now);
      j["items"] = census.items;
      j["bytes_used"] = census.bytes;
    } else {
      j["items"] = table_.items();
      j["bytes_used"] = table_.bytes_used();
    }
    j["writers"] = table_.kernel_writers() ? "kernel" : "gaond";
    j["geometry"] = {{"sets", geom_.nsets},
                     {"ways", KV_WAYS},
                     {"slots", uint64_t(geom_.nsets) * KV_WAYS},
                     {"slot_bytes", geom_.slot_bytes},
                     {"table_bytes", table_.geom().bytes},
                     {"in_fast_path_memory", fp_ != nullptr},
                     {"max_key", max_key_},
                     {"max_value", max_value_},
                     {"pending", npend_},
                     {"versions", nver_},
                     {"tcp_connections", ntcp_}};
    return j;
  }
  if (op == "get") {
    const std::string& key = args[0];
    const kv_slot* s = table_.find(key_hash(key), key, now);
    if (s == nullptr) return nlohmann::json{{"key", key}, {"hit", false}};
    nlohmann::json j{{"key", key},
                     {"hit", true},
                     {"flags", s->flags},
                     {"value", std::string(kv::Table::value(*s))}};
    if (s->has_cas) j["cas"] = s->cas;
    if (s->expire_ns != kNever) j["expires_in_ms"] = (s->expire_ns - now) / 1000000;
    return j;
  }
  if (op == "invalidate") {
    const uint64_t h = key_hash(args[0]);
    const bool found = invalidate_hash(h);
    ++bucket(h).version;  // and learn nothing for it from replies in flight
    return nlohmann::json{{"key", args[0]}, {"invalidated", found}};
  }
  if (op == "clear") {
    const uint64_t items = table_.items();
    table_.drop_all();
    return nlohmann::json{{"cleared", items}};
  }
  return IKernel::call(op, args);
}

GAON_IKERNEL(KvCache, "kvcache",
             "transparent memcached cache: serves GET hits, learns from memcached's replies");

}  // namespace gaon::ikernels
