#include "jwt.h"

#include <cstring>

namespace gaon::ikernels::auth {

std::string_view to_string(JwtResult r) {
  switch (r) {
    case JwtResult::ok:
      return "ok";
    case JwtResult::malformed:
      return "malformed";
    case JwtResult::bad_header:
      return "bad_header";
    case JwtResult::bad_signature:
      return "bad_signature";
    case JwtResult::bad_claims:
      return "bad_claims";
    case JwtResult::expired:
      return "expired";
    case JwtResult::not_yet_valid:
      return "not_yet_valid";
    case JwtResult::count_:
      break;
  }
  return "?";
}

long base64url_decode(std::string_view in, std::span<uint8_t> out) {
  if (in.size() % 4 == 1) return -1;
  size_t n = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (char ch : in) {
    uint32_t v;
    if (ch >= 'A' && ch <= 'Z')
      v = uint32_t(ch - 'A');
    else if (ch >= 'a' && ch <= 'z')
      v = uint32_t(ch - 'a') + 26;
    else if (ch >= '0' && ch <= '9')
      v = uint32_t(ch - '0') + 52;
    else if (ch == '-')
      v = 62;
    else if (ch == '_')
      v = 63;
    else
      return -1;
    acc = acc << 6 | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (n == out.size()) return -1;
      out[n++] = uint8_t(acc >> bits);
    }
  }
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return -1;  // non-canonical last char
  return long(n);
}

namespace {

// A strict, allocation-free walk over one JSON object's members.
class Scanner {
 public:
  explicit Scanner(std::string_view s) : p_(s.data()), end_(s.data() + s.size()) {}

  // Calls member(name, value_start, value_end, kind) for each top-level member.
  // kind: 's' string (the raw text between the quotes), 'n' number, 'o' anything else.
  template <class F>
  bool object(F&& member) {
    ws();
    if (!eat('{')) return false;
    ws();
    if (eat('}')) return end();
    for (;;) {
      ws();
      std::string_view name;
      bool escaped = false;
      if (!string(name, escaped)) return false;
      ws();
      if (!eat(':')) return false;
      ws();
      const char* v = p_;
      char kind = 'o';
      if (p_ < end_ && *p_ == '"') {
        std::string_view s;
        bool e2 = false;
        if (!string(s, e2)) return false;
        v = s.data();
        if (!member(escaped ? std::string_view{} : name, std::string_view(v, s.size()), 's'))
          return false;
      } else {
        if (p_ < end_ && (*p_ == '-' || (*p_ >= '0' && *p_ <= '9'))) kind = 'n';
        if (!value(0)) return false;
        if (!member(escaped ? std::string_view{} : name, std::string_view(v, size_t(p_ - v)), kind))
          return false;
      }
      ws();
      if (eat('}')) return end();
      if (!eat(',')) return false;
    }
  }

 private:
  bool end() {
    ws();
    return p_ == end_;
  }
  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool eat(char c) {
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }
  bool lit(const char* w) {
    const size_t n = std::strlen(w);
    if (size_t(end_ - p_) < n || std::memcmp(p_, w, n) != 0) return false;
    p_ += n;
    return true;
  }
  static bool hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  }
  bool string(std::string_view& out, bool& escaped) {
    if (!eat('"')) return false;
    const char* s = p_;
    escaped = false;
    while (p_ < end_ && *p_ != '"') {
      const unsigned char c = static_cast<unsigned char>(*p_);
      if (c < 0x20) return false;
      if (c == '\\') {
        escaped = true;
        if (++p_ == end_) return false;
        const char e = *p_;
        if (e == 'u') {
          if (end_ - p_ < 5) return false;
          for (int i = 1; i <= 4; ++i)
            if (!hex(p_[i])) return false;
          p_ += 4;
        } else if (!std::strchr("\"\\/bfnrt", e) || e == 0) {
          return false;
        }
      }
      ++p_;
    }
    if (p_ == end_) return false;
    out = std::string_view(s, size_t(p_ - s));
    ++p_;
    return true;
  }
  bool number() {
    eat('-');
    if (p_ == end_) return false;
    if (*p_ == '0') {
      ++p_;
    } else if (*p_ >= '1' && *p_ <= '9') {
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    } else {
      return false;
    }
    if (eat('.')) {
      if (p_ == end_ || *p_ < '0' || *p_ > '9') return false;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || *p_ < '0' || *p_ > '9') return false;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    return true;
  }
  bool value(int depth) {
    if (depth > 16 || p_ == end_) return false;
    ws();
    if (p_ == end_) return false;
    switch (*p_) {
      case '"': {
        std::string_view s;
        bool e;
        return string(s, e);
      }
      case '{':
      case '[': {
        const char close = *p_ == '{' ? '}' : ']';
        const bool obj = *p_ == '{';
        ++p_;
        ws();
        if (eat(close)) return true;
        for (;;) {
          ws();
          if (obj) {
            std::string_view s;
            bool e;
            if (!string(s, e)) return false;
            ws();
            if (!eat(':')) return false;
          }
          if (!value(depth + 1)) return false;
          ws();
          if (eat(close)) return true;
          if (!eat(',')) return false;
        }
      }
      case 't':
        return lit("true");
      case 'f':
        return lit("false");
      case 'n':
        return lit("null");
      default:
        return number();
    }
  }

  const char* p_;
  const char* end_;
};

// A NumericDate: digits, an optional fraction (dropped), no exponent, within ±2^53.
bool numeric_date(std::string_view v, int64_t& out) {
  size_t i = 0;
  const bool neg = !v.empty() && v[0] == '-';
  if (neg) ++i;
  int64_t n = 0;
  size_t digits = 0;
  for (; i < v.size() && v[i] >= '0' && v[i] <= '9'; ++i, ++digits) {
    if (digits >= 16) return false;
    n = n * 10 + (v[i] - '0');
  }
  if (digits == 0) return false;
  if (i < v.size() && v[i] == '.') {
    ++i;
    while (i < v.size() && v[i] >= '0' && v[i] <= '9') ++i;
  }
  if (i != v.size()) return false;
  out = neg ? -n : n;
  return true;
}

}  // namespace

JwtResult verify_jwt(std::string_view token, std::span<const HmacSha256* const> keys,
                     const JwtOptions& opt, size_t* key_used) {
  if (token.size() > kMaxJwt) return JwtResult::malformed;
  const size_t d1 = token.find('.');
  if (d1 == std::string_view::npos) return JwtResult::malformed;
  const size_t d2 = token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos)
    return JwtResult::malformed;
  const std::string_view h64 = token.substr(0, d1), c64 = token.substr(d1 + 1, d2 - d1 - 1),
                         s64 = token.substr(d2 + 1);
  uint8_t buf[kMaxJwt];
  // header
  const long hn = base64url_decode(h64, buf);
  if (hn <= 0) return JwtResult::malformed;
  bool alg_ok = false, crit = false, dup = false;
  int algs = 0;
  if (!Scanner(std::string_view(reinterpret_cast<char*>(buf), size_t(hn)))
           .object([&](std::string_view name, std::string_view v, char kind) {
             if (name == "alg") {
               ++algs;
               alg_ok = kind == 's' && v == "HS256";
             } else if (name == "crit") {
               crit = true;
             }
             return true;
           }))
    return JwtResult::malformed;
  dup = algs > 1;
  if (!alg_ok || crit || dup) return JwtResult::bad_header;
  // signature over "header.claims"
  uint8_t sig[HmacSha256::kTag + 1];
  if (base64url_decode(s64, sig) != long(HmacSha256::kTag)) return JwtResult::bad_signature;
  const auto* signed_part = reinterpret_cast<const uint8_t*>(token.data());
  const std::span<const uint8_t> msg(signed_part, d2);
  size_t used = 0;  // the first key that verifies (which one is no secret: stop there)
  while (used < keys.size() && (keys[used] == nullptr || !keys[used]->verify(msg, sig))) ++used;
  if (used == keys.size()) return JwtResult::bad_signature;
  if (key_used) *key_used = used;
  // claims
  const long cn = base64url_decode(c64, buf);
  if (cn <= 0) return JwtResult::malformed;
  int64_t exp = 0, nbf = 0;
  int nexp = 0, nnbf = 0;
  bool bad = false;
  if (!Scanner(std::string_view(reinterpret_cast<char*>(buf), size_t(cn)))
           .object([&](std::string_view name, std::string_view v, char kind) {
             if (name == "exp") {
               ++nexp;
               bad |= kind != 'n' || !numeric_date(v, exp);
             } else if (name == "nbf") {
               ++nnbf;
               bad |= kind != 'n' || !numeric_date(v, nbf);
             }
             return true;
           }))
    return JwtResult::malformed;
  if (bad || nexp > 1 || nnbf > 1 || (opt.require_exp && nexp == 0)) return JwtResult::bad_claims;
  if (nexp && opt.now_s >= exp + opt.leeway_s) return JwtResult::expired;
  if (nnbf && opt.now_s < nbf - opt.leeway_s) return JwtResult::not_yet_valid;
  return JwtResult::ok;
}

}  // namespace gaon::ikernels::auth
