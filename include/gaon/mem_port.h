// MemPort: an in-process port made of two single-producer/single-consumer rings, for tests
// and microbenchmarks. The engine side uses rx_burst/tx_burst; the other side (a test, a
// benchmark, a pcap reader) uses inject/collect. Packets are passed by pointer, so both
// sides must use the same pool; with one thread driving both sides (the usual case) that
// is trivially safe.
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "gaon/port.h"
#include "gaon/ring.h"

namespace gaon {

class MemPort final : public Port {
 public:
  explicit MemPort(std::string name, uint32_t ring_size = 1024)
      : name_(std::move(name)), in_(ring_size), out_(ring_size) {}

  // Engine side.
  uint32_t rx_burst(std::span<Packet*> out) override {
    const uint32_t n = in_.dequeue_burst(out);
    rx_ += n;
    return n;
  }
  uint32_t tx_burst(std::span<Packet*> pkts) override {
    if (pkts.size() > tx_limit_) pkts = pkts.first(tx_limit_);
    uint32_t n = out_.enqueue_burst(pkts);
    tx_ += n;
    return n;
  }
  std::string name() const override { return "mem:" + name_; }
  nlohmann::json stats() const override {
    return {{"rx", rx_},
            {"tx", tx_},
            {"rx_dropped", nlohmann::json::object()},
            {"tx_dropped", nlohmann::json::object()}};
  }

  // Outside side.
  uint32_t inject(std::span<Packet* const> pkts) { return in_.enqueue_burst(pkts); }
  uint32_t collect(std::span<Packet*> out) { return out_.dequeue_burst(out); }

  // Accept at most `n` packets per tx_burst call: a slow wire, to exercise the arbiter.
  void set_tx_limit(uint32_t n) { tx_limit_ = n; }

 private:
  std::string name_;
  SpscRing<Packet*> in_;
  SpscRing<Packet*> out_;
  uint32_t tx_limit_ = std::numeric_limits<uint32_t>::max();
  uint64_t rx_ = 0, tx_ = 0;
};

}  // namespace gaon
