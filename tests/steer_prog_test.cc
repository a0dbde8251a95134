// The XDP steering program's own decisions, run in the kernel with BPF_PROG_TEST_RUN (root):
// which frames of an attached flow it steers to gaond and which it keeps in the kernel by
// kvcache's hint table (steer_hints.h). Table-driven cases, then a differential test: a
// few thousand mutated frames, each decided by the program and by an independent model of
// the rule written here.
#include <arpa/inet.h>
#include <sys/mman.h>
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
#include "gaon/lease.h"
#include "gaon/steer_hints.h"

extern const unsigned char gaon_steer_bpf_obj[];
extern const unsigned long gaon_steer_bpf_obj_len;

namespace gaon {
namespace {

using test::Bytes;

constexpr uint32_t kTables = 16;  // HINT_TABLES
enum Stat : uint32_t {
  steered,
  forwarded,
  fail_open,
  not_ours,
  kept_gets,
  kept_replies,
  lease_expired,
  n_stats
};

class SteerProgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (loads a BPF program); CI runs as root";
    libbpf_set_print(nullptr);
    bpf_object_open_opts oo{};
    oo.sz = sizeof(oo);
    obj_ = bpf_object__open_mem(gaon_steer_bpf_obj, gaon_steer_bpf_obj_len, &oo);
    ASSERT_NE(obj_, nullptr);
    ASSERT_EQ(bpf_object__load(obj_), 0) << "the verifier refused the program";
    prog_ = bpf_program__fd(bpf_object__find_program_by_name(obj_, "gaon_steer"));
    ports_ = bpf_object__find_map_fd_by_name(obj_, "gaon_ports");
    flows_ = bpf_object__find_map_fd_by_name(obj_, "gaon_flows");
    stats_ = bpf_object__find_map_fd_by_name(obj_, "gaon_stats");
    const int hints = bpf_object__find_map_fd_by_name(obj_, "gaon_hints");
    const int lease = bpf_object__find_map_fd_by_name(obj_, GAON_LEASE_MAP);
    ASSERT_GE(prog_, 0);
    ASSERT_GE(hints, 0);
    ASSERT_GE(lease, 0);
    void* l =
        mmap(nullptr, size_t(sysconf(_SC_PAGESIZE)), PROT_READ | PROT_WRITE, MAP_SHARED, lease, 0);
    ASSERT_NE(l, MAP_FAILED) << strerror(errno);
    lease_ = static_cast<gaon_lease*>(l);
    void* m =
        mmap(nullptr, kTables * SteerHints::kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, hints, 0);
    ASSERT_NE(m, MAP_FAILED) << strerror(errno);
    mem_ = static_cast<uint8_t*>(m);
    table_.emplace(mem_ + 3 * SteerHints::kBytes);  // the flow's table: 3 (map value 4)
    other_.emplace(mem_ + 5 * SteerHints::kBytes);
    set_role(0);
    add_flow(11211, IPPROTO_UDP, 4);
    add_flow(11211, IPPROTO_TCP, 4);
    add_flow(11212, IPPROTO_UDP, 0);  // attached, no hints
  }
  void TearDown() override {
    if (mem_) munmap(mem_, kTables * SteerHints::kBytes);
    if (lease_) munmap(lease_, size_t(sysconf(_SC_PAGESIZE)));
    if (obj_) bpf_object__close(obj_);
  }
  // Frames "arrive" on lo (ifindex 1), as the wire (0) or the host (1).
  void set_role(uint32_t role) {
    const uint32_t lo = 1, v[2] = {role, 1 - role};
    ASSERT_EQ(bpf_map_update_elem(ports_, &lo, v, BPF_ANY), 0);
  }
  void add_flow(uint16_t port, uint8_t proto, uint32_t value) {
    uint8_t k[8] = {};
    inet_pton(AF_INET, "10.0.0.2", k);
    const uint16_t p = htons(port);
    std::memcpy(k + 4, &p, 2);
    k[6] = proto;
    ASSERT_EQ(bpf_map_update_elem(flows_, k, &value, BPF_ANY), 0);
  }
  std::vector<uint64_t> stats() {
    std::vector<uint64_t> out(n_stats);
    std::vector<uint64_t> per(static_cast<size_t>(libbpf_num_possible_cpus()));
    for (uint32_t i = 0; i < n_stats; ++i) {
      EXPECT_EQ(bpf_map_lookup_elem(stats_, &i, per.data()), 0);
      for (uint64_t v : per) out[i] += v;
    }
    return out;
  }
  // What the program did with `frame`: the one counter it moved. Steering with no gaond
  // socket in the XSKMAP counts fail_open: "steered" below.
  std::string decide(const Bytes& frame) {
    const auto before = stats();
    xdp_md ctx{};
    ctx.data_end = uint32_t(frame.size());
    ctx.ingress_ifindex = 1;
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = frame.data(),
                .data_size_in = uint32_t(frame.size()), .ctx_in = &ctx,
                .ctx_size_in = uint32_t(sizeof(ctx)));
    EXPECT_EQ(bpf_prog_test_run_opts(prog_, &o), 0) << strerror(errno);
    const auto after = stats();
    const char* names[n_stats] = {"?",        "forwarded",  "steered",      "not_ours",
                                  "kept_get", "kept_reply", "lease_expired"};
    std::string what;
    for (uint32_t i = 0; i < n_stats; ++i)
      if (after[i] != before[i]) what += names[i];
    return what;
  }
  static Bytes udp(const std::string& payload, uint16_t port = 11211, bool to_server = true,
                   size_t pad_to = 0) {
    test::FrameSpec f;
    f.src_ip = to_server ? "10.0.0.1" : "10.0.0.2";
    f.dst_ip = to_server ? "10.0.0.2" : "10.0.0.1";
    f.sport = to_server ? 40000 : port;
    f.dport = to_server ? port : 40000;
    f.payload = test::text(payload);
    f.pad_to = pad_to;
    return test::build_frame(f);
  }
  static Bytes get(const std::string& key) { return udp(test::mc_dgram("get " + key + "\r\n", 7)); }

  bpf_object* obj_ = nullptr;
  int prog_ = -1, ports_ = -1, flows_ = -1, stats_ = -1;
  // gaond's lease, as gaond renews it: `age_ns` ago, valid for `bound_ns` (0: no lease).
  void lease(uint64_t age_ns, uint64_t bound_ns) {
    lease_->renewed_ns = mono_ns() - age_ns;
    lease_->bound_ns = bound_ns;
  }
  uint8_t* mem_ = nullptr;
  gaon_lease* lease_ = nullptr;
  std::optional<SteerHints> table_, other_;
};

// gaond stalled: once its lease is older than its bound, every frame of an attached flow
// is forwarded in the kernel (hints or not, either side), until gaond renews it.
TEST_F(SteerProgTest, AttachedFlowsGoAroundAGaondWhoseLeaseExpired) {
  constexpr uint64_t kMs = 1'000'000;
  test::FrameSpec tcp;
  tcp.proto = 6;
  tcp.dport = 11211;
  tcp.payload = test::text("set a 0 0 1\r\nx\r\n");
  const std::vector<std::pair<std::string, Bytes>> attached = {
      {"a GET", get("a")},
      {"a write", udp(test::mc_dgram("set a 0 0 1\r\nx\r\n", 7))},
      {"TCP", test::build_frame(tcp)},
      {"a flow without hints", udp(test::mc_dgram("get a\r\n", 7), 11212)},
  };
  table_->add("a");          // cached: its GETs are always steered while the lease holds
  lease(1 * kMs, 50 * kMs);  // fresh
  for (const auto& [what, frame] : attached) EXPECT_EQ(decide(frame), "steered") << what;
  lease(51 * kMs, 50 * kMs);  // gaond has not polled for 51 ms
  for (const auto& [what, frame] : attached) EXPECT_EQ(decide(frame), "lease_expired") << what;
  EXPECT_FALSE(table_->seen("b"));
  EXPECT_EQ(decide(get("b")), "lease_expired");
  EXPECT_FALSE(table_->seen("b")) << "a GET that went around gaond marked its key seen";
  set_role(1);
  EXPECT_EQ(decide(udp(test::mc_dgram("STORED\r\n", 7), 11211, false)), "lease_expired");
  EXPECT_EQ(decide(udp(test::mc_dgram("END\r\n", 7), 11211, false)), "lease_expired");
  set_role(0);
  tcp.dport = 11213;
  EXPECT_EQ(decide(test::build_frame(tcp)), "forwarded") << "not attached";
  lease(0, 50 * kMs);  // renewed
  for (const auto& [what, frame] : attached) EXPECT_EQ(decide(frame), "steered") << what;
  lease(10'000 * kMs, 0);  // no lease: only the XSKMAP decides
  for (const auto& [what, frame] : attached) EXPECT_EQ(decide(frame), "steered") << what;
}

TEST_F(SteerProgTest, AGetForAKeyNotCachedIsSteeredOnceThenKeptUntilForgotten) {
  EXPECT_EQ(decide(get("absent")), "steered");  // first sighting: gaond may learn it
  EXPECT_TRUE(table_->seen("absent"));
  EXPECT_EQ(decide(get("absent")), "kept_get");
  EXPECT_EQ(decide(get("absent")), "kept_get");
  table_->forget("absent");
  EXPECT_EQ(decide(get("absent")), "steered");
  table_->forget_all();
  EXPECT_EQ(decide(get("absent")), "steered");
  EXPECT_FALSE(other_->seen("absent"));  // only the flow's own table is touched
}

TEST_F(SteerProgTest, AGetForACachedKeyIsAlwaysSteered) {
  table_->add("hot");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(decide(get("hot")), "steered");
  EXPECT_FALSE(table_->seen("hot"));
  table_->remove("hot");
  EXPECT_EQ(decide(get("hot")), "steered");
  EXPECT_EQ(decide(get("hot")), "kept_get");
  other_->add("cold");  // another instance's table says nothing about this flow
  decide(get("cold"));
  EXPECT_EQ(decide(get("cold")), "kept_get");
}

TEST_F(SteerProgTest, EverythingButAPlainSingleKeyGetIsSteered) {
  const std::string k250(250, 'k'), k251(251, 'k');
  // each seen once first, so that a GET of the same key would now be kept
  for (const std::string& k : {std::string("a"), std::string("b"), k250, k251}) decide(get(k));
  EXPECT_EQ(decide(get(k250)), "kept_get");  // the longest key memcached allows
  EXPECT_EQ(decide(get("a")), "kept_get");
  const std::vector<std::pair<std::string, Bytes>> steer = {
      {"two keys", get("a b")},
      {"gets", udp(test::mc_dgram("gets a\r\n", 7))},
      {"a write", udp(test::mc_dgram("set a 0 0 1\r\nx\r\n", 7))},
      {"a key over 250 bytes", get(k251)},
      {"no CR", udp(test::mc_dgram("get a\n", 7))},
      {"bytes after the line", udp(test::mc_dgram("get a\r\nX", 7))},
      {"a control byte in the key", udp(test::mc_dgram("get a\tb\r\n", 7))},
      {"an empty key", udp(test::mc_dgram("get \r\n", 7))},
      {"sequence 1", udp(test::mc_dgram("get a\r\n", 7).replace(2, 2, std::string("\0\1", 2)))},
      {"2 datagrams", udp(test::mc_dgram("get a\r\n", 7, 2))},
      {"no frame header", udp("get a\r\n")},
      {"binary GET", udp(test::mc_dgram(test::mc_binreq(0x00, "a"), 7))},
      {"a flow without hints", udp(test::mc_dgram("get a\r\n", 7), 11212)},
  };
  for (const auto& [what, frame] : steer) EXPECT_EQ(decide(frame), "steered") << what;
  test::FrameSpec tcp;
  tcp.proto = 6;
  tcp.dport = 11211;
  tcp.payload = test::text("get a\r\n");
  EXPECT_EQ(decide(test::build_frame(tcp)), "steered") << "TCP";
  tcp.dport = 11213;
  EXPECT_EQ(decide(test::build_frame(tcp)), "forwarded") << "not attached";
  // Ethernet padding after the datagram does not hide the GET (the UDP length bounds it).
  EXPECT_EQ(decide(udp(test::mc_dgram("get a\r\n", 7), 11211, true, 60)), "kept_get");
}

TEST_F(SteerProgTest, OnTheHostSideOnlyABareMissReplyIsKept) {
  set_role(1);
  EXPECT_EQ(decide(udp(test::mc_dgram("END\r\n", 7), 11211, false)), "kept_reply");
  EXPECT_EQ(decide(udp(test::mc_dgram("END\r\n", 7), 11211, false, 60)), "kept_reply");
  for (const std::string& body : {std::string("VALUE a 0 1\r\nx\r\nEND\r\n"),
                                  std::string("END\r\nX"), std::string("STORED\r\n")})
    EXPECT_EQ(decide(udp(test::mc_dgram(body, 7), 11211, false)), "steered") << body;
  EXPECT_EQ(decide(udp(test::mc_dgram("END\r\n", 7, 2), 11211, false)), "steered");
  EXPECT_EQ(decide(udp(test::mc_dgram("END\r\n", 7), 11212, false)), "steered");  // no hints
}

// The rule, written again from its description: a UDP datagram (as long as its UDP length
// says) holding memcached's frame header (sequence 0 of 1) and exactly `get KEY\r\n`, KEY
// 1..250 bytes above ' ' and not DEL, whose slot counts nothing and was seen, is kept.
struct Model {
  bool plain_get = false;
  std::string key;
};
Model model(const Bytes& f) {
  Model m;
  const size_t ip = 14, udp = ip + size_t(f[ip] & 0xf) * 4;
  if (f.size() < udp + 8) return m;
  const size_t ulen = size_t(f[udp + 4]) << 8 | f[udp + 5];
  if (ulen < 16 || udp + ulen > f.size()) return m;
  const std::string p(f.begin() + long(udp + 8), f.begin() + long(udp + ulen));
  if (p[2] || p[3] || p[4] || p[5] != 1) return m;
  const std::string body = p.substr(8);
  if (body.size() < 7 || body.compare(0, 4, "get ") || body.compare(body.size() - 2, 2, "\r\n"))
    return m;
  m.key = body.substr(4, body.size() - 6);
  if (m.key.size() > 250) return m;
  for (unsigned char c : m.key)
    if (c <= ' ' || c == 0x7f) return m;
  m.plain_get = true;
  return m;
}

TEST_F(SteerProgTest, MutatedFramesAreDecidedAsTheModelSays) {
  std::mt19937 rng(12345);
  const std::string alphabet = "ab \r\n\t\x7f\x80g";
  table_->add("hot");
  size_t kept = 0;
  for (int i = 0; i < 4000; ++i) {
    std::string key;
    const size_t klen = rng() % 4 == 0 ? 245 + rng() % 10 : rng() % 6;
    for (size_t j = 0; j < klen; ++j) key += alphabet[rng() % alphabet.size()];
    if (rng() % 3 == 0) key = rng() % 4 == 0 ? "hot" : "k" + std::to_string(rng() % 8);
    Bytes f = get(key);
    const size_t udp = 34;
    switch (rng() % 5) {
      case 0:  // a byte of the datagram changed
        f[udp + 8 + rng() % (f.size() - udp - 8)] = uint8_t(rng());
        break;
      case 1: {  // the UDP length changed
        const uint16_t len = uint16_t(rng() % (f.size() - udp + 8));
        f[udp + 4] = uint8_t(len >> 8);
        f[udp + 5] = uint8_t(len);
        break;
      }
      case 2:  // cut short
        f.resize(udp + 4 + rng() % (f.size() - udp - 4));
        break;
      default:
        break;
    }
    const Model m = model(f);
    const bool cached = m.plain_get && table_->count(m.key) != 0;
    const bool seen = m.plain_get && table_->seen(m.key);
    // Now and then gaond stalls: its lease (50 ms) is 10 ms or 60 ms old.
    const bool expired = rng() % 8 == 0;
    lease((expired ? 60 : 10) * 1'000'000ull, rng() % 2 ? 50'000'000 : 0);
    const bool bypass = expired && lease_->bound_ns != 0;
    const std::string want = bypass                           ? "lease_expired"
                             : m.plain_get && !cached && seen ? "kept_get"
                                                              : "steered";
    ASSERT_EQ(decide(f), want) << "frame " << i << " key '" << key << "'";
    if (m.plain_get && !cached && !bypass) {
      EXPECT_TRUE(table_->seen(m.key));
    }
    kept += want == "kept_get";
    if (rng() % 200 == 0) table_->forget_all();
  }
  EXPECT_GT(kept, 300u);  // the rule was exercised both ways
}

}  // namespace
}  // namespace gaon
