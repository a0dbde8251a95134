// Buffer pool and packet buffer operations.
#include "gaon/pool.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace gaon {
namespace {

TEST(BufferPool, FramesAreFixedSizeContiguousAndDistinct) {
  auto pool = BufferPool::create(64);
  ASSERT_TRUE(pool) << pool.error();
  BufferPool& b = **pool;
  EXPECT_EQ(b.capacity(), 64u);
  EXPECT_EQ(b.region_bytes(), 64u * kFrameSize);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.region()) % 4096, 0u);
  std::set<uint8_t*> frames;
  std::vector<Packet*> all;
  while (Packet* p = b.alloc()) {
    EXPECT_EQ((p->frame - b.region()) % kFrameSize, 0);
    EXPECT_EQ(p->headroom(), kHeadroom);
    EXPECT_GE(p->headroom(), 128u);
    EXPECT_EQ(p->len, 0);
    frames.insert(p->frame);
    all.push_back(p);
  }
  EXPECT_EQ(frames.size(), 64u);
  EXPECT_EQ(b.available(), 0u);
  b.free_bulk(all);
  EXPECT_EQ(b.available(), 64u);
}

TEST(BufferPool, BulkAllocIsAllOrNothing) {
  auto pool = std::move(*BufferPool::create(40));
  std::vector<Packet*> a(32), c(32);
  EXPECT_TRUE(pool->alloc_bulk(a));
  EXPECT_FALSE(pool->alloc_bulk(c));
  EXPECT_EQ(pool->available(), 8u);  // the failed bulk took nothing
  pool->free_bulk(a);
  EXPECT_TRUE(pool->alloc_bulk(c));
}

TEST(BufferPool, ReusedPacketsComeBackClean) {
  auto pool = std::move(*BufferPool::create(1));
  Packet* p = pool->alloc();
  p->append(100);
  p->adj(10);
  p->instance = 7;
  p->parsed = true;
  p->verdict = Verdict::drop;
  pool->free(p);
  Packet* q = pool->alloc();
  EXPECT_EQ(q, p);
  EXPECT_EQ(q->len, 0);
  EXPECT_EQ(q->headroom(), kHeadroom);
  EXPECT_EQ(q->instance, kNoInstance);
  EXPECT_FALSE(q->parsed);
  EXPECT_EQ(q->verdict, Verdict::to_host);
}

TEST(BufferPool, ZeroFramesIsAClearError) {
  auto pool = BufferPool::create(0);
  ASSERT_FALSE(pool);
  EXPECT_NE(pool.error().find("at least one frame"), std::string::npos);
}

TEST(Packet, PrependAdjAppendTrimStayInsideTheFrame) {
  auto pool = std::move(*BufferPool::create(1));
  Packet* p = pool->alloc();
  ASSERT_NE(p->append(100), nullptr);
  EXPECT_EQ(p->len, 100);
  EXPECT_EQ(p->tailroom(), kFrameSize - kHeadroom - 100);
  uint8_t* d = p->data();
  EXPECT_EQ(p->prepend(14), d - 14);
  EXPECT_EQ(p->len, 114);
  EXPECT_EQ(p->adj(14), d);
  EXPECT_EQ(p->prepend(kHeadroom + 1), nullptr);  // more than the headroom: refused
  EXPECT_EQ(p->len, 100);
  EXPECT_EQ(p->append(p->tailroom() + 1), nullptr);
  EXPECT_TRUE(p->trim(40));
  EXPECT_EQ(p->len, 60);
  EXPECT_FALSE(p->trim(61));
  EXPECT_EQ(p->adj(61), nullptr);
  EXPECT_NE(p->append(p->tailroom()), nullptr);  // exactly full is fine
  EXPECT_EQ(p->tailroom(), 0u);
  std::vector<uint8_t> big(kMaxData + 1, 1);
  EXPECT_FALSE(p->assign(big));
  big.pop_back();
  EXPECT_TRUE(p->assign(big));
}

}  // namespace
}  // namespace gaon
