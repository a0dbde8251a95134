// Fuzz target: flow specifications ("udp:IP:PORT[,IP:PORT]") and port specifications
// ("afxdp:IFACE[@QUEUE]", "afpacket:IFACE"). Invariants: no crash; a parsed key prints to a string
// that parses back to the same key; a refused spec says why, on one line.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "gaon/afpacket.h"
#include "gaon/afxdp.h"
#include "gaon/flow.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  if (auto s = gaon::afxdp::parse_spec(in); !s) {
    if (s.error().empty() || s.error().find('\n') != std::string::npos) std::abort();
  } else if (s->ifname.empty() || s->ifname.size() >= 16) {
    std::abort();
  }
  if (auto s = gaon::afpacket::parse_spec(in); !s) {
    if (s.error().empty() || s.error().find('\n') != std::string::npos) std::abort();
  } else if (s->empty() || s->size() >= 16) {
    std::abort();
  }
  auto k = gaon::FlowKey::parse(in);
  if (!k) {
    if (k.error().empty() || k.error().find('\n') != std::string::npos) std::abort();
    return 0;
  }
  auto again = gaon::FlowKey::parse(k->to_string());
  if (!again || !(*again == *k)) std::abort();
  return 0;
}
