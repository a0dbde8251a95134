// kvcache's fast path under BPF_PROG_TEST_RUN (root), against the floor of a hit
// (src/bpf/floor.bpf.c: a fixed reply built in place, no table, no checks) and an empty
// program (XDP_PASS: what one BPF_PROG_TEST_RUN call costs by itself). Each iteration is
// one separate call with repeat = 1 — with repeat > 1 the kernel reruns the program on the
// reply it just built, so only the first run would be a hit — on a GET for a key drawn at
// random from a loaded table (one key every time would keep it in the cache: it hides the
// misses a real table has). Keys of 16 bytes, values of 32, items learned from a `get`
// (no cas: the reply is one piece of the slot), as in the testbed benchmarks.
//
//   sudo build/gaon-microbench --benchmark_filter=Xdp
//   prog_ns of BM_Xdp_FastPathHit  vs  prog_ns of BM_Xdp_FloorHit   (goal: <= 2x)
// (prog_ns: the kernel's own timing of the program, without the system call, which costs
// several times more than these programs.)
#include <unistd.h>

#include <benchmark/benchmark.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "frames.h"
#include "gaon/xdp_program.h"
#include "kv_table.h"

extern const unsigned char gaon_kvcache_bpf_obj[];
extern const unsigned long gaon_kvcache_bpf_obj_len;
extern const unsigned char gaon_floor_bpf_obj[];
extern const unsigned long gaon_floor_bpf_obj_len;
extern const unsigned char gaon_xdp_pass_bpf_obj[];
extern const unsigned long gaon_xdp_pass_bpf_obj_len;

namespace gaon {
namespace {

constexpr int kKeys = 100000;

// 16 bytes, named as gaon-bench names its loaded keys (the floor answers only those)
std::string key_of(int i) { return fmt::format("key:{:012d}", i); }

struct XdpRig {
  std::unique_ptr<XdpProgram> x;
  kv::Table table;
  bpf_object* floor = nullptr;
  bpf_object* pass = nullptr;
  int floor_fd = -1, pass_fd = -1;
  std::vector<test::Bytes> frames;  // a GET for each key
  std::string error;

  static bpf_object* load(const unsigned char* obj, unsigned long len, const char* prog, int& fd) {
    bpf_object* o = bpf_object__open_mem(obj, len, nullptr);
    if (o == nullptr || bpf_object__load(o) != 0) return nullptr;
    fd = bpf_program__fd(bpf_object__find_program_by_name(o, prog));
    return o;
  }

  XdpRig() {
    if (geteuid() != 0) {
      error = "needs root (BPF_PROG_TEST_RUN)";
      return;
    }
    auto g = kv::Table::geometry(128ull << 20, 32, 64);
    auto xp = XdpProgram::load({.fp_chunks = 160});
    if (!g || !xp) {
      error = !g ? g.error() : xp.error();
      return;
    }
    x = std::move(*xp);
    const FastPathSpec spec{GAON_FP_KVCACHE,
                            "gaon_fp_kvcache",
                            {gaon_kvcache_bpf_obj, gaon_kvcache_bpf_obj_len},
                            g->bytes};
    if (auto r = x->add_flow(*FlowKey::parse("udp:10.0.0.2:11211"), 1, spec); !r) {
      error = r.error();
      return;
    }
    FastPathState* fp = x->fast_path(1);
    if (fp == nullptr) {
      error = x->fast_path_stats(1).dump();
      return;
    }
    (void)x->set_port(1, GAON_WIRE, 1);
    x->lease()->bound_ns = UINT64_MAX / 2;  // a lease, checked as in a bump, always fresh
    x->lease()->renewed_ns = 1;
    table.lay_out(fp->mem, *g, 0);
    const std::string value(32, 'v');
    for (int i = 0; i < kKeys; ++i) {
      const std::string k = key_of(i);
      table.insert(kv::Table::hash(k), k, {value, 0, 0, false}, UINT64_MAX);  // learned by a get
    }
    for (int i = 0; i < kKeys; ++i) {  // the keys that stayed (a full set evicts)
      const std::string k = key_of(i);
      if (table.find(kv::Table::hash(k), k, 1) == nullptr) continue;
      test::FrameSpec f;
      f.dport = 11211;
      f.payload = test::text(test::mc_dgram("get " + k + "\r\n", uint16_t(i)));
      frames.push_back(test::build_frame(f));
    }
    floor = load(gaon_floor_bpf_obj, gaon_floor_bpf_obj_len, "gaon_floor", floor_fd);
    pass = load(gaon_xdp_pass_bpf_obj, gaon_xdp_pass_bpf_obj_len, "gaon_xdp_pass", pass_fd);
    if (!floor || !pass) error = "loading the floor or the pass program";
  }
  ~XdpRig() {
    if (floor) bpf_object__close(floor);
    if (pass) bpf_object__close(pass);
  }
};

XdpRig& rig() {
  static XdpRig r;
  return r;
}

void run(benchmark::State& st, int fd, uint32_t want, size_t keys = 0) {
  XdpRig& r = rig();
  if (!r.error.empty()) {
    st.SkipWithError(r.error.c_str());
    return;
  }
  std::mt19937 rng(7);
  std::vector<uint8_t> out(4096);
  xdp_md ctx{};
  ctx.ingress_ifindex = 1;
  uint64_t wrong = 0, prog_ns = 0;
  for (auto _ : st) {
    const test::Bytes& f = r.frames[rng() % (keys ? keys : r.frames.size())];
    ctx.data_end = uint32_t(f.size());
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = f.data(), .data_out = out.data(),
                .data_size_in = uint32_t(f.size()), .data_size_out = uint32_t(out.size()),
                .ctx_in = &ctx, .ctx_size_in = uint32_t(sizeof(ctx)), .repeat = 1);
    bpf_prog_test_run_opts(fd, &o);
    wrong += o.retval != want;
    prog_ns += o.duration;  // the kernel's own clock around the program's run
  }
  // The program alone, without the system call around it (which costs more than most
  // programs and varies with the machine).
  st.counters["prog_ns"] = benchmark::Counter(double(prog_ns), benchmark::Counter::kAvgIterations);
  if (wrong) st.SkipWithError(fmt::format("{} runs did not return {}", wrong, want).c_str());
}

void BM_Xdp_Pass(benchmark::State& st) { run(st, rig().pass_fd, XDP_PASS); }
void BM_Xdp_FloorHit(benchmark::State& st) { run(st, rig().floor_fd, XDP_TX); }
// Through the steering program, as in a bump: flow lookup, lease, tail call, then the hit.
void BM_Xdp_FastPathHit(benchmark::State& st) {
  run(st, rig().x ? rig().x->prog_fd() : -1, XDP_TX);
}
// The same over the first N keys only: with few, the table stays in the CPU's caches (what
// the cache and TLB misses of a table cost).
void BM_Xdp_FastPathHitKeys(benchmark::State& st) {
  run(st, rig().x ? rig().x->prog_fd() : -1, XDP_TX, size_t(st.range(0)));
}
BENCHMARK(BM_Xdp_Pass);
BENCHMARK(BM_Xdp_FastPathHitKeys)->Arg(16)->Arg(1000)->Arg(10000);
BENCHMARK(BM_Xdp_FloorHit);
BENCHMARK(BM_Xdp_FastPathHit);

}  // namespace
}  // namespace gaon
