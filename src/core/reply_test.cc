// Table-driven tests of the in-place reply helpers (reply.h) and of the checksum primitives
// they rely on (checksum.h). Every expected frame is built byte by byte by the test fixtures
// (tests/frames.h) and every checksum is re-verified with the fixtures' naive reference
// implementation, never with the library's own.
#include "gaon/reply.h"

#include <gtest/gtest.h>

#include <climits>
#include <cstring>
#include <random>
#include <vector>

#include "frames.h"
#include "gaon/checksum.h"
#include "gaon/net.h"
#include "gaon/parse.h"

namespace gaon {
namespace {

using reply::UdpChecksum;
using test::Bytes;
using test::FrameSpec;
using test::L4Csum;

// --- frame specs ------------------------------------------------------------------------

uint8_t pat(size_t i) { return static_cast<uint8_t>(i * 7 + 3); }
// pattern(n) is a prefix of pattern(m) for n < m, so a shrunk payload is predictable.
Bytes pattern(size_t n) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = pat(i);
  return b;
}

FrameSpec v4(size_t n, L4Csum c = L4Csum::full) {
  FrameSpec s;
  s.src_ip = "10.0.0.1";
  s.dst_ip = "192.168.7.200";
  s.sport = 40000;
  s.dport = 11211;
  s.payload = pattern(n);
  s.l4csum = c;
  return s;
}
FrameSpec v6(size_t n, L4Csum c = L4Csum::full) {
  FrameSpec s = v4(n, c);
  s.ip_version = 6;
  s.src_ip = "fd00::1";
  s.dst_ip = "fd00:abcd::2:7";
  return s;
}
FrameSpec opts(FrameSpec s) {
  s.ip_options = {0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00};  // router alert, NOPs, EOL
  return s;
}
FrameSpec vlan(FrameSpec s, uint16_t tci = 100) {
  s.vlan = tci;
  return s;
}
FrameSpec tcp(FrameSpec s) {
  s.proto = net::kProtoTcp;
  return s;
}
FrameSpec padded(FrameSpec s, size_t to) {
  s.pad_to = to;
  return s;
}
FrameSpec ttl(FrameSpec s, uint8_t t) {
  s.ttl = t;
  return s;
}
FrameSpec csum(FrameSpec s, L4Csum c) {
  s.l4csum = c;
  return s;
}
// What swap_addresses must produce: the same frame with both ends exchanged.
FrameSpec swapped(FrameSpec s) {
  for (int i = 0; i < 6; ++i) std::swap(s.src_mac[i], s.dst_mac[i]);
  std::swap(s.src_ip, s.dst_ip);
  std::swap(s.sport, s.dport);
  return s;
}
// What set_payload_len(n) + finish_udp must produce (no Ethernet padding any more).
FrameSpec resized(FrameSpec s, size_t n, L4Csum c) {
  s.payload = pattern(n);
  s.pad_to = 0;
  s.l4csum = c;
  return s;
}

size_t l3_of(const Bytes& f) { return net::load16(&f[12]) == net::kEthVlan ? 18 : 14; }

::testing::AssertionResult SameBytes(const Bytes& got, const Bytes& want) {
  const size_t n = std::min(got.size(), want.size());
  for (size_t i = 0; i < n; ++i) {
    if (got[i] != want[i])
      return ::testing::AssertionFailure()
             << "first difference at byte " << i << ": got 0x" << std::hex << int(got[i])
             << ", want 0x" << int(want[i]) << std::dec << " (sizes " << got.size() << " and "
             << want.size() << ")";
  }
  if (got.size() != want.size())
    return ::testing::AssertionFailure()
           << "size " << got.size() << ", want " << want.size() << " (common prefix equal)";
  return ::testing::AssertionSuccess();
}

// The IPv4 header checksum as stored equals a from-scratch recomputation of it.
void ExpectIpv4ChecksumFromScratch(const uint8_t* ip) {
  const size_t ihl = (ip[0] & 0x0f) * 4u;
  Bytes h(ip, ip + ihl);
  const uint16_t stored = net::load16(&h[net::ip4::csum]);
  h[net::ip4::csum] = h[net::ip4::csum + 1] = 0;
  EXPECT_EQ(stored, test::ref_checksum(h.data(), h.size()))
      << "stored 0x" << std::hex << stored << ", from scratch 0x"
      << test::ref_checksum(h.data(), h.size());
}

// --- the table --------------------------------------------------------------------------

enum class Op {
  swap,         // swap_addresses
  swap_finish,  // swap_addresses + finish_udp(mode)
  resize,       // set_payload_len(arg), caller fills new bytes, finish_udp(mode)
  echo,         // swap_addresses + resize
  ttl,          // set_ttl(arg)
};

struct ReplyCase {
  std::string description;
  FrameSpec in;
  Op op;
  uint32_t arg = 0;  // resize/echo: new payload length; ttl: the new TTL
  UdpChecksum mode = UdpChecksum::full;
  // expected
  FrameSpec want;  // built independently by the fixtures, compared byte by byte
  size_t frame_len = 0;
  uint16_t l3_len = 0;         // IPv4 total length or IPv6 payload length
  uint16_t udp_len = 0;        // 0 for TCP
  bool partial_after = false;  // the L4 checksum is still left to offload
};

constexpr auto kFull = UdpChecksum::full;
constexpr auto kNone = UdpChecksum::none;

// Lengths, by hand: Ethernet 14 (+4 with 802.1Q), IPv4 20 (+8 options), IPv6 40, UDP 8,
// TCP 20.
const std::vector<ReplyCase>& cases() {
  static const std::vector<ReplyCase> c = {
      // swap_addresses: every checksum stays valid as it is
      {"swap udp/ipv4", v4(18), Op::swap, 0, kFull, swapped(v4(18)), 60, 46, 26},
      {"swap udp/ipv4 with options", opts(v4(18)), Op::swap, 0, kFull, swapped(opts(v4(18))), 68,
       54, 26},
      {"swap udp/ipv4 in 802.1Q", vlan(v4(18)), Op::swap, 0, kFull, swapped(vlan(v4(18))), 64, 46,
       26},
      {"swap udp/ipv6", v6(30), Op::swap, 0, kFull, swapped(v6(30)), 92, 38, 38},
      {"swap udp/ipv6 in 802.1Q", vlan(v6(30), 4095), Op::swap, 0, kFull,
       swapped(vlan(v6(30), 4095)), 96, 38, 38},
      {"swap tcp/ipv4", tcp(v4(10)), Op::swap, 0, kFull, swapped(tcp(v4(10))), 64, 50, 0},
      {"swap tcp/ipv6 in 802.1Q", vlan(tcp(v6(10))), Op::swap, 0, kFull, swapped(vlan(tcp(v6(10)))),
       88, 30, 0},
      {"swap udp/ipv4 empty payload", v4(0), Op::swap, 0, kFull, swapped(v4(0)), 42, 28, 8},
      {"swap udp/ipv4 checksum zero stays zero", v4(18, L4Csum::zero), Op::swap, 0, kFull,
       swapped(v4(18, L4Csum::zero)), 60, 46, 26},
      {"swap udp/ipv4 partial stays partial", v4(18, L4Csum::partial), Op::swap, 0, kFull,
       swapped(v4(18, L4Csum::partial)), 60, 46, 26, true},
      {"swap udp/ipv6 partial stays partial", v6(30, L4Csum::partial), Op::swap, 0, kFull,
       swapped(v6(30, L4Csum::partial)), 92, 38, 38, true},
      {"swap then finish full, partial udp/ipv4", v4(18, L4Csum::partial), Op::swap_finish, 0,
       kFull, swapped(v4(18)), 60, 46, 26},
      {"swap then finish none, partial udp/ipv4", v4(18, L4Csum::partial), Op::swap_finish, 0,
       kNone, swapped(v4(18, L4Csum::zero)), 60, 46, 26},
      {"swap then finish full, partial udp/ipv6", v6(30, L4Csum::partial), Op::swap_finish, 0,
       kFull, swapped(v6(30)), 92, 38, 38},
      {"swap then finish none, partial udp/ipv6 is full", v6(30, L4Csum::partial), Op::swap_finish,
       0, kNone, swapped(v6(30)), 92, 38, 38},
      {"swap then finish none, full udp/ipv4", v4(18), Op::swap_finish, 0, kNone,
       swapped(v4(18, L4Csum::zero)), 60, 46, 26},
      {"swap then finish full, zero udp/ipv4", v4(18, L4Csum::zero), Op::swap_finish, 0, kFull,
       swapped(v4(18)), 60, 46, 26},
      {"swap then finish none, full udp/ipv6 in 802.1Q is full", vlan(v6(7)), Op::swap_finish, 0,
       kNone, swapped(vlan(v6(7))), 73, 15, 15},

      // set_payload_len + finish_udp
      {"resize udp/ipv4 smaller, full", v4(18), Op::resize, 4, kFull,
       resized(v4(18), 4, L4Csum::full), 46, 32, 12},
      {"resize udp/ipv4 larger, full", v4(18), Op::resize, 100, kFull,
       resized(v4(18), 100, L4Csum::full), 142, 128, 108},
      {"resize udp/ipv4 same, full", v4(18), Op::resize, 18, kFull,
       resized(v4(18), 18, L4Csum::full), 60, 46, 26},
      {"resize udp/ipv4 to empty, full", v4(18), Op::resize, 0, kFull,
       resized(v4(18), 0, L4Csum::full), 42, 28, 8},
      {"resize udp/ipv4 from empty, full", v4(0), Op::resize, 33, kFull,
       resized(v4(0), 33, L4Csum::full), 75, 61, 41},
      {"resize udp/ipv4 smaller, none", v4(18), Op::resize, 4, kNone,
       resized(v4(18), 4, L4Csum::zero), 46, 32, 12},
      {"resize udp/ipv4 larger, none", v4(18), Op::resize, 1000, kNone,
       resized(v4(18), 1000, L4Csum::zero), 1042, 1028, 1008},
      {"resize udp/ipv4 same, none", v4(18), Op::resize, 18, kNone,
       resized(v4(18), 18, L4Csum::zero), 60, 46, 26},
      {"resize udp/ipv4 to the last byte of the buffer", v4(18), Op::resize, kMaxData - 42, kFull,
       resized(v4(18), kMaxData - 42, L4Csum::full), kMaxData, kMaxData - 14, kMaxData - 34},
      {"resize udp/ipv4 with options smaller (odd), full", opts(v4(18)), Op::resize, 5, kFull,
       resized(opts(v4(18)), 5, L4Csum::full), 55, 41, 13},
      {"resize udp/ipv4 with options larger, none", opts(v4(18)), Op::resize, 300, kNone,
       resized(opts(v4(18)), 300, L4Csum::zero), 350, 336, 308},
      {"resize udp/ipv4 in 802.1Q smaller (odd), full", vlan(v4(18)), Op::resize, 7, kFull,
       resized(vlan(v4(18)), 7, L4Csum::full), 53, 35, 15},
      {"resize udp/ipv4 in 802.1Q larger, full", vlan(v4(18)), Op::resize, 1400, kFull,
       resized(vlan(v4(18)), 1400, L4Csum::full), 1446, 1428, 1408},
      {"resize udp/ipv6 smaller (odd), full", v6(30), Op::resize, 3, kFull,
       resized(v6(30), 3, L4Csum::full), 65, 11, 11},
      {"resize udp/ipv6 larger, full", v6(30), Op::resize, 200, kFull,
       resized(v6(30), 200, L4Csum::full), 262, 208, 208},
      {"resize udp/ipv6 same, none is full", v6(30), Op::resize, 30, kNone,
       resized(v6(30), 30, L4Csum::full), 92, 38, 38},
      {"resize udp/ipv6 to empty, none is full", v6(30), Op::resize, 0, kNone,
       resized(v6(30), 0, L4Csum::full), 62, 8, 8},
      {"resize udp/ipv6 in 802.1Q larger, none is full", vlan(v6(30)), Op::resize, 64, kNone,
       resized(vlan(v6(30)), 64, L4Csum::full), 130, 72, 72},
      {"resize udp/ipv4 checksum zero larger, full", v4(18, L4Csum::zero), Op::resize, 10, kFull,
       resized(v4(18), 10, L4Csum::full), 52, 38, 18},
      {"resize udp/ipv4 checksum zero larger, none", v4(18, L4Csum::zero), Op::resize, 40, kNone,
       resized(v4(18), 40, L4Csum::zero), 82, 68, 48},
      {"resize udp/ipv4 partial smaller, full", v4(18, L4Csum::partial), Op::resize, 9, kFull,
       resized(v4(18), 9, L4Csum::full), 51, 37, 17},
      {"resize udp/ipv4 partial smaller, none", v4(18, L4Csum::partial), Op::resize, 9, kNone,
       resized(v4(18), 9, L4Csum::zero), 51, 37, 17},
      {"resize udp/ipv6 partial larger, none is full", v6(18, L4Csum::partial), Op::resize, 50,
       kNone, resized(v6(18), 50, L4Csum::full), 112, 58, 58},
      {"resize drops Ethernet padding (same size)", padded(v4(2), 60), Op::resize, 2, kFull,
       resized(v4(2), 2, L4Csum::full), 44, 30, 10},
      {"resize drops Ethernet padding (larger, within the padding)", padded(v4(2), 60), Op::resize,
       6, kNone, resized(v4(2), 6, L4Csum::zero), 48, 34, 14},
      {"resize drops Ethernet padding (past the padding)", padded(v4(2), 60), Op::resize, 40, kFull,
       resized(v4(2), 40, L4Csum::full), 82, 68, 48},
      {"resize drops Ethernet padding, udp/ipv6 in 802.1Q", padded(vlan(v6(2)), 100), Op::resize,
       10, kFull, resized(vlan(v6(2)), 10, L4Csum::full), 76, 18, 18},

      // a whole echo reply: swap, resize, finish
      {"echo udp/ipv4 partial, shorter reply", v4(18, L4Csum::partial), Op::echo, 5, kFull,
       swapped(resized(v4(18), 5, L4Csum::full)), 47, 33, 13},
      {"echo udp/ipv6 in 802.1Q partial, longer reply", vlan(v6(18, L4Csum::partial)), Op::echo, 77,
       kNone, swapped(resized(vlan(v6(18)), 77, L4Csum::full)), 143, 85, 85},
      {"echo udp/ipv4 with options padded, no checksum", padded(opts(v4(1)), 60), Op::echo, 3,
       kNone, swapped(resized(opts(v4(1)), 3, L4Csum::zero)), 53, 39, 11},

      // set_ttl
      {"ttl udp/ipv4 64 -> 1", v4(18), Op::ttl, 1, kFull, ttl(v4(18), 1), 60, 46, 26},
      {"ttl udp/ipv4 64 -> 255", v4(18), Op::ttl, 255, kFull, ttl(v4(18), 255), 60, 46, 26},
      {"ttl udp/ipv4 64 -> 0", v4(18), Op::ttl, 0, kFull, ttl(v4(18), 0), 60, 46, 26},
      {"ttl udp/ipv4 same", v4(18), Op::ttl, 64, kFull, v4(18), 60, 46, 26},
      {"ttl udp/ipv4 with options 1 -> 17", ttl(opts(v4(18)), 1), Op::ttl, 17, kFull,
       ttl(opts(v4(18)), 17), 68, 54, 26},
      {"ttl udp/ipv4 in 802.1Q 255 -> 128", ttl(vlan(v4(18)), 255), Op::ttl, 128, kFull,
       ttl(vlan(v4(18)), 128), 64, 46, 26},
      {"ttl udp/ipv4 checksum zero", csum(v4(18), L4Csum::zero), Op::ttl, 9, kFull,
       ttl(csum(v4(18), L4Csum::zero), 9), 60, 46, 26},
      {"ttl tcp/ipv4", tcp(v4(10)), Op::ttl, 3, kFull, ttl(tcp(v4(10)), 3), 64, 50, 0},
      {"hop limit udp/ipv6", v6(30), Op::ttl, 1, kFull, ttl(v6(30), 1), 92, 38, 38},
      {"hop limit udp/ipv6 in 802.1Q partial", vlan(v6(30, L4Csum::partial)), Op::ttl, 200, kFull,
       ttl(vlan(v6(30, L4Csum::partial)), 200), 96, 38, 38, true},
  };
  return c;
}

class ReplyTable : public ::testing::TestWithParam<size_t> {};

TEST_P(ReplyTable, Transforms) {
  const ReplyCase& c = cases()[GetParam()];
  SCOPED_TRACE(c.description);
  auto pool = BufferPool::create(4);
  ASSERT_TRUE(pool) << pool.error();
  Packet* p = test::make_packet(**pool, test::build_frame(c.in));
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(to_string(parse(*p)), "ok");
  // Stale bytes past the frame must not leak into a grown reply unnoticed.
  std::memset(p->data() + p->len, 0xa5, p->tailroom());

  const bool v4_in = c.in.ip_version == 4;
  auto resize = [&] {
    const uint32_t old = p->hdr.payload_len;
    ASSERT_TRUE(reply::set_payload_len(*p, c.arg));
    EXPECT_EQ(p->hdr.payload_len, c.arg);
    EXPECT_EQ(p->len, c.frame_len);
    // The IPv4 header checksum is already right (incrementally), before finish_udp.
    if (v4_in) ExpectIpv4ChecksumFromScratch(p->l3());
    for (uint32_t i = old; i < c.arg; ++i) p->payload()[i] = pat(i);  // the new bytes
    reply::finish_udp(*p, c.mode);
    EXPECT_FALSE(p->hdr.l4_csum_partial);
  };
  switch (c.op) {
    case Op::swap:
      reply::swap_addresses(*p);
      break;
    case Op::swap_finish:
      reply::swap_addresses(*p);
      reply::finish_udp(*p, c.mode);
      EXPECT_FALSE(p->hdr.l4_csum_partial);
      break;
    case Op::resize:
      resize();
      break;
    case Op::echo:
      reply::swap_addresses(*p);
      resize();
      break;
    case Op::ttl:
      reply::set_ttl(*p, static_cast<uint8_t>(c.arg));
      break;
  }
  if (::testing::Test::HasFatalFailure()) return;

  const Bytes out = test::bytes_of(*p);
  const Bytes want = test::build_frame(c.want);
  EXPECT_TRUE(SameBytes(out, want));

  // Lengths, read from the output bytes.
  EXPECT_EQ(out.size(), c.frame_len);
  const size_t l3 = l3_of(out);
  EXPECT_EQ(l3, c.in.vlan ? 18u : 14u);
  size_t l4;
  if (v4_in) {
    EXPECT_EQ(net::load16(&out[l3 + net::ip4::total_len]), c.l3_len);
    l4 = l3 + (out[l3] & 0x0f) * 4u;
    ExpectIpv4ChecksumFromScratch(&out[l3]);
    EXPECT_EQ(out[l3 + net::ip4::ttl], c.want.ttl);
  } else {
    EXPECT_EQ(net::load16(&out[l3 + net::ip6::payload_len]), c.l3_len);
    l4 = l3 + net::kIPv6Hdr;
    EXPECT_EQ(out[l3 + net::ip6::hop], c.want.ttl);
  }
  if (c.in.proto == net::kProtoUdp) {
    EXPECT_EQ(net::load16(&out[l4 + net::udp::len]), c.udp_len);
    const uint16_t field = net::load16(&out[l4 + net::udp::csum]);
    if (c.want.l4csum == L4Csum::zero) {
      EXPECT_EQ(field, 0);
    } else {
      EXPECT_NE(field, 0);  // IPv6 always, IPv4 when a checksum was asked for
    }
  }

  // Checksums, recomputed from scratch by the reference implementation.
  EXPECT_TRUE(test::ref_ip_ok(out));
  if (!c.partial_after) {
    EXPECT_TRUE(test::ref_l4_ok(out));
  }

  // The reply is a well-formed frame the parser accepts as such.
  Packet* q = test::make_packet(**pool, out);
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(to_string(parse(*q)), "ok");
  EXPECT_EQ(q->hdr.payload_len, c.want.payload.size());
  EXPECT_EQ(q->hdr.l4_csum_partial, c.partial_after);
}

INSTANTIATE_TEST_SUITE_P(Frames, ReplyTable, ::testing::Range<size_t>(0, cases().size()),
                         [](const auto& info) {
                           std::string n = cases()[info.param].description;
                           for (char& ch : n)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

// --- set_payload_len that does not fit --------------------------------------------------

struct Snapshot {
  Bytes buffer;  // the whole kFrameSize buffer
  uint16_t data_off, len;
  HeaderOffsets hdr;
};
Snapshot snap(const Packet& p) {
  return {Bytes(p.frame, p.frame + kFrameSize), p.data_off, p.len, p.hdr};
}
void ExpectUnchanged(const Snapshot& s, const Packet& p) {
  EXPECT_TRUE(SameBytes(Bytes(p.frame, p.frame + kFrameSize), s.buffer));
  EXPECT_EQ(p.data_off, s.data_off);
  EXPECT_EQ(p.len, s.len);
  EXPECT_EQ(p.hdr.l3, s.hdr.l3);
  EXPECT_EQ(p.hdr.l4, s.hdr.l4);
  EXPECT_EQ(p.hdr.payload, s.hdr.payload);
  EXPECT_EQ(p.hdr.payload_len, s.hdr.payload_len);
  EXPECT_EQ(p.hdr.l3_proto, s.hdr.l3_proto);
  EXPECT_EQ(p.hdr.l4_proto, s.hdr.l4_proto);
  EXPECT_EQ(p.hdr.vlan, s.hdr.vlan);
  EXPECT_EQ(p.hdr.l4_csum_partial, s.hdr.l4_csum_partial);
}

// Places `frame` at `data_off` in a fresh packet and parses it.
Packet* packet_at(BufferPool& pool, const Bytes& frame, uint16_t data_off) {
  Packet* p = pool.alloc();
  if (p == nullptr) return nullptr;
  std::memset(p->frame, 0x5c, kFrameSize);
  p->data_off = data_off;
  p->len = static_cast<uint16_t>(frame.size());
  std::memcpy(p->data(), frame.data(), frame.size());
  if (parse(*p) != ParseResult::ok) return nullptr;
  return p;
}

struct FitCase {
  std::string description;
  FrameSpec in;
  uint16_t data_off;
};

TEST(ReplySetPayloadLen, ThatDoesNotFitReturnsFalseAndChangesNothing) {
  const std::vector<FitCase> cases = {
      {"udp/ipv4", v4(18), kHeadroom},
      {"udp/ipv4 with options", opts(v4(18)), kHeadroom},
      {"udp/ipv4 in 802.1Q", vlan(v4(18)), kHeadroom},
      {"udp/ipv4 padded", padded(v4(1), 60), kHeadroom},
      {"udp/ipv6", v6(30), kHeadroom},
      {"udp/ipv6 in 802.1Q partial", vlan(v6(30, L4Csum::partial)), kHeadroom},
      {"udp/ipv4, no headroom", v4(18), 0},
      {"udp/ipv6, little headroom", v6(30), 64},
      {"udp/ipv4, much headroom", v4(18), 1500},
  };
  auto pool = BufferPool::create(4);
  ASSERT_TRUE(pool) << pool.error();
  for (const FitCase& c : cases) {
    SCOPED_TRACE(c.description);
    const Bytes frame = test::build_frame(c.in);
    Packet* p = packet_at(**pool, frame, c.data_off);
    ASSERT_NE(p, nullptr);
    const uint32_t max = kFrameSize - c.data_off - p->hdr.payload;
    const Snapshot before = snap(*p);
    for (uint32_t n : {max + 1, max + 2, max + 1000, uint32_t{0xffff}, uint32_t{0x10000},
                       uint32_t{0x10007}, uint32_t{0x7fffffff}}) {
      SCOPED_TRACE(n);
      EXPECT_FALSE(reply::set_payload_len(*p, n));
      ExpectUnchanged(before, *p);
    }
    // The largest payload that fits ends exactly at the end of the buffer.
    ASSERT_TRUE(reply::set_payload_len(*p, max));
    EXPECT_EQ(p->tailroom(), 0u);
    EXPECT_EQ(p->data_off + p->len, kFrameSize);
    reply::finish_udp(*p);
    const Bytes out = test::bytes_of(*p);
    EXPECT_TRUE(test::ref_ip_ok(out));
    EXPECT_TRUE(test::ref_l4_ok(out));
    (*pool)->free(p);
  }
}

// Lengths so large that `payload offset + n` or `8 + n` wraps around 32 bits must be
// refused like any other length that does not fit.
TEST(ReplySetPayloadLen, HugeLengthsDoNotWrapAround) {
  auto pool = BufferPool::create(2);
  ASSERT_TRUE(pool) << pool.error();
  for (const FrameSpec& s : {v4(18), v6(30)}) {
    SCOPED_TRACE(s.ip_version == 4 ? "udp/ipv4" : "udp/ipv6");
    const uint32_t payload_off = s.ip_version == 4 ? 42 : 62;
    for (uint32_t n : {UINT32_MAX, UINT32_MAX - 7, UINT32_MAX - 8, UINT32_MAX - payload_off,
                       UINT32_MAX - payload_off + 1, UINT32_MAX - payload_off + 8}) {
      SCOPED_TRACE(n);
      Packet* p = test::make_packet(**pool, test::build_frame(s));  // a fresh one each time
      ASSERT_NE(p, nullptr);
      ASSERT_EQ(parse(*p), ParseResult::ok);
      ASSERT_EQ(p->hdr.payload, payload_off);
      const Snapshot before = snap(*p);
      EXPECT_FALSE(reply::set_payload_len(*p, n));
      ExpectUnchanged(before, *p);
      (*pool)->free(p);
    }
  }
}

TEST(ReplySetPayloadLen, RefusesTcp) {
  auto pool = BufferPool::create(1);
  ASSERT_TRUE(pool) << pool.error();
  Packet* p = test::make_packet(**pool, test::build_frame(tcp(v4(10))));
  ASSERT_EQ(parse(*p), ParseResult::ok);
  const Snapshot before = snap(*p);
  EXPECT_FALSE(reply::set_payload_len(*p, 4));
  ExpectUnchanged(before, *p);
}

// --- finish_udp -------------------------------------------------------------------------

TEST(ReplyFinishUdp, NoneOnIPv6StillWritesAFullChecksum) {
  auto pool = BufferPool::create(1);
  ASSERT_TRUE(pool) << pool.error();
  for (L4Csum in : {L4Csum::full, L4Csum::partial}) {
    Packet* p = test::make_packet(**pool, test::build_frame(v6(25, in)));
    ASSERT_EQ(parse(*p), ParseResult::ok);
    reply::finish_udp(*p, UdpChecksum::none);
    const Bytes out = test::bytes_of(*p);
    EXPECT_NE(net::load16(p->l4() + net::udp::csum), 0);
    EXPECT_TRUE(test::ref_l4_ok(out));
    EXPECT_TRUE(SameBytes(out, test::build_frame(v6(25))));
    (*pool)->free(p);
  }
}

// A computed UDP checksum of 0 is sent as 0xffff (RFC 768; 0 would mean "none" on IPv4 and
// is invalid on IPv6). The payload is chosen so the one's-complement sum is 0xffff.
TEST(ReplyFinishUdp, ComputedZeroIsSentAsFFFF) {
  auto pool = BufferPool::create(1);
  ASSERT_TRUE(pool) << pool.error();
  for (FrameSpec s : {v4(4), v6(4), vlan(opts(v4(4)))}) {
    s.payload = {0, 0, 0, 0};
    const Bytes zero_payload = test::build_frame(s);
    const size_t l4 =
        l3_of(zero_payload) + (s.ip_version == 4 ? 20 + s.ip_options.size() : net::kIPv6Hdr);
    // With these two bytes equal to the checksum of the zero payload, the sum is 0xffff.
    const uint16_t c0 = net::load16(&zero_payload[l4 + net::udp::csum]);
    ASSERT_NE(c0, 0xffff);
    s.payload = {0, 0, uint8_t(c0 >> 8), uint8_t(c0)};
    const Bytes want = test::build_frame(s);
    ASSERT_EQ(net::load16(&want[l4 + net::udp::csum]), 0xffff);

    Packet* p = test::make_packet(**pool, zero_payload);
    ASSERT_EQ(parse(*p), ParseResult::ok);
    p->payload()[2] = uint8_t(c0 >> 8);
    p->payload()[3] = uint8_t(c0);
    reply::finish_udp(*p, UdpChecksum::full);
    EXPECT_EQ(net::load16(p->l4() + net::udp::csum), 0xffff);
    EXPECT_TRUE(SameBytes(test::bytes_of(*p), want));
    EXPECT_TRUE(test::ref_l4_ok(test::bytes_of(*p)));
    (*pool)->free(p);
  }
}

// --- incremental IPv4 header checksum over many updates ---------------------------------

TEST(ReplyIncremental, IPv4HeaderChecksumNeverDriftsOverManyUpdates) {
  auto pool = BufferPool::create(1);
  ASSERT_TRUE(pool) << pool.error();
  std::mt19937 rng(20240611);
  for (const FrameSpec& s : {v4(18), opts(v4(0)), vlan(v4(200))}) {
    Packet* p = test::make_packet(**pool, test::build_frame(s));
    ASSERT_EQ(parse(*p), ParseResult::ok);
    const uint32_t max = kFrameSize - p->data_off - p->hdr.payload;
    for (int step = 0; step < 2000; ++step) {
      if (rng() % 2) {
        const uint8_t t = static_cast<uint8_t>(rng());
        reply::set_ttl(*p, t);
        ASSERT_EQ(p->l3()[net::ip4::ttl], t);
      } else {
        const uint32_t n = rng() % (max + 1);
        ASSERT_TRUE(reply::set_payload_len(*p, n));
        ASSERT_EQ(uint32_t{net::load16(p->l3() + net::ip4::total_len)},
                  uint32_t{p->hdr.payload} - p->hdr.l3 + n);
      }
      ExpectIpv4ChecksumFromScratch(p->l3());
      if (::testing::Test::HasFailure()) FAIL() << "at step " << step;
    }
    reply::finish_udp(*p);
    EXPECT_TRUE(test::ref_ip_ok(test::bytes_of(*p)));
    EXPECT_TRUE(test::ref_l4_ok(test::bytes_of(*p)));
    (*pool)->free(p);
  }
}

// --- checksum primitives ----------------------------------------------------------------

// A random 20-byte header with a correct checksum; with `force_zero`, its checksum is 0
// (the one's-complement sum of the rest is 0xffff), the edge case of RFC 1624.
// Half of the words are extreme values, where end-around carries happen.
uint16_t random_word(std::mt19937& rng) {
  static constexpr uint16_t kEdges[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0xfffe, 0xffff};
  return rng() % 2 ? kEdges[rng() % 6] : static_cast<uint16_t>(rng());
}
Bytes random_header(std::mt19937& rng, bool force_zero) {
  Bytes h(20);
  for (size_t w = 0; w < 10; ++w) net::store16(&h[2 * w], random_word(rng));
  h[net::ip4::csum] = h[net::ip4::csum + 1] = 0;
  if (force_zero) {
    h[18] = h[19] = 0;
    const uint16_t c = test::ref_checksum(h.data(), h.size());  // ~sum of the rest
    net::store16(&h[18], c);  // now the sum is 0xffff and the checksum 0
  }
  net::store16(&h[net::ip4::csum], test::ref_checksum(h.data(), h.size()));
  return h;
}

TEST(Checksum, Update16MatchesARecomputationOnRandomHeaders) {
  std::mt19937 rng(1624);
  int zero_checksums = 0;
  for (int i = 0; i < 20000; ++i) {
    Bytes h = random_header(rng, i % 10 == 0);
    const uint16_t old_csum = net::load16(&h[net::ip4::csum]);
    ASSERT_EQ(test::ref_checksum(h.data(), h.size()), 0);  // the header verifies
    if (old_csum == 0) ++zero_checksums;
    size_t word = rng() % 9;
    if (word >= 5) ++word;  // any 16-bit word but the checksum itself
    const uint16_t old_word = net::load16(&h[word * 2]);
    uint16_t new_word = random_word(rng);
    switch (i % 7) {
      case 0:
        new_word = old_word;
        break;
      case 1:
        new_word = 0;
        break;
      case 2:
        new_word = 0xffff;
        break;
      default:
        break;
    }
    const uint16_t got = csum::update16(old_csum, old_word, new_word);
    net::store16(&h[word * 2], new_word);
    net::store16(&h[net::ip4::csum], 0);
    const uint16_t want = test::ref_checksum(h.data(), h.size());
    ASSERT_EQ(got, want) << "case " << i << ": word " << word << " 0x" << std::hex << old_word
                         << " -> 0x" << new_word << ", old checksum 0x" << old_csum;
    // And the header verifies with the updated field in place.
    net::store16(&h[net::ip4::csum], got);
    ASSERT_EQ(test::ref_checksum(h.data(), h.size()), 0) << "case " << i;
  }
  EXPECT_GE(zero_checksums, 2000);  // the edge case was exercised
}

TEST(Checksum, Update16OnAHeaderWhoseNewChecksumIsZero) {
  // Change a word so that the new sum becomes 0xffff: the checksum must become 0x0000
  // (a from-scratch computation never gives 0xffff for a non-zero header).
  std::mt19937 rng(7);
  for (int i = 0; i < 1000; ++i) {
    Bytes h = random_header(rng, false);
    const uint16_t old_csum = net::load16(&h[net::ip4::csum]);
    const uint16_t old_word = net::load16(&h[18]);
    Bytes z = h;
    z[18] = z[19] = 0;
    z[net::ip4::csum] = z[net::ip4::csum + 1] = 0;
    const uint16_t new_word = test::ref_checksum(z.data(), z.size());
    EXPECT_EQ(csum::update16(old_csum, old_word, new_word), 0) << "case " << i;
  }
}

TEST(Checksum, PartialMatchesTheReferenceOnOddLengthsAndUnalignedBuffers) {
  std::mt19937 rng(1071);
  alignas(64) static uint8_t buf[70000 + 64];
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 130; ++n) lengths.push_back(n);
  for (size_t n : {255, 256, 257, 1023, 1499, 1500, 1501, 9001, 65535, 65536, 65537, 70000})
    lengths.push_back(n);
  for (size_t off = 0; off < 64; off += (off < 16 ? 1 : 7)) {
    for (size_t n : lengths) {
      const uint8_t* d = buf + off;
      ASSERT_EQ(static_cast<uint16_t>(~csum::fold(csum::partial(d, n))), test::ref_checksum(d, n))
          << "offset " << off << ", length " << n;
      // With a starting sum, as the pseudo-header is passed in.
      const uint32_t init = static_cast<uint32_t>(rng() % 0x3ffff);
      ASSERT_EQ(static_cast<uint16_t>(~csum::fold(csum::partial(d, n, init))),
                test::ref_checksum(d, n, init))
          << "offset " << off << ", length " << n << ", initial " << init;
      // Chained over an even split, as headers then payload are summed.
      const size_t k = (n / 2) & ~size_t{1};
      ASSERT_EQ(csum::fold(csum::partial(d + k, n - k, csum::partial(d, k))),
                csum::fold(csum::partial(d, n)))
          << "offset " << off << ", length " << n << ", split " << k;
    }
  }
}

TEST(Checksum, PartialCarriesOnAllOnesAndHighBytes) {
  // Worst cases for carries: every byte 0xff (sum of 0xffff words), and 0x80 patterns.
  std::vector<uint8_t> ones(70016, 0xff), high(70016, 0x80);
  for (size_t off : {0, 1, 3, 5}) {
    for (size_t n : {1, 2, 3, 15, 16, 17, 31, 33, 4096, 65535, 65536, 70000}) {
      for (const auto* v : {&ones, &high}) {
        const uint8_t* d = v->data() + off;
        ASSERT_EQ(static_cast<uint16_t>(~csum::fold(csum::partial(d, n))), test::ref_checksum(d, n))
            << "offset " << off << ", length " << n << ", byte 0x" << std::hex << int(d[0]);
      }
    }
  }
}

TEST(Checksum, Ipv4HeaderMatchesTheReference) {
  std::mt19937 rng(791);
  for (int i = 0; i < 1000; ++i) {
    Bytes h(20 + 4 * (rng() % 11));
    for (auto& b : h) b = static_cast<uint8_t>(rng());
    h[net::ip4::csum] = h[net::ip4::csum + 1] = 0;
    ASSERT_EQ(csum::ipv4_header(h.data(), h.size()), test::ref_checksum(h.data(), h.size()));
  }
}

}  // namespace
}  // namespace gaon
