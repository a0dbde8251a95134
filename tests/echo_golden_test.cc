// Golden test: a capture of requests goes in (read with libpcap by gaon-pcap), the echo
// ikernel runs, and what comes out must equal captures written independently by
// tests/data/make_echo_golden.py.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "pcap_io.h"

namespace {

namespace fs = std::filesystem;
using gaon::pcapio::Frame;

struct Run {
  int status;
  std::string output;
};

Run run(const std::string& args) {
  const std::string cmd = std::string(GAON_PCAP_TOOL) + " " + args + " 2>&1";
  FILE* f = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  const int st = pclose(f);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

std::vector<std::vector<uint8_t>> bytes(const std::vector<Frame>& frames) {
  std::vector<std::vector<uint8_t>> out;
  for (const auto& f : frames) out.push_back(f.bytes);
  return out;
}

std::vector<std::vector<uint8_t>> read(const fs::path& p) {
  auto r = gaon::pcapio::read(p.string());
  EXPECT_TRUE(r) << r.error();
  return r ? bytes(*r) : std::vector<std::vector<uint8_t>>{};
}

class EchoGolden : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gaon-golden-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  const fs::path data_ = GAON_TEST_DATA;
};

TEST_F(EchoGolden, PcapInPcapOut) {
  const auto r = run("--ikernel echo --flow udp:10.0.0.2:7 --in " +
                     (data_ / "echo_in.pcap").string() + " --out " + (dir_ / "out.pcap").string() +
                     " --host-out " + (dir_ / "host.pcap").string() + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  // Replies: in order, byte for byte.
  EXPECT_EQ(read(dir_ / "out.pcap"), read(data_ / "echo_out.pcap"));
  // Passed to the host: byte for byte (order is kept within a flow, not across flows).
  auto host = read(dir_ / "host.pcap"), want = read(data_ / "echo_host.pcap");
  std::sort(host.begin(), host.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(host, want);

  const auto stats = nlohmann::json::parse(r.output);
  const auto& inst = stats["instances"][0];
  EXPECT_EQ(inst["type"], "echo");
  EXPECT_EQ(inst["counters"]["rx"], 9);
  EXPECT_EQ(inst["counters"]["to_wire"], 9);
  EXPECT_EQ(inst["counters"]["to_host"], 0);
  EXPECT_EQ(stats["not_parsed"]["bad_ipv4_checksum"], 1);
  EXPECT_EQ(stats["not_parsed"]["ipv4_fragment"], 1);
  EXPECT_EQ(stats["not_parsed"]["truncated_ipv4"], 1);  // the frame cut short
  EXPECT_EQ(stats["not_parsed"]["bad_udp_checksum"], 1);
  EXPECT_EQ(stats["not_parsed"]["not_ip"], 1);
  EXPECT_EQ(stats["l4_csum_partial"], 1);
  EXPECT_EQ(stats["unmatched"], 3);  // IPv6, TCP (only udp is attached) and port 8
}

TEST_F(EchoGolden, BadArgumentsGetAOneLineReasonAndNonZeroExit) {
  const std::string in = (data_ / "echo_in.pcap").string();
  struct Case {
    std::string args, want;
  } cases[] = {
      {"--ikernel echo --flow udp:10.0.0.2 --in " + in, "expected IP:PORT"},
      {"--ikernel echo --flow sctp:10.0.0.2:7 --in " + in, "protocol must be udp or tcp"},
      {"--ikernel nope --flow udp:10.0.0.2:7 --in " + in, "unknown ikernel type 'nope'"},
      {"--ikernel echo --param x=1 --flow udp:10.0.0.2:7 --in " + in, "unknown parameter 'x'"},
      {"--ikernel echo --flow udp:10.0.0.2:7 --in /nonexistent.pcap", "nonexistent"},
      {"--ikernel echo --in " + in, "--flow is required"},
      {"--flow udp:10.0.0.2:7 --in " + in, "--ikernel is required"},
      {"--bogus", "bogus"},
  };
  for (const auto& c : cases) {
    const auto r = run(c.args);
    EXPECT_NE(r.status, 0) << c.args;
    EXPECT_NE(r.output.find(c.want), std::string::npos) << c.args << " -> " << r.output;
    EXPECT_LE(std::count(r.output.begin(), r.output.end(), '\n'), 2) << r.output;
  }
}

TEST_F(EchoGolden, ListsTheIkernelTypes) {
  const auto r = run("--list");
  ASSERT_EQ(r.status, 0);
  EXPECT_NE(r.output.find("echo"), std::string::npos);
  EXPECT_NE(r.output.find("passthrough"), std::string::npos);
}

}  // namespace
