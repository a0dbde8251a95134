// gaonctl, the real binary, against a real gaond: stats --watch (rates while UDP traffic
// flows, --count, Ctrl-C, bad arguments) and --json on every command.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "procs.h"

namespace gaon::test {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> gaonctl_argv(const std::string& sock, std::vector<std::string> args) {
  std::vector<std::string> argv = {std::string(GAON_BIN_DIR) + "/gaonctl", "--control", sock};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

Ran gaonctl(const std::string& sock, std::vector<std::string> args) {
  return run(gaonctl_argv(sock, std::move(args)), 15000ms);
}

// gaond in sidecar mode with an echo instance on its wire address, and a client sending it
// a datagram every millisecond (waiting up to 50 ms for each echo) until it goes away.
class Gaonctl : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = free_port();
    sock_ = "/tmp/gaonctl-test-" + std::to_string(getpid()) + ".sock";
    d_ = Child::start({std::string(GAON_BIN_DIR) + "/gaond", "--wire",
                       "udp:127.0.0.1:" + std::to_string(port_), "--host",
                       "udp:127.0.0.1:" + std::to_string(free_port()), "--ikernel", "echo",
                       "--control", sock_});
    ASSERT_TRUE(d_.wait_errors("ready")) << d_.errors();
  }
  void TearDown() override {
    stop_traffic();
    EXPECT_EQ(d_.stop(), 0) << d_.errors();
  }
  void start_traffic() {
    traffic_ = std::thread([this] {
      McUdp c(port_);
      for (uint16_t i = 0; !stop_; ++i) {
        c.send("w" + std::to_string(i), i);
        c.recv(50ms);
        std::this_thread::sleep_for(1ms);
      }
    });
  }
  void stop_traffic() {
    stop_ = true;
    if (traffic_.joinable()) traffic_.join();
  }

  uint16_t port_ = 0;
  std::string sock_;
  Child d_;
  std::atomic<bool> stop_{false};
  std::thread traffic_;
};

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

TEST_F(Gaonctl, RatesWhileTrafficFlowsOneJsonObjectPerRefresh) {
  start_traffic();
  std::this_thread::sleep_for(300ms);
  // --json after the command: gaonctl takes its global options there too.
  const auto r = gaonctl(sock_, {"stats", "--watch", "1", "--count", "2", "--json"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "");
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  for (const auto& l : lines) {
    const auto j = nlohmann::json::parse(l);
    EXPECT_NEAR(j["interval_s"].get<double>(), 1.0, 0.5) << l;
    // About one request a millisecond (each waits for its echo): well above 0, well below
    // what a loopback client can send.
    const auto& d = j["datapath"];
    EXPECT_GT(d["wire_rx"].get<double>(), 20) << l;
    EXPECT_LT(d["wire_rx"].get<double>(), 2000) << l;
    EXPECT_GT(d["wire_tx"].get<double>(), 20) << l;
    EXPECT_EQ(d["host_rx"].get<double>(), 0) << l;
    ASSERT_EQ(j["instances"].size(), 1u) << l;
    const auto& i = j["instances"][0];
    EXPECT_EQ(i["type"], "echo");
    EXPECT_GT(i["rx"].get<double>(), 20) << l;
    EXPECT_GT(i["to_wire"].get<double>(), 20) << l;
    EXPECT_NEAR(i["to_wire"].get<double>(), i["rx"].get<double>(), 10) << l;  // echoes all
    EXPECT_EQ(i["to_host"].get<double>(), 0) << l;
    EXPECT_EQ(i["dropped"].get<double>(), 0) << l;
  }
  // Once the traffic stops, the rates go to 0.
  stop_traffic();
  std::this_thread::sleep_for(200ms);
  const auto idle = gaonctl(sock_, {"--json", "stats", "--watch", "0.5", "--count", "1"});
  ASSERT_EQ(idle.status, 0) << idle.err;
  const auto j = nlohmann::json::parse(idle.out);
  EXPECT_EQ(j["datapath"]["wire_rx"].get<double>(), 0) << idle.out;
  EXPECT_EQ(j["instances"][0]["rx"].get<double>(), 0) << idle.out;
}

TEST_F(Gaonctl, PlainLinesWhenNotATerminalAndOneInstanceById) {
  start_traffic();
  const auto r = gaonctl(sock_, {"stats", "1", "--watch", "0.5", "--count", "2"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.find('\033'), std::string::npos) << "no screen clearing into a pipe";
  const auto lines = lines_of(r.out);
  EXPECT_EQ(
      std::count_if(lines.begin(), lines.end(),
                    [](const std::string& l) { return l.rfind("datapath  wire rx", 0) == 0; }),
      2)
      << r.out;
  EXPECT_EQ(std::count_if(lines.begin(), lines.end(),
                          [](const std::string& l) { return l.find("   1  echo") == 0; }),
            2)
      << r.out;
  // An instance that is not there: one line, exit status 1.
  const auto none = gaonctl(sock_, {"stats", "77", "--watch", "1", "--count", "1"});
  EXPECT_EQ(none.status, 1);
  EXPECT_NE(none.err.find("permission denied"), std::string::npos) << none.err;
  EXPECT_EQ(std::count(none.err.begin(), none.err.end(), '\n'), 1) << none.err;
}

TEST_F(Gaonctl, CtrlCEndsItCleanly) {
  Child w = Child::start(gaonctl_argv(sock_, {"stats", "--watch", "0.3"}));
  ASSERT_TRUE(w.wait_output("datapath")) << w.errors();
  w.signal(SIGINT);
  for (int i = 0; i < 50 && w.running(); ++i) std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(w.running()) << "still running 1 s after SIGINT";
  EXPECT_EQ(w.stop(), 0) << w.errors();
  EXPECT_EQ(w.errors(), "");
}

TEST_F(Gaonctl, BadArgumentsGetOneLineAndExitStatus2) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"stats", "--watch", "0"},
           {"stats", "--watch", "abc"},
           {"stats", "--watch", "-1"},
           {"stats", "--watch", "1x"},
           {"stats", "--watch"},
           {"stats", "--watch", "1", "--count", "0"},
           {"stats", "--watch", "1", "--count", "many"},
           {"stats", "--count", "2"},
           {"list", "--bogus"},
       }) {
    const auto r = gaonctl(sock_, args);
    std::string what;
    for (const auto& a : args) what += a + " ";
    EXPECT_EQ(r.status, 2) << what << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << r.err;
    EXPECT_EQ(r.err.rfind("gaonctl: error: ", 0), 0u) << what << r.err;
    EXPECT_EQ(r.out, "") << what;
  }
}

// capture: the echo instance's frames while traffic flows, in a pcapng that the real
// tcpdump and tshark read (each request in, with echo's verdict, and its reply out); its
// bounds; errors with one line and nothing written.
TEST_F(Gaonctl, CaptureWritesPcapngThatTcpdumpAndTsharkRead) {
  start_traffic();
  const std::string file = "/tmp/gaonctl-capture-" + std::to_string(getpid()) + ".pcapng";
  const auto r = gaonctl(sock_, {"capture", "1", "--count", "20", "-w", file});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("20 frames captured, 0 lost"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("count reached"), std::string::npos) << r.err;
  const auto td = run({"/usr/bin/tcpdump", "-nr", file}, 15000ms);
  ASSERT_EQ(td.status, 0) << td.err;
  const auto lines = lines_of(td.out);
  ASSERT_EQ(lines.size(), 20u) << td.out;
  EXPECT_NE(lines[0].find("> 127.0.0.1." + std::to_string(port_) + ": UDP"), std::string::npos)
      << lines[0];
  EXPECT_NE(lines[1].find("127.0.0.1." + std::to_string(port_) + " > "), std::string::npos)
      << lines[1];
  if (access("/usr/bin/tshark", X_OK) == 0) {
    const auto ts = run({"/usr/bin/tshark", "-r", file, "-T", "fields", "-e",
                         "frame.interface_name", "-e", "frame.comment"},
                        30000ms);
    ASSERT_EQ(ts.status, 0) << ts.err;
    const auto t = lines_of(ts.out);
    ASSERT_EQ(t.size(), 20u) << ts.out;
    for (size_t i = 0; i < t.size(); ++i)
      EXPECT_EQ(t[i], i % 2 == 0 ? "1-in\tin to_wire" : "1-out\tout to_wire") << i;
  } else {
    GTEST_LOG_(INFO) << "tshark is missing: checked with tcpdump only";
  }
  // --seconds ends it, to standard output; --at in records only what reaches the instance.
  const auto s = gaonctl(sock_, {"--json", "capture", "1", "--seconds", "1", "--at", "in",
                                 "--count", "100000", "-w", file});
  ASSERT_EQ(s.status, 0) << s.err;
  const auto j = nlohmann::json::parse(s.out);
  EXPECT_EQ(j["ended"], "time up");
  EXPECT_GT(j["frames"].get<uint64_t>(), 10u);  // (a datagram per ms when idle; fewer if loaded)
  const auto in = run({"/usr/bin/tcpdump", "-nr", file}, 15000ms);
  EXPECT_EQ(lines_of(in.out).size(), j["frames"].get<size_t>());
  for (const auto& l : lines_of(in.out))
    EXPECT_NE(l.find("> 127.0.0.1." + std::to_string(port_) + ": UDP"), std::string::npos) << l;
  unlink(file.c_str());
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"capture", "1", "--at", "sideways", "-w", file},
           {"capture", "1", "--count", "0", "-w", file},
           {"capture", "1", "--seconds", "7200", "-w", file},
           {"capture", "1", "--snaplen", "0", "-w", file},
           {"capture", "9", "-w", file},
           {"capture", "1", "-w", "/nonexistent/dir/x.pcapng"},
       }) {
    const auto e = gaonctl(sock_, args);
    EXPECT_EQ(e.status, 1) << args[2] << e.err;
    EXPECT_EQ(std::count(e.err.begin(), e.err.end(), '\n'), 1) << e.err;
    EXPECT_EQ(e.err.rfind("gaonctl: error: ", 0), 0u) << e.err;
    EXPECT_NE(access(file.c_str(), F_OK), 0) << "an error leaves no file: " << args[2];
  }
  const auto missing = gaonctl(sock_, {"capture", "1"});  // no -w
  EXPECT_EQ(missing.status, 2) << missing.err;
}

// --json on every command gives JSON (before or after the command).
TEST_F(Gaonctl, JsonForEveryCommand) {
  auto json_of = [&](std::vector<std::string> args) {
    const auto r = gaonctl(sock_, args);
    EXPECT_EQ(r.status, 0) << args[0] << ": " << r.err;
    nlohmann::json j;
    EXPECT_NO_THROW(j = nlohmann::json::parse(r.out)) << args[0] << ": " << r.out;
    return j;
  };
  EXPECT_TRUE(json_of({"--json", "types"}).is_array());
  EXPECT_TRUE(json_of({"types", "--json"}).is_array());
  EXPECT_EQ(json_of({"list", "--json"}).size(), 1u);
  EXPECT_TRUE(json_of({"stats", "--json"}).contains("wire"));
  EXPECT_EQ(json_of({"stats", "1", "--json"})["type"], "echo");
  const auto made = json_of({"create", "echo", "--json"});
  ASSERT_TRUE(made.contains("instance")) << made;
  const std::string id = made["instance"].dump();
  EXPECT_TRUE(json_of({"call", id, "stats", "--json"}).contains("echoed"));
  if (geteuid() == 0) {  // attaching by address is the operator's
    const std::string flow = "udp:127.0.0.1:" + std::to_string(free_port());
    EXPECT_EQ(json_of({"attach", id, "--flow", flow, "--json"})["flows"],
              nlohmann::json::array({flow}));
    EXPECT_EQ(json_of({"detach", id, "--flow", flow, "--json"})["instance"].dump(), id);
  }
  EXPECT_EQ(json_of({"destroy", id, "--json"})["instance"].dump(), id);
}

}  // namespace
}  // namespace gaon::test
