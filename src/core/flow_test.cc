// Flow keys (parse/print) and the flow table: add/lookup/remove, errors, wildcard vs exact
// precedence, mirrored ingress/egress lookups, IPv6, per-instance removal, and a random
// churn test against a std::map model that exercises backward-shift deletion.
#include "gaon/flow.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "frames.h"
#include "gaon/net.h"
#include "gaon/parse.h"
#include "gaon/pool.h"

namespace gaon {
namespace {

using test::FrameSpec;

constexpr uint8_t kUdp = net::kProtoUdp;
constexpr uint8_t kTcp = net::kProtoTcp;

FlowKey key(std::string_view text) {
  auto r = FlowKey::parse(text);
  EXPECT_TRUE(r) << text << ": " << (r ? "" : r.error());
  return r ? *r : FlowKey{};
}

bool is_v6(const std::string& ip) { return ip.find(':') != std::string::npos; }

std::array<uint8_t, 16> ip_bytes(const std::string& ip) {
  std::array<uint8_t, 16> b{};
  EXPECT_EQ(inet_pton(is_v6(ip) ? AF_INET6 : AF_INET, ip.c_str(), b.data()), 1) << ip;
  return b;
}

struct Endpoint {
  std::string ip;
  uint16_t port;
};

std::string text_of(const Endpoint& e) {
  return (is_v6(e.ip) ? "[" + e.ip + "]" : e.ip) + ":" + std::to_string(e.port);
}
// "udp:LOCAL" or "udp:LOCAL,REMOTE"
std::string flow_text(uint8_t proto, const Endpoint& local, const Endpoint* remote = nullptr) {
  std::string s = std::string(proto == kTcp ? "tcp:" : "udp:") + text_of(local);
  if (remote != nullptr) s += "," + text_of(*remote);
  return s;
}

// A parsed packet from `src` to `dst`, marked with direction `dir`.
Packet* flow_packet(BufferPool& pool, uint8_t proto, const Endpoint& src, const Endpoint& dst,
                    Direction dir = Direction::ingress) {
  FrameSpec s;
  s.ip_version = is_v6(src.ip) ? 6 : 4;
  s.src_ip = src.ip;
  s.dst_ip = dst.ip;
  s.sport = src.port;
  s.dport = dst.port;
  s.proto = proto;
  s.payload = test::text("ping");
  Packet* p = test::make_packet(pool, test::build_frame(s));
  if (p == nullptr || parse(*p) != ParseResult::ok) {
    ADD_FAILURE() << "cannot make a packet " << text_of(src) << " -> " << text_of(dst);
    return nullptr;
  }
  p->dir = dir;
  return p;
}

uint32_t instance_of(const FlowEntry* e) { return e == nullptr ? kNoInstance : e->instance; }

std::unique_ptr<FlowTable> table(uint32_t capacity) {
  auto t = FlowTable::create(capacity);
  EXPECT_TRUE(t) << t.error();
  return t ? std::move(*t) : nullptr;
}

std::unique_ptr<BufferPool> pool(uint32_t frames) {
  auto p = BufferPool::create(frames);
  EXPECT_TRUE(p) << p.error();
  return p ? std::move(*p) : nullptr;
}

// --- FlowKey::parse / to_string ---------------------------------------------------------

struct KeyCase {
  std::string text;
  bool ok;
  std::string want;  // ok: to_string(); error: a part of the message
  uint8_t proto = 0;
  uint8_t family = 0;
  std::string local_ip;
  uint16_t local_port = 0;
  std::string remote_ip;  // empty: wildcard
  uint16_t remote_port = 0;
};

const std::vector<KeyCase>& key_cases() {
  static const std::vector<KeyCase> c = {
      {"udp:10.0.0.1:11211", true, "udp:10.0.0.1:11211", kUdp, 4, "10.0.0.1", 11211},
      {"tcp:[fd00::1]:80", true, "tcp:[fd00::1]:80", kTcp, 6, "fd00::1", 80},
      {"udp:10.0.0.1:53,10.0.0.9:4000", true, "udp:10.0.0.1:53,10.0.0.9:4000", kUdp, 4, "10.0.0.1",
       53, "10.0.0.9", 4000},
      {"tcp:[fd00::1]:443,[fd00::abcd:2]:50000", true, "tcp:[fd00::1]:443,[fd00::abcd:2]:50000",
       kTcp, 6, "fd00::1", 443, "fd00::abcd:2", 50000},
      {"udp:255.255.255.255:65535", true, "udp:255.255.255.255:65535", kUdp, 4, "255.255.255.255",
       65535},
      {"udp:[FD00:0:0:0::1]:53", true, "udp:[fd00::1]:53", kUdp, 6, "fd00::1", 53},
      {"tcp:[::]:1", true, "tcp:[::]:1", kTcp, 6, "::", 1},
      {"tcp:[::ffff:10.0.0.1]:80", true, "tcp:[::ffff:10.0.0.1]:80", kTcp, 6, "::ffff:10.0.0.1",
       80},
      {"udp:10.0.0.1:053", true, "udp:10.0.0.1:53", kUdp, 4, "10.0.0.1", 53},
      // errors
      {"", false, "expected PROTO:IP:PORT"},
      {"udp", false, "expected PROTO:IP:PORT"},
      {"sctp:10.0.0.1:80", false, "protocol must be udp or tcp, not 'sctp'"},
      {"UDP:10.0.0.1:80", false, "not 'UDP'"},
      {":10.0.0.1:80", false, "protocol must be udp or tcp"},
      {"udp:10.0.0.256:80", false, "bad IP address '10.0.0.256'"},
      {"udp:example.com:80", false, "bad IP address 'example.com'"},
      {"udp::80", false, "bad IP address ''"},
      {"udp:10.0.0.1:8x", false, "bad port '8x'"},
      {"udp:10.0.0.1:65536", false, "bad port '65536'"},
      {"udp:10.0.0.1:99999999999", false, "bad port '99999999999'"},
      {"udp:10.0.0.1:-1", false, "bad port '-1'"},
      {"udp:10.0.0.1:+1", false, "bad port '+1'"},
      {"udp:10.0.0.1: 1", false, "bad port ' 1'"},
      {"udp:10.0.0.1:", false, "bad port ''"},
      {"udp:10.0.0.1", false, "expected IP:PORT"},
      {"udp:[fd00::1]", false, "expected [IPV6]:PORT"},
      {"udp:[fd00::1:80", false, "expected [IPV6]:PORT"},
      {"udp:[fd00::1]80", false, "expected [IPV6]:PORT"},
      {"udp:[fd00::1]:", false, "bad port ''"},
      {"udp:[fd00::1]:65536", false, "bad port '65536'"},
      {"udp:[fd00::zz]:80", false, "bad IP address 'fd00::zz'"},
      {"udp:10.0.0.1:53,10.0.0.9", false, "remote '10.0.0.9': expected IP:PORT"},
      {"udp:10.0.0.1:53,10.0.0.9:65536", false, "remote '10.0.0.9:65536': bad port '65536'"},
      {"udp:10.0.0.1:53,", false, "nothing after the comma"},
      {"udp:fd00::1:80", false, "an IPv6 address goes in brackets"},
      {"udp:[10.0.0.1]:80", false, "bad IP address"},
      {"udp:10.0.0.1:53,10.0.0.x:1", false, "remote '10.0.0.x:1': bad IP address"},
      {"udp:10.0.0.1:53,[fd00::9]:4000", false, "address family differs"},
      {"tcp:[fd00::1]:80,10.0.0.9:4000", false, "address family differs"},
      {"udp:10.0.0.1:65536,10.0.0.9:4000", false, "bad port '65536'"},
  };
  return c;
}

class FlowKeyTable : public ::testing::TestWithParam<size_t> {};

TEST_P(FlowKeyTable, ParsesAndPrints) {
  const KeyCase& c = key_cases()[GetParam()];
  SCOPED_TRACE(c.text);
  auto r = FlowKey::parse(c.text);
  ASSERT_EQ(r.ok(), c.ok) << (r ? r->to_string() : r.error());
  if (!c.ok) {
    EXPECT_NE(r.error().find(c.want), std::string::npos) << "message: " << r.error();
    return;
  }
  const FlowKey& k = *r;
  EXPECT_EQ(k.proto, c.proto);
  EXPECT_EQ(k.family, c.family);
  EXPECT_EQ(k.pad_, 0);
  EXPECT_EQ(k.local_port, c.local_port);
  const auto lip = ip_bytes(c.local_ip);
  EXPECT_EQ(std::memcmp(k.local_ip, lip.data(), 16), 0);
  if (c.remote_ip.empty()) {
    EXPECT_EQ(k.wildcard, 1);
    EXPECT_EQ(k.remote_port, 0);
    EXPECT_EQ(std::memcmp(k.remote_ip, std::array<uint8_t, 16>{}.data(), 16), 0);
  } else {
    EXPECT_EQ(k.wildcard, 0);
    EXPECT_EQ(k.remote_port, c.remote_port);
    const auto rip = ip_bytes(c.remote_ip);
    EXPECT_EQ(std::memcmp(k.remote_ip, rip.data(), 16), 0);
  }
  // Round trip: print, parse back, same key and same text.
  EXPECT_EQ(k.to_string(), c.want);
  auto back = FlowKey::parse(k.to_string());
  ASSERT_TRUE(back) << back.error();
  EXPECT_TRUE(*back == k);
  EXPECT_EQ(back->to_string(), c.want);
}

INSTANTIATE_TEST_SUITE_P(Specs, FlowKeyTable, ::testing::Range<size_t>(0, key_cases().size()),
                         [](const auto& info) {
                           std::string n =
                               std::to_string(info.param) + "_" + key_cases()[info.param].text;
                           for (char& ch : n)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(FlowKey, RandomKeysRoundTripThroughText) {
  std::mt19937 rng(4242);
  auto fill = [&](uint8_t* ip, uint8_t family) {
    for (int i = 0; i < (family == 4 ? 4 : 16); ++i) ip[i] = static_cast<uint8_t>(rng());
    if (family == 6)  // runs of zero groups, for "::" compression
      for (int g = 0; g < 8; ++g)
        if (rng() % 2) ip[2 * g] = ip[2 * g + 1] = 0;
  };
  for (int i = 0; i < 3000; ++i) {
    FlowKey k;
    k.proto = rng() % 2 ? kUdp : kTcp;
    k.family = rng() % 2 ? 4 : 6;
    k.wildcard = rng() % 2;
    k.local_port = static_cast<uint16_t>(rng());
    fill(k.local_ip, k.family);
    if (!k.wildcard) {
      k.remote_port = static_cast<uint16_t>(rng());
      fill(k.remote_ip, k.family);
    }
    const std::string s = k.to_string();
    auto r = FlowKey::parse(s);
    ASSERT_TRUE(r) << s << ": " << r.error();
    ASSERT_TRUE(*r == k) << s << " parses back to " << r->to_string();
    ASSERT_EQ(r->to_string(), s);
  }
}

// --- FlowTable basics -------------------------------------------------------------------

TEST(FlowTable, CreateRejectsBadCapacities) {
  auto zero = FlowTable::create(0);
  ASSERT_FALSE(zero);
  EXPECT_NE(zero.error().find("capacity"), std::string::npos) << zero.error();
  auto huge = FlowTable::create((1u << 24) + 1);
  ASSERT_FALSE(huge);
  EXPECT_NE(huge.error().find("capacity"), std::string::npos) << huge.error();
  auto one = FlowTable::create(1);
  ASSERT_TRUE(one) << one.error();
  EXPECT_EQ((*one)->capacity(), 1u);
  EXPECT_EQ((*one)->size(), 0u);
}

TEST(FlowTable, AddFindLookupRemove) {
  auto t = table(16);
  auto pl = pool(4);
  const FlowKey k = key("udp:10.0.0.2:7");
  auto id = t->add(k, 5);
  ASSERT_TRUE(id) << id.error();
  EXPECT_NE(*id, 0u);
  EXPECT_EQ(t->size(), 1u);

  const FlowEntry* e = t->find(k);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->key == k);
  EXPECT_EQ(e->instance, 5u);
  EXPECT_EQ(e->flow_id, *id);

  Packet* p = flow_packet(*pl, kUdp, {"10.0.0.1", 40000}, {"10.0.0.2", 7});
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(t->lookup(*p), e);

  const auto all = t->entries();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_TRUE(all[0].key == k);
  EXPECT_EQ(all[0].instance, 5u);

  EXPECT_TRUE(t->remove(k));
  EXPECT_EQ(t->size(), 0u);
  EXPECT_EQ(t->find(k), nullptr);
  EXPECT_EQ(t->lookup(*p), nullptr);
  EXPECT_TRUE(t->entries().empty());
  EXPECT_FALSE(t->remove(k));  // already gone

  // And it can be added again.
  ASSERT_TRUE(t->add(k, 6));
  EXPECT_EQ(instance_of(t->lookup(*p)), 6u);
}

TEST(FlowTable, FlowIdsAreDistinctAndNonZero) {
  auto t = table(64);
  std::set<uint32_t> ids;
  for (uint16_t port = 1; port <= 64; ++port) {
    auto id = t->add(key("udp:10.0.0.2:" + std::to_string(port)), 1);
    ASSERT_TRUE(id) << id.error();
    EXPECT_NE(*id, 0u);
    EXPECT_TRUE(ids.insert(*id).second) << "flow id " << *id << " handed out twice";
  }
  for (uint16_t port = 1; port <= 64; port += 2)
    ASSERT_TRUE(t->remove(key("udp:10.0.0.2:" + std::to_string(port))));
  for (uint16_t port = 101; port <= 132; ++port) {
    auto id = t->add(key("udp:10.0.0.2:" + std::to_string(port)), 1);
    ASSERT_TRUE(id) << id.error();
    EXPECT_TRUE(ids.insert(*id).second) << "flow id " << *id << " reused";
  }
}

TEST(FlowTable, DuplicateAddFailsWithAClearError) {
  auto t = table(8);
  const FlowKey wild = key("udp:10.0.0.2:7");
  const FlowKey exact = key("udp:10.0.0.2:7,10.0.0.1:40000");
  auto w = t->add(wild, 1);
  auto x = t->add(exact, 1);
  ASSERT_TRUE(w) << w.error();
  ASSERT_TRUE(x) << x.error();  // exact and wildcard of the same local side are distinct

  for (uint32_t inst : {1u, 2u}) {
    auto again = t->add(wild, inst);
    ASSERT_FALSE(again);
    EXPECT_NE(again.error().find("udp:10.0.0.2:7"), std::string::npos) << again.error();
    EXPECT_NE(again.error().find("already attached"), std::string::npos) << again.error();
    auto again_exact = t->add(exact, inst);
    ASSERT_FALSE(again_exact);
    EXPECT_NE(again_exact.error().find("udp:10.0.0.2:7,10.0.0.1:40000"), std::string::npos)
        << again_exact.error();
    EXPECT_NE(again_exact.error().find("already attached"), std::string::npos)
        << again_exact.error();
  }
  // A wildcard key with stray remote fields is the same wildcard key.
  FlowKey stray = wild;
  stray.remote_port = 99;
  stray.remote_ip[0] = 10;
  EXPECT_FALSE(t->add(stray, 3));

  EXPECT_EQ(t->size(), 2u);
  ASSERT_NE(t->find(wild), nullptr);
  EXPECT_EQ(t->find(wild)->instance, 1u);
  EXPECT_EQ(t->find(wild)->flow_id, *w);
  EXPECT_EQ(t->find(exact)->flow_id, *x);
}

TEST(FlowTable, FullTableFailsCleanly) {
  for (uint32_t cap : {1u, 4u, 5u, 16u}) {
    SCOPED_TRACE(cap);
    auto t = table(cap);
    auto pl = pool(4);
    auto k = [](uint32_t i) { return key("tcp:10.9.0.1:" + std::to_string(1000 + i)); };
    for (uint32_t i = 0; i < cap; ++i) ASSERT_TRUE(t->add(k(i), 1 + i % 3));
    EXPECT_EQ(t->size(), cap);

    auto over = t->add(k(cap), 9);
    ASSERT_FALSE(over);
    EXPECT_NE(over.error().find("full"), std::string::npos) << over.error();
    auto over_exact = t->add(key("tcp:10.9.0.1:1000,10.9.0.2:5"), 9);
    ASSERT_FALSE(over_exact);
    EXPECT_NE(over_exact.error().find("full"), std::string::npos) << over_exact.error();
    // Nothing changed.
    EXPECT_EQ(t->size(), cap);
    EXPECT_EQ(t->find(k(cap)), nullptr);
    for (uint32_t i = 0; i < cap; ++i) EXPECT_EQ(instance_of(t->find(k(i))), 1 + i % 3);
    Packet* p = flow_packet(*pl, kTcp, {"10.9.0.2", 5}, {"10.9.0.1", 1000});
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(instance_of(t->lookup(*p)), 1u);

    // Room again after a remove.
    ASSERT_TRUE(t->remove(k(0)));
    ASSERT_TRUE(t->add(k(cap), 9));
    EXPECT_EQ(instance_of(t->find(k(cap))), 9u);
    EXPECT_EQ(t->size(), cap);
  }
}

TEST(FlowTable, AddRejectsMalformedKeys) {
  auto t = table(4);
  FlowKey k = key("udp:10.0.0.2:7");
  FlowKey bad_proto = k;
  bad_proto.proto = 1;
  auto r = t->add(bad_proto, 1);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("protocol"), std::string::npos) << r.error();
  FlowKey bad_family = k;
  bad_family.family = 5;
  r = t->add(bad_family, 1);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().find("family"), std::string::npos) << r.error();
  EXPECT_EQ(t->size(), 0u);
}

TEST(FlowTable, LookupOfAFlowNotInTheTableIsNull) {
  auto pl = pool(8);
  Packet* p = flow_packet(*pl, kUdp, {"10.0.0.1", 40000}, {"10.0.0.2", 7});
  Packet* q = flow_packet(*pl, kUdp, {"fd00::1", 40000}, {"fd00::2", 7});
  ASSERT_NE(p, nullptr);
  ASSERT_NE(q, nullptr);
  auto t = table(16);
  EXPECT_EQ(t->lookup(*p), nullptr);  // empty table
  EXPECT_EQ(t->lookup(*q), nullptr);

  // Wildcard flows near it but not it: other port, other IP, other protocol, other family.
  ASSERT_TRUE(t->add(key("udp:10.0.0.2:8"), 1));
  ASSERT_TRUE(t->add(key("udp:10.0.0.3:7"), 1));
  ASSERT_TRUE(t->add(key("tcp:10.0.0.2:7"), 1));
  ASSERT_TRUE(t->add(key("udp:[::ffff:10.0.0.2]:7"), 1));
  ASSERT_TRUE(t->add(key("udp:[fd00::2]:8"), 1));
  ASSERT_TRUE(t->add(key("udp:10.0.0.1:40000"), 1));  // the packet's source side
  EXPECT_EQ(t->lookup(*p), nullptr);
  EXPECT_EQ(t->lookup(*q), nullptr);

  // Exact flows of the same local side, for other remotes only (no wildcard).
  ASSERT_TRUE(t->add(key("udp:10.0.0.2:7,10.0.0.1:40001"), 2));
  ASSERT_TRUE(t->add(key("udp:10.0.0.2:7,10.0.0.9:40000"), 2));
  ASSERT_TRUE(t->add(key("udp:[fd00::2]:7,[fd00::1]:40001"), 2));
  EXPECT_EQ(t->lookup(*p), nullptr);
  EXPECT_EQ(t->lookup(*q), nullptr);
}

// --- precedence ---------------------------------------------------------------------------

TEST(FlowTable, ExactEntryWinsOverWildcardAndOtherRemotesFallToTheWildcard) {
  const std::vector<std::pair<std::string, uint32_t>> flows = {
      {"udp:10.0.0.2:7", 1},
      {"udp:10.0.0.2:7,10.0.0.1:40000", 2},
      {"udp:10.0.0.2:7,10.0.0.1:40001", 3},
  };
  struct Probe {
    uint8_t proto;
    Endpoint src, dst;
    uint32_t want, want_no_exact2, want_no_wildcard;
  };
  const std::vector<Probe> probes = {
      {kUdp, {"10.0.0.1", 40000}, {"10.0.0.2", 7}, 2, 1, 0},
      {kUdp, {"10.0.0.1", 40001}, {"10.0.0.2", 7}, 3, 3, 3},
      {kUdp, {"10.0.0.1", 40002}, {"10.0.0.2", 7}, 1, 1, 0},
      {kUdp, {"10.0.0.3", 40000}, {"10.0.0.2", 7}, 1, 1, 0},
      {kUdp, {"10.0.0.1", 40000}, {"10.0.0.2", 8}, 0, 0, 0},
      {kUdp, {"10.0.0.1", 40000}, {"10.0.0.4", 7}, 0, 0, 0},
      {kTcp, {"10.0.0.1", 40000}, {"10.0.0.2", 7}, 0, 0, 0},
  };
  auto pl = pool(static_cast<uint32_t>(probes.size()));
  std::vector<Packet*> pkts;
  for (const Probe& pr : probes) {
    pkts.push_back(flow_packet(*pl, pr.proto, pr.src, pr.dst));
    ASSERT_NE(pkts.back(), nullptr);
  }
  std::vector<size_t> order = {0, 1, 2};
  do {  // every add order
    std::string trace = "add order:";
    for (size_t i : order) trace += " " + flows[i].first;
    SCOPED_TRACE(trace);
    auto t = table(8);
    for (size_t i : order) ASSERT_TRUE(t->add(key(flows[i].first), flows[i].second));
    for (size_t i = 0; i < probes.size(); ++i)
      EXPECT_EQ(instance_of(t->lookup(*pkts[i])), probes[i].want) << "probe " << i;

    ASSERT_TRUE(t->remove(key(flows[1].first)));  // the exact entry for :40000
    for (size_t i = 0; i < probes.size(); ++i)
      EXPECT_EQ(instance_of(t->lookup(*pkts[i])), probes[i].want_no_exact2) << "probe " << i;

    ASSERT_TRUE(t->remove(key(flows[0].first)));  // the wildcard
    for (size_t i = 0; i < probes.size(); ++i)
      EXPECT_EQ(instance_of(t->lookup(*pkts[i])), probes[i].want_no_wildcard) << "probe " << i;

    ASSERT_TRUE(t->remove(key(flows[2].first)));
    for (Packet* p : pkts) EXPECT_EQ(t->lookup(*p), nullptr);
  } while (std::next_permutation(order.begin(), order.end()));
}

// --- both directions ----------------------------------------------------------------------

struct MirrorCase {
  std::string description;
  uint8_t proto;
  Endpoint local, remote;
  bool exact;
};

TEST(FlowTable, IngressAndEgressOfMirroredPacketsFindTheSameEntry) {
  const std::vector<MirrorCase> cases = {
      {"udp/ipv4 wildcard", kUdp, {"10.0.0.2", 11211}, {"10.0.0.1", 40000}, false},
      {"udp/ipv4 exact", kUdp, {"10.0.0.2", 11211}, {"10.0.0.1", 40000}, true},
      {"tcp/ipv4 wildcard", kTcp, {"192.168.1.1", 80}, {"172.16.0.9", 51000}, false},
      {"tcp/ipv4 exact", kTcp, {"192.168.1.1", 80}, {"172.16.0.9", 51000}, true},
      {"udp/ipv6 wildcard", kUdp, {"fd00::2", 53}, {"fd00:1::99", 5353}, false},
      {"udp/ipv6 exact", kUdp, {"fd00::2", 53}, {"fd00:1::99", 5353}, true},
      {"tcp/ipv6 wildcard", kTcp, {"2001:db8::1", 443}, {"2001:db8:ffff::2", 60000}, false},
      {"tcp/ipv6 exact", kTcp, {"2001:db8::1", 443}, {"2001:db8:ffff::2", 60000}, true},
      {"udp/ipv4 same port both sides", kUdp, {"10.0.0.2", 4789}, {"10.0.0.1", 4789}, true},
  };
  for (const MirrorCase& c : cases) {
    SCOPED_TRACE(c.description);
    auto pl = pool(8);
    auto t = table(16);
    // Neighbours that must not be confused with the flow.
    ASSERT_TRUE(t->add(key(flow_text(c.proto, {c.local.ip, uint16_t(c.local.port + 1)})), 7));
    ASSERT_TRUE(t->add(key(flow_text(c.proto == kUdp ? kTcp : kUdp, c.local)), 8));
    const FlowKey k = key(flow_text(c.proto, c.local, c.exact ? &c.remote : nullptr));
    ASSERT_TRUE(t->add(k, 3));

    Packet* in = flow_packet(*pl, c.proto, c.remote, c.local, Direction::ingress);
    Packet* out = flow_packet(*pl, c.proto, c.local, c.remote, Direction::egress);
    ASSERT_NE(in, nullptr);
    ASSERT_NE(out, nullptr);
    EXPECT_TRUE(flow_key_exact(*in) == flow_key_exact(*out));
    const FlowEntry* e = t->lookup(*in);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->instance, 3u);
    EXPECT_TRUE(e->key == k);
    EXPECT_EQ(t->lookup(*out), e);

    // The wrong direction makes the other end the local side: no such flow.
    Packet* in_as_egress = flow_packet(*pl, c.proto, c.remote, c.local, Direction::egress);
    Packet* out_as_ingress = flow_packet(*pl, c.proto, c.local, c.remote, Direction::ingress);
    ASSERT_NE(in_as_egress, nullptr);
    ASSERT_NE(out_as_ingress, nullptr);
    EXPECT_EQ(t->lookup(*in_as_egress), nullptr);
    EXPECT_EQ(t->lookup(*out_as_ingress), nullptr);
  }
}

TEST(FlowTable, IPv6FlowsAreKeptApartFromIPv4) {
  auto t = table(16);
  auto pl = pool(8);
  ASSERT_TRUE(t->add(key("udp:[fd00::2]:7"), 1));
  ASSERT_TRUE(t->add(key("udp:10.0.0.2:7"), 2));
  ASSERT_TRUE(t->add(key("udp:[::ffff:10.0.0.2]:7"), 3));  // IPv4-mapped is a different key
  ASSERT_TRUE(t->add(key("tcp:[fd00::2]:7"), 4));
  ASSERT_TRUE(t->add(key("udp:[fd00::2]:7,[fd00::1]:40000"), 5));
  EXPECT_EQ(t->size(), 5u);

  struct Probe {
    uint8_t proto;
    Endpoint src, dst;
    uint32_t want;
  };
  const std::vector<Probe> probes = {
      {kUdp, {"fd00::1", 40001}, {"fd00::2", 7}, 1},
      {kUdp, {"fd00::1", 40000}, {"fd00::2", 7}, 5},
      {kUdp, {"10.0.0.1", 40000}, {"10.0.0.2", 7}, 2},
      {kUdp, {"::ffff:10.0.0.1", 40000}, {"::ffff:10.0.0.2", 7}, 3},
      {kTcp, {"fd00::1", 40000}, {"fd00::2", 7}, 4},
      {kUdp, {"fd00::1", 40000}, {"fd00::3", 7}, 0},
      {kUdp, {"fd00::1", 40000}, {"fd00::2", 8}, 0},
  };
  for (size_t i = 0; i < probes.size(); ++i) {
    Packet* p = flow_packet(*pl, probes[i].proto, probes[i].src, probes[i].dst);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(instance_of(t->lookup(*p)), probes[i].want) << "probe " << i;
    pl->free(p);
  }
  EXPECT_TRUE(t->remove(key("udp:[fd00::2]:7")));
  EXPECT_EQ(instance_of(t->find(key("udp:10.0.0.2:7"))), 2u);
  EXPECT_EQ(instance_of(t->find(key("udp:[::ffff:10.0.0.2]:7"))), 3u);
  EXPECT_EQ(instance_of(t->find(key("udp:[fd00::2]:7,[fd00::1]:40000"))), 5u);
}

// --- remove_instance ----------------------------------------------------------------------

TEST(FlowTable, RemoveInstanceRemovesExactlyThatInstancesFlows) {
  auto t = table(16);
  auto pl = pool(4);
  const std::vector<std::pair<std::string, uint32_t>> flows = {
      {"udp:10.0.0.2:7", 1},   {"tcp:[fd00::2]:80,[fd00::1]:1234", 1},
      {"udp:10.0.0.2:8", 2},   {"udp:10.0.0.2:7,10.0.0.1:40000", 2},
      {"tcp:[fd00::2]:80", 2}, {"udp:[fd00::2]:53", 2},
      {"tcp:10.0.0.2:22", 3},
  };
  std::map<std::string, uint32_t> ids;
  for (const auto& [text, inst] : flows) {
    auto id = t->add(key(text), inst);
    ASSERT_TRUE(id) << id.error();
    ids[text] = *id;
  }
  Packet* p = flow_packet(*pl, kUdp, {"10.0.0.1", 40000}, {"10.0.0.2", 7});
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(instance_of(t->lookup(*p)), 2u);

  EXPECT_EQ(t->remove_instance(2), 4u);
  EXPECT_EQ(t->size(), 3u);
  for (const auto& [text, inst] : flows) {
    const FlowEntry* e = t->find(key(text));
    if (inst == 2) {
      EXPECT_EQ(e, nullptr) << text;
    } else {
      ASSERT_NE(e, nullptr) << text;
      EXPECT_EQ(e->instance, inst) << text;
      EXPECT_EQ(e->flow_id, ids[text]) << text;
    }
  }
  EXPECT_EQ(instance_of(t->lookup(*p)), 1u);  // now falls to instance 1's wildcard
  EXPECT_EQ(t->remove_instance(2), 0u);
  EXPECT_EQ(t->remove_instance(42), 0u);
  EXPECT_EQ(t->remove_instance(kNoInstance), 0u);
  EXPECT_EQ(t->remove_instance(1), 2u);
  EXPECT_EQ(t->remove_instance(3), 1u);
  EXPECT_EQ(t->size(), 0u);
  EXPECT_EQ(t->lookup(*p), nullptr);
  for (const auto& [text, inst] : flows) ASSERT_TRUE(t->add(key(text), inst + 10));
  EXPECT_EQ(instance_of(t->lookup(*p)), 12u);
}

TEST(FlowTable, RemoveInstanceInAFullSmallTable) {
  // Removing while the probe chains shift under it: every other flow goes.
  for (uint32_t cap : {2u, 7u, 8u, 64u}) {
    SCOPED_TRACE(cap);
    auto t = table(cap);
    auto k = [](uint32_t i) {
      return key("udp:10.3.0." + std::to_string(1 + i % 200) + ":" + std::to_string(2000 + i));
    };
    for (uint32_t i = 0; i < cap; ++i) ASSERT_TRUE(t->add(k(i), 1 + i % 2));
    EXPECT_EQ(t->remove_instance(1), (cap + 1) / 2);
    EXPECT_EQ(t->size(), cap / 2);
    for (uint32_t i = 0; i < cap; ++i)
      EXPECT_EQ(instance_of(t->find(k(i))), i % 2 ? 2u : kNoInstance) << i;
  }
}

// --- churn against a model ------------------------------------------------------------------

using Raw = std::array<uint8_t, sizeof(FlowKey)>;
Raw raw(const FlowKey& k) {
  Raw r;
  std::memcpy(r.data(), &k, sizeof(k));
  return r;
}

class FlowChurn : public ::testing::TestWithParam<uint32_t> {};

TEST_P(FlowChurn, AgreesWithAMapAfterEveryOperation) {
  const uint32_t cap = GetParam();
  auto t = table(cap);
  ASSERT_NE(t, nullptr);

  // The universe: 30 distinct local sides (udp/tcp, IPv4/IPv6, some sharing an IP or a
  // port), each with its wildcard key and exact keys for 4 remotes: 150 keys, more than
  // twice the largest capacity tested, so the table fills up.
  struct Local {
    uint8_t proto;
    Endpoint ep;
  };
  std::vector<Local> locals;
  for (int i = 0; i < 30; ++i) {
    const bool six = i % 3 == 0;
    const std::string n = std::to_string(1 + i % 5);
    locals.push_back({i % 2 ? kTcp : kUdp,
                      {six ? "fd00::" + n : "10.1.0." + n, static_cast<uint16_t>(1000 + i % 7)}});
  }
  const std::vector<Endpoint> remotes4 = {
      {"192.168.0.1", 50000}, {"192.168.0.2", 50000}, {"192.168.0.1", 50001}, {"10.1.0.1", 1000}};
  const std::vector<Endpoint> remotes6 = {
      {"fd01::1", 50000}, {"fd01::2", 50000}, {"fd01::1", 50001}, {"fd00::1", 1000}};

  std::vector<FlowKey> keys;
  struct Probe {
    Packet* in;
    Packet* out;
    size_t exact, wildcard;  // indexes into keys
  };
  std::vector<Probe> probes;
  auto pl = pool(256);
  for (const Local& l : locals) {
    const size_t wi = keys.size();
    keys.push_back(key(flow_text(l.proto, l.ep)));
    for (const Endpoint& r : is_v6(l.ep.ip) ? remotes6 : remotes4) {
      const size_t xi = keys.size();
      keys.push_back(key(flow_text(l.proto, l.ep, &r)));
      Packet* in = flow_packet(*pl, l.proto, r, l.ep, Direction::ingress);
      Packet* out = flow_packet(*pl, l.proto, l.ep, r, Direction::egress);
      ASSERT_NE(in, nullptr);
      ASSERT_NE(out, nullptr);
      probes.push_back({in, out, xi, wi});
    }
  }
  ASSERT_GE(keys.size(), 2u * cap);
  std::set<Raw> distinct;
  for (const FlowKey& k : keys) distinct.insert(raw(k));
  ASSERT_EQ(distinct.size(), keys.size());

  struct Model {
    FlowKey key;
    uint32_t instance;
    uint32_t flow_id;
  };
  std::map<Raw, Model> model;
  std::set<uint32_t> ids_seen;

  auto check = [&]() -> std::string {
    if (t->size() != model.size())
      return fmt::format("size {} but the model has {}", t->size(), model.size());
    for (const FlowKey& k : keys) {
      const FlowEntry* e = t->find(k);
      auto m = model.find(raw(k));
      if (m == model.end()) {
        if (e != nullptr) return "removed key " + k.to_string() + " is still found";
      } else if (e == nullptr) {
        return "key " + k.to_string() + " is not found";
      } else if (!(e->key == k) || e->instance != m->second.instance ||
                 e->flow_id != m->second.flow_id) {
        return fmt::format("key {} finds {} instance {} flow {}, want instance {} flow {}",
                           k.to_string(), e->key.to_string(), e->instance, e->flow_id,
                           m->second.instance, m->second.flow_id);
      }
    }
    for (const Probe& pr : probes) {
      const FlowKey* want = nullptr;
      if (model.count(raw(keys[pr.exact])))
        want = &keys[pr.exact];
      else if (model.count(raw(keys[pr.wildcard])))
        want = &keys[pr.wildcard];
      const FlowEntry* in = t->lookup(*pr.in);
      const FlowEntry* out = t->lookup(*pr.out);
      if (in != out) return "ingress and egress lookups differ for " + keys[pr.exact].to_string();
      if (want == nullptr && in != nullptr)
        return "lookup for " + keys[pr.exact].to_string() + " finds " + in->key.to_string();
      if (want != nullptr && (in == nullptr || !(in->key == *want)))
        return "lookup for " + keys[pr.exact].to_string() + " finds " +
               (in ? in->key.to_string() : "nothing") + ", want " + want->to_string();
    }
    return "";
  };

  std::mt19937 rng(0x6a0 + cap);
  size_t adds = 0, full = 0, dups = 0, removes = 0, misses = 0, emptied = 0;
  for (int op = 0; op < 6000; ++op) {
    // Phases of 500 operations that mostly grow (the table fills up) or mostly shrink (it
    // empties), with an occasional remove_instance.
    const bool growing = (op / 500) % 2 == 0;
    const uint32_t r = rng() % 100;
    auto held = [&] { return std::next(model.begin(), rng() % model.size())->second.key; };
    std::string what;
    if (r < (growing ? 78u : 20u)) {
      // Now and then a key that is held: a duplicate.
      const FlowKey k = !model.empty() && rng() % 10 == 0 ? held() : keys[rng() % keys.size()];
      const uint32_t inst = 1 + rng() % 4;
      what = fmt::format("add {} -> {}", k.to_string(), inst);
      auto res = t->add(k, inst);
      if (model.count(raw(k))) {
        ASSERT_FALSE(res) << what;
        ASSERT_NE(res.error().find("already attached"), std::string::npos) << res.error();
        ++dups;
      } else if (model.size() >= cap) {
        ASSERT_FALSE(res) << what;
        ASSERT_NE(res.error().find("full"), std::string::npos) << res.error();
        ++full;
      } else {
        ASSERT_TRUE(res) << what << ": " << res.error();
        ASSERT_TRUE(ids_seen.insert(*res).second) << what << ": flow id reused";
        model[raw(k)] = {k, inst, *res};
        ++adds;
      }
    } else if (r < 98) {
      // Half the time a key that is held, so removes succeed even in a tiny table.
      const FlowKey k = !model.empty() && rng() % 2 ? held() : keys[rng() % keys.size()];
      what = "remove " + k.to_string();
      const bool present = model.erase(raw(k)) != 0;
      ASSERT_EQ(t->remove(k), present) << what;
      ++(present ? removes : misses);
    } else {
      const uint32_t inst = 1 + rng() % 4;
      what = fmt::format("remove_instance {}", inst);
      size_t n = 0;
      for (auto it = model.begin(); it != model.end();) {
        if (it->second.instance == inst) {
          it = model.erase(it);
          ++n;
        } else {
          ++it;
        }
      }
      ASSERT_EQ(t->remove_instance(inst), n) << what;
    }
    if (model.empty()) ++emptied;
    const std::string err = check();
    ASSERT_EQ(err, "") << "after operation " << op << " (" << what << ")";
    if (op % 64 == 0) {
      std::map<Raw, Model> listed;
      for (const FlowEntry& e : t->entries()) listed[raw(e.key)] = {e.key, e.instance, e.flow_id};
      ASSERT_EQ(listed.size(), model.size());
      for (const auto& [k, m] : model) {
        ASSERT_TRUE(listed.count(k));
        ASSERT_EQ(listed[k].instance, m.instance);
        ASSERT_EQ(listed[k].flow_id, m.flow_id);
      }
    }
  }
  // The run went through every kind of outcome, and filled and emptied the table.
  EXPECT_GT(emptied, 10u);
  EXPECT_GT(adds, 100u);
  EXPECT_GT(removes, 100u);
  EXPECT_GT(misses, 10u);
  EXPECT_GT(dups, 10u);
  EXPECT_GT(full, 10u);
}

INSTANTIATE_TEST_SUITE_P(Capacities, FlowChurn, ::testing::Values(1u, 2u, 5u, 8u, 16u, 33u, 64u),
                         [](const auto& info) { return "cap" + std::to_string(info.param); });

// --- find normalises like add and remove --------------------------------------------------

// A natural way to make a wildcard key from a packet: take its exact key and set the
// wildcard flag. add() and remove() ignore the (now meaningless) remote side of such a key;
// find() must too, or a flow that add() accepted cannot be found by the same key.
TEST(FlowTable, FindIgnoresTheRemoteSideOfAWildcardKeyLikeAddAndRemove) {
  auto t = table(8);
  auto pl = pool(2);
  Packet* p = flow_packet(*pl, kUdp, {"10.0.0.1", 40000}, {"10.0.0.2", 7});
  ASSERT_NE(p, nullptr);
  FlowKey k = flow_key_exact(*p);
  k.wildcard = 1;  // remote_ip/remote_port still hold 10.0.0.1:40000
  ASSERT_TRUE(t->add(k, 4));
  EXPECT_EQ(instance_of(t->find(key("udp:10.0.0.2:7"))), 4u);  // stored normalised
  EXPECT_EQ(instance_of(t->lookup(*p)), 4u);
  EXPECT_EQ(instance_of(t->find(k)), 4u) << "find() does not normalise a wildcard key";
  EXPECT_TRUE(t->remove(k));
  EXPECT_EQ(t->size(), 0u);
}

}  // namespace
}  // namespace gaon
