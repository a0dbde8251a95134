// Typed ikernel parameters: every type, defaults, bounds, and the errors users see.
#include "gaon/params.h"

#include <gtest/gtest.h>

namespace gaon {
namespace {

const std::vector<ParamSpec> kSpec = {
    {"capacity", ParamType::size, "64M", "bytes of cache", 1024, 1e12},
    {"ways", ParamType::u64, "8", "set associativity", 1, 64},
    {"ratio", ParamType::f64, "0.5", "a fraction", 0, 1},
    {"verbose", ParamType::boolean, "false", "log more"},
    {"name", ParamType::string, "", "a label"},
};

Result<Params> parse(std::vector<std::string> kv) { return Params::parse(kSpec, kv); }

TEST(Params, DefaultsApply) {
  auto p = parse({});
  ASSERT_TRUE(p) << p.error();
  EXPECT_EQ(p->u64("capacity"), 64u << 20);
  EXPECT_EQ(p->u64("ways"), 8u);
  EXPECT_DOUBLE_EQ(p->f64("ratio"), 0.5);
  EXPECT_FALSE(p->flag("verbose"));
  EXPECT_EQ(p->str("name"), "");
  EXPECT_FALSE(p->was_given("ways"));
}

TEST(Params, ValuesOfEveryType) {
  auto p = parse({"capacity=2G", "ways=0x10", "ratio=0.98", "verbose=yes", "name=a=b c"});
  ASSERT_TRUE(p) << p.error();
  EXPECT_EQ(p->u64("capacity"), 2ull << 30);
  EXPECT_EQ(p->u64("ways"), 16u);
  EXPECT_DOUBLE_EQ(p->f64("ratio"), 0.98);
  EXPECT_TRUE(p->flag("verbose"));
  EXPECT_EQ(p->str("name"), "a=b c");
  EXPECT_TRUE(p->was_given("ways"));
  auto later = parse({"ways=2", "ways=4"});
  EXPECT_EQ(later->u64("ways"), 4u);  // the last one wins
}

TEST(Params, SizeSuffixes) {
  struct {
    const char* text;
    uint64_t want;
  } cases[] = {{"4096", 4096},     {"4K", 4096},    {"4KiB", 4096},
               {"4k", 4096},       {"3M", 3 << 20}, {"3MiB", 3 << 20},
               {"1G", 1ull << 30}, {"100B", 100},   {"0x400", 1024}};
  for (const auto& c : cases) {
    auto v = parse_param_value(ParamType::size, c.text);
    ASSERT_TRUE(v) << c.text << ": " << v.error();
    EXPECT_EQ(std::get<uint64_t>(*v), c.want) << c.text;
  }
}

TEST(Params, ErrorsNameTheProblem) {
  struct {
    std::vector<std::string> kv;
    const char* want;
  } cases[] = {
      {{"bogus=1"}, "unknown parameter 'bogus' (known: capacity, ways, ratio, verbose, name)"},
      {{"ways"}, "expected key=value"},
      {{"=3"}, "expected key=value"},
      {{"ways=-1"}, "not a non-negative integer"},
      {{"ways=eight"}, "not a non-negative integer"},
      {{"ways=0"}, "out of range [1, 64]"},
      {{"ways=65"}, "out of range"},
      {{"ways=99999999999999999999999"}, "too large"},
      {{"capacity=12Q"}, "not a size"},
      {{"capacity=16"}, "out of range"},
      {{"capacity=99999999999G"}, "too large"},
      {{"ratio=1.5"}, "out of range"},
      {{"ratio=nan"}, "not a number"},
      {{"ratio=0.5x"}, "not a number"},
      {{"verbose=maybe"}, "not a boolean"},
      {{"ways="}, "not a non-negative integer"},
  };
  for (const auto& c : cases) {
    auto p = parse(c.kv);
    ASSERT_FALSE(p) << c.kv[0];
    EXPECT_NE(p.error().find(c.want), std::string::npos) << c.kv[0] << " -> " << p.error();
  }
}

TEST(Params, BadDefaultIsReported) {
  std::vector<ParamSpec> spec = {{"x", ParamType::u64, "ten", "broken default"}};
  auto p = Params::parse(spec, {});
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().find("bad default"), std::string::npos);
}

TEST(Params, DescribeListsEveryValue) {
  auto p = parse({"ways=4"});
  auto d = p->describe();
  EXPECT_NE(std::find(d.begin(), d.end(), "ways=4"), d.end());
  EXPECT_NE(std::find(d.begin(), d.end(), "capacity=64M"), d.end());
}

}  // namespace
}  // namespace gaon
