// Fuzz target: gaond's state file decoder (src/control/state_file.h). The input is the
// file's text. Invariants: no crash or sanitizer report, whatever the bytes; what decodes
// encodes and decodes again to the same instances (nothing is half-read or reinterpreted).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "../src/control/state_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const gaon::Registry& reg = gaon::Registry::global();
  auto first =
      gaon::control::decode_state(std::string_view(reinterpret_cast<const char*>(data), size), reg);
  if (!first) {
    if (first.error().empty() || first.error().find('\n') != std::string::npos) std::abort();
    return 0;
  }
  const std::string again = gaon::control::encode_state(*first);
  auto second = gaon::control::decode_state(again, reg);
  if (!second || *second != *first) std::abort();
  return 0;
}
