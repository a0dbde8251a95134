// kvcache on a server with one NIC, its kernel writers under BPF_PROG_TEST_RUN (root): the
// steering program on a GAON_LOCAL interface hands a kvcache flow's frames to the fast
// path, which answers hits and tail-calls the writes program for the rest (invalidation
// in XDP, then XDP_PASS); memcached's replies go through the tc egress program, which
// learns values and ends UDP writes' outstanding state. Table-driven cases, then a
// differential run against a model of memcached and against the C++ kvcache (bump mode,
// in an engine) on the same frames: every hit the kernel serves is memcached's current
// answer byte for byte, and the one the C++ kvcache gives where it serves it too.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <thread>

#include "frames.h"
#include "gaon/clock.h"
#include "gaon/engine.h"
#include "gaon/mem_port.h"
#include "gaon/xdp_program.h"
#include "to_program.h"

namespace gaon {
namespace {

using test::Bytes;
using namespace std::chrono_literals;

using test::ToProgram;

Bytes frame(const std::string& payload, bool to_server, uint16_t client = 40000) {
  test::FrameSpec f;
  f.src_ip = to_server ? "10.0.0.1" : "10.0.0.2";
  f.dst_ip = to_server ? "10.0.0.2" : "10.0.0.1";
  f.sport = to_server ? client : 11211;
  f.dport = to_server ? 11211 : client;
  f.payload = test::text(payload);
  return test::build_frame(f);
}

using test::hex;

// The fast path's reply is memcached's `answer` (built from the client's frame, whose
// Ethernet addresses the fast path swaps) from the Ethernet type on, and goes back to the
// request's sender.
bool is_reply(const Bytes& out, const Bytes& answer) {
  const Bytes req = frame("", true);
  return out.size() == answer.size() && out.size() > 14 &&
         std::equal(out.begin() + 12, out.end(), answer.begin() + 12) &&
         std::equal(out.begin(), out.begin() + 6, req.begin() + 6) &&
         std::equal(out.begin() + 6, out.begin() + 12, req.begin());
}

class KvLocalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (loads BPF programs); CI runs as root";
    auto x = XdpProgram::load({.fp_chunks = 16, .local = true});
    ASSERT_TRUE(x) << x.error();
    x_ = std::move(*x);
    obs_.x = x_.get();
    auto e = Engine::create({.pool_frames = 2048});
    ASSERT_TRUE(e) << e.error();
    engine_ = std::move(*e);
    engine_->set_ports(&wire_, &host_);
    engine_->set_flow_observer(&obs_);
    id_ = create(engine_.get());
    ASSERT_NE(x_->fast_path(id_), nullptr) << x_->fast_path_stats(id_);
    ASSERT_TRUE(x_->fast_path(id_)->kernel_writers);
    ASSERT_TRUE(x_->set_port(1, GAON_LOCAL, 0));
    x_->lease()->bound_ns = 0;
    tc_ = x_->fast_path_program_fd("gaon_kvcache_egress");
    ASSERT_GE(tc_, 0);
    // The table starts with every bucket busy (writes before it were not seen): past that.
    std::this_thread::sleep_for(60ms);
  }
  void TearDown() override {
    if (engine_) engine_->set_flow_observer(nullptr);
  }
  static uint32_t create(Engine* e) {
    auto inst = Instance::create({.type = "kvcache",
                                  .params = {"capacity=1M", "max_value=1000", "write_timeout_ms=50",
                                             "udp_checksum=true"},  // (memcached's own bytes)
                                  .state_quota = 1u << 30},
                                 Registry::global());
    EXPECT_TRUE(inst) << inst.error();
    const uint32_t id = *e->add_instance(std::move(*inst));
    EXPECT_TRUE(e->add_flow(*FlowKey::parse("udp:10.0.0.2:11211"), id));
    return id;
  }
  // The fast path's verdict on a request (through the steering program), and its reply.
  std::pair<int, Bytes> xdp(const Bytes& f) {
    xdp_md ctx{};
    ctx.data_end = uint32_t(f.size());
    ctx.ingress_ifindex = 1;
    Bytes out(4096);
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = f.data(), .data_out = out.data(),
                .data_size_in = uint32_t(f.size()), .data_size_out = uint32_t(out.size()),
                .ctx_in = &ctx, .ctx_size_in = uint32_t(sizeof(ctx)));
    EXPECT_EQ(bpf_prog_test_run_opts(x_->prog_fd(), &o), 0) << strerror(errno);
    out.resize(o.data_size_out);
    return {int(o.retval), out};
  }
  // memcached's reply on its way out (tc egress): always passed on.
  void egress(const Bytes& f) {
    Bytes in = f, out(4096);
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = in.data(), .data_out = out.data(),
                .data_size_in = uint32_t(in.size()), .data_size_out = uint32_t(out.size()));
    ASSERT_EQ(bpf_prog_test_run_opts(tc_, &o), 0) << strerror(errno);
    EXPECT_EQ(o.retval, uint32_t(TC_ACT_OK));
  }
  uint64_t fp(const char* what) { return x_->fast_path_stats(id_).value(what, uint64_t{0}); }
  // A request and memcached's reply to it (`reply` empty: none), as the kernel sees them.
  int ask(const std::string& req, const std::string& reply, uint16_t id, Bytes* served = nullptr) {
    auto [v, out] = xdp(frame(test::mc_dgram(req, id), true));
    if (v == XDP_TX) {
      if (served) *served = out;
      return v;
    }
    if (!reply.empty()) egress(frame(test::mc_dgram(reply, id), false));
    return v;
  }
  // Until `get` is answered in XDP (a miss, learned from `reply`, then a hit).
  bool cached(const std::string& key, const std::string& reply, uint16_t& id) {
    for (int i = 0; i < 3; ++i)
      if (ask("get " + key + "\r\n", reply, ++id) == XDP_TX) return true;
    return false;
  }

  std::unique_ptr<XdpProgram> x_;
  ToProgram obs_;
  MemPort wire_{"wire"}, host_{"host"};
  std::unique_ptr<Engine> engine_;
  uint32_t id_ = 0;
  int tc_ = -1;
};

const std::string kV1 = "VALUE foo 5 2\r\nv1\r\nEND\r\n";

TEST_F(KvLocalTest, AMissIsLearnedAtEgressAndServedByteForByte) {
  uint16_t id = 1;
  EXPECT_EQ(ask("get foo\r\n", kV1, id), XDP_PASS);  // the miss goes to memcached
  EXPECT_EQ(fp("fills"), 1u);
  Bytes hit;
  EXPECT_EQ(ask("get foo\r\n", "", 2, &hit), XDP_TX);
  EXPECT_TRUE(is_reply(hit, frame(test::mc_dgram(kV1, 2), false)))  // memcached's bytes
      << hex(hit) << "\n"
      << hex(frame(test::mc_dgram(kV1, 2), false));
  EXPECT_EQ(fp("answered"), 1u);
  // A reply to a request never seen, or for another key than its GET's, is not learned.
  egress(frame(test::mc_dgram("VALUE bar 0 1\r\nx\r\nEND\r\n", 77), false));
  EXPECT_EQ(ask("get bar\r\n", "VALUE baz 0 1\r\nx\r\nEND\r\n", 3), XDP_PASS);
  EXPECT_EQ(ask("get bar\r\n", "", 4), XDP_PASS);
  EXPECT_EQ(fp("fills"), 1u);
  EXPECT_GE(fp("fills_rejected"), 1u);
}

// On one NIC an attached TCP flow's frames pass in XDP at once (its connections are
// watched at memcached's sockets, after reassembly), its UDP flow's go to the fast path.
TEST_F(KvLocalTest, TcpPassesInXdpWithoutTheFastPath) {
  ASSERT_TRUE(engine_->add_flow(*FlowKey::parse("tcp:10.0.0.2:11211"), id_));
  ASSERT_TRUE(engine_->add_flow(*FlowKey::parse("tcp:[fd00::2]:11211"), id_));
  const uint64_t fast0 = x_->stats().value("fast_path", uint64_t{0});
  test::FrameSpec f;
  f.src_ip = "10.0.0.1";
  f.dst_ip = "10.0.0.2";
  f.proto = 6;
  f.sport = 40000;
  f.dport = 11211;
  f.payload = test::text("set foo 0 0 2\r\nv1\r\n");
  for (int v : {4, 6}) {
    f.ip_version = v;
    if (v == 6) {
      f.src_ip = "fd00::1";
      f.dst_ip = "fd00::2";
    }
    auto [verdict, out] = xdp(test::build_frame(f));
    EXPECT_EQ(verdict, XDP_PASS) << "IPv" << v;
    EXPECT_EQ(out, test::build_frame(f)) << "IPv" << v << ": passed unchanged";
  }
  EXPECT_EQ(x_->stats().value("fast_path", uint64_t{0}), fast0);
  uint16_t id = 1;  // (UDP still goes to it)
  EXPECT_EQ(ask("get foo\r\n", kV1, id), XDP_PASS);
  EXPECT_EQ(x_->stats().value("fast_path", uint64_t{0}), fast0 + 1);
}

struct WriteCase {
  std::string what, req, reply;
};

// Every write verb over UDP invalidates in XDP before the datagram reaches memcached (the
// frame is passed on: XDP_PASS), text, meta and binary alike; what cannot be read whole
// invalidates everything.
TEST_F(KvLocalTest, EveryUdpWriteInvalidatesInXdpAndIsPassedOn) {
  std::string bset(24, '\0');  // binary SET foo = "x" (flags, exptime in the extras)
  bset[0] = char(0x80), bset[1] = 0x01, bset[3] = 3, bset[4] = 8, bset[11] = 12;
  bset += std::string(8, '\0') + "foox";
  const std::vector<WriteCase> cases = {
      {"set", "set foo 0 0 2\r\nv2\r\n", "STORED\r\n"},
      {"add", "add foo 0 0 2\r\nv2\r\n", "NOT_STORED\r\n"},
      {"replace", "replace foo 0 0 2\r\nv2\r\n", "STORED\r\n"},
      {"append", "append foo 0 0 1\r\n2\r\n", "STORED\r\n"},
      {"prepend", "prepend foo 0 0 1\r\n2\r\n", "STORED\r\n"},
      {"cas", "cas foo 0 0 2 1\r\nv2\r\n", "EXISTS\r\n"},
      {"incr", "incr foo 1\r\n", "CLIENT_ERROR\r\n"},
      {"decr", "decr foo 1\r\n", "CLIENT_ERROR\r\n"},
      {"delete", "delete foo\r\n", "DELETED\r\n"},
      {"touch", "touch foo 10\r\n", "TOUCHED\r\n"},
      {"gat", "gat 10 foo\r\n", kV1},
      {"noreply", "set foo 0 0 2 noreply\r\nv2\r\n", ""},
      {"ms", "ms foo 2 T0\r\nv2\r\n", "HD\r\n"},
      {"md", "md foo\r\n", "HD\r\n"},
      {"ma", "ma foo\r\n", "CLIENT_ERROR\r\n"},
      {"mg with T", "mg foo v T5\r\n", "VA 2\r\nv1\r\n"},
      {"binary set", bset, ""},
      {"flush_all", "flush_all\r\n", "OK\r\n"},
      {"flush_all delayed", "flush_all 5\r\n", "OK\r\n"},
      {"two commands", "get foo\r\nset foo 0 0 2\r\nv2\r\n", ""},
      {"unknown", "frobnicate foo\r\n", "ERROR\r\n"},
      {"no line end", "set foo 0 0 2", ""},
  };
  uint16_t id = 100;
  for (const auto& c : cases) {
    std::this_thread::sleep_for(60ms);  // (past write_timeout of the last case)
    ASSERT_TRUE(cached("foo", kV1, id)) << c.what;
    const uint64_t writes = fp("writes"), flushes = fp("flushes");
    EXPECT_EQ(ask(c.req, c.reply, ++id), XDP_PASS) << c.what;
    EXPECT_TRUE(fp("writes") > writes || fp("flushes") > flushes) << c.what;
    EXPECT_EQ(ask("get foo\r\n", "", ++id), XDP_PASS) << c.what << ": served after the write";
  }
  // Reads change nothing: a hit stays a hit.
  std::this_thread::sleep_for(60ms);
  ASSERT_TRUE(cached("foo", kV1, id));
  for (const std::string r :
       {"get foo\r\n", "gets foo\r\n", "mg foo v\r\n", "version\r\n", "stats\r\n", "mn\r\n"})
    ask(r, "", ++id);
  EXPECT_EQ(ask("get foo\r\n", "", ++id), XDP_TX);
}

// A reply read before a write that came after its GET is never learned; nor across a
// flush; and a UDP write's acknowledgement lets the key be learned again at once.
TEST_F(KvLocalTest, AReplyOlderThanAWriteIsNeverLearned) {
  uint16_t id = 300;
  EXPECT_EQ(ask("get foo\r\n", "", ++id), XDP_PASS);  // a GET misses...
  const uint16_t get_id = id;
  EXPECT_EQ(ask("set foo 0 0 2\r\nv2\r\n", "", ++id), XDP_PASS);  // ...a write (not acked)
  const uint16_t set_id = id;
  egress(frame(test::mc_dgram(kV1, get_id), false));  // ...the GET's reply, read before it
  EXPECT_EQ(ask("get foo\r\n", "", ++id), XDP_PASS);
  EXPECT_EQ(fp("fills"), 0u);
  // While the write is outstanding, a GET's reply is not learned either.
  EXPECT_EQ(ask("get foo\r\n", "VALUE foo 0 2\r\nv2\r\nEND\r\n", ++id), XDP_PASS);
  EXPECT_EQ(fp("fills"), 0u);
  // Its acknowledgement ends that: learned at the next miss.
  egress(frame(test::mc_dgram("STORED\r\n", set_id), false));
  EXPECT_EQ(ask("get foo\r\n", "VALUE foo 0 2\r\nv2\r\nEND\r\n", ++id), XDP_PASS);
  EXPECT_EQ(ask("get foo\r\n", "", ++id), XDP_TX);
  // A flush between a GET and its reply: not learned.
  EXPECT_EQ(ask("get bar\r\n", "", ++id), XDP_PASS);
  const uint16_t bar_id = id;
  EXPECT_EQ(ask("flush_all\r\n", "OK\r\n", ++id), XDP_PASS);
  egress(frame(test::mc_dgram("VALUE bar 0 1\r\nx\r\nEND\r\n", bar_id), false));
  EXPECT_EQ(ask("get bar\r\n", "", ++id), XDP_PASS);
  EXPECT_EQ(ask("get foo\r\n", "", ++id), XDP_PASS);  // gone with the flush
}

// Thousands of random requests from several clients on a few keys, with memcached modelled
// (its replies fed to the egress program) and the same frames given to the C++ kvcache in
// an engine: every hit the kernel serves is the model's current reply byte for byte, and
// the C++ kvcache's where it answers too.
TEST_F(KvLocalTest, ThousandsOfRequestsGetMemcachedsAnswers) {
  auto e = Engine::create({.pool_frames = 2048});
  ASSERT_TRUE(e) << e.error();
  MemPort cw{"wire"}, ch{"host"};
  (*e)->set_ports(&cw, &ch);
  create(e->get());
  auto engine = [&](MemPort& in, const Bytes& f) {
    Packet* p = test::make_packet((*e)->pool(), f);
    EXPECT_EQ(in.inject({&p, 1}), 1u);
    for (int i = 0; i < 3; ++i) (*e)->poll(mono_ns());
    std::vector<Bytes> wire;
    Packet* buf[kBurst];
    for (MemPort* port : {&cw, &ch})
      while (uint32_t n = port->collect(buf))
        for (uint32_t i = 0; i < n; ++i) {
          if (port == &cw) wire.push_back(test::bytes_of(*buf[i]));
          (*e)->pool().free(buf[i]);
        }
    return wire;
  };
  std::mt19937 rng(7);
  std::map<std::string, std::string> mc;  // the model: key -> value
  uint64_t hits = 0, both = 0;
  for (int step = 0; step < 3000; ++step) {
    const std::string key = "k" + std::to_string(rng() % 5);
    const uint16_t id = uint16_t(step + 1), client = uint16_t(40000 + rng() % 4);
    const unsigned r = rng() % 10;
    std::string req, reply;
    if (r < 6) {
      req = "get " + key + "\r\n";
      auto it = mc.find(key);
      reply = it == mc.end() ? "END\r\n"
                             : "VALUE " + key + " 0 " + std::to_string(it->second.size()) + "\r\n" +
                                   it->second + "\r\nEND\r\n";
    } else if (r < 9) {
      const std::string v = "v" + std::to_string(step);
      req = "set " + key + " 0 0 " + std::to_string(v.size()) + "\r\n" + v + "\r\n";
      mc[key] = v;
      reply = "STORED\r\n";
    } else {
      req = "delete " + key + "\r\n";
      reply = mc.erase(key) ? "DELETED\r\n" : "NOT_FOUND\r\n";
    }
    const Bytes in = frame(test::mc_dgram(req, id), true, client);
    const Bytes answer = frame(test::mc_dgram(reply, id), false, client);
    auto [v, out] = xdp(in);
    const auto cpp = engine(cw, in);
    if (v == XDP_TX) {
      ++hits;
      ASSERT_TRUE(is_reply(out, answer)) << "step " << step << ": " << req;
      if (!cpp.empty()) {
        ++both;
        EXPECT_EQ(cpp[0], out) << "step " << step;
      }
    } else {
      ASSERT_EQ(v, XDP_PASS) << step;
      egress(answer);
    }
    if (cpp.empty()) engine(ch, answer);  // the C++ kvcache forwarded it: it sees the reply
    if (step % 200 == 0) std::this_thread::sleep_for(60ms);  // timeouts pass now and then
  }
  EXPECT_GT(hits, 300u);
  EXPECT_GT(both, 50u);
  EXPECT_GT(fp("fills"), 100u);
}

}  // namespace
}  // namespace gaon
