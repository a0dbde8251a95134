// Compact JWTs signed with HS256 (RFC 7519 / RFC 7515), verified without allocation:
// base64url into fixed buffers, a small strict JSON scanner for the header and the claims,
// HMAC-SHA256 against each key given, compared in constant time.
//
// Accepted: exactly three base64url parts (no padding); a header that is a JSON object with
// "alg": "HS256" and no "crit"; a signature of 32 bytes; a claims object whose "exp" and
// "nbf", when present, are NumericDates (numbers without exponent). Checked in this order
// (so a forged token is counted as forged, not as expired): form, header, signature,
// claims. Member names with escapes, duplicate "alg"/"exp"/"nbf", and nesting deeper than
// 16 are refused rather than interpreted.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "hmac.h"

namespace gaon::ikernels::auth {

enum class JwtResult : uint8_t {
  ok,
  malformed,      // not three base64url parts, too long, or not JSON objects
  bad_header,     // alg is not HS256 (e.g. "none"), or a "crit" header
  bad_signature,  // no key gives this signature
  bad_claims,     // exp/nbf not a NumericDate, or a duplicate
  expired,        // now >= exp + leeway
  not_yet_valid,  // now < nbf - leeway
  count_
};
std::string_view to_string(JwtResult r);

struct JwtOptions {
  int64_t now_s = 0;  // wall clock, seconds since the epoch
  int64_t leeway_s = 0;
  bool require_exp = false;
};

constexpr size_t kMaxJwt = 2048;  // characters

// Verifies `token` with any of `keys` (the first that matches: `key_used` says which).
JwtResult verify_jwt(std::string_view token, std::span<const HmacSha256* const> keys,
                     const JwtOptions& opt, size_t* key_used = nullptr);

// base64url without padding (RFC 4648 §5) into `out`; the decoded length, or -1 when the
// text is not base64url or does not fit.
long base64url_decode(std::string_view in, std::span<uint8_t> out);

}  // namespace gaon::ikernels::auth
