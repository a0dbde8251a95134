// kvcache on the engine with mem ports: a client on the wire side, memcached's replies
// (bytes captured from memcached 1.6.18) on the host side. Time is simulated.
#include "kvcache.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <sstream>

#include <algorithm>

#include "frames.h"
#include "gaon/engine.h"
#include "gaon/mem_port.h"
#include "gaon/parse.h"

namespace gaon {
namespace {

using test::Bytes;

std::string dgram(const std::string& body, uint16_t req_id) { return test::mc_dgram(body, req_id); }
std::string binreq(uint8_t op, const std::string& key) { return test::mc_binreq(op, key); }

// Captured from memcached 1.6.18 after `set foo 42 0 3` with value "bar" (cas 1).
std::string bin_get_hit(uint8_t op, bool with_key) {
  std::string h("\x81\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x07\x11\x22\x33\x44", 16);
  h[1] = char(op);
  if (with_key) h[3] = 3, h[11] = 10;
  return h + std::string("\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x2a", 12) +
         (with_key ? "foo" : "") + "bar";
}

struct Seen {
  std::vector<std::string> wire, host;  // UDP payloads
};

class KvCacheTest : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }
  void start(std::vector<std::string> params) {
    auto e = Engine::create({.pool_frames = 2048});
    ASSERT_TRUE(e) << e.error();
    engine_ = std::move(*e);
    engine_->set_ports(&wire_, &host_);
    auto inst = Instance::create({.type = "kvcache", .params = params, .state_quota = 1u << 30},
                                 Registry::global());
    ASSERT_TRUE(inst) << inst.error();
    id_ = *engine_->add_instance(std::move(*inst));
    ASSERT_TRUE(engine_->add_flow(*FlowKey::parse("udp:10.0.0.2:11211"), id_));
  }
  void TearDown() override { EXPECT_EQ(engine_->pool().available(), engine_->pool().capacity()); }
  std::string payload_of(Packet* p) {
    EXPECT_EQ(parse(*p), ParseResult::ok);
    return std::string(reinterpret_cast<char*>(p->payload()), p->hdr.payload_len);
  }
  Seen run(MemPort& in, const Bytes& frame) { return run(in, std::vector<Bytes>{frame}); }
  // All frames arrive together: the engine hands them to kvcache as one burst.
  Seen run(MemPort& in, const std::vector<Bytes>& frames) {
    for (const Bytes& f : frames) {
      Packet* p = test::make_packet(engine_->pool(), f);
      EXPECT_EQ(in.inject({&p, 1}), 1u);
    }
    for (int i = 0; i < 3; ++i) engine_->poll(now_);
    Seen s;
    Packet* buf[kBurst];
    for (auto [port, out] : {std::pair{&wire_, &s.wire}, std::pair{&host_, &s.host}}) {
      while (uint32_t n = port->collect(buf)) {
        for (uint32_t i = 0; i < n; ++i) {
          last_frames_.push_back(test::bytes_of(*buf[i]));
          out->push_back(payload_of(buf[i]));
          engine_->pool().free(buf[i]);
        }
      }
    }
    return s;
  }
  // A datagram from the client to memcached's address.
  static Bytes request_frame(const std::string& payload, uint16_t sport = 40000) {
    test::FrameSpec f;
    f.src_ip = "10.0.0.1";
    f.dst_ip = "10.0.0.2";
    f.sport = sport;
    f.dport = 11211;
    f.payload = test::text(payload);
    return test::build_frame(f);
  }
  Seen request(const std::string& payload, uint16_t sport = 40000) {
    return run(wire_, request_frame(payload, sport));
  }
  // memcached's reply on its way back to the client.
  Seen reply(const std::string& payload, uint16_t dport = 40000) {
    test::FrameSpec f;
    f.src_ip = "10.0.0.2";
    f.dst_ip = "10.0.0.1";
    f.sport = 11211;
    f.dport = dport;
    f.payload = test::text(payload);
    return run(host_, test::build_frame(f));
  }
  // A GET that misses, and memcached's reply, which kvcache learns from.
  void fill(const std::string& get, const std::string& answer, uint16_t req_id) {
    auto s = request(dgram(get, req_id));
    ASSERT_EQ(s.host.size(), 1u) << get;
    reply(dgram(answer, req_id));
  }
  nlohmann::json stats() { return engine_->call(id_, "stats", {}).value(); }

  MemPort wire_{"wire"}, host_{"host"};
  std::unique_ptr<Engine> engine_;
  uint32_t id_ = 0;
  uint64_t now_ = 1'000'000'000;
  std::vector<Bytes> last_frames_;
};

const std::string kFoo = "VALUE foo 42 3\r\nbar\r\nEND\r\n";

TEST_F(KvCacheTest, MissPassesThenTheHitIsServedByteForByte) {
  auto miss = request(dgram("get foo\r\n", 1));
  EXPECT_EQ(miss.host, std::vector<std::string>{dgram("get foo\r\n", 1)});  // untouched
  EXPECT_TRUE(miss.wire.empty());
  auto back = reply(dgram(kFoo, 1));
  EXPECT_EQ(back.wire, std::vector<std::string>{dgram(kFoo, 1)});  // passes unchanged
  EXPECT_EQ(stats()["fills"], 1);

  last_frames_.clear();
  auto hit = request(dgram("get foo\r\n", 2));
  EXPECT_TRUE(hit.host.empty());
  ASSERT_EQ(hit.wire, std::vector<std::string>{dgram(kFoo, 2)});
  // The reply goes back to the client, with valid checksums.
  test::FrameSpec want;
  want.src_ip = "10.0.0.2";
  want.dst_ip = "10.0.0.1";
  want.sport = 11211;
  want.dport = 40000;
  std::swap(want.src_mac, want.dst_mac);
  want.payload = test::text(dgram(kFoo, 2));
  want.l4csum = test::L4Csum::zero;
  EXPECT_EQ(last_frames_.back(), test::build_frame(want));
  EXPECT_TRUE(test::ref_ip_ok(last_frames_.back()));
  auto st = stats();
  EXPECT_EQ(st["hits"], 1);
  EXPECT_EQ(st["misses"], 1);
  EXPECT_EQ(st["items"], 1);
  EXPECT_EQ(st["bytes_used"], 6);
}

TEST_F(KvCacheTest, UdpChecksumOnRequest) {
  start({"udp_checksum=true"});
  fill("get foo\r\n", kFoo, 1);
  last_frames_.clear();
  request(dgram("get foo\r\n", 2));
  ASSERT_EQ(last_frames_.size(), 1u);
  EXPECT_TRUE(test::ref_l4_ok(last_frames_[0]));
  EXPECT_NE(last_frames_[0][40] | last_frames_[0][41], 0);
}

TEST_F(KvCacheTest, GetsAndBinaryHitsNeedTheCas) {
  fill("get foo\r\n", kFoo, 1);  // learned without a cas
  EXPECT_EQ(request(dgram("gets foo\r\n", 2)).host.size(), 1u);
  reply(dgram("VALUE foo 42 3 1\r\nbar\r\nEND\r\n", 2));  // now with cas 1
  EXPECT_EQ(request(dgram("gets foo\r\n", 3)).wire,
            std::vector<std::string>{dgram("VALUE foo 42 3 1\r\nbar\r\nEND\r\n", 3)});
  EXPECT_EQ(request(dgram(binreq(0x00, "foo"), 7)).wire,
            std::vector<std::string>{dgram(bin_get_hit(0x00, false), 7)});
  EXPECT_EQ(request(dgram(binreq(0x0c, "foo"), 7)).wire,
            std::vector<std::string>{dgram(bin_get_hit(0x0c, true), 7)});
  EXPECT_EQ(request(dgram(binreq(0x09, "foo"), 7)).wire,
            std::vector<std::string>{dgram(bin_get_hit(0x09, false), 7)});
  EXPECT_EQ(request(dgram(binreq(0x0d, "foo"), 7)).wire,
            std::vector<std::string>{dgram(bin_get_hit(0x0d, true), 7)});
  EXPECT_EQ(request(dgram("get foo\r\n", 9)).wire, std::vector<std::string>{dgram(kFoo, 9)});
}

TEST_F(KvCacheTest, LearnsFromBinaryRepliesWithoutAKey) {
  auto miss = request(dgram(binreq(0x00, "foo"), 5));
  ASSERT_EQ(miss.host.size(), 1u);
  reply(dgram(bin_get_hit(0x00, false), 5));
  EXPECT_EQ(stats()["fills"], 1);
  EXPECT_EQ(request(dgram(binreq(0x0c, "foo"), 7)).wire,
            std::vector<std::string>{dgram(bin_get_hit(0x0c, true), 7)});
  EXPECT_EQ(request(dgram("get foo\r\n", 8)).wire, std::vector<std::string>{dgram(kFoo, 8)});
}

TEST_F(KvCacheTest, MultiKeyGetIsServedOnlyWhenEveryKeyHits) {
  fill("get foo\r\n", kFoo, 1);
  // One key missing: the whole request passes, and the reply's values are learned.
  auto partial = request(dgram("get foo baz\r\n", 2));
  EXPECT_EQ(partial.host.size(), 1u);
  reply(dgram("VALUE baz 0 2\r\nzz\r\n", 2));  // memcached: one datagram per value
  reply(dgram("VALUE foo 42 3\r\nbar\r\nEND\r\n", 2));
  EXPECT_EQ(stats()["fills"], 3);
  auto all = request(dgram("get foo baz foo\r\n", 3));
  EXPECT_TRUE(all.host.empty());
  EXPECT_EQ(all.wire, (std::vector<std::string>{dgram("VALUE foo 42 3\r\nbar\r\n", 3),
                                                dgram("VALUE baz 0 2\r\nzz\r\n", 3),
                                                dgram("VALUE foo 42 3\r\nbar\r\nEND\r\n", 3)}));
}

TEST_F(KvCacheTest, ABurstIsAnsweredLikeTheSamePacketsOneByOne) {
  fill("get foo\r\n", kFoo, 1);
  fill("get baz\r\n", "VALUE baz 0 2\r\nzz\r\nEND\r\n", 2);
  // One burst (kvcache prefetches its lookups first): hits, a miss, malformed input, a
  // write, and GETs of the written key after it in the same burst, which must pass.
  const std::vector<std::string> in = {
      dgram("get foo\r\n", 10),       dgram("get nope\r\n", 11),
      dgram(binreq(0x0c, "baz"), 12), std::string("\0\1", 2),
      dgram("get baz foo\r\n", 13),   dgram("set foo 0 0 1\r\nx\r\n", 14),
      dgram("get foo\r\n", 15),       dgram("get baz foo\r\n", 16),
      dgram("get baz\r\n", 17),       dgram(std::string(300, 'g'), 18),
  };
  std::vector<Bytes> frames;
  for (const auto& d : in) frames.push_back(request_frame(d));
  Seen s = run(wire_, frames);
  // Binary hits need the cas, which an ASCII `get` did not carry: that one passes too.
  std::vector<std::string> want_wire = {dgram(kFoo, 10), dgram("VALUE baz 0 2\r\nzz\r\n", 13),
                                        dgram(kFoo, 13),
                                        dgram("VALUE baz 0 2\r\nzz\r\nEND\r\n", 17)};
  std::sort(want_wire.begin(), want_wire.end());  // replies to different requests: any order
  std::sort(s.wire.begin(), s.wire.end());
  EXPECT_EQ(s.wire, want_wire);
  EXPECT_EQ(s.host, (std::vector<std::string>{in[1], in[2], in[3], in[5], in[6], in[7], in[9]}));
  EXPECT_EQ(stats()["hits"], 3);
}

TEST_F(KvCacheTest, WritesInvalidate) {
  for (std::string w : {"set foo 0 0 1\r\nx\r\n", "delete foo\r\n", "incr foo 1\r\n",
                        "touch foo 10\r\n", "append foo 0 0 1\r\nx\r\n", "mg foo v\r\n"}) {
    fill("get foo\r\n", kFoo, 1);
    ASSERT_EQ(request(dgram("get foo\r\n", 2)).wire.size(), 1u) << w;  // a hit
    auto s = request(dgram(w, 3));
    EXPECT_EQ(s.host, std::vector<std::string>{dgram(w, 3)}) << w;  // passes untouched
    reply(dgram("STORED\r\n", 3));
    EXPECT_EQ(request(dgram("get foo\r\n", 4)).host.size(), 1u) << w;  // a miss now
    now_ += 2'000'000'000;  // past the write timeout for the next round
  }
  EXPECT_EQ(stats()["writes"], 6);
}

TEST_F(KvCacheTest, AReplyCarryingAValueFromBeforeAnAcknowledgedWriteIsNotLearned) {
  // GET passes (miss) ... SET passes and is acknowledged ... then the GET's reply, with
  // the old value, arrives.
  ASSERT_EQ(request(dgram("get foo\r\n", 1)).host.size(), 1u);
  ASSERT_EQ(request(dgram("set foo 0 0 3\r\nnew\r\n", 2)).host.size(), 1u);
  reply(dgram("STORED\r\n", 2));
  auto late = reply(dgram(kFoo, 1));
  EXPECT_EQ(late.wire.size(), 1u);  // the client still gets its reply
  auto st = stats();
  EXPECT_EQ(st["fills"], 0);
  EXPECT_EQ(st["rejected_by_reason"]["version"], 1);
  EXPECT_EQ(request(dgram("get foo\r\n", 3)).host.size(), 1u);  // never served stale
}

TEST_F(KvCacheTest, WithoutInvalidationTheSameRaceServesAStaleValue) {
  // The negative control for the test above: the checker's race is real.
  start({"unsafe_no_invalidation=true"});
  fill("get foo\r\n", kFoo, 1);
  request(dgram("set foo 0 0 3\r\nnew\r\n", 2));
  reply(dgram("STORED\r\n", 2));
  EXPECT_EQ(request(dgram("get foo\r\n", 3)).wire, std::vector<std::string>{dgram(kFoo, 3)});
}

TEST_F(KvCacheTest, AReplyArrivingWhileAWriteIsOutstandingIsNotLearned) {
  ASSERT_EQ(request(dgram("set foo 0 0 3\r\nnew\r\n", 2)).host.size(), 1u);
  ASSERT_EQ(request(dgram("get foo\r\n", 3)).host.size(), 1u);  // after the set, before its ack
  reply(dgram(kFoo, 3));  // memcached may have read it before applying the set
  EXPECT_EQ(stats()["rejected_by_reason"]["outstanding_write"], 1);
  reply(dgram("STORED\r\n", 2));
  EXPECT_EQ(request(dgram("get foo\r\n", 4)).host.size(), 1u);
  reply(dgram("VALUE foo 0 3\r\nnew\r\nEND\r\n", 4));  // issued after the ack: learned
  EXPECT_EQ(request(dgram("get foo\r\n", 5)).wire,
            std::vector<std::string>{dgram("VALUE foo 0 3\r\nnew\r\nEND\r\n", 5)});
}

TEST_F(KvCacheTest, UnacknowledgedWritesBlockLearningUntilTheirTimeout) {
  start({"write_timeout_ms=500"});
  request(dgram("set foo 0 0 3 noreply\r\nnew\r\n", 2));
  fill("get foo\r\n", "VALUE foo 0 3\r\nnew\r\nEND\r\n", 3);
  EXPECT_EQ(stats()["fills"], 0);
  now_ += 600'000'000;
  fill("get foo\r\n", "VALUE foo 0 3\r\nnew\r\nEND\r\n", 4);
  EXPECT_EQ(stats()["fills"], 1);
}

TEST_F(KvCacheTest, FlushAllDropsEverythingAndRepliesFromBefore) {
  fill("get foo\r\n", kFoo, 1);
  ASSERT_EQ(request(dgram("get bar\r\n", 2)).host.size(), 1u);  // in flight across the flush
  request(dgram("flush_all\r\n", 3));
  reply(dgram("OK\r\n", 3));
  reply(dgram("VALUE bar 0 1\r\nb\r\nEND\r\n", 2));
  auto st = stats();
  EXPECT_EQ(st["items"], 0);
  EXPECT_EQ(st["rejected_by_reason"]["flushed"], 1);
  EXPECT_EQ(request(dgram("get foo\r\n", 4)).host.size(), 1u);
}

TEST_F(KvCacheTest, UnknownCommandsAreTreatedLikeAFlush) {
  fill("get foo\r\n", kFoo, 1);
  auto s = request(dgram("bogus foo\r\n", 2));
  EXPECT_EQ(s.host, std::vector<std::string>{dgram("bogus foo\r\n", 2)});
  EXPECT_EQ(stats()["unknown_commands"], 1);
  EXPECT_EQ(request(dgram("get foo\r\n", 3)).host.size(), 1u);
}

TEST_F(KvCacheTest, MaxTtlBoundsAnEntrysLife) {
  start({"max_ttl=2"});
  fill("get foo\r\n", kFoo, 1);
  now_ += 1'500'000'000;
  EXPECT_EQ(request(dgram("get foo\r\n", 2)).wire.size(), 1u);
  now_ += 1'000'000'000;
  EXPECT_EQ(request(dgram("get foo\r\n", 3)).host.size(), 1u);
}

TEST_F(KvCacheTest, AnEntryNeverOutlivesTheExptimeOfAWriteSeen) {
  request(dgram("set foo 42 3 3\r\nbar\r\n", 1));  // expires in 3 s (memcached's clock)
  reply(dgram("STORED\r\n", 1));
  fill("get foo\r\n", kFoo, 2);
  now_ += 1'500'000'000;
  EXPECT_EQ(request(dgram("get foo\r\n", 3)).wire.size(), 1u);
  now_ += 1'000'000'000;  // 2.5 s: memcached may already have dropped it
  EXPECT_EQ(request(dgram("get foo\r\n", 4)).host.size(), 1u);
}

TEST_F(KvCacheTest, MalformedAndUnservableRequestsPassUntouchedAndAreCounted) {
  fill("get foo\r\n", kFoo, 1);
  const std::vector<std::string> odd = {
      std::string("\0\1\0", 3),                      // shorter than the frame header
      dgram("get foo\r\n", 5).replace(5, 1, "\2"),   // "2 datagrams"
      dgram("get  foo\r\n", 6),                      // memcached copes; kvcache passes
      dgram("get foo", 7),                           // no line end
      dgram(std::string("\x80\x00\x00\x03", 4), 8),  // binary header cut
  };
  for (const auto& d : odd) {
    auto s = request(d);
    EXPECT_EQ(s.host, std::vector<std::string>{d});
    EXPECT_TRUE(s.wire.empty());
  }
  auto passed = stats()["passed_by_issue"];
  EXPECT_EQ(passed["short_datagram"], 1);
  EXPECT_EQ(passed["multi_datagram"], 1);
  EXPECT_EQ(passed["unusual_form"], 1);
}

TEST_F(KvCacheTest, OversizedValuesAndMultiDatagramRepliesAreNotCached) {
  start({"max_value=4"});
  fill("get big\r\n", "VALUE big 0 5\r\n12345\r\nEND\r\n", 1);
  EXPECT_EQ(stats()["rejected_by_reason"]["too_big"], 1);
  ASSERT_EQ(request(dgram("get foo\r\n", 2)).host.size(), 1u);
  std::string multi = dgram(kFoo, 2);
  multi[5] = 2;  // "1 of 2 datagrams"
  reply(multi);
  EXPECT_EQ(stats()["fills"], 0);
  EXPECT_EQ(stats()["not_learned"], 1);
}

TEST_F(KvCacheTest, AReusedRequestIdInFlightIsNotLearnedFrom) {
  ASSERT_EQ(request(dgram("get foo\r\n", 1)).host.size(), 1u);
  ASSERT_EQ(request(dgram("get foo\r\n", 1)).host.size(), 1u);  // same id, still in flight
  reply(dgram(kFoo, 1));
  EXPECT_EQ(stats()["rejected_by_reason"]["suspect"], 1);
}

TEST_F(KvCacheTest, StateOperations) {
  fill("gets foo\r\n", "VALUE foo 42 3 1\r\nbar\r\nEND\r\n", 1);
  std::vector<std::string> key{"foo"};
  auto got = engine_->call(id_, "get", key).value();
  EXPECT_EQ(got["hit"], true);
  EXPECT_EQ(got["value"], "bar");
  EXPECT_EQ(got["flags"], 42);
  EXPECT_EQ(got["cas"], 1);
  EXPECT_EQ(engine_->call(id_, "invalidate", key).value()["invalidated"], true);
  EXPECT_EQ(engine_->call(id_, "get", key).value()["hit"], false);
  fill("get foo\r\n", kFoo, 2);
  EXPECT_EQ(engine_->call(id_, "clear", {}).value()["cleared"], 1);
  EXPECT_EQ(stats()["items"], 0);
  EXPECT_FALSE(engine_->call(id_, "get", {}));  // KEY is required
  EXPECT_FALSE(engine_->call(id_, "nope", {}));
}

TEST_F(KvCacheTest, ClockEvictionKeepsRecentlyHitEntries) {
  // One set of 8 slots: a slot of 64 header bytes + 8 key + 8 value + the reply's text
  // (kv_abi.h) is 192, a set 8 * 192 + 64 of tags = 1 600 bytes.
  start({"capacity=1600", "max_key=8", "max_value=8"});
  auto key = [](int i) { return "k" + std::to_string(i); };
  for (int i = 0; i < 8; ++i)
    fill("get " + key(i) + "\r\n", "VALUE " + key(i) + " 0 1\r\nv\r\nEND\r\n", uint16_t(10 + i));
  EXPECT_EQ(stats()["items"], 8);
  ASSERT_EQ(request(dgram("get k0\r\n", 30)).wire.size(), 1u);  // k0 is referenced
  fill("get k8\r\n", "VALUE k8 0 1\r\nv\r\nEND\r\n", 31);
  auto st = stats();
  EXPECT_EQ(st["evictions"], 1);
  EXPECT_EQ(st["items"], 8);
  EXPECT_EQ(request(dgram("get k0\r\n", 32)).wire.size(), 1u);  // survived
  EXPECT_EQ(request(dgram("get k1\r\n", 33)).host.size(), 1u);  // the victim
}

// ---------------------------------------------------------------- fast-path memory

// What a bump does (XdpProgram): hands the instance fast-path memory with its first flow.
struct FastPathHere : FlowObserver {
  std::vector<uint64_t> mem;
  FastPathState state;
  FastPathSpec spec;
  Result<void> flow_added(const FlowKey&, uint32_t, const FastPathSpec& fp) override {
    spec = fp;
    if (fp && mem.empty()) {
      const size_t bytes = (fp.bytes + GAON_FP_CHUNK - 1) / GAON_FP_CHUNK * GAON_FP_CHUNK;
      mem.assign(bytes / 8, 0);
      state = {reinterpret_cast<uint8_t*>(mem.data()), bytes, 1};
    }
    return ok();
  }
  void flow_removed(const FlowKey&) override {}
  FastPathState* fast_path(uint32_t) override { return mem.empty() ? nullptr : &state; }
  const kv_table_hdr& hdr() const { return *reinterpret_cast<const kv_table_hdr*>(mem.data()); }
  // What the XDP program does on a GET it hands up: set the key's "seen" bit.
  void see(std::string_view key) {
    const uint32_t b = kv_seen_bit(kv::Table::hash(key));
    mem[KV_SEEN_OFF / 8 + b / 64] |= uint64_t(1) << (b & 63);
  }
  bool seen(std::string_view key) const {
    const uint32_t b = kv_seen_bit(kv::Table::hash(key));
    return (mem[KV_SEEN_OFF / 8 + b / 64] >> (b & 63)) & 1;
  }
};

// With its first flow in a bump the table moves into the fast-path memory, laid out as
// kv_abi.h says (the XDP program reads it there), empty and with a newer generation; the
// "seen" bits follow the cached keys: a write, an entry leaving, a rejected fill or a flush
// make the key's next GET reach gaond again.
TEST_F(KvCacheTest, TheTableMovesIntoFastPathMemoryAndTheSeenBitsFollowIt) {
  fill("get old\r\n", "VALUE old 0 1\r\no\r\nEND\r\n", 9);
  EXPECT_EQ(stats()["items"], 1);
  FastPathHere h;
  engine_->set_flow_observer(&h);
  ASSERT_TRUE(engine_->add_flow(*FlowKey::parse("udp:10.0.0.2:11212"), id_));
  EXPECT_EQ(h.spec.prog, uint32_t(GAON_FP_KVCACHE));
  EXPECT_EQ(h.spec.program, "gaon_fp_kvcache");
  EXPECT_FALSE(h.spec.object.empty());
  ASSERT_FALSE(h.mem.empty());
  EXPECT_EQ(h.hdr().magic, KV_ABI_MAGIC);  // laid out before any frame of the flow
  fill("get foo\r\n", kFoo, 1);
  EXPECT_GE(h.hdr().generation, 2u);
  EXPECT_EQ(stats()["geometry"]["in_fast_path_memory"], true);
  EXPECT_EQ(stats()["items"], 1) << "the old table's item is gone";
  EXPECT_EQ(request(dgram("get old\r\n", 2)).host.size(), 1u);
  EXPECT_EQ(request(dgram("get foo\r\n", 3)).wire, std::vector<std::string>{dgram(kFoo, 3)});
  h.see("foo");
  request(dgram("set foo 0 0 1\r\nx\r\n", 4));
  EXPECT_FALSE(h.seen("foo"));  // forgotten: its next GET is handed up and learned
  reply(dgram("STORED\r\n", 4));
  h.see("foo");
  h.see("baz");
  request(dgram("flush_all\r\n", 5));
  EXPECT_FALSE(h.seen("foo"));
  EXPECT_FALSE(h.seen("baz"));
  engine_->set_flow_observer(nullptr);
}

// A key whose GET reached gaond but whose value it could not read from the reply gets its
// next GET through again, or the fast path would forward its misses in the kernel until
// the seen bits age; a key memcached does not have keeps its misses in the kernel.
TEST_F(KvCacheTest, AReplyGaondCannotReadLetsTheKeysNextGetThrough) {
  FastPathHere h;
  engine_->set_flow_observer(&h);
  ASSERT_TRUE(engine_->add_flow(*FlowKey::parse("udp:10.0.0.2:11212"), id_));
  h.see("big");
  ASSERT_EQ(request(dgram("get big\r\n", 1)).host.size(), 1u);
  reply(test::mc_dgram("VALUE big 0 2000\r\n", 1, 2));  // datagram 0 of 2
  EXPECT_FALSE(h.seen("big"));
  EXPECT_EQ(stats()["not_learned"], 1);
  h.see("absent");
  ASSERT_EQ(request(dgram("get absent\r\n", 3)).host.size(), 1u);
  reply(dgram("END\r\n", 3));
  EXPECT_TRUE(h.seen("absent"));
  engine_->set_flow_observer(nullptr);
}

TEST_F(KvCacheTest, WithTheFastPathOffItAsksForNone) {
  start({"fast_path=false"});
  FastPathHere h;
  engine_->set_flow_observer(&h);
  ASSERT_TRUE(engine_->add_flow(*FlowKey::parse("udp:10.0.0.2:11212"), id_));
  EXPECT_FALSE(h.spec);
  EXPECT_TRUE(h.mem.empty());
  fill("get foo\r\n", kFoo, 1);
  EXPECT_EQ(stats()["geometry"]["in_fast_path_memory"], false);
  engine_->set_flow_observer(nullptr);
}

TEST(KvCacheConfig, ErrorsAreClear) {
  const auto& reg = Registry::global();
  auto small = Instance::create({.type = "kvcache", .params = {"capacity=1K"}}, reg);
  ASSERT_FALSE(small);
  EXPECT_NE(small.error().find("too small"), std::string::npos) << small.error();
  auto quota = Instance::create(
      {.type = "kvcache", .params = {"capacity=64M"}, .state_quota = 1 << 20}, reg);
  ASSERT_FALSE(quota);
  EXPECT_NE(quota.error().find("quota"), std::string::npos) << quota.error();
  auto bad = Instance::create({.type = "kvcache", .params = {"max_value=2000"}}, reg);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("out of range"), std::string::npos) << bad.error();
}

// ---------------------------------------------------------------- TCP write invalidation

class KvCacheTcpTest : public KvCacheTest {
 protected:
  void SetUp() override {
    KvCacheTest::SetUp();
    ASSERT_TRUE(engine_->add_flow(*FlowKey::parse("tcp:10.0.0.2:11211"), id_));
  }
  // A segment from the client's port `sport` with sequence number `seq`.
  Seen segment(const std::string& data, uint32_t seq, uint8_t flags = 0x18,
               uint16_t sport = 50000) {
    test::FrameSpec f;
    f.proto = 6;
    f.sport = sport;
    f.dport = 11211;
    f.tcp_seq = seq;
    f.tcp_flags = flags;
    f.payload = test::text(data);
    return run(wire_, test::build_frame(f));
  }
  Seen syn(uint32_t isn, uint16_t sport = 50000) { return segment("", isn, 0x02, sport); }
  // memcached's side of the connection.
  Seen from_memcached(const std::string& data, uint32_t seq, uint8_t flags = 0x18,
                      uint16_t dport = 50000) {
    test::FrameSpec f;
    f.proto = 6;
    f.src_ip = "10.0.0.2";
    f.dst_ip = "10.0.0.1";
    f.sport = 11211;
    f.dport = dport;
    f.tcp_seq = seq;
    f.tcp_flags = flags;
    f.payload = test::text(data);
    return run(host_, test::build_frame(f));
  }
  bool hit(const std::string& key, uint16_t req_id) {
    auto s = request(dgram("get " + key + "\r\n", req_id));
    return s.wire.size() == 1 && s.host.empty();
  }
  void fill_foo(uint16_t req_id) {
    now_ += 2'000'000'000;  // past write_timeout_ms: TCP writes are never acknowledged to us
    fill("get foo\r\n", kFoo, req_id);
    ASSERT_TRUE(hit("foo", req_id + 1));
  }
  nlohmann::json tcp() { return stats()["tcp"]; }
};

TEST_F(KvCacheTcpTest, AWriteSplitAcrossSegmentsInvalidatesBeforeItsLastSegmentPasses) {
  fill_foo(1);
  syn(1000);
  uint32_t seq = 1001;
  for (std::string part : {"dele", "te f", "oo\r"}) {
    auto s = segment(part, seq);
    EXPECT_EQ(s.host, std::vector<std::string>{part});  // TCP passes unchanged
    seq += uint32_t(part.size());
    EXPECT_TRUE(hit("foo", uint16_t(seq))) << "after '" << part << "'";
  }
  auto last = segment("\n", seq);
  EXPECT_EQ(last.host, std::vector<std::string>{"\n"});
  EXPECT_FALSE(hit("foo", 100));  // invalidated before "\n" reached memcached
  EXPECT_EQ(tcp()["writes"], 1);
  EXPECT_EQ(tcp()["flushes"], 0);
  // Until the write could have been applied (no acknowledgement is followed on TCP), a
  // reply to a GET that passed after it is not learned.
  reply(dgram(kFoo, 100));
  EXPECT_FALSE(hit("foo", 101));
  EXPECT_GE(stats()["rejected_by_reason"]["outstanding_write"], 1);
}

TEST_F(KvCacheTcpTest, MemcachedsReplyToATcpWriteEndsItsOutstandingState) {
  fill_foo(1);
  syn(1000);
  from_memcached("", 5000, 0x12);  // SYN-ACK
  uint32_t seq = 1001, rseq = 5001;
  auto send = [&](const std::string& d) { segment(d, seq), seq += uint32_t(d.size()); };
  auto answer = [&](const std::string& d) {
    auto s = from_memcached(d, rseq);
    EXPECT_EQ(s.wire, std::vector<std::string>{d});  // passes unchanged
    rseq += uint32_t(d.size());
  };
  send("get foo\r\ndelete foo\r\n");  // pipelined: the GET's reply comes first
  EXPECT_FALSE(hit("foo", 10));
  answer("VALUE foo 42 3\r\nbar\r\nEND\r\n");  // the GET's reply: foo still outstanding
  reply(dgram("END\r\n", 10));
  EXPECT_FALSE(hit("foo", 11));
  EXPECT_EQ(stats()["rejected_by_reason"]["outstanding_write"], 0);  // (that was a miss)
  reply(dgram(kFoo, 11));  // a reply to the GET that passed before the delete was done
  EXPECT_EQ(stats()["rejected_by_reason"]["outstanding_write"], 1);
  answer("DELE");  // the delete's reply, in two segments
  answer("TED\r\n");
  EXPECT_EQ(tcp()["acks"], 1);
  // Done: the next miss is learned at once, and hits.
  EXPECT_FALSE(hit("foo", 12));
  reply(dgram(kFoo, 12));
  EXPECT_TRUE(hit("foo", 13));
  // A binary request on the connection: its replies are not followed from then on.
  send(test::mc_binreq(0x04, "foo"));
  EXPECT_EQ(tcp()["acks_untracked"], 1);
  answer("DELETED\r\n");
  EXPECT_EQ(tcp()["acks"], 1);
}

TEST_F(KvCacheTcpTest, RepliesBehindACommandWithOtherOutputAreNotMatched) {
  fill_foo(1);
  syn(1000);
  from_memcached("", 5000, 0x12);
  segment("stats\r\ndelete foo\r\n", 1001);
  EXPECT_EQ(tcp()["acks_untracked"], 1);
  from_memcached("STAT pid 1\r\nEND\r\nDELETED\r\n", 5001);
  EXPECT_EQ(tcp()["acks"], 0);
  // The delete stays outstanding until write_timeout_ms: a reply read before it is refused.
  EXPECT_FALSE(hit("foo", 20));
  reply(dgram(kFoo, 20));
  EXPECT_EQ(stats()["rejected_by_reason"]["outstanding_write"], 1);
}

TEST_F(KvCacheTcpTest, DataBlocksAndBinaryValuesAreSkippedNotRead) {
  fill_foo(1);
  syn(7);
  // A set of another key whose data looks like "delete foo": foo stays cached.
  const std::string set = "set bar 0 0 12\r\ndelete foo\r\n\r\n";
  segment(set, 8);
  EXPECT_TRUE(hit("foo", 10));
  // A binary SET of foo whose value arrives later: invalidated once the value is all in
  // (memcached carries the write out only then; a resent segment may be long in coming).
  const std::string bin = test::mc_binreq(0x01, "foo", std::string(8, '\0'), "new-value");
  const uint32_t at = 8 + uint32_t(set.size());
  segment(bin.substr(0, 30), at);  // header + extras + "foo" (24 + 8 + 3 = 35): not yet
  EXPECT_TRUE(hit("foo", 11));
  segment(bin.substr(30, 6), at + 30);  // the key, and a byte of the value
  EXPECT_TRUE(hit("foo", 12));
  segment(bin.substr(36), at + 36);
  EXPECT_FALSE(hit("foo", 13));
  EXPECT_EQ(tcp()["commands"], 2);
  EXPECT_EQ(tcp()["writes"], 2);
}

TEST_F(KvCacheTcpTest, WhenItCannotBeSureItInvalidatesEverything) {
  struct Case {
    const char* what;
    std::function<void()> act;
    const char* counter;
  } cases[] = {
      {"a connection it did not see open", [&] { segment("get x\r\n", 5000, 0x18, 50001); },
       "untracked"},
      {"a gap (a lost or reordered segment)",
       [&] {
         syn(100, 50002);
         segment("get x\r\n", 200, 0x18, 50002);
       },
       "gaps"},
      {"a line it cannot frame",
       [&] {
         syn(100, 50003);
         segment("set x 0 0\r\n", 101, 0x18, 50003);
       },
       "lost"},
  };
  uint16_t id = 1;
  for (const auto& c : cases) {
    fill_foo(id);
    id += 2;
    const uint64_t before = tcp()[c.counter];
    c.act();
    EXPECT_EQ(tcp()[c.counter], before + 1) << c.what;
    EXPECT_FALSE(hit("foo", id++)) << c.what;
    EXPECT_EQ(stats()["items"], 0) << c.what;
  }
  // A connection that lost track stays untrusted: its next segment invalidates again.
  fill_foo(id);
  id += 2;
  segment("get y\r\n", 110, 0x18, 50003);
  EXPECT_FALSE(hit("foo", id++));
}

TEST_F(KvCacheTcpTest, RetransmittedBytesPassWithoutAnotherInvalidation) {
  syn(0xfffffff0);  // sequence numbers wrap around on the way
  const std::string del = "delete foo\r\n";
  segment(del, 0xfffffff1);
  fill_foo(1);
  segment(del, 0xfffffff1);  // the same bytes again: memcached will not see them twice
  EXPECT_TRUE(hit("foo", 5));
  segment("delete foo\r\nget foo\r\n", 0xfffffff1);  // partly old, partly new: only the new
  EXPECT_TRUE(hit("foo", 6));
  EXPECT_EQ(tcp()["commands"], 2);
  segment("delete foo\r\n", 0xfffffff1 + uint32_t(del.size()) + 9);
  EXPECT_FALSE(hit("foo", 7));
  EXPECT_EQ(tcp()["gaps"], 0);
  // FIN ends it: the connection is no longer followed.
  segment("", 0xfffffff1 + 2 * uint32_t(del.size()) + 9, 0x11);
  fill_foo(10);
  segment("get z\r\n", 0xfffffff1 + 2 * uint32_t(del.size()) + 10);
  EXPECT_EQ(tcp()["untracked"], 1);
}

}  // namespace
}  // namespace gaon

namespace gaon {
namespace {

// The counters are declared once (kvcache.h's lists): every one is in the stats JSON, and
// named in the header's doc block, so the three cannot drift apart again.
TEST(KvCacheCounters, TheListTheStatsAndTheDocBlockAgree) {
  std::ifstream in(std::string(GAON_SOURCE_DIR) + "/src/ikernels/kvcache/kvcache.h");
  ASSERT_TRUE(in);
  std::stringstream text;
  text << in.rdbuf();
  const std::string header = text.str();
  const std::string doc = header.substr(0, header.find("#pragma once"));
  auto e = Engine::create({});
  ASSERT_TRUE(e);
  auto inst = Instance::create(
      {.type = "kvcache", .params = {"capacity=1M"}, .state_quota = 1u << 30}, Registry::global());
  ASSERT_TRUE(inst) << inst.error();
  const uint32_t id = *(*e)->add_instance(std::move(*inst));
  const nlohmann::json st = (*e)->call(id, "stats", {}).value();
  std::vector<std::string> top, tcp;
#define GAON_KVCACHE_NAME(name, what) top.push_back(#name);
  GAON_KVCACHE_COUNTERS(GAON_KVCACHE_NAME)
#undef GAON_KVCACHE_NAME
#define GAON_KVCACHE_NAME(name, what) tcp.push_back(#name);
  GAON_KVCACHE_TCP_COUNTERS(GAON_KVCACHE_NAME)
#undef GAON_KVCACHE_NAME
  for (const std::string& n : top) {
    EXPECT_TRUE(st.contains(n)) << n;
    EXPECT_NE(doc.find(" " + n), std::string::npos) << n << " is not in kvcache.h's doc block";
  }
  const size_t tcp_doc = doc.find("; tcp:");
  ASSERT_NE(tcp_doc, std::string::npos);
  for (const std::string& n : tcp) {
    EXPECT_TRUE(st["tcp"].contains(n)) << "tcp." << n;
    EXPECT_NE(doc.find(" " + n, tcp_doc), std::string::npos) << "tcp " << n;
  }
  EXPECT_EQ(st["tcp"].size(), tcp.size());
}

}  // namespace
}  // namespace gaon
