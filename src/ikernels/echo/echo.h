// echo — answers each UDP datagram with itself, addresses swapped.
//
// The smallest real ikernel, and the model for writing one: every UDP datagram of an
// attached flow goes back out on the wire to its sender with MAC addresses, IP addresses
// and UDP ports swapped; nothing reaches the host. TCP segments of an attached flow pass
// to the host unchanged.
//
// Parameters: none.
// State operations:
//   stats   {"echoed": N, "passed": N}
// Counters: the instance's standard ones (rx, to_wire, to_host) tell the whole story.
//
// Checksums: swapping addresses keeps the IPv4 header and UDP checksums valid, so the
// common case touches no checksum. A request whose UDP checksum was left to offload
// (sent by a local socket through veth or loopback) gets a full checksum computed.
#pragma once

#include <cstdint>
#include <vector>

#include "gaon/ikernel.h"
#include "gaon/reply.h"

namespace gaon::ikernels {

class Echo : public PerPacketIKernel<Echo> {
 public:
  static std::vector<StateOpSpec> state_ops() {
    return {{"stats", "", "datagrams echoed and packets passed to the host"}};
  }

  // Its state lives in the region the framework gives the instance.
  struct State {
    uint64_t echoed;
    uint64_t passed;
  };
  size_t state_bytes() const override { return sizeof(State); }
  Result<void> init(StateRegion& region) override {
    s_ = region.carve<State>();
    return ok();
  }

  Verdict on_packet(Context&, Packet& p) {
    if (!p.is_udp()) {
      ++s_->passed;
      return Verdict::to_host;
    }
    reply::swap_addresses(p);
    if (p.hdr.l4_csum_partial) reply::finish_udp(p);
    ++s_->echoed;
    return Verdict::to_wire;
  }

  Result<nlohmann::json> call(std::string_view op, std::span<const std::string> args) override;

 private:
  State* s_ = nullptr;
};

}  // namespace gaon::ikernels
