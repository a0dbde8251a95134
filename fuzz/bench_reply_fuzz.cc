// Fuzz target: gaon-bench's reply parser (ASCII and binary). No crash, and a value view
// stays inside the datagram.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "loadgen.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view d(reinterpret_cast<const char*>(data), size);
  for (auto p : {gaon::bench::Proto::ascii, gaon::bench::Proto::binary}) {
    const auto r = gaon::bench::parse_reply(d, p);
    if (!r.value.empty() &&
        (r.value.data() < d.data() || r.value.data() + r.value.size() > d.data() + d.size()))
      std::abort();
  }
  return 0;
}
