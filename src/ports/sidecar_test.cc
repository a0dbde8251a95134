// Sidecar ports on real loopback UDP sockets: framing, the per-client NAT, receive hints
// from the Waiter, drained bursts, and NAT expiry while the datapath sleeps.
#include "gaon/sidecar.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "gaon/net.h"
#include "gaon/parse.h"
#include "procs.h"

namespace gaon::sidecar {
namespace {

using test::loopback;

// A plain UDP socket: a client, or the application behind the AppPort.
struct Sock {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  explicit Sock(uint16_t port = 0) {
    const sockaddr_in a = loopback(port);
    EXPECT_EQ(bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)), 0);
  }
  ~Sock() { close(fd); }
  sockaddr_in addr() const {
    sockaddr_in a{};
    socklen_t n = sizeof(a);
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
    return a;
  }
  void send_to(const sockaddr_in& to, const std::string& s) const {
    ASSERT_EQ(sendto(fd, s.data(), s.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof(to)),
              ssize_t(s.size()));
  }
  // One datagram within a second, with its source; "" on timeout.
  std::string recv(sockaddr_in* from = nullptr) const {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 1000) != 1) return "";
    char buf[2048];
    sockaddr_in f{};
    socklen_t n = sizeof(f);
    const ssize_t r = recvfrom(fd, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&f), &n);
    if (from) *from = f;
    return r < 0 ? "" : std::string(buf, size_t(r));
  }
};

std::string payload_of(Packet& p) {
  EXPECT_EQ(parse(p, {.verify_l4_checksum = false}), ParseResult::ok);
  return std::string(reinterpret_cast<const char*>(p.payload()), p.hdr.payload_len);
}

// Receives from `port` until `want` frames came or a second passed.
std::vector<Packet*> receive(Port& port, size_t want) {
  std::vector<Packet*> got;
  Packet* buf[kBurst];
  for (int i = 0; i < 1000 && got.size() < want; ++i) {
    const uint32_t n = port.rx_burst(buf);
    got.insert(got.end(), buf, buf + n);
    if (n == 0) usleep(1000);
  }
  return got;
}

class SidecarPort : public ::testing::Test {
 protected:
  void SetUp() override {
    auto p = BufferPool::create(256);
    ASSERT_TRUE(p);
    pool_ = std::move(*p);
    service_ = loopback(test::free_port());
    auto w = ServicePort::open(service_, *pool_);
    ASSERT_TRUE(w) << w.error();
    wire_ = std::move(*w);
  }
  void open_app(uint64_t idle_timeout_ns = 60'000'000'000ull) {
    auto h = AppPort::open(app_.addr(), service_, *pool_,
                           {.max_clients = 2, .idle_timeout_ns = idle_timeout_ns});
    ASSERT_TRUE(h) << h.error();
    host_ = std::move(*h);
    auto wt = Waiter::open(*wire_, *host_);
    ASSERT_TRUE(wt) << wt.error();
    waiter_ = std::move(*wt);
  }
  void TearDown() override { EXPECT_EQ(pool_->available(), pool_->capacity()); }

  std::unique_ptr<BufferPool> pool_;
  sockaddr_in service_{};
  std::unique_ptr<ServicePort> wire_;
  Sock app_;
  std::unique_ptr<AppPort> host_;
  std::unique_ptr<Waiter> waiter_;
};

TEST(SidecarPortAddress, ParsesAndRejectsClearly) {
  auto a = parse_udp_address("udp:127.0.0.1:11211");
  ASSERT_TRUE(a) << a.error();
  EXPECT_EQ(ntohs(a->sin_port), 11211);
  EXPECT_EQ(to_string(*a), "udp:127.0.0.1:11211");
  for (const char* bad : {"tcp:127.0.0.1:1", "udp:0.0.0.0:1", "udp:127.0.0.1:0", "udp:[::1]:1",
                          "udp:127.0.0.1", "udp:300.0.0.1:1", "127.0.0.1:11211"}) {
    auto r = parse_udp_address(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().find('\n'), std::string::npos) << r.error();
  }
}

TEST_F(SidecarPort, AClientDatagramBecomesAFrameFromTheClientToTheService) {
  Sock client;
  client.send_to(service_, "hello");
  auto got = receive(*wire_, 1);
  ASSERT_EQ(got.size(), 1u);
  Packet& p = *got[0];
  EXPECT_EQ(payload_of(p), "hello");
  EXPECT_EQ(p.hdr.l4_proto, L4::udp);
  const sockaddr_in ca = client.addr();
  EXPECT_EQ(std::memcmp(p.l3() + net::ip4::src, &ca.sin_addr, 4), 0);
  EXPECT_EQ(std::memcmp(p.l4() + net::udp::sport, &ca.sin_port, 2), 0);
  EXPECT_EQ(std::memcmp(p.l4() + net::udp::dport, &service_.sin_port, 2), 0);
  EXPECT_TRUE(wire_->rx_drained());  // one datagram, fewer than a burst
  // The service answers it: swap the addresses and send the frame back out.
  std::swap_ranges(p.l3() + net::ip4::src, p.l3() + net::ip4::src + 4, p.l3() + net::ip4::dst);
  std::swap_ranges(p.l4(), p.l4() + 2, p.l4() + 2);
  Packet* out = &p;
  EXPECT_EQ(wire_->tx_burst({&out, 1}), 1u);
  sockaddr_in from{};
  EXPECT_EQ(client.recv(&from), "hello");
  EXPECT_EQ(from.sin_port, service_.sin_port);
  EXPECT_EQ(wire_->stats()["tx"], 1);
}

TEST_F(SidecarPort, TheNatGivesEachClientItsOwnSocketAndBringsRepliesBack) {
  open_app();
  Sock a, b;
  a.send_to(service_, "from a");
  b.send_to(service_, "from b");
  auto in = receive(*wire_, 2);
  ASSERT_EQ(in.size(), 2u);
  // What passes to the host goes to the application from one socket per client.
  EXPECT_EQ(host_->tx_burst({in.data(), in.size()}), 2u);
  sockaddr_in from_a{}, from_b{};
  std::string first = app_.recv(&from_a), second = app_.recv(&from_b);
  if (first == "from b") {
    std::swap(first, second);
    std::swap(from_a, from_b);
  }
  EXPECT_EQ(first, "from a");
  EXPECT_EQ(second, "from b");
  EXPECT_NE(from_a.sin_port, from_b.sin_port);
  EXPECT_EQ(host_->clients(), 2u);
  // The application answers each; the replies come back as frames service -> client.
  app_.send_to(from_a, "to a");
  app_.send_to(from_b, "to b");
  auto back = receive(*host_, 2);
  ASSERT_EQ(back.size(), 2u);
  for (Packet* p : back) {
    const std::string body = payload_of(*p);
    const sockaddr_in ca = (body == "to a" ? a : b).addr();
    EXPECT_EQ(std::memcmp(p->l3() + net::ip4::dst, &ca.sin_addr, 4), 0);
    EXPECT_EQ(std::memcmp(p->l4() + net::udp::dport, &ca.sin_port, 2), 0);
    EXPECT_EQ(std::memcmp(p->l4() + net::udp::sport, &service_.sin_port, 2), 0);
  }
  EXPECT_EQ(wire_->tx_burst({back.data(), back.size()}), 2u);
  EXPECT_EQ(a.recv(), "to a");
  EXPECT_EQ(b.recv(), "to b");
  // A third client evicts the least recently used entry (max_clients = 2).
  Sock c;
  c.send_to(service_, "from c");
  auto in_c = receive(*wire_, 1);
  ASSERT_EQ(in_c.size(), 1u);
  EXPECT_EQ(host_->tx_burst({in_c.data(), 1}), 1u);
  EXPECT_EQ(app_.recv(), "from c");
  EXPECT_EQ(host_->clients(), 2u);
  EXPECT_EQ(host_->stats()["nat_evicted"], 1);
  // It was a's entry (a was sent first): b keeps its socket, a gets a new one.
  auto again = [&](const Sock& s, const std::string& body) {
    s.send_to(service_, body);
    auto f = receive(*wire_, 1);
    ASSERT_EQ(f.size(), 1u);
    EXPECT_EQ(host_->tx_burst({f.data(), 1}), 1u);
    EXPECT_EQ(app_.recv(), body);
  };
  again(b, "b again");
  EXPECT_EQ(host_->stats()["nat_created"], 3);
  again(a, "a again");
  EXPECT_EQ(host_->stats()["nat_created"], 4);
  EXPECT_EQ(host_->stats()["nat_evicted"], 2);  // c's went: b was used after it
}

TEST_F(SidecarPort, AfterAWaitOnlyTheReadyPortIsRead) {
  open_app();
  Sock client;
  client.send_to(service_, "ping");
  waiter_->wait(1000);  // the wire is ready, the host (no clients yet) is not
  Packet* buf[kBurst];
  EXPECT_EQ(host_->rx_burst(buf), 0u);
  ASSERT_EQ(wire_->rx_burst(buf), 1u);
  EXPECT_EQ(host_->tx_burst({buf, 1}), 1u);
  sockaddr_in nat{};
  EXPECT_EQ(app_.recv(&nat), "ping");

  // Nothing ready: the wait times out and the next receive on each port skips its syscall,
  // even for data that arrived in between; the one after reads it.
  const uint64_t calls = wire_->stats()["rx_calls"];
  waiter_->wait(1);
  client.send_to(service_, "late");
  usleep(20000);
  EXPECT_EQ(wire_->rx_burst(buf), 0u);
  EXPECT_EQ(wire_->stats()["rx_calls"], calls);
  ASSERT_EQ(wire_->rx_burst(buf), 1u);
  EXPECT_EQ(payload_of(*buf[0]), "late");
  pool_->free(buf[0]);

  // The application's reply wakes the waiter on the host side only.
  app_.send_to(nat, "pong");
  waiter_->wait(1000);
  EXPECT_EQ(wire_->rx_burst(buf), 0u);
  ASSERT_EQ(host_->rx_burst(buf), 1u);
  EXPECT_EQ(payload_of(*buf[0]), "pong");
  EXPECT_TRUE(host_->rx_drained());
  pool_->free(buf[0]);
  EXPECT_EQ(waiter_->waits(), 3u);
}

TEST_F(SidecarPort, AFullBurstIsNotDrained) {
  Sock client;
  for (uint32_t i = 0; i < kBurst + 3; ++i) client.send_to(service_, "x" + std::to_string(i));
  usleep(20000);
  Packet* buf[kBurst];
  ASSERT_EQ(wire_->rx_burst(buf), kBurst);
  EXPECT_FALSE(wire_->rx_drained());
  for (Packet* p : buf) pool_->free(p);
  ASSERT_EQ(wire_->rx_burst(buf), 3u);
  EXPECT_TRUE(wire_->rx_drained());
  for (uint32_t i = 0; i < 3; ++i) pool_->free(buf[i]);
  EXPECT_EQ(wire_->stats()["rx_calls"], 2);
}

TEST_F(SidecarPort, IdleNatEntriesExpireEvenWhileTheDatapathSleeps) {
  open_app(50'000'000);  // 50 ms
  Sock client;
  client.send_to(service_, "once");
  auto in = receive(*wire_, 1);
  ASSERT_EQ(in.size(), 1u);
  EXPECT_EQ(host_->tx_burst({in.data(), 1}), 1u);
  EXPECT_EQ(app_.recv(), "once");
  ASSERT_EQ(host_->clients(), 1u);
  // The datapath only waits (timeouts) and polls with "nothing ready" hints.
  Packet* buf[kBurst];
  for (int i = 0; i < 200 && host_->clients() > 0; ++i) {
    waiter_->wait(10);
    EXPECT_EQ(host_->rx_burst(buf), 0u);
  }
  EXPECT_EQ(host_->clients(), 0u);
  EXPECT_EQ(host_->stats()["nat_expired"], 1);
}

TEST_F(SidecarPort, AGroupSendsEachFrameByItsServiceAndCountsTheRest) {
  const sockaddr_in other = loopback(test::free_port());
  auto second = ServicePort::open(other, *pool_);
  ASSERT_TRUE(second) << second.error();
  PortGroup group("wire", PortGroup::Route::by_source, *pool_);
  group.add(*wire_, service_);
  group.add(**second, other);
  Sock client;
  client.send_to(other, "to the second");
  client.send_to(service_, "to the first");
  auto in = receive(group, 2);
  ASSERT_EQ(in.size(), 2u);
  EXPECT_TRUE(group.rx_drained());
  // Answer both (addresses swapped): each reply leaves by the service it was sent to.
  for (Packet* p : in) {
    ASSERT_EQ(parse(*p, {.verify_l4_checksum = false}), ParseResult::ok);
    std::swap_ranges(p->l3() + net::ip4::src, p->l3() + net::ip4::src + 4, p->l3() + net::ip4::dst);
    std::swap_ranges(p->l4(), p->l4() + 2, p->l4() + 2);
  }
  // And a frame from an address no member serves.
  Packet* stray = pool_->alloc();
  std::memcpy(stray->data() + kSynthHeaders, "x", 1);
  const sockaddr_in nowhere = loopback(9);
  frame_datagram(*stray, nowhere, client.addr(), 1);
  in.push_back(stray);
  EXPECT_EQ(group.tx_burst({in.data(), in.size()}), 3u);
  std::map<std::string, uint16_t> from;
  for (int i = 0; i < 2; ++i) {
    sockaddr_in f{};
    const std::string body = client.recv(&f);
    from[body] = ntohs(f.sin_port);
  }
  EXPECT_EQ(from["to the first"], ntohs(service_.sin_port));
  EXPECT_EQ(from["to the second"], ntohs(other.sin_port));
  EXPECT_EQ(group.stats()["unroutable"], 1);
}

TEST_F(SidecarPort, WakeEndsAWaitEarly) {
  open_app();
  std::thread t([&] {
    usleep(50000);
    waiter_->wake();
  });
  const auto t0 = std::chrono::steady_clock::now();
  waiter_->wait(5000);
  const auto took = std::chrono::steady_clock::now() - t0;
  t.join();
  EXPECT_LT(took, std::chrono::seconds(2));
  Packet* buf[kBurst];
  const uint64_t calls = wire_->stats()["rx_calls"];
  EXPECT_EQ(wire_->rx_burst(buf), 0u);  // a wake-up is not traffic: no receive syscall
  EXPECT_EQ(wire_->stats()["rx_calls"], calls);
}

}  // namespace
}  // namespace gaon::sidecar

namespace gaon::sidecar {
namespace {

// The store trades buffers, never copies, and a ticket whose slot was reused since is lost,
// never someone else's bytes.
TEST(OversizeStore, KeepsTailsUnderTicketsAndLosesOnlyOverwrittenOnes) {
  auto s = OversizeStore::create(4);
  ASSERT_TRUE(s) << s.error();
  EXPECT_FALSE(OversizeStore::create(0));
  EXPECT_FALSE(OversizeStore::create(257));
  std::vector<uint32_t> tickets;
  for (uint32_t i = 0; i < 6; ++i) {
    const std::span<uint8_t> scratch = (*s)->scratch(i % 2);
    std::memset(scratch.data(), 'a' + int(i), 3000);
    tickets.push_back((*s)->keep(i % 2, 3000 - i));
    EXPECT_NE(tickets.back(), 0u);
  }
  // 4 slots: the first two were overwritten by the 5th and 6th.
  EXPECT_TRUE((*s)->tail(tickets[0]).empty());
  EXPECT_TRUE((*s)->tail(tickets[1]).empty());
  for (uint32_t i = 2; i < 6; ++i) {
    const auto t = (*s)->tail(tickets[i]);
    ASSERT_EQ(t.size(), 3000 - i);
    EXPECT_EQ(t[0], 'a' + int(i));
    EXPECT_EQ(t[t.size() - 1], 'a' + int(i));
  }
  EXPECT_EQ((*s)->kept(), 6u);
}

}  // namespace
}  // namespace gaon::sidecar
