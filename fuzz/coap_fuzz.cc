// Fuzz target: auth's CoAP parser (RFC 7252 framing).
// Invariants: no crash, no read outside the message; the token, the wanted option's value
// and the payload are views inside it; a token is at most 8 bytes; a payload is never empty.
#include <cstdint>
#include <cstdlib>

#include "auth/coap.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gaon::ikernels::auth;
  auto inside = [&](std::span<const uint8_t> v) {
    return v.empty() || (v.data() >= data && v.data() + v.size() <= data + size);
  };
  // The first two bytes pick the option looked for, the rest is the message.
  const uint16_t want = size >= 2 ? uint16_t(data[0] << 8 | data[1]) : 65000;
  const std::span<const uint8_t> msg(data + (size >= 2 ? 2 : 0), size - (size >= 2 ? 2 : 0));
  CoapMessage m;
  const CoapParse r = parse_coap(msg, want, m);
  if (r >= CoapParse::count_) std::abort();
  if (r == CoapParse::ok) {
    if (!inside(m.token) || !inside(m.wanted) || !inside(m.payload)) std::abort();
    if (m.token.size() > 8) std::abort();
    if (m.payload.data() != nullptr && m.payload.empty()) std::abort();
    if (m.wanted_count > m.options) std::abort();
  }
  return 0;
}
