// gaon-bench, the real binary, against a real memcached: closed and open loop, ASCII and
// binary, writes, verification; and its one-line errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "procs.h"

namespace gaon::test {
namespace {

using namespace std::chrono_literals;

nlohmann::json run_bench(std::vector<std::string> args, int* status = nullptr) {
  std::vector<std::string> argv = {std::string(GAON_BIN_DIR) + "/gaon-bench"};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto [st, out, err] = run(argv, 30s);
  if (status) *status = st;
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded()) return {{"stderr", err}, {"stdout", out}};
  return j;
}

class BenchTool : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = free_port();
    auto mc = start_memcached(port_);
    if (!mc) GTEST_SKIP() << "/usr/bin/memcached is missing (scripts/setup installs it)";
    mc_ = std::move(*mc);
    server_ = "127.0.0.1:" + std::to_string(port_);
  }
  uint16_t port_ = 0;
  std::string server_;
  Child mc_;
};

TEST_F(BenchTool, ClosedLoopAsciiAndBinaryWithVerification) {
  for (std::string proto : {"ascii", "binary"}) {
    int st = -1;
    auto j = run_bench({"--server", server_, "--keys", "2000", "--hit-fraction", "0.9",
                        "--duration", "1", "--warmup", "0.2", "--protocol", proto, "--verify",
                        "--json", "--quiet", "--load", proto == "ascii" ? "tcp" : "udp"},
                       &st);
    ASSERT_TRUE(j.contains("replies")) << j.dump();
    EXPECT_EQ(st, 0) << proto;
    EXPECT_GT(j["replies"].get<uint64_t>(), 1000u) << proto;
    EXPECT_NEAR(j["hit_rate"].get<double>(), 0.9, 0.03) << proto;
    EXPECT_EQ(j["errors"]["malformed"], 0) << proto;
    EXPECT_EQ(j["errors"]["wrong_value"], 0) << proto;
    EXPECT_GT(j["latency_us"]["p99"].get<double>(), 0) << proto;
    EXPECT_GE(j["latency_us"]["p999"].get<double>(), j["latency_us"]["p50"].get<double>());
  }
}

TEST_F(BenchTool, OpenLoopHoldsItsRateAndWritesAreStored) {
  auto j =
      run_bench({"--server", server_, "--keys", "1000", "--rate", "20000", "--duration", "1",
                 "--warmup", "0.2", "--write-fraction", "0.1", "--verify", "--json", "--quiet"});
  ASSERT_TRUE(j.contains("requests")) << j.dump();
  EXPECT_NEAR(j["requests"].get<double>() / 20000, 1.0, 0.1) << j.dump();
  ASSERT_GT(j["replies"].get<uint64_t>(), 0u) << j.dump();
  EXPECT_NEAR(j["stored"].get<double>() / j["replies"].get<double>(), 0.1, 0.03) << j.dump();
  EXPECT_EQ(j["errors"]["wrong_value"], 0);
  EXPECT_EQ(j["errors"]["malformed"], 0);
}

TEST(BenchToolArgs, BadArgumentsGetAOneLineReason) {
  struct Case {
    std::vector<std::string> args;
    std::string want;
  } cases[] = {
      {{"--server", "nowhere"}, "'nowhere': expected IP:PORT"},
      {{"--hit-fraction", "1.5"}, "--hit-fraction must be in [0, 1]"},
      {{"--keys", "0"}, "--keys must be at least 1"},
      {{"--keys", "1000000", "--key-size", "6"}, "--key-size must be"},
      {{"--value-size", "1400"}, "one UDP datagram"},
      {{"--protocol", "http"}, "--protocol must be ascii or binary"},
      {{"--server", "127.0.0.1:1", "--load", "tcp"}, "cannot connect"},
      {{"--rate", "-5"}, "--rate must be"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv = {std::string(GAON_BIN_DIR) + "/gaon-bench"};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    const auto [st, out, err] = run(argv, 3s);
    EXPECT_EQ(st, 2) << c.want;
    EXPECT_NE(err.find(c.want), std::string::npos) << c.want << " -> " << err;
    EXPECT_LE(std::count(err.begin(), err.end(), '\n'), 2) << err;
  }
}

}  // namespace
}  // namespace gaon::test
