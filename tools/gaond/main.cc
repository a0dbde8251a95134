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
//
// Everything the command line says can come from a config file (--config FILE, TOML;
// config.h), which also names instances to create at start; --check-config FILE checks
// one. As a systemd service (packaging/gaond.service): READY=1 once the datapath runs,
// WATCHDOG=1 while it keeps running, STOPPING=1. SIGHUP re-reads the config file and
// applies its [[instance]] tables and log-level; SIGUSR1 prints stats; SIGINT/SIGTERM stop
// it cleanly (stats are printed at exit).
//
// The code reads in that order: options (options.h) → config (config.h) → plan (checked
// settings, nothing opened) → datapath (ports and services of the mode) → instances → run.
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "config.h"
#include "gaon/afpacket.h"
#include "gaon/afxdp.h"
#include "gaon/control_server.h"
#include "gaon/engine.h"
#include "gaon/local.h"
#include "gaon/metrics.h"
#include "gaon/params.h"
#include "gaon/shaped_port.h"
#include "gaon/sidecar.h"
#include "log.h"
#include "options.h"

namespace gaond {
namespace {

using gaon::Error;
using gaon::Result;

int fail(const std::string& msg) {
  log(Level::error, "{}", msg);
  return 2;
}

// ---------------------------------------------------------------- the plan

// What the settings say, checked, before anything is opened.
struct Plan {
  enum class Mode { sidecar, xdp_bump, packet_bump, local } mode = Mode::sidecar;
  std::vector<gaon::control::Service> services;         // sidecar
  std::optional<gaon::afxdp::Spec> xdp_wire, xdp_host;  // bump over AF_XDP
  std::string packet_wire, packet_host;                 // bump over AF_PACKET
  uint64_t max_state = 0;
  bool bump() const { return mode != Mode::sidecar; }
};

// An instance's settings, checked as far as they can be without making it.
Result<void> check_instance(const InstanceSpec& s, const Plan& plan) {
  const std::string what = s.name.empty() ? "--ikernel" : "instance '" + s.name + "'";
  const auto* type = gaon::Registry::global().find(s.type);
  if (!type) return gaon::make_error("{}: unknown ikernel type '{}' (see --list)", what, s.type);
  if (auto p = gaon::Params::parse(type->params, s.params); !p)
    return gaon::make_error("{}: {}", what, p.error());
  if (auto q = gaon::parse_param_value(gaon::ParamType::size, s.quota); !q)
    return gaon::make_error("{}: state-quota {}", what, q.error());
  if (s.weight < 1 || s.weight > 1000)
    return gaon::make_error("{}: weight {} is not in 1..1000", what, s.weight);
  for (const auto& f : s.flows)
    if (auto k = gaon::FlowKey::parse(f); !k)
      return gaon::make_error("{}: --flow {}", what, k.error());
  if ((plan.bump() || !s.name.empty()) && s.flows.empty())
    return gaon::make_error("{} {}needs --flow udp:IP:PORT (what to attach)", what,
                            !s.name.empty()                  ? ""
                            : plan.mode == Plan::Mode::local ? "with --local "
                                                             : "in a bump in the wire ");
  return {};
}

Result<Plan> make_plan(Options& o, const std::vector<InstanceSpec>& instances) {
  Plan plan;
  if (o.local && (!o.wire.empty() || !o.host.empty()))
    return Error{"--local runs on this host's interfaces: it takes no --wire or --host"};
  if (!o.local && !o.ifaces.empty()) return Error{"--iface is for --local"};
  if (o.local && geteuid() != 0)
    return Error{"--local loads XDP, tc and socket programs: run as root"};
  if (o.local && !o.ikernel.type.empty() && o.ikernel.flows.empty())
    return Error{"--ikernel with --local needs --flow udp:IP:PORT (what to attach)"};
  if (!o.local) {
    if (o.wire.empty()) return Error{"--wire udp:IP:PORT is required"};
    if (o.host.empty()) return Error{"--host udp:IP:PORT is required"};
    if (o.wire.size() != o.host.size())
      return gaon::make_error("give one --host per --wire ({} --wire, {} --host)", o.wire.size(),
                              o.host.size());
  }
  if (o.ikernel.type.empty() && instances.empty() && o.control == "none")
    return Error{"--ikernel is required without a control socket (see --list, --control)"};
  if (!o.state_dir_given && geteuid() == 0 && o.control == gaon::control::kDefaultPath)
    o.state_dir = gaon::control::kDefaultStateDir;
  if (o.state_dir == "none") o.state_dir.clear();
  if (!o.state_dir.empty() && o.control == "none")
    return Error{"--state-dir records what the control socket creates: it needs --control"};
  auto max_state = gaon::parse_param_value(gaon::ParamType::size, o.max_state);
  if (!max_state) return Error{"--max-state-per-owner " + max_state.error()};
  plan.max_state = std::get<uint64_t>(*max_state);
  if (o.nat_idle_s <= 0) return Error{"--nat-idle-timeout must be positive"};
  if (o.cpu >= 0 && o.cpu >= int(std::thread::hardware_concurrency()))
    return gaon::make_error("--cpu {}: this machine has {} CPUs", o.cpu,
                            std::thread::hardware_concurrency());

  const auto kind = [](const std::string& spec) { return spec.substr(0, spec.find(':')); };
  if (o.local) {
    plan.mode = Plan::Mode::local;
  } else if (kind(o.wire[0]) == "afxdp" || kind(o.host[0]) == "afxdp" ||
             kind(o.wire[0]) == "afpacket" || kind(o.host[0]) == "afpacket") {
    if (o.wire.size() != 1) return Error{"a bump in the wire takes one --wire/--host pair"};
    if (kind(o.wire[0]) != kind(o.host[0]))
      return Error{"--wire and --host must be the same kind (afxdp: or afpacket:)"};
    if (kind(o.wire[0]) == "afxdp") {
      plan.mode = Plan::Mode::xdp_bump;
      auto w = gaon::afxdp::parse_spec(o.wire[0]);
      if (!w) return Error{"--wire " + w.error()};
      auto h = gaon::afxdp::parse_spec(o.host[0]);
      if (!h) return Error{"--host " + h.error()};
      plan.xdp_wire = *w;
      plan.xdp_host = *h;
    } else {
      plan.mode = Plan::Mode::packet_bump;
      auto w = gaon::afpacket::parse_spec(o.wire[0]);
      if (!w) return Error{"--wire " + w.error()};
      auto h = gaon::afpacket::parse_spec(o.host[0]);
      if (!h) return Error{"--host " + h.error()};
      if (*w == *h) return Error{"--wire and --host are the same interface"};
      plan.packet_wire = *w;
      plan.packet_host = *h;
    }
    if (o.wire_rate_bps) return Error{"--wire-rate-bps is for sidecar services (udp:IP:PORT)"};
  } else {
    for (size_t i = 0; i < o.wire.size(); ++i) {
      auto w = gaon::sidecar::parse_udp_address(o.wire[i]);
      if (!w) return Error{"--wire " + w.error()};
      auto h = gaon::sidecar::parse_udp_address(o.host[i]);
      if (!h) return Error{"--host " + h.error()};
      for (const auto& s : plan.services)
        if (std::memcmp(&s.wire, &*w, sizeof(*w)) == 0)
          return gaon::make_error("--wire {} is given twice", o.wire[i]);
      plan.services.push_back({.wire = *w, .host = *h});
    }
    // In sidecar mode, --ikernel is attached to every service unless --flow says otherwise.
    if (!o.ikernel.type.empty() && o.ikernel.flows.empty()) o.ikernel.flows = o.wire;
  }
  if (!o.ikernel.type.empty())
    if (auto r = check_instance(o.ikernel, plan); !r) return Error{r.error()};
  for (const auto& s : instances)
    if (auto r = check_instance(s, plan); !r)
      return gaon::make_error("line {}: {}", s.line, r.error());
  return plan;
}

// ---------------------------------------------------------------- the datapath

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

// The engine, the ports of the mode and how to wait for and wake them.
struct Datapath {
  std::unique_ptr<gaon::Engine> engine;
  gaon::Port* wire = nullptr;
  gaon::Port* host = nullptr;
  std::function<void(int)> idle_wait;
  std::function<void()> wake;
  std::function<void(nlohmann::json&)> more_stats;  // the mode's own (XDP program, waits)
  // Sidecar: one ServicePort + AppPort per service, grouped into the engine's two ports,
  // and where they keep datagrams larger than a frame (outlives them).
  std::unique_ptr<gaon::sidecar::OversizeStore> oversize;
  std::vector<std::unique_ptr<gaon::sidecar::ServicePort>> wires;
  std::vector<std::unique_ptr<gaon::sidecar::AppPort>> hosts;
  std::optional<gaon::sidecar::PortGroup> wire_group, host_group;
  std::unique_ptr<gaon::sidecar::Waiter> waiter;
  std::optional<gaon::ShapedPort> shaped_wire;
  std::unique_ptr<gaon::afxdp::Bump> xdp;                            // bump: AF_XDP + steering
  std::unique_ptr<gaon::afpacket::AfPacketPort> pkt_wire, pkt_host;  // bump: AF_PACKET
  std::unique_ptr<gaon::local::Host> one_nic;                        // one NIC: no frames
  gaon::FdWaiter fd_waiter;

  // The ports' stats and `more_stats`, added to `j`, with the conservation check of the
  // engine and both ports (all read between two polls).
  void port_stats(nlohmann::json& j) {
    engine->execute([&] {
      j["wire"]["port_stats"] = wire->stats();
      j["host"]["port_stats"] = host->stats();
      const auto& c = engine->counters();
      nlohmann::json& cons = j["conservation"];
      cons["wire_port"] = port_books(j["wire"]["port_stats"], c.wire_rx.get(), c.wire_tx.get());
      cons["host_port"] = port_books(j["host"]["port_stats"], c.host_rx.get(), c.host_tx.get());
      cons["all_balanced"] = cons.value("balanced", false) &&
                             cons["wire_port"]["balanced"] == true &&
                             cons["host_port"]["balanced"] == true;
      if (more_stats) more_stats(j);
    });
  }

  // Engine stats plus, for each instance, its type's own `stats` operation and the ports.
  nlohmann::json full_stats() {
    nlohmann::json j = engine->stats();
    for (auto& inst : j["instances"]) {
      const uint32_t id = inst["id"];
      const auto* type = gaon::Registry::global().find(inst["type"].get<std::string>());
      for (const auto& op : type->ops)
        if (op.name == "stats")
          if (auto r = engine->call(id, "stats", {})) inst["state"] = *r;
    }
    port_stats(j);
    return j;
  }
};

Result<void> open_local(const Options& o, Datapath& dp) {
  auto h = gaon::local::Host::open({.ifaces = o.ifaces,
                                    .xdp_mode = o.xdp_mode,
                                    .lease_ns = uint64_t(o.lease_ms) * 1'000'000,
                                    .fp_chunks = o.xdp_memory_mb},
                                   dp.engine->pool());
  if (!h) return Error{h.error()};
  dp.one_nic = std::move(*h);
  dp.engine->set_flow_observer(dp.one_nic.get());
  dp.wire = &dp.one_nic->wire();
  dp.host = &dp.one_nic->host();
  dp.idle_wait = [&dp](int ms) { dp.one_nic->wait(ms); };
  dp.wake = [&dp] { dp.one_nic->wake(); };
  dp.more_stats = [&dp](nlohmann::json& j) { j["local"] = dp.one_nic->stats(); };
  log(Level::info, "{}", dp.one_nic->describe());
  return {};
}

Result<void> open_packet_bump(const Options& o, const Plan& plan, Datapath& dp) {
  auto w = gaon::afpacket::AfPacketPort::open(plan.packet_wire, dp.engine->pool());
  if (!w) return Error{w.error()};
  auto h = gaon::afpacket::AfPacketPort::open(plan.packet_host, dp.engine->pool());
  if (!h) return Error{h.error()};
  dp.pkt_wire = std::move(*w);
  dp.pkt_host = std::move(*h);
  dp.fd_waiter.watch(dp.pkt_wire->fd());
  dp.fd_waiter.watch(dp.pkt_host->fd());
  dp.wire = dp.pkt_wire.get();
  dp.host = dp.pkt_host.get();
  dp.idle_wait = [&dp](int ms) { dp.fd_waiter.wait(ms); };
  dp.wake = [&dp] { dp.fd_waiter.wake(); };
  dp.more_stats = [&dp](nlohmann::json& j) { j["idle_waits"] = dp.fd_waiter.waits(); };
  log(Level::info,
      "bump in the wire (AF_PACKET: every frame through gaond, no fail-open): {} (clients) | {} "
      "(application)",
      o.wire[0], o.host[0]);
  return {};
}

Result<void> open_xdp_bump(const Options& o, const Plan& plan, Datapath& dp) {
  auto b = gaon::afxdp::Bump::open(*plan.xdp_wire, *plan.xdp_host, dp.engine->pool(),
                                   {.xdp_mode = o.xdp_mode,
                                    .lease_ns = uint64_t(o.lease_ms) * 1'000'000,
                                    .fp_chunks = o.xdp_memory_mb});
  if (!b) return Error{b.error()};
  dp.xdp = std::move(*b);
  dp.engine->set_flow_observer(dp.xdp.get());
  dp.wire = &dp.xdp->wire();
  dp.host = &dp.xdp->host();
  dp.idle_wait = [&dp](int ms) { dp.xdp->wait(ms); };
  dp.wake = [&dp] { dp.xdp->wake(); };
  dp.more_stats = [&dp](nlohmann::json& j) { j["bump"] = dp.xdp->stats(); };
  log(Level::info, "bump in the wire: {} (clients) | {} (application)", o.wire[0], o.host[0]);
  log(Level::info, "{}", dp.xdp->describe());
  return {};
}

Result<void> open_sidecar(const Options& o, const Plan& plan, Datapath& dp) {
  using gaon::sidecar::PortGroup;
  dp.wire_group.emplace("wire", PortGroup::Route::by_source, dp.engine->pool());
  dp.host_group.emplace("host", PortGroup::Route::by_destination, dp.engine->pool());
  auto big = gaon::sidecar::OversizeStore::create();
  if (!big) return Error{big.error()};
  dp.oversize = std::move(*big);
  for (size_t i = 0; i < plan.services.size(); ++i) {
    const auto& s = plan.services[i];
    auto w = gaon::sidecar::ServicePort::open(s.wire, dp.engine->pool(), dp.oversize.get());
    if (!w) return Error{w.error()};
    auto h = gaon::sidecar::AppPort::open(s.host, s.wire, dp.engine->pool(),
                                          {.max_clients = 4096,
                                           .idle_timeout_ns = uint64_t(o.nat_idle_s * 1e9),
                                           .oversize = dp.oversize.get()});
    if (!h) return Error{h.error()};
    dp.wire_group->add(**w, s.wire);
    dp.host_group->add(**h, s.wire);
    dp.wires.push_back(std::move(*w));
    dp.hosts.push_back(std::move(*h));
    log(Level::info, "wire {} (clients), host {} (application)", o.wire[i], o.host[i]);
  }
  std::vector<gaon::sidecar::ServicePort*> wire_ptrs;
  std::vector<gaon::sidecar::AppPort*> host_ptrs;
  for (auto& w : dp.wires) wire_ptrs.push_back(w.get());
  for (auto& h : dp.hosts) host_ptrs.push_back(h.get());
  auto wt = gaon::sidecar::Waiter::open(wire_ptrs, host_ptrs);
  if (!wt) return Error{wt.error()};
  dp.waiter = std::move(*wt);
  if (o.wire_rate_bps) {
    dp.shaped_wire.emplace(*dp.wire_group, o.wire_rate_bps);
    log(Level::info, "the wire is shaped to {} bit/s", o.wire_rate_bps);
  }
  dp.wire = dp.shaped_wire ? static_cast<gaon::Port*>(&*dp.shaped_wire) : &*dp.wire_group;
  dp.host = &*dp.host_group;
  dp.idle_wait = [&dp](int ms) { dp.waiter->wait(ms); };
  dp.wake = [&dp] { dp.waiter->wake(); };
  dp.more_stats = [&dp](nlohmann::json& j) { j["idle_waits"] = dp.waiter->waits(); };
  return {};
}

Result<void> open_datapath(const Options& o, const Plan& plan, Datapath& dp) {
  const bool local = plan.mode == Plan::Mode::local;
  auto eng = gaon::Engine::create({.pool_frames = local ? 1024u : plan.bump() ? 16384u : 8192u});
  if (!eng) return Error{eng.error()};
  dp.engine = std::move(*eng);
  Result<void> r;
  switch (plan.mode) {
    case Plan::Mode::local:
      r = open_local(o, dp);
      break;
    case Plan::Mode::packet_bump:
      r = open_packet_bump(o, plan, dp);
      break;
    case Plan::Mode::xdp_bump:
      r = open_xdp_bump(o, plan, dp);
      break;
    case Plan::Mode::sidecar:
      r = open_sidecar(o, plan, dp);
      break;
  }
  if (!r) return r;
  dp.engine->set_ports(dp.wire, dp.host);
  return {};
}

// ---------------------------------------------------------------- instances

// The instances gaond makes itself (the command line's and the config file's), by name;
// SIGHUP replaces those whose settings changed and leaves the others alone.
class Instances {
 public:
  explicit Instances(gaon::Engine& engine) : engine_(engine) {}
  // From now on `c` knows them (gaonctl lists them, their owner may call and destroy).
  void set_control(gaon::control::Server* c) {
    control_ = c;
    for (const auto& [name, l] : live_)
      if (c) c->adopt(l.id, uint32_t(getuid()), l.spec.type, l.quota, l.flows);
  }

  Result<uint32_t> create(const InstanceSpec& s) {
    auto quota = gaon::parse_param_value(gaon::ParamType::size, s.quota);
    if (!quota) return Error{"state-quota " + quota.error()};
    auto inst = gaon::Instance::create({.type = s.type,
                                        .params = s.params,
                                        .owner_uid = uint32_t(getuid()),
                                        .state_quota = std::get<uint64_t>(*quota),
                                        .tc = {.weight = s.weight, .rate_bps = s.rate_bps}},
                                       gaon::Registry::global());
    if (!inst) return Error{inst.error()};
    const std::vector<std::string> described = (*inst)->params();
    auto id = engine_.add_instance(std::move(*inst));
    if (!id) return Error{id.error()};
    std::vector<gaon::FlowKey> flows;
    for (const auto& f : s.flows) {
      auto k = gaon::FlowKey::parse(f);
      if (!k) return Error{"--flow " + k.error()};
      if (auto r = engine_.add_flow(*k, *id); !r) {
        (void)engine_.remove_instance(*id);
        return Error{r.error()};
      }
      flows.push_back(*k);
    }
    if (control_)
      control_->adopt(*id, uint32_t(getuid()), s.type, std::get<uint64_t>(*quota), flows);
    live_[s.name] = {.id = *id, .spec = s, .quota = std::get<uint64_t>(*quota), .flows = flows};
    log(Level::info, "ikernel {}{} (instance {}), state quota {} bytes, weight {}{}", s.type,
        s.name.empty() ? "" : " '" + s.name + "'", *id, std::get<uint64_t>(*quota), s.weight,
        s.rate_bps ? fmt::format(", rate limit {} bit/s", s.rate_bps) : "");
    for (const auto& p : described) log(Level::info, "  {}", p);
    return *id;
  }

  void destroy(const std::string& name) {
    auto it = live_.find(name);
    if (it == live_.end()) return;
    const uint32_t id = it->second.id;
    if (control_) control_->forget(id);
    if (auto r = engine_.remove_instance(id); !r)
      log(Level::warning, "instance {}: {}", id, r.error());
    else
      log(Level::info, "instance '{}' ({}) destroyed", name, id);
    live_.erase(it);
  }

  // The config file's instances become `want`: gone ones destroyed, changed ones made anew,
  // the same ones untouched (their traffic and state go on).
  void reload(const std::vector<InstanceSpec>& want) {
    std::vector<std::string> gone;
    for (const auto& kv : live_) {
      const std::string& name = kv.first;  // (not a structured binding: the lambda uses it)
      const Live& v = kv.second;
      if (name.empty()) continue;  // the command line's stays
      auto w = std::find_if(want.begin(), want.end(),
                            [&](const InstanceSpec& s) { return s.name == name; });
      if (w == want.end() || !(*w == v.spec)) gone.push_back(name);
    }
    for (const auto& n : gone) destroy(n);
    for (const auto& s : want)
      if (!live_.count(s.name))
        if (auto r = create(s); !r) log(Level::error, "instance '{}': {}", s.name, r.error());
  }

 private:
  gaon::Engine& engine_;
  gaon::control::Server* control_ = nullptr;
  struct Live {
    uint32_t id = 0;
    InstanceSpec spec;
    uint64_t quota = 0;
    std::vector<gaon::FlowKey> flows;
  };
  std::map<std::string, Live> live_;
};

// ---------------------------------------------------------------- options and config

struct Command {
  Options opt;
  std::optional<ConfigFile> config;
  std::string check_config;  // --check-config FILE
};

// The command line, on top of the config file it names. Returns the exit status for
// --help/--version/bad arguments in `exit_status`.
Result<Command> parse_command(int argc, char** argv, std::optional<int>* exit_status) {
  const auto make_app = [](Options& o, std::string* config, std::string* check) {
    auto app = std::make_unique<CLI::App>(
        "gaond: the gaon datapath, as a sidecar (UDP sockets in front of an application) or a "
        "bump in the wire (AF_XDP between two interfaces), or on a server with one NIC "
        "(--local)");
    app->set_version_flag("--version", "gaond " GAON_VERSION);
    add_options(*app, o);
    app->add_option("--config", *config,
                    "read settings from this file (TOML: each key is one of these options "
                    "without its dashes; [[instance]] tables are instances to create at start; "
                    "see gaond(8)); the command line adds to it. SIGHUP re-reads it");
    app->add_option("--check-config", *check,
                    "check a config file and exit: 0 if it is good, 1 with the line at fault");
    return app;
  };
  Command cmd;
  std::string config_path;
  auto app = make_app(cmd.opt, &config_path, &cmd.check_config);
  try {
    app->parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    *exit_status = app->exit(e);
    return cmd;
  }
  if (!cmd.check_config.empty()) {
    if (!config_path.empty()) return Error{"give --config or --check-config, not both"};
    config_path = cmd.check_config;
  }
  if (config_path.empty()) {
    cmd.opt.state_dir_given = app->count("--state-dir") > 0;
    return cmd;
  }
  auto cf = load_config(config_path);
  if (!cf) return Error{cf.error()};
  // Parse again: the file's settings first, then the command line's.
  std::vector<std::string> args = cf->args();
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  Command again;
  std::string ignored;
  auto app2 = make_app(again.opt, &ignored, &again.check_config);
  try {
    std::reverse(args.begin(), args.end());
    app2->parse(args);
  } catch (const CLI::ParseError& e) {
    return gaon::make_error("{} and the command line: {}", config_path, e.what());
  }
  again.opt.state_dir_given = app2->count("--state-dir") > 0;
  again.config = std::move(*cf);
  return again;
}

// A plan's error about a setting of the config file, with the file and its line: errors
// name the option first ("--wire ..."), an instance's say "line N: ...".
std::string locate(const ConfigFile& cf, const std::string& msg) {
  if (msg.starts_with("line ")) return cf.path + ":" + msg.substr(5);
  for (const auto& s : cf.settings)
    if (msg.starts_with("--" + s.key + " ") || msg.starts_with("--" + s.key + ":"))
      return fmt::format("{}:{}: {}", cf.path, s.line, msg);
  return cf.path + ": " + msg;
}

// ---------------------------------------------------------------- systemd

// sd_notify(3) messages to systemd (nothing when NOTIFY_SOCKET is not set).
void notify(const std::string& what) { sd_notify(0, what.c_str()); }

}  // namespace

int run(int argc, char** argv) {
  std::optional<int> exit_status;
  auto cmd = parse_command(argc, argv, &exit_status);
  if (exit_status) return *exit_status;
  if (!cmd) {
    log(Level::error, "{}", cmd.error());
    const bool checking = std::any_of(argv + 1, argv + argc, [](const char* a) {
      return std::string_view(a).starts_with("--check-config");
    });
    return checking ? 1 : 2;
  }
  Options& o = cmd->opt;
  Level level = Level::info;
  parse_level(o.log_level, &level);  // (checked by the option)
  set_level(level);
  const auto& reg = gaon::Registry::global();
  if (o.list) {
    for (const auto* t : reg.list()) fmt::print("{:<14} {}\n", t->name, t->description);
    return 0;
  }
  const std::vector<InstanceSpec> file_instances =
      cmd->config ? cmd->config->instances : std::vector<InstanceSpec>{};
  auto plan = make_plan(o, file_instances);
  if (!plan && cmd->config) plan = Error{locate(*cmd->config, plan.error())};
  if (!cmd->check_config.empty()) {
    if (!plan) {
      log(Level::error, "{}", plan.error());
      return 1;
    }
    fmt::print("{}: good ({} settings, {} instances)\n", cmd->check_config,
               cmd->config->settings.size(), file_instances.size());
    return 0;
  }
  if (!plan) return fail(plan.error());

  Datapath dp;
  if (auto r = open_datapath(o, *plan, dp); !r) return fail(r.error());
  gaon::Engine& engine = *dp.engine;
  Instances instances(engine);
  if (!o.ikernel.type.empty())
    if (auto r = instances.create(o.ikernel); !r) return fail(r.error());
  for (const auto& s : file_instances)
    if (auto r = instances.create(s); !r) return fail("instance '" + s.name + "': " + r.error());
  log(Level::info, "datapath {}, {}", o.cpu >= 0 ? fmt::format("on CPU {}", o.cpu) : "unpinned",
      o.busy_poll ? "busy-polling" : "blocking when idle");

  // Signals go to this (main) thread only; the datapath never sees them.
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGUSR1, SIGHUP}) sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  // Idle: wait for either port to become readable, 10 ms at most (so stop and control
  // requests are seen promptly); control changes wake it at once.
  if (!o.busy_poll) engine.set_waker(dp.wake);
  std::atomic<bool> stop{false};
  std::thread datapath([&] {
    const int idle_ms = o.lease_ms == 0 ? 10 : int(std::clamp(o.lease_ms / 4, 1u, 10u));
    if (o.cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(o.cpu, &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    if (o.busy_poll)
      engine.run(stop);
    else  // an event loop: block as soon as there is nothing more to do (and wake up
          // often enough to renew the lease while idle)
      engine.run(
          stop, [&] { dp.idle_wait(idle_ms); }, 1);
  });
  const auto stop_datapath = [&] {
    stop = true;
    datapath.join();
  };
  std::unique_ptr<gaon::control::Server> control;
  if (o.control != "none") {
    auto srv = gaon::control::Server::start(
        engine, reg,
        {.path = o.control,
         .max_instances_per_owner = o.max_instances,
         .max_state_per_owner = plan->max_state,
         .more_stats = [&](nlohmann::json& j) { dp.port_stats(j); },
         .state_dir = o.state_dir,  // restores what it records, before the first request
         .log = [](const std::string& line) { log(Level::notice, "{}", line); }},
        plan->services);
    if (!srv) {
      stop_datapath();
      return fail(srv.error());
    }
    control = std::move(*srv);
    log(Level::info, "control socket {} (max {} instances, {} state bytes per owner)", o.control,
        o.max_instances, plan->max_state);
  }
  instances.set_control(control.get());
  std::unique_ptr<gaon::metrics::Server> metrics;
  if (!o.metrics.empty()) {
    auto m = gaon::metrics::Server::start(o.metrics, [&] { return dp.full_stats(); });
    if (!m) {
      control.reset();
      stop_datapath();
      return fail("--metrics " + m.error());
    }
    metrics = std::move(*m);
    log(Level::info, "metrics at /metrics on {} (port {})", o.metrics, metrics->port());
  }
  log(Level::info, "ready");
  notify("READY=1\nSTATUS=serving");

  auto print_stats = [&] {
    const auto j = dp.full_stats();
    if (o.json_stats) {
      fmt::print("{}\n", j.dump(2));
      std::fflush(stdout);
    } else {
      log(Level::info, "wire rx {} tx {}, host rx {} tx {}, unmatched {}",
          j["wire"]["rx"].get<uint64_t>(), j["wire"]["tx"].get<uint64_t>(),
          j["host"]["rx"].get<uint64_t>(), j["host"]["tx"].get<uint64_t>(),
          j["unmatched"].get<uint64_t>());
      for (const auto& i : j["instances"])
        log(Level::info, "instance {} ({}): {}{}", i["id"].get<uint32_t>(),
            i["type"].get<std::string>(), i["counters"].dump(),
            i.contains("state") ? "\ngaond:   state " + i["state"].dump() : "");
    }
  };
  const auto reload = [&] {
    if (!cmd->config) {
      log(Level::notice, "SIGHUP: no --config to re-read");
      return;
    }
    auto cf = load_config(cmd->config->path);
    if (!cf) {
      log(Level::error, "reload: {}; keeping the running settings", cf.error());
      return;
    }
    for (const auto& s : cf->instances)
      if (auto r = check_instance(s, *plan); !r) {
        log(Level::error, "reload: {}; keeping the running settings", r.error());
        return;
      }
    std::map<std::string, std::vector<std::string>> was, now;
    for (const auto& s : cmd->config->settings) was[s.key] = s.args;
    for (const auto& s : cf->settings) now[s.key] = s.args;
    std::vector<std::string> later;
    for (const auto& k : {was, now})
      for (const auto& [key, args] : k)
        if (key != "log-level" && was[key] != now[key] &&
            std::find(later.begin(), later.end(), key) == later.end())
          later.push_back(key);
    if (!later.empty())
      log(Level::warning, "reload: restart gaond to apply the change of: {}",
          fmt::format("{}", fmt::join(later, ", ")));
    Level l = Level::info;
    for (const auto& st : cf->settings)
      if (st.key == "log-level" && parse_level(st.values.at(0), &l)) set_level(l);
    instances.reload(cf->instances);
    cmd->config = std::move(*cf);
    log(Level::info, "reloaded {}", cmd->config->path);
  };

  // The watchdog: a ping each half period while the datapath still runs what it is given.
  uint64_t watchdog_us = 0;
  if (sd_watchdog_enabled(0, &watchdog_us) <= 0) watchdog_us = 0;
  for (;;) {
    int sig = 0;
    if (watchdog_us) {
      const uint64_t half = watchdog_us / 2;
      timespec t{.tv_sec = time_t(half / 1'000'000), .tv_nsec = long(half % 1'000'000) * 1000};
      sig = sigtimedwait(&sigs, nullptr, &t);
      if (sig < 0) {
        engine.execute([] {});  // returns only when the datapath thread is alive
        notify("WATCHDOG=1");
        continue;
      }
    } else {
      sigwait(&sigs, &sig);
    }
    if (sig == SIGUSR1) {
      print_stats();
      continue;
    }
    if (sig == SIGHUP) {
      notify("RELOADING=1");
      reload();
      notify("READY=1");
      continue;
    }
    break;
  }
  notify("STOPPING=1");
  log(Level::info, "stopping");
  metrics.reset();
  control.reset();  // no more changes; connection-owned instances stay until exit
  stop_datapath();
  print_stats();
  return 0;
}

}  // namespace gaond

int main(int argc, char** argv) { return gaond::run(argc, argv); }
