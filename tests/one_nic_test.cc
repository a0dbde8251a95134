// kvcache on a server with one NIC, end to end in the netns testbed (scripts/testbed): gaond
// --local in gaon-server with the programs on sv1 (memcached's own interface), memcached
// started through gaon-run --local --tcp, clients in gaon-client on cl1 (the plain kernel
// path, no bump). Real memcached, real veths, the real XDP, tc and socket programs. Root
// only; CI runs as root.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <functional>

#include "checker.h"
#include "frames.h"
#include "gaon/control.h"
#include "procs.h"

namespace gaon::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kServerIp = "10.78.0.2";

class OneNicTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0)
      GTEST_SKIP() << "needs root (network namespaces, XDP, tc, sock_ops); CI runs as root";
    if (access("/usr/bin/memcached", X_OK) != 0) GTEST_SKIP() << "memcached is missing";
    std::string why;
    lock_ = take_testbed(&why);
    ASSERT_GE(lock_, 0) << why;
    sock_ = "/tmp/gaond-local-" + std::to_string(getpid()) + ".sock";
    start_gaond();
    if (HasFatalFailure()) return;
    port_ = free_port();
    before_memcached();
    start_memcached();
  }
  void TearDown() override {
    mc_.stop();
    ctl_.reset();
    gaond_.stop();
    if (lock_ >= 0) close(lock_);
  }
  void start_gaond() {
    std::vector<std::string> argv = {
        "/usr/bin/ip", "netns",   "exec", "gaon-server", std::string(GAON_BIN_DIR) + "/gaond",
        "--local",     "--iface", "sv1",  "--control",   sock_,
        "--xdp-mode",  xdp_mode()};
    for (const auto& a : gaond_extra()) argv.push_back(a);
    gaond_ = Child::start(argv);
    ASSERT_TRUE(gaond_.wait_errors("ready")) << gaond_.errors();
    auto c = control::Client::connect(sock_);
    ASSERT_TRUE(c) << c.error();
    ctl_.emplace(std::move(*c));
  }
  void start_memcached() {
    std::vector<std::string> argv = {"/usr/bin/ip",
                                     "netns",
                                     "exec",
                                     "gaon-server",
                                     std::string(GAON_BIN_DIR) + "/gaon-run",
                                     "--local",
                                     "--control",
                                     sock_,
                                     "--ikernel",
                                     "kvcache",
                                     "--param",
                                     "capacity=16M",
                                     "--param",
                                     "write_timeout_ms=" + write_timeout_ms(),
                                     "--tcp"};
    if (unsafe()) argv.insert(argv.end(), {"--param", "unsafe_no_invalidation=true"});
    argv.push_back("--");
    for (const auto& a : memcached_argv(port_, listen_on())) argv.push_back(a);
    mc_ = Child::start(argv);
    ASSERT_TRUE(mc_.wait_errors("attached to the program's TCP socket too")) << mc_.errors();
  }
  virtual bool unsafe() const { return false; }
  virtual std::string write_timeout_ms() const { return "200"; }
  virtual std::string listen_on() const { return kServerIp; }
  virtual void before_memcached() {}  // (the testbed is this test's from here)
  virtual std::string xdp_mode() const { return "auto"; }
  virtual std::vector<std::string> gaond_extra() const { return {}; }
  nlohmann::json kv_stats() {
    auto l = ctl_->call("list");
    EXPECT_TRUE(l && l->size() == 1) << (l ? l->dump() : l.error());
    if (!l || l->empty()) return {};
    auto s = ctl_->call("call", {{"instance", (*l)[0]["instance"]}, {"name", "stats"}});
    EXPECT_TRUE(s) << s.error();
    return s ? *s : nlohmann::json{};
  }
  static uint64_t fp(const nlohmann::json& st, const char* what) {
    return st.contains("fast_path") ? st["fast_path"].value(what, uint64_t{0}) : 0;
  }
  int tcp_client() {
    const int fd = socket_in("gaon-client", SOCK_STREAM);
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const sockaddr_in srv = addr(kServerIp, port_);
    EXPECT_EQ(connect(fd, reinterpret_cast<const sockaddr*>(&srv), sizeof(srv)), 0)
        << strerror(errno);
    return fd;
  }
  McUdp udp_client() { return McUdp(socket_in("gaon-client", SOCK_DGRAM), addr(kServerIp, port_)); }
  // memcached's own answer: from inside gaon-server, over loopback (no program on the way)
  McUdp direct() { return McUdp(socket_in("gaon-server", SOCK_DGRAM), addr(kServerIp, port_)); }
  // Until a GET of `key` is answered in XDP (a miss learns it; the bucket may still be busy
  // with a recent write for write_timeout_ms): true once one was.
  bool cached(McUdp& c, const std::string& key, uint16_t& id) {
    for (int i = 0; i < 40; ++i) {
      const uint64_t before = fp(kv_stats(), "answered");
      (void)c.reply_to("get " + key + "\r\n", ++id, 1000ms);
      if (fp(kv_stats(), "answered") > before) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }
  int lock_ = -1;
  std::string sock_;
  uint16_t port_ = 0;
  Child gaond_, mc_;
  std::optional<control::Client> ctl_;
};

std::string value_of(const std::string& key, const std::string& v, uint32_t flags = 0) {
  return "VALUE " + key + " " + std::to_string(flags) + " " + std::to_string(v.size()) + "\r\n" +
         v + "\r\nEND\r\n";
}

TEST_F(OneNicTest, HitsAreAnsweredInXdpByteForByteAndWhatPassesReachesMemcached) {
  McUdp c = udp_client();
  McUdp d = direct();
  const int tcp = tcp_client();
  ASSERT_EQ(tcp_ask(tcp, "set foo 7 0 3\r\nbar\r\n", 0), "STORED\r\n");
  uint16_t id = 0;
  ASSERT_TRUE(cached(c, "foo", id)) << kv_stats().dump();
  for (int i = 0; i < 5; ++i) {  // hits: memcached's own bytes, request id echoed
    ++id;
    const auto want = d.reply_to("get foo\r\n", id, 2000ms);
    ASSERT_TRUE(want);
    EXPECT_EQ(*want, mc_dgram(value_of("foo", "bar", 7), id));
    EXPECT_EQ(c.reply_to("get foo\r\n", id, 2000ms), want);
  }
  // gets (cas) and what the fast path does not answer (stats, a multi-get) reach memcached
  const auto st0 = kv_stats();
  for (const std::string q : {"gets foo\r\n", "get foo nokey\r\n", "version\r\n"}) {
    ++id;
    const auto want = d.reply_to(q, id, 2000ms);
    ASSERT_TRUE(want) << q;
    EXPECT_EQ(c.reply_to(q, id, 2000ms), want) << q;
  }
  const auto st = kv_stats();
  EXPECT_GT(fp(st, "answered"), 5u) << st.dump();
  EXPECT_GE(fp(st, "fills"), 1u) << st.dump();
  EXPECT_GE(fp(st, "passed"), fp(st0, "passed") + 2) << st.dump();
  EXPECT_EQ(fp(st, "tcp_unframed"), 0u) << st.dump();
  close(tcp);
}

// Every write verb, over TCP (in 1-byte segments: each command is framed whole from the
// stream) and over UDP: with the key's value answered in XDP before, the next GET after
// the write's reply is memcached's own answer.
struct Verb {
  std::string cmd;  // "%" is replaced by the key
  bool udp_too;     // (cas needs a token: TCP only, where gets is asked first)
};

TEST_F(OneNicTest, EveryWriteVerbInvalidatesOverTcpInPiecesAndOverUdp) {
  McUdp c = udp_client();
  McUdp d = direct();
  const int tcp = tcp_client();
  const std::vector<Verb> verbs = {
      {"set % 0 0 2\r\nv2\r\n", true},
      {"add % 0 0 2\r\nv2\r\n", true},
      {"replace % 0 0 2\r\nv2\r\n", true},
      {"append % 0 0 2\r\nv2\r\n", true},
      {"prepend % 0 0 2\r\nv2\r\n", true},
      {"cas % 0 0 2 CAS\r\nv2\r\n", false},
      {"incr % 5\r\n", true},
      {"decr % 1\r\n", true},
      {"delete %\r\n", true},
      {"touch % -1\r\n", true},
      {"gat -1 %\r\n", true},
      {"ms % 2 T0\r\nv2\r\n", true},
      {"md %\r\n", true},
      {"ma %\r\n", true},
      {"mg % v T-1\r\n", true},
      {"set % 0 0 2 noreply\r\nv2\r\n", true},
  };
  uint16_t id = 100;
  int n = 0;
  for (const Verb& v : verbs) {
    for (bool over_udp : {false, true}) {
      if (over_udp && !v.udp_too) continue;
      const std::string key = "k" + std::to_string(n++);
      ASSERT_EQ(tcp_ask(tcp, "set " + key + " 0 0 2\r\n10\r\n", 0), "STORED\r\n");
      ASSERT_TRUE(cached(c, key, id)) << key << ": " << kv_stats().dump();
      std::string cmd = v.cmd;
      cmd.replace(cmd.find('%'), 1, key);
      if (cmd.find("CAS") != std::string::npos) {
        const auto g = tcp_ask(tcp, "gets " + key + "\r\n", 0);  // VALUE k 0 2 CAS
        ASSERT_TRUE(g);
        const std::string line = g->substr(0, g->find("\r\n"));
        cmd.replace(cmd.find("CAS"), 3, line.substr(line.rfind(' ') + 1));
        ASSERT_EQ(tcp_ask(tcp, "", 0), "10\r\n");
        ASSERT_EQ(tcp_ask(tcp, "", 0), "END\r\n");
      }
      if (over_udp) {
        (void)c.reply_to(cmd, ++id, cmd.find("noreply") != std::string::npos ? 200ms : 2000ms);
      } else {  // the command in 1-byte segments, then mn: its reply ends with MN
        auto l = tcp_ask(tcp, cmd + "mn\r\n", 1, 50us);
        for (int lines = 0; !l || *l != "MN\r\n"; ++lines) {
          ASSERT_TRUE(l && lines < 4) << cmd;
          l = tcp_ask(tcp, "", 0);
        }
      }
      ++id;
      const auto want = d.reply_to("get " + key + "\r\n", id, 2000ms);
      ASSERT_TRUE(want);
      EXPECT_EQ(c.reply_to("get " + key + "\r\n", id, 2000ms), want)
          << (over_udp ? "UDP " : "TCP ") << cmd;
    }
  }
  const auto st = kv_stats();
  EXPECT_GE(fp(st, "writes"), 2 * verbs.size()) << st.dump();
  EXPECT_EQ(fp(st, "tcp_unframed"), 0u) << st.dump();
  close(tcp);
}

// A write split into two segments at every byte position is still seen whole: the stream
// reader keeps the start of a line until its end comes.
TEST_F(OneNicTest, AWriteSplitAtEveryBytePositionInvalidates) {
  McUdp c = udp_client();
  McUdp d = direct();
  const int tcp = tcp_client();
  uint16_t id = 500;
  for (const std::string form : {"set %s 0 0 5\r\nhello\r\n", "ms %s 5 T0\r\nhello\r\n"}) {
    const std::string cmd = fmt::format(fmt::runtime(form), "split");
    for (size_t at = 1; at < cmd.size(); ++at) {
      ASSERT_EQ(tcp_ask(tcp, "set split 0 0 2\r\nv1\r\n", 0), "STORED\r\n");
      ASSERT_TRUE(cached(c, "split", id)) << at;
      ASSERT_EQ(send(tcp, cmd.data(), at, 0), ssize_t(at));
      std::this_thread::sleep_for(2ms);  // (its own segment)
      const auto r = tcp_ask(tcp, cmd.substr(at), 0);
      ASSERT_TRUE(r && (*r == "STORED\r\n" || *r == "HD\r\n")) << at << ": " << r.value_or("");
      ++id;
      const auto want = d.reply_to("get split\r\n", id, 2000ms);
      ASSERT_TRUE(want);
      EXPECT_EQ(c.reply_to("get split\r\n", id, 2000ms), want) << form << " split at " << at;
    }
  }
  EXPECT_EQ(fp(kv_stats(), "tcp_unframed"), 0u);
  close(tcp);
}

TEST_F(OneNicTest, FlushAllAndItsDelayAndTheWritesExptime) {
  McUdp c = udp_client();
  McUdp d = direct();
  const int tcp = tcp_client();
  uint16_t id = 1000;
  auto both = [&](const std::string& key) {
    ++id;
    const auto want = d.reply_to("get " + key + "\r\n", id, 2000ms);
    EXPECT_TRUE(want);
    return std::make_pair(c.reply_to("get " + key + "\r\n", id, 2000ms), want);
  };
  // flush_all: everything goes at once
  ASSERT_EQ(tcp_ask(tcp, "set a 0 0 1\r\n1\r\n", 0), "STORED\r\n");
  ASSERT_TRUE(cached(c, "a", id));
  ASSERT_EQ(tcp_ask(tcp, "flush_all\r\n", 1, 100us), "OK\r\n");
  auto [got, want] = both("a");
  EXPECT_EQ(got, want);
  EXPECT_EQ(*got, mc_dgram("END\r\n", id));
  // flush_all 2: served until then, never after
  ASSERT_EQ(tcp_ask(tcp, "set b 0 0 1\r\n2\r\n", 0), "STORED\r\n");
  ASSERT_TRUE(cached(c, "b", id));
  ASSERT_EQ(tcp_ask(tcp, "flush_all 2\r\n", 0), "OK\r\n");
  std::this_thread::sleep_for(3000ms);
  std::tie(got, want) = both("b");
  EXPECT_EQ(got, want);
  EXPECT_EQ(*got, mc_dgram("END\r\n", id));
  // exptime 2: once memcached has dropped the item, so has the cache
  ASSERT_EQ(tcp_ask(tcp, "set e 0 2 1\r\n3\r\n", 0), "STORED\r\n");
  ASSERT_TRUE(cached(c, "e", id));
  std::this_thread::sleep_for(3000ms);
  std::tie(got, want) = both("e");
  EXPECT_EQ(got, want);
  EXPECT_EQ(*got, mc_dgram("END\r\n", id));
  const auto st = kv_stats();
  EXPECT_GE(fp(st, "flushes"), 2u) << st.dump();
  close(tcp);
}

TEST_F(OneNicTest, BinaryOnTcpIsNotFramedSoEverythingIsInvalidated) {
  McUdp c = udp_client();
  const int tcp = tcp_client();
  uint16_t id = 2000;
  ASSERT_EQ(tcp_ask(tcp, "set x 0 0 1\r\n1\r\n", 0), "STORED\r\n");
  ASSERT_TRUE(cached(c, "x", id));
  const int bin = tcp_client();
  // binary SET x = "2": header, extras (flags, exptime), key, value
  std::string req = {'\x80', '\x01', '\x00', '\x01', '\x08', '\x00', '\x00', '\x00',
                     '\x00', '\x00', '\x00', '\x0a', '\x00', '\x00', '\x00', '\x00',
                     '\x00', '\x00', '\x00', '\x00', '\x00', '\x00', '\x00', '\x00'};
  req += std::string(8, '\0') + "x2";
  ASSERT_EQ(send(bin, req.data(), req.size(), 0), ssize_t(req.size()));
  char buf[64];
  ASSERT_EQ(recv(bin, buf, sizeof(buf), 0), 24);  // its response header
  ++id;
  EXPECT_EQ(c.reply_to("get x\r\n", id, 2000ms), mc_dgram(value_of("x", "2"), id));
  EXPECT_GE(fp(kv_stats(), "tcp_unframed"), 1u);
  close(bin);
  close(tcp);
}

// gaond stopped: nothing is answered from the cache, memcached answers everything, a write
// made meanwhile is seen; killed: the same, and the host's traffic flows.
TEST_F(OneNicTest, AStoppedOrKilledGaondServesNothingStale) {
  McUdp c = udp_client();
  const int tcp = tcp_client();
  uint16_t id = 3000;
  ASSERT_EQ(tcp_ask(tcp, "set k 0 0 2\r\nv1\r\n", 0), "STORED\r\n");
  ASSERT_TRUE(cached(c, "k", id));
  gaond_.signal(SIGSTOP);
  std::this_thread::sleep_for(100ms);
  ++id;
  EXPECT_EQ(c.reply_to("set k 0 0 2\r\nv2\r\n", id, 2000ms), mc_dgram("STORED\r\n", id));
  ++id;
  EXPECT_EQ(c.reply_to("get k\r\n", id, 2000ms), mc_dgram(value_of("k", "v2"), id));
  EXPECT_EQ(tcp_ask(tcp, "set k 0 0 2\r\nv3\r\n", 0), "STORED\r\n");
  ++id;
  EXPECT_EQ(c.reply_to("get k\r\n", id, 2000ms), mc_dgram(value_of("k", "v3"), id));
  gaond_.signal(SIGCONT);
  for (int i = 0; i < 4; ++i) {
    ++id;
    EXPECT_EQ(c.reply_to("get k\r\n", id, 2000ms), mc_dgram(value_of("k", "v3"), id));
  }
  EXPECT_GE(kv_stats()["gaps"].get<uint64_t>(), 1u);
  ctl_.reset();
  gaond_.signal(SIGKILL);
  gaond_.stop();
  EXPECT_EQ(tcp_ask(tcp, "set k 0 0 2\r\nv4\r\n", 0), "STORED\r\n");
  ++id;
  EXPECT_EQ(c.reply_to("get k\r\n", id, 2000ms), mc_dgram(value_of("k", "v4"), id));
  ++id;
  EXPECT_EQ(c.reply_to("set k 0 0 2\r\nv5\r\n", id, 2000ms), mc_dgram("STORED\r\n", id));
  ++id;
  EXPECT_EQ(c.reply_to("get k\r\n", id, 2000ms), mc_dgram(value_of("k", "v5"), id));
  close(tcp);
}

TEST_F(OneNicTest, ATcpFlowWithConnectionsAlreadyOpenIsRefusedWithTheReason) {
  const int tcp = tcp_client();
  ASSERT_EQ(tcp_ask(tcp, "version\r\n", 0).value_or("").substr(0, 8), "VERSION ");
  auto l = ctl_->call("list");
  ASSERT_TRUE(l && l->size() == 1);
  const uint32_t kv = (*l)[0]["instance"];
  const std::string flow = fmt::format("tcp:{}:{}", kServerIp, port_);
  ASSERT_TRUE(ctl_->call("detach", {{"instance", kv}, {"flow", flow}}));
  // Attached again while a connection is open: its writes could not be watched.
  auto a = ctl_->call("attach", {{"instance", kv}, {"flow", flow}});
  ASSERT_FALSE(a);
  EXPECT_NE(a.error().find("already established"), std::string::npos) << a.error();
  close(tcp);
  bool attached = false;  // once memcached has closed its end too
  for (int i = 0; i < 50 && !attached; ++i) {
    attached = bool(ctl_->call("attach", {{"instance", kv}, {"flow", flow}}));
    if (!attached) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(attached);
  // A type without a fast path cannot run here.
  auto e = ctl_->call("create", {{"type", "echo"}});
  ASSERT_TRUE(e) << e.error();
  auto c = ctl_->call("attach", {{"instance", (*e)["instance"]}, {"flow", "udp:10.78.0.2:7"}});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().find("no fast path"), std::string::npos) << c.error();
}

// The consistency checker on one NIC with sv1 on two queues: TCP writes in 1-7 byte
// segments, UDP GETs from several clients on both CPUs: nothing stale, hits served.
Workload one_nic_workload(uint16_t port) {
  Workload w;
  w.server = addr(kServerIp, port);
  w.clients = 6;
  w.keys = 4;  // few keys: fills and invalidations of the same slots all the time
  w.duration = 6000ms;
  w.write_percent = 30;
  w.writes_over_tcp = true;
  w.tcp_piece = 3;
  w.pin_clients = true;
  w.make_socket = [](int type) { return socket_in("gaon-client", type); };
  return w;
}

TEST_F(OneNicTest, TheCheckerFindsNothingStaleWithHitsServedInXdp) {
  for (size_t piece : {1u, 7u}) {
    Workload w = one_nic_workload(port_);
    w.tcp_piece = piece;
    w.duration = 4000ms;
    const auto before = kv_stats();
    const auto ops = run_workload(w);
    EXPECT_EQ(count_stale(ops), 0u) << "pieces of " << piece;
    size_t gets = 0, writes = 0;
    for (const auto& op : ops) (op.kind == Op::get ? gets : writes)++;
    EXPECT_GT(gets, 1000u);
    EXPECT_GT(writes, 200u);
    const auto st = kv_stats();
    EXPECT_GT(fp(st, "answered") - fp(before, "answered"), 200u) << st.dump();
    EXPECT_GT(fp(st, "fills") - fp(before, "fills"), 50u) << st.dump();
    EXPECT_EQ(fp(st, "tcp_unframed"), 0u) << st.dump();
  }
}

// A storage command's data block that comes long after its line (a segment of it lost and
// sent again after the sender's timeout, longer than write_timeout_ms): memcached carries
// the write out only when the block is there, so a GET in between may learn the old value
// (it is right then), but once the write is acknowledged it is never served.
TEST_F(OneNicTest, AWriteWhoseDataComesLateIsInvalidatedWhenItIsCarriedOut) {
  McUdp c = udp_client();
  const int tcp = tcp_client();
  ASSERT_EQ(tcp_ask(tcp, "set late 0 0 2\r\nv1\r\n", 0), "STORED\r\n");
  uint16_t id = 0;
  ASSERT_TRUE(cached(c, "late", id)) << kv_stats().dump();
  const std::string line = "set late 0 0 2\r\n";
  ASSERT_EQ(send(tcp, line.data(), line.size(), 0), ssize_t(line.size()));
  std::this_thread::sleep_for(300ms);  // past write_timeout_ms (200)
  ++id;
  EXPECT_EQ(c.reply_to("get late\r\n", id, 1000ms), mc_dgram(value_of("late", "v1"), id))
      << "before the data block, memcached still has v1";
  EXPECT_EQ(tcp_ask(tcp, "v2\r\n", 0), "STORED\r\n");
  for (int i = 0; i < 5; ++i) {
    ++id;
    EXPECT_EQ(c.reply_to("get late\r\n", id, 1000ms), mc_dgram(value_of("late", "v2"), id))
        << "after STORED, v1 is never served; " << kv_stats().dump();
  }
  close(tcp);
}

// A client link that reorders (an HTB qdisc on cl1 whose slow class holds back every fourth
// TCP segment with bytes, build/reorder.bpf.o choosing at tc egress): memcached's side
// receives segments after a held-back one first. Those are dropped (tcp_out_of_order) and
// read when they come again, after it, in order: nothing stale, writes acknowledged,
// nothing unframed.
TEST_F(OneNicTest, SegmentsThatComeOutOfOrderAreReadInOrder) {
  const std::string obj = std::string(GAON_BIN_DIR) + "/reorder.bpf.o";
  auto tc = [](std::vector<std::string> args) {
    std::vector<std::string> argv = {"/usr/bin/ip", "netns", "exec", "gaon-client", "/usr/sbin/tc"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
  };
  struct Off {
    std::function<void()> f;
    ~Off() { f(); }
  } off{[&] {
    (void)tc({"qdisc", "del", "dev", "cl1", "root"});
    (void)tc({"qdisc", "del", "dev", "cl1", "clsact"});
  }};
  off.f();
  for (const std::vector<std::string>& a : std::vector<std::vector<std::string>>{
           {"qdisc", "add", "dev", "cl1", "root", "handle", "1:", "htb", "default", "10", "r2q",
            "1000"},
           {"class", "add", "dev", "cl1", "parent", "1:", "classid", "1:10", "htb", "rate",
            "10gbit"},
           {"class", "add", "dev", "cl1", "parent", "1:", "classid", "1:20", "htb", "rate",
            "200kbit", "burst", "1", "cburst", "1"},
           {"qdisc", "add", "dev", "cl1", "clsact"},
           {"filter", "add", "dev", "cl1", "egress", "bpf", "da", "obj", obj, "sec", "tc"}}) {
    Ran r = tc(a);
    ASSERT_EQ(r.status, 0) << fmt::format("tc {}: {}", fmt::join(a, " "), r.err);
  }
  Workload w = one_nic_workload(port_);
  w.duration = 4000ms;
  const auto ops = run_workload(w);
  EXPECT_EQ(count_stale(ops), 0u);
  size_t gets = 0, writes = 0;
  for (const auto& op : ops) (op.kind == Op::get ? gets : writes)++;
  EXPECT_GT(gets, 200u);  // (the clients wait for their writes, which wait for resends)
  EXPECT_GT(writes, 50u);
  const auto st = kv_stats();
  EXPECT_GT(fp(st, "tcp_out_of_order"), 10u) << st.dump();
  EXPECT_GT(fp(st, "answered"), 100u) << st.dump();
  EXPECT_EQ(fp(st, "tcp_unframed"), 0u) << st.dump();
}

// With write_timeout_ms longer than the checks, only a write's acknowledgement, followed at
// tc egress through the replies before it on its connection (values, misses, a gets, a
// multi-get), lets a GET of its key be learned again; a noreply write is never
// acknowledged and keeps its bucket busy until the timeout.
class OneNicAckTest : public OneNicTest {
 protected:
  std::string write_timeout_ms() const override { return "3000"; }
};

TEST_F(OneNicAckTest, ATcpWritesReplyEndsItsOutstandingStateBehindOtherReplies) {
  std::this_thread::sleep_for(3100ms);  // (a new table's buckets start busy: writes unseen)
  McUdp c = udp_client();
  const int tcp = tcp_client();
  const std::string batch =
      "set a 0 0 2\r\nva\r\nget a\r\nget nokey\r\ngets a\r\nget a a\r\n"
      "set k 0 0 2\r\nv1\r\n";
  ASSERT_EQ(send(tcp, batch.data(), batch.size(), 0), ssize_t(batch.size()));
  std::string got;
  char buf[4096];
  while (got.size() < 8 || got.compare(got.size() - 8, 8, "STORED\r\n") != 0 ||
         got.find("STORED") == got.rfind("STORED")) {
    const ssize_t n = recv(tcp, buf, sizeof(buf), 0);
    ASSERT_GT(n, 0) << got;
    got.append(buf, size_t(n));
  }
  uint16_t id = 1;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(cached(c, "k", id)) << kv_stats().dump();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms) << "learned by the ack, not the timeout";
  // The negative: no acknowledgement, the bucket stays busy.
  ASSERT_EQ(tcp_ask(tcp, "set n 0 0 2 noreply\r\nv2\r\nmn\r\n", 0), "MN\r\n");
  EXPECT_FALSE(cached(c, "n", id)) << "a noreply write is not acknowledged";
  close(tcp);
}

// gaond --local --metrics, scraped inside gaon-server while hits are answered in XDP: the
// steering program's "local" section and the instance's fast-path counters are there and
// move, and the real promtool passes the scrape.
class OneNicMetricsTest : public OneNicTest {
 protected:
  std::vector<std::string> gaond_extra() const override { return {"--metrics", "127.0.0.1:9187"}; }
};

TEST_F(OneNicMetricsTest, TheLocalProgramsAndTheFastPathAreScraped) {
  McUdp c = udp_client();
  const int tcp = tcp_client();
  ASSERT_EQ(tcp_ask(tcp, "set m 0 0 2\r\nv1\r\n", 0), "STORED\r\n");
  uint16_t id = 0;
  ASSERT_TRUE(cached(c, "m", id)) << kv_stats().dump();
  const std::string before = scrape(9187, "gaon-server");
  ASSERT_FALSE(before.empty()) << gaond_.errors();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(c.reply_to("get m\r\n", ++id, 1000ms));
  ASSERT_EQ(tcp_ask(tcp, "delete m\r\n", 0), "DELETED\r\n");
  const std::string after = scrape(9187, "gaon-server");
  const std::string inst = "{ikernel_instance=\"1\",type=\"kvcache\"";
  const double a0 = sample(before, "gaon_fast_path_answered_total" + inst);
  const double a1 = sample(after, "gaon_fast_path_answered_total" + inst);
  EXPECT_GE(a0, 1) << before;
  EXPECT_GE(a1 - a0, 20) << after;
  EXPECT_GT(sample(after, "gaon_fast_path_writes_total" + inst),
            sample(before, "gaon_fast_path_writes_total" + inst))
      << after;
  EXPECT_GT(sample(after, "gaon_fast_path_tcp_commands_total" + inst), 0) << after;
  EXPECT_GE(sample(after, "gaon_fast_path_active" + inst), 1) << after;
  EXPECT_NE(after.find("gaon_steer_fast_path_frames_total{"), std::string::npos) << after;
  EXPECT_NE(after.find("mode=\"local\""), std::string::npos) << after;
  if (access("/usr/bin/promtool", X_OK) == 0) {
    char path[] = "/tmp/gaon-scrape-XXXXXX";
    const int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, after.data(), after.size()), ssize_t(after.size()));
    close(fd);
    const Ran p = run({"/bin/sh", "-c", std::string("/usr/bin/promtool check metrics < ") + path});
    unlink(path);
    EXPECT_EQ(p.status, 0) << p.out << p.err;
    EXPECT_EQ(p.out + p.err, "") << "promtool found problems";
  } else {
    std::printf("promtool missing: the scrape was not checked by it\n");
  }
  close(tcp);
}

// IPv6 on the one-NIC pair (on for this test only: fd78::1 on cl1, fd78::2 on sv1, and the
// server's loopback for memcached's own answer), memcached listening there.
constexpr const char* kServer6 = "fd78::2";
class OneNic6Test : public OneNicTest {
 protected:
  void before_memcached() override { v6(true); }
  void TearDown() override {
    if (geteuid() == 0 && lock_ >= 0) v6(false);
    OneNicTest::TearDown();
  }
  std::string listen_on() const override { return "[" + std::string(kServer6) + "]"; }
  static void v6(bool on) {
    ipv6_at({{"gaon-client", "cl1", "fd78::1"}, {"gaon-server", "sv1", kServer6}}, on);
  }
};

// Over IPv6: hits answered in XDP with memcached's bytes (the UDP checksum IPv6 requires
// included), values learned at tc egress, a TCP write in 1-byte segments read at cgroup_skb
// ingress and invalidated.
TEST_F(OneNic6Test, HitsOverIpv6AreAnsweredInXdpAndATcpWriteInvalidates) {
  const sockaddr_in6 srv = addr6(kServer6, port_);
  const int tcp = tcp_connect_in("gaon-client", srv);
  ASSERT_GE(tcp, 0) << std::strerror(errno) << mc_.errors();
  McUdp client(socket_in("gaon-client", SOCK_DGRAM, AF_INET6), srv);
  McUdp local(socket_in("gaon-server", SOCK_DGRAM, AF_INET6), srv);  // memcached, direct
  ASSERT_EQ(tcp_ask(tcp, "set foo 7 0 3\r\nold\r\n", 0), "STORED\r\n");
  uint16_t id = 1;
  ASSERT_TRUE(cached(client, "foo", id)) << kv_stats().dump();
  const uint64_t answered = fp(kv_stats(), "answered");
  for (const char* get : {"get foo\r\n", "get foo\r\n"}) {
    ++id;
    const auto direct = local.reply_to(get, id, 2000ms);
    ASSERT_TRUE(direct);
    EXPECT_EQ(client.reply_to(get, id, 2000ms), direct) << get;
  }
  EXPECT_EQ(fp(kv_stats(), "answered"), answered + 2) << kv_stats().dump();
  auto l = tcp_ask(tcp, "set foo 7 0 3\r\nnew\r\nmn\r\n", 1, 50us);
  EXPECT_EQ(l, "STORED\r\n");
  EXPECT_EQ(tcp_ask(tcp, "", 0), "MN\r\n");
  ++id;
  EXPECT_EQ(client.reply_to("get foo\r\n", id, 2000ms),
            mc_dgram("VALUE foo 7 3\r\nnew\r\nEND\r\n", id));
  const auto st = kv_stats();
  EXPECT_GE(fp(st, "tcp_commands"), 3u) << st.dump();
  EXPECT_EQ(fp(st, "tcp_unframed"), 0u) << st.dump();
  close(tcp);
}

class OneNicUnsafeTest : public OneNicTest {
 protected:
  bool unsafe() const override { return true; }
};

TEST_F(OneNicUnsafeTest, TheCheckerCatchesACacheThatIgnoresWrites) {
  Workload w = one_nic_workload(port_);
  w.duration = 3000ms;
  EXPECT_GT(count_stale(run_workload(w)), 0u) << kv_stats().dump();
}

}  // namespace
}  // namespace gaon::test
