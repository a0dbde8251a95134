// kvcache's XDP fast path (kvcache.bpf.c) in the kernel, under BPF_PROG_TEST_RUN (root),
// reached the way a bump reaches it: through the steering program, for a flow of a
// kvcache instance whose table lives in the fast-path memory (XdpProgram). The same
// instance runs in an engine with mem ports, so every answer of the fast path is checked
// against the C++ kvcache's own answer to the same frame: table-driven cases first, then a
// differential test over thousands of generated frames.
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include <random>

#include "frames.h"
#include "gaon/clock.h"
#include "gaon/engine.h"
#include "gaon/mem_port.h"
#include "gaon/parse.h"
#include "gaon/xdp_program.h"
#include "kv_table.h"
#include "to_program.h"

namespace gaon {
namespace {

using test::Bytes;

// A bump's part, without the interfaces: the engine's flow changes go to the program.
using test::ToProgram;

std::string bin_reply(uint8_t op, const std::string& key, uint32_t flags, const std::string& v,
                      uint64_t cas, uint32_t opaque = 0x11223344) {
  const bool with_key = op == 0x0c || op == 0x0d;
  const std::string k = with_key ? key : "";
  std::string h(24, '\0');
  h[0] = char(0x81);
  h[1] = char(op);
  h[2] = char(k.size() >> 8);
  h[3] = char(k.size());
  h[4] = 4;
  const uint32_t body = uint32_t(4 + k.size() + v.size());
  for (int i = 0; i < 4; ++i) h[8 + i] = char(body >> (24 - 8 * i));
  for (int i = 0; i < 4; ++i) h[12 + i] = char(opaque >> (24 - 8 * i));
  for (int i = 0; i < 8; ++i) h[16 + i] = char(cas >> (56 - 8 * i));
  std::string f(4, '\0');
  for (int i = 0; i < 4; ++i) f[i] = char(flags >> (24 - 8 * i));
  return h + f + k + v;
}

using test::hex;

struct Xdp {
  std::string what;  // the fast path's counter that moved ("" if none), or the steerer's
  int verdict = -1;
  Bytes out;
};

class KvFastPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (loads BPF programs); CI runs as root";
    auto x = XdpProgram::load({.fp_chunks = 16});
    ASSERT_TRUE(x) << x.error();
    x_ = std::move(*x);
    obs_.x = x_.get();
    auto e = Engine::create({.pool_frames = 2048});
    ASSERT_TRUE(e) << e.error();
    engine_ = std::move(*e);
    engine_->set_ports(&wire_, &host_);
    engine_->set_flow_observer(&obs_);
    id_ = create({"capacity=1M", "max_value=1360"}, {"udp:10.0.0.2:11211", "udp:[fd00::2]:11211"});
    ASSERT_TRUE(x_->set_port(1, GAON_WIRE, 1));
    x_->lease()->bound_ns = 0;
  }
  void TearDown() override {
    if (engine_) engine_->set_flow_observer(nullptr);
  }
  uint32_t create(std::vector<std::string> params, std::vector<std::string> flows) {
    auto inst = Instance::create({.type = "kvcache", .params = params, .state_quota = 1u << 30},
                                 Registry::global());
    EXPECT_TRUE(inst) << inst.error();
    const uint32_t id = *engine_->add_instance(std::move(*inst));
    for (const std::string& f : flows) EXPECT_TRUE(engine_->add_flow(*FlowKey::parse(f), id));
    EXPECT_NE(x_->fast_path(id), nullptr) << x_->fast_path_stats(id);
    return id;
  }
  static Bytes frame(const std::string& payload, bool to_server = true, bool v6 = false,
                     uint16_t port = 11211, uint16_t client = 40000,
                     test::L4Csum csum = test::L4Csum::full) {
    test::FrameSpec f;
    f.l4csum = csum;
    if (v6) f.ip_version = 6;
    const std::string s = v6 ? "fd00::2" : "10.0.0.2", c = v6 ? "fd00::1" : "10.0.0.1";
    f.src_ip = to_server ? c : s;
    f.dst_ip = to_server ? s : c;
    f.sport = to_server ? client : port;
    f.dport = to_server ? port : client;
    f.payload = test::text(payload);
    return test::build_frame(f);
  }
  // The engine's answer: frames out of each port.
  std::pair<std::vector<Bytes>, std::vector<Bytes>> engine(MemPort& in, const Bytes& f) {
    Packet* p = test::make_packet(engine_->pool(), f);
    EXPECT_EQ(in.inject({&p, 1}), 1u);
    for (int i = 0; i < 3; ++i) engine_->poll(mono_ns());
    std::pair<std::vector<Bytes>, std::vector<Bytes>> out;
    Packet* buf[kBurst];
    for (auto [port, v] : {std::pair{&wire_, &out.first}, std::pair{&host_, &out.second}})
      while (uint32_t n = port->collect(buf))
        for (uint32_t i = 0; i < n; ++i) {
          v->push_back(test::bytes_of(*buf[i]));
          engine_->pool().free(buf[i]);
        }
    return out;
  }
  // A GET that misses in the engine, and memcached's reply, which kvcache learns from.
  void fill(const std::string& get, const std::string& answer, uint16_t id, bool v6 = false) {
    ASSERT_EQ(engine(wire_, frame(test::mc_dgram(get, id), true, v6)).second.size(), 1u) << get;
    engine(host_, frame(test::mc_dgram(answer, id), false, v6));
  }
  // The fast path's answer (through the steering program).
  Xdp xdp(const Bytes& f, uint32_t inst = 0) {
    if (inst == 0) inst = id_;
    const nlohmann::json before = x_->fast_path_stats(inst), sb = x_->stats();
    xdp_md ctx{};
    ctx.data_end = uint32_t(f.size());
    ctx.ingress_ifindex = 1;
    Bytes out(4096);
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = f.data(), .data_out = out.data(),
                .data_size_in = uint32_t(f.size()), .data_size_out = uint32_t(out.size()),
                .ctx_in = &ctx, .ctx_size_in = uint32_t(sizeof(ctx)));
    EXPECT_EQ(bpf_prog_test_run_opts(x_->prog_fd(), &o), 0) << strerror(errno);
    Xdp r;
    r.verdict = int(o.retval);
    out.resize(o.data_size_out);
    r.out = out;
    const nlohmann::json after = x_->fast_path_stats(inst), sa = x_->stats();
    for (auto& [name, v] : after.items())
      if (v.is_number() && name != "slot" && name != "memory_bytes" && v != before[name])
        r.what += (r.what.empty() ? "" : "+") + name;
    if (sa["lease_expired"] != sb["lease_expired"]) r.what += "(steer:lease_expired)";
    return r;
  }
  void set_role_host() { ASSERT_TRUE(x_->set_port(1, GAON_HOST, 0)); }

  std::unique_ptr<XdpProgram> x_;
  ToProgram obs_;
  MemPort wire_{"wire"}, host_{"host"};
  std::unique_ptr<Engine> engine_;
  uint32_t id_ = 0;
};

const std::string kFoo = "VALUE foo 42 3\r\nbar\r\nEND\r\n";
const std::string kFooCas = "VALUE foo 42 3 77\r\nbar\r\nEND\r\n";

// Each answer of the fast path is the engine's answer to the same frame, byte for byte.
void expect_same(const Xdp& x, const std::vector<Bytes>& wire, const std::string& what) {
  ASSERT_EQ(x.verdict, XDP_TX) << what << ": " << x.what;
  ASSERT_EQ(wire.size(), 1u) << what << ": the engine did not serve it";
  EXPECT_EQ(x.out, wire[0]) << what;
  EXPECT_TRUE(test::ref_ip_ok(x.out)) << what;
  EXPECT_TRUE(test::ref_l4_ok(x.out)) << what;
}

TEST_F(KvFastPathTest, AHitIsAnsweredInXdpWithTheEnginesBytes) {
  fill("gets foo\r\n", kFooCas, 1);
  for (const std::string& req : {std::string("get foo\r\n"), std::string("gets foo\r\n")}) {
    const Bytes f = frame(test::mc_dgram(req, 9));
    const Xdp x = xdp(f);
    EXPECT_EQ(x.what, "answered") << req;
    expect_same(x, engine(wire_, f).first, req);
  }
  const Xdp x = xdp(frame(test::mc_dgram("get foo\r\n", 0xabcd)));
  const std::string payload(x.out.begin() + 42, x.out.end());
  EXPECT_EQ(payload, test::mc_dgram(kFoo, 0xabcd)) << "memcached's reply, request id echoed";
}

TEST_F(KvFastPathTest, BinaryGetsAreAnsweredWithFlagsCasAndTheKeyWhereAsked) {
  fill(test::mc_binreq(0x00, "foo"), bin_reply(0x00, "foo", 42, "bar", 0x0102030405060708ull), 1);
  for (uint8_t op : {0x00, 0x09, 0x0c, 0x0d}) {
    const Bytes f = frame(test::mc_dgram(test::mc_binreq(op, "foo", "", "", 0xa1b2c3d4), 5));
    const Xdp x = xdp(f);
    EXPECT_EQ(x.what, "answered") << int(op);
    expect_same(x, engine(wire_, f).first, "binary op " + std::to_string(op));
    const std::string payload(x.out.begin() + 42 + 8, x.out.end());
    EXPECT_EQ(payload, bin_reply(op, "foo", 42, "bar", 0x0102030405060708ull, 0xa1b2c3d4));
  }
}

TEST_F(KvFastPathTest, LongValuesGrowTheFrameAndLongKeysAreServed) {
  const std::string k250(250, 'k'), v1000(1000, 'v'), v1300(1300, 'w');
  fill("get " + k250 + "\r\n", "VALUE " + k250 + " 1 1000\r\n" + v1000 + "\r\nEND\r\n", 1);
  fill("get big\r\n", "VALUE big 4294967295 1300\r\n" + v1300 + "\r\nEND\r\n", 2);
  for (const std::string& key : {k250, std::string("big")}) {
    const Bytes f = frame(test::mc_dgram("get " + key + "\r\n", 3));
    const Xdp x = xdp(f);
    EXPECT_EQ(x.what, "answered");
    EXPECT_GT(x.out.size(), f.size() + 900);
    expect_same(x, engine(wire_, f).first, key.substr(0, 8));
  }
}

TEST_F(KvFastPathTest, IPv6HitsCarryTheirMandatoryChecksum) {
  fill("get foo\r\n", kFoo, 1, true);
  const Bytes f = frame(test::mc_dgram("get foo\r\n", 2), true, true);
  const Xdp x = xdp(f);
  EXPECT_EQ(x.what, "answered");
  expect_same(x, engine(wire_, f).first, "IPv6");
  EXPECT_NE(x.out[14 + 40 + 6] | x.out[14 + 40 + 7], 0) << "a UDP checksum over IPv6";
}

TEST_F(KvFastPathTest, AMissIsHandedUpOnceThenForwardedUntilForgotten) {
  const Bytes f = frame(test::mc_dgram("get absent\r\n", 1));
  EXPECT_EQ(xdp(f).what, "fail_open") << "handed up (no gaond socket here: fail-open)";
  for (int i = 0; i < 3; ++i) EXPECT_EQ(xdp(f).what, "forwarded");
  engine(wire_, frame(test::mc_dgram("set absent 0 0 1\r\nx\r\n", 2)));  // forgets it
  EXPECT_EQ(xdp(f).what, "fail_open");
  EXPECT_EQ(xdp(f).what, "forwarded");
}

TEST_F(KvFastPathTest, WhatItDoesNotHandleGoesToGaond) {
  fill("gets foo\r\n", kFooCas, 1);
  fill("get nocas\r\n", "VALUE nocas 0 1\r\nx\r\nEND\r\n", 2);
  const std::vector<std::pair<std::string, Bytes>> up = {
      {"two keys", frame(test::mc_dgram("get foo foo\r\n", 3))},
      {"gets of an item learned without cas", frame(test::mc_dgram("gets nocas\r\n", 3))},
      {"binary GET of an item without cas", frame(test::mc_dgram(test::mc_binreq(0, "nocas"), 3))},
      {"a write", frame(test::mc_dgram("set foo 0 0 1\r\nx\r\n", 3))},
      {"no CR", frame(test::mc_dgram("get foo\n", 3))},
      {"2 datagrams", frame(test::mc_dgram("get foo\r\n", 3, 2))},
      {"not memcached", frame("hello, world")},
      {"binary with extras", frame(test::mc_dgram(test::mc_binreq(0, "foo", "abcd"), 3))},
  };
  for (const auto& [what, f] : up) EXPECT_EQ(xdp(f).what, "fail_open") << what;
  EXPECT_EQ(xdp(frame(test::mc_dgram("get nocas\r\n", 3))).what, "answered");
  set_role_host();
  EXPECT_EQ(xdp(frame(test::mc_dgram("END\r\n", 3), false)).what, "forwarded")
      << "memcached's bare miss goes to the client in the kernel";
  EXPECT_EQ(xdp(frame(test::mc_dgram(kFoo, 3), false)).what, "fail_open")
      << "a value: to gaond, which learns it";
}

TEST_F(KvFastPathTest, ATornOrInvalidatedEntryIsNeverServed) {
  fill("get foo\r\n", kFoo, 1);
  const Bytes f = frame(test::mc_dgram("get foo\r\n", 2));
  ASSERT_EQ(xdp(f).what, "answered");
  // The slot, found as the program finds it; its counter made odd: gaond is writing it.
  const FastPathState* fp = x_->fast_path(id_);
  const auto* hdr = reinterpret_cast<const kv_table_hdr*>(fp->mem);
  const uint64_t h = kv::Table::hash("foo");
  uint32_t chunk, off;
  kv_set_pos(hdr, kv_set_of(h, hdr->nsets), &chunk, &off);
  auto* set = reinterpret_cast<kv_set*>(fp->mem + size_t(chunk) * GAON_FP_CHUNK + off);
  kv_slot* slot = nullptr;
  for (uint32_t w = 0; w < KV_WAYS; ++w)
    if (set->tag[w] == kv_tag(h))
      slot = reinterpret_cast<kv_slot*>(reinterpret_cast<uint8_t*>(set + 1) + w * hdr->slot_bytes);
  ASSERT_NE(slot, nullptr);
  ++slot->seq;
  EXPECT_EQ(xdp(f).what, "fail_open+torn");
  ++slot->seq;
  EXPECT_EQ(xdp(f).what, "answered");
  engine(wire_, frame(test::mc_dgram("delete foo\r\n", 3)));  // invalidated before it passes
  EXPECT_NE(xdp(f).verdict, XDP_TX);
  engine(host_, frame(test::mc_dgram("DELETED\r\n", 3), false));  // memcached's ack
  fill("get foo\r\n", kFoo, 4);
  EXPECT_EQ(xdp(f).what, "answered");
  engine(wire_, frame(test::mc_dgram("flush_all\r\n", 5)));
  EXPECT_NE(xdp(f).verdict, XDP_TX);
}

// The checksum forms gaond's parser takes: none (0, IPv4), or the pseudo-header sum alone
// (left to offload by a local sender); a bad one goes up (the host would drop it). A
// request followed by more bytes than it holds is not a single GET, whatever the checksum.
TEST_F(KvFastPathTest, ChecksumsAreJudgedAsGaondJudgesThem) {
  fill("get foo\r\n", kFoo, 1);
  fill(test::mc_binreq(0x00, "foo"), bin_reply(0x00, "foo", 42, "bar", 9), 2);
  const std::string get = test::mc_dgram("get foo\r\n", 3);
  for (auto [csum, what] :
       {std::pair{test::L4Csum::zero, "answered"}, std::pair{test::L4Csum::partial, "answered"},
        std::pair{test::L4Csum::bad, "fail_open"}}) {
    const Bytes f = frame(get, true, false, 11211, 40000, csum);
    const Xdp x = xdp(f);
    EXPECT_EQ(x.what, what) << int(csum);
    if (x.verdict == XDP_TX) expect_same(x, engine(wire_, f).first, "checksum form");
  }
  // A binary GET with a SET behind it, checksum 0: gaond (which passes the SET on).
  const std::string two =
      test::mc_binreq(0x00, "foo") + test::mc_binreq(0x01, "foo", "abcdefgh", "x");
  EXPECT_EQ(xdp(frame(test::mc_dgram(two, 4), true, false, 11211, 40000, test::L4Csum::zero)).what,
            "fail_open");
}

// memcached's binary reply to a GET carries no key: gaond matches it by request id only,
// so a binary miss is always handed up (never sent around gaond in the kernel).
TEST_F(KvFastPathTest, BinaryMissesAlwaysGoToGaond) {
  const Bytes f = frame(test::mc_dgram(test::mc_binreq(0x09, "absent"), 1));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(xdp(f).what, "fail_open") << i;
}

// A removed instance's slot and memory rest before another instance gets them: a program
// that started on them may still be reading.
TEST_F(KvFastPathTest, ARemovedInstancesMemoryIsNotHandedOutAtOnce) {
  const uint32_t a = create({"capacity=1M"}, {"udp:10.0.0.2:11212"});
  const uint8_t* mem_a = x_->fast_path(a)->mem;
  const uint32_t slot_a = x_->fast_path(a)->slot;
  ASSERT_TRUE(engine_->remove_instance(a));
  EXPECT_EQ(x_->fast_path(a), nullptr);
  const uint32_t b = create({"capacity=1M"}, {"udp:10.0.0.2:11213"});
  ASSERT_NE(x_->fast_path(b), nullptr);
  EXPECT_NE(x_->fast_path(b)->mem, mem_a);
  EXPECT_NE(x_->fast_path(b)->slot, slot_a);
}

TEST_F(KvFastPathTest, AnotherInstancesFlowNeverSeesThisOnesTable) {
  fill("get foo\r\n", kFoo, 1);
  const uint32_t other = create({"capacity=1M"}, {"udp:10.0.0.2:11212"});
  const Bytes f = frame(test::mc_dgram("get foo\r\n", 2), true, false, 11212);
  EXPECT_EQ(xdp(f, other).what, "fail_open") << "a miss in its own table";
  EXPECT_EQ(xdp(frame(test::mc_dgram("get foo\r\n", 2))).what, "answered");
  EXPECT_NE(x_->fast_path(other)->mem, x_->fast_path(id_)->mem);
}

TEST_F(KvFastPathTest, WithTheLeaseExpiredNothingIsServedAndAllIsForwarded) {
  fill("get foo\r\n", kFoo, 1);
  const Bytes f = frame(test::mc_dgram("get foo\r\n", 2));
  x_->lease()->bound_ns = 50'000'000;
  // 150 ms ago: the programs' coarse clock, a tick or more behind, sees it lapsed too
  x_->lease()->renewed_ns = mono_ns() - 150'000'000;
  const Xdp x = xdp(f);
  EXPECT_EQ(x.what, "lease_expired(steer:lease_expired)");
  EXPECT_NE(x.verdict, XDP_TX) << "forwarded (here, with no peer interface: passed)";
  x_->lease()->renewed_ns = mono_ns();
  EXPECT_EQ(xdp(f).what, "answered");
}

// The differential test: frames built from a few templates and mutated, against a table
// that fills and loses entries as it goes. Whatever the fast path answers, the engine
// answers the same way to the same frame; whatever it forwards, the engine would not have
// served.
TEST_F(KvFastPathTest, ThousandsOfFramesGetTheEnginesAnswers) {
  std::mt19937 rng(4242);
  const std::vector<std::string> keys = {"a",    "bb", "key:17", std::string(250, 'z'),
                                         "nope", "v6", "k\x7f"};
  auto value = [&](size_t i) { return std::string(1 + (i * 37) % 1200, char('A' + i)); };
  size_t answered = 0, forwarded = 0, up = 0;
  for (int i = 0; i < 3000; ++i) {
    const size_t ki = rng() % keys.size();
    const std::string& key = keys[ki];
    const bool v6 = rng() % 4 == 0;
    const uint16_t id = uint16_t(rng());
    if (rng() % 40 == 0) {  // the table changes: a fill, a write, a flush
      switch (rng() % 3) {
        case 0:
          if (ki != 4) {
            const bool cas = rng() % 2;
            // (a hit in the engine leaves the reply unmatched: nothing learned)
            engine(wire_,
                   frame(test::mc_dgram(std::string(cas ? "gets " : "get ") + key + "\r\n", id),
                         true, v6));
            engine(host_,
                   frame(test::mc_dgram("VALUE " + key + " " + std::to_string(rng() % 100000) +
                                            " " + std::to_string(value(ki).size()) +
                                            (cas ? " " + std::to_string(rng()) : "") + "\r\n" +
                                            value(ki) + "\r\nEND\r\n",
                                        id),
                         false, v6));
          }
          break;
        case 1:
          engine(wire_, frame(test::mc_dgram("delete " + key + "\r\n", id), true, v6));
          break;
        default:
          if (rng() % 10 == 0) engine(wire_, frame(test::mc_dgram("flush_all\r\n", id)));
      }
      continue;
    }
    std::string body;
    switch (rng() % 6) {
      case 0:
        body = "gets " + key + "\r\n";
        break;
      case 1:
        body = test::mc_binreq(std::array<uint8_t, 4>{0, 9, 12, 13}[rng() % 4], key);
        break;
      case 2:
        body = "get " + key + " " + keys[rng() % keys.size()] + "\r\n";
        break;
      default:
        body = "get " + key + "\r\n";
    }
    Bytes f = frame(test::mc_dgram(body, id), true, v6, 11211, uint16_t(40000 + rng() % 4));
    if (rng() % 5 == 0) f[14 + rng() % (f.size() - 14)] ^= uint8_t(1 + rng() % 255);
    if (rng() % 10 == 0) f.resize(14 + rng() % (f.size() - 14));
    const Xdp x = xdp(f);
    const auto [wire, host] = engine(wire_, f);
    if (x.verdict == XDP_TX) {
      ++answered;
      ASSERT_EQ(x.what, "answered");
      ASSERT_EQ(wire.size(), 1u) << "frame " << i
                                 << ": served in XDP, not by the engine: " << hex(f);
      ASSERT_EQ(x.out, wire[0]) << "frame " << i;
    } else if (x.what == "forwarded") {
      ++forwarded;
      ASSERT_TRUE(wire.empty()) << "frame " << i << ": forwarded in XDP, served by the engine";
    } else {
      ++up;
    }
  }
  EXPECT_GT(answered, 300u);
  EXPECT_GT(forwarded, 100u);
  EXPECT_GT(up, 300u);
}

}  // namespace
}  // namespace gaon
