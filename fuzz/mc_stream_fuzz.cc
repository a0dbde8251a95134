// Fuzz target: kvcache's TCP stream scanners (src/ikernels/kvcache/mc_stream.h), the
// request scanner and the reply scanner, over the same bytes. The first byte seeds the
// sizes of the pieces the rest is fed in. Invariants: no crash, no read outside the input;
// what is found (commands; the number of complete replies), and whether the stream is
// lost, do not depend on how the stream is split.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "kvcache/mc_stream.h"

namespace {

// Calls feed(piece) over data in pieces: whole when seed is 0, else of pseudo-random sizes.
template <class Feed>
void in_pieces(const uint8_t* data, size_t size, uint8_t seed, Feed&& feed) {
  uint32_t x = seed;
  for (size_t off = 0; off < size;) {
    size_t n = size - off;
    if (seed != 0) {
      x = x * 1103515245u + 12345u;
      n = std::min<size_t>(n, 1 + (x >> 16) % 64);
    }
    feed(std::span<const uint8_t>(data + off, n));
    off += n;
  }
}

std::vector<std::string> scan(const uint8_t* data, size_t size, uint8_t seed, bool* ok) {
  gaon::kv::StreamScanner sc;
  std::vector<std::string> out;
  auto on = [&](const gaon::kv::Request& r) {
    std::string s(1, char('0' + int(r.kind)));
    for (size_t i = 0; i < r.nkeys; ++i) s += "|" + std::string(r.keys[i]);
    out.push_back(s);
  };
  *ok = true;
  in_pieces(data, size, seed, [&](std::span<const uint8_t> piece) { *ok = sc.feed(piece, on); });
  return out;
}

size_t replies(const uint8_t* data, size_t size, uint8_t seed, bool* ok) {
  gaon::kv::ReplyScanner sc;
  size_t n = 0;
  *ok = true;
  in_pieces(data, size, seed,
            [&](std::span<const uint8_t> piece) { *ok = sc.feed(piece, [&] { ++n; }); });
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t seed = data[0] | 1;
  bool whole_ok = false, split_ok = false;
  const auto whole = scan(data + 1, size - 1, 0, &whole_ok);
  const auto split = scan(data + 1, size - 1, seed, &split_ok);
  if (whole != split || whole_ok != split_ok) std::abort();
  const size_t r_whole = replies(data + 1, size - 1, 0, &whole_ok);
  const size_t r_split = replies(data + 1, size - 1, seed, &split_ok);
  if (r_whole != r_split || whole_ok != split_ok) std::abort();
  return 0;
}
