// gaon::metrics: the stats of a real gaond (kvcache in front of a real memcached) and of
// an Engine rendered and checked by the real `promtool check metrics`; the HTTP endpoint
// scraped over a plain socket; bad listen addresses.
#include "gaon/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "gaon/engine.h"
#include "gaon/instance.h"
#include "gaon/mem_port.h"
#include "gaon/xdp_abi.h"
#include "procs.h"

namespace gaon::metrics {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// The value of the first sample of `name` whose line has every one of `labels`
// (`k="v"`), or nullopt.
std::optional<double> sample(const std::string& text, const std::string& name,
                             std::initializer_list<std::string> labels = {}) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') continue;
    bool all = true;
    for (const auto& l : labels) all = all && line.find(l) != std::string::npos;
    if (all) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nullopt;
}

// `promtool check metrics` on `text`: "" when it is happy, else what it said. Skips (with
// the reason) when promtool is missing.
std::string promtool(const std::string& text) {
  char path[] = "/tmp/gaon-metrics-XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, text.data(), text.size()), ssize_t(text.size()));
  close(fd);
  const std::string cmd = std::string("promtool check metrics < ") + path + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (p && fgets(buf, sizeof(buf), p)) out += buf;
  const int rc = p ? pclose(p) : -1;
  unlink(path);
  if (rc != 0 && out.empty()) out = "promtool failed with status " + std::to_string(rc);
  return out;
}
bool have_promtool() { return std::system("command -v promtool >/dev/null 2>&1") == 0; }

// A real gaond (kvcache, --json-stats) in front of a real memcached, some traffic, and
// the stats it prints on SIGUSR1.
class MetricsOfARealGaond : public ::testing::Test {
 protected:
  void SetUp() override {
    mc_port_ = test::free_port();
    wire_port_ = test::free_port();
    auto mc = test::start_memcached(mc_port_);
    if (!mc) GTEST_SKIP() << "/usr/bin/memcached is missing (scripts/setup installs it)";
    mc_ = std::move(*mc);
    ASSERT_TRUE(test::wait_udp_ready(mc_port_));
    gaond_ = test::Child::start({std::string(GAON_BIN_DIR) + "/gaond", "--wire",
                                 "udp:127.0.0.1:" + std::to_string(wire_port_), "--host",
                                 "udp:127.0.0.1:" + std::to_string(mc_port_), "--ikernel",
                                 "kvcache", "--json-stats", "--control", "none"});
    ASSERT_TRUE(gaond_.wait_errors("gaond: ready")) << gaond_.errors();
  }
  json stats() {
    const size_t before = gaond_.output().size();
    gaond_.signal(SIGUSR1);
    for (int i = 0; i < 100; ++i) {
      std::this_thread::sleep_for(20ms);
      const std::string out = gaond_.output().substr(before);
      json j = json::parse(out, nullptr, false);
      if (!j.is_discarded()) return j;
    }
    ADD_FAILURE() << "no stats from gaond: " << gaond_.errors();
    return nullptr;
  }
  uint16_t mc_port_ = 0, wire_port_ = 0;
  test::Child mc_, gaond_;
};

TEST_F(MetricsOfARealGaond, ItsStatsRenderAsMetricsPromtoolAccepts) {
  test::McUdp via(wire_port_);
  uint16_t id = 1;
  for (int i = 0; i < 4; ++i)
    ASSERT_FALSE(via.ask("set k" + std::to_string(i) + " 0 0 3\r\nabc\r\n", id++, 1).empty());
  for (int round = 0; round < 2; ++round)
    for (int i = 0; i < 6; ++i) via.ask("get k" + std::to_string(i) + "\r\n", id++, 1);
  const json j = stats();
  ASSERT_TRUE(j.is_object());
  const json& st = j["instances"][0]["state"];
  const std::string text = render(j);

  // The memcached operator's names, from the same numbers as the JSON.
  const std::string inst = R"(ikernel_instance="1")";
  EXPECT_EQ(sample(text, "gaon_kvcache_commands_total", {inst, R"(status="hit")"}),
            st["hit_keys"].get<double>());
  EXPECT_EQ(sample(text, "gaon_kvcache_commands_total", {R"(command="get")", R"(status="miss")"}),
            st["miss_keys"].get<double>());
  EXPECT_GT(*sample(text, "gaon_kvcache_commands_total", {R"(status="hit")"}), 0);
  EXPECT_EQ(sample(text, "gaon_kvcache_items", {inst}), st["items"].get<double>());
  EXPECT_EQ(sample(text, "gaon_kvcache_bytes", {inst}), st["bytes_used"].get<double>());
  EXPECT_EQ(sample(text, "gaon_kvcache_limit_bytes", {inst}),
            st["geometry"]["table_bytes"].get<double>());
  EXPECT_EQ(sample(text, "gaon_kvcache_evictions_total", {inst}), 0);
  EXPECT_EQ(sample(text, "gaon_kvcache_fills_total", {inst}), st["fills"].get<double>());
  EXPECT_EQ(sample(text, "gaon_kvcache_tcp_segments_total", {inst}), 0);
  EXPECT_TRUE(sample(text, "gaon_kvcache_rejected_fills_total", {R"(reason="version")"}));
  // The datapath's, the ports' and the instance's.
  EXPECT_EQ(sample(text, "gaon_rx_frames_total", {R"(side="wire")"}),
            j["wire"]["rx"].get<double>());
  EXPECT_EQ(sample(text, "gaon_tx_frames_total", {R"(side="host")"}),
            j["host"]["tx"].get<double>());
  EXPECT_TRUE(sample(text, "gaon_dropped_frames_total", {R"(reason="verdict")"}));
  EXPECT_TRUE(sample(text, "gaon_port_rx_dropped_frames_total",
                     {R"(side="wire")", R"(reason="socket_full")"}));
  EXPECT_TRUE(sample(text, "gaon_port_member_tx_frames_total", {R"(side="host")", "member="}));
  EXPECT_EQ(sample(text, "gaon_instance_rx_packets_total", {inst, R"(type="kvcache")", "owner="}),
            j["instances"][0]["counters"]["rx"].get<double>());
  EXPECT_TRUE(sample(text, "gaon_instance_errors_total", {R"(reason="pool_empty")"}));
  EXPECT_EQ(sample(text, "gaon_books_balanced", {R"(books="engine")"}), 1);
  EXPECT_EQ(sample(text, "gaon_stats_up"), 1);
  EXPECT_NE(text.find("# HELP gaon_kvcache_commands_total "), std::string::npos);
  EXPECT_NE(text.find("# TYPE gaon_kvcache_commands_total counter"), std::string::npos);

  if (!have_promtool()) GTEST_SKIP() << "promtool is missing (Debian: prometheus)";
  EXPECT_EQ(promtool(text), "") << text;
}

// An Engine's own stats, with an instance of a type whose stats are generic (echo), and the
// steering program's section of a bump (the names from GAON_STEER_STATS).
TEST(Metrics, AnEnginesStatsAndABumpsRenderAsMetricsPromtoolAccepts) {
  auto e = Engine::create({.pool_frames = 1024});
  ASSERT_TRUE(e) << e.error();
  MemPort wire("wire", 64), host("host", 64);
  (*e)->set_ports(&wire, &host);
  auto inst = Instance::create({.type = "echo", .owner_uid = 1000, .state_quota = 1 << 20},
                               Registry::global());
  ASSERT_TRUE(inst) << inst.error();
  ASSERT_TRUE((*e)->add_instance(std::move(*inst)));
  json j = (*e)->stats();
  json xdp = json::object();
  uint64_t n = 1;
#define GAON_X(name, doc) xdp[#name] = n++;
  GAON_STEER_STATS(GAON_X)
#undef GAON_X
  j["bump"] = {{"afxdp_mode", "copy"},
               {"xdp_mode", "native"},
               {"lease_ms", 50.0},
               {"lease_lapses", 2},
               {"fill_per_queue", 2048},
               {"steered_flows", 3},
               {"fast_path_memory_free_mb", 255},
               {"xdp", xdp}};
  j["instances"][0]["state"] = {{"replies", 7}, {"nested", {{"a", 1}}}, {"label", "x"}};
  const std::string text = render(j);
  EXPECT_EQ(sample(text, "gaon_steer_steered_frames_total", {R"(mode="bump")"}), 1);
  EXPECT_EQ(sample(text, "gaon_steer_fast_path_missing_frames_total"), 7);
  EXPECT_EQ(sample(text, "gaon_lease_seconds"), 0.05);
  EXPECT_EQ(sample(text, "gaon_fast_path_memory_free_bytes"), 255.0 * GAON_FP_CHUNK);
  EXPECT_EQ(sample(text, "gaon_xdp_info", {R"(xdp_mode="native")", R"(afxdp_mode="copy")"}), 1);
  EXPECT_EQ(sample(text, "gaon_instance_stat", {R"(type="echo")", R"(name="replies")"}), 7);
  EXPECT_EQ(sample(text, "gaon_instance_stat", {R"(name="nested.a")"}), 1);
  EXPECT_EQ(sample(text, "gaon_pool_frames"), 1024);
  if (!have_promtool()) GTEST_SKIP() << "promtool is missing (Debian: prometheus)";
  EXPECT_EQ(promtool(text), "") << text;
}

std::string http_get(uint16_t port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = test::loopback(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  EXPECT_EQ(send(fd, req.data(), req.size(), 0), ssize_t(req.size()));
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = recv(fd, buf, sizeof(buf), 0)) > 0;) out.append(buf, size_t(n));
  close(fd);
  return out;
}

TEST(Metrics, TheServerServesTheStatsOfEachScrape) {
  std::atomic<uint64_t> rx{5};
  auto srv = Server::start("127.0.0.1:0", [&] {
    return json{{"wire", {{"rx", rx.load()}, {"tx", 1}}}, {"unmatched", 2}};
  });
  ASSERT_TRUE(srv) << srv.error();
  const uint16_t port = (*srv)->port();
  ASSERT_NE(port, 0);
  std::string r = http_get(port, "/metrics");
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0u) << r;
  EXPECT_NE(r.find("text/plain"), std::string::npos) << r;
  const std::string body = r.substr(r.find("\r\n\r\n") + 4);
  EXPECT_EQ(sample(body, "gaon_rx_frames_total", {R"(side="wire")"}), 5) << body;
  EXPECT_EQ(sample(body, "gaon_unmatched_frames_total"), 2);
  rx = 1234567;
  r = http_get(port, "/metrics");
  EXPECT_EQ(sample(r.substr(r.find("\r\n\r\n") + 4), "gaon_rx_frames_total"), 1234567) << r;
  EXPECT_EQ((*srv)->scrapes(), 2u);
}

TEST(Metrics, AStatsFunctionThatThrowsGivesStatsUpZero) {
  auto srv = Server::start("127.0.0.1:0", []() -> json { throw std::runtime_error("gone"); });
  ASSERT_TRUE(srv) << srv.error();
  const std::string r = http_get((*srv)->port(), "/metrics");
  EXPECT_EQ(sample(r.substr(r.find("\r\n\r\n") + 4), "gaon_stats_up"), 0) << r;
}

TEST(Metrics, ABadListenAddressIsAClearError) {
  auto f = [] { return json::object(); };
  for (const auto& [listen, says] :
       std::vector<std::pair<std::string, std::string>>{{"9464", "not IP:PORT"},
                                                        {"localhost:9464", "not an IPv4 address"},
                                                        {"127.0.0.1:99999", "not a port"},
                                                        {"127.0.0.1:", "not a port"},
                                                        {"[::1:9464", "not an IPv4"},
                                                        {"[zz]:9464", "not an IPv6 address"}}) {
    auto r = Server::start(listen, f);
    ASSERT_FALSE(r) << listen;
    EXPECT_NE(r.error().find(says), std::string::npos) << listen << ": " << r.error();
    EXPECT_NE(r.error().find(listen), std::string::npos) << r.error();
  }
  // A port something else listens on.
  auto first = Server::start("127.0.0.1:0", f);
  ASSERT_TRUE(first) << first.error();
  const std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = Server::start(taken, f);
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().find("cannot listen on " + taken), std::string::npos) << second.error();
}

}  // namespace
}  // namespace gaon::metrics
