// gaond offered far more than it can process, for a bounded time, on loopback: it stays
// responsive on its control socket, its memory stays within a bound, every frame it took
// in is accounted for (the conservation check balances), and a second service's
// well-behaved client still gets its answers. Bounded: 3 s of flood, then it stops.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "gaon/control.h"
#include "procs.h"

namespace gaon::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A UDP server on 127.0.0.1:port answering every datagram with itself, until destroyed.
class Echo {
 public:
  explicit Echo(uint16_t port) : fd_(bind_udp(port)) {
    t_ = std::thread([this] {
      char buf[2048];
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0) continue;
        sockaddr_in from{};
        socklen_t len = sizeof(from);
        const ssize_t n =
            recvfrom(fd_, buf, sizeof(buf), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &len);
        if (n >= 0)
          sendto(fd_, buf, size_t(n), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), len);
      }
    });
  }
  ~Echo() {
    stop_ = true;
    t_.join();
    close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
  std::atomic<bool> stop_{false};
  std::thread t_;
};

TEST(Overload, GaondStaysResponsiveBoundedAndAccountsForEveryFrame) {
  const std::string gaond = std::string(GAON_BIN_DIR) + "/gaond";
  if (access(gaond.c_str(), X_OK) != 0) GTEST_SKIP() << "gaond is not built";
  const uint16_t wire_a = free_port(), app_a = free_port(), wire_b = free_port(),
                 app_b = free_port();
  Echo echo_a(app_a), echo_b(app_b);
  ASSERT_TRUE(echo_a.ok() && echo_b.ok());
  const std::string sock = "/tmp/gaond-overload-" + std::to_string(getpid()) + ".sock";
  auto svc = [](uint16_t p) { return "udp:127.0.0.1:" + std::to_string(p); };
  Child g = Child::start({gaond, "--wire", svc(wire_a), "--host", svc(app_a), "--wire", svc(wire_b),
                          "--host", svc(app_b), "--ikernel", "passthrough", "--control", sock});
  ASSERT_TRUE(g.wait_errors("ready")) << g.errors();
  auto ctl = control::Client::connect(sock);
  ASSERT_TRUE(ctl) << ctl.error();
  const int b = bind_udp(0);
  ASSERT_GE(b, 0);
  ASSERT_EQ(udp_ask(b, loopback(wire_b), "hello", 2000ms), "hello");
  const uint64_t rss_before = rss_kib(g.pid());

  // The flood: 64 client sockets sending 64-byte datagrams to service A as fast as they
  // can, for 3 s.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> offered{0};
  std::vector<std::thread> flood;
  std::vector<int> fds;
  for (int i = 0; i < 64; ++i) fds.push_back(bind_udp(0));
  for (int t = 0; t < 2; ++t)  // two threads, 32 sockets each
    flood.emplace_back([&, t] {
      const std::vector<int> mine(fds.begin() + t * 32, fds.begin() + (t + 1) * 32);
      flood_udp(mine, loopback(wire_a), stop, offered);
    });

  // Meanwhile: a well-behaved client of service B (one request every 10 ms) and the control
  // socket asked for stats every 200 ms.
  int asked = 0, answered = 0, stats_calls = 0;
  auto slowest = Clock::duration::zero();
  const auto end = Clock::now() + 3s;
  auto next_stats = Clock::now();
  while (Clock::now() < end) {
    const std::string m = "b" + std::to_string(asked++);
    answered += udp_ask(b, loopback(wire_b), m, 200ms) == m;
    if (Clock::now() >= next_stats) {
      const auto t0 = Clock::now();
      auto s = ctl->call("stats");
      slowest = std::max(slowest, Clock::now() - t0);
      EXPECT_TRUE(s) << s.error();
      ++stats_calls;
      next_stats += 200ms;
    }
    std::this_thread::sleep_for(10ms);
  }
  stop = true;
  for (auto& t : flood) t.join();
  for (int fd : fds) close(fd);
  const uint64_t rss_after = rss_kib(g.pid());

  std::this_thread::sleep_for(300ms);  // let the queues drain
  auto s = ctl->call("stats");
  ASSERT_TRUE(s) << s.error();
  const nlohmann::json& cons = (*s)["conservation"];
  const uint64_t taken = (*s)["wire"]["rx"].get<uint64_t>();
  uint64_t lost_before = 0;
  for (const auto& [k, v] : cons["wire_port"]["lost_before_gaond"].items())
    lost_before += v.get<uint64_t>();
  std::printf(
      "offered %llu datagrams in 3 s; gaond took %llu, the kernel dropped %llu (socket "
      "full); service B: %d of %d answered; slowest stats call %lld ms; RSS %llu -> "
      "%llu KiB\n",
      (unsigned long long)offered.load(), (unsigned long long)taken,
      (unsigned long long)lost_before, answered, asked,
      (long long)std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count(),
      (unsigned long long)rss_before, (unsigned long long)rss_after);
  EXPECT_TRUE(cons["balanced"].get<bool>()) << cons.dump(2);
  EXPECT_TRUE(cons["all_balanced"].get<bool>()) << cons.dump(2);
  EXPECT_EQ(cons["queued"], 0) << cons.dump(2);
  // It was an overload: more was offered than gaond took, and the kernel counted the rest.
  EXPECT_GT(offered.load(), taken);
  EXPECT_GT(lost_before, 0u) << cons.dump(2);
  EXPECT_GE(taken + lost_before, offered.load() / 2) << "most of the flood is accounted for";
  // Responsive, bounded, and fair to the other service.
  EXPECT_GE(stats_calls, 10);
  EXPECT_LT(slowest, 1000ms);
  EXPECT_LT(rss_after, rss_before + 16 * 1024) << "RSS grew by 16 MiB or more under overload";
  EXPECT_GE(answered, asked * 9 / 10) << "service B starved";
  close(b);
  EXPECT_EQ(g.stop(), 0) << g.errors();
}

}  // namespace
}  // namespace gaon::test
