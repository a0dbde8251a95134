// gaon-bench's pieces: the histogram, the Zipf sampler, keys, request bytes, reply parsing.
#include "loadgen.h"

#include <gtest/gtest.h>

#include <map>

#include "frames.h"

namespace gaon::bench {
namespace {

TEST(BenchHistogram, PercentilesWithinOnePercent) {
  Histogram h;
  for (int i = 1; i <= 100000; ++i) h.add(double(i));  // 1 .. 100000 µs
  for (double p : {50.0, 90.0, 99.0, 99.9}) {
    const double want = p / 100 * 100000;
    EXPECT_NEAR(h.percentile(p) / want, 1.0, 0.01) << p;
  }
  EXPECT_EQ(h.count(), 100000u);
  EXPECT_DOUBLE_EQ(h.max(), 100000);
  EXPECT_NEAR(h.mean(), 50000.5, 1);
  Histogram other, empty;
  other.add(5);
  other.merge(h);
  EXPECT_EQ(other.count(), 100001u);
  EXPECT_EQ(empty.percentile(99), 0);
}

TEST(BenchZipf, FrequenciesFollowTheDistribution) {
  const Zipf z(1000, 0.99);
  std::mt19937_64 rng(7);
  std::map<uint64_t, uint64_t> n;
  const int draws = 400000;
  for (int i = 0; i < draws; ++i) ++n[z(rng)];
  for (uint64_t r : {0, 9, 99})
    EXPECT_NEAR(double(n[r]) / draws / z.probability(r), 1.0, 0.05) << "rank " << r;
  EXPECT_GT(n[0], n[9] * 5);  // skewed
  std::mt19937_64 a(3), b(3);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(z(a), z(b));  // deterministic
}

TEST(BenchKeys, SizesAndSpaces) {
  EXPECT_EQ(make_key(42, 16, true), "key:42..........");
  EXPECT_EQ(make_key(42, 16, false), "nok:42..........");
  EXPECT_EQ(make_value(3, 10).size(), 10u);
  EXPECT_NE(make_value(3, 10), make_value(4, 10));
}

TEST(BenchProtocol, RequestsAndReplies) {
  EXPECT_EQ(get_request(Proto::ascii, "foo", 7), test::mc_dgram("get foo\r\n", 7));
  EXPECT_EQ(get_request(Proto::binary, "foo", 7),
            test::mc_dgram(test::mc_binreq(0x00, "foo", "", "", 0), 7));
  // The reply's views point into the datagram: keep each one alive while it is looked at.
  const std::string ascii_hit = test::mc_dgram("VALUE foo 42 3\r\nbar\r\nEND\r\n", 9);
  auto hit = parse_reply(ascii_hit, Proto::ascii);
  EXPECT_TRUE(hit.ok && hit.hit);
  EXPECT_EQ(hit.req_id, 9);
  EXPECT_EQ(hit.value, "bar");
  EXPECT_EQ(hit.flags, 42u);
  auto miss = parse_reply(test::mc_dgram("END\r\n", 9), Proto::ascii);
  EXPECT_TRUE(miss.ok && !miss.hit);
  const std::string bin_hit(
      "\x81\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x07\x11\x22\x33\x44\x00\x00\x00\x00\x00\x00"
      "\x00\x01\x00\x00\x00\x2a"
      "bar",
      31);
  const std::string bin_dgram = test::mc_dgram(bin_hit, 3);
  auto b = parse_reply(bin_dgram, Proto::binary);
  EXPECT_TRUE(b.ok && b.hit);
  EXPECT_EQ(b.value, "bar");
  EXPECT_EQ(b.flags, 42u);
  for (std::string bad : {"", "xx", "VALUE foo 42 3\r\nbar", "VALUE foo x 3\r\nbar\r\nEND\r\n",
                          "VALUE foo 42 99999999\r\nbar\r\nEND\r\n", "SERVER_ERROR\r\n"})
    EXPECT_FALSE(parse_reply(test::mc_dgram(bad, 1), Proto::ascii).ok) << bad;
  EXPECT_FALSE(parse_reply(test::mc_dgram(bin_hit.substr(0, 28), 1), Proto::binary).ok);
}

// Replies read from a TCP stream come in pieces: cut anywhere, the same replies come out,
// each one only once it is all there; an unknown line is one reply that is not ok.
TEST(BenchProtocol, StreamRepliesCutAtEveryByte) {
  const std::string stream =
      "VALUE a 1 2\r\nxy\r\nEND\r\nEND\r\nSTORED\r\nSERVER_ERROR out of memory\r\n"
      "VALUE b 0 1 77\r\nz\r\nEND\r\nVALUE c 0 3\r\nabcXXXXXXX";
  struct Seen {
    bool ok, hit, stored;
    std::string value;
    bool operator==(const Seen&) const = default;
  };
  auto read = [](const std::string& all, size_t cut) {
    std::vector<Seen> out;
    std::string buf;
    for (std::string piece : {all.substr(0, cut), all.substr(cut)}) {
      buf += piece;
      Reply r;
      while (size_t n = ascii_reply(buf, r)) {
        out.push_back({r.ok, r.hit, r.stored, std::string(r.value)});
        buf.erase(0, n);
      }
    }
    return out;
  };
  const std::vector<Seen> want = {{true, true, false, "xy"}, {true, false, false, ""},
                                  {true, false, true, ""},   {false, false, false, ""},
                                  {true, true, false, "z"},  {false, false, false, ""}};
  for (size_t cut = 0; cut <= stream.size(); ++cut) EXPECT_EQ(read(stream, cut), want) << cut;
  Reply r;
  EXPECT_EQ(ascii_reply(std::string(100, 'x'), r), 0u);  // a line not ended yet
  EXPECT_EQ(ascii_reply(std::string(kMaxReplyLine + 1, 'x'), r), kMaxReplyLine + 1);
  EXPECT_FALSE(r.ok);
}

}  // namespace
}  // namespace gaon::bench
