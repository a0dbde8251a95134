// The AF_XDP bump in the wire, end to end in the netns testbed (scripts/testbed): the real
// script, real veths, the real XDP program and gaond in gaon-gaon, clients in gaon-client
// and servers in gaon-server (sockets made inside those namespaces by this process). Root
// only (network namespaces and XDP); CI runs as root.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/core.h>

#include "checker.h"
#include "frames.h"
#include "gaon/control.h"
#include "procs.h"
#include "tokens.h"

namespace gaon::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kServerIp = "10.77.0.2";

// A UDP server in gaon-server answering "server:" + what it got, until destroyed.
class UdpServer {
 public:
  explicit UdpServer(uint16_t port) : fd_(socket_in("gaon-server", SOCK_DGRAM)) {
    const sockaddr_in a = addr(kServerIp, port);
    ok_ = fd_ >= 0 && bind(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0;
    t_ = std::thread([this] {
      char buf[2048];
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0) continue;
        sockaddr_in from{};
        socklen_t len = sizeof(from);
        const ssize_t n =
            recvfrom(fd_, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &len);
        if (n < 0) continue;
        const std::string reply = "server:" + std::string(buf, size_t(n));
        sendto(fd_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
      }
    });
  }
  ~UdpServer() {
    stop_ = true;
    t_.join();
    close(fd_);
  }
  bool ok() const { return ok_; }

 private:
  int fd_;
  bool ok_ = false;
  std::atomic<bool> stop_{false};
  std::thread t_;
};

// A UDP client in gaon-client.
class UdpClient {
 public:
  UdpClient() : fd_(socket_in("gaon-client", SOCK_DGRAM)) {}
  ~UdpClient() { close(fd_); }
  std::optional<std::string> ask(uint16_t port, const std::string& what,
                                 std::chrono::milliseconds wait = 1000ms) {
    return udp_ask(fd_, addr(kServerIp, port), what, wait);
  }

 private:
  int fd_;
};

// `bytes` of random data over TCP from gaon-client to a server in gaon-server; "" when
// they arrive unchanged, or what went wrong.
std::string tcp_transfer(uint16_t port, size_t bytes) {
  const int l = socket_in("gaon-server", SOCK_STREAM);
  const sockaddr_in a = addr(kServerIp, port);
  const int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(l, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0 || listen(l, 1) != 0) {
    close(l);
    return std::string("server: ") + strerror(errno);
  }
  std::string sent(bytes, '\0');
  std::mt19937 rng(7);
  for (auto& ch : sent) ch = char(rng());
  std::string got;
  std::thread server([&] {
    pollfd p{l, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) return;
    const int c = accept(l, nullptr, nullptr);
    char buf[65536];
    ssize_t n;
    while ((n = recv(c, buf, sizeof(buf), 0)) > 0) got.append(buf, size_t(n));
    close(c);
  });
  std::string err;
  const int c = socket_in("gaon-client", SOCK_STREAM);
  timeval tv{5, 0};
  setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(c, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0)
    err = std::string("connect: ") + strerror(errno);
  for (size_t off = 0; err.empty() && off < sent.size();) {
    const ssize_t n = send(c, sent.data() + off, sent.size() - off, MSG_NOSIGNAL);
    if (n <= 0) err = std::string("send: ") + strerror(errno);
    off += size_t(std::max<ssize_t>(n, 0));
  }
  close(c);
  server.join();
  close(l);
  if (!err.empty()) return err;
  if (got != sent)
    return fmt::format("received {} of {} bytes, or different ones", got.size(), bytes);
  return "";
}

class BumpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0)
      GTEST_SKIP() << "needs root (network namespaces, XDP); CI runs the tests as root";
    // One test at a time owns the testbed (ctest runs tests in parallel processes, and
    // each gaond takes over both interfaces).
    std::string why;
    lock_ = take_testbed(&why);
    ASSERT_GE(lock_, 0) << why;
    sock_ = "/tmp/gaond-bump-" + std::to_string(getpid()) + ".sock";
    if (packet()) {
      // AF_PACKET needs the interfaces out of the bridge and without XDP (gaond refuses
      // otherwise); TearDown puts the testbed back.
      for (const char* i : {"wire0", "host0"}) {
        for (const char* mode : {"xdp", "xdpgeneric"})  // a gaond leaves its program there
          ASSERT_EQ(in_gaon({"/usr/bin/ip", "link", "set", "dev", i, mode, "off"}), 0);
        ASSERT_EQ(in_gaon({"/usr/bin/ip", "link", "set", i, "nomaster"}), 0);
      }
    }
    start_gaond();
  }
  void TearDown() override {
    ctl_.reset();
    gaond_.stop();
    if (packet()) {
      for (const char* i : {"wire0", "host0"})
        EXPECT_EQ(in_gaon({"/usr/bin/ip", "link", "set", i, "master", "br0"}), 0);
    }
    if (lock_ >= 0) close(lock_);
  }
  virtual bool packet() const { return false; }            // afpacket: ports instead of afxdp:
  virtual std::string xdp_mode() const { return "auto"; }  // (auto: generic between veths)
  static int in_gaon(std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"/usr/bin/ip", "netns", "exec", "gaon-gaon"});
    return run(argv).status;
  }
  void start_gaond() {
    const std::string kind = packet() ? "afpacket:" : "afxdp:";
    gaond_ = Child::start({"/usr/bin/ip", "netns", "exec", "gaon-gaon",
                           std::string(GAON_BIN_DIR) + "/gaond", "--wire", kind + "wire0", "--host",
                           kind + "host0", "--control", sock_, "--json-stats", "--xdp-mode",
                           xdp_mode()});
    ASSERT_TRUE(gaond_.wait_errors("ready")) << gaond_.errors();
    auto c = control::Client::connect(sock_);
    ASSERT_TRUE(c) << c.error();
    ctl_.emplace(std::move(*c));
  }
  uint64_t engine_wire_rx() {
    auto s = ctl_->call("stats");
    EXPECT_TRUE(s) << s.error();
    return s ? (*s)["wire"]["rx"].get<uint64_t>() : 0;
  }
  // `n` requests to each: gaond's echo answers the attached port byte for byte, the
  // application (a UdpServer) the other.
  static void ask_both(UdpClient& cl, uint16_t attached, uint16_t other, int n) {
    for (int i = 0; i < n; ++i) {
      const std::string m = mc_dgram("ping" + std::to_string(i), uint16_t(i));
      EXPECT_EQ(cl.ask(attached, m), m);
      EXPECT_EQ(cl.ask(other, m), "server:" + m);
    }
  }
  uint32_t create_echo_on(uint16_t port, uint64_t rate_bps = 0) {
    auto id = ctl_->call("create", {{"type", "echo"}, {"rate_bps", rate_bps}});
    EXPECT_TRUE(id) << id.error();
    const uint32_t n = (*id)["instance"];
    auto a = ctl_->call(
        "attach",
        {{"instance", n}, {"flow", "udp:" + std::string(kServerIp) + ":" + std::to_string(port)}});
    EXPECT_TRUE(a) << a.error();
    return n;
  }
  int lock_ = -1;
  std::string sock_;
  Child gaond_;
  std::optional<control::Client> ctl_;
};

TEST_F(BumpTest, PingAndATcpTransferCrossUnchanged) {
  const auto ping = run({"/usr/bin/ip", "netns", "exec", "gaon-client", "/usr/bin/ping", "-c", "3",
                         "-i", "0.2", "-W", "1", "-q", kServerIp});
  EXPECT_EQ(ping.status, 0) << ping.out << ping.err;
  EXPECT_EQ(tcp_transfer(free_port(), 1 << 20), "");  // 1 MiB
  // Nothing was attached: the engine saw none of it (the kernel forwarded everything).
  EXPECT_EQ(engine_wire_rx(), 0u);
}

TEST_F(BumpTest, AttachedFlowsAreAnsweredAndTheRestNeverReachesGaond) {
  const uint16_t attached = free_port(), other = free_port(), own = free_port();
  UdpServer srv(other);
  ASSERT_TRUE(srv.ok());
  const uint32_t id = create_echo_on(attached);
  UdpClient cl;
  ask_both(cl, attached, other, 20);
  EXPECT_EQ(engine_wire_rx(), 20u);  // only the attached flow's 20 requests reached gaond
  auto st = ctl_->call("stats", {{"instance", id}});
  ASSERT_TRUE(st) << st.error();
  EXPECT_EQ((*st)["counters"]["rx"], 20);
  // An application attaches its own socket (passed over the control socket; the address
  // is its own, since a bump preserves addresses).
  const int app = socket_in("gaon-server", SOCK_DGRAM);
  const sockaddr_in a = addr(kServerIp, own);
  ASSERT_EQ(bind(app, reinterpret_cast<const sockaddr*>(&a), sizeof(a)), 0);
  auto mine = ctl_->call("create", {{"type", "echo"}});
  ASSERT_TRUE(mine) << mine.error();
  auto att = ctl_->call("attach", {{"instance", (*mine)["instance"]}}, app);
  ASSERT_TRUE(att) << att.error();
  EXPECT_EQ((*att)["flows"][0], "udp:10.77.0.2:" + std::to_string(own));
  EXPECT_EQ(cl.ask(own, "hello"), "hello");
  // Detached: the flow goes back to the kernel path (to the application's socket).
  ASSERT_TRUE(ctl_->call("detach", {{"instance", (*mine)["instance"]},
                                    {"flow", "udp:10.77.0.2:" + std::to_string(own)}}));
  EXPECT_EQ(cl.ask(own, "after", 300ms), std::nullopt);  // nobody answers on app's socket
  char buf[64];
  const ssize_t n = recv(app, buf, sizeof(buf), MSG_DONTWAIT);
  EXPECT_EQ(std::string(buf, size_t(std::max<ssize_t>(n, 0))), "after");
  close(app);
}

// The bump offered far more than it may send for 2 s: a flood of requests to an echo whose
// replies are limited to 2 Mbit/s (some 2 300 a second, against 16 000 offered): its
// arbiter queue overflows (counted as instance_queue_full), gaond answers on
// its control socket, its memory stays put, another instance's well-behaved client still
// gets its answers, unattached traffic still crosses, and every frame gaond took is
// accounted for, port by port.
TEST_F(BumpTest, OverloadKeepsGaondResponsiveAndEveryFrameAccountedFor) {
  const uint16_t flooded = free_port(), calm = free_port(), other = free_port();
  UdpServer srv(other);
  ASSERT_TRUE(srv.ok());
  create_echo_on(flooded, 2'000'000);
  create_echo_on(calm);
  UdpClient cl;
  ASSERT_EQ(cl.ask(calm, "hello"), "hello");
  const uint64_t rss_before = rss_kib(gaond_.pid());
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> offered{0};
  // 32 frames every 2 ms, some 16 000 a second: several times what the instance may send,
  // well within what gaond reads (also built with sanitizers), so the other instance's
  // requests are not lost in a full receive ring before gaond sees them.
  const int flood_fd = socket_in("gaon-client", SOCK_DGRAM);
  std::thread flood([&] { flood_udp({flood_fd}, addr(kServerIp, flooded), stop, offered, 2ms); });
  int asked = 0, answered = 0, crossed = 0, stats_calls = 0;
  auto slowest = std::chrono::steady_clock::duration::zero();
  const auto end = std::chrono::steady_clock::now() + 2s;
  while (std::chrono::steady_clock::now() < end) {
    const std::string m = "c" + std::to_string(asked++);
    answered += cl.ask(calm, m, 200ms) == m;
    crossed += cl.ask(other, m, 200ms) == "server:" + m;
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(ctl_->call("stats"));
    slowest = std::max(slowest, std::chrono::steady_clock::now() - t0);
    ++stats_calls;
    std::this_thread::sleep_for(20ms);
  }
  stop = true;
  flood.join();
  close(flood_fd);
  const uint64_t rss_after = rss_kib(gaond_.pid());
  std::this_thread::sleep_for(300ms);
  auto s = ctl_->call("stats");
  ASSERT_TRUE(s) << s.error();
  const nlohmann::json& cons = (*s)["conservation"];
  const uint64_t took = (*s)["wire"]["rx"], sent = (*s)["wire"]["tx"];
  const uint64_t queue_full = cons["dropped"]["instance_queue_full"];
  std::printf(
      "offered %llu frames in 2 s, gaond took %llu, sent %llu, dropped %llu (queue full); calm "
      "client %d of %d answered, unattached %d of %d crossed; slowest stats call %lld ms; RSS "
      "%llu -> %llu KiB\n",
      (unsigned long long)offered.load(), (unsigned long long)took, (unsigned long long)sent,
      (unsigned long long)queue_full, answered, asked, crossed, asked,
      (long long)std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count(),
      (unsigned long long)rss_before, (unsigned long long)rss_after);
  EXPECT_TRUE(cons["all_balanced"].get<bool>()) << cons.dump(2);
  EXPECT_GT(took, 4 * sent);        // several times what it may send
  EXPECT_GT(queue_full, took / 2);  // and the rest is counted where it was dropped
  EXPECT_LT(slowest, 1000ms);
  EXPECT_LT(rss_after, rss_before + 16 * 1024);
  EXPECT_GE(answered, asked * 9 / 10);
  EXPECT_GE(crossed, asked * 9 / 10);
}

TEST_F(BumpTest, KillingGaondMidTrafficFailsOpen) {
  const uint16_t port = free_port();
  UdpServer srv(port);
  ASSERT_TRUE(srv.ok());
  create_echo_on(port);  // gaond answers for the application while it runs
  UdpClient cl;
  int by_gaond = 0, by_server = 0, lost = 0;
  for (int i = 0; i < 200; ++i) {
    if (i == 100) gaond_.signal(SIGKILL);
    const std::string m = "m" + std::to_string(i);
    const auto r = cl.ask(port, m, 200ms);
    if (!r)
      ++lost;
    else if (*r == m)
      ++by_gaond;
    else if (*r == "server:" + m)
      ++by_server;
  }
  EXPECT_GE(by_gaond, 99);   // before the kill (the one in flight at the kill may be lost)
  EXPECT_GE(by_server, 99);  // after it: the kernel forwards to the application
  EXPECT_LE(lost, 2);
  // A new gaond takes over the interfaces again.
  start_gaond();
  create_echo_on(port);
  EXPECT_EQ(cl.ask(port, "again"), "again");
}

// A gaond that is alive but stalled (SIGSTOP) keeps its sockets: the program must stop
// handing it frames once its lease (50 ms) runs out, and take the flows back when it polls
// again.
TEST_F(BumpTest, AStalledGaondIsBypassedUntilItPollsAgain) {
  const uint16_t port = free_port();
  UdpServer app(port);
  ASSERT_TRUE(app.ok());
  create_echo_on(port);
  UdpClient cl;
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(cl.ask(port, "a" + std::to_string(i)), "a" + std::to_string(i));
  gaond_.signal(SIGSTOP);
  std::this_thread::sleep_for(100ms);  // past the lease
  const auto t0 = std::chrono::steady_clock::now();
  int by_server = 0;
  for (int i = 0; i < 50; ++i)
    by_server += cl.ask(port, "b" + std::to_string(i), 200ms) == "server:b" + std::to_string(i);
  const auto per = (std::chrono::steady_clock::now() - t0) / 50;
  EXPECT_EQ(by_server, 50);  // the application answers, at once
  EXPECT_LT(per, 50ms);
  gaond_.signal(SIGCONT);
  std::this_thread::sleep_for(50ms);
  int by_gaond = 0;
  for (int i = 0; i < 20; ++i)
    by_gaond += cl.ask(port, "c" + std::to_string(i), 500ms) == "c" + std::to_string(i);
  EXPECT_GE(by_gaond, 19);  // gaond has the flow again
  auto s = ctl_->call("stats");
  ASSERT_TRUE(s) << s.error();
  EXPECT_GE((*s)["bump"]["xdp"]["lease_expired"].get<uint64_t>(), 50u) << s->dump();
  EXPECT_GE((*s)["bump"]["lease_lapses"].get<uint64_t>(), 1u) << s->dump();
  EXPECT_GE((*s)["gaps"].get<uint64_t>(), 1u) << s->dump();
}

// memcached in gaon-server, started through gaon-run with kvcache on its UDP and TCP
// sockets; clients in gaon-client keep using memcached's own address.
// auth in the bump: the example CoAP server (it checks nothing) in gaon-server attaches
// auth to its own socket; forged requests from gaon-client never reach it.
TEST_F(BumpTest, AuthDropsForgedCoapRequestsBeforeTheServer) {
  const uint16_t port = free_port();
  const auto key = test::unhex(std::string(64, '5'));
  Child srv =
      Child::start({"/usr/bin/ip", "netns", "exec", "gaon-server",
                    std::string(GAON_BIN_DIR) + "/gaon-example-coap",
                    std::string(kServerIp) + ":" + std::to_string(port), test::hex(key), sock_});
  ASSERT_TRUE(srv.wait_output("checks every request")) << srv.errors();
  UdpClient cl;
  const std::string hs256 = R"({"alg":"HS256"})";
  const std::string exp = R"({"exp":)" + std::to_string(time(nullptr) + 300) + "}";
  auto req = [](uint16_t mid, const std::string& jwt) {
    return test::coap_msg(1, 1, mid, "", {{11, "t"}, {65000, jwt}});
  };
  auto r = cl.ask(port, req(1, test::make_jwt(hs256, exp, key)), 2000ms);
  ASSERT_TRUE(r);
  EXPECT_NE(r->find("served 1"), std::string::npos);
  EXPECT_FALSE(
      cl.ask(port, req(2, test::make_jwt(hs256, exp, test::unhex(std::string(64, '6')))), 300ms));
  EXPECT_FALSE(cl.ask(port, req(3, test::make_jwt(hs256, R"({"exp":5})", key)), 300ms));
  r = cl.ask(port, req(4, test::make_jwt(hs256, exp, key)), 2000ms);
  ASSERT_TRUE(r);
  EXPECT_NE(r->find("served 2"), std::string::npos);
  auto l = ctl_->call("list");
  ASSERT_TRUE(l && l->size() == 1) << (l ? l->dump() : l.error());
  auto st = ctl_->call("call", {{"instance", (*l)[0]["instance"]}, {"name", "stats"}});
  ASSERT_TRUE(st) << st.error();
  EXPECT_EQ((*st)["passed"], 2) << st->dump();
  EXPECT_EQ((*st)["dropped_by_reason"]["bad_signature"], 1) << st->dump();
  EXPECT_EQ((*st)["dropped_by_reason"]["expired"], 1) << st->dump();
  srv.stop();
}

// memcached (`mc`) in gaon-server started through gaon-run --tcp with a kvcache instance
// (capacity 16M and `params`) on gaond's control socket `sock`.
std::vector<std::string> memcached_via_gaon_run(const std::string& sock,
                                                const std::vector<std::string>& params,
                                                const std::vector<std::string>& mc) {
  std::vector<std::string> argv = {
      "/usr/bin/ip",  "netns", "exec",      "gaon-server", std::string(GAON_BIN_DIR) + "/gaon-run",
      "--control",    sock,    "--ikernel", "kvcache",     "--param",
      "capacity=16M", "--tcp"};
  for (const auto& p : params) argv.insert(argv.end(), {"--param", p});
  argv.push_back("--");
  argv.insert(argv.end(), mc.begin(), mc.end());
  return argv;
}

class BumpMemcachedTest : public BumpTest {
 protected:
  void SetUp() override {
    if (access("/usr/bin/memcached", X_OK) != 0) GTEST_SKIP() << "memcached is missing";
    BumpTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    port_ = free_port();
    // Keys not cached get another GET through to gaond once a minute, not every second:
    // the tests count what the XDP program keeps, whatever the machine's speed.
    std::vector<std::string> params = {"hint_age_ms=60000"};
    if (unsafe()) params.push_back("unsafe_no_invalidation=true");
    mc_ = Child::start(memcached_via_gaon_run(sock_, params, memcached_argv(port_, kServerIp)));
    ASSERT_TRUE(mc_.wait_errors("attached to the program's TCP socket too")) << mc_.errors();
  }
  void TearDown() override {
    mc_.stop();
    BumpTest::TearDown();
  }
  nlohmann::json kv_stats() {
    auto l = ctl_->call("list");
    EXPECT_TRUE(l && l->size() == 1) << (l ? l->dump() : l.error());
    if (!l || l->empty()) return {};
    auto s = ctl_->call("call", {{"instance", (*l)[0]["instance"]}, {"name", "stats"}});
    EXPECT_TRUE(s) << s.error();
    return s ? *s : nlohmann::json{};
  }
  virtual bool unsafe() const { return false; }
  // Hits served, by the fast path in XDP or by gaond.
  static uint64_t in_xdp(const nlohmann::json& st) {
    return st.contains("fast_path") ? st["fast_path"].value("answered", uint64_t{0}) : 0;
  }
  static uint64_t served(const nlohmann::json& st) {
    return st.value("hits", uint64_t{0}) + in_xdp(st);
  }
  uint16_t port_ = 0;
  Child mc_;
};

// A memcached UDP client in namespace `ns`, talking to memcached's address.
McUdp mc_client(const std::string& ns, uint16_t port) {
  return McUdp(socket_in(ns, SOCK_DGRAM), addr(kServerIp, port));
}

TEST_F(BumpMemcachedTest, RepliesAreByteIdenticalAndATcpWriteSplitInPiecesInvalidates) {
  McUdp client = mc_client("gaon-client", port_);
  McUdp local = mc_client("gaon-server", port_);  // memcached's own answer, direct
  const int tcp = socket_in("gaon-client", SOCK_STREAM);
  const int one = 1;
  setsockopt(tcp, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const sockaddr_in srv = addr(kServerIp, port_);
  ASSERT_EQ(connect(tcp, reinterpret_cast<const sockaddr*>(&srv), sizeof(srv)), 0);
  ASSERT_EQ(tcp_ask(tcp, "set foo 7 0 3\r\nold\r\n", 0), "STORED\r\n");
  for (uint16_t id = 1; id <= 3; ++id) {  // a miss, then hits
    const auto direct = local.reply_to("get foo\r\n", id, 2000ms);
    ASSERT_TRUE(direct);
    EXPECT_EQ(client.reply_to("get foo\r\n", id, 2000ms), direct) << id;
  }
  auto st = kv_stats();
  EXPECT_EQ(served(st), 2u) << st.dump();
  EXPECT_EQ(in_xdp(st), 2u) << "both hits answered in the driver: " << st.dump();
  // A write over TCP, 3 bytes per segment: no GET after its STORED sees the old value.
  ASSERT_EQ(tcp_ask(tcp, "set foo 7 0 3\r\nnew\r\n", 3, 2ms), "STORED\r\n");
  EXPECT_EQ(client.reply_to("get foo\r\n", 9, 2000ms),
            mc_dgram("VALUE foo 7 3\r\nnew\r\nEND\r\n", 9));
  st = kv_stats();
  EXPECT_GE(st["tcp"]["writes"], 2) << st.dump();
  EXPECT_EQ(st["tcp"]["untracked"], 0) << st.dump();
  EXPECT_EQ(st["tcp"]["gaps"], 0) << st.dump();
  close(tcp);
}

TEST_F(BumpMemcachedTest, ARestartedGaondGetsTheInstanceBackFromGaonRun) {
  McUdp client = mc_client("gaon-client", port_);
  ctl_.reset();
  EXPECT_EQ(gaond_.stop(), 0);
  // Meanwhile the kernel forwards: memcached itself answers.
  EXPECT_EQ(client.reply_to("get nothing\r\n", 1, 2000ms), mc_dgram("END\r\n", 1));
  start_gaond();
  ASSERT_TRUE(mc_.wait_errors("attached again")) << mc_.errors();
  // The TCP socket follows (its line from the first start is already in the log: wait for
  // the flow itself).
  Result<nlohmann::json> l = make_error("not asked yet");
  for (int i = 0; i < 100; ++i) {
    l = ctl_->call("list");
    ASSERT_TRUE(l) << l.error();
    if (l->size() == 1 && (*l)[0]["flows"].size() == 2) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(l->size(), 1u) << l->dump();
  EXPECT_EQ((*l)[0]["flows"].size(), 2u) << l->dump() << mc_.errors();  // UDP and TCP
  // And it serves again: a miss, then a hit.
  McUdp local = mc_client("gaon-server", port_);
  ASSERT_TRUE(local.reply_to("set k 0 0 1\r\nv\r\n", 2, 2000ms));
  for (uint16_t id = 3; id <= 4; ++id)
    EXPECT_EQ(client.reply_to("get k\r\n", id, 2000ms),
              mc_dgram("VALUE k 0 1\r\nv\r\nEND\r\n", id));
  EXPECT_EQ(served(kv_stats()), 1u);
}

// kvcache's fast path, end to end: a GET for a key it does not hold reaches gaond once (so
// it can learn the key), and then goes to memcached in the kernel, as does memcached's miss
// reply on its way back; GETs for cached keys are answered in XDP; a write makes its key's
// next GET reach gaond, which learns the new value.
TEST_F(BumpMemcachedTest, HitsAreAnsweredInXdpAndMissesStayInTheKernel) {
  McUdp client = mc_client("gaon-client", port_);
  McUdp local = mc_client("gaon-server", port_);
  auto fp = [&] { return kv_stats()["fast_path"]; };
  ASSERT_EQ(fp()["active"], true) << kv_stats().dump();
  ASSERT_TRUE(local.reply_to("set hot 0 0 1\r\nh\r\n", 1, 2000ms));
  const uint64_t fwd0 = fp()["forwarded"];
  const uint64_t requests0 = kv_stats()["requests"];
  for (uint16_t id = 10; id < 20; ++id)
    ASSERT_EQ(client.reply_to("get absent\r\n", id, 2000ms), mc_dgram("END\r\n", id));
  EXPECT_EQ(kv_stats()["requests"].get<uint64_t>() - requests0, 1u);  // only the first
  // 9 GETs to memcached in the kernel, 10 END replies to the client in the kernel
  EXPECT_EQ(fp()["forwarded"].get<uint64_t>() - fwd0, 19u) << fp().dump();
  for (uint16_t id = 20; id < 25; ++id)  // learned from the first reply, then served
    ASSERT_EQ(client.reply_to("get hot\r\n", id, 2000ms),
              mc_dgram("VALUE hot 0 1\r\nh\r\nEND\r\n", id));
  EXPECT_EQ(in_xdp(kv_stats()), 4u) << kv_stats().dump();
  EXPECT_EQ(kv_stats()["hits"], 0) << "none by gaond";
  // A write (through gaond, over UDP): the key may exist now, so its next GET reaches gaond.
  ASSERT_EQ(client.reply_to("set absent 0 0 1\r\na\r\n", 30, 2000ms), mc_dgram("STORED\r\n", 30));
  for (uint16_t id = 31; id < 34; ++id)
    ASSERT_EQ(client.reply_to("get absent\r\n", id, 2000ms),
              mc_dgram("VALUE absent 0 1\r\na\r\nEND\r\n", id));
  EXPECT_EQ(in_xdp(kv_stats()), 6u) << kv_stats().dump();
  EXPECT_EQ(fp()["torn"], 0) << fp().dump();
}

// Coexistence (issue 14): gaond's steering program joins libxdp's dispatcher, so
// `xdp-loader status` lists it and xdp-filter (priority 10, before gaon's 100) runs on the
// same interface: a port it denies is dropped while kvcache's hits are still answered in
// XDP; unloaded, the port is back; gaond stopped, the filter stays.
class BumpXdpCoexistTest : public BumpMemcachedTest {
 protected:
  void TearDown() override {
    (void)in_gaon({"/usr/sbin/xdp-filter", "unload", "wire0"});  // (if a test left it)
    BumpMemcachedTest::TearDown();
  }
  static Ran in_gaon_out(std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"/usr/bin/ip", "netns", "exec", "gaon-gaon"});
    return run(argv);
  }
  static std::string status(const std::string& iface) {
    const Ran r = in_gaon_out({"/usr/sbin/xdp-loader", "status", iface});
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    return r.out;
  }
  static size_t count(const std::string& text, const std::string& word) {
    size_t n = 0;
    for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++n;
    return n;
  }
};

TEST_F(BumpXdpCoexistTest, XdpFilterRunsBesideGaonInLibxdpsDispatcher) {
  if (access("/usr/sbin/xdp-filter", X_OK) != 0 || access("/usr/sbin/xdp-loader", X_OK) != 0)
    GTEST_SKIP() << "xdp-tools is missing (scripts/setup installs it)";
  auto s = ctl_->call("stats");
  ASSERT_TRUE(s) << s.error();
  if ((*s)["bump"]["xdp_attach"] == "direct")  // (WithoutTheDispatcher... tests that)
    GTEST_SKIP() << "libxdp's dispatcher cannot be used on this machine: "
                 << (*s)["bump"]["xdp_attach_why"].get<std::string>();
  ASSERT_EQ((*s)["bump"]["xdp_attach"], "dispatcher") << s->dump();
  EXPECT_EQ((*s)["bump"]["xdp_run_prio"], 100) << s->dump();
  for (const char* i : {"wire0", "host0"}) {
    const std::string st = status(i);
    EXPECT_EQ(count(st, "xdp_dispatcher"), 1u) << st;
    EXPECT_EQ(count(st, "gaon_steer"), 1u) << st;
  }
  const uint16_t blocked = free_port();
  UdpServer srv(blocked);
  ASSERT_TRUE(srv.ok());
  UdpClient cl;
  McUdp client = mc_client("gaon-client", port_);
  McUdp local = mc_client("gaon-server", port_);
  ASSERT_TRUE(local.reply_to("set hot 0 0 1\r\nh\r\n", 1, 2000ms));
  const std::string hot = "VALUE hot 0 1\r\nh\r\nEND\r\n";
  uint16_t id = 10;
  auto hits_in_xdp = [&](int n) {  // n GETs of the cached key, answered in XDP
    const uint64_t before = in_xdp(kv_stats());
    for (int k = 0; k < n; ++k, ++id)
      EXPECT_EQ(client.reply_to("get hot\r\n", id, 2000ms), mc_dgram(hot, id));
    return in_xdp(kv_stats()) - before;
  };
  EXPECT_GE(hits_in_xdp(3), 2u);  // (the first may be the miss that learns it)
  EXPECT_EQ(cl.ask(blocked, "open"), "server:open");

  // xdp-filter in the same mode (generic between veths), denying the port on the wire.
  Ran r = in_gaon_out({"/usr/sbin/xdp-filter", "load", "-m", "skb", "wire0"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  r = in_gaon_out({"/usr/sbin/xdp-filter", "port", std::to_string(blocked)});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  std::string st = status("wire0");
  EXPECT_EQ(count(st, "xdp_dispatcher"), 1u) << st;
  EXPECT_EQ(count(st, "gaon_steer"), 1u) << st;
  ASSERT_NE(st.find("xdpfilt_"), std::string::npos) << st;
  EXPECT_LT(st.find("xdpfilt_"), st.find("gaon_steer")) << "the filter runs first: " << st;
  EXPECT_EQ(cl.ask(blocked, "closed", 500ms), std::nullopt);
  EXPECT_EQ(hits_in_xdp(5), 5u) << kv_stats().dump();
  // A write through gaond and a GET that misses, to memcached and back: gaond's AF_XDP
  // socket (an XSKMAP redirect) and the in-kernel forwarding (a devmap) from the dispatcher.
  ASSERT_EQ(client.reply_to("set k 0 0 1\r\nv\r\n", 90, 2000ms), mc_dgram("STORED\r\n", 90));
  EXPECT_EQ(client.reply_to("get k\r\n", 91, 2000ms), mc_dgram("VALUE k 0 1\r\nv\r\nEND\r\n", 91));

  // Unloaded: the port is open again, gaon still answers, and is still in the dispatcher.
  r = in_gaon_out({"/usr/sbin/xdp-filter", "unload", "wire0"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  st = status("wire0");
  EXPECT_EQ(st.find("xdpfilt_"), std::string::npos) << st;
  EXPECT_EQ(count(st, "gaon_steer"), 1u) << st;
  EXPECT_EQ(cl.ask(blocked, "again"), "server:again");
  EXPECT_EQ(hits_in_xdp(3), 3u) << kv_stats().dump();

  // Loaded again, then gaond stopped: the filter stays and still drops; gaon's program
  // stays too (the bump's fail-open) and the kernel forwards to memcached.
  r = in_gaon_out({"/usr/sbin/xdp-filter", "load", "-m", "skb", "wire0"});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  r = in_gaon_out({"/usr/sbin/xdp-filter", "port", std::to_string(blocked)});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(cl.ask(blocked, "closed again", 500ms), std::nullopt);
  ctl_.reset();
  EXPECT_EQ(gaond_.stop(), 0);
  st = status("wire0");
  EXPECT_NE(st.find("xdpfilt_"), std::string::npos) << st;
  EXPECT_EQ(count(st, "gaon_steer"), 1u) << st;
  EXPECT_EQ(cl.ask(blocked, "still closed", 500ms), std::nullopt);
  EXPECT_EQ(client.reply_to("get hot\r\n", 95, 2000ms), mc_dgram(hot, 95))
      << "memcached answers, forwarded in the kernel";
  // A new gaond takes gaon's place in the dispatcher, beside the filter (one gaon_steer).
  start_gaond();
  st = status("wire0");
  EXPECT_NE(st.find("xdpfilt_"), std::string::npos) << st;
  EXPECT_EQ(count(st, "gaon_steer"), 1u) << st;
  EXPECT_EQ(cl.ask(blocked, "closed with the new one", 500ms), std::nullopt);
}

// Where libxdp cannot use its dispatcher (here: no bpffs where it looks), gaond attaches
// its program directly, as before, and says so in its startup line and stats; the fast
// path answers and fail-open forwards as ever.
TEST_F(BumpXdpCoexistTest, WithoutTheDispatcherGaonAttachesDirectlyAndSaysWhy) {
  ctl_.reset();
  EXPECT_EQ(gaond_.stop(), 0);
  const std::string bpffs = getenv("LIBXDP_BPFFS") ? getenv("LIBXDP_BPFFS") : "";
  setenv("LIBXDP_BPFFS", "/tmp/gaon-no-bpffs-here", 1);
  start_gaond();
  setenv("LIBXDP_BPFFS", bpffs.c_str(), 1);
  ASSERT_TRUE(mc_.wait_errors("attached again")) << mc_.errors();
  EXPECT_NE(gaond_.errors().find("attached directly, not through libxdp's dispatcher"),
            std::string::npos)
      << gaond_.errors();
  auto s = ctl_->call("stats");
  ASSERT_TRUE(s) << s.error();
  EXPECT_EQ((*s)["bump"]["xdp_attach"], "direct") << s->dump();
  EXPECT_NE((*s)["bump"]["xdp_attach_why"].get<std::string>().find("bpffs"), std::string::npos)
      << s->dump();
  if (access("/usr/sbin/xdp-loader", X_OK) == 0) {
    const std::string st = status("wire0");
    EXPECT_EQ(count(st, "gaon_steer"), 1u) << st;
    EXPECT_EQ(count(st, "xdp_dispatcher"), 0u) << st;
  }
  if (access("/usr/sbin/xdp-filter", X_OK) == 0) {  // libxdp will not replace it: refused
    const Ran r = in_gaon_out({"/usr/sbin/xdp-filter", "load", "-m", "skb", "wire0"});
    EXPECT_NE(r.status, 0) << r.out << r.err;
    EXPECT_EQ(count(status("wire0"), "gaon_steer"), 1u);
  }
  McUdp client = mc_client("gaon-client", port_);
  McUdp local = mc_client("gaon-server", port_);
  ASSERT_TRUE(local.reply_to("set hot 0 0 1\r\nh\r\n", 1, 2000ms));
  const std::string hot = "VALUE hot 0 1\r\nh\r\nEND\r\n";
  for (uint16_t id = 2; id < 6; ++id)
    EXPECT_EQ(client.reply_to("get hot\r\n", id, 2000ms), mc_dgram(hot, id));
  EXPECT_GE(in_xdp(kv_stats()), 3u) << kv_stats().dump();
  ctl_.reset();
  gaond_.signal(SIGKILL);
  gaond_.stop();
  EXPECT_EQ(client.reply_to("get hot\r\n", 7, 2000ms), mc_dgram(hot, 7)) << "fail-open";
}

// gaond stopped (SIGSTOP) with a value cached: memcached answers GETs and a TCP write in
// the meantime; after SIGCONT the next GET returns the value written during the stall,
// never the one cached before it. Then killed (SIGKILL): memcached answers, nothing stale.
TEST_F(BumpMemcachedTest, AWriteMadeWhileGaondWasStalledIsNeverHiddenAfterward) {
  McUdp client = mc_client("gaon-client", port_);
  const int tcp = socket_in("gaon-client", SOCK_STREAM);
  const sockaddr_in srv = addr(kServerIp, port_);
  ASSERT_EQ(connect(tcp, reinterpret_cast<const sockaddr*>(&srv), sizeof(srv)), 0);
  auto value = [](uint16_t id, const std::string& v) {
    return mc_dgram("VALUE k 0 " + std::to_string(v.size()) + "\r\n" + v + "\r\nEND\r\n", id);
  };
  ASSERT_EQ(tcp_ask(tcp, "set k 0 0 2\r\nv1\r\n", 0), "STORED\r\n");
  for (uint16_t id = 1; id <= 3; ++id)
    ASSERT_EQ(client.reply_to("get k\r\n", id, 2000ms), value(id, "v1"));
  const uint64_t hits = served(kv_stats());
  EXPECT_EQ(hits, 2u);
  gaond_.signal(SIGSTOP);
  std::this_thread::sleep_for(100ms);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(tcp_ask(tcp, "set k 0 0 2\r\nv2\r\n", 0), "STORED\r\n");
  EXPECT_EQ(client.reply_to("get k\r\n", 10, 2000ms), value(10, "v2"));  // memcached itself
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1000ms);
  gaond_.signal(SIGCONT);
  for (uint16_t id = 11; id <= 14; ++id)
    EXPECT_EQ(client.reply_to("get k\r\n", id, 2000ms), value(id, "v2")) << id;
  const auto st = kv_stats();
  EXPECT_GE(st["gaps"].get<uint64_t>(), 1u) << st.dump();
  // Killed: the kernel forwards (fail-open); a write, then a GET, from memcached.
  ctl_.reset();
  gaond_.signal(SIGKILL);
  EXPECT_EQ(tcp_ask(tcp, "set k 0 0 2\r\nv3\r\n", 0), "STORED\r\n");
  EXPECT_EQ(client.reply_to("get k\r\n", 20, 2000ms), value(20, "v3"));
  close(tcp);
}

Workload tcp_write_workload() {
  Workload w;
  w.clients = 4;
  w.keys = 6;
  w.duration = 3000ms;
  w.write_percent = 20;
  w.writes_over_tcp = true;
  w.tcp_piece = 5;  // "set hot1 0 0 5\r\n..." crosses in pieces of 5 bytes
  w.make_socket = [](int type) { return socket_in("gaon-client", type); };
  return w;
}

TEST_F(BumpMemcachedTest, NoGetReturnsAValueOlderThanAnAcknowledgedTcpWrite) {
  Workload w = tcp_write_workload();
  w.server = addr(kServerIp, port_);
  const auto ops = run_workload(w);
  size_t gets = 0, writes = 0;
  for (const auto& op : ops) (op.kind == Op::get ? gets : writes)++;
  EXPECT_GT(gets, 500u);
  EXPECT_GT(writes, 50u);
  EXPECT_EQ(count_stale(ops), 0u);
  const auto st = kv_stats();
  EXPECT_GT(served(st), 50u) << st.dump();  // the cache was really used
  EXPECT_GT(in_xdp(st), 0u) << st.dump();   // in the driver too
  EXPECT_GE(st["tcp"]["writes"].get<uint64_t>(), writes) << st.dump();
  EXPECT_GE(st["tcp"]["acks"].get<uint64_t>(), writes) << st.dump();  // replies followed
  EXPECT_EQ(st["tcp"]["acks_untracked"], 0) << st.dump();
}

// The same bump in native XDP, the mode a real NIC runs: the veths at both ends get an
// XDP_PASS program (a veth receiving XDP_TX or redirected frames only runs its NAPI with
// one). Hits are answered in the driver byte for byte as memcached would, and the checker
// finds nothing stale.
class BumpNativeMemcachedTest : public BumpMemcachedTest {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces); CI runs as root";
    const std::string pass = std::string(GAON_BIN_DIR) + "/xdp_pass.bpf.o";
    for (auto [ns, dev] : kEnds)
      run({"/usr/bin/ip", "-n", ns, "link", "set", "dev", dev, "xdpdrv", "off"});
    BumpMemcachedTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    for (auto [ns, dev] : kEnds) {
      const auto r = run({"/usr/bin/ip", "-n", ns, "link", "set", "dev", dev, "xdpdrv", "obj", pass,
                          "sec", "xdp"});
      ASSERT_EQ(r.status, 0) << ns << " " << dev << ": " << r.out << r.err;
    }
  }
  void TearDown() override {
    BumpMemcachedTest::TearDown();
    for (auto [ns, dev] : kEnds)
      run({"/usr/bin/ip", "-n", ns, "link", "set", "dev", dev, "xdpdrv", "off"});
  }
  std::string xdp_mode() const override { return "native"; }
  static constexpr std::pair<const char*, const char*> kEnds[] = {{"gaon-client", "cl0"},
                                                                  {"gaon-server", "sv0"}};
};

TEST_F(BumpNativeMemcachedTest, HitsAreAnsweredInNativeXdpAndNothingStaleIsServed) {
  auto s = ctl_->call("stats");
  ASSERT_TRUE(s) << s.error();
  EXPECT_EQ((*s)["bump"]["xdp_mode"], "native") << s->dump();
  McUdp client = mc_client("gaon-client", port_);
  McUdp local = mc_client("gaon-server", port_);
  ASSERT_TRUE(local.reply_to("set foo 7 0 3\r\nbar\r\n", 1, 2000ms));
  for (uint16_t id = 2; id <= 5; ++id) {  // a miss, then hits
    const auto direct = local.reply_to("gets foo\r\n", id, 2000ms);
    ASSERT_TRUE(direct);
    EXPECT_EQ(client.reply_to("gets foo\r\n", id, 2000ms), direct) << id;
  }
  EXPECT_EQ(in_xdp(kv_stats()), 3u) << kv_stats().dump();
  Workload w = tcp_write_workload();
  w.server = addr(kServerIp, port_);
  w.pin_clients = true;
  const auto ops = run_workload(w);
  EXPECT_EQ(count_stale(ops), 0u);
  EXPECT_GT(ops.size(), 500u);
  EXPECT_GT(in_xdp(kv_stats()), 100u) << kv_stats().dump();
}

// Two receive queues, one per CPU: the testbed's veths have two queues, the clients' flows
// spread over them by hash, and wire0's NAPI runs in two threads pinned one to each CPU,
// so its fast path runs on both at once while gaond (one AF_XDP socket per queue) fills
// and invalidates. TCP writes in pieces of 5 bytes, UDP GETs from 6 clients, 6 s: nothing
// stale, hits answered in XDP on both CPUs, frames on both queues reached gaond, and the
// same run against the unsafe cache is caught (BumpNativeUnsafeMemcachedTest).
class TwoQueues {
 public:
  // Threaded NAPI on wire0, its queues' threads pinned to CPUs 0 and 1.
  TwoQueues() {
    set_threaded(1);
    std::vector<int> pids;
    for (int i = 0; i < 50 && pids.size() < 2; ++i) {
      pids.clear();
      const auto r = run({"/usr/bin/pgrep", "^napi/wire0-"});
      std::istringstream in(r.out);
      for (int pid; in >> pid;) pids.push_back(pid);
      if (pids.size() < 2) std::this_thread::sleep_for(20ms);
    }
    for (size_t i = 0; i < pids.size(); ++i)
      pinned_ +=
          run({"/usr/bin/taskset", "-pc", std::to_string(i % 2), std::to_string(pids[i])}).status ==
          0;
  }
  ~TwoQueues() { set_threaded(0); }
  int pinned() const { return pinned_; }
  // wire0's frames per receive queue, as veth counts them in native XDP (ethtool -S).
  static std::vector<uint64_t> xdp_packets() {
    const auto r =
        run({"/usr/bin/ip", "netns", "exec", "gaon-gaon", "/usr/sbin/ethtool", "-S", "wire0"});
    std::vector<uint64_t> n(2, 0);
    std::istringstream in(r.out);
    for (std::string name, v; in >> name >> v;)
      for (size_t q = 0; q < n.size(); ++q)
        if (name == "rx_queue_" + std::to_string(q) + "_xdp_packets:") n[q] = std::stoull(v);
    return n;
  }

 private:
  static void set_threaded(int on) {
    run({"/usr/bin/ip", "netns", "exec", "gaon-gaon", "/bin/sh", "-c",
         "echo " + std::to_string(on) + " > /sys/class/net/wire0/threaded"});
  }
  int pinned_ = 0;
};

Workload two_queue_workload() {
  Workload w = tcp_write_workload();
  w.server = addr(kServerIp, 0);
  w.clients = 6;
  w.keys = 4;  // few keys: fills and invalidations of the same slots all the time
  w.duration = 6000ms;
  w.write_percent = 30;
  w.pin_clients = true;
  return w;
}

TEST_F(BumpNativeMemcachedTest, TwoQueuesOnTwoCpusServeFromXdpAndNothingStale) {
  TwoQueues queues;
  ASSERT_EQ(queues.pinned(), 2) << "wire0 should have one NAPI thread per queue";
  const auto before_q = TwoQueues::xdp_packets();
  auto s0 = ctl_->call("stats");
  ASSERT_TRUE(s0) << s0.error();
  ASSERT_EQ((*s0)["wire"]["port_stats"]["rx_by_queue"].size(), 2u) << (*s0)["wire"].dump();
  Workload w = two_queue_workload();
  w.server = addr(kServerIp, port_);
  const auto before = kv_stats();
  const auto ops = run_workload(w);
  EXPECT_EQ(count_stale(ops), 0u);
  size_t gets = 0, writes = 0;
  for (const auto& op : ops) (op.kind == Op::get ? gets : writes)++;
  EXPECT_GT(gets, 2000u);
  EXPECT_GT(writes, 500u);
  const auto st = kv_stats();
  EXPECT_GT(in_xdp(st) - in_xdp(before), 500u) << st.dump();
  EXPECT_GT(st["fills"].get<uint64_t>(), 200u) << st.dump();
  EXPECT_GT(st["invalidations"].get<uint64_t>(), 200u) << st.dump();
  const auto& by_cpu = st["fast_path"]["answered_by_cpu"];
  ASSERT_GE(by_cpu.size(), 2u);
  for (unsigned c = 0; c < 2; ++c)
    EXPECT_GT(by_cpu[c].get<uint64_t>(), 100u) << "CPU " << c << ": " << st["fast_path"].dump();
  const auto after_q = TwoQueues::xdp_packets();
  auto s1 = ctl_->call("stats");
  ASSERT_TRUE(s1) << s1.error();
  for (size_t q = 0; q < 2; ++q) {
    EXPECT_GT(after_q[q] - before_q[q], 1000u) << "wire0 queue " << q;
    EXPECT_GT((*s1)["wire"]["port_stats"]["rx_by_queue"][q].get<uint64_t>() -
                  (*s0)["wire"]["port_stats"]["rx_by_queue"][q].get<uint64_t>(),
              50u)
        << "gaond's socket on wire0 queue " << q << ": " << (*s1)["wire"].dump();
  }
}

class BumpNativeUnsafeMemcachedTest : public BumpNativeMemcachedTest {
 protected:
  bool unsafe() const override { return true; }
};

TEST_F(BumpNativeUnsafeMemcachedTest, TheCheckerCatchesItOnTwoQueuesToo) {
  TwoQueues queues;
  ASSERT_EQ(queues.pinned(), 2);
  Workload w = two_queue_workload();
  w.server = addr(kServerIp, port_);
  w.duration = 3000ms;
  EXPECT_GT(count_stale(run_workload(w)), 0u) << kv_stats().dump();
}

// Readers on every CPU at once: UDP clients pinned to each CPU (generic XDP on veth runs
// the fast path on the sender's CPU), TCP writes in pieces of 5 bytes, for 6 s; gaond fills
// and invalidates the table all along. No GET returns a value older than an acknowledged
// write, hits are answered in XDP on both CPUs, and the per-slot counters were exercised.
TEST_F(BumpMemcachedTest, ConcurrentReadersInXdpNeverSeeAStaleOrTornValue) {
  Workload w = tcp_write_workload();
  w.server = addr(kServerIp, port_);
  w.clients = 6;
  w.keys = 4;  // few keys: fills and invalidations of the same slots all the time
  w.duration = 6000ms;
  w.write_percent = 30;
  w.pin_clients = true;
  const auto before = kv_stats();
  const auto ops = run_workload(w);
  EXPECT_EQ(count_stale(ops), 0u);
  const auto st = kv_stats();
  size_t gets = 0, writes = 0;
  for (const auto& op : ops) (op.kind == Op::get ? gets : writes)++;
  EXPECT_GT(gets, 2000u);
  EXPECT_GT(writes, 500u);
  EXPECT_GT(in_xdp(st) - in_xdp(before), 500u) << st.dump();
  EXPECT_GT(st["fills"].get<uint64_t>(), 200u) << st.dump();
  EXPECT_GT(st["invalidations"].get<uint64_t>(), 200u) << st.dump();
  // Which CPUs answered: the program's per-CPU counters.
  const auto& by_cpu = st["fast_path"]["answered_by_cpu"];
  const unsigned cpus = std::min(std::thread::hardware_concurrency(), unsigned(by_cpu.size()));
  for (unsigned c = 0; c < cpus; ++c)
    EXPECT_GT(by_cpu[c].get<uint64_t>(), 100u) << "CPU " << c << ": " << st["fast_path"].dump();
}

// The negative control: the same run against a cache that ignores writes is caught.
class BumpUnsafeMemcachedTest : public BumpMemcachedTest {
 protected:
  bool unsafe() const override { return true; }
};

TEST_F(BumpUnsafeMemcachedTest, TheCheckerCatchesACacheThatIgnoresTcpWrites) {
  Workload w = tcp_write_workload();
  w.server = addr(kServerIp, port_);
  EXPECT_GT(count_stale(run_workload(w)), 0u) << kv_stats().dump();
}

// IPv6 end to end: the testbed's outer ends get fd77::1 and fd77::2 for the test, memcached
// listens on [fd77::2] (UDP and TCP), started through gaon-run --tcp, which attaches a
// kvcache instance (with its fast path) to both its IPv6 sockets. Hits are answered in XDP byte for
// byte as memcached answers them (the UDP checksum IPv6 requires included: the client's kernel
// drops a datagram whose checksum is wrong), and a TCP write over IPv6 in 3-byte pieces is
// seen: the next GET returns the new value.
class BumpMemcachedV6Test : public BumpTest {
 protected:
  static constexpr const char* kClient6 = "fd77::1";
  static constexpr const char* kServer6 = "fd77::2";
  void SetUp() override {
    if (access("/usr/bin/memcached", X_OK) != 0) GTEST_SKIP() << "memcached is missing";
    BumpTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    v6(true);
    port_ = free_port();
    // memcached through gaon-run --tcp, as users start it: its IPv6 sockets are attached.
    mc_ = Child::start(memcached_via_gaon_run(
        sock_, {}, memcached_argv(port_, "[" + std::string(kServer6) + "]")));
    ASSERT_TRUE(mc_.wait_errors("attached to the program's TCP socket too")) << mc_.errors();
    auto l = ctl_->call("list");
    ASSERT_TRUE(l && l->size() == 1) << (l ? l->dump() : l.error());
    instance_ = (*l)[0]["instance"];
  }
  void TearDown() override {
    mc_.stop();
    BumpTest::TearDown();
    v6(false);
  }
  // IPv6 on (addresses, no duplicate detection) or off again at the outer ends.
  static void v6(bool on) {
    ipv6_at({{"gaon-client", "cl0", kClient6}, {"gaon-server", "sv0", kServer6}}, on);
  }
  nlohmann::json kv_stats() {
    auto s = ctl_->call("call", {{"instance", instance_}, {"name", "stats"}});
    EXPECT_TRUE(s) << s.error();
    return s ? *s : nlohmann::json{};
  }
  uint16_t port_ = 0;
  uint32_t instance_ = 0;
  Child mc_;
};

TEST_F(BumpMemcachedV6Test, HitsOverIpv6AreAnsweredInXdpAndATcpWriteIsSeen) {
  const sockaddr_in6 srv = addr6(kServer6, port_);
  const int tcp = tcp_connect_in("gaon-client", srv);
  ASSERT_GE(tcp, 0) << std::strerror(errno) << mc_.errors();
  McUdp client(socket_in("gaon-client", SOCK_DGRAM, AF_INET6), srv);
  McUdp local(socket_in("gaon-server", SOCK_DGRAM, AF_INET6), srv);  // memcached, direct
  ASSERT_EQ(tcp_ask(tcp, "set foo 7 0 3\r\nold\r\n", 0), "STORED\r\n");
  for (uint16_t id = 1; id <= 4; ++id) {  // a miss (gaond learns the value), then hits
    const auto direct = local.reply_to(id % 2 ? "gets foo\r\n" : "get foo\r\n", id, 2000ms);
    ASSERT_TRUE(direct);
    EXPECT_EQ(client.reply_to(id % 2 ? "gets foo\r\n" : "get foo\r\n", id, 2000ms), direct) << id;
  }
  auto st = kv_stats();
  EXPECT_EQ(st["fast_path"]["answered"], 3) << st.dump();
  ASSERT_EQ(tcp_ask(tcp, "set foo 7 0 3\r\nnew\r\n", 3, 2ms), "STORED\r\n");
  EXPECT_EQ(client.reply_to("get foo\r\n", 9, 2000ms),
            mc_dgram("VALUE foo 7 3\r\nnew\r\nEND\r\n", 9));
  for (uint16_t id = 10; id < 13; ++id)
    EXPECT_EQ(client.reply_to("get foo\r\n", id, 2000ms),
              mc_dgram("VALUE foo 7 3\r\nnew\r\nEND\r\n", id));
  st = kv_stats();
  EXPECT_GE(st["fast_path"]["answered"].get<uint64_t>(), 5u) << st.dump();
  EXPECT_GE(st["tcp"]["writes"], 2) << st.dump();
  close(tcp);
}

// The AF_PACKET fallback: the same paths with every frame going through gaond.
class AfPacketBumpTest : public BumpTest {
 protected:
  bool packet() const override { return true; }
};

TEST_F(AfPacketBumpTest, EverythingCrossesAndAttachedFlowsAreAnswered) {
  const auto ping = run({"/usr/bin/ip", "netns", "exec", "gaon-client", "/usr/bin/ping", "-c", "3",
                         "-i", "0.2", "-W", "1", "-q", kServerIp});
  EXPECT_EQ(ping.status, 0) << ping.out << ping.err << gaond_.errors();
  const uint16_t attached = free_port(), other = free_port();
  UdpServer srv(other);
  ASSERT_TRUE(srv.ok());
  const uint32_t id = create_echo_on(attached);
  UdpClient cl;
  ask_both(cl, attached, other, 20);
  auto st = ctl_->call("stats", {{"instance", id}});
  ASSERT_TRUE(st) << st.error();
  EXPECT_EQ((*st)["counters"]["rx"], 20);
  // Without steering in the kernel, gaond saw the unattached traffic too (and passed it).
  EXPECT_GE(engine_wire_rx(), 40u);
  // A TCP transfer crosses unchanged.
  const uint16_t port = free_port();
  EXPECT_EQ(tcp_transfer(port, 256 << 10), "");
  // Every frame through gaond (ping, ARP, TCP, UDP) is accounted for, port by port.
  auto s = ctl_->call("stats");
  ASSERT_TRUE(s) << s.error();
  EXPECT_TRUE((*s)["conservation"]["all_balanced"].get<bool>()) << (*s)["conservation"].dump(2);
  EXPECT_GT((*s)["wire"]["rx"].get<uint64_t>(), 100u);
}

// A veth pair of our own (a0, b0) in a namespace of our own, removed afterwards, and
// gaond's answer to a command line that uses it.
class OwnVethPair : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
    ASSERT_EQ(run({"/usr/bin/ip", "netns", "add", ns_}).status, 0);
    made_ = true;
    ASSERT_EQ(
        in_ns({"/usr/bin/ip", "link", "add", "a0", "type", "veth", "peer", "name", "b0"}).status,
        0);
  }
  void TearDown() override {
    if (made_) run({"/usr/bin/ip", "netns", "del", ns_});
  }
  Ran in_ns(std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"/usr/bin/ip", "netns", "exec", ns_});
    return run(argv);
  }
  Ran gaond(const std::string& wire, const std::string& host) {
    return in_ns({std::string(GAON_BIN_DIR) + "/gaond", "--control", "none", "--wire", wire,
                  "--host", host, "--ikernel", "echo", "--flow", "udp:10.0.0.1:7"});
  }
  const std::string ns_ = "gaon-argtest-" + std::to_string(getpid());
  bool made_ = false;
};

class AfPacketArgs : public OwnVethPair {};

TEST_F(AfPacketArgs, ABridgedInterfaceOrOneWithXdpIsRefusedWithTheReason) {
  ASSERT_EQ(in_ns({"/usr/bin/ip", "link", "add", "brx", "type", "bridge"}).status, 0);
  ASSERT_EQ(in_ns({"/usr/bin/ip", "link", "set", "a0", "master", "brx"}).status, 0);
  const auto r = gaond("afpacket:a0", "afpacket:b0");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("a0 is a port of a bridge"), std::string::npos) << r.err;
  const auto mixed = gaond("afpacket:b0", "afxdp:a0");
  EXPECT_EQ(mixed.status, 2);
  EXPECT_NE(mixed.err.find("the same kind"), std::string::npos) << mixed.err;
}

// Frames an interface could hand gaond that do not fit a buffer (1 792 bytes) are refused
// at start, with the limit and the fix, rather than lost one by one later: a jumbo MTU
// (AF_XDP and AF_PACKET), GRO where frames are taken after it (AF_PACKET).
class PortArgs : public OwnVethPair {};

TEST_F(PortArgs, InterfacesWhoseFramesMayNotFitABufferAreRefusedWithTheFix) {
  for (const char* i : {"a0", "b0"})
    ASSERT_EQ(in_ns({"/usr/bin/ip", "link", "set", i, "up"}).status, 0);
  ASSERT_EQ(in_ns({"/usr/bin/ip", "link", "set", "a0", "mtu", "3000"}).status, 0);
  for (const std::string kind : {"afxdp", "afpacket"}) {
    const auto r = gaond(kind + ":a0", kind + ":b0");
    EXPECT_EQ(r.status, 2) << kind;
    EXPECT_NE(r.err.find("a0: MTU 3000"), std::string::npos) << kind << ": " << r.err;
    EXPECT_NE(r.err.find("ip link set a0 mtu 1774"), std::string::npos) << r.err;
  }
  ASSERT_EQ(in_ns({"/usr/bin/ip", "link", "set", "a0", "mtu", "1500"}).status, 0);
  ASSERT_EQ(in_ns({"/usr/sbin/ethtool", "-K", "a0", "gro", "on"}).status, 0);
  const auto r = gaond("afpacket:a0", "afpacket:b0");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("a0: GRO is on"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("ethtool -K a0 gro off"), std::string::npos) << r.err;
}

// A port on a queue of an interface that has others is refused (frames on the others would
// never reach gaond). (Every queue getting its socket: the two-queue test above.)
TEST_F(PortArgs, OneQueueOfAnInterfaceWithSeveralIsRefused) {
  ASSERT_EQ(in_ns({"/usr/bin/ip", "link", "add", "c0", "numrxqueues", "3", "numtxqueues", "3",
                   "type", "veth", "peer", "name", "d0", "numrxqueues", "3", "numtxqueues", "3"})
                .status,
            0);
  for (const char* i : {"c0", "d0"})
    ASSERT_EQ(in_ns({"/usr/bin/ip", "link", "set", i, "up"}).status, 0);
  auto r = gaond("afxdp:c0@1", "afxdp:d0");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("afxdp:c0@1: c0 has 3 receive queues"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("drop @1"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

}  // namespace
}  // namespace gaon::test
