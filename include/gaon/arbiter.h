// The egress arbiter: shares the wire among traffic classes — class 0 is the host's
// traffic, class k is instance slot k.
//
// Deficit round robin (Shreedhar & Varghese) over the classes that have packets queued:
// each turn a class gets quantum × weight bytes of credit and sends while its head packet
// fits. A class may also have a token-bucket rate limit; while its bucket is short of its
// head packet it is skipped without gaining credit. Every class has a bounded queue; a
// packet that finds it full is refused and the caller frees and counts it. Owned by the
// datapath thread; nothing is allocated after construction.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "gaon/packet.h"

namespace gaon {

struct ArbiterClassStats {
  uint64_t enqueued = 0;
  uint64_t sent = 0;
  uint64_t sent_bytes = 0;
  uint64_t dropped_full = 0;
  uint32_t queued = 0;
};

class Arbiter {
 public:
  // `classes` traffic classes, each with a queue of `queue_depth` packets (rounded up to a
  // power of two); `quantum` bytes of credit per unit of weight per round.
  Arbiter(uint32_t classes, uint32_t queue_depth, uint32_t quantum = 1518);

  // weight >= 1; rate_bps 0 = unlimited; burst_bytes 0 = max(64 KiB, 1 ms at rate).
  void configure(uint32_t cls, uint32_t weight, uint64_t rate_bps = 0, uint32_t burst_bytes = 0);

  // False when the class's queue is full (the caller keeps the packet).
  bool enqueue(uint32_t cls, Packet* p);

  // Picks up to out.size() packets in DRR order, honouring rate limits at time `now_ns`.
  uint32_t dequeue(std::span<Packet*> out, uint64_t now_ns);

  // Removes every packet queued for `cls` into `out` (it must be big enough: queue
  // depth); returns how many. Used when an instance goes away.
  uint32_t flush(uint32_t cls, std::span<Packet*> out);

  bool empty() const { return queued_total_ == 0; }
  uint32_t queued() const { return queued_total_; }
  uint32_t classes() const { return static_cast<uint32_t>(cls_.size()); }
  uint32_t queue_depth() const { return mask_ + 1; }
  const ArbiterClassStats& stats(uint32_t cls) const { return cls_[cls].stats; }
  void count_drop(uint32_t cls) { ++cls_[cls].stats.dropped_full; }
  void reset_stats(uint32_t cls) { cls_[cls].stats = {}; }

 private:
  struct Class {
    uint32_t head = 0, tail = 0;  // ring indices into q
    Packet** q = nullptr;
    uint32_t weight = 1;
    int64_t deficit = 0;
    bool active = false;  // in the active list
    bool fresh = true;    // gets its quantum when it next comes to the front
    uint64_t rate_bps = 0;
    double tokens = 0;  // bytes
    double burst = 0;   // bytes
    uint64_t last_ns = 0;
    ArbiterClassStats stats;
  };
  void refill(Class& c, uint64_t now_ns);

  uint32_t quantum_;
  uint32_t mask_;
  std::vector<Class> cls_;
  std::unique_ptr<Packet*[]> storage_;
  // active list: a ring of class ids
  std::unique_ptr<uint32_t[]> active_;
  uint32_t active_head_ = 0, active_n_ = 0;
  uint32_t queued_total_ = 0;
};

}  // namespace gaon
