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

// One operation as a client saw it.
struct Op {
  enum Kind { get, set, del } kind;
  int key;
  std::string value;  // set: written; get: returned ("" = miss)
  std::chrono::steady_clock::time_point start, end;
};

// Runs `clients` threads doing random GET/SET/DELETE on `keys` keys through port `port`
// for `duration`; returns every completed operation.
std::vector<Op> run_workload(uint16_t port, int clients, int keys,
                             std::chrono::milliseconds duration) {
  std::mutex mu;
  std::vector<Op> all;
  std::vector<std::thread> threads;
  const auto until = std::chrono::steady_clock::now() + duration;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      McUdp s(port);
      std::mt19937 rng(1234 + c);
      std::vector<Op> mine;
      uint16_t id = 0;
      int seq = 0;
      while (std::chrono::steady_clock::now() < until) {
        Op op;
        const int r = int(rng() % 100);
        op.kind = r < 80 ? Op::get : r < 95 ? Op::set : Op::del;
        op.key = int(rng() % keys);
        const std::string key = "hot" + std::to_string(op.key);
        std::string body;
        if (op.kind == Op::get) body = "get " + key + "\r\n";
        if (op.kind == Op::set) {
          op.value = "c" + std::to_string(c) + "-" + std::to_string(++seq);
          body =
              "set " + key + " 0 0 " + std::to_string(op.value.size()) + "\r\n" + op.value + "\r\n";
        }
        if (op.kind == Op::del) body = "delete " + key + "\r\n";
        ++id;
        op.start = std::chrono::steady_clock::now();
        s.send(body, id);
        std::optional<std::string> reply;
        while ((reply = s.recv(200ms))) {  // skip late replies to timed-out requests
          if (reply->size() >= 2 &&
              uint16_t(uint8_t((*reply)[0]) << 8 | uint8_t((*reply)[1])) == id)
            break;
        }
        op.end = std::chrono::steady_clock::now();
        if (!reply) continue;  // lost: unknown outcome, not recorded
        const std::string text = reply->substr(8);
        if (op.kind == Op::get) {
          if (text.rfind("VALUE ", 0) == 0) {
            const size_t a = text.find("\r\n") + 2;
            op.value = text.substr(a, text.find("\r\n", a) - a);
          } else if (text != "END\r\n") {
            continue;
          }
        } else if (op.kind == Op::set && text != "STORED\r\n") {
          continue;
        } else if (op.kind == Op::del && text != "DELETED\r\n" && text != "NOT_FOUND\r\n") {
          continue;
        }
        mine.push_back(op);
      }
      std::lock_guard lk(mu);
      all.insert(all.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  return all;
}

// A GET returned value V (written by W). It is stale if some write or delete W' of the
// same key started after W was acknowledged and was itself acknowledged before the GET
// started: W' certainly replaced V before the GET began. Returns the stale GETs.
size_t count_stale(const std::vector<Op>& ops) {
  using T = std::chrono::steady_clock::time_point;
  std::map<std::string, const Op*> writer;  // value -> its set
  // Per key: writes and deletes sorted by acknowledgement time, with the running maximum
  // of their start times, so "the latest start among writes acknowledged before t" is a
  // binary search.
  std::map<int, std::vector<std::pair<T, T>>> acked;  // (end, max start so far)
  for (const Op& op : ops) {
    if (op.kind == Op::set) writer[op.value] = &op;
    if (op.kind != Op::get) acked[op.key].push_back({op.end, op.start});
  }
  for (auto& [k, v] : acked) {
    std::sort(v.begin(), v.end());
    for (size_t i = 1; i < v.size(); ++i) v[i].second = std::max(v[i].second, v[i - 1].second);
  }
  size_t stale = 0;
  for (const Op& g : ops) {
    if (g.kind != Op::get || g.value.empty()) continue;
    auto w = writer.find(g.value);
    if (w == writer.end()) continue;  // written by a set whose ack was lost
    const auto& v = acked[g.key];
    auto it = std::lower_bound(v.begin(), v.end(), std::pair<T, T>{g.start, T::min()});
    if (it == v.begin()) continue;  // nothing acknowledged before the GET started
    if (std::prev(it)->second > w->second->end) ++stale;
  }
  return stale;
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
