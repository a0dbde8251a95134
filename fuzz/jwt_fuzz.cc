// Fuzz target: auth's JWT verifier (base64url, the JSON scanner, HS256).
// Two modes, by the first byte:
//   even: the rest is a token, tried against a fixed key. No crash, no read outside it, a
//         known result, and "ok" only when the signature part is the HMAC of the rest.
//   odd:  the rest is "HEADER\0CLAIMS" (JSON text, or anything), made into a token signed
//         with the key, so the JSON scanner sees every shape of claims: it must never be
//         reported as a bad signature.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "auth/jwt.h"
#include "tokens.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gaon::ikernels::auth;
  static const uint8_t key_bytes[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                        12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                        23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
  static const HmacSha256 key{std::span<const uint8_t>(key_bytes, 32)};
  const HmacSha256* keys[] = {&key, nullptr};
  if (size == 0) return 0;
  if (data[0] & 1) {
    const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
    const size_t nul = rest.find('\0');
    const std::string token = gaon::test::make_jwt(
        std::string(rest.substr(0, nul)),
        nul == std::string_view::npos ? std::string() : std::string(rest.substr(nul + 1)),
        std::vector<uint8_t>(key_bytes, key_bytes + 32));
    const JwtResult r = verify_jwt(token, keys, {.now_s = 1'700'000'000});
    if (r >= JwtResult::count_) std::abort();
    if (r == JwtResult::bad_signature && token.size() <= kMaxJwt) std::abort();
    return 0;
  }
  ++data, --size;
  const std::string_view token(reinterpret_cast<const char*>(data), size);
  size_t used = 99;
  const JwtResult r = verify_jwt(token, keys, {.now_s = 1'700'000'000, .leeway_s = 5}, &used);
  if (r >= JwtResult::count_) std::abort();
  if (r == JwtResult::ok) {
    const size_t dot = token.rfind('.');
    uint8_t sig[40];
    if (used != 0 || dot == std::string_view::npos ||
        base64url_decode(token.substr(dot + 1), sig) != 32 || !key.verify({data, dot}, sig))
      std::abort();
  }
  uint8_t out[64];
  const long n = base64url_decode(token.substr(0, 80), out);
  if (n > long(sizeof(out)) || n < -1) std::abort();
  return 0;
}
