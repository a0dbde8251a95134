// kvcache — transparent memcached cache: serves GET hits on the wire, learns from replies.
//
// Attach it to memcached's UDP socket (sidecar: gaond's listen address). Requests use
// memcached's UDP frame header followed by the ASCII or the binary protocol. Attach it to
// memcached's TCP socket too (a bump in the wire; gaon-run --tcp) and it also sees the
// writes clients send over TCP. It sees them only while that TCP flow is attached: where
// clients write over TCP, attach and detach the two flows together (an instance left
// with its UDP flow alone would serve values that unseen TCP writes have replaced).
//
// What it does with each request (see mc_proto.h for the classification):
//   get    ASCII get/gets (also multi-key), binary GET/GETQ/GETK/GETKQ. When every key
//          is cached the reply is built in place and sent to the wire — byte for byte what
//          memcached would answer (ASCII: one datagram per key, "END" in the last; binary:
//          status, flags, opaque, cas, key for GETK). Otherwise the request passes to
//          memcached, and the reply is learned on its way back (the egress hook).
//          gets and binary hits need the item's cas, so they are served only for items
//          learned from a reply that carried it (a gets or a binary get).
//   write  set add replace append prepend cas delete incr decr touch gat gats, meta
//          ms md ma mg, binary writes (and quiet forms): the keys are invalidated, then
//          the request passes; invalidated again when memcached's reply passes back.
//   flush  flush_all / FLUSH: the whole instance is invalidated (O(1): a generation).
//   other  requests that cannot change data pass; anything it does not understand is
//          treated as a flush (it never guesses). Malformed requests pass untouched.
//   too large  a datagram that does not fit a frame (sidecar; IKernel::on_oversize) passes
//          whole; kvcache sees its head: a write's command line or binary header and key
//          always fit there, so its keys are invalidated and its acknowledgement followed
//          as for any write; a head that is not one whole command is treated as a flush;
//          such gets pass (never served) and replies this large are never learned.
//
// TCP: each client→memcached connection is followed from its SYN (tcp_connections of
// them; the least recently used goes when more come) and its byte stream scanned in order
// (mc_stream.h): commands split across segments are found, data blocks are skipped. A
// write's keys are invalidated (their buckets outstanding) before the segment completing
// its command (for a storage command, its data block) passes on to memcached; memcached's reply on
// the same connection (ASCII replies are counted in order and matched to the requests waiting) ends
// the outstanding state, as a UDP acknowledgement does. Only gets, writes and flush_all are
// matched; after any other command (binary, meta, stats, ...) a connection's replies are not
// followed and its writes clear by write_timeout_ms. Whenever the scanner cannot be sure — a
// connection it did not see open (older than the attachment, or evicted), a gap (a lost or
// reordered segment), a line it cannot frame — it invalidates the whole instance for that segment:
// it never guesses. Retransmitted bytes it already scanned pass. TCP itself always passes
// unchanged, in both directions.
//
// Stalls: in a bump, a gaond that stops polling for longer than its lease (gaond
// --lease-ms) has the steering program forward its flows in the kernel, writes included.
// When gaond resumes, before the next frame, kvcache drops everything and learns nothing
// until write_timeout_ms has passed (a flush that is never acknowledged), so a write that
// went around it cannot be undone by a value read before it; TCP connections whose bytes
// went around show a gap and are no longer followed (each segment invalidates).
// Restarts of memcached: in sidecar mode a restart is visible — memcached's port refuses
// datagrams while it is down (ICMP port unreachable, ECONNREFUSED on gaond's socket) — and
// kvcache does the same (drops everything), so it does not keep serving values memcached
// lost. Whether seen or not, a write after the restart passes through kvcache and
// invalidates as any write, so no value older than an acknowledged write is served. In a
// bump a restart is not seen (values memcached lost may be served until evicted, expired or
// written, as from any cache in front of it).
//
// Consistency: after memcached has acknowledged a write, the old value is never served.
// Each key hashes to a version bucket. A write bumps the bucket's version when it passes
// in and again when its acknowledgement passes out, and counts as outstanding until then
// (or until write_timeout_ms for writes that are never acknowledged: noreply, lost). A
// miss remembers, per client and request id, the versions of its keys and the flush
// generation; its reply is learned only if no write touched those buckets since the
// request passed and none is outstanding. So a reply that carries a value read before a
// write — even one that arrives after the write's acknowledgement — is rejected.
// Expiry: an entry never outlives max_ttl, nor the exptime of a write seen for its key
// (taken one second early: memcached's clock ticks in seconds), nor a delayed flush_all.
//
// State (inside the instance's region, but for the table in a bump, which is in its
// fast-path memory): the item table (kv_table.h, laid out as kv_abi.h says: 8-way sets of
// fixed-size slots holding memcached's reply text, CLOCK eviction, per-slot sequence
// counters for the XDP reader); version buckets; a direct-mapped table of pending requests.
//
// Parameters:
//   capacity=48M          bytes for the item table (slots + set metadata; with the rest of
//                         kvcache's state it fits the default 64 MiB quota)
//   max_key=250           longest key cached
//   max_value=1000        largest value cached (bytes); also sets the slot size
//   max_ttl=0             seconds an entry may live; 0 = no limit
//   write_timeout_ms=1000 how long an unacknowledged write blocks learning its keys
//   pending=4096          requests awaiting a reply that are tracked
//   versions=65536        version buckets
//   tcp_connections=256   client TCP connections followed at once (about 2.6 KiB each)
//   udp_checksum=false    compute UDP checksums of replies (false: 0 = none, IPv4 only)
//   fast_path=true        in a bump (afxdp ports), run the fast path (kvcache.bpf.c, see
//                         docs/fast-path.md): the table moves into the fast-path memory and
//                         the XDP program answers single-key GET hits (ASCII get/gets,
//                         binary GET/GETQ/GETK/GETKQ; IPv4 and IPv6) in the driver; GETs for
//                         keys not cached (after their first) and memcached's miss replies
//                         go between client and memcached in the kernel
//   hint_age_ms=60000     how often every key not cached gets one GET through to gaond
//                         again (a key whose reply was lost; keys leaving the cache or not
//                         learned from a reply gaond saw get it at once)
//   unsafe_no_invalidation=false  TESTING ONLY: ignore writes and flushes, so stale
//                         values are served; exists to prove the consistency checker
// State operations:
//   stats            counters (below) and table geometry
//   get KEY          the cached item, if any: flags, value, cas
//   invalidate KEY   drop KEY (and block learning it from replies already in flight)
//   clear            drop everything
// Counters (gaond's, from the lists GAON_KVCACHE_COUNTERS and GAON_KVCACHE_TCP_COUNTERS
// below, which say what each counts; a test keeps this line in step with them): requests,
// hits, misses, hit_keys, miss_keys, fills, invalidations, writes, flushes, unknown_commands,
// pending_evicted, unmatched_replies, not_learned, replies_too_big, emit_failed,
// oversize_requests / oversize_replies (datagrams too large for a frame, passed whole: see
// "too large" above), gaps (times traffic went around it or memcached restarted: see
// "stalls"); tcp: segments, commands, writes, untracked, gaps, lost, evicted, flushes, acks,
// acks_untracked. Derived: hit_rate, rejected_fills and rejected_by_reason, passed_by_issue;
// the table's evictions, items, bytes_used. The fast path's (summed over CPUs) are under
// "fast_path": answered (hits in XDP), forwarded, handed_up, torn, fail_open, lease_expired,
// and on one NIC passed, writes, flushes, fills, fills_rejected, tcp_commands,
// tcp_unframed, tcp_out_of_order ("writers": "kernel" then; GAON_FP_STATS in
// gaon/xdp_abi.h).
//
// On a server with one NIC (gaond --local; docs/one-nic.md) gaond sees no frame: the
// fast path answers hits on memcached's own interface, and writers in the kernel take
// gaond's part — UDP writes invalidated in XDP before memcached reads them, TCP commands
// framed in stream order at cgroup_skb ingress on memcached's accepted connections (picked
// by sock_ops) with the replies followed at tc egress, values learned from memcached's UDP
// replies at tc egress — under the rules above, kept in the table's version buckets
// (kv_abi.h). gaond's own counters then stay at 0 but for gaps; the table is the same.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "gaon/ikernel.h"
#include "kv_table.h"
#include "mc_proto.h"
#include "mc_stream.h"

namespace gaon::ikernels {

class KvCache : public PerPacketIKernel<KvCache> {
 public:
  static std::vector<ParamSpec> param_specs();
  static std::vector<StateOpSpec> state_ops();

  Result<void> configure(const Params& p) override;
  size_t state_bytes() const override;
  Result<void> init(StateRegion& region) override;
  void prefetch(Context& ctx, std::span<Packet*> burst);
  Verdict on_packet(Context& ctx, Packet& p);
  Verdict on_egress(Context& ctx, Packet& p);
  Verdict on_oversize(Context& ctx, Packet& p, Direction dir) override;
  void on_gap(Context& ctx) override;
  Result<nlohmann::json> call(std::string_view op, std::span<const std::string> args) override;
  FastPathSpec fast_path() const override;
  void on_fast_path(FastPathState& fp) override;

  enum Reject : uint8_t {
    r_version,
    r_outstanding,
    r_flushed,
    r_suspect,
    r_unknown_key,
    r_too_big,
    r_expired,
    r_count
  };

  // The counters, written once: the struct, the stats JSON and (checked by a test) the
  // doc block above come from these lists.
#define GAON_KVCACHE_COUNTERS(X)                                                         \
  X(requests, "UDP requests of its flows")                                               \
  X(hits, "GETs gaond answered (every key cached; the fast path's are under fast_path)") \
  X(misses, "GETs gaond passed to memcached")                                            \
  X(hit_keys, "keys of those GETs found")                                                \
  X(miss_keys, "keys of those GETs not found")                                           \
  X(fills, "values learned from memcached's replies")                                    \
  X(invalidations, "cached entries dropped by a write, an invalidate or a TCP write")    \
  X(writes, "write requests seen (UDP and TCP)")                                         \
  X(flushes, "flush_all requests seen")                                                  \
  X(unknown_commands, "requests not understood (treated as a flush)")                    \
  X(pending_evicted, "requests awaiting a reply pushed out of the pending table")        \
  X(unmatched_replies, "replies to no request it tracked")                               \
  X(not_learned, "replies it could not learn from")                                      \
  X(replies_too_big, "hits whose reply would not fit a datagram (passed)")               \
  X(emit_failed, "multi-key hits passed because the pool had no frame for a reply")      \
  X(oversize_requests, "requests too large for a frame (passed whole)")                  \
  X(oversize_replies, "replies too large for a frame (never learned)")                   \
  X(gaps, "times traffic went around it or memcached restarted (it dropped everything)")
#define GAON_KVCACHE_TCP_COUNTERS(X)                                                 \
  X(segments, "client segments seen")                                                \
  X(commands, "commands found in the streams")                                       \
  X(writes, "writes found in the streams")                                           \
  X(untracked, "segments of connections not followed (each invalidated everything)") \
  X(gaps, "streams with a lost or reordered segment (invalidated everything)")       \
  X(lost, "streams that could not be framed (invalidated everything)")               \
  X(evicted, "followed connections pushed out by newer ones")                        \
  X(flushes, "times a segment invalidated everything")                               \
  X(acks, "write replies matched to their writes")                                   \
  X(acks_untracked, "connections whose replies stopped being matched")
#define GAON_KVCACHE_FIELD(name, doc) uint64_t name;
  struct Counters {
    GAON_KVCACHE_COUNTERS(GAON_KVCACHE_FIELD)
    struct Tcp {
      GAON_KVCACHE_TCP_COUNTERS(GAON_KVCACHE_FIELD)
    } tcp;
    std::array<uint64_t, r_count> rejected;
    std::array<uint64_t, size_t(kv::ReqIssue::count_)> passed;
  };
#undef GAON_KVCACHE_FIELD

 private:
  struct Header {
    uint64_t flush_until_ns;  // a delayed flush_all: entries expire by then
    uint64_t last_flush_ns;
    uint32_t flush_outstanding;
    Counters c;
  };
  struct VerBucket {
    uint32_t version;
    uint32_t outstanding;
    uint64_t last_write_ns;
    uint64_t expire_ns;  // from the last write with an exptime; 0 = none
  };
  enum PendKind : uint8_t { p_free, p_get, p_write, p_flush };
  struct Pending {
    uint64_t client;
    uint64_t issue_ns;
    uint64_t generation;
    uint16_t req_id;
    uint8_t kind;
    uint8_t nkeys;
    uint8_t suspect;
    uint8_t proto;
    uint16_t klen;  // binary get: the key is not in the reply
    std::array<uint64_t, kv::kMaxKeys> hash;
    std::array<uint32_t, kv::kMaxKeys> version;
    char key[kv::kMemcachedMaxKey];
  };

  // One client→memcached TCP connection being scanned for writes.
  static constexpr uint32_t kTcpFifo = 16;
  struct TcpConn {
    uint64_t key;  // 0 = free
    uint64_t last_ns;
    uint32_t next_seq;   // client → memcached: the next byte to scan
    uint32_t next_rseq;  // memcached → client: the next reply byte
    bool rsynced;        // next_rseq known (the SYN-ACK was seen)
    bool acks;           // replies are matched to requests (ASCII, in order)
    uint8_t fifo_head, fifo_n;
    // Requests awaiting a reply, oldest first: the hash of a single-key write, or 0.
    std::array<uint64_t, kTcpFifo> fifo;
    kv::StreamScanner scan;
    kv::ReplyScanner replies;
  };

  // the table (kv_table.h), and where it lives (fast_path.h)
  void age(Context& ctx);
  bool invalidate_hash(uint64_t h);
  uint32_t table_flags() const {
    return (udp_checksum_ ? KV_F_UDP_CSUM : 0) | (no_invalidation_ ? KV_F_UNSAFE : 0);
  }
  VerBucket& bucket(uint64_t h) { return vers_[(h >> 20) & (nver_ - 1)]; }
  uint64_t write_seen(std::string_view key, const kv::Request& r, uint64_t now);  // its hash
  void hint_written(const kv::Request& r);
  void write_done(uint64_t h, uint64_t now);
  uint64_t expiry_for(int64_t exptime, uint64_t now) const;

  // datapath pieces
  bool serve(Context& ctx, Packet& p, const kv::Request& r, uint16_t req_id,
             std::array<const kv_slot*, kv::kMaxKeys>& hits);
  Pending* track(uint64_t client, uint16_t req_id, uint64_t now, PendKind kind);
  Pending* match(uint64_t client, uint16_t req_id, uint64_t now);
  void reply_done(Pending& e, uint64_t now);
  void udp_change(const Packet& p, const kv::Request& r, uint16_t req_id, uint64_t now);
  void learn(const kv::Response& resp, Pending& pe, uint64_t now);
  void flush_all(uint64_t now, int64_t delay_s = 0);
  Verdict on_tcp(Context& ctx, Packet& p);
  void tcp_command(TcpConn& t, const kv::Request& r, uint64_t now);
  Verdict on_tcp_reply(Context& ctx, Packet& p);
  TcpConn* tcp_find(uint64_t key, bool create, uint64_t now);
  static uint64_t client_of(const Packet& p, bool ingress);
  const kv::Request& request_of(const Packet& p, const uint64_t*& hash0);

  // configuration
  uint64_t capacity_ = 0, max_key_ = 0, max_value_ = 0, max_ttl_ns_ = 0, write_timeout_ns_ = 0;
  uint64_t hint_age_ns_ = 0, aged_ns_ = 0;
  uint64_t npend_ = 0, nver_ = 0, ntcp_ = 0;
  kv::Geometry geom_;
  kv::Geometry geom_kernel_;  // the same with the kernel writers' version buckets
  bool udp_checksum_ = false;
  bool no_invalidation_ = false;
  bool fast_path_ = true;
  FastPathState* fp_ = nullptr;  // the fast-path memory the table is in (a bump), or null
  // What prefetch() parsed of the burst's UDP requests, used again by on_packet (in order).
  struct Parsed {
    const Packet* pkt;
    kv::Request req;
    uint64_t hash0;  // of the first key, when `hashed`
    bool hashed;
  };
  std::array<Parsed, kBurst> pre_{};
  uint32_t pre_n_ = 0, pre_next_ = 0;
  kv::Request one_;                // a request parsed outside prefetch()
  int64_t wall_minus_mono_s_ = 0;  // for absolute exptimes
  // state (inside the region)
  Header* hdr_ = nullptr;
  kv::Table table_;
  VerBucket* vers_ = nullptr;
  Pending* pend_ = nullptr;
  TcpConn* tcp_ = nullptr;
};

}  // namespace gaon::ikernels
