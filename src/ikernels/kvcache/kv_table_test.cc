// kvcache's item table on its own (kv_table.h): geometry, the layout the fast path reads
// (kv_abi.h), lookups, replacement, CLOCK eviction, invalidation, generations, the seen
// bits and the sequence counters.
#include "kv_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <vector>

namespace gaon::kv {
namespace {

struct Mem {
  explicit Mem(const Geometry& g) : words((size_t(g.chunks) * GAON_FP_CHUNK) / 8) {}
  uint8_t* data() { return reinterpret_cast<uint8_t*>(words.data()); }
  std::vector<uint64_t> words;
};

// The header lay_out writes for `g` (it writes nothing else before a table is used).
kv_table_hdr header_of(const Geometry& g) {
  std::vector<uint8_t> mem(KV_HDR_BYTES);
  Table t;
  t.lay_out(mem.data(), g, 0);
  return *reinterpret_cast<const kv_table_hdr*>(mem.data());
}

TEST(KvTable, GeometryKeepsSetsInsideChunksAndOutOfTheirSlack) {
  for (uint64_t cap : {uint64_t(4096), uint64_t(1) << 20, uint64_t(64) << 20, uint64_t(3) << 28}) {
    for (auto [k, v] : {std::pair{250u, 1000u}, std::pair{16u, 32u}, std::pair{250u, 1360u}}) {
      auto g = Table::geometry(cap, k, v);
      if (!g) {
        EXPECT_LT(cap, 64u * 1024) << g.error();
        continue;
      }
      EXPECT_EQ(g->slot_bytes % 64, 0u);
      EXPECT_LE(g->slot_bytes, uint32_t(KV_SLOT_MAX));
      EXPECT_LE(uint64_t(g->nsets) * g->set_bytes, cap);
      EXPECT_GT(uint64_t(g->nsets + 1) * g->set_bytes, cap) << "the capacity used whole";
      const kv_table_hdr h = header_of(*g);
      uint32_t last_chunk = 0;
      for (uint32_t s = 0; s < g->nsets; s += 1 + s / 7) {
        uint32_t c, off;
        kv_set_pos(&h, s, &c, &off);
        EXPECT_LE(off + g->set_bytes, GAON_FP_CHUNK - KV_CHUNK_SLACK) << s;
        if (c == 0) {
          EXPECT_GE(off, uint32_t(KV_SETS_OFF));
        }
        EXPECT_LT(c, g->chunks);
        last_chunk = std::max(last_chunk, c);
      }
      uint32_t c, off;
      kv_set_pos(&h, g->nsets - 1, &c, &off);
      EXPECT_EQ(c + 1, g->chunks);
      EXPECT_EQ(size_t(c) * GAON_FP_CHUNK + off + g->set_bytes, g->bytes);
    }
  }
  EXPECT_FALSE(Table::geometry(1 << 20, 251, 100));
  EXPECT_FALSE(Table::geometry(100, 16, 16));
}

TEST(KvTable, AnEntryHoldsMemcachedsReplyTextAndIsFoundByItsKey) {
  auto g = *Table::geometry(1 << 20, 250, 1000);
  Mem m(g);
  Table t;
  t.lay_out(m.data(), g, KV_F_UDP_CSUM, 7);
  const auto* hdr = reinterpret_cast<const kv_table_hdr*>(m.data());
  EXPECT_EQ(hdr->magic, KV_ABI_MAGIC);
  EXPECT_EQ(hdr->generation, 7u);
  EXPECT_EQ(hdr->flags, KV_F_UDP_CSUM);
  EXPECT_EQ(hdr->nsets, g.nsets);
  const uint64_t h = Table::hash("foo");
  t.insert(h, "foo", {"bar", 42, 77, true}, UINT64_MAX);
  const kv_slot* s = t.find(h, "foo", 1);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(Table::key(*s), "foo");
  EXPECT_EQ(Table::value(*s), "bar");
  EXPECT_EQ(s->seq, 2u) << "one write: odd, then even";
  auto txt = Table::reply_text(*s, true, true);
  EXPECT_EQ(std::string(txt.head) + std::string(txt.tail), "VALUE foo 42 3 77\r\nbar\r\nEND\r\n");
  txt = Table::reply_text(*s, false, false);
  EXPECT_EQ(std::string(txt.head) + std::string(txt.tail), "VALUE foo 42 3\r\nbar\r\n");
  EXPECT_EQ(t.find(h, "fop", 1), nullptr) << "same hash, another key";
  EXPECT_EQ(t.items(), 1u);
  EXPECT_EQ(t.bytes_used(), 6u);
  t.insert(h, "foo", {"bazz", 1, 0, false}, UINT64_MAX);  // replaces it in place
  EXPECT_EQ(t.items(), 1u);
  s = t.find(h, "foo", 1);
  EXPECT_EQ(std::string(Table::reply_text(*s, true, true).head), "VALUE foo 1 4")
      << "no cas text without a cas";
  EXPECT_EQ(s->seq, 6u) << "left (2 steps) and written again (2 steps)";
}

TEST(KvTable, ExpiryInvalidationAndFlushesEmptyItAndClearSeenBits) {
  auto g = *Table::geometry(1 << 20, 16, 32);
  Mem m(g);
  Table t;
  t.lay_out(m.data(), g, 0);
  const uint64_t a = Table::hash("a"), b = Table::hash("b");
  t.insert(a, "a", {"1"}, 100);
  t.insert(b, "b", {"2"}, UINT64_MAX);
  EXPECT_NE(t.find(a, "a", 99), nullptr);
  EXPECT_EQ(t.find(a, "a", 100), nullptr) << "expired";
  EXPECT_EQ(t.items(), 1u);
  EXPECT_FALSE(t.invalidate(a));
  EXPECT_TRUE(t.invalidate(b));
  EXPECT_EQ(t.items(), 0u);
  t.insert(a, "a", {"1"}, UINT64_MAX);
  auto* w = reinterpret_cast<uint64_t*>(m.data() + KV_SEEN_OFF);
  w[kv_seen_bit(a) / 64] |= uint64_t(1) << (kv_seen_bit(a) & 63);  // as the program does
  EXPECT_TRUE(t.seen(a));
  const uint64_t gen = t.generation();
  t.drop_all();
  EXPECT_EQ(t.generation(), gen + 1);
  EXPECT_EQ(t.find(a, "a", 1), nullptr);
  EXPECT_EQ(t.items(), 0u);
  EXPECT_FALSE(t.seen(a));
  t.insert(a, "a", {"1"}, UINT64_MAX);
  w[kv_seen_bit(a) / 64] |= uint64_t(1) << (kv_seen_bit(a) & 63);
  t.invalidate(a);
  EXPECT_FALSE(t.seen(a)) << "an entry that leaves makes its next GET reach gaond";
}

TEST(KvTable, AFullSetEvictsByClockSparingRecentlyHitEntries) {
  auto g = *Table::geometry(2000, 16, 16);  // one set
  ASSERT_EQ(g.nsets, 1u);
  Mem m(g);
  Table t;
  t.lay_out(m.data(), g, 0);
  std::vector<std::string> keys;
  for (int i = 0; i < KV_WAYS; ++i) {
    keys.push_back("k" + std::to_string(i));
    t.insert(Table::hash(keys.back()), keys.back(), {"v"}, UINT64_MAX);
  }
  EXPECT_EQ(t.items(), uint64_t(KV_WAYS));
  EXPECT_NE(t.find(Table::hash("k0"), "k0", 1), nullptr);  // k0 is recently used
  t.insert(Table::hash("new"), "new", {"v"}, UINT64_MAX);
  EXPECT_EQ(t.evictions(), 1u);
  EXPECT_EQ(t.items(), uint64_t(KV_WAYS));
  EXPECT_NE(t.find(Table::hash("k0"), "k0", 1), nullptr) << "second chance";
  EXPECT_EQ(t.find(Table::hash("k1"), "k1", 1), nullptr) << "CLOCK's victim";
  EXPECT_NE(t.find(Table::hash("new"), "new", 1), nullptr);
}

// kv_set_pos divides by a multiply: the same chunk and offset as dividing, for every slot
// size's sets per chunk, at the ends of the range and around every chunk boundary.
TEST(KvTable, SetPositionsByMultiplyAreThoseByDivision) {
  for (uint32_t value : {1u, 64u, 200u, 1000u, 1360u}) {
    auto g = Table::geometry(uint64_t(1) << 40, 250, value);
    ASSERT_TRUE(g) << g.error();
    const kv_table_hdr hdr = header_of(*g);
    const kv_table_hdr* h = &hdr;
    const uint32_t d = g->sets_chunk;
    std::vector<uint32_t> rs = {0, 1, d - 1, d, d + 1, (1u << 30) - 1, (1u << 30) - d};
    for (uint32_t c = 1; c < (1u << 30) / d; c = c * 3 + 1)
      for (uint32_t e : {c * d - 1, c * d, c * d + 1}) rs.push_back(e);
    for (uint32_t r : rs) {
      uint32_t chunk, off;
      kv_set_pos(h, g->sets_chunk0 + r, &chunk, &off);
      ASSERT_EQ(chunk, 1 + r / d) << "r=" << r << " d=" << d;
      ASSERT_EQ(off, (r % d) * g->set_bytes) << "r=" << r << " d=" << d;
    }
  }
}

TEST(KvTable, TheHashTakesTheKeyAWordAtATimeThenMurmursFinalizerAndIsNeverZero) {
  // "0123456789": one whole word, then "89" zero-padded; the length goes in first.
  uint64_t w0, w1 = 0;
  std::memcpy(&w0, "01234567", 8);
  std::memcpy(&w1, "89", 2);
  const uint64_t h = kv_hash_step(kv_hash_step(KV_HASH_INIT ^ 10, w0), w1);
  EXPECT_EQ(Table::hash("0123456789"), kv_hash_final(h));
  // The same words, another length: another hash (binary keys may end in zeros).
  EXPECT_NE(Table::hash(std::string_view("ab\0", 3)), Table::hash("ab"));
  EXPECT_NE(Table::hash("12345678"), Table::hash("123456780"));
  EXPECT_NE(Table::hash(""), 0u);
  EXPECT_EQ(kv_hash_final(0), 1u);
  // Keys that differ in one byte anywhere pick sets evenly enough: 4096 keys, 64 sets.
  std::array<int, 64> n{};
  for (int i = 0; i < 4096; ++i) ++n[Table::hash("key:" + std::to_string(100000 + i)) & 63];
  EXPECT_LT(*std::max_element(n.begin(), n.end()), 2 * 4096 / 64);
  EXPECT_GT(*std::min_element(n.begin(), n.end()), 4096 / 64 / 2);
}

}  // namespace
}  // namespace gaon::kv
