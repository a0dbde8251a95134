// kvcache in front of a real memcached, through gaond in sidecar mode:
//   - every reply a client gets through gaond (hit or miss) is byte-identical to the
//     reply memcached gives directly for the same state;
//   - a randomized consistency check: concurrent clients GET / SET / DELETE a small hot
//     key set; no GET that started after a write's acknowledgement returns an older
//     value. The same run with invalidation disabled must be caught by the checker.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "checker.h"
#include "frames.h"
#include "procs.h"

namespace gaon::test {
namespace {

using namespace std::chrono_literals;

std::string bin(uint8_t op, const std::string& key, uint32_t opaque) {
  return mc_binreq(op, key, "", "", opaque);
}

class Sidecar : public ::testing::Test {
 protected:
  void SetUp() override {
    gaond_ = std::string(GAON_BIN_DIR) + "/gaond";
    if (access(gaond_.c_str(), X_OK) != 0) GTEST_SKIP() << "gaond is not built";
    mc_port_ = free_port();
    auto mc = start_memcached(mc_port_);
    if (!mc) GTEST_SKIP() << "/usr/bin/memcached is missing (scripts/setup installs it)";
    mc_ = std::move(*mc);
  }
  void start_gaond(std::vector<std::string> params) {
    gaon_port_ = free_port();
    std::vector<std::string> argv = {gaond_,
                                     "--wire",
                                     "udp:127.0.0.1:" + std::to_string(gaon_port_),
                                     "--host",
                                     "udp:127.0.0.1:" + std::to_string(mc_port_),
                                     "--ikernel",
                                     "kvcache",
                                     "--json-stats",
                                     "--control",
                                     "none"};
    for (auto& p : params) argv.insert(argv.end(), {"--param", p});
    gaond_proc_ = Child::start(argv);
    ASSERT_TRUE(wait_udp_ready(gaon_port_)) << gaond_proc_.errors();
  }
  // kvcache's counters, from the stats gaond prints at exit.
  nlohmann::json stop_and_stats() {
    EXPECT_EQ(gaond_proc_.stop(), 0) << gaond_proc_.errors();
    const std::string out = gaond_proc_.output();
    auto j = nlohmann::json::parse(out.substr(out.find('{')), nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << out;
    for (const auto& inst : j["instances"])
      if (inst.contains("state")) return inst["state"];
    return j;
  }
  std::string gaond_;
  uint16_t mc_port_ = 0, gaon_port_ = 0;
  Child mc_, gaond_proc_;
};

TEST_F(Sidecar, RepliesThroughGaonAreByteIdenticalToMemcachedsOwn) {
  start_gaond({"capacity=16M"});
  ASSERT_NE(tcp_command(mc_port_,
                        "set foo 42 0 3\r\nbar\r\nset big 7 0 900\r\n" + std::string(900, 'b') +
                            "\r\nset empty 0 0 0\r\n\r\nset k2 4294967295 0 5\r\nhello\r\n",
                        "STORED\r\nSTORED\r\nSTORED\r\nSTORED\r\n"),
            "");
  McUdp direct(mc_port_), via(gaon_port_);
  const std::vector<std::pair<std::string, size_t>> requests = {
      {"get foo\r\n", 1},        {"gets foo\r\n", 1},        {"get big\r\n", 1},
      {"get empty\r\n", 1},      {"get k2\r\n", 1},          {"get nope\r\n", 1},
      {"get foo k2\r\n", 2},     {"get foo nope k2\r\n", 2}, {bin(0x00, "foo", 1), 1},
      {bin(0x0c, "foo", 2), 1},  {bin(0x09, "k2", 3), 1},    {bin(0x0d, "foo", 4), 1},
      {bin(0x00, "nope", 5), 1}, {"gets k2\r\n", 1},
  };
  uint16_t id = 100;
  // Three rounds: the first learns, the next ones are served from the cache.
  for (int round = 0; round < 3; ++round) {
    for (const auto& [req, n] : requests) {
      ++id;
      const auto want = direct.ask(req, id, n);
      const auto got = via.ask(req, id, n);
      EXPECT_EQ(got, want) << "round " << round << ": " << req;
    }
  }
  auto st = stop_and_stats();
  EXPECT_GT(st["hits"].get<uint64_t>(), 15u) << st.dump();
  EXPECT_GT(st["fills"].get<uint64_t>(), 5u) << st.dump();
}

std::vector<Op> run_workload(uint16_t port, int clients, int keys,
                             std::chrono::milliseconds duration) {
  Workload w;
  w.server.sin_family = AF_INET;
  w.server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  w.server.sin_port = htons(port);
  w.clients = clients;
  w.keys = keys;
  w.duration = duration;
  return gaon::test::run_workload(w);
}

// memcached restarts behind gaond: while it is down its port refuses gaond's datagrams,
// which kvcache takes as the application losing its state (it drops what it holds), so
// after the restart a key memcached lost is not served; a write then passes and is served
// from memcached's new value; gaond keeps running throughout.
TEST_F(Sidecar, AMemcachedRestartIsSeenAndWhatItLostIsNotServed) {
  start_gaond({"capacity=16M", "write_timeout_ms=200"});
  McUdp via(gaon_port_);
  auto body = [](const std::vector<std::string>& r) {
    return r.empty() ? std::string("(no reply)") : r[0].substr(8);
  };
  ASSERT_EQ(body(via.ask("set k 0 0 2\r\nv1\r\n", 1, 1)), "STORED\r\n");
  for (uint16_t id = 2; id <= 4; ++id)
    ASSERT_EQ(body(via.ask("get k\r\n", id, 1)), "VALUE k 0 2\r\nv1\r\nEND\r\n");
  mc_.stop();
  // Nobody answers a miss now; gaond's socket is told the port is closed.
  EXPECT_TRUE(via.ask("get other\r\n", 5, 0, 300ms).empty());
  EXPECT_TRUE(via.ask("get other\r\n", 6, 0, 300ms).empty());
  auto mc = start_memcached(mc_port_);
  ASSERT_TRUE(mc);
  mc_ = std::move(*mc);
  EXPECT_EQ(body(via.ask("get k\r\n", 7, 1)), "END\r\n");  // memcached lost it: not served
  std::this_thread::sleep_for(300ms);  // what is learned right after a gap is not kept
  ASSERT_EQ(body(via.ask("set k 0 0 2\r\nv2\r\n", 8, 1)), "STORED\r\n");
  for (uint16_t id = 9; id <= 11; ++id)
    EXPECT_EQ(body(via.ask("get k\r\n", id, 1)), "VALUE k 0 2\r\nv2\r\nEND\r\n");
  EXPECT_TRUE(gaond_proc_.running());
  const auto st = stop_and_stats();
  EXPECT_GE(st["gaps"].get<uint64_t>(), 1u) << st.dump();
  EXPECT_GE(st["hits"].get<uint64_t>(), 4u) << st.dump();  // before, and after the restart
}

TEST_F(Sidecar, NoGetReturnsAValueOlderThanAnAcknowledgedWrite) {
  start_gaond({"capacity=16M"});
  const auto ops = run_workload(gaon_port_, 4, 6, 3000ms);
  size_t gets = 0, sets = 0;
  for (const auto& op : ops) (op.kind == Op::get ? gets : sets)++;
  EXPECT_GT(gets, 1000u);
  EXPECT_GT(sets, 100u);
  EXPECT_EQ(count_stale(ops), 0u);
  auto st = stop_and_stats();
  EXPECT_GT(st["hits"].get<uint64_t>(), 100u) << st.dump();  // the cache was really used
}

TEST_F(Sidecar, TheCheckerCatchesACacheThatDoesNotInvalidate) {
  start_gaond({"capacity=16M", "unsafe_no_invalidation=true"});
  const auto ops = run_workload(gaon_port_, 4, 6, 2000ms);
  EXPECT_GT(count_stale(ops), 0u);
}

}  // namespace
}  // namespace gaon::test
