// gaon-pcap: run an ikernel over a capture, offline.
//
//   gaon-pcap --ikernel echo --flow udp:10.0.0.2:7 --in requests.pcap --out replies.pcap
//
// Frames of --in enter the engine from the wire (and frames of --egress-in from the host);
// what the engine sends to the wire is written to --out, what it passes to the host to
// --host-out. Engine and instance counters are printed at the end (--json for JSON).
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "gaon/engine.h"
#include "gaon/mem_port.h"
#include "pcap_io.h"

namespace {

int fail(const std::string& msg) {
  fmt::print(stderr, "gaon-pcap: error: {}\n", msg);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gaon-pcap: run an ikernel over a pcap capture, offline"};
  app.set_version_flag("--version", "gaon-pcap " GAON_VERSION);
  std::string type, in_path, out_path, host_out_path, egress_in_path;
  std::vector<std::string> params, flows;
  bool json = false, list = false, no_l4_verify = false;
  app.add_flag("--list", list, "list the ikernel types and exit");
  app.add_option("-k,--ikernel", type, "ikernel type to run");
  app.add_option("-p,--param", params, "ikernel parameter key=value (repeatable)");
  app.add_option("-f,--flow", flows, "flow to attach: udp:IP:PORT[,REMOTE_IP:PORT] (repeatable)");
  app.add_option("-i,--in", in_path, "capture entering from the wire")->check(CLI::ExistingFile);
  app.add_option("--egress-in", egress_in_path, "capture entering from the host")
      ->check(CLI::ExistingFile);
  app.add_option("-o,--out", out_path, "capture of what the engine sends to the wire");
  app.add_option("--host-out", host_out_path, "capture of what the engine passes to the host");
  app.add_flag("--no-verify-l4-checksum", no_l4_verify, "accept UDP/TCP checksums unverified");
  app.add_flag("--json", json, "print stats as JSON");
  CLI11_PARSE(app, argc, argv);

  const auto& reg = gaon::Registry::global();
  if (list) {
    for (const auto* t : reg.list()) fmt::print("{:<14} {}\n", t->name, t->description);
    return 0;
  }
  if (type.empty()) return fail("--ikernel is required (see --list)");
  if (in_path.empty() && egress_in_path.empty()) return fail("--in or --egress-in is required");
  if (flows.empty()) return fail("at least one --flow is required");

  std::vector<gaon::FlowKey> keys;
  for (const auto& f : flows) {
    auto k = gaon::FlowKey::parse(f);
    if (!k) return fail(k.error());
    keys.push_back(*k);
  }
  std::vector<gaon::pcapio::Frame> wire_in, host_in;
  if (!in_path.empty()) {
    auto r = gaon::pcapio::read(in_path);
    if (!r) return fail(r.error());
    wire_in = std::move(*r);
  }
  if (!egress_in_path.empty()) {
    auto r = gaon::pcapio::read(egress_in_path);
    if (!r) return fail(r.error());
    host_in = std::move(*r);
  }

  gaon::EngineConfig cfg;
  cfg.parse.verify_l4_checksum = !no_l4_verify;
  auto eng = gaon::Engine::create(cfg);
  if (!eng) return fail(eng.error());
  gaon::Engine& engine = **eng;
  gaon::MemPort wire("wire", 4096), host("host", 4096);
  engine.set_ports(&wire, &host);

  auto inst = gaon::Instance::create(
      {.type = type, .params = params, .owner_uid = 0, .state_quota = 64u << 20, .tc = {}}, reg);
  if (!inst) return fail(inst.error());
  auto id = engine.add_instance(std::move(*inst));
  if (!id) return fail(id.error());
  for (const auto& k : keys)
    if (auto r = engine.add_flow(k, *id); !r) return fail(r.error());

  gaon::BufferPool& pool = engine.pool();
  std::vector<gaon::pcapio::Frame> wire_out, host_out;
  auto collect = [&](gaon::MemPort& port, std::vector<gaon::pcapio::Frame>& out) {
    gaon::Packet* buf[gaon::kBurst];
    while (uint32_t n = port.collect(buf)) {
      for (uint32_t i = 0; i < n; ++i) {
        out.push_back({buf[i]->timestamp_ns, {buf[i]->data(), buf[i]->data() + buf[i]->len}});
        pool.free(buf[i]);
      }
    }
  };
  auto feed = [&](gaon::MemPort& port, const std::vector<gaon::pcapio::Frame>& frames,
                  size_t& next) {
    gaon::Packet* buf[gaon::kBurst];
    uint32_t n = 0;
    while (next < frames.size() && n < gaon::kBurst) {
      const auto& f = frames[next];
      gaon::Packet* p = pool.alloc();
      if (p == nullptr) break;
      if (!p->assign(f.bytes)) {
        pool.free(p);
        fmt::print(stderr, "gaon-pcap: frame {} is too large ({} bytes); skipped\n", next + 1,
                   f.bytes.size());
        ++next;
        continue;
      }
      p->timestamp_ns = f.timestamp_ns ? f.timestamp_ns : 1;
      buf[n++] = p;
      ++next;
    }
    const uint32_t q = port.inject({buf, n});
    for (uint32_t i = q; i < n; ++i) pool.free(buf[i]);
    next -= n - q;  // the ring was full: those go again next time
  };
  size_t wi = 0, hi = 0;
  uint64_t now = 1;
  for (int idle = 0; idle < 4;) {
    feed(wire, wire_in, wi);
    feed(host, host_in, hi);
    const uint32_t n = engine.poll(now++);
    collect(wire, wire_out);
    collect(host, host_out);
    const bool more = wi < wire_in.size() || hi < host_in.size() || !engine.tx_idle();
    idle = (n == 0 && !more) ? idle + 1 : 0;
  }
  if (!out_path.empty())
    if (auto r = gaon::pcapio::write(out_path, wire_out); !r) return fail(r.error());
  if (!host_out_path.empty())
    if (auto r = gaon::pcapio::write(host_out_path, host_out); !r) return fail(r.error());

  const auto stats = engine.stats();
  if (json) {
    fmt::print("{}\n", stats.dump(2));
  } else {
    fmt::print("frames in: wire {}, host {}; out: wire {}, host {}\n", wire_in.size(),
               host_in.size(), wire_out.size(), host_out.size());
    fmt::print("unmatched {}  not parsed {}\n", stats["unmatched"].get<uint64_t>(),
               stats["not_parsed"].dump());
    for (const auto& i : stats["instances"])
      fmt::print("instance {} ({}): {}\n", i["id"].get<uint32_t>(), i["type"].get<std::string>(),
                 i["counters"].dump());
  }
  return 0;
}
