// The engine end to end on mem ports: steering, verdicts, fail-open, egress hook, emit,
// isolation between instances, arbiter shares, and control changes while traffic runs.
#include "gaon/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <thread>

#include <fmt/core.h>

#include "frames.h"
#include "gaon/mem_port.h"
#include "gaon/net.h"

namespace gaon {
namespace {

using test::Bytes;
using test::FrameSpec;

// A test ikernel: counts, and acts on the first payload byte:
//   'd' drop, 'w' to the wire unchanged, 'e' emit a copy to the wire and pass the original.
// Its egress hook drops replies whose first byte is 'x'.
class Probe : public IKernel {
 public:
  static std::vector<ParamSpec> param_specs() {
    return {{"state", ParamType::size, "64", "state bytes to ask for", 0, 1e12},
            {"label", ParamType::string, "", "free text", 0, 0}};
  }
  static std::vector<StateOpSpec> state_ops() {
    return {{"seen", "", "packets seen"}, {"echo", "A B", "returns its two arguments"}};
  }
  Result<void> configure(const Params& p) override {
    bytes_ = p.u64("state");
    return ok();
  }
  size_t state_bytes() const override { return bytes_; }
  Result<void> init(StateRegion& r) override {
    seen_ = r.carve<uint64_t>(2);
    if (seen_ == nullptr) return make_error("region too small");
    return ok();
  }
  void process(Context& ctx, std::span<Packet*> burst) override {
    for (Packet* p : burst) {
      ++seen_[0];
      const uint8_t c = p->hdr.payload_len ? p->payload()[0] : 0;
      if (c == 'd') p->verdict = Verdict::drop;
      if (c == 'w') p->verdict = Verdict::to_wire;
      if (c == 'e') {
        if (Packet* q = ctx.alloc()) {
          q->assign(p->bytes());
          ctx.emit(q, Verdict::to_wire);
        }
      }
    }
  }
  void process_egress(Context&, std::span<Packet*> burst) override {
    for (Packet* p : burst) {
      ++seen_[1];
      if (p->hdr.payload_len && p->payload()[0] == 'x') p->verdict = Verdict::drop;
    }
  }
  // The head of a datagram too large for a frame: 'd' drops it, anything else passes.
  Verdict on_oversize(Context&, Packet& p, Direction) override {
    ++oversize_;
    return p.hdr.payload_len && p.payload()[0] == 'd' ? Verdict::drop : Verdict::to_wire;
  }
  void on_gap(Context&) override { ++gaps_; }
  Result<nlohmann::json> call(std::string_view op, std::span<const std::string> args) override {
    if (op == "seen")
      return nlohmann::json{
          {"ingress", seen_[0]}, {"egress", seen_[1]}, {"oversize", oversize_}, {"gaps", gaps_}};
    return nlohmann::json{args[0], args[1]};
  }

 private:
  uint64_t bytes_ = 0;
  uint64_t* seen_ = nullptr;
  uint64_t oversize_ = 0, gaps_ = 0;
};
GAON_IKERNEL(Probe, "test-probe", "test ikernel: verdict by first payload byte");

FrameSpec to_port(uint16_t dport, std::string payload, uint16_t sport = 40000) {
  FrameSpec s;
  s.dst_ip = "10.0.0.2";
  s.dport = dport;
  s.sport = sport;
  s.payload = test::text(payload);
  return s;
}

FrameSpec swapped(FrameSpec s) {
  std::swap(s.src_ip, s.dst_ip);
  std::swap(s.sport, s.dport);
  uint8_t m[6];
  std::memcpy(m, s.src_mac, 6);
  std::memcpy(s.src_mac, s.dst_mac, 6);
  std::memcpy(s.dst_mac, m, 6);
  return s;
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { make({}); }
  void make(EngineConfig cfg) {
    cfg.pool_frames = 4096;
    auto e = Engine::create(cfg);
    ASSERT_TRUE(e) << e.error();
    engine_ = std::move(*e);
    engine_->set_ports(&wire_, &host_);
  }
  void TearDown() override {
    drain();
    // Every frame is back in the pool: nothing leaked, nothing freed twice.
    if (engine_) {
      EXPECT_EQ(engine_->pool().available(), engine_->pool().capacity());
      // And every frame is accounted for.
      const auto c = engine_->stats()["conservation"];
      EXPECT_TRUE(c["balanced"].get<bool>()) << c.dump();
    }
  }
  uint32_t create(const std::string& type, std::vector<std::string> params = {},
                  TrafficClass tc = {}) {
    auto inst = Instance::create(
        {.type = type, .params = params, .owner_uid = 1000, .state_quota = 1 << 20, .tc = tc},
        Registry::global());
    EXPECT_TRUE(inst) << inst.error();
    auto id = engine_->add_instance(std::move(*inst));
    EXPECT_TRUE(id) << id.error();
    return *id;
  }
  void attach(uint32_t id, const std::string& flow) {
    auto r = engine_->add_flow(*FlowKey::parse(flow), id);
    ASSERT_TRUE(r) << r.error();
  }
  void inject(MemPort& port, const Bytes& frame) {
    Packet* p = test::make_packet(engine_->pool(), frame);
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(port.inject({&p, 1}), 1u);
  }
  std::vector<Bytes> collect(MemPort& port) {
    std::vector<Bytes> out;
    Packet* buf[kBurst];
    while (uint32_t n = port.collect(buf)) {
      for (uint32_t i = 0; i < n; ++i) {
        out.push_back(test::bytes_of(*buf[i]));
        engine_->pool().free(buf[i]);
      }
    }
    return out;
  }
  void poll_until_idle() {
    for (int idle = 0; idle < 3;)
      idle = engine_->poll(now_ += 1'000'000) == 0 && engine_->tx_idle() ? idle + 1 : 0;
  }
  void drain() {
    if (!engine_) return;
    poll_until_idle();
    collect(wire_);
    collect(host_);
  }
  uint64_t counter(uint32_t id, const char* name) {
    return engine_->instance_stats(id)["counters"][name].get<uint64_t>();
  }

  MemPort wire_{"wire", 8192}, host_{"host", 8192};
  std::unique_ptr<Engine> engine_;
  uint64_t now_ = 1;
};

TEST_F(EngineTest, EchoAnswersOnTheWireAndNothingReachesTheHost) {
  const uint32_t id = create("echo");
  attach(id, "udp:10.0.0.2:7");
  std::vector<FrameSpec> reqs;
  for (int i = 0; i < 50; ++i) reqs.push_back(to_port(7, "ping " + std::to_string(i), 40000 + i));
  for (auto& s : reqs) inject(wire_, test::build_frame(s));
  poll_until_idle();
  auto out = collect(wire_);
  ASSERT_EQ(out.size(), reqs.size());
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(out[i], test::build_frame(swapped(reqs[i])));
    EXPECT_TRUE(test::ref_ip_ok(out[i]) && test::ref_l4_ok(out[i]));
  }
  EXPECT_TRUE(collect(host_).empty());
  EXPECT_EQ(counter(id, "rx"), 50u);
  EXPECT_EQ(counter(id, "to_wire"), 50u);
  EXPECT_EQ(engine_->call(id, "stats", {}).value()["echoed"], 50);
}

TEST_F(EngineTest, EchoOfAnOffloadedChecksumCarriesAFullOne) {
  const uint32_t id = create("echo");
  attach(id, "udp:10.0.0.2:7");
  auto s = to_port(7, "partial");
  s.l4csum = test::L4Csum::partial;
  inject(wire_, test::build_frame(s));
  poll_until_idle();
  auto out = collect(wire_);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], test::build_frame(swapped(to_port(7, "partial"))));
  EXPECT_TRUE(test::ref_l4_ok(out[0]));
}

TEST_F(EngineTest, UnmatchedTrafficPassesUntouchedBothWays) {
  const uint32_t id = create("echo");
  attach(id, "udp:10.0.0.2:7");
  std::vector<Bytes> in = {test::build_frame(to_port(8, "other port")), test::build_frame([] {
                             auto s = to_port(7, "tcp to the echo port");
                             s.proto = 6;
                             return s;
                           }())};
  for (auto& f : in) inject(wire_, f);
  const Bytes from_host = test::build_frame(swapped(to_port(9, "host reply")));
  inject(host_, from_host);
  poll_until_idle();
  EXPECT_EQ(collect(host_), in);
  EXPECT_EQ(collect(wire_), std::vector<Bytes>{from_host});
  EXPECT_EQ(counter(id, "rx"), 0u);
  EXPECT_EQ(engine_->stats()["unmatched"], 3);
}

TEST_F(EngineTest, MalformedFramesPassToTheHostUntouchedAndAreCounted) {
  const uint32_t id = create("echo");
  attach(id, "udp:10.0.0.2:7");
  const Bytes good = test::build_frame(to_port(7, "hello"));
  std::vector<Bytes> bad;
  bad.push_back(Bytes(good.begin(), good.begin() + 20));  // truncated IPv4
  bad.push_back(good);
  bad.back()[24] ^= 0xff;  // IPv4 header checksum
  bad.push_back(test::build_frame([] {
    auto s = to_port(7, "frag");
    s.frag = 0x2000;
    return s;
  }()));
  bad.push_back(test::build_frame([] {
    auto s = to_port(7, "bad udp sum");
    s.l4csum = test::L4Csum::bad;
    return s;
  }()));
  bad.push_back(good);
  bad.back()[38] = 0xff;  // UDP length
  for (auto& f : bad) inject(wire_, f);
  poll_until_idle();
  EXPECT_EQ(collect(host_), bad);
  EXPECT_TRUE(collect(wire_).empty());
  EXPECT_EQ(counter(id, "rx"), 0u);
  auto np = engine_->stats()["not_parsed"];
  EXPECT_EQ(np["truncated_ipv4"], 1);
  EXPECT_EQ(np["bad_ipv4_checksum"], 1);
  EXPECT_EQ(np["ipv4_fragment"], 1);
  EXPECT_EQ(np["bad_udp_checksum"], 1);
  EXPECT_EQ(np["bad_udp_len"], 1);
}

TEST_F(EngineTest, VerdictsDropWireHostAndEmit) {
  const uint32_t id = create("test-probe");
  attach(id, "udp:10.0.0.2:5000");
  const Bytes d = test::build_frame(to_port(5000, "drop me"));
  const Bytes w = test::build_frame(to_port(5000, "wire"));
  const Bytes h = test::build_frame(to_port(5000, "host"));
  const Bytes e = test::build_frame(to_port(5000, "emit"));
  for (auto* f : {&d, &w, &h, &e}) inject(wire_, *f);
  poll_until_idle();
  EXPECT_EQ(collect(wire_), (std::vector<Bytes>{w, e}));
  EXPECT_EQ(collect(host_), (std::vector<Bytes>{h, e}));
  EXPECT_EQ(counter(id, "rx"), 4u);
  EXPECT_EQ(counter(id, "dropped"), 1u);
  EXPECT_EQ(counter(id, "emitted"), 1u);
  EXPECT_EQ(counter(id, "to_wire"), 2u);
  EXPECT_EQ(counter(id, "to_host"), 2u);
}

// A frame that holds only the head of a larger datagram (Packet::oversize) is never given
// to process(): the instance sees it in on_oversize and may pass it (to its destination,
// whatever verdict it asks for) or drop it; both are counted.
TEST_F(EngineTest, TheHeadOfADatagramTooLargeForAFrameIsPassedOrDroppedNeverProcessed) {
  const uint32_t id = create("test-probe");
  attach(id, "udp:10.0.0.2:5000");
  const Bytes w = test::build_frame(to_port(5000, "wire, were it processed"));
  const Bytes d = test::build_frame(to_port(5000, "drop"));
  const Bytes other = test::build_frame(to_port(5001, "not attached"));
  for (const Bytes* f : {&w, &d, &other}) {
    Packet* p = test::make_packet(engine_->pool(), *f);
    ASSERT_NE(p, nullptr);
    p->oversize = 7;
    p->oversize_len = 9000;
    ASSERT_EQ(wire_.inject({&p, 1}), 1u);
  }
  poll_until_idle();
  EXPECT_EQ(collect(host_), (std::vector<Bytes>{w, other}));
  EXPECT_TRUE(collect(wire_).empty());
  auto seen = engine_->call(id, "seen", {});
  ASSERT_TRUE(seen) << seen.error();
  EXPECT_EQ((*seen)["ingress"], 0);  // process() saw none of them
  EXPECT_EQ((*seen)["oversize"], 2);
  EXPECT_EQ(counter(id, "oversize_passed"), 1u);
  EXPECT_EQ(counter(id, "dropped"), 1u);
  EXPECT_EQ(engine_->stats()["oversize"], 2);  // the unattached one passed without a look
}

// A port that reports gaps (Port::gaps): each new one reaches every instance once, before
// the frames received in the same poll.
class GappyPort final : public Port {
 public:
  explicit GappyPort(MemPort& inner) : inner_(inner) {}
  uint32_t rx_burst(std::span<Packet*> out) override { return inner_.rx_burst(out); }
  uint32_t tx_burst(std::span<Packet*> pkts) override { return inner_.tx_burst(pkts); }
  std::string name() const override { return "gappy"; }
  nlohmann::json stats() const override { return inner_.stats(); }
  uint64_t gaps() const override { return gaps_; }
  uint64_t gaps_ = 0;

 private:
  MemPort& inner_;
};

TEST_F(EngineTest, AGapAPortReportsReachesEveryInstanceOnce) {
  GappyPort gappy(wire_);
  engine_->set_ports(&gappy, &host_);
  const uint32_t a = create("test-probe"), b = create("test-probe");
  auto gaps = [&](uint32_t id) { return (*engine_->call(id, "seen", {}))["gaps"].get<int>(); };
  poll_until_idle();
  EXPECT_EQ(gaps(a), 0);
  gappy.gaps_ = 2;  // two lapses since the last poll: one call
  poll_until_idle();
  EXPECT_EQ(gaps(a), 1);
  EXPECT_EQ(gaps(b), 1);
  EXPECT_EQ(engine_->stats()["gaps"], 1);
  ++gappy.gaps_;
  poll_until_idle();
  EXPECT_EQ(gaps(b), 2);
  engine_->set_ports(&wire_, &host_);
}

TEST_F(EngineTest, EgressHookSeesTheApplicationsReplies) {
  const uint32_t id = create("test-probe");
  attach(id, "udp:10.0.0.2:5000");
  const Bytes keep = test::build_frame(swapped(to_port(5000, "reply")));
  const Bytes drop = test::build_frame(swapped(to_port(5000, "xreply")));
  const Bytes other = test::build_frame(swapped(to_port(5001, "xnot ours")));
  for (auto* f : {&keep, &drop, &other}) inject(host_, *f);
  poll_until_idle();
  // Unmatched frames may overtake the instance's (order holds within a flow).
  auto out = collect(wire_);
  std::sort(out.begin(), out.end());
  std::vector<Bytes> want{keep, other};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(out, want);
  EXPECT_EQ(counter(id, "egress_rx"), 2u);
  EXPECT_EQ(counter(id, "dropped"), 1u);
  EXPECT_EQ(engine_->call(id, "seen", {}).value()["egress"], 2);
}

TEST_F(EngineTest, InstancesSeeOnlyTheirOwnFlows) {
  const uint32_t a = create("test-probe");
  const uint32_t b = create("test-probe");
  attach(a, "udp:10.0.0.2:6000");
  attach(b, "udp:10.0.0.2:6001");
  attach(b, "udp:10.0.0.2:6002,10.0.0.1:40000");  // exact 5-tuple
  for (int i = 0; i < 30; ++i) inject(wire_, test::build_frame(to_port(6000, "a")));
  for (int i = 0; i < 20; ++i) inject(wire_, test::build_frame(to_port(6001, "b")));
  inject(wire_, test::build_frame(to_port(6002, "b exact")));
  inject(wire_, test::build_frame(to_port(6002, "other remote", 40001)));
  poll_until_idle();
  EXPECT_EQ(counter(a, "rx"), 30u);
  EXPECT_EQ(counter(b, "rx"), 21u);
  EXPECT_EQ(engine_->call(a, "seen", {}).value()["ingress"], 30);
  EXPECT_EQ(engine_->call(b, "seen", {}).value()["ingress"], 21);
  EXPECT_EQ(engine_->stats()["unmatched"], 1);
  EXPECT_EQ(collect(host_).size(), 52u);
}

// What steers traffic outside the engine (the AF_XDP bump's XDP program) is told of every
// flow change, and can refuse one.
TEST_F(EngineTest, TheFlowObserverSeesEveryChangeAndCanRefuse) {
  struct Recorder : FlowObserver {
    std::vector<std::string> log;
    bool refuse = false;
    Result<void> flow_added(const FlowKey& k, uint32_t inst, const FastPathSpec& fp) override {
      if (refuse) return make_error("no room");
      log.push_back(fmt::format("+{} {} {}", k.to_string(), inst, fp.prog));
      return ok();
    }
    void flow_removed(const FlowKey& k) override { log.push_back("-" + k.to_string()); }
    void instance_removed(uint32_t inst) override { log.push_back(fmt::format("x{}", inst)); }
  } rec;
  engine_->set_flow_observer(&rec);
  const uint32_t a = create("echo");
  attach(a, "udp:10.0.0.2:7");
  attach(a, "udp:10.0.0.2:8");
  ASSERT_TRUE(engine_->remove_flow(*FlowKey::parse("udp:10.0.0.2:7")));
  rec.refuse = true;
  auto refused = engine_->add_flow(*FlowKey::parse("udp:10.0.0.2:9"), a);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error(), "no room");
  EXPECT_EQ(engine_->flows().size(), 1u);  // the refused flow was taken back
  rec.refuse = false;
  ASSERT_TRUE(engine_->remove_instance(a));  // takes its last flow with it
  const std::string ia = std::to_string(a);
  EXPECT_EQ(rec.log, (std::vector<std::string>{"+udp:10.0.0.2:7 " + ia + " 0",
                                               "+udp:10.0.0.2:8 " + ia + " 0", "-udp:10.0.0.2:7",
                                               "-udp:10.0.0.2:8", "x" + ia}));
  engine_->set_flow_observer(nullptr);
}

TEST_F(EngineTest, AFlowHeldByOneInstanceCannotBeTakenByAnother) {
  const uint32_t a = create("echo");
  const uint32_t b = create("echo");
  attach(a, "udp:10.0.0.2:7");
  auto r = engine_->add_flow(*FlowKey::parse("udp:10.0.0.2:7"), b);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("already attached"), std::string::npos) << r.error();
  EXPECT_FALSE(engine_->add_flow(*FlowKey::parse("udp:10.0.0.2:8"), 99));
}

TEST_F(EngineTest, WireSharesFollowWeightsOneAndThree) {
  const uint32_t a = create("echo", {}, {.weight = 1});
  const uint32_t b = create("echo", {}, {.weight = 3});
  attach(a, "udp:10.0.0.2:7001");
  attach(b, "udp:10.0.0.2:7003");
  wire_.set_tx_limit(8);  // a slow wire: 8 frames per poll, 32 arriving
  std::map<uint16_t, uint64_t> sent;
  const Bytes fa = test::build_frame(to_port(7001, "aaaa"));
  const Bytes fb = test::build_frame(to_port(7003, "bbbb"));
  for (int round = 0; round < 3000; ++round) {
    for (int i = 0; i < 16; ++i) {
      inject(wire_, fa);
      inject(wire_, fb);
    }
    engine_->poll(now_++);
    Packet* buf[kBurst];
    while (uint32_t n = wire_.collect(buf)) {
      for (uint32_t i = 0; i < n; ++i) {
        ++sent[net::load16(buf[i]->data() + 34)];  // reply's source port
        engine_->pool().free(buf[i]);
      }
    }
  }
  const double total = double(sent[7001] + sent[7003]);
  ASSERT_GT(total, 10000);
  EXPECT_NEAR(sent[7001] / total, 0.25, 0.03);
  EXPECT_NEAR(sent[7003] / total, 0.75, 0.03);
  // The excess was refused at the bounded queues and counted per instance.
  EXPECT_GT(engine_->instance_stats(a)["counters"]["errors"]["wire_queue_full"], 0);
  EXPECT_GT(engine_->instance_stats(b)["wire_queue"]["dropped_full"], 0);
}

TEST_F(EngineTest, RateLimitedInstanceStaysWithinItsLimit) {
  const uint64_t rate = 4'000'000;  // 4 Mbit/s
  const uint32_t a = create("echo", {}, {.weight = 1, .rate_bps = rate, .burst_bytes = 4000});
  attach(a, "udp:10.0.0.2:7");
  const Bytes f = test::build_frame(to_port(7, std::string(458, 'r')));  // 500-byte frames
  uint64_t bytes = 0;
  const int polls = 100000;  // 1 s of simulated time in 10 µs steps
  for (int i = 0; i < polls; ++i) {
    if (i % 4 == 0)
      for (int k = 0; k < 8; ++k) inject(wire_, f);  // offered: ~8x the limit
    engine_->poll(now_ += 10'000);
    Packet* buf[kBurst];
    while (uint32_t n = wire_.collect(buf)) {
      for (uint32_t j = 0; j < n; ++j) {
        bytes += buf[j]->len;
        engine_->pool().free(buf[j]);
      }
    }
  }
  EXPECT_NEAR(bytes * 8.0 / rate, 1.0, 0.05);
}

TEST_F(EngineTest, HostTrafficIsNeverStarvedByAnInstance) {
  const uint32_t a = create("echo", {}, {.weight = 1000});
  attach(a, "udp:10.0.0.2:7");
  wire_.set_tx_limit(4);
  const Bytes req = test::build_frame(to_port(7, "flood"));
  const Bytes app = test::build_frame(swapped(to_port(9, "app reply")));
  uint64_t host_sent = 0, echo_sent = 0;
  for (int round = 0; round < 20000; ++round) {
    for (int i = 0; i < 32; ++i) inject(wire_, req);
    inject(host_, app);
    engine_->poll(now_++);
    Packet* buf[kBurst];
    while (uint32_t n = wire_.collect(buf)) {
      for (uint32_t i = 0; i < n; ++i) {
        (net::load16(buf[i]->data() + 34) == 9 ? host_sent : echo_sent)++;
        engine_->pool().free(buf[i]);
      }
    }
  }
  // The host class has weight 1 against 1000 and gets its share, ~1/1001 of the wire.
  EXPECT_GT(host_sent, 50u);
  EXPECT_GT(echo_sent, 70000u);
}

TEST_F(EngineTest, RemovingAnInstanceFreesItsQueuedPacketsAndFlows) {
  const uint32_t a = create("echo");
  attach(a, "udp:10.0.0.2:7");
  wire_.set_tx_limit(0);  // nothing leaves: replies pile up in the instance's queue
  for (int i = 0; i < 100; ++i) inject(wire_, test::build_frame(to_port(7, "q")));
  for (int i = 0; i < 10; ++i) engine_->poll(now_++);
  EXPECT_GT(engine_->arbiter().queued(), 0u);
  auto gone = engine_->remove_instance(a);
  ASSERT_TRUE(gone);
  EXPECT_EQ((*gone)->counters().rx.get(), 100u);
  EXPECT_TRUE(engine_->flows().empty());
  EXPECT_FALSE(engine_->remove_instance(a));
  wire_.set_tx_limit(1000);
  // Its flow is gone: the same traffic now passes to the host.
  inject(wire_, test::build_frame(to_port(7, "after")));
  poll_until_idle();
  EXPECT_EQ(collect(host_).size(), 1u);
}

TEST_F(EngineTest, StateOperationsAreCheckedByName) {
  const uint32_t id = create("test-probe");
  auto r = engine_->call(id, "nope", {});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("no operation 'nope'"), std::string::npos) << r.error();
  std::vector<std::string> one{"x"};
  EXPECT_FALSE(engine_->call(id, "echo", one));
  std::vector<std::string> two{"x", "y"};
  EXPECT_EQ(engine_->call(id, "echo", two).value(), nlohmann::json({"x", "y"}));
  EXPECT_FALSE(engine_->call(999, "seen", {}));
}

TEST(Instance, CreationErrorsAreClear) {
  const auto& reg = Registry::global();
  auto bad_type = Instance::create({.type = "nope"}, reg);
  ASSERT_FALSE(bad_type);
  EXPECT_NE(bad_type.error().find("unknown ikernel type 'nope'"), std::string::npos);
  EXPECT_NE(bad_type.error().find("echo"), std::string::npos);  // lists the known ones

  auto bad_param = Instance::create({.type = "test-probe", .params = {"bogus=1"}}, reg);
  ASSERT_FALSE(bad_param);
  EXPECT_NE(bad_param.error().find("unknown parameter 'bogus'"), std::string::npos);

  auto bad_value = Instance::create({.type = "test-probe", .params = {"state=lots"}}, reg);
  ASSERT_FALSE(bad_value);
  EXPECT_NE(bad_value.error().find("not a size"), std::string::npos) << bad_value.error();

  auto over = Instance::create(
      {.type = "test-probe", .params = {"state=1M"}, .state_quota = 64 << 10}, reg);
  ASSERT_FALSE(over);
  EXPECT_NE(over.error().find("quota"), std::string::npos) << over.error();

  auto too_small = Instance::create({.type = "test-probe", .params = {"state=8"}}, reg);
  ASSERT_FALSE(too_small);  // init fails: its region cannot hold its state
  EXPECT_NE(too_small.error().find("region too small"), std::string::npos);

  auto bad_tc = Instance::create({.type = "echo", .tc = {.weight = 0}}, reg);
  ASSERT_FALSE(bad_tc);
  EXPECT_NE(bad_tc.error().find("weight"), std::string::npos);

  auto good = Instance::create({.type = "test-probe", .params = {"state=4K", "label=x=y"}}, reg);
  ASSERT_TRUE(good) << good.error();
  EXPECT_EQ((*good)->state().size(), 4096u);
}

TEST(Engine, ConfigErrorsAreClear) {
  EXPECT_FALSE(Engine::create({.max_instances = 0}));
  EXPECT_FALSE(Engine::create({.queue_depth = 1}));
  EXPECT_FALSE(Engine::create({.pool_frames = 3}));
  EXPECT_FALSE(Engine::create({.flow_capacity = 0}));
}

TEST(Engine, InstanceTableFillsCleanly) {
  auto e = Engine::create({.max_instances = 2});
  ASSERT_TRUE(e);
  auto mk = [] { return std::move(*Instance::create({.type = "echo"}, Registry::global())); };
  EXPECT_TRUE((*e)->add_instance(mk()));
  EXPECT_TRUE((*e)->add_instance(mk()));
  auto third = (*e)->add_instance(mk());
  ASSERT_FALSE(third);
  EXPECT_NE(third.error().find("full"), std::string::npos);
}

// Ports that live on the engine's own thread: a generator and a sink, so that traffic runs
// while another thread changes flows and instances through the control path.
class GenPort final : public Port {
 public:
  GenPort(BufferPool& pool, std::vector<Bytes> frames) : pool_(pool), frames_(std::move(frames)) {}
  uint32_t rx_burst(std::span<Packet*> out) override {
    uint32_t n = 0;
    while (n < out.size() && budget_.load(std::memory_order_relaxed) > 0) {
      Packet* p = pool_.alloc();
      if (p == nullptr) break;
      const Bytes& f = frames_[i_++ % frames_.size()];
      p->assign(f);
      budget_.fetch_sub(1, std::memory_order_relaxed);
      ++sent_[net::load16(f.data() + 36)];
      out[n++] = p;
    }
    return n;
  }
  uint32_t tx_burst(std::span<Packet*> pkts) override {  // the host side: count and free
    for (Packet* p : pkts) {
      ++received_[net::load16(p->data() + 36)];
      pool_.free(p);
    }
    return static_cast<uint32_t>(pkts.size());
  }
  std::string name() const override { return "gen"; }
  std::atomic<int64_t> budget_{0};
  std::map<uint16_t, uint64_t> sent_, received_;  // by destination port

 private:
  BufferPool& pool_;
  std::vector<Bytes> frames_;
  size_t i_ = 0;
};

class SinkPort final : public Port {
 public:
  explicit SinkPort(BufferPool& pool) : pool_(pool) {}
  uint32_t rx_burst(std::span<Packet*>) override { return 0; }
  uint32_t tx_burst(std::span<Packet*> pkts) override {
    for (Packet* p : pkts) {
      ++received_[net::load16(p->data() + 34)];  // replies: by source port
      pool_.free(p);
    }
    return static_cast<uint32_t>(pkts.size());
  }
  std::string name() const override { return "sink"; }
  std::map<uint16_t, uint64_t> received_;

 private:
  BufferPool& pool_;
};

TEST(EngineControl, FlowsAndInstancesChangeWhileTrafficRuns) {
  auto e = Engine::create({.pool_frames = 4096, .queue_depth = 4096});
  ASSERT_TRUE(e);
  Engine& eng = **e;
  // Stable traffic to port 7 (echo), churned traffic to port 8.
  GenPort gen(eng.pool(),
              {test::build_frame(to_port(7, "stable")), test::build_frame(to_port(8, "churn"))});
  SinkPort sink(eng.pool());
  // wire: frames come from `gen`, replies go to `sink`; host: what passes returns to `gen`.
  struct Split final : Port {
    GenPort& g;
    SinkPort& s;
    Split(GenPort& g, SinkPort& s) : g(g), s(s) {}
    uint32_t rx_burst(std::span<Packet*> out) override { return g.rx_burst(out); }
    uint32_t tx_burst(std::span<Packet*> p) override { return s.tx_burst(p); }
    std::string name() const override { return "split"; }
  } wire(gen, sink);
  struct Host final : Port {
    GenPort& g;
    explicit Host(GenPort& g) : g(g) {}
    uint32_t rx_burst(std::span<Packet*>) override { return 0; }
    uint32_t tx_burst(std::span<Packet*> p) override { return g.tx_burst(p); }
    std::string name() const override { return "host"; }
  } host(gen);
  eng.set_ports(&wire, &host);

  const uint32_t stable =
      *eng.add_instance(std::move(*Instance::create({.type = "echo"}, Registry::global())));
  ASSERT_TRUE(eng.add_flow(*FlowKey::parse("udp:10.0.0.2:7"), stable));

  std::atomic<bool> stop{false};
  std::thread dp([&] { eng.run(stop); });
  gen.budget_ = 200000;
  const auto key8 = *FlowKey::parse("udp:10.0.0.2:8");
  int changes = 0;
  while (gen.budget_.load() > 0) {
    auto inst = Instance::create({.type = "echo"}, Registry::global());
    auto id = eng.add_instance(std::move(*inst));
    ASSERT_TRUE(id) << id.error();
    ASSERT_TRUE(eng.add_flow(key8, *id));
    ASSERT_TRUE(eng.remove_flow(key8));
    ASSERT_TRUE(eng.add_flow(key8, *id));
    ASSERT_TRUE(eng.call(*id, "stats", {}));
    ASSERT_TRUE(eng.remove_instance(*id));  // takes its flow with it
    ++changes;
  }
  // Let the datapath drain (asked on the datapath itself, between bursts), then stop it.
  for (int i = 0; i < 10000; ++i) {
    bool idle = false;
    eng.execute([&] { idle = eng.tx_idle(); });
    if (idle) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stop = true;
  dp.join();
  EXPECT_GT(changes, 10);
  // Every stable packet was echoed; no packet of either flow was lost or misrouted:
  // port-8 traffic was echoed while an instance held it and passed to the host otherwise.
  EXPECT_EQ(sink.received_[7], gen.sent_[7]);
  EXPECT_EQ(gen.received_[7], 0u);
  EXPECT_EQ(sink.received_[8] + gen.received_[8], gen.sent_[8]);
  EXPECT_GT(gen.sent_[7], 0u);
  EXPECT_EQ(eng.pool().available(), eng.pool().capacity());
}

}  // namespace

// A port that hands out a scripted number of frames per receive and says whether each
// burst emptied it; counts receives so a test sees when the loop went idle.
class ScriptPort final : public Port {
 public:
  ScriptPort(BufferPool& pool, std::vector<std::pair<uint32_t, bool>> script)
      : pool_(pool), script_(std::move(script)) {}
  uint32_t rx_burst(std::span<Packet*> out) override {
    ++calls;
    if (step_ >= script_.size()) {
      drained_ = true;
      return 0;
    }
    auto [n, drained] = script_[step_++];
    for (uint32_t i = 0; i < n; ++i) {
      out[i] = pool_.alloc();
      out[i]->assign(frame_);
    }
    drained_ = drained;
    return n;
  }
  uint32_t tx_burst(std::span<Packet*> pkts) override {
    for (Packet* p : pkts) pool_.free(p);
    return uint32_t(pkts.size());
  }
  std::string name() const override { return "script"; }
  bool rx_drained() const override { return drained_; }
  uint32_t calls = 0;

 private:
  BufferPool& pool_;
  std::vector<std::pair<uint32_t, bool>> script_;
  size_t step_ = 0;
  bool drained_ = false;
  Bytes frame_ = test::build_frame(to_port(9, "x"));
};

// Runs the loop until the first idle call; returns how many receives the wire saw by then.
uint32_t receives_before_idle(std::vector<std::pair<uint32_t, bool>> script, uint32_t idle_after,
                              bool host_can_tell = true) {
  auto e = Engine::create({});
  EXPECT_TRUE(e);
  ScriptPort wire((*e)->pool(), std::move(script));
  ScriptPort host((*e)->pool(), {});
  struct Opaque final : Port {  // a port that cannot tell whether it is drained
    Port& p;
    explicit Opaque(Port& p) : p(p) {}
    uint32_t rx_burst(std::span<Packet*> out) override { return p.rx_burst(out); }
    uint32_t tx_burst(std::span<Packet*> pkts) override { return p.tx_burst(pkts); }
    std::string name() const override { return "opaque"; }
  } opaque(host);
  (*e)->set_ports(&wire, host_can_tell ? static_cast<Port*>(&host) : &opaque);
  std::atomic<bool> stop{false};
  uint32_t at = 0;
  (*e)->run(
      stop,
      [&] {
        at = wire.calls;
        stop = true;
      },
      idle_after);
  EXPECT_EQ((*e)->pool().available(), (*e)->pool().capacity());
  return at;
}

TEST(EngineRun, AnEventLoopBlocksAsSoonAsBothPortsAreDrained) {
  EXPECT_EQ(receives_before_idle({{5, true}}, 1), 1u);  // no extra empty poll
  EXPECT_EQ(receives_before_idle({{32, false}, {3, true}}, 1), 2u);
  EXPECT_EQ(receives_before_idle({{32, false}, {32, false}, {0, true}}, 1), 3u);
  EXPECT_EQ(receives_before_idle({}, 1), 1u);
}

TEST(EngineRun, ASpinningLoopPollsItsCountBeforeBlocking) {
  EXPECT_EQ(receives_before_idle({{5, true}}, 64), 64u);  // the drained burst counts as one
  EXPECT_EQ(receives_before_idle({{5, false}}, 64), 65u);
  // A port that cannot tell keeps the loop polling until a poll finds nothing.
  EXPECT_EQ(receives_before_idle({{5, true}}, 1, false), 2u);
}

}  // namespace gaon
