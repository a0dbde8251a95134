#include "coap.h"

namespace gaon::ikernels::auth {

std::string_view to_string(CoapParse r) {
  switch (r) {
    case CoapParse::ok:
      return "ok";
    case CoapParse::too_short:
      return "too_short";
    case CoapParse::bad_version:
      return "bad_version";
    case CoapParse::bad_token_length:
      return "bad_token_length";
    case CoapParse::bad_option:
      return "bad_option";
    case CoapParse::truncated_option:
      return "truncated_option";
    case CoapParse::option_overflow:
      return "option_overflow";
    case CoapParse::empty_payload:
      return "empty_payload";
    case CoapParse::count_:
      break;
  }
  return "?";
}

namespace {

// An option delta or length nibble with its extension bytes (RFC 7252 §3.1).
bool extended(uint32_t nibble, std::span<const uint8_t> msg, size_t& at, uint32_t& value) {
  if (nibble < 13) {
    value = nibble;
    return true;
  }
  if (nibble == 13) {
    if (at + 1 > msg.size()) return false;
    value = 13u + msg[at];
    at += 1;
    return true;
  }
  if (at + 2 > msg.size()) return false;  // 14
  value = 269u + (uint32_t(msg[at]) << 8 | msg[at + 1]);
  at += 2;
  return true;
}

}  // namespace

CoapParse parse_coap(std::span<const uint8_t> msg, uint16_t want, CoapMessage& out) {
  out = CoapMessage{};
  if (msg.size() < 4) return CoapParse::too_short;
  if ((msg[0] >> 6) != 1) return CoapParse::bad_version;
  out.type = (msg[0] >> 4) & 3;
  const size_t tkl = msg[0] & 0xf;
  if (tkl > 8) return CoapParse::bad_token_length;
  out.code = msg[1];
  out.message_id = uint16_t(msg[2] << 8 | msg[3]);
  if (4 + tkl > msg.size()) return CoapParse::too_short;
  out.token = msg.subspan(4, tkl);
  size_t at = 4 + tkl;
  uint32_t number = 0;
  while (at < msg.size()) {
    const uint8_t b = msg[at++];
    if (b == 0xff) {
      if (at == msg.size()) return CoapParse::empty_payload;
      out.payload = msg.subspan(at);
      return CoapParse::ok;
    }
    const uint32_t dn = b >> 4, ln = b & 0xf;
    if (dn == 15 || ln == 15) return CoapParse::bad_option;
    uint32_t delta = 0, len = 0;
    if (!extended(dn, msg, at, delta) || !extended(ln, msg, at, len))
      return CoapParse::truncated_option;
    number += delta;
    if (number > 65535) return CoapParse::option_overflow;
    if (len > msg.size() - at) return CoapParse::truncated_option;
    if (number == want) {
      if (out.wanted_count++ == 0) out.wanted = msg.subspan(at, len);
    }
    ++out.options;
    at += len;
  }
  return CoapParse::ok;
}

}  // namespace gaon::ikernels::auth
