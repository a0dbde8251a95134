#include "loadgen.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace gaon::bench {

Zipf::Zipf(uint64_t n, double theta) : cdf_(n) {
  double sum = 0;
  for (uint64_t i = 0; i < n; ++i) sum += 1.0 / std::pow(double(i + 1), theta);
  double acc = 0;
  for (uint64_t i = 0; i < n; ++i) {
    acc += 1.0 / std::pow(double(i + 1), theta) / sum;
    cdf_[i] = acc;
  }
  if (n) cdf_.back() = 1.0;
}

uint64_t Zipf::operator()(std::mt19937_64& rng) const {
  const double u = std::uniform_real_distribution<double>(0, 1)(rng);
  return uint64_t(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
}

double Zipf::probability(uint64_t r) const { return cdf_[r] - (r ? cdf_[r - 1] : 0); }

// 128 linear sub-buckets per power of two: ≤ 1/128 relative error.
static constexpr size_t kSub = 128, kPow = 28;

Histogram::Histogram() : b_(kSub * kPow) {}

size_t Histogram::bucket(double us) {
  if (us < 1) us = 1;
  int e;
  const double m = std::frexp(us, &e);  // us = m * 2^e, m in [0.5, 1)
  const size_t pow = std::min<size_t>(size_t(e - 1), kPow - 1);
  const size_t sub = std::min<size_t>(size_t((m - 0.5) * 2 * kSub), kSub - 1);
  return pow * kSub + sub;
}

double Histogram::value(size_t b) {
  const size_t pow = b / kSub, sub = b % kSub;
  return std::ldexp(1.0 + (double(sub) + 0.5) / kSub, int(pow));
}

void Histogram::add(double us) {
  ++b_[bucket(us)];
  ++n_;
  sum_ += us;
  max_ = std::max(max_, us);
}

void Histogram::merge(const Histogram& o) {
  for (size_t i = 0; i < b_.size(); ++i) b_[i] += o.b_[i];
  n_ += o.n_;
  sum_ += o.sum_;
  max_ = std::max(max_, o.max_);
}

double Histogram::percentile(double p) const {
  if (n_ == 0) return 0;
  const uint64_t rank = uint64_t(std::ceil(p / 100.0 * double(n_)));
  uint64_t acc = 0;
  for (size_t i = 0; i < b_.size(); ++i) {
    acc += b_[i];
    if (acc >= std::max<uint64_t>(rank, 1)) return std::min(value(i), max_);
  }
  return max_;
}

std::string make_key(uint64_t i, size_t size, bool loaded) {
  std::string k = (loaded ? "key:" : "nok:") + std::to_string(i);
  if (k.size() < size) k.append(size - k.size(), '.');
  return k;
}

std::string make_value(uint64_t i, size_t size) {
  std::string v = "v" + std::to_string(i) + "-";
  while (v.size() < size) v += char('a' + (v.size() + i) % 26);
  v.resize(size);
  return v;
}

std::string get_request(Proto p, std::string_view key, uint16_t req_id) {
  std::string d(8, '\0');
  d[0] = char(req_id >> 8), d[1] = char(req_id), d[5] = 1;
  if (p == Proto::ascii) {
    d += "get ";
    d += key;
    d += "\r\n";
    return d;
  }
  std::string h(24, '\0');
  h[0] = char(0x80);
  h[3] = char(key.size());
  h[11] = char(key.size());
  return d + h + std::string(key);
}

std::string set_request(Proto p, std::string_view key, std::string_view value, uint16_t req_id) {
  std::string d(8, '\0');
  d[0] = char(req_id >> 8), d[1] = char(req_id), d[5] = 1;
  if (p == Proto::ascii) {
    d += "set ";
    d += key;
    d += " 0 0 " + std::to_string(value.size()) + "\r\n";
    d += value;
    d += "\r\n";
    return d;
  }
  std::string h(24, '\0');
  h[0] = char(0x80);
  h[1] = 0x01;  // SET
  h[3] = char(key.size());
  h[4] = 8;  // extras: flags, exptime
  const uint32_t body = uint32_t(8 + key.size() + value.size());
  for (int i = 0; i < 4; ++i) h[8 + i] = char(body >> (24 - 8 * i));
  return d + h + std::string(8, '\0') + std::string(key) + std::string(value);
}

Reply parse_reply(std::string_view d, Proto p) {
  Reply r;
  if (d.size() < 8) return r;
  r.req_id = uint16_t(uint8_t(d[0]) << 8 | uint8_t(d[1]));
  std::string_view b = d.substr(8);
  if (p == Proto::binary) {
    if (b.size() < 24 || uint8_t(b[0]) != 0x81) return r;
    const uint16_t keylen = uint16_t(uint8_t(b[2]) << 8 | uint8_t(b[3]));
    const uint8_t extlen = uint8_t(b[4]);
    const uint16_t status = uint16_t(uint8_t(b[6]) << 8 | uint8_t(b[7]));
    uint32_t body = 0;
    for (int i = 0; i < 4; ++i) body = body << 8 | uint8_t(b[8 + i]);
    if (body > b.size() - 24 || body < uint32_t(extlen) + keylen) return r;
    r.ok = true;
    if (uint8_t(b[1]) == 0x01) {  // SET
      r.stored = status == 0;
      return r;
    }
    if (status != 0) return r;
    if (extlen != 4) {
      r.ok = false;
      return r;
    }
    for (int i = 0; i < 4; ++i) r.flags = r.flags << 8 | uint8_t(b[24 + i]);
    r.value = b.substr(24 + 4 + keylen, body - 4 - keylen);
    r.hit = true;
    return r;
  }
  const Reply head = r;                         // the request id
  if (ascii_reply(b, r) != b.size()) r = head;  // one whole reply, nothing after it
  return r;
}

size_t ascii_reply(std::string_view b, Reply& r) {
  r.ok = r.hit = r.stored = false;
  r.value = {};
  r.flags = 0;
  const size_t eol = b.find("\r\n");
  if (eol == std::string_view::npos) return b.size() > kMaxReplyLine ? b.size() : 0;
  const std::string_view line = b.substr(0, eol);
  if (line == "END") {
    r.ok = true;
    return eol + 2;
  }
  if (line == "STORED") {
    r.ok = r.stored = true;
    return eol + 2;
  }
  if (!line.starts_with("VALUE ")) return eol + 2;  // another reply: an error
  const std::string_view head = line.substr(6);
  const size_t s1 = head.find(' '), s2 = head.find(' ', s1 + 1);
  if (s1 == std::string_view::npos || s2 == std::string_view::npos) return eol + 2;
  uint64_t flags = 0, len = 0;
  for (char c : head.substr(s1 + 1, s2 - s1 - 1)) {
    if (c < '0' || c > '9' || flags > UINT32_MAX) return eol + 2;
    flags = flags * 10 + uint64_t(c - '0');
  }
  const std::string_view lt = head.substr(s2 + 1, head.find(' ', s2 + 1) - s2 - 1);
  if (lt.empty() || lt.size() > 7) return eol + 2;
  for (char c : lt) {
    if (c < '0' || c > '9') return eol + 2;
    len = len * 10 + uint64_t(c - '0');
  }
  if (flags > UINT32_MAX) return eol + 2;
  const size_t total = eol + 2 + len + 7;  // "\r\nEND\r\n" after the value
  if (b.size() < total) return 0;
  if (b.substr(eol + 2 + len, 7) != "\r\nEND\r\n") return total;
  r.value = b.substr(eol + 2, len);
  r.flags = uint32_t(flags);
  r.hit = r.ok = true;
  return total;
}

}  // namespace gaon::bench
