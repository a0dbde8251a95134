// Capture: the engine records one instance's frames (in, with the verdict the ikernel gave;
// out, as they leave) and nobody else's; the ring's bounds (count, full ring: lost); the
// pcapng it writes, read back by libpcap and by the real tshark.
#include "gaon/capture.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "frames.h"
#include "gaon/engine.h"
#include "gaon/mem_port.h"
#include "pcap_io.h"

namespace gaon {
namespace {

struct Rig {
  std::unique_ptr<Engine> eng;
  MemPort wire{"wire"}, host{"host"};
  uint32_t echo = 0, pass = 0;
  test::Bytes to_echo, to_pass;
  Rig() {
    eng = std::move(*Engine::create({.pool_frames = 1024}));
    eng->set_ports(&wire, &host);
    const auto& reg = Registry::global();
    echo = *eng->add_instance(std::move(*Instance::create({.type = "echo"}, reg)));
    pass = *eng->add_instance(std::move(*Instance::create({.type = "passthrough"}, reg)));
    EXPECT_TRUE(eng->add_flow(*FlowKey::parse("udp:10.0.0.2:7"), echo));
    EXPECT_TRUE(eng->add_flow(*FlowKey::parse("udp:10.0.0.2:11211"), pass));
    test::FrameSpec s;
    s.dport = 7;
    s.payload = test::text("ping");
    to_echo = test::build_frame(s);
    s.dport = 11211;
    s.payload = test::text("get k\r\n");
    to_pass = test::build_frame(s);
  }
  void round(int n_echo, int n_pass) {
    std::vector<Packet*> burst;
    for (int i = 0; i < n_echo; ++i) burst.push_back(test::make_packet(eng->pool(), to_echo));
    for (int i = 0; i < n_pass; ++i) burst.push_back(test::make_packet(eng->pool(), to_pass));
    wire.inject(burst);
    eng->poll(1000);
    Packet* out[kBurst];
    for (MemPort* port : {&wire, &host})
      while (uint32_t k = port->collect(out))
        for (uint32_t i = 0; i < k; ++i) eng->pool().free(out[i]);
  }
};

std::vector<CaptureRecord> records(Capture& c, std::vector<test::Bytes>* bytes = nullptr) {
  std::vector<CaptureRecord> out;
  c.drain([&](const CaptureRecord& r) {
    out.push_back(r);
    if (bytes != nullptr) bytes->emplace_back(r.data, r.data + r.caplen);
  });
  return out;
}

TEST(Capture, RecordsOneInstancesFramesInAndOutWithTheirVerdicts) {
  Rig g;
  Capture cap({});
  ASSERT_TRUE(g.eng->set_capture(g.echo, &cap));
  g.round(3, 5);  // 3 for echo, 5 for passthrough (not captured)
  std::vector<test::Bytes> bytes;
  const auto r = records(cap, &bytes);
  ASSERT_EQ(r.size(), 6u);  // 3 in, 3 out
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r[i].at, CapturePoint::in);
    EXPECT_EQ(r[i].verdict, Verdict::to_wire);  // what echo did with it
    EXPECT_EQ(r[i].dir, Direction::ingress);
    EXPECT_EQ(bytes[i], g.to_echo);  // as it arrived, before echo rewrote it
    EXPECT_EQ(r[i].ts_ns, 1000u);
  }
  for (int i = 3; i < 6; ++i) {
    EXPECT_EQ(r[i].at, CapturePoint::out);
    EXPECT_EQ(r[i].verdict, Verdict::to_wire);
    EXPECT_NE(bytes[i], g.to_echo);  // the reply: addresses swapped
    EXPECT_EQ(bytes[i].size(), g.to_echo.size());
  }
  EXPECT_EQ(cap.taken(), 6u);
  EXPECT_EQ(cap.lost(), 0u);

  // Stopped: nothing more is recorded.
  ASSERT_TRUE(g.eng->set_capture(g.echo, nullptr));
  g.round(3, 0);
  EXPECT_EQ(records(cap).size(), 0u);
  EXPECT_FALSE(g.eng->set_capture(99, &cap));  // no such instance

  // Only "in" of the passthrough instance, 10 bytes of each: to_host verdicts.
  Capture in_only({.out = false, .snaplen = 10});
  ASSERT_TRUE(g.eng->set_capture(g.pass, &in_only));
  g.round(2, 2);
  const auto p = records(in_only);
  ASSERT_EQ(p.size(), 2u);
  for (const auto& x : p) {
    EXPECT_EQ(x.at, CapturePoint::in);
    EXPECT_EQ(x.verdict, Verdict::to_host);
    EXPECT_EQ(x.caplen, 10u);
    EXPECT_EQ(x.len, g.to_pass.size());
  }
}

TEST(Capture, StopsAtItsCountAndCountsWhatFindsTheRingFull) {
  Rig g;
  Capture counted({.count = 5});
  ASSERT_TRUE(g.eng->set_capture(g.echo, &counted));
  g.round(4, 0);  // 8 records wanted, 5 taken
  EXPECT_EQ(records(counted).size(), 5u);
  EXPECT_TRUE(counted.full());
  EXPECT_EQ(counted.lost(), 0u);

  Capture small({.count = 1000, .slots = 4});  // nobody drains it
  ASSERT_TRUE(g.eng->set_capture(g.echo, &small));
  g.round(4, 0);
  g.round(4, 0);
  EXPECT_EQ(small.taken(), 4u);
  EXPECT_EQ(small.lost(), 12u);
  EXPECT_EQ(records(small).size(), 4u);
  g.round(1, 0);  // room again
  EXPECT_EQ(records(small).size(), 2u);
  // The other instance's traffic went on untouched all along.
  EXPECT_EQ(g.eng->pool().available(), g.eng->pool().capacity());
}

TEST(Capture, WritesPcapngThatLibpcapAndTsharkRead) {
  Rig g;
  Capture cap({});
  ASSERT_TRUE(g.eng->set_capture(g.echo, &cap));
  g.round(2, 1);
  std::string file = pcapng_header(g.echo, cap.options(), "gaon test");
  std::vector<test::Bytes> bytes;
  const int64_t offset = 1'700'000'000'000'000'000;  // 2023-11-14
  for (const auto& r : records(cap, &bytes)) pcapng_packet(file, cap.options(), r, offset);
  pcapng_stats(file, cap.options(), uint64_t(offset), cap.taken(), cap.lost());
  char path[] = "/tmp/gaon-capture-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, file.data(), file.size()), ssize_t(file.size()));
  close(fd);

  auto frames = pcapio::read(path);
  ASSERT_TRUE(frames) << frames.error();
  ASSERT_EQ(frames->size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ((*frames)[i].bytes, bytes[i]);
    EXPECT_EQ((*frames)[i].timestamp_ns, uint64_t(offset) + 1000);
  }

  if (access("/usr/bin/tshark", X_OK) == 0) {
    const std::string cmd = std::string("/usr/bin/tshark -r ") + path +
                            " -T fields -e frame.interface_name -e frame.comment 2>/dev/null";
    FILE* f = popen(cmd.c_str(), "r");
    ASSERT_NE(f, nullptr);
    std::string out;
    char buf[512];
    while (size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
    EXPECT_EQ(pclose(f), 0);
    const std::string id = std::to_string(g.echo);
    EXPECT_EQ(out, id + "-in\tin to_wire\n" + id + "-in\tin to_wire\n" + id +
                       "-out\tout to_wire\n" + id + "-out\tout to_wire\n");
  } else {
    GTEST_LOG_(INFO) << "tshark is missing: pcapng checked with libpcap only";
  }
  unlink(path);
}

}  // namespace
}  // namespace gaon
