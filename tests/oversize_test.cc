// Datagrams larger than a frame, through gaond in sidecar mode in front of a real
// memcached: memcached serves a UDP request of any size up to 64 KiB in one datagram, so
// gaond must pass them whole, both ways (the reply finds its way back through the same
// NAT entry), count them, and keep kvcache consistent: a large write invalidates its key.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "frames.h"
#include "procs.h"

namespace gaon::test {
namespace {

using namespace std::chrono_literals;

constexpr size_t kFrameHeader = 8;  // memcached's UDP frame header

// An ASCII set of `key` whose datagram (frame header included) is exactly `bytes` long.
std::string ascii_set(const std::string& key, size_t bytes, char fill) {
  const std::string tail = "\r\n";
  for (size_t vlen = bytes; vlen > 0; --vlen) {
    const std::string line = "set " + key + " 0 0 " + std::to_string(vlen) + "\r\n";
    if (kFrameHeader + line.size() + vlen + tail.size() == bytes)
      return line + std::string(vlen, fill) + tail;
  }
  return {};
}

// A binary SET of `key` whose datagram is exactly `bytes` long (flags 0, exptime 0).
std::string binary_set(const std::string& key, size_t bytes, char fill, uint32_t opaque) {
  const size_t vlen = bytes - kFrameHeader - 24 - 8 - key.size();
  return mc_binreq(0x01, key, std::string(8, '\0'), std::string(vlen, fill), opaque);
}

// A binary SET reply carries the item's new cas, which differs from one set to the next:
// compare everything else.
std::string without_cas(std::string d) {
  if (d.size() >= kFrameHeader + 24 && uint8_t(d[kFrameHeader]) == 0x81)
    d.replace(kFrameHeader + 16, 8, 8, '\0');
  return d;
}

// The value in a reply to `get KEY` spread over several datagrams: their bodies (after the
// frame header) in sequence order, joined.
std::string joined(const std::vector<std::string>& datagrams) {
  std::vector<std::string> by_seq(datagrams.size());
  for (const auto& d : datagrams) {
    if (d.size() < kFrameHeader) return {};
    const size_t seq = size_t(uint8_t(d[2])) << 8 | uint8_t(d[3]);
    if (seq >= by_seq.size()) return {};
    by_seq[seq] = d.substr(kFrameHeader);
  }
  std::string all;
  for (const auto& s : by_seq) all += s;
  return all;
}

class Oversize : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    gaond_ = std::string(GAON_BIN_DIR) + "/gaond";
    if (access(gaond_.c_str(), X_OK) != 0) GTEST_SKIP() << "gaond is not built";
    mc_port_ = free_port();
    auto mc = start_memcached(mc_port_);
    if (!mc) GTEST_SKIP() << "/usr/bin/memcached is missing (scripts/setup installs it)";
    mc_ = std::move(*mc);
    gaon_port_ = free_port();
    std::vector<std::string> argv = {gaond_,
                                     "--wire",
                                     "udp:127.0.0.1:" + std::to_string(gaon_port_),
                                     "--host",
                                     "udp:127.0.0.1:" + std::to_string(mc_port_),
                                     "--ikernel",
                                     GetParam(),
                                     "--json-stats",
                                     "--control",
                                     "none"};
    if (std::string(GetParam()) == "kvcache") argv.insert(argv.end(), {"--param", "capacity=16M"});
    gaond_proc_ = Child::start(argv);
    ASSERT_TRUE(wait_udp_ready(gaon_port_)) << gaond_proc_.errors();
  }
  // The stats gaond prints at exit.
  nlohmann::json stop_and_stats() {
    EXPECT_EQ(gaond_proc_.stop(), 0) << gaond_proc_.errors();
    const std::string out = gaond_proc_.output();
    auto j = nlohmann::json::parse(out.substr(std::min(out.find('{'), out.size())), nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << out;
    return j;
  }
  std::string gaond_;
  uint16_t mc_port_ = 0, gaon_port_ = 0;
  Child mc_, gaond_proc_;
};

// Datagrams of 1 400 (fits a frame) to 65 000 bytes: ASCII set, binary SET, and a get of
// the value (which memcached answers in several datagrams): every reply through gaond is
// byte-identical to memcached's own for the same request.
TEST_P(Oversize, LargeDatagramsPassWholeBothWays) {
  McUdp direct(mc_port_), via(gaon_port_);
  uint16_t id = 100;
  size_t large = 0;
  for (size_t bytes : {1400, 1800, 2048, 4096, 9000, 65000}) {
    SCOPED_TRACE(bytes);
    large += bytes > 1750;
    for (bool binary : {false, true}) {
      SCOPED_TRACE(binary ? "binary" : "ascii");
      const std::string kd = "d" + std::to_string(bytes) + (binary ? "b" : "a");
      const std::string kv = "v" + std::to_string(bytes) + (binary ? "b" : "a");
      const auto set_d = binary ? binary_set(kd, bytes, 'x', 7) : ascii_set(kd, bytes, 'x');
      const auto set_v = binary ? binary_set(kv, bytes, 'x', 7) : ascii_set(kv, bytes, 'x');
      ASSERT_EQ(set_d.size() + kFrameHeader, bytes);
      const auto rd = direct.ask(set_d, ++id, 1);
      const auto rv = via.ask(set_v, id, 1);
      ASSERT_EQ(rd.size(), 1u) << "memcached itself did not answer";
      ASSERT_EQ(rv.size(), 1u) << "no reply through gaond";
      EXPECT_EQ(without_cas(rv[0]), without_cas(rd[0]));
      if (!binary) EXPECT_EQ(rv[0].substr(kFrameHeader), "STORED\r\n");
      // The value back, in as many datagrams as memcached needs. Same key through both:
      // identical bytes (the binary reply's cas included).
      const std::string get = binary ? mc_binreq(0x0c, kv, "", "", 9) : "get " + kv + "\r\n";
      const auto gd = direct.ask(get, ++id);
      const auto gv = via.ask(get, id);
      ASSERT_FALSE(gd.empty());
      EXPECT_EQ(gv, gd);
      EXPECT_NE(joined(gv).find(std::string(bytes / 2, 'x')), std::string::npos);
    }
  }
  const nlohmann::json j = stop_and_stats();
  EXPECT_GE(j["oversize"].get<uint64_t>(), 2 * large) << j.dump();
  uint64_t passed = 0, lost = 0;
  for (const char* side : {"wire", "host"})
    for (const auto& m : j[side]["port_stats"]["members"]) {
      passed += m["oversize_passed"].get<uint64_t>();
      lost += m["oversize_lost"].get<uint64_t>();
      EXPECT_EQ(m["truncated"], 0) << j.dump();
    }
  EXPECT_GE(passed, 2 * large) << j.dump();
  EXPECT_EQ(lost, 0u);
  EXPECT_GE(j["instances"][0]["counters"]["oversize_passed"].get<uint64_t>(), 2 * large);
}

// A key cached from a small value, then written with a 4 KiB set through gaond: the next
// get returns the new value, never the cached one. Likewise a binary SET, and a large
// datagram holding a small write after a large one (a second command the head cannot show).
TEST_P(Oversize, ALargeWriteIsNeverHiddenByTheCache) {
  McUdp via(gaon_port_);
  uint16_t id = 1;
  auto learn = [&](const std::string& key) {
    ASSERT_EQ(via.ask("set " + key + " 0 0 3\r\nold\r\n", ++id, 1).at(0).substr(kFrameHeader),
              "STORED\r\n");
    for (int i = 0; i < 3; ++i)  // a miss (learned), then hits
      ASSERT_EQ(via.ask("get " + key + "\r\n", ++id, 1).at(0).substr(kFrameHeader),
                "VALUE " + key + " 0 3\r\nold\r\nEND\r\n");
  };
  learn("k1");
  ASSERT_EQ(via.ask(ascii_set("k1", 4096, 'n'), ++id, 1).at(0).substr(kFrameHeader), "STORED\r\n");
  EXPECT_NE(joined(via.ask("get k1\r\n", ++id)).find("nnnnnnnn"), std::string::npos);

  learn("k2");
  ASSERT_EQ(via.ask(binary_set("k2", 4096, 'n', 5), ++id, 1).size(), 1u);
  EXPECT_NE(joined(via.ask("get k2\r\n", ++id)).find("nnnnnnnn"), std::string::npos);

  learn("k3");
  const std::string two = ascii_set("pad", 3000, 'p') + "set k3 0 0 3\r\nnew\r\n";
  std::string replies;
  for (const auto& d : via.ask(two, ++id)) replies += d.substr(kFrameHeader);
  EXPECT_EQ(replies, "STORED\r\nSTORED\r\n");
  EXPECT_EQ(via.ask("get k3\r\n", ++id, 1).at(0).substr(kFrameHeader),
            "VALUE k3 0 3\r\nnew\r\nEND\r\n");

  const nlohmann::json j = stop_and_stats();
  if (std::string(GetParam()) == "kvcache") {
    const auto& st = j["instances"][0]["state"];
    EXPECT_GE(st["hits"].get<uint64_t>(), 6u) << st.dump();  // the cache did serve
    EXPECT_EQ(st["oversize_requests"], 3) << st.dump();
  }
}

INSTANTIATE_TEST_SUITE_P(Ikernels, Oversize, ::testing::Values("kvcache", "passthrough"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace gaon::test
