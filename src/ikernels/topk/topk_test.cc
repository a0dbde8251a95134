// topk: the top K of a Zipf stream against its ground truth and the error bound, the heap
// and index against exact counts, the key rules through the engine (every packet passes
// unchanged), reset, geometry, quota and parameter errors.
#include "topk.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "frames.h"
#include "gaon/engine.h"
#include "gaon/mem_port.h"
#include "gaon/parse.h"

namespace gaon {
namespace {

using ikernels::TopK;

std::unique_ptr<Instance> make(std::vector<std::string> params) {
  auto i = Instance::create({.type = "topk", .params = params}, Registry::global());
  EXPECT_TRUE(i) << i.error();
  return i ? std::move(*i) : nullptr;
}
TopK& topk(Instance& i) { return dynamic_cast<TopK&>(i.kernel()); }

// Zipf(θ) over n ranks, by inverting the cumulative weights.
class Zipf {
 public:
  Zipf(size_t n, double theta) : cdf_(n) {
    double sum = 0;
    for (size_t i = 0; i < n; ++i) cdf_[i] = sum += 1.0 / std::pow(double(i + 1), theta);
    for (double& c : cdf_) c /= sum;
  }
  size_t operator()(std::mt19937_64& rng) const {
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    return size_t(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
  }

 private:
  std::vector<double> cdf_;
};

TEST(TopK, AZipfStreamsTopTenAndEstimatesWithinTheBound) {
  const double error = 0.0005;
  auto inst = make({"k=10", "error=0.0005", "confidence=0.999"});
  ASSERT_TRUE(inst);
  std::mt19937_64 rng(42);
  const Zipf zipf(20000, 1.1);
  std::map<std::string, uint64_t> truth;
  const uint64_t n = 300000;
  for (uint64_t i = 0; i < n; ++i) {
    // keys named so that their order says nothing about their rank
    const std::string key = "user:" + std::to_string((zipf(rng) * 7919) % 100003);
    ++truth[key];
    topk(*inst).count(key);
  }
  std::vector<std::pair<uint64_t, std::string>> ranked;
  for (const auto& [k, c] : truth) ranked.push_back({c, k});
  std::sort(ranked.rbegin(), ranked.rend());
  ASSERT_GT(ranked[9].first, ranked[10].first) << "no tie at the boundary";
  std::set<std::string> true_top;
  for (size_t i = 0; i < 10; ++i) true_top.insert(ranked[i].second);
  const auto top = inst->call("top", {}).value();
  EXPECT_EQ(top["n"], n);
  std::set<std::string> reported;
  for (const auto& e : top["top"]) {
    const std::string key = e["key"];
    const uint64_t est = e["count"];
    reported.insert(key);
    EXPECT_GE(est, truth[key]) << key;  // count-min never underestimates
    EXPECT_LE(double(est), double(truth[key]) + error * double(n)) << key;
  }
  EXPECT_EQ(reported, true_top);
}

TEST(TopK, TheHeapFollowsExactCountsWhenTheSketchHasNoCollisions) {
  std::mt19937_64 rng(9);
  for (int round = 0; round < 40; ++round) {
    auto inst = make({"k=5", "error=0.0001"});
    ASSERT_TRUE(inst);
    std::map<std::string, uint64_t> truth;
    for (int i = 0; i < 3000; ++i) {
      const std::string key = "k" + std::to_string(std::min<uint64_t>(rng() % 40, rng() % 40));
      ++truth[key];
      topk(*inst).count(key);
    }
    std::vector<uint64_t> counts;
    for (const auto& [k, c] : truth) counts.push_back(c);
    std::sort(counts.rbegin(), counts.rend());
    const auto top = inst->call("top", {}).value()["top"];
    ASSERT_EQ(top.size(), 5u);
    for (size_t i = 0; i < 5; ++i) {
      EXPECT_EQ(top[i]["count"], truth[top[i]["key"]]) << round;  // exact here
      EXPECT_EQ(top[i]["count"], counts[i]) << round;             // and the largest five
    }
  }
}

TEST(TopK, GeometryResetAndErrors) {
  auto inst = make({"error=0.01", "confidence=0.95", "k=3"});
  ASSERT_TRUE(inst);
  auto st = inst->call("stats", {}).value();
  EXPECT_EQ(st["width"], 272);  // ⌈e / 0.01⌉
  EXPECT_EQ(st["depth"], 3);    // ⌈ln(1 / 0.05)⌉
  for (int i = 0; i < 5; ++i) topk(*inst).count("a");
  topk(*inst).count("b");
  EXPECT_EQ(inst->call("top", {}).value()["top"][0]["count"], 5);
  ASSERT_TRUE(inst->call("reset", {}));
  EXPECT_EQ(inst->call("top", {}).value()["top"].size(), 0u);
  topk(*inst).count("b");
  EXPECT_EQ(inst->call("top", {}).value()["top"][0]["count"], 1);  // the sketch was emptied too
  auto big = Instance::create({.type = "topk", .params = {"error=0.000001"}}, Registry::global());
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().find("quota"), std::string::npos) << big.error();
  auto bad = Instance::create({.type = "topk", .params = {"key=dst"}}, Registry::global());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("mc_get, src or bytes"), std::string::npos) << bad.error();
}

class TopKEngineTest : public ::testing::Test {
 protected:
  void start(std::vector<std::string> params) {
    engine_ = std::move(*Engine::create({.pool_frames = 512}));
    engine_->set_ports(&wire_, &host_);
    id_ = *engine_->add_instance(make(params));
    ASSERT_TRUE(engine_->add_flow(*FlowKey::parse("udp:10.0.0.2:11211"), id_));
  }
  void TearDown() override { EXPECT_EQ(engine_->pool().available(), engine_->pool().capacity()); }
  // Sends a datagram; it must reach the host byte for byte.
  void send(const std::string& payload, const std::string& src = "10.0.0.1") {
    test::FrameSpec f;
    f.src_ip = src;
    f.dst_ip = "10.0.0.2";
    f.dport = 11211;
    f.payload = test::text(payload);
    const test::Bytes frame = test::build_frame(f);
    Packet* p = test::make_packet(engine_->pool(), frame);
    ASSERT_EQ(wire_.inject({&p, 1}), 1u);
    for (int i = 0; i < 3; ++i) engine_->poll(1);
    Packet* buf[kBurst];
    ASSERT_EQ(host_.collect(buf), 1u);
    EXPECT_EQ(test::bytes_of(*buf[0]), frame);
    engine_->pool().free(buf[0]);
  }
  nlohmann::json top() { return engine_->call(id_, "top", {}).value()["top"]; }
  nlohmann::json stats() { return engine_->call(id_, "stats", {}).value(); }

  MemPort wire_{"wire"}, host_{"host"};
  std::unique_ptr<Engine> engine_;
  uint32_t id_ = 0;
};

TEST_F(TopKEngineTest, MemcachedGetKeysAreCountedAndEveryPacketPasses) {
  start({"key=mc_get", "k=4"});
  send(test::mc_dgram("get a\r\n", 1));
  send(test::mc_dgram("get a b c\r\n", 2));
  send(test::mc_dgram("gets a\r\n", 3));
  send(test::mc_dgram(test::mc_binreq(0x00, "b"), 4));  // binary GET
  send(test::mc_dgram("set a 0 0 1\r\nx\r\n", 5));      // not a GET: no key
  send("garbage");
  const auto t = top();
  ASSERT_EQ(t.size(), 3u) << t.dump();
  EXPECT_EQ(t[0]["key"], "a");
  EXPECT_EQ(t[0]["count"], 3);
  EXPECT_EQ(t[1]["key"], "b");
  EXPECT_EQ(t[1]["count"], 2);
  EXPECT_EQ(stats()["no_key"], 2);
  EXPECT_EQ(stats()["n"], 6);
}

TEST_F(TopKEngineTest, SourceAddressesAndByteRanges) {
  start({"key=src"});
  for (int i = 0; i < 3; ++i) send("x", "10.0.0.7");
  send("x", "10.0.0.9");
  EXPECT_EQ(top()[0]["key"], "10.0.0.7");
  EXPECT_EQ(top()[0]["count"], 3);
  ASSERT_TRUE(engine_->remove_instance(id_));
  start({"key=bytes", "offset=2", "length=3"});
  send("..abc..");
  send("xxabcyy");
  send("..xyz");
  send("abc");  // too short: no key
  EXPECT_EQ(top()[0]["key"], "616263");
  EXPECT_EQ(top()[0]["count"], 2);
  EXPECT_EQ(stats()["no_key"], 1);
}

}  // namespace
}  // namespace gaon
