// gaond: the gaon datapath daemon. Sidecar mode:
//
//   gaond --wire udp:LISTEN_IP:PORT --host udp:APP_IP:PORT --ikernel NAME [--param k=v ...]
//
// Clients send to LISTEN_IP:PORT; the ikernel instance attached to that address answers
// what it can; the rest goes to the application at APP_IP:PORT from a per-client socket,
// and the application's replies come back through the instance's egress hook.
// Repeat --wire/--host for several services. Bump in the wire (root):
//
//   gaond --wire afxdp:WIRE_IF --host afxdp:HOST_IF [--ikernel NAME --flow udp:IP:PORT]
//
// gaond sits between two interfaces; clients and the application keep their addresses.
// An XDP program hands gaond only attached flows and forwards the rest in the kernel
// (include/gaon/afxdp.h); afpacket:IFACE is the fallback without AF_XDP (every frame
// through gaond; include/gaon/afpacket.h). A server with one NIC (root):
//
//   gaond --local [--iface IF ...]
//
// gaond has no ports: the fast paths run on this host's own interfaces and sockets, gaond
// keeps their state and the lease (include/gaon/local.h, docs/one-nic.md). With a control socket
// (--control; on by default as root) applications create instances and attach them to their own
// sockets (libgaon, gaon-run, gaonctl; see docs/control.md), and --ikernel becomes optional.
// SIGUSR1 prints stats; SIGINT/SIGTERM stop it cleanly (stats are printed at exit).
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "gaon/afpacket.h"
#include "gaon/afxdp.h"
#include "gaon/control_server.h"
#include "gaon/engine.h"
#include "gaon/local.h"
#include "gaon/params.h"
#include "gaon/shaped_port.h"
#include "gaon/sidecar.h"

namespace {

int fail(const std::string& msg) {
  fmt::print(stderr, "gaond: error: {}\n", msg);
  return 2;
}

// A port's books against the engine's (Port::stats): every frame it delivered reached the
// engine, and every frame it took from the engine was sent or dropped under a reason.
nlohmann::json port_books(const nlohmann::json& ps, uint64_t engine_rx, uint64_t engine_tx) {
  uint64_t dropped = 0;
  const nlohmann::json tx_dropped = ps.value("tx_dropped", nlohmann::json::object());
  for (const auto& [k, v] : tx_dropped.items()) dropped += v.get<uint64_t>();
  const uint64_t rx = ps.value("rx", uint64_t{0}), tx = ps.value("tx", uint64_t{0});
  return {{"delivered", rx},
          {"engine_received", engine_rx},
          {"taken", engine_tx},
          {"sent", tx},
          {"dropped", tx_dropped},
          {"lost_before_gaond", ps.value("rx_dropped", nlohmann::json::object())},
          {"balanced", rx == engine_rx && engine_tx == tx + dropped}};
}

// The ports' stats and `more` (the bump's XDP program, idle waits), added to `j`, with the
// conservation check of the engine and both ports (all read between two polls).
void port_stats(gaon::Engine& engine, gaon::Port& wire, gaon::Port& host,
                const std::function<void(nlohmann::json&)>& more, nlohmann::json& j) {
  engine.execute([&] {
    j["wire"]["port_stats"] = wire.stats();
    j["host"]["port_stats"] = host.stats();
    const auto& c = engine.counters();
    nlohmann::json& cons = j["conservation"];
    cons["wire_port"] = port_books(j["wire"]["port_stats"], c.wire_rx.get(), c.wire_tx.get());
    cons["host_port"] = port_books(j["host"]["port_stats"], c.host_rx.get(), c.host_tx.get());
    cons["all_balanced"] = cons.value("balanced", false) && cons["wire_port"]["balanced"] == true &&
                           cons["host_port"]["balanced"] == true;
    if (more) more(j);
  });
}

// Engine stats plus, for each instance, its type's own `stats` operation and the ports.
nlohmann::json full_stats(gaon::Engine& engine, gaon::Port& wire, gaon::Port& host,
                          const std::function<void(nlohmann::json&)>& more) {
  nlohmann::json j = engine.stats();
  for (auto& inst : j["instances"]) {
    const uint32_t id = inst["id"];
    const auto* type = gaon::Registry::global().find(inst["type"].get<std::string>());
    for (const auto& op : type->ops)
      if (op.name == "stats")
        if (auto r = engine.call(id, "stats", {})) inst["state"] = *r;
  }
  port_stats(engine, wire, host, more, j);
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "gaond: the gaon datapath, as a sidecar (UDP sockets in front of an application) or a "
      "bump in the wire (AF_XDP between two interfaces), or on a server with one NIC "
      "(--local)"};
  app.set_version_flag("--version", "gaond " GAON_VERSION);
  std::vector<std::string> wire_specs, host_specs, flow_specs;
  std::string xdp_mode = "auto";
  uint32_t lease_ms = 50;
  uint32_t xdp_memory_mb = GAON_FP_CHUNKS_DEFAULT;
  std::string type;
  std::vector<std::string> params;
  std::string quota_text = "256M";
  uint32_t weight = 1;
  uint64_t rate_bps = 0, wire_rate_bps = 0;
  double nat_idle_s = 60;
  int cpu = -1;
  bool busy_poll = false, json_stats = false, list = false;
  std::string control_path = geteuid() == 0 ? gaon::control::kDefaultPath : "none";
  uint32_t max_instances = 16;
  std::string max_state_text = "1G";
  std::string state_dir;
  app.add_flag("--list", list, "list the ikernel types and exit");
  bool local = false;
  std::vector<std::string> ifaces;
  app.add_flag("--local", local,
               "a server with one NIC: no ports; the ikernels' fast paths run on this host's "
               "own interfaces and sockets, gaond keeps their state and serves the control "
               "socket (docs/one-nic.md)");
  app.add_option("--iface", ifaces,
                 "--local: an interface to run on (repeatable; default: every interface that "
                 "is up, not loopback, and has an address)");
  app.add_option("--wire", wire_specs,
                 "where clients are: udp:IP:PORT, the service address they send to (sidecar; "
                 "repeat with --host for several services), or afxdp:IFACE (every receive queue) "
                 "/ afpacket:IFACE, the interface facing them (a bump in the wire)");
  app.add_option("--host", host_specs,
                 "where the application is: udp:IP:PORT it listens on (one per --wire), or "
                 "afxdp:IFACE / afpacket:IFACE, the interface facing it");
  app.add_option("-k,--ikernel", type,
                 "ikernel type to attach to every service address (optional with --control)");
  app.add_option("-p,--param", params, "ikernel parameter key=value (repeatable)");
  app.add_option("--state-quota", quota_text, "bytes of state the instance may use")
      ->capture_default_str();
  app.add_option("--weight", weight, "the instance's share of the wire (DRR weight, 1..1000)")
      ->capture_default_str();
  app.add_option("--rate-bps", rate_bps, "rate limit of the instance's replies, bits/s (0: none)");
  app.add_option("--flow", flow_specs,
                 "udp:IP:PORT the --ikernel instance is attached to (repeatable; default in "
                 "sidecar mode: every --wire address)");
  app.add_option("--xdp-mode", xdp_mode,
                 "afxdp: attach the steering program in native or generic XDP (auto: native, "
                 "but generic between veths, where it is cheaper, or without native support)")
      ->capture_default_str();
  app.add_option("--lease-ms", lease_ms,
                 "afxdp: when gaond has not polled for this long (stopped, hung), the steering "
                 "program forwards attached flows in the kernel until it polls again; kvcache "
                 "then starts afresh (0: only a gaond that is gone is bypassed)")
      ->check(CLI::Range(0u, 60000u))
      ->capture_default_str();
  app.add_option("--xdp-memory-mb", xdp_memory_mb,
                 "afxdp: memory for the fast paths' state in the kernel (kvcache's tables, "
                 "shared by its instances in MiB chunks; an instance that does not fit runs in "
                 "gaond only, and says why in its stats)")
      ->check(CLI::Range(1u, 65536u))
      ->capture_default_str();
  app.add_option("--wire-rate-bps", wire_rate_bps,
                 "emulate a wire of this many bits/s shared by all services (0: as fast as "
                 "the sockets go); the arbiter's weights then decide who gets it");
  app.add_option("--nat-idle-timeout", nat_idle_s,
                 "seconds before an idle client's NAT entry "
                 "is closed")
      ->capture_default_str();
  app.add_option("--cpu", cpu, "pin the datapath thread to this CPU");
  app.add_flag("--busy-poll", busy_poll, "never block when idle (lowest latency, a whole core)");
  app.add_flag("--json-stats", json_stats, "print stats as JSON (stdout) on SIGUSR1 and at exit");
  app.add_option("--control", control_path,
                 "control socket for gaonctl and libgaon ('none': no control plane; default "
                 "/run/gaon/gaond.sock as root, none otherwise)")
      ->capture_default_str();
  app.add_option("--max-instances-per-owner", max_instances,
                 "instances one non-root user may create through the control socket")
      ->capture_default_str();
  app.add_option("--max-state-per-owner", max_state_text,
                 "state bytes one non-root user's instances may take in total")
      ->capture_default_str();
  auto* state_dir_opt = app.add_option(
      "--state-dir", state_dir,
      "where the persistent instances (gaonctl create) and their flows are recorded, to be "
      "restored when gaond starts again ('' or 'none': nowhere; default /var/lib/gaon as root "
      "with the default control socket, nowhere otherwise)");
  CLI11_PARSE(app, argc, argv);

  const auto& reg = gaon::Registry::global();
  if (list) {
    for (const auto* t : reg.list()) fmt::print("{:<14} {}\n", t->name, t->description);
    return 0;
  }
  if (local && (!wire_specs.empty() || !host_specs.empty()))
    return fail("--local runs on this host's interfaces: it takes no --wire or --host");
  if (!local && !ifaces.empty()) return fail("--iface is for --local");
  if (local && geteuid() != 0)
    return fail("--local loads XDP, tc and socket programs: run as root");
  if (local && !type.empty() && flow_specs.empty())
    return fail("--ikernel with --local needs --flow udp:IP:PORT (what to attach)");
  if (local) wire_specs = host_specs = {"local"};  // (the engine's two ports carry no frames)
  if (wire_specs.empty()) return fail("--wire udp:IP:PORT is required");
  if (host_specs.empty()) return fail("--host udp:IP:PORT is required");
  if (wire_specs.size() != host_specs.size())
    return fail(fmt::format("give one --host per --wire ({} --wire, {} --host)", wire_specs.size(),
                            host_specs.size()));
  if (type.empty() && control_path == "none")
    return fail("--ikernel is required without a control socket (see --list, --control)");
  if (state_dir_opt->count() == 0 && geteuid() == 0 && control_path == gaon::control::kDefaultPath)
    state_dir = gaon::control::kDefaultStateDir;
  if (state_dir == "none") state_dir.clear();
  if (!state_dir.empty() && control_path == "none")
    return fail("--state-dir records what the control socket creates: it needs --control");
  auto max_state = gaon::parse_param_value(gaon::ParamType::size, max_state_text);
  if (!max_state) return fail("--max-state-per-owner " + max_state.error());
  // afxdp:IFACE pairs make a bump in the wire; udp:IP:PORT pairs, sidecar services.
  const bool xdp_bump = wire_specs[0].starts_with("afxdp:") || host_specs[0].starts_with("afxdp:");
  const bool packet_bump =
      wire_specs[0].starts_with("afpacket:") || host_specs[0].starts_with("afpacket:");
  const bool bump = xdp_bump || packet_bump || local;
  std::optional<gaon::afxdp::Spec> bump_wire, bump_host;
  std::string packet_wire, packet_host;
  std::vector<gaon::FlowKey> ikernel_flows;
  for (const auto& f : flow_specs) {
    auto k = gaon::FlowKey::parse(f);
    if (!k) return fail("--flow " + k.error());
    ikernel_flows.push_back(*k);
  }
  if (bump && !local) {
    if (wire_specs.size() != 1) return fail("a bump in the wire takes one --wire/--host pair");
    auto kind = [](const std::string& spec) { return spec.substr(0, spec.find(':')); };
    if (kind(wire_specs[0]) != kind(host_specs[0]))
      return fail("--wire and --host must be the same kind (afxdp: or afpacket:)");
    if (xdp_bump) {
      auto w = gaon::afxdp::parse_spec(wire_specs[0]);
      if (!w) return fail("--wire " + w.error());
      auto h = gaon::afxdp::parse_spec(host_specs[0]);
      if (!h) return fail("--host " + h.error());
      bump_wire = *w;
      bump_host = *h;
    } else {
      auto w = gaon::afpacket::parse_spec(wire_specs[0]);
      if (!w) return fail("--wire " + w.error());
      auto h = gaon::afpacket::parse_spec(host_specs[0]);
      if (!h) return fail("--host " + h.error());
      if (*w == *h) return fail("--wire and --host are the same interface");
      packet_wire = *w;
      packet_host = *h;
    }
    if (!type.empty() && ikernel_flows.empty())
      return fail("--ikernel in a bump in the wire needs --flow udp:IP:PORT (what to attach)");
    if (wire_rate_bps) return fail("--wire-rate-bps is for sidecar services (udp:IP:PORT)");
  }
  std::vector<gaon::control::Service> services;
  for (size_t i = 0; i < wire_specs.size() && !bump; ++i) {
    auto w = gaon::sidecar::parse_udp_address(wire_specs[i]);
    if (!w) return fail("--wire " + w.error());
    auto h = gaon::sidecar::parse_udp_address(host_specs[i]);
    if (!h) return fail("--host " + h.error());
    for (const auto& s : services)
      if (std::memcmp(&s.wire, &*w, sizeof(*w)) == 0)
        return fail(fmt::format("--wire {} is given twice", wire_specs[i]));
    services.push_back({.wire = *w, .host = *h});
  }
  auto quota = gaon::parse_param_value(gaon::ParamType::size, quota_text);
  if (!quota) return fail("--state-quota " + quota.error());
  if (nat_idle_s <= 0) return fail("--nat-idle-timeout must be positive");
  if (cpu >= 0 && cpu >= int(std::thread::hardware_concurrency()))
    return fail(fmt::format("--cpu {}: this machine has {} CPUs", cpu,
                            std::thread::hardware_concurrency()));

  auto eng = gaon::Engine::create({.pool_frames = local ? 1024u : bump ? 16384u : 8192u});
  if (!eng) return fail(eng.error());
  gaon::Engine& engine = **eng;
  gaon::Port* wire_port = nullptr;
  gaon::Port* host_port = nullptr;
  std::function<void(int)> idle_wait;
  std::function<void()> wake;
  std::function<void(nlohmann::json&)> more_stats;
  // Sidecar: one ServicePort + AppPort per service, grouped into the engine's two ports,
  // and where they keep datagrams larger than a frame (outlives them).
  std::unique_ptr<gaon::sidecar::OversizeStore> oversize;
  std::vector<std::unique_ptr<gaon::sidecar::ServicePort>> wires;
  std::vector<std::unique_ptr<gaon::sidecar::AppPort>> hosts;
  gaon::sidecar::PortGroup wire_group("wire", gaon::sidecar::PortGroup::Route::by_source,
                                      engine.pool());
  gaon::sidecar::PortGroup host_group("host", gaon::sidecar::PortGroup::Route::by_destination,
                                      engine.pool());
  std::unique_ptr<gaon::sidecar::Waiter> waiter;
  std::optional<gaon::ShapedPort> shaped_wire;
  // Bump: AF_XDP sockets on both interfaces and the XDP steering program.
  std::unique_ptr<gaon::afxdp::Bump> xdp;
  // Bump with AF_PACKET: two packet sockets, everything through the engine.
  std::unique_ptr<gaon::afpacket::AfPacketPort> pkt_wire, pkt_host;
  // One NIC: the programs on this host's interfaces, no frames through gaond.
  std::unique_ptr<gaon::local::Host> one_nic;
  gaon::FdWaiter fd_waiter;
  if (local) {
    auto h = gaon::local::Host::open({.ifaces = ifaces,
                                      .xdp_mode = xdp_mode,
                                      .lease_ns = uint64_t(lease_ms) * 1'000'000,
                                      .fp_chunks = xdp_memory_mb},
                                     engine.pool());
    if (!h) return fail(h.error());
    one_nic = std::move(*h);
    engine.set_flow_observer(one_nic.get());
    wire_port = &one_nic->wire();
    host_port = &one_nic->host();
    idle_wait = [&](int ms) { one_nic->wait(ms); };
    wake = [&] { one_nic->wake(); };
    more_stats = [&](nlohmann::json& j) { j["local"] = one_nic->stats(); };
    fmt::print(stderr, "gaond: {}\n", one_nic->describe());
  } else if (packet_bump) {
    auto w = gaon::afpacket::AfPacketPort::open(packet_wire, engine.pool());
    if (!w) return fail(w.error());
    auto h = gaon::afpacket::AfPacketPort::open(packet_host, engine.pool());
    if (!h) return fail(h.error());
    pkt_wire = std::move(*w);
    pkt_host = std::move(*h);
    fd_waiter.watch(pkt_wire->fd());
    fd_waiter.watch(pkt_host->fd());
    wire_port = pkt_wire.get();
    host_port = pkt_host.get();
    idle_wait = [&](int ms) { fd_waiter.wait(ms); };
    wake = [&] { fd_waiter.wake(); };
    more_stats = [&](nlohmann::json& j) { j["idle_waits"] = fd_waiter.waits(); };
    fmt::print(stderr,
               "gaond: bump in the wire (AF_PACKET: every frame through gaond, no fail-open): "
               "{} (clients) | {} (application)\n",
               wire_specs[0], host_specs[0]);
  } else if (xdp_bump) {
    auto b = gaon::afxdp::Bump::open(*bump_wire, *bump_host, engine.pool(),
                                     {.xdp_mode = xdp_mode,
                                      .lease_ns = uint64_t(lease_ms) * 1'000'000,
                                      .fp_chunks = xdp_memory_mb});
    if (!b) return fail(b.error());
    xdp = std::move(*b);
    engine.set_flow_observer(xdp.get());
    wire_port = &xdp->wire();
    host_port = &xdp->host();
    idle_wait = [&](int ms) { xdp->wait(ms); };
    wake = [&] { xdp->wake(); };
    more_stats = [&](nlohmann::json& j) { j["bump"] = xdp->stats(); };
    fmt::print(stderr, "gaond: bump in the wire: {} (clients) | {} (application)\n", wire_specs[0],
               host_specs[0]);
    fmt::print(stderr, "gaond: {}\n", xdp->describe());
  } else {
    auto big = gaon::sidecar::OversizeStore::create();
    if (!big) return fail(big.error());
    oversize = std::move(*big);
    for (size_t i = 0; i < services.size(); ++i) {
      auto w = gaon::sidecar::ServicePort::open(services[i].wire, engine.pool(), oversize.get());
      if (!w) return fail(w.error());
      auto h = gaon::sidecar::AppPort::open(services[i].host, services[i].wire, engine.pool(),
                                            {.max_clients = 4096,
                                             .idle_timeout_ns = uint64_t(nat_idle_s * 1e9),
                                             .oversize = oversize.get()});
      if (!h) return fail(h.error());
      wire_group.add(**w, services[i].wire);
      host_group.add(**h, services[i].wire);
      wires.push_back(std::move(*w));
      hosts.push_back(std::move(*h));
      fmt::print(stderr, "gaond: wire {} (clients), host {} (application)\n", wire_specs[i],
                 host_specs[i]);
    }
    std::vector<gaon::sidecar::ServicePort*> wire_ptrs;
    std::vector<gaon::sidecar::AppPort*> host_ptrs;
    for (auto& w : wires) wire_ptrs.push_back(w.get());
    for (auto& h : hosts) host_ptrs.push_back(h.get());
    auto wt = gaon::sidecar::Waiter::open(wire_ptrs, host_ptrs);
    if (!wt) return fail(wt.error());
    waiter = std::move(*wt);
    if (wire_rate_bps) {
      shaped_wire.emplace(wire_group, wire_rate_bps);
      fmt::print(stderr, "gaond: the wire is shaped to {} bit/s\n", wire_rate_bps);
    }
    wire_port = shaped_wire ? static_cast<gaon::Port*>(&*shaped_wire) : &wire_group;
    host_port = &host_group;
    idle_wait = [&](int ms) { waiter->wait(ms); };
    wake = [&] { waiter->wake(); };
    more_stats = [&](nlohmann::json& j) { j["idle_waits"] = waiter->waits(); };
    if (ikernel_flows.empty())
      for (const auto& w : wire_specs) ikernel_flows.push_back(*gaon::FlowKey::parse(w));
  }
  engine.set_ports(wire_port, host_port);
  std::vector<gaon::FlowKey> initial_flows;
  uint32_t initial_id = 0;
  if (!type.empty()) {
    auto inst = gaon::Instance::create({.type = type,
                                        .params = params,
                                        .owner_uid = uint32_t(getuid()),
                                        .state_quota = std::get<uint64_t>(*quota),
                                        .tc = {.weight = weight, .rate_bps = rate_bps}},
                                       reg);
    if (!inst) return fail(inst.error());
    const std::vector<std::string> described = (*inst)->params();
    auto id = engine.add_instance(std::move(*inst));
    if (!id) return fail(id.error());
    for (const auto& k : ikernel_flows) {
      initial_flows.push_back(k);
      if (auto r = engine.add_flow(k, *id); !r) return fail(r.error());
    }
    initial_id = *id;
    fmt::print(stderr, "gaond: ikernel {} (instance {}), state quota {} bytes, weight {}{}\n", type,
               *id, std::get<uint64_t>(*quota), weight,
               rate_bps ? fmt::format(", rate limit {} bit/s", rate_bps) : "");
    for (const auto& p : described) fmt::print(stderr, "gaond:   {}\n", p);
  }
  fmt::print(stderr, "gaond: datapath {}, {}\n",
             cpu >= 0 ? fmt::format("on CPU {}", cpu) : "unpinned",
             busy_poll ? "busy-polling" : "blocking when idle");

  // Signals go to this (main) thread only; the datapath never sees them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  // Idle: wait for either port to become readable, 10 ms at most (so stop and control
  // requests are seen promptly); control changes wake it at once.
  if (!busy_poll) engine.set_waker(wake);
  std::atomic<bool> stop{false};
  std::thread datapath([&] {
    const int idle_ms = lease_ms == 0 ? 10 : int(std::clamp(lease_ms / 4, 1u, 10u));
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    if (busy_poll)
      engine.run(stop);
    else  // an event loop: block as soon as there is nothing more to do (and wake up
          // often enough to renew the lease while idle)
      engine.run(
          stop, [&] { idle_wait(idle_ms); }, 1);
  });
  std::unique_ptr<gaon::control::Server> control;
  if (control_path != "none") {
    auto srv = gaon::control::Server::start(
        engine, reg,
        {.path = control_path,
         .max_instances_per_owner = max_instances,
         .max_state_per_owner = std::get<uint64_t>(*max_state),
         .more_stats =
             [&](nlohmann::json& j) { port_stats(engine, *wire_port, *host_port, more_stats, j); },
         .state_dir = state_dir},  // restores what it records, before the first request
        services);
    if (!srv) {
      stop = true;
      datapath.join();
      return fail(srv.error());
    }
    control = std::move(*srv);
    if (initial_id != 0)
      control->adopt(initial_id, uint32_t(getuid()), type, std::get<uint64_t>(*quota),
                     initial_flows);
    fmt::print(stderr, "gaond: control socket {} (max {} instances, {} state bytes per owner)\n",
               control_path, max_instances, std::get<uint64_t>(*max_state));
  }
  fmt::print(stderr, "gaond: ready\n");

  auto print_stats = [&] {
    const auto j = full_stats(engine, *wire_port, *host_port, more_stats);
    if (json_stats) {
      fmt::print("{}\n", j.dump(2));
      std::fflush(stdout);
    } else {
      fmt::print(stderr, "gaond: wire rx {} tx {}, host rx {} tx {}, unmatched {}\n",
                 j["wire"]["rx"].get<uint64_t>(), j["wire"]["tx"].get<uint64_t>(),
                 j["host"]["rx"].get<uint64_t>(), j["host"]["tx"].get<uint64_t>(),
                 j["unmatched"].get<uint64_t>());
      for (const auto& i : j["instances"])
        fmt::print(stderr, "gaond: instance {} ({}): {}{}\n", i["id"].get<uint32_t>(),
                   i["type"].get<std::string>(), i["counters"].dump(),
                   i.contains("state") ? "\ngaond:   state " + i["state"].dump() : "");
    }
  };
  for (;;) {
    int sig = 0;
    sigwait(&sigs, &sig);
    if (sig == SIGUSR1) {
      print_stats();
      continue;
    }
    break;
  }
  fmt::print(stderr, "gaond: stopping\n");
  control.reset();  // no more changes; connection-owned instances stay until exit
  stop = true;
  datapath.join();
  print_stats();
  return 0;
}
