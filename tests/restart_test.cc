// gaond restarted: the persistent instances of two users, their flows and their traffic
// come back from --state-dir; a truncated state file is one line and gaond serves on.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "frames.h"
#include "gaon/control.h"
#include "procs.h"

namespace gaon::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::string bin(const std::string& name) { return std::string(GAON_BIN_DIR) + "/" + name; }
std::string udp(uint16_t port) { return "udp:127.0.0.1:" + std::to_string(port); }

// gaonctl as `uid` (through `users`' copy; as root when `users` is null): {exit status,
// stdout + stderr}.
std::pair<int, std::string> gaonctl(const std::string& sock, const AsOtherUsers* users, uid_t uid,
                                    std::vector<std::string> args) {
  args.insert(args.begin(), {"--control", sock});
  std::vector<std::string> argv;
  if (users != nullptr) {
    argv = users->argv(uid, "gaonctl", args);
  } else {
    argv = {bin("gaonctl")};
    argv.insert(argv.end(), args.begin(), args.end());
  }
  const auto r = run(argv);
  return {r.status, r.out + r.err};
}

std::pair<int, std::string> gaonctl(const std::string& sock, std::vector<std::string> args) {
  return gaonctl(sock, nullptr, 0, std::move(args));
}

std::string trimmed(std::string s) {
  s.erase(s.find_last_not_of('\n') + 1);
  return s;
}

// What a restart keeps of the instances of users 65534 and 1, in "list" order.
json kept(const json& list) {
  json out = json::array();
  for (const auto& i : list)
    if (i["owner"] == 65534 || i["owner"] == 1)
      out.push_back({{"type", i["type"]},
                     {"owner", i["owner"]},
                     {"params", i["params"]},
                     {"state_quota", i["state_quota"]},
                     {"traffic_class", i["traffic_class"]},
                     {"flows", i["flows"]},
                     {"persist", i["persist"]}});
  return out;
}

// The echo instance on `port` answers (gaond may still be coming up: a few tries).
bool echoes(uint16_t port) {
  McUdp c(port);
  for (int i = 0; i < 20; ++i) {
    c.send("ping" + std::to_string(i), uint16_t(i));
    if (c.recv(100ms) == mc_dgram("ping" + std::to_string(i), uint16_t(i))) return true;
  }
  return false;
}

// Datagrams sent to `port` reach the instance owned by `owner` (its rx counter grows).
uint64_t rx_of(const std::string& sock, uint32_t owner) {
  auto [st, out] = gaonctl(sock, {"--json", "list"});
  if (st != 0) return 0;
  for (const auto& i : json::parse(out))
    if (i["owner"] == owner) return i["counters"]["rx"].get<uint64_t>();
  return 0;
}

TEST(GaondRestart, PersistentInstancesOfTwoUsersAndTheirFlowsComeBack) {
  if (geteuid() != 0)
    GTEST_SKIP() << "needs root: creates instances as two other users (nobody, daemon) and "
                    "attaches flows by address (CI runs as root)";
  const AsOtherUsers users({"gaonctl"}, {65534, 1});
  if (!users.unusable().empty())
    GTEST_SKIP() << "cannot run build-tree programs as another user: " << users.unusable();
  char tmpl[] = "/tmp/gaon-restart-XXXXXX";
  const std::string tmp = mkdtemp(tmpl);
  const std::string state = tmp + "/state", file = state + "/state.json";
  // The socket where the two users can reach it (tmp is 0700).
  const std::string sock = "/tmp/gaond-restart-" + std::to_string(getpid()) + ".sock";
  const uint16_t w1 = free_port(), h1 = free_port(), w2 = free_port(), h2 = free_port(),
                 p3 = free_port(), p4 = free_port(), p5 = free_port();
  // --ikernel's own instance is made again from the command line, never recorded.
  const std::vector<std::string> argv = {
      bin("gaond"), "--wire",    udp(w1),       "--host",    udp(h1), "--wire",
      udp(w2),      "--host",    udp(h2),       "--control", sock,    "--state-dir",
      state,        "--ikernel", "passthrough", "--flow",    udp(p4)};
  json before;
  {
    Child d = Child::start(argv);
    ASSERT_TRUE(d.wait_errors("ready")) << d.errors();
    auto [sa, a] =
        gaonctl(sock, &users, 65534, {"create", "echo", "--weight", "3", "--rate-bps", "8000000"});
    ASSERT_EQ(sa, 0) << a;
    auto [sb, b] =
        gaonctl(sock, &users, 1, {"create", "kvcache", "-p", "capacity=1M", "--quota", "8M"});
    ASSERT_EQ(sb, 0) << b;
    a = trimmed(a);
    b = trimmed(b);
    for (const auto& [id, flow] : std::vector<std::pair<std::string, std::string>>{
             {a, udp(w1)}, {b, udp(w2)}, {b, udp(p3)}}) {
      auto [st, out] = gaonctl(sock, {"attach", id, "--flow", flow});
      ASSERT_EQ(st, 0) << out;
    }
    // A session instance (libgaon's kind): gone with its connection, never recorded.
    auto session = control::Client::connect(sock);
    ASSERT_TRUE(session) << session.error();
    auto s = session->call("create", {{"type", "echo"}});
    ASSERT_TRUE(s) << s.error();
    ASSERT_TRUE(session->call("attach", {{"instance", (*s)["instance"]}, {"flow", udp(p5)}}));
    // Served: nobody's echo answers on w1; daemon's kvcache sees what comes to w2.
    EXPECT_TRUE(echoes(w1)) << d.errors();
    McUdp(w2).send("get k\r\n", 1);
    for (int i = 0; i < 50 && rx_of(sock, 1) == 0; ++i) std::this_thread::sleep_for(20ms);
    EXPECT_GE(rx_of(sock, 1), 1u);
    auto [sl, list] = gaonctl(sock, {"--json", "list"});
    ASSERT_EQ(sl, 0) << list;
    EXPECT_EQ(json::parse(list).size(), 4u) << list;
    before = kept(json::parse(list));
    ASSERT_EQ(before.size(), 2u) << list;
    EXPECT_EQ(before[1]["flows"], json({udp(w2), udp(p3)}));
    // The file: private, gaond's format, the two persistent instances only.
    struct stat st {};
    ASSERT_EQ(stat(state.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    ASSERT_EQ(stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    std::ifstream in(file);
    const json doc = json::parse(in, nullptr, false);
    ASSERT_TRUE(doc.is_object());
    EXPECT_EQ(doc["format"], "gaond-state");
    EXPECT_EQ(doc["instances"].size(), 2u) << doc.dump();
    EXPECT_EQ(d.stop(), 0);
  }
  {
    Child d = Child::start(argv);
    ASSERT_TRUE(d.wait_errors("ready")) << d.errors();
    EXPECT_NE(
        d.errors().find("state file " + file + ": restored 2 of 2 persistent instances, 3 flows"),
        std::string::npos)
        << d.errors();
    auto [sl, list] = gaonctl(sock, {"--json", "list"});
    ASSERT_EQ(sl, 0) << list;
    EXPECT_EQ(json::parse(list).size(), 3u) << list;  // passthrough again, no session one
    EXPECT_EQ(kept(json::parse(list)), before) << list;
    // Still theirs: nobody sees (and may touch) its own instance only.
    auto [sn, mine] = gaonctl(sock, &users, 65534, {"--json", "list"});
    ASSERT_EQ(sn, 0) << mine;
    ASSERT_EQ(json::parse(mine).size(), 1u) << mine;
    EXPECT_EQ(json::parse(mine)[0]["type"], "echo");
    // And served again.
    EXPECT_TRUE(echoes(w1)) << d.errors();
    McUdp(w2).send("get k\r\n", 1);
    for (int i = 0; i < 50 && rx_of(sock, 1) == 0; ++i) std::this_thread::sleep_for(20ms);
    EXPECT_GE(rx_of(sock, 1), 1u);
    EXPECT_EQ(d.stop(), 0);
  }
  // A truncated state file: one line naming it, and gaond starts and serves without it.
  const auto size = std::filesystem::file_size(file);
  std::filesystem::resize_file(file, size / 2);
  {
    Child d = Child::start(argv);
    ASSERT_TRUE(d.wait_errors("ready")) << d.errors();
    const std::string log = d.errors();
    size_t lines = 0;
    std::string line;
    for (size_t pos = 0; pos < log.size();) {
      const size_t nl = log.find('\n', pos);
      const std::string l = log.substr(pos, nl - pos);
      if (l.find(file) != std::string::npos) ++lines, line = l;
      pos = nl == std::string::npos ? log.size() : nl + 1;
    }
    EXPECT_EQ(lines, 1u) << log;
    EXPECT_NE(line.find("gaond: state file " + file + ": not valid JSON"), std::string::npos)
        << log;
    auto [sl, list] = gaonctl(sock, {"--json", "list"});
    ASSERT_EQ(sl, 0) << list;
    EXPECT_EQ(json::parse(list).size(), 1u) << list;  // only --ikernel's
    auto [sc, id] = gaonctl(sock, {"create", "echo"});
    ASSERT_EQ(sc, 0) << id;
    auto [sa, out] = gaonctl(sock, {"attach", trimmed(id), "--flow", udp(w1)});
    ASSERT_EQ(sa, 0) << out;
    EXPECT_TRUE(echoes(w1)) << d.errors();
    EXPECT_EQ(d.stop(), 0);
  }
  EXPECT_TRUE(std::filesystem::exists(file + ".bad"));
  std::filesystem::remove_all(tmp);
}

}  // namespace
}  // namespace gaon::test
