// The datapath allocates nothing: with traffic flowing through echo, passthrough,
// unmatched and malformed paths, the engine's poll makes no call to operator new.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <new>

#include <openssl/crypto.h>

#include "frames.h"
#include "gaon/capture.h"
#include "gaon/engine.h"
#include "gaon/mem_port.h"
#include "tokens.h"

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

// One burst from the wire — frame i is frames[(i * stride) % n] — and 8 copies of `egress`
// from the host (when given), polled once with allocations counted when `count`.
void poll_round(Engine& eng, MemPort& wire, MemPort& host, const std::vector<test::Bytes>& frames,
                size_t stride, const test::Bytes* egress, bool count) {
  Packet* burst[kBurst];
  for (size_t i = 0; i < kBurst; ++i)
    burst[i] = test::make_packet(eng.pool(), frames[(i * stride) % frames.size()]);
  wire.inject(burst);
  if (egress != nullptr) {
    Packet* e8[8];
    for (auto& p : e8) p = test::make_packet(eng.pool(), *egress);
    host.inject(e8);
  }
  g_counting = count;
  eng.poll(1);
  g_counting = false;
  for (MemPort* port : {&wire, &host})
    while (uint32_t n = port->collect(burst))
      for (uint32_t i = 0; i < n; ++i) eng.pool().free(burst[i]);
}

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

  for (int i = 0; i < 10; ++i) poll_round(eng, wire, host, frames, 1, &egress, false);  // warm up
  g_news = 0;
  for (int i = 0; i < 1000; ++i) poll_round(eng, wire, host, frames, 1, &egress, true);
  EXPECT_EQ(g_news.load(), 0u);
  EXPECT_EQ(eng.pool().available(), eng.pool().capacity());
  // The harness itself is seen by the counter (proof that it counts).
  g_counting = true;
  void* probe = ::operator new(16);  // a direct call: the compiler may not elide it
  g_counting = false;
  ::operator delete(probe);
  EXPECT_EQ(g_news.load(), 1u);
}

// Capturing an instance (capture.h) copies into a ring made when the capture starts:
// nothing is allocated per frame, and the ring full is counted, not grown.
TEST(Datapath, CapturingAllocatesNothing) {
  auto e = Engine::create({.pool_frames = 1024});
  ASSERT_TRUE(e);
  Engine& eng = **e;
  MemPort wire("wire"), host("host");
  eng.set_ports(&wire, &host);
  const uint32_t echo =
      *eng.add_instance(std::move(*Instance::create({.type = "echo"}, Registry::global())));
  ASSERT_TRUE(eng.add_flow(*FlowKey::parse("udp:10.0.0.2:7"), echo));
  test::FrameSpec s;
  s.dport = 7;
  s.payload = test::text("some payload");
  const std::vector<test::Bytes> frames = {test::build_frame(s)};
  Capture cap({.count = 1u << 20, .slots = 256});
  ASSERT_TRUE(eng.set_capture(echo, &cap));
  for (int i = 0; i < 10; ++i) poll_round(eng, wire, host, frames, 1, nullptr, false);
  g_news = 0;
  for (int i = 0; i < 1000; ++i) {
    poll_round(eng, wire, host, frames, 1, nullptr, true);
    if (i % 2 == 0) cap.drain([](const CaptureRecord&) {});  // half the time: some lost
  }
  EXPECT_EQ(g_news.load(), 0u);
  EXPECT_GT(cap.taken(), 1000u);
  EXPECT_GT(cap.lost(), 0u);
}

// auth (both framings, valid and forged requests) and topk: no operator new, and no
// allocation by OpenSSL either (counted through CRYPTO_set_mem_functions, which must come
// before OpenSSL's first allocation: ctest runs each test in its own process).
void* count_malloc(size_t n, const char*, int) {
  if (g_counting) ++g_news;
  return std::malloc(n);
}
void* count_realloc(void* p, size_t n, const char*, int) {
  if (g_counting) ++g_news;
  return std::realloc(p, n);
}
void plain_free(void* p, const char*, int) { std::free(p); }

TEST(Datapath, AuthAndTopKAllocateNothing) {
  if (CRYPTO_set_mem_functions(count_malloc, count_realloc, plain_free) != 1)
    GTEST_SKIP() << "OpenSSL allocated before this test (run it alone, as ctest does)";
  auto e = Engine::create({.pool_frames = 1024});
  ASSERT_TRUE(e);
  Engine& eng = **e;
  MemPort wire("wire"), host("host");
  eng.set_ports(&wire, &host);
  const auto& reg = Registry::global();
  auto add = [&](const char* type, std::vector<std::string> params, uint16_t port) {
    const uint32_t id =
        *eng.add_instance(std::move(*Instance::create({.type = type, .params = params}, reg)));
    EXPECT_TRUE(eng.add_flow(*FlowKey::parse("udp:10.0.0.2:" + std::to_string(port)), id));
    return id;
  };
  const std::vector<uint8_t> key = test::unhex(std::string(64, 'a'));
  const uint32_t trailer = add("auth", {}, 1000), coap = add("auth", {"framing=coap"}, 1001);
  add("topk", {"key=mc_get", "k=4"}, 1002);
  for (uint32_t id : {trailer, coap})
    ASSERT_TRUE(eng.call(id, "set_key", std::vector<std::string>{test::hex(key)}));
  const std::string jwt = test::make_jwt(
      R"({"alg":"HS256"})", R"({"exp":)" + std::to_string(time(nullptr) + 600) + "}", key);
  std::vector<std::pair<uint16_t, std::string>> sends = {
      {1000, test::with_trailer("valid", key)},
      {1000, "forged" + std::string(32, 'x')},
      {1001, test::coap_msg(0, 1, 1, "t", {{11, "a"}, {65000, jwt}})},
      {1001, test::coap_msg(0, 1, 1, "t", {{65000, jwt.substr(1)}})},
      {1001, test::coap_msg(0, 1, 1, "t", {})},
  };
  for (int k = 0; k < 40; ++k)
    sends.push_back({1002, test::mc_dgram("get key" + std::to_string(k % 9) + "\r\n", 1)});
  std::vector<test::Bytes> frames;
  for (const auto& [port, payload] : sends) {
    test::FrameSpec s;
    s.dport = port;
    s.payload = test::text(payload);
    frames.push_back(test::build_frame(s));
  }
  for (int i = 0; i < 10; ++i) poll_round(eng, wire, host, frames, 7, nullptr, false);
  g_news = 0;
  for (int i = 0; i < 300; ++i) poll_round(eng, wire, host, frames, 7, nullptr, true);
  EXPECT_EQ(g_news.load(), 0u);
  EXPECT_GT(eng.instance_stats(trailer)["counters"]["to_host"].get<uint64_t>(), 0u)
      << eng.instance_stats(trailer).dump();
  // OpenSSL's own allocations are seen (proof that the hook counts).
  g_counting = true;
  void* probe = OPENSSL_malloc(16);
  g_counting = false;
  OPENSSL_free(probe);
  EXPECT_EQ(g_news.load(), 1u);
}

}  // namespace
}  // namespace gaon
