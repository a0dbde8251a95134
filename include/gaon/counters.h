// Counter: a 64-bit counter written by the datapath thread only and read from any thread.
// The increment is a relaxed load + store (a plain add on x86, no lock prefix); readers
// see a recent value, never a torn one.
#pragma once

#include <atomic>
#include <cstdint>

namespace gaon {

class Counter {
 public:
  void add(uint64_t n = 1) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }
  void reset() { v_.store(0, std::memory_order_relaxed); }
  Counter& operator++() {
    add(1);
    return *this;
  }

 private:
  std::atomic<uint64_t> v_{0};
};

}  // namespace gaon
