// The control protocol and gaond's control server, in process: a real unix socket, a real
// engine running on its own thread with mem ports, clients as root and (when the tests run
// as root) as two other users in forked processes.
#include "gaon/control.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>
#include <tuple>

#include "frames.h"
#include "gaon/control_server.h"
#include "gaon/libgaon.h"
#include "gaon/libgaon.hpp"
#include "gaon/mem_port.h"
#include "procs.h"
#include "state_file.h"

namespace gaon::control {
namespace {

using gaon::Connection;
using gaon::ControlError;
using gaon::IKernelInstance;
using nlohmann::json;

TEST(ControlProtocol, FramesSurviveAnySplitAndOversizeIsSkipped) {
  const std::string a = frame({{"v", 1}, {"op", "types"}});
  const std::string big = std::string("\x00\x01\x00\x01", 4) + std::string(65537, 'x');
  const std::string b = frame({{"v", 1}, {"op", "list"}});
  const std::string stream = a + big + b;
  for (size_t chunk : {1, 3, 7, 1000, 100000}) {
    FrameReader r;
    std::vector<std::string> got;
    int too_large = 0;
    for (size_t off = 0; off < stream.size(); off += chunk) {
      r.append(std::string_view(stream).substr(off, chunk));
      while (auto e = r.next()) {
        if (e->kind == FrameReader::Event::too_large) {
          ++too_large;
          EXPECT_EQ(e->length, 65537u);
        } else {
          got.push_back(e->body);
        }
      }
    }
    EXPECT_EQ(too_large, 1) << chunk;
    ASSERT_EQ(got.size(), 2u) << chunk;
    EXPECT_EQ(json::parse(got[1])["op"], "list");
  }
}

// A client waiting for a slow reply while signals keep arriving (libFuzzer's timer did
// this to the fuzz target) waits on; an interrupted poll is not "gaond did not answer".
TEST(ControlClient, SignalsDuringTheWaitDoNotLoseTheReply) {
  const std::string path = "/tmp/gaon-slow-" + std::to_string(getpid()) + ".sock";
  unlink(path.c_str());
  const int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path.c_str());
  ASSERT_EQ(bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(l, 1), 0);
  // A slow server: reads the request, answers 200 ms later. Signals go to the test thread.
  sigset_t alrm;
  sigemptyset(&alrm);
  sigaddset(&alrm, SIGALRM);
  std::thread server([&] {
    pthread_sigmask(SIG_BLOCK, &alrm, nullptr);
    const int c = accept(l, nullptr, nullptr);
    FrameReader r;
    std::optional<FrameReader::Event> e;
    char buf[4096];
    while (!(e = r.next())) {
      const ssize_t n = recv(c, buf, sizeof(buf), 0);
      if (n <= 0) break;
      r.append({buf, size_t(n)});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const auto req = json::parse(e ? e->body : "{}", nullptr, false);
    const std::string reply = frame(
        {{"v", 1}, {"id", req.value("id", json())}, {"ok", true}, {"result", {{"slow", true}}}});
    (void)!send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
    close(c);
  });
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  struct sigaction old {};
  sigaction(SIGALRM, &sa, &old);  // no SA_RESTART: every tick interrupts the wait
  itimerval every_5ms{{0, 5000}, {0, 5000}};
  setitimer(ITIMER_REAL, &every_5ms, nullptr);
  auto c = Client::connect(path);
  ASSERT_TRUE(c) << c.error();
  auto r = c->call("types");
  itimerval off{};
  setitimer(ITIMER_REAL, &off, nullptr);
  sigaction(SIGALRM, &old, nullptr);
  server.join();
  close(l);
  unlink(path.c_str());
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ((*r)["slow"], true);
}

TEST(ControlProtocol, BadRequestsGetOneLineReasons) {
  struct Case {
    std::string body, want;
  } cases[] = {
      {"{nope", "not JSON"},
      {"[1,2]", "not a JSON object"},
      {R"({"op":"list"})", "no protocol version"},
      {R"({"v":2,"op":"list"})", "unsupported protocol version 2"},
      {R"({"v":1})", "no \"op\""},
      {R"({"v":1,"op":7})", "no \"op\""},
  };
  for (const auto& c : cases) {
    auto r = parse_request(c.body);
    ASSERT_FALSE(r) << c.body;
    EXPECT_NE(r.error().find(c.want), std::string::npos) << r.error();
    EXPECT_EQ(r.error().find('\n'), std::string::npos);
  }
  auto ok = parse_request(R"({"v":1,"op":"list","id":5})");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->op, "list");
  EXPECT_EQ(ok->id, 5);
}

// An engine on its own thread behind a control server on a fresh socket.
class ControlServer : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = fmt::format("/tmp/gaon-control-test-{}-{}.sock", getpid(), counter_++);
    auto e = Engine::create({.pool_frames = 1024});
    ASSERT_TRUE(e);
    engine_ = std::move(*e);
    engine_->set_ports(&wire_, &host_);
    dp_ = std::thread([this] { engine_->run(stop_); });
    // A sidecar service: clients use 127.0.0.1:7000, the application listens on :7001.
    Service s;
    s.wire.sin_family = s.host.sin_family = AF_INET;
    s.wire.sin_addr.s_addr = s.host.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s.wire.sin_port = htons(7000);
    s.host.sin_port = htons(service_port_);
    auto srv = Server::start(
        *engine_, Registry::global(),
        {.path = path_, .max_instances_per_owner = 2, .max_state_per_owner = 16u << 20}, {s});
    ASSERT_TRUE(srv) << srv.error();
    server_ = std::move(*srv);
  }
  void TearDown() override {
    server_.reset();
    stop_ = true;
    dp_.join();
  }
  Client connect() {
    auto c = Client::connect(path_);
    EXPECT_TRUE(c) << c.error();
    return std::move(*c);
  }
  // Sends `n` frames to udp port `dport` on the wire and lets the engine take them.
  void send_to_port(uint16_t dport, int n) {
    for (int i = 0; i < n; ++i) {
      test::FrameSpec f;
      f.dst_ip = "127.0.0.1";
      f.dport = dport;
      f.payload = test::text("x");
      Packet* p = test::make_packet(engine_->pool(), test::build_frame(f));
      ASSERT_NE(p, nullptr);
      while (wire_.inject({&p, 1}) != 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    engine_->execute([] {});  // the datapath has passed a burst boundary
    for (int i = 0; i < 50; ++i) {
      engine_->execute([] {});
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    Packet* out[kBurst];
    for (auto* port : {&wire_, &host_})
      while (uint32_t k = port->collect(out))
        for (uint32_t i = 0; i < k; ++i) engine_->pool().free(out[i]);
  }
  static inline int counter_ = 0;
  uint16_t service_port_ = 7001;
  std::string path_;
  MemPort wire_{"wire"}, host_{"host"};
  std::unique_ptr<Engine> engine_;
  std::atomic<bool> stop_{false};
  std::thread dp_;
  std::unique_ptr<Server> server_;
};

TEST_F(ControlServer, CreateCallListDestroy) {
  Client c = connect();
  auto types = c.call("types");
  ASSERT_TRUE(types) << types.error();
  bool has_kvcache = false;
  for (const auto& t : *types) has_kvcache |= t["name"] == "kvcache";
  EXPECT_TRUE(has_kvcache);
  auto made = c.call("create", {{"type", "kvcache"}, {"params", {"capacity=1M"}}, {"quota", "8M"}});
  ASSERT_TRUE(made) << made.error();
  const uint32_t id = (*made)["instance"];
  auto st = c.call("call", {{"instance", id}, {"name", "stats"}});
  ASSERT_TRUE(st) << st.error();
  EXPECT_EQ((*st)["hits"], 0);
  auto listed = c.call("list");
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0]["type"], "kvcache");
  EXPECT_EQ((*listed)[0]["owner"], getuid());
  EXPECT_TRUE(c.call("destroy", {{"instance", id}}));
  EXPECT_EQ(c.call("list")->size(), 0u);
  // The traffic class given at create is the one the arbiter uses.
  auto tc = c.call("create", {{"type", "echo"}, {"weight", 7}, {"rate_bps", 1000000}});
  ASSERT_TRUE(tc) << tc.error();
  auto shown = c.call("stats", {{"instance", (*tc)["instance"]}});
  ASSERT_TRUE(shown) << shown.error();
  EXPECT_EQ((*shown)["traffic_class"]["weight"], 7);
  EXPECT_EQ((*shown)["traffic_class"]["rate_bps"], 1000000);
  EXPECT_TRUE(c.call("destroy", {{"instance", (*tc)["instance"]}}));
  // Clear errors for bad arguments; the connection stays usable.
  for (auto [op, args, want] : std::vector<std::tuple<std::string, json, std::string>>{
           {"create", json::object(), "\"type\" is needed"},
           {"create", {{"type", "nope"}}, "nope"},
           {"create", {{"type", "echo"}, {"params", "x"}}, "list of strings"},
           {"create", {{"type", "echo"}, {"weight", 0}}, "weight"},
           {"create", {{"type", "kvcache"}, {"params", {"capacity=1G"}}, {"quota", "1M"}}, "quota"},
           {"call", {{"instance", 42}, {"name", "stats"}}, "permission denied"},
           {"destroy", {{"instance", "one"}}, "\"instance\""},
           {"frobnicate", json::object(), "unknown op"},
       }) {
    auto r = c.call(op, args);
    ASSERT_FALSE(r) << op << " " << args.dump();
    EXPECT_NE(r.error().find(want), std::string::npos) << r.error();
  }
  EXPECT_TRUE(c.call("types"));
}

TEST_F(ControlServer, MalformedOversizedAndForeignVersionRequestsKeepTheConnection) {
  Client c = connect();
  ASSERT_TRUE(c.send_raw(std::string("\x00\x00\x00\x05{nope", 9)));
  auto r1 = c.read_reply();
  ASSERT_TRUE(r1) << r1.error();
  EXPECT_EQ((*r1)["ok"], false);
  ASSERT_TRUE(c.send_raw(std::string("\x00\x10\x00\x00", 4) + std::string(1 << 20, ' ')));
  auto r2 = c.read_reply();
  ASSERT_TRUE(r2) << r2.error();
  EXPECT_NE((*r2)["error"].get<std::string>().find("larger than"), std::string::npos);
  ASSERT_TRUE(c.send_raw(frame({{"v", 9}, {"op", "list"}, {"id", 3}})));
  auto r3 = c.read_reply();
  ASSERT_TRUE(r3);
  EXPECT_EQ((*r3)["id"], 3);
  EXPECT_NE((*r3)["error"].get<std::string>().find("version 9"), std::string::npos);
  EXPECT_TRUE(c.call("list"));
}

TEST_F(ControlServer, AConnectionsInstancesGoWithItUnlessPersistent) {
  {
    Client c = connect();
    ASSERT_TRUE(c.call("create", {{"type", "echo"}}));
    ASSERT_TRUE(c.call("create", {{"type", "echo"}, {"persist", true}}));
    EXPECT_EQ(c.call("list")->size(), 2u);
  }
  Client d = connect();
  size_t left = 2;
  for (int i = 0; i < 200 && left != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    left = d.call("list")->size();
  }
  EXPECT_EQ(left, 1u);
  EXPECT_EQ((*d.call("list"))[0]["persist"], true);
}

TEST_F(ControlServer, AttachBySocketByAddressAndConflicts) {
  Client c = connect();
  const uint32_t a = (*c.call("create", {{"type", "echo"}}))["instance"];
  const uint32_t b = (*c.call("create", {{"type", "echo"}}))["instance"];
  // The application's socket on the service's host address: the service's flow attaches.
  const int app = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(service_port_);
  ASSERT_EQ(bind(app, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << strerror(errno);
  auto r = c.call("attach", {{"instance", a}}, app);
  ASSERT_TRUE(r) << r.error();
  EXPECT_EQ((*r)["flows"], json({"udp:127.0.0.1:7000"}));
  // The same flow for another instance: a clear error.
  auto dup = c.call("attach", {{"instance", b}}, app);
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().find("already attached"), std::string::npos) << dup.error();
  close(app);
  // A socket bound elsewhere attaches its own address; unbound and non-sockets are refused.
  const int other = socket(AF_INET, SOCK_DGRAM, 0);
  addr.sin_port = 0;
  ASSERT_EQ(bind(other, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(other, reinterpret_cast<sockaddr*>(&addr), &len);
  auto own = c.call("attach", {{"instance", b}}, other);
  ASSERT_TRUE(own) << own.error();
  EXPECT_EQ((*own)["flows"][0], fmt::format("udp:127.0.0.1:{}", ntohs(addr.sin_port)));
  close(other);
  // A connected socket attaches its conversation only.
  const int conn = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in peer = addr;
  peer.sin_port = htons(9);
  addr.sin_port = 0;
  ASSERT_EQ(bind(conn, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::connect(conn, reinterpret_cast<sockaddr*>(&peer), sizeof(peer)), 0);
  len = sizeof(addr);
  getsockname(conn, reinterpret_cast<sockaddr*>(&addr), &len);
  auto exact = c.call("attach", {{"instance", b}}, conn);
  ASSERT_TRUE(exact) << exact.error();
  EXPECT_EQ((*exact)["flows"][0],
            fmt::format("udp:127.0.0.1:{},127.0.0.1:9", ntohs(addr.sin_port)));
  close(conn);
  const int unbound = socket(AF_INET, SOCK_DGRAM, 0);
  EXPECT_NE(c.call("attach", {{"instance", b}}, unbound).error().find("not bound"),
            std::string::npos);
  close(unbound);
  // IPv6: its own address (and conversation, when connected); [::] is refused; an IPv4
  // address on a dual-stack socket is an IPv4 flow.
  const int v6 = socket(AF_INET6, SOCK_DGRAM, 0);
  sockaddr_in6 a6{};
  a6.sin6_family = AF_INET6;
  a6.sin6_addr = in6addr_loopback;
  if (bind(v6, reinterpret_cast<sockaddr*>(&a6), sizeof(a6)) == 0) {
    len = sizeof(a6);
    getsockname(v6, reinterpret_cast<sockaddr*>(&a6), &len);
    auto six = c.call("attach", {{"instance", b}}, v6);
    ASSERT_TRUE(six) << six.error();
    EXPECT_EQ((*six)["flows"][0], fmt::format("udp:[::1]:{}", ntohs(a6.sin6_port)));
    const int v6c = socket(AF_INET6, SOCK_DGRAM, 0);
    sockaddr_in6 p6 = a6;
    p6.sin6_port = htons(9);
    a6.sin6_port = 0;
    ASSERT_EQ(bind(v6c, reinterpret_cast<sockaddr*>(&a6), sizeof(a6)), 0);
    ASSERT_EQ(::connect(v6c, reinterpret_cast<sockaddr*>(&p6), sizeof(p6)), 0);
    len = sizeof(a6);
    getsockname(v6c, reinterpret_cast<sockaddr*>(&a6), &len);
    auto six_exact = c.call("attach", {{"instance", b}}, v6c);
    ASSERT_TRUE(six_exact) << six_exact.error();
    EXPECT_EQ((*six_exact)["flows"][0], fmt::format("udp:[::1]:{},[::1]:9", ntohs(a6.sin6_port)));
    close(v6c);
  } else {
    std::fprintf(stderr, "(no IPv6 loopback here: the IPv6 cases are skipped)\n");
  }
  close(v6);
  const int any6 = socket(AF_INET6, SOCK_DGRAM, 0);
  sockaddr_in6 z6{};
  z6.sin6_family = AF_INET6;
  if (bind(any6, reinterpret_cast<sockaddr*>(&z6), sizeof(z6)) == 0) {
    EXPECT_NE(c.call("attach", {{"instance", b}}, any6).error().find("bound to [::]:"),
              std::string::npos);
  }
  close(any6);
  const int mapped = socket(AF_INET6, SOCK_DGRAM, 0);
  sockaddr_in6 m6{};
  m6.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:127.0.0.1", &m6.sin6_addr);
  if (bind(mapped, reinterpret_cast<sockaddr*>(&m6), sizeof(m6)) == 0) {
    len = sizeof(m6);
    getsockname(mapped, reinterpret_cast<sockaddr*>(&m6), &len);
    auto v4 = c.call("attach", {{"instance", b}}, mapped);
    ASSERT_TRUE(v4) << v4.error();
    EXPECT_EQ((*v4)["flows"][0], fmt::format("udp:127.0.0.1:{}", ntohs(m6.sin6_port)));
  }
  close(mapped);
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  EXPECT_NE(c.call("attach", {{"instance", b}}, pipefd[0]).error().find("not a socket"),
            std::string::npos);
  close(pipefd[0]);
  close(pipefd[1]);
  // Detach, then the flow is free for the other instance.
  EXPECT_TRUE(c.call("detach", {{"instance", a}, {"flow", "udp:127.0.0.1:7000"}}));
  if (getuid() == 0) {
    EXPECT_TRUE(c.call("attach", {{"instance", b}, {"flow", "udp:127.0.0.1:7000"}}));
  }
}

// Other users are real processes (exec'd as another uid with setpriv, never a fork of
// this multi-threaded test): Alice's echo example attaches its own socket through libgaon;
// Bob uses gaonctl.
TEST_F(ControlServer, TenantsAreIsolated) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as two other users (CI runs as root)";
  // Copies of the programs they run, which the build tree may not let them reach.
  const test::AsOtherUsers users({"gaon-example-echo", "gaonctl"}, {64001, 64002});
  if (!users.unusable().empty())
    GTEST_SKIP() << "cannot run build-tree programs as another user: " << users.unusable();
  auto bob = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--control", path_});
    const auto r = test::run(users.argv(64002, "gaonctl", args));
    return std::pair<int, std::string>{r.status, r.out + r.err};
  };
  const uint16_t pa = test::free_port(), pb = test::free_port();
  const std::string fa = fmt::format("udp:127.0.0.1:{}", pa),
                    fb = fmt::format("udp:127.0.0.1:{}", pb);
  test::Child alice =
      test::Child::start(users.argv(64001, "gaon-example-echo", {std::to_string(pa), path_}));
  ASSERT_TRUE(alice.wait_output("answers")) << alice.errors();
  Client root = connect();
  auto all = root.call("list");
  ASSERT_TRUE(all && all->size() == 1u);
  const std::string id = (*all)[0]["instance"].dump();
  EXPECT_EQ((*all)[0]["owner"], 64001);
  EXPECT_EQ((*all)[0]["flows"], json({fa}));
  // Bob sees nothing of it and can do nothing to it.
  EXPECT_EQ(bob({"--json", "list"}), (std::pair<int, std::string>{0, "[]\n"}));
  auto [st, out] = bob({"--json", "stats"});
  ASSERT_EQ(st, 0) << out;
  EXPECT_EQ(json::parse(out)["instances"].size(), 0u);
  for (auto args : std::vector<std::vector<std::string>>{{"stats", id},
                                                         {"call", id, "stats"},
                                                         {"destroy", id},
                                                         {"detach", id, "--flow", fa},
                                                         {"attach", id, "--flow", fb},
                                                         {"capture", id, "-w", "/dev/null"}}) {
    auto [s2, o2] = bob(args);
    EXPECT_EQ(s2, 1) << args[0];
    EXPECT_NE(o2.find("permission denied"), std::string::npos) << args[0] << ": " << o2;
  }
  // Bob's own instances: no attaching by address, and per-owner limits (2, 16 MiB here).
  auto [s3, o3] = bob({"create", "kvcache", "-p", "capacity=40M", "--quota", "64M"});
  EXPECT_EQ(s3, 1);
  EXPECT_NE(o3.find("per-owner limit"), std::string::npos) << o3;
  auto [s4, mine] = bob({"create", "echo"});
  ASSERT_EQ(s4, 0) << mine;
  mine.erase(mine.find_last_not_of('\n') + 1);
  auto [s5, o5] = bob({"attach", mine, "--flow", fa});
  EXPECT_EQ(s5, 1);
  EXPECT_NE(o5.find("for root"), std::string::npos) << o5;
  EXPECT_EQ(bob({"create", "echo"}).first, 0);
  auto [s6, o6] = bob({"create", "echo"});
  EXPECT_EQ(s6, 1);
  EXPECT_NE(o6.find("per-owner limit"), std::string::npos) << o6;
  // Alice's instance sees only its own flow's packets; the operator attaches one of Bob's.
  ASSERT_TRUE(root.call("attach", {{"instance", std::stoul(mine)}, {"flow", fb}}));
  send_to_port(pa, 10);
  send_to_port(pb, 3);
  uint64_t alice_rx = 0, bob_rx = 0;
  auto listed = root.call("list");
  ASSERT_TRUE(listed);
  for (const auto& i : *listed)
    (i["owner"] == 64001 ? alice_rx : bob_rx) += i["counters"]["rx"].get<uint64_t>();
  EXPECT_EQ(alice_rx, 10u);
  EXPECT_EQ(bob_rx, 3u);
  // Root may do anything to anyone's instance.
  EXPECT_TRUE(root.call("call", {{"instance", std::stoul(id)}, {"name", "stats"}}));
  EXPECT_TRUE(root.call("destroy", {{"instance", std::stoul(id)}}));
  alice.stop();
}

TEST_F(ControlServer, LibgaonCreatesAttachesCallsAndDestroys) {
  gaon_conn* c = nullptr;
  ASSERT_EQ(gaon_connect("/nonexistent/gaond.sock", &c), GAON_E_CONNECT);
  EXPECT_NE(std::string(gaon_last_error(nullptr)).find("cannot reach gaond"), std::string::npos);
  ASSERT_EQ(gaon_connect(path_.c_str(), &c), GAON_OK);
  const char* params[] = {"capacity=1M"};
  gaon_ik* ik = nullptr;
  ASSERT_EQ(gaon_ik_create(c, "kvcache", params, 1, nullptr, &ik), GAON_OK) << gaon_last_error(c);
  EXPECT_GT(gaon_ik_id(ik), 0u);
  const int app = test::bind_udp(service_port_);
  ASSERT_GE(app, 0) << strerror(errno);
  ASSERT_EQ(gaon_ik_attach(ik, app), GAON_OK) << gaon_last_error(c);
  char* json_text = nullptr;
  ASSERT_EQ(gaon_ik_call(ik, "stats", nullptr, 0, &json_text), GAON_OK) << gaon_last_error(c);
  EXPECT_EQ(json::parse(json_text)["hits"], 0);
  gaon_free(json_text);
  // A second instance cannot take the same flow; errors come with their class and reason.
  gaon_ik* other = nullptr;
  ASSERT_EQ(gaon_ik_create(c, "echo", nullptr, 0, nullptr, &other), GAON_OK);
  EXPECT_EQ(gaon_ik_attach(other, app), GAON_E_CONFLICT);
  EXPECT_NE(std::string(gaon_last_error(c)).find("already attached"), std::string::npos);
  EXPECT_EQ(gaon_ik_call(ik, "nope", nullptr, 0, nullptr), GAON_E_INVALID);
  EXPECT_NE(std::string(gaon_last_error(c)), "");
  const char* p2[] = {"capacity=1G"};
  gaon_ik_opts small{.quota_bytes = 1 << 20};
  gaon_ik* big = nullptr;
  EXPECT_EQ(gaon_ik_create(c, "kvcache", p2, 1, &small, &big), GAON_E_LIMIT);
  EXPECT_EQ(big, nullptr);
  close(app);
  EXPECT_EQ(gaon_ik_destroy(other), GAON_OK);
  EXPECT_EQ(gaon_ik_destroy(ik), GAON_OK);
  gaon_disconnect(c);
  // The C++ wrapper: RAII, errors as exceptions.
  {
    Connection conn(path_.c_str());
    IKernelInstance echo(conn, "echo", {});
    EXPECT_NE(echo.call("stats").find("echoed"), std::string::npos);
    EXPECT_THROW(echo.call("nope"), ControlError);
    EXPECT_THROW(IKernelInstance(conn, "nope", {}), ControlError);
  }
  Client root = connect();
  EXPECT_EQ(root.call("list")->size(), 0u);
}

TEST_F(ControlServer, AClientThatStopsReadingIsDroppedAndOthersAreServed) {
  Client flooder = connect();
  std::string burst;
  for (int i = 0; i < 6000; ++i) burst += frame({{"v", 1}, {"op", "types"}, {"id", i}});
  (void)flooder.send_raw(burst);  // may fail part way: the server hangs up on it
  Client other = connect();
  EXPECT_TRUE(other.call("types"));
  int replies = 0;
  for (;; ++replies) {
    auto r = flooder.read_reply();
    if (!r) {
      const bool dropped = r.error().find("closed") != std::string::npos ||
                           r.error().find("reset") != std::string::npos;
      EXPECT_TRUE(dropped) << r.error() << " after " << replies;
      break;
    }
  }
  EXPECT_LT(replies, 6000);
  EXPECT_TRUE(other.call("list"));
}

TEST_F(ControlServer, PipelinedRequestsKeepTheirSocketForTheAttach) {
  Client c = connect();
  const uint32_t id = (*c.call("create", {{"type", "echo"}}))["instance"];
  const int s = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  // "list" and "attach" in one write, the socket riding with it: the list must not eat it.
  const std::string both = frame({{"v", 1}, {"op", "list"}, {"id", 1}}) +
                           frame({{"v", 1}, {"op", "attach"}, {"id", 2}, {"instance", id}});
  iovec iov{const_cast<char*>(both.data()), both.size()};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  cmsghdr* h = CMSG_FIRSTHDR(&m);
  h->cmsg_level = SOL_SOCKET;
  h->cmsg_type = SCM_RIGHTS;
  h->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(h), &s, sizeof(int));
  ASSERT_EQ(sendmsg(c.fd(), &m, 0), ssize_t(both.size()));
  auto r1 = c.read_reply();
  auto r2 = c.read_reply();
  ASSERT_TRUE(r1 && r2);
  EXPECT_EQ((*r1)["ok"], true);
  EXPECT_EQ((*r2)["ok"], true) << r2->dump();
  close(s);
}

// ---------------------------------------------------------------- restarts

// An engine and a control server recording into `state_dir`, its notices collected.
struct Recorded {
  explicit Recorded(const std::string& state_dir, uint32_t max_instances = 16) {
    static int n = 0;
    path = fmt::format("/tmp/gaon-control-state-{}-{}.sock", getpid(), n++);
    engine = std::move(*Engine::create({.pool_frames = 1024}));
    engine->set_ports(&wire, &host);
    dp = std::thread([this] { engine->run(stop); });
    auto srv = Server::start(*engine, Registry::global(),
                             {.path = path,
                              .max_instances_per_owner = max_instances,
                              .state_dir = state_dir,
                              .log =
                                  [this](const std::string& line) {
                                    std::lock_guard lk(mu);
                                    notices.push_back(line);
                                  }},
                             {});
    EXPECT_TRUE(srv) << srv.error();
    if (srv) server = std::move(*srv);
  }
  ~Recorded() {
    server.reset();
    stop = true;
    dp.join();
  }
  std::vector<std::string> log() {
    std::lock_guard lk(mu);
    return notices;
  }
  Client connect() { return std::move(*Client::connect(path)); }
  std::string path;
  MemPort wire{"wire"}, host{"host"};
  std::unique_ptr<Engine> engine;
  std::atomic<bool> stop{false};
  std::thread dp;
  std::unique_ptr<Server> server;
  std::mutex mu;
  std::vector<std::string> notices;
};

// A UDP socket bound to 127.0.0.1 (some free port) and the flow it attaches.
std::pair<int, std::string> bound_socket() {
  const int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  return {s, fmt::format("udp:127.0.0.1:{}", ntohs(a.sin_port))};
}

std::string temp_dir() {
  char tmpl[] = "/tmp/gaon-state-XXXXXX";
  return mkdtemp(tmpl);
}

// What a restart keeps of an instance in "list".
json kept(const json& i) {
  return {{"type", i["type"]},      {"owner", i["owner"]},
          {"params", i["params"]},  {"state_quota", i["state_quota"]},
          {"flows", i["flows"]},    {"traffic_class", i["traffic_class"]},
          {"persist", i["persist"]}};
}

TEST(ControlServerRestart, PersistentInstancesAndTheirFlowsComeBack) {
  const std::string dir = temp_dir();
  json before = json::array();
  {
    Recorded d(dir);
    // gaond --ikernel's instance: adopted, made again from the command line, not recorded.
    auto inst = Instance::create({.type = "passthrough"}, Registry::global());
    ASSERT_TRUE(inst) << inst.error();
    const uint32_t adopted = *d.engine->add_instance(std::move(*inst));
    d.server->adopt(adopted, getuid(), "passthrough", 0, {});
    Client c = d.connect();
    auto a = c.call("create", {{"type", "kvcache"},
                               {"params", {"capacity=1M"}},
                               {"quota", "8M"},
                               {"weight", 5},
                               {"rate_bps", 3000000},
                               {"persist", true}});
    ASSERT_TRUE(a) << a.error();
    auto b = c.call("create", {{"type", "echo"}, {"persist", true}});
    auto gone = c.call("create", {{"type", "echo"}, {"persist", true}});
    auto session = c.call("create", {{"type", "echo"}});
    ASSERT_TRUE(b && gone && session);
    auto [s1, f1] = bound_socket();
    auto [s2, f2] = bound_socket();
    auto [s3, f3] = bound_socket();
    auto [s4, f4] = bound_socket();
    ASSERT_TRUE(c.call("attach", {{"instance", (*a)["instance"]}}, s1));
    ASSERT_TRUE(c.call("attach", {{"instance", (*a)["instance"]}}, s2));
    ASSERT_TRUE(c.call("attach", {{"instance", (*b)["instance"]}}, s3));
    ASSERT_TRUE(c.call("attach", {{"instance", (*session)["instance"]}}, s4));
    ASSERT_TRUE(c.call("detach", {{"instance", (*a)["instance"]}, {"flow", f2}}));
    ASSERT_TRUE(c.call("destroy", {{"instance", (*gone)["instance"]}}));
    for (int s : {s1, s2, s3, s4}) close(s);
    // The file holds the two persistent instances as they are now, nothing else.
    auto rec = decode_state(
        [&] {
          std::ifstream in(dir + "/state.json");
          return std::string(std::istreambuf_iterator<char>(in), {});
        }(),
        Registry::global());
    ASSERT_TRUE(rec) << rec.error();
    ASSERT_EQ(rec->size(), 2u);
    EXPECT_EQ((*rec)[0].type, "kvcache");
    EXPECT_EQ((*rec)[0].owner, getuid());
    EXPECT_EQ((*rec)[0].params, std::vector<std::string>{"capacity=1M"});
    EXPECT_EQ((*rec)[0].quota, 8u << 20);
    EXPECT_EQ((*rec)[0].tc.weight, 5u);
    EXPECT_EQ((*rec)[0].tc.rate_bps, 3000000u);
    ASSERT_EQ((*rec)[0].flows.size(), 1u);
    EXPECT_EQ((*rec)[0].flows[0].to_string(), f1);
    EXPECT_EQ((*rec)[1].type, "echo");
    ASSERT_EQ((*rec)[1].flows.size(), 1u);
    EXPECT_EQ((*rec)[1].flows[0].to_string(), f3);
    auto listed = c.call("list");
    ASSERT_TRUE(listed) << listed.error();
    for (const auto& i : *listed)
      if (i["persist"] == true && i["type"] != "passthrough") before.push_back(kept(i));
    ASSERT_EQ(before.size(), 2u);
    EXPECT_EQ(d.log().size(), 1u);  // "restored 0 of 0"
  }
  Recorded again(dir);
  const auto log = again.log();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_NE(log[0].find("restored 2 of 2 persistent instances, 2 flows"), std::string::npos)
      << log[0];
  Client c = again.connect();
  json after = json::array();
  auto listed = c.call("list");
  ASSERT_TRUE(listed) << listed.error();
  for (const auto& i : *listed) after.push_back(kept(i));
  EXPECT_EQ(after, before);
  std::filesystem::remove_all(dir);
}

// On restore, per-owner limits still apply and a flow already taken is refused: each is
// one line, and everything else comes back.
TEST(ControlServerRestart, LimitsAndConflictsSkipOnlyTheirEntry) {
  const std::string dir = temp_dir();
  std::vector<SavedInstance> saved;
  for (uint32_t id : {4, 5, 6})
    saved.push_back(
        {.id = id,
         .type = "echo",
         .owner = 64001,
         .quota = 1 << 20,
         .flows = {*FlowKey::parse(id == 6 ? "udp:127.0.0.1:7301" : "udp:127.0.0.1:7300")}});
  saved.push_back({.id = 9, .type = "echo", .owner = 0, .quota = 1 << 20});
  {
    auto sf = StateFile::open(dir);
    ASSERT_TRUE(sf) << sf.error();
    ASSERT_TRUE(sf->save(saved));
  }
  {
    Recorded d(dir, /*max_instances=*/2);
    const auto log = d.log();
    ASSERT_EQ(log.size(), 3u);
    EXPECT_NE(log[0].find("instance 5 (echo, uid 64001): flow udp:127.0.0.1:7300 not restored"),
              std::string::npos)
        << log[0];
    EXPECT_NE(log[1].find("instance 6 (echo, uid 64001) not restored: per-owner limit"),
              std::string::npos)
        << log[1];
    EXPECT_NE(log[2].find("restored 3 of 4 persistent instances, 1 flows"), std::string::npos)
        << log[2];
    for (const auto& l : log) EXPECT_EQ(l.find('\n'), std::string::npos) << l;
    EXPECT_NE(log[0].find(dir + "/state.json"), std::string::npos) << log[0];
    Client c = d.connect();
    EXPECT_EQ(c.call("list")->size(), 3u);
  }
  // What was not restored is not recorded either.
  auto sf = StateFile::open(dir);
  ASSERT_TRUE(sf) << sf.error();
  auto now = sf->load(Registry::global());
  ASSERT_TRUE(now) << now.error();
  EXPECT_EQ(now->size(), 3u);
  std::filesystem::remove_all(dir);
}

// A state file it cannot read or a state dir it cannot use: one line, and the server runs.
TEST(ControlServerRestart, ABadStateFileOrDirIsOneLineAndTheServerRuns) {
  const std::string dir = temp_dir();
  { std::ofstream(dir + "/state.json") << R"({"format": "gaond-state", "version": 1, "instan)"; }
  {
    Recorded d(dir);
    const auto log = d.log();
    ASSERT_EQ(log.size(), 1u);
    EXPECT_NE(log[0].find("state file " + dir + "/state.json: not valid JSON"), std::string::npos)
        << log[0];
    EXPECT_NE(log[0].find("starting without it"), std::string::npos) << log[0];
    Client c = d.connect();
    EXPECT_TRUE(c.call("create", {{"type", "echo"}, {"persist", true}}));
  }
  EXPECT_TRUE(std::filesystem::exists(dir + "/state.json.bad"));
  { std::ofstream(dir + "/not-a-dir") << "x"; }
  Recorded d(dir + "/not-a-dir");
  const auto log = d.log();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_NE(log[0].find("state dir " + dir + "/not-a-dir"), std::string::npos) << log[0];
  Client c = d.connect();
  EXPECT_TRUE(c.call("create", {{"type", "echo"}, {"persist", true}}));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace gaon::control
