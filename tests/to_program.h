// For tests that run fast paths under BPF_PROG_TEST_RUN: a bump's part without the
// interfaces (the engine's flow changes go straight to the XdpProgram), and frames as hex.
#pragma once

#include <string>

#include "frames.h"
#include "gaon/engine.h"
#include "gaon/xdp_program.h"

namespace gaon::test {

struct ToProgram : FlowObserver {
  XdpProgram* x = nullptr;
  Result<void> flow_added(const FlowKey& k, uint32_t i, const FastPathSpec& fp) override {
    return x->add_flow(k, i, fp);
  }
  void flow_removed(const FlowKey& k) override { x->remove_flow(k); }
  FastPathState* fast_path(uint32_t i) override { return x->fast_path(i); }
  nlohmann::json fast_path_stats(uint32_t i) override { return x->fast_path_stats(i); }
  void instance_removed(uint32_t i) override { x->instance_removed(i); }
};

inline std::string hex(const Bytes& b) {
  std::string s;
  for (uint8_t c : b) s += "0123456789abcdef"[c >> 4], s += "0123456789abcdef"[c & 15];
  return s;
}

}  // namespace gaon::test
