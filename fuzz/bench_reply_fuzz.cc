// Fuzz target: gaon-bench's reply parsers (a datagram, ASCII and binary; a TCP stream,
// ASCII). No crash, a value view stays inside the input, and a stream reply's length
// never exceeds what was there.
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
  std::string_view rest = d;
  gaon::bench::Reply r;
  while (size_t n = gaon::bench::ascii_reply(rest, r)) {
    if (n > rest.size()) std::abort();
    if (!r.value.empty() && (r.value.data() < rest.data() ||
                             r.value.data() + r.value.size() > rest.data() + rest.size()))
      std::abort();
    rest.remove_prefix(n);
  }
  return 0;
}
