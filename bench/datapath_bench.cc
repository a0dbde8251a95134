// Datapath microbenchmarks on mem ports, one core: a burst of 32 frames goes in from the
// wire, the engine polls once, the burst is collected and goes in again. The collected
// frames are re-injected as they are (the echo's replies are attached too, so they are
// echoed back), so nothing but the datapath runs in the loop.
//
//   build/gaon-microbench --benchmark_filter=Datapath
//   build/gaon-microbench --rounds=TYPE:FRAME_LEN:N   # N rounds, no timing: for callgrind
//   scripts/bench-ipp                             # instructions per packet, from callgrind
#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include "auth/hmac.h"
#include "frames.h"
#include "gaon/engine.h"
#include "gaon/mem_port.h"

namespace gaon {

struct Rig {
  std::unique_ptr<Engine> engine;
  MemPort wire{"wire", 1024}, host{"host", 1024};
  Packet* burst[kBurst];

  Rig(const char* type, size_t frame_len, bool verify_l4) {
    EngineConfig cfg;
    cfg.parse.verify_l4_checksum = verify_l4;
    engine = std::move(*Engine::create(cfg));
    engine->set_ports(&wire, &host);
    auto id =
        *engine->add_instance(std::move(*Instance::create({.type = type}, Registry::global())));
    (void)engine->add_flow(*FlowKey::parse("udp:10.0.0.2:7"), id);
    (void)engine->add_flow(*FlowKey::parse("udp:10.0.0.1:40000"), id);  // the replies
    test::FrameSpec s;
    s.dport = 7;
    s.sport = 40000;
    s.payload.assign(frame_len - 42, 'x');  // 14 + 20 + 8 header bytes
    const auto frame = test::build_frame(s);
    for (auto& p : burst) p = test::make_packet(engine->pool(), frame);
  }

  // One round: inject a burst, poll, collect it back from whichever port it left by.
  void round(uint64_t now) {
    wire.inject(burst);
    engine->poll(now);
    uint32_t n = wire.collect(burst);
    n += host.collect({burst + n, kBurst - n});
    if (n != kBurst) std::abort();
  }
};

// kvcache GET hits: 32 requests ("get <10-byte key>" over memcached's UDP framing) for
// keys already learned; each round rewrites the 32 request frames (as a NIC would
// deliver them), polls, and collects the 32 replies from the wire.
struct KvRig {
  std::unique_ptr<Engine> engine;
  MemPort wire{"wire", 1024}, host{"host", 1024};
  Packet* burst[kBurst];
  std::vector<test::Bytes> requests;

  static test::Bytes frame(bool to_server, const std::string& payload, uint16_t client) {
    test::FrameSpec s;
    s.src_ip = to_server ? "10.0.0.1" : "10.0.0.2";
    s.dst_ip = to_server ? "10.0.0.2" : "10.0.0.1";
    s.sport = to_server ? client : 11211;
    s.dport = to_server ? 11211 : client;
    s.payload = test::text(payload);
    s.l4csum = test::L4Csum::zero;
    return test::build_frame(s);
  }
  static std::string dgram(const std::string& body, uint16_t id) {
    std::string h(8, '\0');
    h[0] = char(id >> 8), h[1] = char(id), h[5] = 1;
    return h + body;
  }
  void exchange(MemPort& in, const test::Bytes& f) {
    Packet* p = test::make_packet(engine->pool(), f);
    in.inject({&p, 1});
    engine->poll(1);
    Packet* out[kBurst];
    for (MemPort* port : {&wire, &host})
      while (uint32_t n = port->collect(out)) engine->pool().free_bulk({out, n});
  }
  KvRig() {
    engine = std::move(*Engine::create({}));
    engine->set_ports(&wire, &host);
    auto id = *engine->add_instance(std::move(*Instance::create(
        {.type = "kvcache", .params = {"capacity=16M", "max_key=16", "max_value=16"}},
        Registry::global())));
    (void)engine->add_flow(*FlowKey::parse("udp:10.0.0.2:11211"), id);
    for (uint16_t k = 0; k < kBurst; ++k) {
      char key[16];
      std::snprintf(key, sizeof(key), "key:%06u", k);  // 10 bytes
      const std::string get = std::string("get ") + key + "\r\n";
      exchange(wire, frame(true, dgram(get, k), 40000));  // miss: learn the reply
      exchange(
          host,
          frame(
              false,
              dgram(std::string("VALUE ") + key + " 0 10\r\nvalue:" + (key + 6) + "\r\nEND\r\n", k),
              40000));
      requests.push_back(frame(true, dgram(get, uint16_t(1000 + k)), 40000));
    }
    for (size_t i = 0; i < kBurst; ++i) burst[i] = engine->pool().alloc();
  }
  void round(uint64_t now) {
    for (size_t i = 0; i < kBurst; ++i) burst[i]->assign(requests[i]);
    wire.inject(burst);
    engine->poll(now);
    if (wire.collect(burst) != kBurst) std::abort();  // every one a hit
  }
};

// A burst of 32 prepared requests, rewritten into the frames every round (as a NIC would
// deliver them: the ikernel may change a frame, as auth strips its trailer), polled, and
// collected from the host: for ikernels that pass what they accept.
struct PassRig {
  std::unique_ptr<Engine> engine;
  MemPort wire{"wire", 1024}, host{"host", 1024};
  Packet* burst[kBurst];
  std::vector<test::Bytes> frames;

  PassRig(const char* type, std::vector<std::string> params,
          const std::vector<std::string>& payloads) {
    engine = std::move(*Engine::create({}));
    engine->set_ports(&wire, &host);
    id = *engine->add_instance(
        std::move(*Instance::create({.type = type, .params = params}, Registry::global())));
    (void)engine->add_flow(*FlowKey::parse("udp:10.0.0.2:7"), id);
    for (size_t i = 0; i < kBurst; ++i) {
      test::FrameSpec s;
      s.dport = 7;
      s.payload = test::text(payloads[i % payloads.size()]);
      frames.push_back(test::build_frame(s));
      burst[i] = engine->pool().alloc();
    }
  }
  void round(uint64_t now) {
    for (size_t i = 0; i < kBurst; ++i) burst[i]->assign(frames[i]);
    wire.inject(burst);
    engine->poll(now);
    if (host.collect(burst) != kBurst) std::abort();  // every one passed
  }
  uint32_t id = 0;
};

namespace {

void run(benchmark::State& state, const char* type, bool verify_l4) {
  Rig rig(type, static_cast<size_t>(state.range(0)), verify_l4);
  uint64_t now = 1;
  for (auto _ : state) rig.round(now++);
  state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
  state.counters["Mpps"] =
      benchmark::Counter(double(state.iterations()) * kBurst / 1e6, benchmark::Counter::kIsRate);
}

void BM_Datapath_Echo(benchmark::State& s) { run(s, "echo", true); }
void BM_Datapath_EchoNoL4Verify(benchmark::State& s) { run(s, "echo", false); }
void BM_Datapath_Passthrough(benchmark::State& s) { run(s, "passthrough", true); }
void BM_Datapath_PassthroughNoL4Verify(benchmark::State& s) { run(s, "passthrough", false); }

BENCHMARK(BM_Datapath_Echo)->Arg(64)->Arg(512)->Arg(1500);
BENCHMARK(BM_Datapath_EchoNoL4Verify)->Arg(64)->Arg(512)->Arg(1500);
BENCHMARK(BM_Datapath_Passthrough)->Arg(64)->Arg(512)->Arg(1500);
BENCHMARK(BM_Datapath_PassthroughNoL4Verify)->Arg(64);

void BM_KvCache_GetHit(benchmark::State& state) {
  KvRig rig;
  uint64_t now = 1;
  for (auto _ : state) rig.round(now++);
  state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
  state.counters["Mreq/s"] =
      benchmark::Counter(double(state.iterations()) * kBurst / 1e6, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_KvCache_GetHit);

// auth (trailer framing) verifying 32 datagrams per round, against passthrough on the same
// frames (payload bytes before the 32-byte trailer: the argument).
std::string trailer_payload(size_t n) {
  const std::string body(n, 'p');
  uint8_t key[32];
  for (int i = 0; i < 32; ++i) key[i] = uint8_t(i);
  uint8_t tag[32];
  ikernels::auth::HmacSha256(std::span<const uint8_t>(key, 32))
      .mac(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(body.data()), n), tag);
  return body + std::string(reinterpret_cast<char*>(tag), 32);
}
void pass_rounds(benchmark::State& state, PassRig& rig) {
  uint64_t now = 1;
  for (auto _ : state) rig.round(now++);
  state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
  state.counters["Mreq/s"] =
      benchmark::Counter(double(state.iterations()) * kBurst / 1e6, benchmark::Counter::kIsRate);
}
void BM_Auth_Trailer(benchmark::State& state) {
  PassRig rig("auth", {}, {trailer_payload(size_t(state.range(0)))});
  std::string key;
  for (int i = 0; i < 32; ++i) key += fmt::format("{:02x}", i);
  if (!rig.engine->call(rig.id, "set_key", std::vector<std::string>{key})) std::abort();
  pass_rounds(state, rig);
}
void BM_Auth_PassthroughSameFrames(benchmark::State& state) {
  PassRig rig("passthrough", {}, {trailer_payload(size_t(state.range(0)))});
  pass_rounds(state, rig);
}
BENCHMARK(BM_Auth_Trailer)->Arg(64)->Arg(512);
BENCHMARK(BM_Auth_PassthroughSameFrames)->Arg(64)->Arg(512);

// topk counting memcached GET keys: 32 single-key GETs per round, 32 keys, the top 10 kept.
void BM_TopK_McGet(benchmark::State& state) {
  std::vector<std::string> gets;
  for (int i = 0; i < 1024; ++i)
    gets.push_back(test::mc_dgram(fmt::format("get key:{:06}\r\n", (i * 7919) % 1024), 1));
  PassRig rig("topk", {"key=mc_get", "k=10"}, gets);
  pass_rounds(state, rig);
}
BENCHMARK(BM_TopK_McGet);

// The parser alone, for reference.
void BM_Parse(benchmark::State& state) {
  auto pool = std::move(*BufferPool::create(64));
  test::FrameSpec s;
  s.payload.assign(size_t(state.range(0)) - 42, 'x');
  Packet* p = test::make_packet(*pool, test::build_frame(s));
  for (auto _ : state) benchmark::DoNotOptimize(parse(*p));
  state.SetItemsProcessed(int64_t(state.iterations()));
}
BENCHMARK(BM_Parse)->Arg(64)->Arg(1500);

}  // namespace
}  // namespace gaon

// --rounds=TYPE:LEN:N runs exactly N rounds (N x 32 packets) and exits, so that
// `valgrind --tool=callgrind --toggle-collect='gaon::Engine::poll*'` counts the engine's
// instructions per packet without Google Benchmark's own iterations in the way.
int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a.substr(0, 9) != "--rounds=") continue;
    const std::string spec(a.substr(9));
    char type[32] = {};
    unsigned len = 0, rounds = 0;
    if (std::sscanf(spec.c_str(), "%31[^:]:%u:%u", type, &len, &rounds) != 3 || len < 64) {
      std::fprintf(stderr,
                   "gaon-microbench: --rounds=TYPE:FRAME_LEN:N, e.g. --rounds=echo:64:100000\n");
      return 2;
    }
    if (std::string_view(type) == "kvcache") {  // GET hits, 10-byte keys and values
      gaon::KvRig rig;
      for (unsigned r = 0; r < rounds; ++r) rig.round(r + 1);
    } else {
      gaon::Rig rig(type, len, true);
      for (unsigned r = 0; r < rounds; ++r) rig.round(r + 1);
    }
    std::printf("%u rounds of %zu packets\n", rounds, gaon::kBurst);
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
