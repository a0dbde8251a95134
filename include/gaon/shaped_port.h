// ShapedPort: a port whose transmit side runs at a fixed line rate. It wraps another port
// and lets through only as many frames as a token bucket of `rate_bps` (frame bytes, the
// Ethernet header included) allows; the rest stay with the engine, exactly as when a real
// link is busy, so the egress arbiter's weights and queues decide who gets the wire. Used
// by `gaond --wire-rate-bps` to emulate a wire slower than loopback (the fair-share tests
// and demonstrations); receiving is the wrapped port's own.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

#include "gaon/engine.h"
#include "gaon/port.h"

namespace gaon {

class ShapedPort final : public Port {
 public:
  // burst_bytes 0: max(2 full frames, 1 ms at the rate).
  ShapedPort(Port& inner, uint64_t rate_bps, uint32_t burst_bytes = 0)
      : inner_(inner),
        bytes_per_ns_(static_cast<double>(rate_bps) / 8e9),
        burst_(burst_bytes ? burst_bytes
                           : std::max(2.0 * 1518, static_cast<double>(rate_bps) / 8e3)),
        tokens_(burst_) {}

  uint32_t rx_burst(std::span<Packet*> out) override { return inner_.rx_burst(out); }
  bool rx_drained() const override { return inner_.rx_drained(); }

  uint32_t tx_burst(std::span<Packet*> pkts) override {
    refill(clock_());
    uint32_t n = 0;
    while (n < pkts.size() && tokens_ >= pkts[n]->len) tokens_ -= pkts[n++]->len;
    if (n < pkts.size()) ++deferred_;
    const uint32_t sent = inner_.tx_burst(pkts.first(n));
    for (uint32_t i = sent; i < n; ++i) tokens_ += pkts[i]->len;  // not taken after all
    return sent;
  }

  std::string name() const override { return inner_.name(); }
  uint64_t gaps() const override { return inner_.gaps(); }
  nlohmann::json stats() const override {
    nlohmann::json j = inner_.stats();
    j["shaped_rate_bps"] = static_cast<uint64_t>(bytes_per_ns_ * 8e9 + 0.5);
    j["shaped_deferred_bursts"] = deferred_;
    return j;
  }

  // Tests drive time themselves.
  void set_clock(uint64_t (*clock)()) { clock_ = clock; }

 private:
  void refill(uint64_t now) {
    if (now > last_ns_)
      tokens_ = std::min(burst_, tokens_ + static_cast<double>(now - last_ns_) * bytes_per_ns_);
    last_ns_ = now;
  }

  Port& inner_;
  double bytes_per_ns_;
  double burst_;
  double tokens_;
  uint64_t last_ns_ = Engine::now_ns();
  uint64_t deferred_ = 0;
  uint64_t (*clock_)() = &Engine::now_ns;
};

}  // namespace gaon
