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

// Where set s and slot i are, in bytes from the table's start.
uint64_t set_at(uint32_t s) {
  uint32_t c, off;
  kv_set_pos(s, &c, &off);
  return uint64_t(c) * GAON_FP_CHUNK + off;
}
uint64_t slot_at(const kv_table_hdr& h, uint32_t i, uint32_t* chunk = nullptr,
                 uint32_t* off = nullptr) {
  uint32_t c, o;
  kv_slot_pos(&h, i, &c, &o);
  if (chunk) *chunk = c;
  if (off) *off = o;
  return uint64_t(c) * GAON_FP_CHUNK + o;
}

TEST(KvTable, GeometryPacksSetsThenSlotsInsideChunksAndOutOfTheirSlack) {
  for (uint64_t cap : {uint64_t(4096), uint64_t(1) << 20, uint64_t(64) << 20, uint64_t(3) << 28}) {
    for (auto [k, v] : {std::pair{250u, 1000u}, std::pair{16u, 32u}, std::pair{250u, 1360u}}) {
      auto g = Table::geometry(cap, k, v);
      if (!g) {
        EXPECT_LT(cap, 64u * 1024) << g.error();
        continue;
      }
      EXPECT_EQ(g->slot_bytes % 64, 0u);
      EXPECT_LE(g->slot_bytes, uint32_t(KV_SLOT_MAX));
      EXPECT_EQ(g->nsets & (g->nsets - 1), 0u);
      EXPECT_LE(uint64_t(g->nslots) * g->slot_bytes, cap);
      EXPECT_GE(uint64_t(g->nsets) * KV_WAYS, 2 * uint64_t(g->nslots)) << "sets half full";
      EXPECT_LT(uint64_t(g->nsets) * KV_WAYS, 8 * uint64_t(g->nslots) + 8) << "not emptier";
      const kv_table_hdr h = Table::header(*g, 0);
      const uint64_t sets_end = set_at(g->nsets - 1) + sizeof(kv_set);
      EXPECT_EQ(set_at(0), uint64_t(KV_SETS_OFF));
      EXPECT_LE(sets_end, slot_at(h, 0)) << "slots after the sets";
      uint64_t prev = 0;
      for (uint32_t i = 0; i < g->nslots; i += 1 + i / 7) {
        uint32_t c, off;
        const uint64_t a = slot_at(h, i, &c, &off);
        EXPECT_LE(off + g->slot_bytes, GAON_FP_CHUNK - KV_CHUNK_SLACK) << i;
        EXPECT_LT(c, g->chunks);
        if (i) {
          EXPECT_GE(a, prev + g->slot_bytes) << "slots do not overlap";
        }
        prev = a;
      }
      EXPECT_EQ(slot_at(h, g->nslots - 1) + g->slot_bytes, g->bytes);
      EXPECT_EQ(slot_at(h, g->nslots - 1) / GAON_FP_CHUNK + 1, g->chunks);
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

// Keys named prefix + number whose set is set 0 of a table of `nsets`.
std::vector<std::string> keys_of_set0(uint32_t nsets, size_t n) {
  std::vector<std::string> keys;
  for (int i = 0; keys.size() < n; ++i) {
    std::string k = "k" + std::to_string(i);
    if ((Table::hash(k) & (nsets - 1)) == 0) keys.push_back(k);
  }
  return keys;
}

TEST(KvTable, AFullSetEvictsByClockSparingRecentlyHitEntries) {
  auto g = *Table::geometry(1 << 20, 16, 16);
  ASSERT_GT(g.nslots, uint32_t(2 * KV_WAYS)) << "free slots left: only the set is full";
  Mem m(g);
  Table t;
  t.lay_out(m.data(), g, 0);
  const std::vector<std::string> keys = keys_of_set0(g.nsets, KV_WAYS + 1);
  for (int i = 0; i < KV_WAYS; ++i) t.insert(Table::hash(keys[i]), keys[i], {"v"}, UINT64_MAX);
  EXPECT_EQ(t.items(), uint64_t(KV_WAYS));
  EXPECT_NE(t.find(Table::hash(keys[0]), keys[0], 1), nullptr);  // recently used
  t.insert(Table::hash(keys[KV_WAYS]), keys[KV_WAYS], {"v"}, UINT64_MAX);
  EXPECT_EQ(t.evictions(), 1u);
  EXPECT_EQ(t.items(), uint64_t(KV_WAYS));
  EXPECT_NE(t.find(Table::hash(keys[0]), keys[0], 1), nullptr) << "second chance";
  EXPECT_EQ(t.find(Table::hash(keys[1]), keys[1], 1), nullptr) << "CLOCK's victim";
  EXPECT_NE(t.find(Table::hash(keys[KV_WAYS]), keys[KV_WAYS], 1), nullptr);
}

// With every slot taken, a new entry takes CLOCK's victim over all slots; slots are handed
// out lowest first and the last freed is reused first, so the live ones stay packed.
TEST(KvTable, WithNoFreeSlotTheClockOverAllSlotsEvictsAndSlotsStayPacked) {
  auto g = *Table::geometry(64 * 1024, 16, 16);
  Mem m(g);
  Table t;
  t.lay_out(m.data(), g, 0);
  // Keys whose sets never fill (so only the CLOCK over all slots evicts), and three more
  // for sets with room to spare.
  std::vector<std::string> keys, spare;
  std::vector<int> in_set(g.nsets);
  for (int j = 0; keys.size() < g.nslots || spare.size() < 3; ++j) {
    std::string k = "key" + std::to_string(j);
    int& n = in_set[Table::hash(k) & (g.nsets - 1)];
    if (keys.size() < g.nslots && n < KV_WAYS) {
      ++n;
      keys.push_back(k);
    } else if (keys.size() == g.nslots && n < KV_WAYS - 3) {
      n = KV_WAYS;  // one spare key per set
      spare.push_back(k);
    }
  }
  auto key = [&](uint32_t i) { return keys[i]; };
  const auto& hdr = *reinterpret_cast<const kv_table_hdr*>(m.data());
  const auto* first = reinterpret_cast<const kv_slot*>(m.data() + slot_at(hdr, 0));
  for (uint32_t i = 0; i < g.nslots; ++i) {
    t.insert(Table::hash(key(i)), key(i), {"v"}, UINT64_MAX);
    const kv_slot* s = t.find(Table::hash(key(i)), key(i), 1);
    ASSERT_EQ(reinterpret_cast<const uint8_t*>(s), m.data() + slot_at(hdr, i)) << "slot " << i;
  }
  ASSERT_EQ(t.items(), uint64_t(g.nslots));
  ASSERT_EQ(t.evictions(), 0u) << "the sets had room for every slot's entry";
  // Every entry was just hit (find): the first round clears the bits, the second evicts
  // slot 0's entry, the first one the hand meets again.
  t.insert(Table::hash(spare[0]), spare[0], {"v"}, UINT64_MAX);
  EXPECT_EQ(t.evictions(), 1u);
  EXPECT_EQ(t.items(), uint64_t(g.nslots));
  EXPECT_EQ(t.find(Table::hash(key(0)), key(0), 1), nullptr) << "CLOCK's victim";
  EXPECT_EQ(t.find(Table::hash(spare[0]), spare[0], 1), first) << "in the slot it freed";
  // Now key(1)'s bit is clear (the round cleared it) and key(2)'s too: key(1) goes next.
  EXPECT_NE(t.find(Table::hash(key(2)), key(2), 1), nullptr);
  t.insert(Table::hash(spare[1]), spare[1], {"v"}, UINT64_MAX);
  EXPECT_EQ(t.find(Table::hash(key(1)), key(1), 1), nullptr);
  EXPECT_NE(t.find(Table::hash(key(2)), key(2), 1), nullptr) << "hit since: spared";
  // An entry that leaves frees its slot for the next one.
  const kv_slot* s5 = t.find(Table::hash(key(5)), key(5), 1);
  ASSERT_TRUE(t.invalidate(Table::hash(key(5))));
  t.insert(Table::hash(spare[2]), spare[2], {"v"}, UINT64_MAX);
  EXPECT_EQ(t.find(Table::hash(spare[2]), spare[2], 1), s5);
  EXPECT_EQ(t.evictions(), 2u);
  // A flush frees them all: the next entry is in slot 0 again.
  t.drop_all();
  t.insert(Table::hash("x"), "x", {"v"}, UINT64_MAX);
  EXPECT_EQ(t.find(Table::hash("x"), "x", 1), first);
  EXPECT_EQ(t.items(), 1u);
}

// kv_slot_pos divides by a multiply: the same chunk and offset as dividing, for every slot
// size's slots per chunk, at the ends of the range and around every chunk boundary.
TEST(KvTable, SlotPositionsByMultiplyAreThoseByDivision) {
  for (uint32_t value : {1u, 64u, 200u, 1000u, 1360u}) {
    auto g = Table::geometry(uint64_t(1) << 40, 250, value);
    ASSERT_TRUE(g) << g.error();
    const kv_table_hdr h = Table::header(*g, 0);
    const uint32_t d = g->slots_chunk, n = g->nslots;
    std::vector<uint32_t> is = {0, 1, d - 1, d, d + 1, n - 1, n - d};
    for (uint32_t c = 1; c < n / d; c = c * 3 + 1)
      for (uint32_t e : {c * d - 1, c * d, c * d + 1}) is.push_back(e);
    for (uint32_t i : is) {
      uint32_t chunk, off;
      kv_slot_pos(&h, i, &chunk, &off);
      const uint32_t v = i + g->slots_skip;
      ASSERT_EQ(chunk, g->slots_first + v / d) << "i=" << i << " d=" << d;
      ASSERT_EQ(off, (v % d) * g->slot_bytes) << "i=" << i << " d=" << d;
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
