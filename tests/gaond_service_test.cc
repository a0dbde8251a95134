// gaond as a service: its config file (checked with the line at fault, started from, reloaded
// on SIGHUP without touching the instances that did not change), its notify messages to
// systemd through a NOTIFY_SOCKET the test owns, its log levels and journal prefixes, and the
// unit file checked by the real systemd-analyze.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>

#include "frames.h"
#include "procs.h"

namespace gaon::test {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string gaond() { return std::string(GAON_BIN_DIR) + "/gaond"; }

struct TempDir {
  fs::path path;
  TempDir() {
    char t[] = "/tmp/gaon-svc-XXXXXX";
    path = mkdtemp(t);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

std::string udp(uint16_t port) { return "udp:127.0.0.1:" + std::to_string(port); }

TEST(GaondConfig, CheckConfigSaysGoodOrNamesTheLineAtFault) {
  TempDir d;
  const std::string good = d.write("good.conf", R"(# a sidecar with two services
wire = ["udp:127.0.0.1:17001", "udp:127.0.0.1:17002"]
host = ["udp:127.0.0.1:17011", "udp:127.0.0.1:17012"]
control = "none"
busy-poll = false
log-level = "notice"

[[instance]]
name = "a"
ikernel = "echo"
flow = "udp:127.0.0.1:17001"

[[instance]]
name = "b"
ikernel = "kvcache"
flow = ["udp:127.0.0.1:17002"]
param = { capacity = "8M" }
state-quota = "64M"
weight = 3
)");
  const Ran ok = run({gaond(), "--check-config", good});
  EXPECT_EQ(ok.status, 0) << ok.err;
  EXPECT_NE(ok.out.find("good (5 settings, 2 instances)"), std::string::npos) << ok.out;

  const std::string base = "control = \"none\"\nwire = \"udp:127.0.0.1:1\"\n";
  struct Case {
    std::string text;
    std::string want;  // after "FILE:"
  } cases[] = {
      {base + "host = \n", "3: "},                           // TOML syntax
      {base + "bogus = 1\n", "3: unknown setting 'bogus'"},  // no such option
      {base + "weight = \"x\"\n", "3: weight: "},            // not its type
      {base + "log-level = \"loud\"\n", "3: log-level: "},   // not one of
      {base + "busy-poll = 1\n", "3: busy-poll: expected true or false"},
      {base + "cpu = [1, 2]\n", "3: cpu: takes one value, not a list"},
      {base + "config = \"x\"\n", "3: 'config' belongs on the command line"},
      {"control = \"none\"\nwire = \"udp:127.0.0.1\"\nhost = \"udp:127.0.0.1:2\"\n"
       "ikernel = \"echo\"\n",
       "2: --wire "},  // a value its option takes but the plan does not
      {base + "host = \"udp:127.0.0.1:2\"\n\n[[instance]]\nname = \"x\"\nikernel = \"nope\"\n"
              "flow = \"udp:127.0.0.1:1\"\n",
       "5: instance 'x': unknown ikernel type 'nope'"},
      {base + "host = \"udp:127.0.0.1:2\"\n[[instance]]\nname = \"x\"\nikernel = \"kvcache\"\n"
              "flow = \"udp:127.0.0.1:1\"\nparam = { capacity = \"lots\" }\n",
       "4: instance 'x': parameter capacity: 'lots' is not a size"},
      {base + "host = \"udp:127.0.0.1:2\"\n[[instance]]\nname = \"x\"\nikernel = \"echo\"\n",
       "4: instance 'x' needs --flow"},
      {base + "[[instance]]\nikernel = \"echo\"\n", "3: instance: needs a name"},
      {base + "[[instance]]\nname = \"x\"\nikernel = \"echo\"\ncolour = 1\n",
       "6: instance: unknown key 'colour'"},
      {base + "[[instance]]\nname = \"x\"\nikernel = \"echo\"\n[[instance]]\nname = \"x\"\n"
              "ikernel = \"echo\"\n",
       "6: instance name 'x' is given twice"},
  };
  int n = 0;
  for (const auto& c : cases) {
    const std::string f = d.write("bad" + std::to_string(n++) + ".conf", c.text);
    const Ran r = run({gaond(), "--check-config", f});
    EXPECT_EQ(r.status, 1) << c.text;
    EXPECT_NE(r.err.find("gaond: error: " + f + ":" + c.want), std::string::npos)
        << c.text << "\n-> " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  const Ran missing = run({gaond(), "--check-config", (d.path / "none.conf").string()});
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("none.conf"), std::string::npos) << missing.err;
  // --config with a bad file: the same reason, and gaond does not start.
  const Ran bad_start = run({gaond(), "--config", d.path / "bad1.conf"});
  EXPECT_EQ(bad_start.status, 2) << bad_start.err;
  EXPECT_NE(bad_start.err.find("bad1.conf:3: unknown setting 'bogus'"), std::string::npos)
      << bad_start.err;
}

TEST(GaondConfig, TheShippedConfigAndUnitPassTheirChecks) {
  const std::string src = GAON_SOURCE_DIR;
  if (geteuid() != 0) GTEST_SKIP() << "the shipped config runs --local, which needs root";
  const Ran ok = run({gaond(), "--check-config", src + "/packaging/gaond.conf"});
  EXPECT_EQ(ok.status, 0) << ok.err;
  // The unit, with this build's gaond where the package puts /usr/sbin/gaond, checked by
  // the real systemd-analyze.
  if (access("/usr/bin/systemd-analyze", X_OK) != 0) GTEST_SKIP() << "no systemd-analyze";
  TempDir d;
  std::ifstream in(src + "/packaging/gaond.service");
  std::string unit((std::istreambuf_iterator<char>(in)), {});
  ASSERT_NE(unit.find("Type=notify"), std::string::npos);
  unit = std::regex_replace(unit, std::regex("/usr/sbin/gaond"), gaond());
  const std::string path = d.write("gaond.service", unit);
  const Ran v = run({"/usr/bin/systemd-analyze", "verify", "--man=no", path}, 30s);
  EXPECT_EQ(v.status, 0) << v.out << v.err;
  EXPECT_EQ(v.err.find("gaond.service:"), std::string::npos) << v.err;  // no complaint
}

// gaond started from a config file: instance a (echo) on one service, b (echo) on the
// other. SIGHUP with b gone: b's traffic reaches the application, a keeps answering every
// request through the reload, with the same instance. A bad file on SIGHUP changes nothing.
TEST(GaondConfig, StartsFromTheFileAndReloadsOnSighupLeavingUnchangedInstancesAlone) {
  TempDir d;
  const uint16_t w1 = free_port(), w2 = free_port(), h1 = free_port(), h2 = free_port();
  const std::string head = "wire = [\"" + udp(w1) + "\", \"" + udp(w2) + "\"]\nhost = [\"" +
                           udp(h1) + "\", \"" + udp(h2) + "\"]\ncontrol = \"none\"\n" +
                           "json-stats = true\n";
  const std::string a =
      "[[instance]]\nname = \"a\"\nikernel = \"echo\"\nflow = \"" + udp(w1) + "\"\n";
  const std::string b =
      "[[instance]]\nname = \"b\"\nikernel = \"echo\"\nflow = \"" + udp(w2) + "\"\n";
  const std::string conf = d.write("gaond.conf", head + a + b);
  Child g = Child::start({gaond(), "--config", conf});
  ASSERT_TRUE(g.wait_errors("gaond: ready")) << g.errors();
  EXPECT_NE(g.errors().find("ikernel echo 'a'"), std::string::npos) << g.errors();
  EXPECT_NE(g.errors().find("ikernel echo 'b'"), std::string::npos) << g.errors();
  McUdp c1(w1), c2(w2);
  ASSERT_EQ(c2.reply_to("to-b", 1, 2000ms), mc_dgram("to-b", 1));  // b echoes

  // A sender that keeps asking a for the whole reload; every request must be answered.
  std::atomic<bool> done{false};
  std::atomic<int> asked{0}, answered{0};
  std::thread sender([&] {
    for (uint16_t i = 1; !done; ++i) {
      ++asked;
      if (c1.reply_to("a" + std::to_string(i), i, 2000ms) == mc_dgram("a" + std::to_string(i), i))
        ++answered;
    }
  });
  std::this_thread::sleep_for(200ms);
  d.write("gaond.conf", head + a);  // b goes, a stays as it was
  g.signal(SIGHUP);
  ASSERT_TRUE(g.wait_errors("reloaded " + conf)) << g.errors();
  EXPECT_NE(g.errors().find("instance 'b'"), std::string::npos) << g.errors();
  std::this_thread::sleep_for(200ms);
  done = true;
  sender.join();
  EXPECT_GT(asked.load(), 10);
  EXPECT_EQ(answered.load(), asked.load());

  // b's service now goes to the application.
  const int app = bind_udp(h2);
  ASSERT_GE(app, 0);
  c2.send("to-app", 2);
  char buf[256];
  timeval tv{.tv_sec = 2, .tv_usec = 0};
  setsockopt(app, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const ssize_t n = recv(app, buf, sizeof(buf), 0);
  EXPECT_GT(n, 0) << "b's traffic did not reach the application after the reload";
  close(app);

  // A broken file: an error, and everything stays.
  d.write("gaond.conf", head + a + "[[instance]]\nname = \"c\"\nikernel = \"nope\"\nflow = \"" +
                            udp(w2) + "\"\n");
  g.signal(SIGHUP);
  ASSERT_TRUE(g.wait_errors("keeping the running settings")) << g.errors();
  EXPECT_EQ(c1.reply_to("still", 9, 2000ms), mc_dgram("still", 9));
  EXPECT_EQ(g.stop(), 0);
  const std::string out = g.output();
  const auto last = nlohmann::json::parse(out.substr(out.rfind("\n{") + 1));
  ASSERT_EQ(last["instances"].size(), 1u) << last.dump();
  EXPECT_EQ(last["instances"][0]["id"], 1) << "a was made anew";
  EXPECT_GE(last["instances"][0]["counters"]["to_wire"].get<uint64_t>(), uint64_t(answered.load()));
}

// A NOTIFY_SOCKET the test owns: READY=1 once serving, WATCHDOG=1 every half WatchdogSec,
// RELOADING=1 and READY=1 around a SIGHUP, STOPPING=1 on SIGTERM.
TEST(GaondService, TellsSystemdWhenReadyAliveReloadingAndStopping) {
  TempDir d;
  const std::string sock = (d.path / "notify").string();
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{.sun_family = AF_UNIX};
  std::strncpy(sa.sun_path, sock.c_str(), sizeof(sa.sun_path) - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  timeval tv{.tv_sec = 0, .tv_usec = 100'000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string got;
  const auto wait_for = [&](const std::string& what, std::chrono::milliseconds within) {
    const auto until = std::chrono::steady_clock::now() + within;
    while (std::chrono::steady_clock::now() < until) {
      char buf[512];
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n > 0) got += std::string(buf, size_t(n)) + "|";
      if (got.find(what) != std::string::npos) {
        got.erase(0, got.find(what) + what.size());
        return true;
      }
    }
    return false;
  };
  const uint16_t w = free_port(), h = free_port();
  setenv("NOTIFY_SOCKET", sock.c_str(), 1);
  setenv("WATCHDOG_USEC", "200000", 1);
  const std::string conf = d.write("gaond.conf", "control = \"none\"\nikernel = \"echo\"\n");
  Child g = Child::start({gaond(), "--config", conf, "--wire", udp(w), "--host", udp(h)});
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  EXPECT_TRUE(wait_for("READY=1", 5000ms)) << got << g.errors();
  McUdp c(w);
  EXPECT_EQ(c.reply_to("x", 1, 2000ms), mc_dgram("x", 1));
  EXPECT_TRUE(wait_for("WATCHDOG=1", 500ms)) << got;
  EXPECT_TRUE(wait_for("WATCHDOG=1", 500ms)) << got;
  g.signal(SIGHUP);
  EXPECT_TRUE(wait_for("RELOADING=1", 2000ms)) << got;
  EXPECT_TRUE(wait_for("READY=1", 2000ms)) << got;
  g.signal(SIGTERM);
  EXPECT_TRUE(wait_for("STOPPING=1", 2000ms)) << got;
  EXPECT_EQ(g.stop(), 0);
  close(fd);
}

// --log-level drops what is below it; with stderr on the journal (JOURNAL_STREAM names it)
// each line carries its sd-daemon priority.
TEST(GaondService, LogLevelsAndJournalPrefixes) {
  TempDir d;
  const std::string err = (d.path / "stderr").string();
  const Ran r = run({"/bin/sh", "-c",
                     "exec 2>" + err + "; JOURNAL_STREAM=$(stat -c %d:%i " + err + ") exec " +
                         gaond() + " --control none --wire udp:127.0.0.1:1"});
  EXPECT_EQ(r.status, 2);
  std::ifstream in(err);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(text, "<3>gaond: error: --host udp:IP:PORT is required\n");

  const uint16_t w = free_port(), h = free_port();
  Child quiet = Child::start({gaond(), "--control", "none", "--ikernel", "echo", "--wire", udp(w),
                              "--host", udp(h), "--log-level", "warning"});
  McUdp c(w);
  std::optional<std::string> got;
  for (int i = 0; i < 50 && !got; ++i) got = c.reply_to("q", uint16_t(i), 100ms);
  EXPECT_TRUE(got) << quiet.errors();
  EXPECT_EQ(quiet.stop(), 0);
  EXPECT_EQ(quiet.errors(), "") << "info lines below --log-level warning";
  const Ran bad = run({gaond(), "--log-level", "loud"});
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("--log-level"), std::string::npos) << bad.err;
}

// gaond --metrics in front of a real memcached: the scrape passes the real promtool, and
// the numbers move with the traffic (frames, kvcache's misses then hits).
TEST(GaondService, ServesPrometheusMetricsThatMoveWithTheTraffic) {
  const uint16_t w = free_port(), mc_port = free_port(), mport = free_port();
  auto mc = start_memcached(mc_port);
  if (!mc) GTEST_SKIP() << "no /usr/bin/memcached";
  TempDir d;
  const std::string conf = d.write(
      "gaond.conf", "control = \"none\"\nmetrics = \"127.0.0.1:" + std::to_string(mport) +
                        "\"\nwire = \"" + udp(w) + "\"\nhost = \"" + udp(mc_port) +
                        "\"\n[[instance]]\nname = \"cache\"\nikernel = \"kvcache\"\n"
                        "flow = \"" +
                        udp(w) + "\"\nparam = { capacity = \"8M\" }\nstate-quota = \"64M\"\n");
  Child g = Child::start({gaond(), "--config", conf});
  ASSERT_TRUE(g.wait_errors("gaond: ready")) << g.errors();
  const std::string before = scrape(mport);
  ASSERT_FALSE(before.empty()) << g.errors();
  const std::string inst =
      "{command=\"get\",ikernel_instance=\"1\",owner=\"" + std::to_string(getuid()) + "\"";
  EXPECT_NE(before.find("gaon_kvcache_commands_total"), std::string::npos) << before;

  McUdp c(w);
  ASSERT_TRUE(c.reply_to("set k 0 0 1\r\nv\r\n", 1, 2000ms));
  for (uint16_t i = 0; i < 20; ++i) ASSERT_TRUE(c.reply_to("get k\r\n", uint16_t(10 + i), 2000ms));
  const std::string after = scrape(mport);
  const double rx0 = sample(before, "gaon_rx_frames_total{side=\"wire\"}");
  const double rx1 = sample(after, "gaon_rx_frames_total{side=\"wire\"}");
  EXPECT_GE(rx1 - rx0, 21) << after;
  double hits = 0, misses = 0;
  for (size_t at = 0; (at = after.find("gaon_kvcache_commands_total{", at)) != std::string::npos;
       ++at) {
    const std::string line = after.substr(at, after.find('\n', at) - at);
    if (line.find("command=\"get\"") == std::string::npos) continue;
    const double v = std::stod(line.substr(line.rfind(' ') + 1));
    (line.find("status=\"hit\"") != std::string::npos ? hits : misses) += v;
  }
  EXPECT_GE(hits + misses, 20) << after;
  EXPECT_GE(hits, 1) << "the key is learned from memcached's first reply";

  if (access("/usr/bin/promtool", X_OK) == 0) {
    const std::string f = d.write("scrape.txt", after);
    const Ran p = run({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + f}, 30s);
    EXPECT_EQ(p.status, 0) << p.out << p.err;
    EXPECT_EQ(p.out + p.err, "") << "promtool found problems";
  } else {
    std::printf("promtool missing: the scrape was not checked by it\n");
  }
  EXPECT_EQ(g.stop(), 0);
  const Ran busy = run({gaond(), "--control", "none", "--ikernel", "echo", "--wire",
                        udp(free_port()), "--host", udp(free_port()), "--metrics", "nonsense"});
  EXPECT_EQ(busy.status, 2);
  EXPECT_NE(busy.err.find("--metrics"), std::string::npos) << busy.err;
}

}  // namespace
}  // namespace gaon::test
