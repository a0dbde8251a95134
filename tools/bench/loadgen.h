// gaon-bench's pieces: key popularity (uniform, Zipf), an HDR-style latency histogram, and
// memcached UDP request encoding / reply decoding.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace gaon::bench {

// Zipf(θ) over ranks 0..n-1 by inverse CDF (binary search over a precomputed table).
class Zipf {
 public:
  Zipf(uint64_t n, double theta);
  uint64_t operator()(std::mt19937_64& rng) const;
  double probability(uint64_t rank) const;

 private:
  std::vector<double> cdf_;
};

// Log-linear histogram of microseconds: 1 µs .. ~100 s, ≤ 1% relative error.
class Histogram {
 public:
  Histogram();
  void add(double us);
  void merge(const Histogram& o);
  double percentile(double p) const;  // p in [0, 100]
  uint64_t count() const { return n_; }
  double mean() const { return n_ ? sum_ / double(n_) : 0; }
  double max() const { return max_; }

 private:
  static size_t bucket(double us);
  static double value(size_t b);
  std::vector<uint64_t> b_;
  uint64_t n_ = 0;
  double sum_ = 0, max_ = 0;
};

// Deterministic keys and values: "key:000042" padded to `size` bytes; miss keys use
// another prefix ("nok:"), so they were never loaded.
std::string make_key(uint64_t i, size_t size, bool loaded);
std::string make_value(uint64_t i, size_t size);

enum class Proto { ascii, binary };
std::string get_request(Proto p, std::string_view key, uint16_t req_id);

std::string set_request(Proto p, std::string_view key, std::string_view value, uint16_t req_id);

struct Reply {
  bool ok = false;  // a well-formed reply to a get (or, with `stored`, to a set)
  bool hit = false;
  bool stored = false;
  uint16_t req_id = 0;
  std::string_view value;
  uint32_t flags = 0;
};
// Parses one datagram (memcached's frame header, then an ASCII or binary get reply).
Reply parse_reply(std::string_view datagram, Proto p);

// The ASCII reply at the start of `b` (a TCP stream: END, STORED, VALUE ... END, or any
// other line, which is an error: r.ok false): its length, or 0 while it is not all there.
// A first line longer than kMaxReplyLine without its end is malformed: all of `b`.
constexpr size_t kMaxReplyLine = 2048;
size_t ascii_reply(std::string_view b, Reply& r);

}  // namespace gaon::bench
