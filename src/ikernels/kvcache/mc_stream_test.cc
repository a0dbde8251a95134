// StreamScanner: memcached commands found in a TCP byte stream however it is split.
#include "kvcache/mc_stream.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "frames.h"

namespace gaon::kv {
namespace {

// "kind:key,key" for each command the scanner reports.
std::string describe(const Request& r) {
  static const char* kinds[] = {"get", "write", "flush", "read", "unknown"};
  std::string s = kinds[size_t(r.kind)];
  for (size_t i = 0; i < r.nkeys; ++i) s += (i ? "," : ":") + std::string(r.keys[i]);
  return s;
}

struct Fed {
  std::vector<std::string> cmds;
  bool ok = true;
};

// Feeds `stream` in pieces of `chunk` bytes (0: whole).
Fed scan(const std::string& stream, size_t chunk) {
  StreamScanner sc;
  Fed f;
  const auto* p = reinterpret_cast<const uint8_t*>(stream.data());
  size_t off = 0;
  while (off < stream.size()) {
    const size_t n = chunk ? std::min(chunk, stream.size() - off) : stream.size();
    f.ok = sc.feed({p + off, n}, [&](const Request& r) { f.cmds.push_back(describe(r)); });
    off += n;
  }
  return f;
}

TEST(StreamScanner, FindsEveryCommandHoweverTheStreamIsSplit) {
  const std::string stream =
      "set a 0 0 5\r\nhello\r\n"
      "get a\r\n"
      "set b 1 0 21\r\ndelete x\r\nflush_all\r\n\r\n"  // a data block that looks like commands
      "delete c\r\n"
      "incr d 1 noreply\r\n"
      "ms e 3 T10\r\nabc\r\n"
      "touch f 100\r\n"
      "gat 0 g h\r\n"
      "cas i 0 0 1 99\r\nz\r\n"
      "version\r\n" +
      test::mc_binreq(0x01, "j", std::string(8, '\0'), "value-of-j") +                // binary SET
      test::mc_binreq(0x00, "k") +                                                    // binary GET
      test::mc_binreq(0x14, "l") +                                                    // DELETEQ
      "append m 0 0 2\r\nxy\r\n" + test::mc_binreq(0x08, "", std::string(4, '\0')) +  // FLUSH
      "set n 0 0 0\r\n\r\n";
  const std::vector<std::string> want = {
      "write:a", "get:a", "write:b", "write:c", "write:d", "write:e", "write:f", "write:g,h",
      "write:i", "read",  "write:j", "get:k",   "write:l", "write:m", "flush",   "write:n"};
  for (size_t chunk : {0, 1, 2, 3, 5, 7, 13, 64}) {
    const Fed f = scan(stream, chunk);
    EXPECT_TRUE(f.ok) << chunk;
    EXPECT_EQ(f.cmds, want) << "chunks of " << chunk;
  }
}

TEST(StreamScanner, ACommandIsReportedWhenItsLineCompletesNotBefore) {
  StreamScanner sc;
  std::vector<std::string> seen;
  auto on = [&](const Request& r) { seen.push_back(describe(r)); };
  const std::string a = "dele", b = "te k", c = "ey\r", d = "\n";
  for (const auto* part : {&a, &b, &c}) {
    sc.feed({reinterpret_cast<const uint8_t*>(part->data()), part->size()}, on);
    EXPECT_TRUE(seen.empty());
  }
  sc.feed({reinterpret_cast<const uint8_t*>(d.data()), d.size()}, on);
  EXPECT_EQ(seen, std::vector<std::string>{"write:key"});
}

// A storage command is carried out by memcached once its data block is all there: it is
// reported then (its value's bytes may come long after its line), ASCII and binary alike.
TEST(StreamScanner, AStorageCommandIsReportedWhenItsDataBlockEnds) {
  const std::string bin = test::mc_binreq(0x01, "j", std::string(8, '\0'), "value");
  for (const std::string& cmd :
       {std::string("set key 0 0 5\r\nhello\r\n"), std::string("ms key 5 T10\r\nhello\r\n"), bin}) {
    StreamScanner sc;
    std::vector<std::string> seen;
    auto on = [&](const Request& r) { seen.push_back(describe(r)); };
    for (size_t i = 0; i + 1 < cmd.size(); ++i) {
      sc.feed({reinterpret_cast<const uint8_t*>(cmd.data()) + i, 1}, on);
      EXPECT_TRUE(seen.empty()) << "after byte " << i << " of " << cmd;
    }
    sc.feed({reinterpret_cast<const uint8_t*>(cmd.data()) + cmd.size() - 1, 1}, on);
    EXPECT_EQ(seen, std::vector<std::string>{cmd == bin ? "write:j" : "write:key"}) << cmd;
    EXPECT_EQ(sc.commands(), 1u);
  }
}

TEST(StreamScanner, WhatCannotBeFramedLosesTheStreamForGood) {
  struct Case {
    const char* what;
    std::string stream;
    std::vector<std::string> want;
  } cases[] = {
      {"a line longer than memcached takes", std::string(3000, 'a'), {"unknown"}},
      {"a storage command without its length", "set a 0 0\r\nhello\r\nget b\r\n", {"unknown:a"}},
      {"a base64 meta key", "ms a 1 b\r\nx\r\ndelete z\r\n", {"unknown"}},
      {"a binary body shorter than its key",
       [] {
         std::string r = test::mc_binreq(0x04, "key");
         r[11] = 1;  // body length 1 < key length 3
         return r;
       }(),
       {"unknown"}},
  };
  for (const auto& c : cases) {
    for (size_t chunk : {0, 1, 7}) {
      const Fed f = scan(c.stream + "delete after\r\n", chunk);
      EXPECT_FALSE(f.ok) << c.what;
      EXPECT_EQ(f.cmds, c.want) << c.what << ", chunks of " << chunk;
    }
  }
  // An unknown command is not a framing problem: memcached answers ERROR and reads on.
  const Fed f = scan("bogus thing\r\ndelete k\r\n", 3);
  EXPECT_TRUE(f.ok);
  EXPECT_EQ(f.cmds, (std::vector<std::string>{"unknown", "write:k"}));
}

}  // namespace
}  // namespace gaon::kv
