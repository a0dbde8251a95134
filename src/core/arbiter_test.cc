// The egress arbiter on its own: DRR shares, rate limits, bounded queues, host class.
#include "gaon/arbiter.h"

#include <gtest/gtest.h>

#include <vector>

#include "gaon/pool.h"

namespace gaon {
namespace {

class ArbiterTest : public ::testing::Test {
 protected:
  void SetUp() override { pool_ = std::move(*BufferPool::create(16384)); }
  Packet* pkt(uint16_t len, uint32_t cls) {
    Packet* p = pool_->alloc();
    p->len = len;
    p->instance = cls;
    return p;
  }
  // Tops up every class in `classes` to a full queue before each tick (saturation), lets
  // the wire take `per_tick` packets per tick for `ticks` ticks of `tick_ns`, and returns
  // the bytes sent per class.
  std::vector<uint64_t> run(Arbiter& a, const std::vector<std::pair<uint32_t, uint16_t>>& load,
                            uint32_t per_tick, int ticks, uint64_t tick_ns = 1000) {
    std::vector<uint64_t> bytes(a.classes());
    std::vector<Packet*> out(per_tick);
    for (int t = 0; t < ticks; ++t) {
      now_ += tick_ns;
      for (auto [c, len] : load) {
        while (true) {
          Packet* p = pkt(len, c);
          if (!a.enqueue(c, p)) {
            pool_->free(p);
            break;
          }
        }
      }
      const uint32_t n = a.dequeue(out, now_);
      for (uint32_t i = 0; i < n; ++i) {
        bytes[out[i]->instance] += out[i]->len;
        pool_->free(out[i]);
      }
    }
    return bytes;
  }
  std::unique_ptr<BufferPool> pool_;
  uint64_t now_ = 1;
};

TEST_F(ArbiterTest, WeightsOneAndThreeShareTheWire25To75) {
  Arbiter a(3, 64);
  a.configure(1, 1);
  a.configure(2, 3);
  auto bytes = run(a, {{1, 64}, {2, 64}}, 8, 20000);
  const double total = double(bytes[1] + bytes[2]);
  EXPECT_NEAR(bytes[1] / total, 0.25, 0.03);
  EXPECT_NEAR(bytes[2] / total, 0.75, 0.03);
}

TEST_F(ArbiterTest, SharesAreInBytesNotPackets) {
  // Class 1 sends 1500-byte frames, class 2 sends 64-byte frames, equal weights: equal
  // bytes, so class 2 sends ~23x as many packets.
  Arbiter a(3, 256);
  a.configure(1, 1);
  a.configure(2, 1);
  auto bytes = run(a, {{1, 1500}, {2, 64}}, 16, 20000);
  const double total = double(bytes[1] + bytes[2]);
  EXPECT_NEAR(bytes[1] / total, 0.5, 0.03);
}

TEST_F(ArbiterTest, HostClassIsNeverStarved) {
  Arbiter a(3, 64);
  a.configure(0, 1);     // host
  a.configure(1, 1000);  // a greedy instance
  a.configure(2, 1000);
  auto bytes = run(a, {{0, 64}, {1, 64}, {2, 64}}, 32, 50000);
  const double total = double(bytes[0] + bytes[1] + bytes[2]);
  EXPECT_GT(bytes[0], 0u);
  EXPECT_NEAR(bytes[0] / total, 1.0 / 2001, 0.0005);
  // And with no competition the host class gets the whole wire.
  Arbiter b(2, 64);
  auto alone = run(b, {{0, 64}}, 32, 100);
  EXPECT_EQ(alone[0], 100u * 32 * 64);
}

TEST_F(ArbiterTest, RateLimitedClassStaysWithinFivePercentOfItsLimit) {
  Arbiter a(3, 512);
  const uint64_t rate_bps = 10'000'000;  // 10 Mbit/s
  a.configure(1, 1, rate_bps, 3000);
  a.configure(2, 1);
  // 2 s of simulated time in 10 µs ticks; the wire could carry far more.
  const int ticks = 200000;
  auto bytes = run(a, {{1, 1000}, {2, 1000}}, 32, ticks, 10'000);
  const double seconds = ticks * 10e-6;
  const double got_bps = bytes[1] * 8 / seconds;
  EXPECT_NEAR(got_bps / rate_bps, 1.0, 0.05) << got_bps;
  // The unlimited class takes the rest of the wire.
  EXPECT_GT(bytes[2], bytes[1] * 10);
}

TEST_F(ArbiterTest, RateLimitHoldsWhenAlone) {
  Arbiter a(2, 512);
  a.configure(1, 1, 1'000'000, 2000);  // 1 Mbit/s
  const int ticks = 100000;            // 1 s in 10 µs ticks
  auto bytes = run(a, {{1, 500}}, 32, ticks, 10'000);
  EXPECT_NEAR(bytes[1] * 8 / 1.0 / 1'000'000, 1.0, 0.05);
}

TEST_F(ArbiterTest, QueuesAreBoundedAndDropsCounted) {
  Arbiter a(2, 16);
  int accepted = 0;
  for (int i = 0; i < 40; ++i) {
    Packet* p = pkt(64, 1);
    if (a.enqueue(1, p))
      ++accepted;
    else
      pool_->free(p);
  }
  EXPECT_EQ(accepted, 16);
  EXPECT_EQ(a.stats(1).dropped_full, 24u);
  EXPECT_EQ(a.stats(1).enqueued, 16u);
  EXPECT_EQ(a.queued(), 16u);
}

TEST_F(ArbiterTest, FlushEmptiesOneClassAndKeepsTheOthers) {
  Arbiter a(4, 16);
  for (uint32_t c = 1; c <= 3; ++c)
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(a.enqueue(c, pkt(64, c)));
  std::vector<Packet*> flushed(16);
  EXPECT_EQ(a.flush(2, flushed), 5u);
  for (uint32_t i = 0; i < 5; ++i) EXPECT_EQ(flushed[i]->instance, 2u);
  std::vector<Packet*> out(64);
  const uint32_t n = a.dequeue(out, 1);
  EXPECT_EQ(n, 10u);
  for (uint32_t i = 0; i < n; ++i) EXPECT_NE(out[i]->instance, 2u);
  EXPECT_TRUE(a.empty());
}

TEST_F(ArbiterTest, FifoWithinAClass) {
  Arbiter a(2, 64);
  std::vector<Packet*> in;
  for (int i = 0; i < 40; ++i) {
    in.push_back(pkt(static_cast<uint16_t>(60 + i), 1));
    ASSERT_TRUE(a.enqueue(1, in.back()));
  }
  std::vector<Packet*> out(7), all;
  while (uint32_t n = a.dequeue(out, 1)) all.insert(all.end(), out.begin(), out.begin() + n);
  EXPECT_EQ(all, in);
}

TEST_F(ArbiterTest, FramesLargerThanTheQuantumStillGo) {
  Arbiter a(2, 64, 64);  // quantum smaller than the frames
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(a.enqueue(1, pkt(1500, 1)));
  std::vector<Packet*> out(32);
  uint32_t total = 0;
  for (int i = 0; i < 100 && !a.empty(); ++i) total += a.dequeue(out, 1);
  EXPECT_EQ(total, 10u);
}

}  // namespace
}  // namespace gaon
