// SpscRing: a bounded single-producer/single-consumer ring with burst semantics
// (enqueue_burst/dequeue_burst move as many as fit and return the count). Indices are
// cached on each side so a burst costs two atomic operations, not two per element.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>

namespace gaon {

template <class T>
class SpscRing {
 public:
  // `capacity` is rounded up to a power of two.
  explicit SpscRing(uint32_t capacity) {
    uint32_t c = 1;
    while (c < capacity) c <<= 1;
    mask_ = c - 1;
    slots_ = std::make_unique<T[]>(c);
  }
  uint32_t capacity() const { return mask_ + 1; }

  uint32_t enqueue_burst(std::span<const T> items) {
    const uint32_t head = head_.load(std::memory_order_relaxed);
    uint32_t free_n = capacity() - (head - tail_cache_);
    if (free_n < items.size()) {
      tail_cache_ = tail_.load(std::memory_order_acquire);
      free_n = capacity() - (head - tail_cache_);
    }
    const uint32_t n = std::min<uint32_t>(free_n, static_cast<uint32_t>(items.size()));
    for (uint32_t i = 0; i < n; ++i) slots_[(head + i) & mask_] = items[i];
    head_.store(head + n, std::memory_order_release);
    return n;
  }
  uint32_t dequeue_burst(std::span<T> out) {
    const uint32_t tail = tail_.load(std::memory_order_relaxed);
    uint32_t avail = head_cache_ - tail;
    if (avail < out.size()) {
      head_cache_ = head_.load(std::memory_order_acquire);
      avail = head_cache_ - tail;
    }
    const uint32_t n = std::min<uint32_t>(avail, static_cast<uint32_t>(out.size()));
    for (uint32_t i = 0; i < n; ++i) out[i] = slots_[(tail + i) & mask_];
    tail_.store(tail + n, std::memory_order_release);
    return n;
  }
  uint32_t size() const {
    return head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_acquire);
  }

 private:
  alignas(64) std::atomic<uint32_t> head_{0};  // written by the producer
  uint32_t tail_cache_ = 0;                    // producer's view of tail
  alignas(64) std::atomic<uint32_t> tail_{0};  // written by the consumer
  uint32_t head_cache_ = 0;                    // consumer's view of head
  alignas(64) uint32_t mask_ = 0;
  std::unique_ptr<T[]> slots_;
};

}  // namespace gaon
