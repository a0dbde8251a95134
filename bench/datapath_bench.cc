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
      std::fprintf(stderr, "gaon-microbench: --rounds=TYPE:FRAME_LEN:N, e.g. --rounds=echo:64:100000\n");
      return 2;
    }
    gaon::Rig rig(type, len, true);
    for (unsigned r = 0; r < rounds; ++r) rig.round(r + 1);
    std::printf("%u rounds of %zu packets\n", rounds, gaon::kBurst);
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
