// gaon-bench, the real binary, against a real memcached: closed and open loop, ASCII and
// binary, UDP, TCP and mixed, writes, verification; and its one-line errors.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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

// Everything over TCP, against a memcached whose UDP port is off (so nothing can have
// gone over UDP): pipelined on several connections, every hit checked, in order.
TEST(BenchToolTcp, EverythingOverTcpConnectionsPipelined) {
  if (access("/usr/bin/memcached", X_OK) != 0) GTEST_SKIP() << "memcached is missing";
  const uint16_t port = free_port();
  auto argv = memcached_argv(port);
  for (size_t i = 0; i + 1 < argv.size(); ++i)
    if (argv[i] == "-U") argv[i + 1] = "0";
  Child mc = Child::start(argv);
  const std::string server = "127.0.0.1:" + std::to_string(port);
  for (int i = 0; i < 100; ++i) {  // until it listens
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool up = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    close(fd);
    if (up) break;
    std::this_thread::sleep_for(20ms);
  }
  int st = -1;
  auto j = run_bench({"--server",         server,   "--transport", "tcp",  "--connections",  "3",
                      "--pipeline",       "4",      "--keys",      "2000", "--hit-fraction", "0.9",
                      "--write-fraction", "0.05",   "--duration",  "1",    "--warmup",       "0.2",
                      "--verify",         "--json", "--quiet"},
                     &st);
  ASSERT_TRUE(j.contains("replies")) << j.dump();
  EXPECT_EQ(st, 0) << j.dump();
  EXPECT_GT(j["replies"].get<uint64_t>(), 1000u);
  EXPECT_NEAR(j["hit_rate"].get<double>(), 0.9, 0.03);
  EXPECT_GT(j["stored"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["timeouts"], 0);
  EXPECT_EQ(j["errors"]["malformed"], 0);
  EXPECT_EQ(j["errors"]["wrong_value"], 0);
  EXPECT_EQ(j["errors"]["unexpected"], 0);
  EXPECT_EQ(j["config"]["transport"], "tcp");
  EXPECT_EQ(j["config"]["concurrency"], 12);
  mc.stop();
}

// GETs over UDP, writes over TCP: both answered, the values checked.
TEST_F(BenchTool, MixedSendsWritesOverTcpAndGetsOverUdp) {
  int st = -1;
  auto j =
      run_bench({"--server", server_, "--transport", "mixed", "--keys", "2000", "--write-fraction",
                 "0.1", "--duration", "1", "--warmup", "0.2", "--verify", "--json", "--quiet"},
                &st);
  ASSERT_TRUE(j.contains("replies")) << j.dump();
  EXPECT_EQ(st, 0) << j.dump();
  EXPECT_NEAR(j["stored"].get<double>() / j["replies"].get<double>(), 0.1, 0.03) << j.dump();
  EXPECT_GT(j["hits"].get<uint64_t>(), 500u);
  EXPECT_EQ(j["errors"]["malformed"], 0);
  EXPECT_EQ(j["errors"]["wrong_value"], 0);
  EXPECT_EQ(j["config"]["transport"], "mixed");
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
      {{"--transport", "sctp"}, "--transport must be udp, tcp or mixed"},
      {{"--transport", "tcp", "--protocol", "binary"}, "speaks the ASCII protocol"},
      {{"--transport", "tcp", "--rate", "100"}, "--rate (open loop) works with"},
      {{"--transport", "tcp", "--pipeline", "0"}, "--pipeline must be 1..1024"},
      {{"--connections", "5000"}, "--connections must be 1..1024"},
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
