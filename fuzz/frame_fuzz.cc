// Fuzz target: the frame parser and the whole steering path.
//
// Input: one control byte (bit 0: the frame comes from the host side; bit 1: L4 checksums
// unverified) followed by the frame. The frame is parsed on its own (offsets must stay
// inside it), then pushed through an engine with echo and passthrough instances attached.
// Invariants: no crash or sanitizer report; every frame comes out exactly once or is
// counted as dropped; the pool gets every frame back; a frame that did not parse leaves
// untouched.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "gaon/engine.h"
#include "gaon/mem_port.h"
#include "gaon/parse.h"

namespace {

struct World {
  std::unique_ptr<gaon::Engine> engine;
  gaon::MemPort wire{"wire", 64}, host{"host", 64};
  World() {
    engine = std::move(*gaon::Engine::create(
        {.pool_frames = 256, .max_instances = 4, .flow_capacity = 16, .queue_depth = 64}));
    engine->set_ports(&wire, &host);
    const auto& reg = gaon::Registry::global();
    auto echo = engine->add_instance(std::move(*gaon::Instance::create({.type = "echo"}, reg)));
    auto pass =
        engine->add_instance(std::move(*gaon::Instance::create({.type = "passthrough"}, reg)));
    for (const char* f : {"udp:10.0.0.2:7", "udp:[fd00::2]:7", "tcp:10.0.0.2:7"})
      (void)engine->add_flow(*gaon::FlowKey::parse(f), *echo);
    for (const char* f : {"udp:10.0.0.2:11211", "udp:10.0.0.1:40000,10.0.0.2:7"})
      (void)engine->add_flow(*gaon::FlowKey::parse(f), *pass);
  }
};

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World w;
  if (size < 1) return 0;
  const uint8_t ctl = data[0];
  const std::span<const uint8_t> frame(data + 1, size - 1);
  if (frame.size() > gaon::kMaxData) return 0;
  gaon::BufferPool& pool = w.engine->pool();

  // The parser alone.
  gaon::Packet* p = pool.alloc();
  check(p->assign(frame));
  p->dir = (ctl & 1) ? gaon::Direction::egress : gaon::Direction::ingress;
  const auto r = gaon::parse(*p, {.verify_l4_checksum = !(ctl & 2)});
  if (r == gaon::ParseResult::ok) {
    check(p->hdr.l3 >= 14 && p->hdr.l4 > p->hdr.l3 && p->hdr.payload >= p->hdr.l4);
    check(size_t{p->hdr.payload} + p->hdr.payload_len <= p->len);
  }
  check(std::memcmp(p->data(), frame.data(), frame.size()) == 0);

  // The whole path.
  check(((ctl & 1) ? w.host : w.wire).inject({&p, 1}) == 1);
  for (int i = 0; i < 4; ++i) w.engine->poll(1 + i);
  gaon::Packet* out[gaon::kBurst];
  uint32_t n_out = 0;
  for (auto* port : {&w.wire, &w.host}) {
    while (uint32_t n = port->collect(out)) {
      for (uint32_t i = 0; i < n; ++i) {
        if (r != gaon::ParseResult::ok)
          check(out[i]->len == frame.size() &&
                std::memcmp(out[i]->data(), frame.data(), frame.size()) == 0);
        pool.free(out[i]);
      }
      n_out += n;
    }
  }
  check(n_out == 1);  // echo and passthrough neither drop nor emit
  check(w.engine->tx_idle());
  check(pool.available() == pool.capacity());
  return 0;
}
