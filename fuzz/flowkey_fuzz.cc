// Fuzz target: flow specifications ("udp:IP:PORT[,IP:PORT]"). Invariants: no crash; a
// parsed key prints to a string that parses back to the same key.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "gaon/flow.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  auto k = gaon::FlowKey::parse(in);
  if (!k) {
    if (k.error().empty()) std::abort();
    return 0;
  }
  auto again = gaon::FlowKey::parse(k->to_string());
  if (!again || !(*again == *k)) std::abort();
  return 0;
}
