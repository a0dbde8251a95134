// ShapedPort: a token bucket in front of another port's transmit side.
#include "gaon/shaped_port.h"

#include <gtest/gtest.h>

#include <vector>

#include "gaon/mem_port.h"
#include "gaon/pool.h"

namespace gaon {
namespace {

uint64_t fake_now = 0;
uint64_t fake_clock() { return fake_now; }

class ShapedPortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = std::move(*BufferPool::create(256));
    fake_now = 1'000'000'000;
  }
  // `n` frames of `len` bytes.
  std::vector<Packet*> frames(size_t n, uint16_t len) {
    std::vector<Packet*> v(n);
    for (auto& p : v) {
      p = pool_->alloc();
      p->len = len;
    }
    return v;
  }
  uint32_t drain(MemPort& m) {
    Packet* buf[64];
    uint32_t total = 0;
    while (uint32_t n = m.collect(buf)) {
      pool_->free_bulk({buf, n});
      total += n;
    }
    return total;
  }
  std::unique_ptr<BufferPool> pool_;
};

TEST_F(ShapedPortTest, SendsWhatTheRateAllowsAndKeepsTheRest) {
  MemPort wire("wire");
  ShapedPort shaped(wire, 8'000'000);  // 1 byte per µs; bucket: 2 frames of 1518 (3036 B)
  shaped.set_clock(&fake_clock);
  auto f = frames(10, 1000);
  EXPECT_EQ(shaped.tx_burst(f), 3u);  // the bucket starts full: 3036 B = 3 frames
  EXPECT_EQ(drain(wire), 3u);
  EXPECT_EQ(shaped.tx_burst({f.data() + 3, 7}), 0u);  // no time passed
  fake_now += 999'000;                                // 999 µs: 999 + 36 bytes < 1000+1000
  EXPECT_EQ(shaped.tx_burst({f.data() + 3, 7}), 1u);
  fake_now += 10'000'000'000;  // 10 s idle: still only a bucket's worth
  EXPECT_EQ(shaped.tx_burst({f.data() + 4, 6}), 3u);
  EXPECT_EQ(drain(wire), 4u);
  EXPECT_EQ(shaped.stats()["shaped_deferred_bursts"], 4);
  EXPECT_EQ(shaped.stats()["shaped_rate_bps"], 8'000'000);
  EXPECT_EQ(shaped.stats()["tx"], 7);  // the wrapped port's own stats are kept
  pool_->free_bulk({f.data() + 7, 3});
}

TEST_F(ShapedPortTest, OverOneSecondItSendsItsRate) {
  MemPort wire("wire");
  const uint64_t rate = 100'000'000;  // 100 Mbit/s = 12.5 MB/s
  ShapedPort shaped(wire, rate);
  shaped.set_clock(&fake_clock);
  auto f = frames(64, 1250);
  uint64_t bytes = 0;
  for (int step = 0; step < 10'000; ++step) {  // 1 s in 100 µs steps, always backlogged
    fake_now += 100'000;
    const uint32_t n = shaped.tx_burst(f);
    bytes += uint64_t(n) * 1250;
    drain(wire);
    for (uint32_t i = 0; i < n; ++i) {
      f[i] = pool_->alloc();
      f[i]->len = 1250;
    }
  }
  EXPECT_NEAR(double(bytes) * 8 / double(rate), 1.0, 0.01);
  pool_->free_bulk(f);
}

TEST_F(ShapedPortTest, FramesTheWrappedPortRefusesGiveTheirTokensBack) {
  MemPort wire("wire");
  wire.set_tx_limit(1);
  ShapedPort shaped(wire, 8'000'000, 4000);
  shaped.set_clock(&fake_clock);
  auto f = frames(4, 1000);
  EXPECT_EQ(shaped.tx_burst(f), 1u);  // the bucket allowed 4, the wire took 1
  EXPECT_EQ(shaped.tx_burst({f.data() + 1, 3}), 1u);
  EXPECT_EQ(shaped.tx_burst({f.data() + 2, 2}), 1u);
  EXPECT_EQ(shaped.tx_burst({f.data() + 3, 1}), 1u);  // all 4 fit in the 4000-byte bucket
  EXPECT_EQ(drain(wire), 4u);
}

}  // namespace
}  // namespace gaon
