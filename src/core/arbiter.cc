#include "gaon/arbiter.h"

#include <algorithm>

namespace gaon {

Arbiter::Arbiter(uint32_t classes, uint32_t queue_depth, uint32_t quantum)
    : quantum_(std::max<uint32_t>(quantum, 64)), cls_(classes) {
  uint32_t d = 1;
  while (d < queue_depth) d <<= 1;
  mask_ = d - 1;
  storage_ = std::make_unique<Packet*[]>(size_t{classes} * d);
  active_ = std::make_unique<uint32_t[]>(classes);
  for (uint32_t i = 0; i < classes; ++i) cls_[i].q = storage_.get() + size_t{i} * d;
}

void Arbiter::configure(uint32_t cls, uint32_t weight, uint64_t rate_bps, uint32_t burst_bytes) {
  Class& c = cls_[cls];
  c.weight = std::max<uint32_t>(weight, 1);
  c.rate_bps = rate_bps;
  if (rate_bps == 0) {
    c.burst = c.tokens = 0;
    return;
  }
  const double per_ms = static_cast<double>(rate_bps) / 8.0 / 1000.0;
  c.burst = burst_bytes ? burst_bytes : std::max(65536.0, per_ms);
  c.tokens = c.burst;
  c.last_ns = 0;
}

bool Arbiter::enqueue(uint32_t cls, Packet* p) {
  Class& c = cls_[cls];
  if (c.tail - c.head > mask_) {
    ++c.stats.dropped_full;
    return false;
  }
  c.q[c.tail++ & mask_] = p;
  ++c.stats.enqueued;
  ++queued_total_;
  if (!c.active) {
    c.active = true;
    c.fresh = true;
    active_[(active_head_ + active_n_) % cls_.size()] = cls;
    ++active_n_;
  }
  return true;
}

void Arbiter::refill(Class& c, uint64_t now_ns) {
  if (c.last_ns == 0 || now_ns < c.last_ns) {
    c.last_ns = now_ns;
    return;
  }
  const double add =
      static_cast<double>(now_ns - c.last_ns) * static_cast<double>(c.rate_bps) / 8e9;
  c.tokens = std::min(c.burst, c.tokens + add);
  c.last_ns = now_ns;
}

uint32_t Arbiter::dequeue(std::span<Packet*> out, uint64_t now_ns) {
  uint32_t n = 0;
  const uint32_t nclasses = static_cast<uint32_t>(cls_.size());
  uint32_t throttled_turns = 0;  // consecutive turns of rate-limited classes that sent nothing
  while (n < out.size() && active_n_ > 0 && throttled_turns < active_n_) {
    const uint32_t id = active_[active_head_];
    Class& c = cls_[id];
    if (c.rate_bps) refill(c, now_ns);
    if (c.fresh) {
      c.deficit += int64_t{quantum_} * c.weight;
      c.fresh = false;
    }
    bool throttled = false;
    uint32_t sent = 0;
    while (c.head != c.tail && n < out.size()) {
      Packet* p = c.q[c.head & mask_];
      if (p->len > c.deficit) break;
      if (c.rate_bps && c.tokens < p->len) {
        throttled = true;
        break;
      }
      ++c.head;
      c.deficit -= p->len;
      if (c.rate_bps) c.tokens -= p->len;
      ++c.stats.sent;
      c.stats.sent_bytes += p->len;
      out[n++] = p;
      ++sent;
    }
    queued_total_ -= sent;
    throttled_turns = (throttled && sent == 0) ? throttled_turns + 1 : 0;
    if (c.head == c.tail) {  // empty: leave the active list, forfeit the credit
      c.active = false;
      c.deficit = 0;
      active_head_ = (active_head_ + 1) % nclasses;
      --active_n_;
    } else if (n == out.size() && !throttled && c.q[c.head & mask_]->len <= c.deficit) {
      break;  // out of room, not of credit: this class continues next call
    } else {  // credit spent (or throttled): to the back of the list
      if (!throttled) c.fresh = true;
      active_head_ = (active_head_ + 1) % nclasses;
      active_[(active_head_ + active_n_ - 1) % nclasses] = id;
    }
  }
  return n;
}

uint32_t Arbiter::flush(uint32_t cls, std::span<Packet*> out) {
  Class& c = cls_[cls];
  uint32_t n = 0;
  while (c.head != c.tail && n < out.size()) out[n++] = c.q[c.head++ & mask_];
  queued_total_ -= n;
  c.deficit = 0;
  if (c.active && c.head == c.tail) {
    // Take it out of the active list, keeping the others in order.
    uint32_t w = 0;
    const uint32_t nclasses = static_cast<uint32_t>(cls_.size());
    for (uint32_t i = 0; i < active_n_; ++i) {
      const uint32_t id = active_[(active_head_ + i) % nclasses];
      if (id != cls) active_[(active_head_ + w++) % nclasses] = id;
    }
    active_n_ = w;
    c.active = false;
  }
  return n;
}

}  // namespace gaon
