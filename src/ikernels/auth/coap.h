// CoAP (RFC 7252) message parsing, enough to authenticate requests: the fixed header, the
// token, the options (delta/length nibbles with their 13/14 extensions) and the payload.
// No allocation; every malformed form has its own reason.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace gaon::ikernels::auth {

enum class CoapParse : uint8_t {
  ok,
  too_short,         // under the 4-byte header, or the token runs past the end
  bad_version,       // version is not 1
  bad_token_length,  // TKL 9..15 (reserved)
  bad_option,        // a delta or length nibble of 15 outside the payload marker
  truncated_option,  // an option's extension bytes or value run past the end
  option_overflow,   // an option number above 65535
  empty_payload,     // a payload marker with nothing after it
  count_
};
std::string_view to_string(CoapParse r);

struct CoapMessage {
  uint8_t type = 0;  // 0 CON, 1 NON, 2 ACK, 3 RST
  uint8_t code = 0;  // class << 5 | detail: 0.01 GET = 1, 0.00 empty
  uint16_t message_id = 0;
  std::span<const uint8_t> token;
  std::span<const uint8_t> payload;
  // The option looked for (`want` of parse_coap): how often it occurs, and its first value.
  uint32_t wanted_count = 0;
  std::span<const uint8_t> wanted;
  uint32_t options = 0;

  bool is_request() const { return (code >> 5) == 0 && code != 0; }
  bool is_empty() const { return code == 0; }
};

CoapParse parse_coap(std::span<const uint8_t> msg, uint16_t want, CoapMessage& out);

}  // namespace gaon::ikernels::auth
