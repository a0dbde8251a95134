// Test fixtures for auth: HMAC-SHA256 with OpenSSL's one-shot HMAC (the reference the
// datapath's own must agree with), base64url written independently of the decoder under
// test, compact JWTs signed with them, and CoAP messages built from option numbers.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace gaon::test {

std::vector<uint8_t> unhex(std::string_view h);
std::string hex(std::span<const uint8_t> b);
std::span<const uint8_t> bytes(std::string_view s);
std::vector<uint8_t> openssl_hmac(std::span<const uint8_t> key, std::span<const uint8_t> msg);
std::string b64url(std::span<const uint8_t> in);
inline std::string b64url(std::string_view s) { return b64url(bytes(s)); }
// header and claims as JSON text
std::string make_jwt(const std::string& header, const std::string& claims,
                     const std::vector<uint8_t>& key);
// payload followed by its 32-byte HMAC-SHA256 trailer
std::string with_trailer(const std::string& payload, const std::vector<uint8_t>& key);
// RFC 7252 §3: header, token, options (number, value) delta-encoded, payload.
std::string coap_msg(uint8_t type, uint8_t code, uint16_t mid, const std::string& token,
                     std::vector<std::pair<uint32_t, std::string>> options,
                     const std::string& payload = "");

}  // namespace gaon::test
