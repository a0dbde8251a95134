// The datapath allocates nothing: with traffic flowing through echo, passthrough,
// unmatched and malformed paths, the engine's poll makes no call to operator new.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "frames.h"
#include "gaon/engine.h"
#include "gaon/mem_port.h"

// g++ cannot see that the replaced operator new below pairs with free().
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace {
thread_local bool g_counting = false;
std::atomic<size_t> g_news{0};
}  // namespace

// Replaceable global allocation functions: count while armed, otherwise plain malloc/free.
void* operator new(std::size_t n) {
  if (g_counting) g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace gaon {
namespace {

TEST(Datapath, PollAllocatesNothing) {
  auto e = Engine::create({.pool_frames = 1024});
  ASSERT_TRUE(e);
  Engine& eng = **e;
  MemPort wire("wire"), host("host");
  eng.set_ports(&wire, &host);
  const auto& reg = Registry::global();
  const uint32_t echo = *eng.add_instance(std::move(*Instance::create({.type = "echo"}, reg)));
  const uint32_t pass =
      *eng.add_instance(std::move(*Instance::create({.type = "passthrough"}, reg)));
  ASSERT_TRUE(eng.add_flow(*FlowKey::parse("udp:10.0.0.2:7"), echo));
  ASSERT_TRUE(eng.add_flow(*FlowKey::parse("udp:10.0.0.2:11211"), pass));

  std::vector<test::Bytes> frames;
  for (uint16_t port : {7, 11211, 9}) {
    test::FrameSpec s;
    s.dport = port;
    s.payload = test::text("some payload");
    frames.push_back(test::build_frame(s));
  }
  frames.push_back(test::Bytes(20, 0xee));  // malformed
  test::FrameSpec reply;
  reply.src_ip = "10.0.0.2";
  reply.dst_ip = "10.0.0.1";
  reply.sport = 11211;
  reply.dport = 40000;
  const test::Bytes egress = test::build_frame(reply);

  auto round = [&](bool count) {
    Packet* burst[kBurst];
    for (size_t i = 0; i < kBurst; ++i)
      burst[i] = test::make_packet(eng.pool(), frames[i % frames.size()]);
    Packet* e8[8];
    for (auto& p : e8) p = test::make_packet(eng.pool(), egress);
    wire.inject(burst);
    host.inject(e8);
    g_counting = count;
    eng.poll(1);
    g_counting = false;
    for (MemPort* port : {&wire, &host})
      while (uint32_t n = port->collect(burst))
        for (uint32_t i = 0; i < n; ++i) eng.pool().free(burst[i]);
  };
  for (int i = 0; i < 10; ++i) round(false);  // warm up
  g_news = 0;
  for (int i = 0; i < 1000; ++i) round(true);
  EXPECT_EQ(g_news.load(), 0u);
  EXPECT_EQ(eng.pool().available(), eng.pool().capacity());
  // The harness itself is seen by the counter (proof that it counts).
  g_counting = true;
  void* probe = ::operator new(16);  // a direct call: the compiler may not elide it
  g_counting = false;
  ::operator delete(probe);
  EXPECT_EQ(g_news.load(), 1u);
}

}  // namespace
}  // namespace gaon
