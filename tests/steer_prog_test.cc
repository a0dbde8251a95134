// The XDP steering program's own decisions, run in the kernel with BPF_PROG_TEST_RUN (root):
// which frames belong to attached flows (IPv4 and IPv6, either side), which go to gaond,
// to a fast path, or around gaond when its lease lapsed. Table-driven cases, then a
// differential test: a few thousand mutated frames, each decided by the program and by an
// independent model of the rule written here. (kvcache's fast path has its own tests:
// src/ikernels/kvcache/kvcache_fastpath_test.cc.)
#include <arpa/inet.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "frames.h"
#include "gaon/clock.h"
#include "gaon/xdp_program.h"

namespace gaon {
namespace {

using test::Bytes;

class SteerProgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (loads a BPF program); CI runs as root";
    auto x = XdpProgram::load({.fp_chunks = 4});
    ASSERT_TRUE(x) << x.error();
    x_ = std::move(*x);
    set_role(GAON_WIRE);
    add("udp:10.0.0.2:11211");
    add("tcp:10.0.0.2:11211");
    add("udp:0.0.0.0:7");  // any local IPv4 address
    add("udp:[fd00::2]:11211");
  }
  void add(const char* flow) { ASSERT_TRUE(x_->add_flow(*FlowKey::parse(flow), 1, {})) << flow; }
  // Frames "arrive" on lo (ifindex 1), as the wire or the host.
  void set_role(gaon_role role) { ASSERT_TRUE(x_->set_port(1, role, 1 - role)); }
  // What the program did with `frame`: the one counter it moved. Steering with no gaond
  // socket in the XSKMAP counts fail_open: "steered" below.
  std::string decide(const Bytes& frame) {
    const nlohmann::json before = x_->stats();
    xdp_md ctx{};
    ctx.data_end = uint32_t(frame.size());
    ctx.ingress_ifindex = 1;
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = frame.data(),
                .data_size_in = uint32_t(frame.size()), .ctx_in = &ctx,
                .ctx_size_in = uint32_t(sizeof(ctx)));
    EXPECT_EQ(bpf_prog_test_run_opts(x_->prog_fd(), &o), 0) << strerror(errno);
    const nlohmann::json after = x_->stats();
    std::string what;
    for (auto& [name, v] : after.items())
      if (v != before[name]) what += name == "fail_open" ? "steered" : name;
    return what;
  }
  static Bytes udp(const std::string& payload, uint16_t port = 11211, bool to_server = true,
                   bool v6 = false) {
    test::FrameSpec f;
    f.src_ip = v6 ? (to_server ? "fd00::1" : "fd00::2") : (to_server ? "10.0.0.1" : "10.0.0.2");
    f.dst_ip = v6 ? (to_server ? "fd00::2" : "fd00::1") : (to_server ? "10.0.0.2" : "10.0.0.1");
    f.sport = to_server ? 40000 : port;
    f.dport = to_server ? port : 40000;
    f.payload = test::text(payload);
    if (v6) f.ip_version = 6;
    return test::build_frame(f);
  }
  // gaond's lease, as gaond renews it: `age_ns` ago, valid for `bound_ns` (0: no lease).
  void lease(uint64_t age_ns, uint64_t bound_ns) {
    x_->lease()->renewed_ns = mono_ns() - age_ns;
    x_->lease()->bound_ns = bound_ns;
  }
  std::unique_ptr<XdpProgram> x_;
};

TEST_F(SteerProgTest, AttachedFlowsOfEitherFamilyAreSteeredTheRestForwarded) {
  lease(0, 0);
  EXPECT_EQ(decide(udp("x")), "steered");
  EXPECT_EQ(decide(udp("x", 11211, true, true)), "steered") << "IPv6";
  EXPECT_EQ(decide(udp("x", 11212)), "forwarded");
  EXPECT_EQ(decide(udp("x", 11212, true, true)), "forwarded") << "IPv6, not attached";
  EXPECT_EQ(decide(udp("x", 7)), "steered") << "any local address";
  EXPECT_EQ(decide(udp("x", 7, true, true)), "forwarded") << "0.0.0.0 is IPv4 only";
  test::FrameSpec tcp;
  tcp.proto = 6;
  tcp.dport = 11211;
  EXPECT_EQ(decide(test::build_frame(tcp)), "steered");
  set_role(GAON_HOST);  // the application's side: matched on the source
  EXPECT_EQ(decide(udp("x", 11211, false)), "steered");
  EXPECT_EQ(decide(udp("x", 11211, false, true)), "steered");
  EXPECT_EQ(decide(udp("x", 11211, true)), "forwarded");
  // An interface the program was not given: the stack's.
  x_->remove_port(1);
  EXPECT_EQ(decide(udp("x")), "not_ours");
}

// The port array is probed from each interface's home: lo (ifindex 1) found past another
// interface with the same home, and still found once that one has gone.
TEST_F(SteerProgTest, InterfacesWithTheSameHomeInThePortArrayAreAllFound) {
  lease(0, 0);
  x_->remove_port(1);
  const uint32_t same = 1 + GAON_MAX_PORTS, other = 2;  // no frame arrives on these
  ASSERT_TRUE(x_->set_port(same, GAON_HOST, 0));
  ASSERT_TRUE(x_->set_port(other, GAON_HOST, 0));
  EXPECT_EQ(decide(udp("x")), "not_ours");
  ASSERT_TRUE(x_->set_port(1, GAON_WIRE, 1));  // past `same` and `other`
  EXPECT_EQ(decide(udp("x")), "steered");
  x_->remove_port(same);  // lo moves back toward its home
  EXPECT_EQ(decide(udp("x")), "steered");
  x_->remove_port(other);
  EXPECT_EQ(decide(udp("x")), "steered");
  ASSERT_TRUE(x_->set_port(1, GAON_HOST, 0));  // in place
  EXPECT_EQ(decide(udp("x", 11211, false)), "steered");
  x_->remove_port(1);
  EXPECT_EQ(decide(udp("x")), "not_ours");
  for (uint32_t i = 0; i < GAON_MAX_PORTS; ++i) ASSERT_TRUE(x_->set_port(100 + i, GAON_HOST, 0));
  EXPECT_FALSE(x_->set_port(1, GAON_WIRE, 1)) << "the array is full";
  EXPECT_EQ(decide(udp("x")), "not_ours");
}

// gaond stalled: once its lease is older than its bound, every frame of an attached flow
// is forwarded in the kernel (either side), until gaond renews it.
TEST_F(SteerProgTest, AttachedFlowsGoAroundAGaondWhoseLeaseExpired) {
  constexpr uint64_t kMs = 1'000'000;
  test::FrameSpec tcp;
  tcp.proto = 6;
  tcp.dport = 11211;
  tcp.payload = test::text("set a 0 0 1\r\nx\r\n");
  const std::vector<std::pair<std::string, Bytes>> attached = {
      {"a GET", udp(test::mc_dgram("get a\r\n", 7))},
      {"a write", udp(test::mc_dgram("set a 0 0 1\r\nx\r\n", 7))},
      {"TCP", test::build_frame(tcp)},
      {"IPv6", udp("x", 11211, true, true)},
  };
  lease(1 * kMs, 50 * kMs);  // fresh
  for (const auto& [what, frame] : attached) EXPECT_EQ(decide(frame), "steered") << what;
  // gaond has not polled for 150 ms. (The programs' clock is the coarse one, behind gaond's
  // by a tick or more: they see a lapse that much later, never earlier; see xdp_abi.h.)
  lease(150 * kMs, 50 * kMs);
  for (const auto& [what, frame] : attached) EXPECT_EQ(decide(frame), "lease_expired") << what;
  lease(45 * kMs, 50 * kMs);  // not yet
  for (const auto& [what, frame] : attached) EXPECT_EQ(decide(frame), "steered") << what;
  lease(150 * kMs, 50 * kMs);
  for (const auto& [what, frame] : attached) EXPECT_EQ(decide(frame), "lease_expired") << what;
  set_role(GAON_HOST);
  EXPECT_EQ(decide(udp(test::mc_dgram("STORED\r\n", 7), 11211, false)), "lease_expired");
  set_role(GAON_WIRE);
  tcp.dport = 11213;
  EXPECT_EQ(decide(test::build_frame(tcp)), "forwarded") << "not attached";
  lease(0, 50 * kMs);  // renewed
  for (const auto& [what, frame] : attached) EXPECT_EQ(decide(frame), "steered") << what;
  lease(10'000 * kMs, 0);  // no lease: only the XSKMAP decides
  for (const auto& [what, frame] : attached) EXPECT_EQ(decide(frame), "steered") << what;
}

// A flow whose instance has a fast path goes to it; when its program cannot be had, to
// gaond, and the instance says why.
TEST_F(SteerProgTest, AFastPathThatCannotBeLoadedLeavesTheFlowToGaond) {
  lease(0, 0);
  const unsigned char junk[] = {1, 2, 3, 4};
  FastPathSpec fp{GAON_FP_KVCACHE, "gaon_fp_kvcache", junk, 4096};
  ASSERT_TRUE(x_->add_flow(*FlowKey::parse("udp:10.0.0.2:9000"), 5, fp));
  EXPECT_EQ(x_->fast_path(5), nullptr);
  const nlohmann::json s = x_->fast_path_stats(5);
  EXPECT_EQ(s["active"], false);
  EXPECT_NE(s["why"].get<std::string>().find("gaon_fp_kvcache"), std::string::npos) << s;
  EXPECT_EQ(decide(udp("x", 9000)), "steered");
  EXPECT_EQ(x_->fast_path_stats(1), nullptr) << "an instance without a fast path";
}

// The rule, written again from its description: an Ethernet frame holding IPv4 (header
// of 20..60 bytes, not a fragment) or IPv6 (no extension header) whose UDP/TCP destination
// (wire side) is an attached local address and port is steered; everything else forwarded.
std::string model(const Bytes& f) {
  if (f.size() < 14) return "forwarded";
  const uint16_t type = uint16_t(f[12] << 8 | f[13]);
  size_t l4;
  uint8_t proto;
  std::string dst;
  bool v6 = false;
  if (type == 0x0800) {
    if (f.size() < 34 || (f[14] & 0xf) < 5) return "forwarded";
    proto = f[23];
    if ((f[20] & 0x3f) || f[21]) return "forwarded";
    l4 = 14 + size_t(f[14] & 0xf) * 4;
    dst.assign(f.begin() + 30, f.begin() + 34);
  } else if (type == 0x86dd) {
    if (f.size() < 54) return "forwarded";
    proto = f[20];
    l4 = 54;
    v6 = true;
    dst.assign(f.begin() + 38, f.begin() + 54);
  } else {
    return "forwarded";
  }
  if ((proto != 17 && proto != 6) || f.size() < l4 + 4) return "forwarded";
  const uint16_t port = uint16_t(f[l4 + 2] << 8 | f[l4 + 3]);
  static const std::string a4("\x0a\x00\x00\x02", 4);
  static const std::string a6("\xfd\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x02", 16);
  const bool mine = v6 ? dst == a6 && port == 11211 && proto == 17
                       : (dst == a4 && port == 11211) || (port == 7 && proto == 17);
  return mine ? "steered" : "forwarded";
}

TEST_F(SteerProgTest, MutatedFramesAreDecidedAsTheModelSays) {
  lease(0, 0);
  std::mt19937 rng(12345);
  size_t steered = 0;
  for (int i = 0; i < 4000; ++i) {
    const bool v6 = rng() % 3 == 0;
    const uint16_t port = rng() % 3 == 0 ? 7 : rng() % 4 == 0 ? 11212 : 11211;
    Bytes f = udp(test::mc_dgram("get k\r\n", 7), port, true, v6);
    if (rng() % 4 == 0) {
      test::FrameSpec tcp;
      tcp.proto = 6;
      tcp.dport = port;
      if (v6) tcp.ip_version = 6, tcp.src_ip = "fd00::1", tcp.dst_ip = "fd00::2";
      f = test::build_frame(tcp);
    }
    switch (rng() % 6) {
      case 0:  // a header byte changed
        f[12 + rng() % 44] = uint8_t(rng());
        break;
      case 1:                                    // cut short
        f.resize(14 + rng() % (f.size() - 14));  // (shorter is not an Ethernet frame)
        break;
      default:
        break;
    }
    const std::string want = model(f);
    ASSERT_EQ(decide(f), want) << "frame " << i;
    steered += want == "steered";
  }
  EXPECT_GT(steered, 1000u);  // the rule was exercised both ways
}

}  // namespace
}  // namespace gaon
