// Table-driven parser tests: each case is a frame built byte by byte (or a corruption of
// one) and the classification the engine must give it.
#include <gtest/gtest.h>

#include <functional>

#include "frames.h"
#include "gaon/net.h"
#include "gaon/parse.h"

namespace gaon {
namespace {

using test::Bytes;
using test::FrameSpec;
using test::L4Csum;

FrameSpec udp4(size_t payload = 18) {
  FrameSpec s;
  s.payload.assign(payload, 'x');
  return s;
}

struct ParseCase {
  std::string description;
  std::function<Bytes()> frame;
  ParseResult want;
  L4 l4 = L4::none;
  uint16_t payload_len = 0;
  bool partial = false;
};

Bytes mutate(Bytes f, const std::function<void(Bytes&)>& m) {
  m(f);
  return f;
}

const std::vector<ParseCase>& cases() {
  static const std::vector<ParseCase> c = {
      {"udp/ipv4", [] { return test::build_frame(udp4()); }, ParseResult::ok, L4::udp, 18},
      {"udp/ipv4 empty payload", [] { return test::build_frame(udp4(0)); }, ParseResult::ok,
       L4::udp, 0},
      {"udp/ipv4 checksum 0 (none)",
       [] {
         auto s = udp4();
         s.l4csum = L4Csum::zero;
         return test::build_frame(s);
       },
       ParseResult::ok, L4::udp, 18},
      {"udp/ipv4 checksum left to offload",
       [] {
         auto s = udp4();
         s.l4csum = L4Csum::partial;
         return test::build_frame(s);
       },
       ParseResult::ok, L4::udp, 18, true},
      {"udp/ipv4 with Ethernet padding",
       [] {
         auto s = udp4(2);
         s.pad_to = 60;
         return test::build_frame(s);
       },
       ParseResult::ok, L4::udp, 2},
      {"udp/ipv4 with IP options",
       [] {
         auto s = udp4();
         s.ip_options = {0x94, 0x04, 0x00, 0x00};  // router alert
         return test::build_frame(s);
       },
       ParseResult::ok, L4::udp, 18},
      {"udp/ipv4 in 802.1Q",
       [] {
         auto s = udp4();
         s.vlan = 100;
         return test::build_frame(s);
       },
       ParseResult::ok, L4::udp, 18},
      {"tcp/ipv4",
       [] {
         auto s = udp4(10);
         s.proto = 6;
         return test::build_frame(s);
       },
       ParseResult::ok, L4::tcp, 10},
      {"udp/ipv6",
       [] {
         auto s = udp4(30);
         s.ip_version = 6;
         s.src_ip = "fd00::1";
         s.dst_ip = "fd00::2";
         return test::build_frame(s);
       },
       ParseResult::ok, L4::udp, 30},
      {"tcp/ipv6 in 802.1Q",
       [] {
         auto s = udp4(5);
         s.ip_version = 6;
         s.src_ip = "fd00::1";
         s.dst_ip = "fd00::2";
         s.proto = 6;
         s.vlan = 7;
         return test::build_frame(s);
       },
       ParseResult::ok, L4::tcp, 5},
      // not flows
      {"arp",
       [] {
         return mutate(test::build_frame(udp4()), [](Bytes& f) { f[12] = 0x08, f[13] = 0x06; });
       },
       ParseResult::not_ip},
      {"icmp",
       [] {
         auto s = udp4();
         s.proto = 1;
         return test::build_frame(s);
       },
       ParseResult::not_udp_tcp},
      {"ipv6 hop-by-hop extension header",
       [] {
         auto s = udp4();
         s.ip_version = 6;
         s.src_ip = "fd00::1";
         s.dst_ip = "fd00::2";
         s.proto = 0;
         return test::build_frame(s);
       },
       ParseResult::ipv6_ext_header},
      // malformed
      {"empty frame", [] { return Bytes{}; }, ParseResult::truncated_eth},
      {"13-byte frame", [] { return Bytes(13, 0); }, ParseResult::truncated_eth},
      {"vlan tag cut",
       [] {
         auto s = udp4();
         s.vlan = 1;
         auto f = test::build_frame(s);
         f.resize(16);
         return f;
       },
       ParseResult::truncated_vlan},
      {"ipv4 header cut",
       [] {
         auto f = test::build_frame(udp4());
         f.resize(14 + 19);
         return f;
       },
       ParseResult::truncated_ipv4},
      {"ipv4 options cut",
       [] {
         auto s = udp4();
         s.ip_options.assign(8, 1);
         auto f = test::build_frame(s);
         f.resize(14 + 24);
         return f;
       },
       ParseResult::truncated_ipv4},
      {"ipv4 version 5",
       [] { return mutate(test::build_frame(udp4()), [](Bytes& f) { f[14] = 0x55; }); },
       ParseResult::bad_ipv4_version},
      {"ipv4 ihl 4",
       [] { return mutate(test::build_frame(udp4()), [](Bytes& f) { f[14] = 0x44; }); },
       ParseResult::bad_ipv4_ihl},
      {"ipv4 total length beyond frame",
       [] { return mutate(test::build_frame(udp4()), [](Bytes& f) { f[16] = 0x05; }); },
       ParseResult::bad_ipv4_total_len},
      {"ipv4 total length below header",
       [] { return mutate(test::build_frame(udp4()), [](Bytes& f) { f[16] = 0, f[17] = 10; }); },
       ParseResult::bad_ipv4_total_len},
      {"ipv4 header checksum wrong",
       [] { return mutate(test::build_frame(udp4()), [](Bytes& f) { f[24] ^= 0x01; }); },
       ParseResult::bad_ipv4_checksum},
      {"ipv4 first fragment (MF)",
       [] {
         auto s = udp4();
         s.frag = 0x2000;
         return test::build_frame(s);
       },
       ParseResult::ipv4_fragment},
      {"ipv4 later fragment (offset)",
       [] {
         auto s = udp4();
         s.frag = 0x0010;
         return test::build_frame(s);
       },
       ParseResult::ipv4_fragment},
      {"ipv4 DF is not a fragment",
       [] {
         auto s = udp4();
         s.frag = 0x4000;
         return test::build_frame(s);
       },
       ParseResult::ok, L4::udp, 18},
      {"ipv6 header cut",
       [] {
         auto s = udp4();
         s.ip_version = 6;
         s.src_ip = "::1";
         s.dst_ip = "::1";
         auto f = test::build_frame(s);
         f.resize(14 + 39);
         return f;
       },
       ParseResult::truncated_ipv6},
      {"ipv6 version 4 in an IPv6 ethertype",
       [] {
         auto s = udp4();
         s.ip_version = 6;
         s.src_ip = "::1";
         s.dst_ip = "::1";
         return mutate(test::build_frame(s), [](Bytes& f) { f[14] = 0x40; });
       },
       ParseResult::bad_ipv6_version},
      {"ipv6 payload length beyond frame",
       [] {
         auto s = udp4();
         s.ip_version = 6;
         s.src_ip = "::1";
         s.dst_ip = "::1";
         return mutate(test::build_frame(s), [](Bytes& f) { f[18] = 0x10; });
       },
       ParseResult::bad_ipv6_payload_len},
      {"udp header cut (ip length says 4 bytes of udp)",
       [] {
         auto s = udp4(0);
         s.proto = 99;  // build raw, then claim UDP with a short IP payload
         s.payload = {0, 1, 2, 3};
         auto f = test::build_frame(s);
         f[14 + 9] = 17;
         f[24] = f[25] = 0;
         uint16_t c = test::ref_checksum(&f[14], 20);
         f[24] = uint8_t(c >> 8), f[25] = uint8_t(c);
         return f;
       },
       ParseResult::truncated_udp},
      {"udp length beyond ip payload",
       [] { return mutate(test::build_frame(udp4()), [](Bytes& f) { f[38] = 0x01; }); },
       ParseResult::bad_udp_len},
      {"udp length below 8",
       [] { return mutate(test::build_frame(udp4()), [](Bytes& f) { f[38] = 0, f[39] = 4; }); },
       ParseResult::bad_udp_len},
      {"udp checksum wrong",
       [] {
         auto s = udp4();
         s.l4csum = L4Csum::bad;
         return test::build_frame(s);
       },
       ParseResult::bad_udp_checksum},
      {"udp/ipv6 checksum 0 is not allowed",
       [] {
         auto s = udp4();
         s.ip_version = 6;
         s.src_ip = "::1";
         s.dst_ip = "::2";
         s.l4csum = L4Csum::zero;
         return test::build_frame(s);
       },
       ParseResult::bad_udp_checksum},
      {"tcp header cut",
       [] {
         auto s = udp4(0);
         s.proto = 99;
         s.payload.assign(12, 0);
         auto f = test::build_frame(s);
         f[14 + 9] = 6;
         f[24] = f[25] = 0;
         uint16_t c = test::ref_checksum(&f[14], 20);
         f[24] = uint8_t(c >> 8), f[25] = uint8_t(c);
         return f;
       },
       ParseResult::truncated_tcp},
      {"tcp data offset 4",
       [] {
         auto s = udp4(4);
         s.proto = 6;
         return mutate(test::build_frame(s), [](Bytes& f) { f[46] = 0x40; });
       },
       ParseResult::bad_tcp_offset},
      {"tcp data offset beyond segment",
       [] {
         auto s = udp4(4);
         s.proto = 6;
         return mutate(test::build_frame(s), [](Bytes& f) { f[46] = 0xf0; });
       },
       ParseResult::bad_tcp_offset},
      {"tcp checksum wrong",
       [] {
         auto s = udp4(4);
         s.proto = 6;
         s.l4csum = L4Csum::bad;
         return test::build_frame(s);
       },
       ParseResult::bad_tcp_checksum},
  };
  return c;
}

class ParseTable : public ::testing::TestWithParam<size_t> {};

TEST_P(ParseTable, Classifies) {
  const ParseCase& c = cases()[GetParam()];
  SCOPED_TRACE(c.description);
  auto pool = BufferPool::create(4);
  ASSERT_TRUE(pool) << pool.error();
  const Bytes frame = c.frame();
  Packet* p = test::make_packet(**pool, frame);
  ASSERT_NE(p, nullptr);
  const ParseResult r = parse(*p);
  EXPECT_EQ(to_string(r), to_string(c.want));
  EXPECT_EQ(p->parsed, r == ParseResult::ok);
  if (r == ParseResult::ok) {
    EXPECT_EQ(p->hdr.l4_proto, c.l4);
    EXPECT_EQ(p->hdr.payload_len, c.payload_len);
    EXPECT_EQ(p->hdr.l4_csum_partial, c.partial);
    EXPECT_LE(p->hdr.payload + p->hdr.payload_len, p->len);
  }
  // Parsing never changes a byte.
  EXPECT_EQ(test::bytes_of(*p), frame);
}

INSTANTIATE_TEST_SUITE_P(Frames, ParseTable, ::testing::Range<size_t>(0, cases().size()),
                         [](const auto& info) {
                           std::string n = cases()[info.param].description;
                           for (char& ch : n)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(Parse, EveryMalformedReasonHasACase) {
  std::set<ParseResult> seen;
  for (const auto& c : cases()) seen.insert(c.want);
  for (size_t i = 0; i < kParseResults; ++i) {
    EXPECT_TRUE(seen.count(ParseResult(i))) << "no case for " << to_string(ParseResult(i));
  }
}

TEST(Parse, L4ChecksumVerificationCanBeOff) {
  auto pool = BufferPool::create(4);
  auto s = udp4();
  s.l4csum = L4Csum::bad;
  Packet* p = test::make_packet(**pool, test::build_frame(s));
  EXPECT_EQ(parse(*p, {.verify_l4_checksum = false}), ParseResult::ok);
}

TEST(Parse, PayloadOffsets) {
  auto pool = BufferPool::create(4);
  auto s = udp4();
  s.payload = test::text("hello");
  s.vlan = 5;
  s.ip_options.assign(4, 1);
  Packet* p = test::make_packet(**pool, test::build_frame(s));
  ASSERT_EQ(parse(*p), ParseResult::ok);
  EXPECT_TRUE(p->hdr.vlan);
  EXPECT_EQ(p->hdr.l3, 18);
  EXPECT_EQ(p->hdr.l4, 18 + 24);
  EXPECT_EQ(p->hdr.payload, 18 + 24 + 8);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(p->payload()), p->hdr.payload_len), "hello");
}

}  // namespace
}  // namespace gaon
