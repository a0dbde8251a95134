// BufferPool: a preallocated array of fixed-size frames and their Packet descriptors.
//
// The frame memory is one contiguous, page-aligned region (so it can later serve as an
// AF_XDP UMEM); Packet descriptors live beside it. alloc/free are O(1) pushes and pops on
// a LIFO free stack. The pool belongs to one thread (the datapath's): no locks, no
// atomics, nothing allocated after construction.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "gaon/packet.h"
#include "gaon/result.h"

namespace gaon {

class BufferPool {
 public:
  // Creates a pool of `frames` frames. Fails cleanly when the memory cannot be had.
  static Result<std::unique_ptr<BufferPool>> create(uint32_t frames);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // One packet, or nullptr when the pool is empty.
  Packet* alloc() {
    if (top_ == 0) return nullptr;
    Packet* p = &pkts_[free_[--top_]];
    p->reset();
    return p;
  }
  // All of `out` or nothing (bulk semantics). Returns false when fewer are free.
  bool alloc_bulk(std::span<Packet*> out) {
    if (out.size() > top_) return false;
    for (auto& p : out) p = alloc();
    return true;
  }
  void free(Packet* p) { free_[top_++] = p->index; }
  void free_bulk(std::span<Packet* const> pkts) {
    for (Packet* p : pkts) free(p);
  }

  uint32_t capacity() const { return n_; }
  uint32_t available() const { return top_; }
  uint8_t* region() const { return mem_; }
  size_t region_bytes() const { return size_t{n_} * kFrameSize; }
  Packet& at(uint32_t index) { return pkts_[index]; }
  bool owns(const Packet* p) const { return p >= pkts_.data() && p < pkts_.data() + n_; }

 private:
  BufferPool() = default;
  uint8_t* mem_ = nullptr;
  uint32_t n_ = 0;
  uint32_t top_ = 0;
  std::vector<Packet> pkts_;
  std::vector<uint32_t> free_;
};

}  // namespace gaon
