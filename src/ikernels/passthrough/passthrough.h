// passthrough — passes every packet on unchanged; the baseline.
//
// Ingress packets go to the host and egress packets to the wire exactly as they came, so
// the only cost measured is the framework's own: parse, steer, one call per burst.
//
// Parameters: none.
// State operations:
//   stats   {"ingress": N, "egress": N}
// Counters: the instance's standard ones.
#pragma once

#include <cstdint>
#include <vector>

#include "gaon/ikernel.h"

namespace gaon::ikernels {

class Passthrough : public IKernel {
 public:
  static std::vector<StateOpSpec> state_ops() {
    return {{"stats", "", "packets seen in each direction"}};
  }
  // Verdicts arrive preset (to_host ingress, to_wire egress): nothing to do per packet.
  void process(Context&, std::span<Packet*> burst) override { ingress_ += burst.size(); }
  void process_egress(Context&, std::span<Packet*> burst) override { egress_ += burst.size(); }
  Result<nlohmann::json> call(std::string_view op, std::span<const std::string> args) override;

 private:
  uint64_t ingress_ = 0;
  uint64_t egress_ = 0;
};

}  // namespace gaon::ikernels
