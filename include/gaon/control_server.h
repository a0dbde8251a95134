// The control plane inside gaond: serves the protocol in control.h on a unix socket, on its
// own thread, and applies changes to the engine through Engine::execute (between bursts,
// so other instances' traffic never stops). See control.h for the operations and the
// ownership rules.
//
// Tenancy: every request is authorized by the peer's credentials (SO_PEERCRED). Only the
// owner (same uid) or root may destroy, attach to, detach from, call or read an instance;
// anyone else gets "permission denied" whether it exists or not. Non-root owners are held
// to per-owner limits (instances, total state bytes). A connection that sends garbage, too
// much, or stops reading its replies is answered with an error or dropped; it cannot stall
// the datapath (which never waits for the control thread) or other clients for long.
#pragma once

#include <netinet/in.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gaon/control.h"
#include "gaon/engine.h"
#include "gaon/ikernel.h"

namespace gaon::control {

// gaond's --state-dir when it runs as root with the default control socket.
inline constexpr const char* kDefaultStateDir = "/var/lib/gaon";

struct ServerOptions {
  std::string path = kDefaultPath;
  uint32_t max_instances_per_owner = 16;
  uint64_t max_state_per_owner = uint64_t{1} << 30;
  size_t max_clients = 256;
  size_t max_backlog = 1 << 20;  // unread reply bytes before a client is dropped
  // Adds what gaond knows beyond the engine (ports, the XDP program) to a `stats` reply
  // without an instance, for root and gaond's own user (others see only their instances).
  std::function<void(nlohmann::json&)> more_stats;
  // Where persistent instances (created with "persist": true) and their flows are
  // recorded, so that start() brings them back after a restart (docs/control.md,
  // "Restarts"); "" records nothing. Instances made outside the protocol (adopt) are not
  // recorded. A state file that cannot be used is reported through `log` and skipped:
  // start() never fails because of it.
  std::string state_dir;
  // One-line notices about the state file (default: "gaond: ..." on stderr). Called from
  // start() and from the control thread.
  std::function<void(const std::string&)> log;
};

// A sidecar service: clients use `wire`, the application listens on `host`. A socket
// bound to `host` (or to 0.0.0.0 and host's port) attaches the flow of `wire`.
struct Service {
  sockaddr_in wire{}, host{};
};

class Server {
 public:
  static Result<std::unique_ptr<Server>> start(Engine& engine, const Registry& reg,
                                               ServerOptions opt, std::vector<Service> services);
  ~Server();  // stops the thread and removes the socket file
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Registers an instance made outside the protocol (gaond --ikernel): persistent, owned
  // by `uid`, holding `bytes` of state; not recorded in the state file (gaond makes it
  // again from its command line).
  void adopt(uint32_t id, uint32_t uid, const std::string& type, uint64_t bytes,
             std::vector<FlowKey> flows);
  // Forgets an adopted instance (gaond is about to remove it from the engine).
  void forget(uint32_t id);

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gaon::control
