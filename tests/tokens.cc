#include "tokens.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace gaon::test {

std::vector<uint8_t> unhex(std::string_view h) {
  std::vector<uint8_t> b;
  for (size_t i = 0; i + 1 < h.size(); i += 2)
    b.push_back(uint8_t(std::stoi(std::string(h.substr(i, 2)), nullptr, 16)));
  return b;
}

std::string hex(std::span<const uint8_t> b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t c : b) s += {d[c >> 4], d[c & 15]};
  return s;
}

std::span<const uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::vector<uint8_t> openssl_hmac(std::span<const uint8_t> key, std::span<const uint8_t> msg) {
  std::vector<uint8_t> out(32);
  unsigned len = 32;
  HMAC(EVP_sha256(), key.data(), int(key.size()), msg.data(), msg.size(), out.data(), &len);
  return out;
}

std::string b64url(std::span<const uint8_t> in) {
  static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string s;
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = uint32_t(in[i]) << 16 | uint32_t(in[i + 1]) << 8 | in[i + 2];
    s += {a[v >> 18], a[(v >> 12) & 63], a[(v >> 6) & 63], a[v & 63]};
  }
  if (in.size() - i == 1) {
    const uint32_t v = uint32_t(in[i]) << 16;
    s += {a[v >> 18], a[(v >> 12) & 63]};
  } else if (in.size() - i == 2) {
    const uint32_t v = uint32_t(in[i]) << 16 | uint32_t(in[i + 1]) << 8;
    s += {a[v >> 18], a[(v >> 12) & 63], a[(v >> 6) & 63]};
  }
  return s;
}

std::string make_jwt(const std::string& header, const std::string& claims,
                     const std::vector<uint8_t>& key) {
  const std::string signing = b64url(header) + "." + b64url(claims);
  return signing + "." + b64url(openssl_hmac(key, bytes(signing)));
}

std::string with_trailer(const std::string& payload, const std::vector<uint8_t>& key) {
  const auto mac = openssl_hmac(key, bytes(payload));
  return payload + std::string(mac.begin(), mac.end());
}

std::string coap_msg(uint8_t type, uint8_t code, uint16_t mid, const std::string& token,
                     std::vector<std::pair<uint32_t, std::string>> options,
                     const std::string& payload) {
  std::string m;
  m += char(0x40 | type << 4 | token.size());
  m += char(code);
  m += char(mid >> 8);
  m += char(mid & 0xff);
  m += token;
  uint32_t last = 0;
  auto nibble = [](uint32_t v, std::string& ext) -> uint32_t {
    if (v < 13) return v;
    if (v < 269) {
      ext += char(v - 13);
      return 13;
    }
    ext += char((v - 269) >> 8);
    ext += char((v - 269) & 0xff);
    return 14;
  };
  for (const auto& [num, val] : options) {
    std::string ext_d, ext_l;
    const uint32_t d = nibble(num - last, ext_d), l = nibble(uint32_t(val.size()), ext_l);
    m += char(d << 4 | l);
    m += ext_d + ext_l + val;
    last = num;
  }
  if (!payload.empty()) m += char(0xff) + payload;
  return m;
}

}  // namespace gaon::test
