#include "options.h"

#include <unistd.h>

#include "gaon/control.h"
#include "gaon/xdp_abi.h"

namespace gaond {

Options::Options()
    : xdp_memory_mb(GAON_FP_CHUNKS_DEFAULT),
      control(geteuid() == 0 ? gaon::control::kDefaultPath : "none") {}

void add_options(CLI::App& app, Options& o) {
  // A setting given twice (the config file, then the command line) keeps the last;
  // repeatable ones (lists) keep all.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_flag("--list", o.list, "list the ikernel types and exit");
  app.add_flag("--local", o.local,
               "a server with one NIC: no ports; the ikernels' fast paths run on this host's "
               "own interfaces and sockets, gaond keeps their state and serves the control "
               "socket (docs/one-nic.md)");
  app.add_option("--iface", o.ifaces,
                 "--local: an interface to run on (repeatable; default: every interface that "
                 "is up, not loopback, and has an address)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--wire", o.wire,
                 "where clients are: udp:IP:PORT, the service address they send to (sidecar; "
                 "repeat with --host for several services), or afxdp:IFACE (every receive queue) "
                 "/ afpacket:IFACE, the interface facing them (a bump in the wire)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--host", o.host,
                 "where the application is: udp:IP:PORT it listens on (one per --wire), or "
                 "afxdp:IFACE / afpacket:IFACE, the interface facing it")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("-k,--ikernel", o.ikernel.type,
                 "ikernel type to attach to every service address (optional with --control; "
                 "a config file names its instances in [[instance]] tables instead)");
  app.add_option("-p,--param", o.ikernel.params, "ikernel parameter key=value (repeatable)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--state-quota", o.ikernel.quota, "bytes of state the instance may use")
      ->capture_default_str();
  app.add_option("--weight", o.ikernel.weight,
                 "the instance's share of the wire (DRR weight, 1..1000)")
      ->capture_default_str();
  app.add_option("--rate-bps", o.ikernel.rate_bps,
                 "rate limit of the instance's replies, bits/s (0: none)");
  app.add_option("--flow", o.ikernel.flows,
                 "udp:IP:PORT the --ikernel instance is attached to (repeatable; default in "
                 "sidecar mode: every --wire address)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--xdp-mode", o.xdp_mode,
                 "afxdp: attach the steering program in native or generic XDP (auto: native, "
                 "but generic between veths, where it is cheaper, or without native support)")
      ->check(CLI::IsMember({"auto", "native", "generic"}))
      ->capture_default_str();
  app.add_option("--lease-ms", o.lease_ms,
                 "afxdp: when gaond has not polled for this long (stopped, hung), the steering "
                 "program forwards attached flows in the kernel until it polls again; kvcache "
                 "then starts afresh (0: only a gaond that is gone is bypassed)")
      ->check(CLI::Range(0u, 60000u))
      ->capture_default_str();
  app.add_option("--xdp-memory-mb", o.xdp_memory_mb,
                 "afxdp: memory for the fast paths' state in the kernel (kvcache's tables, "
                 "shared by its instances in MiB chunks; an instance that does not fit runs in "
                 "gaond only, and says why in its stats)")
      ->check(CLI::Range(1u, 65536u))
      ->capture_default_str();
  app.add_option("--wire-rate-bps", o.wire_rate_bps,
                 "emulate a wire of this many bits/s shared by all services (0: as fast as "
                 "the sockets go); the arbiter's weights then decide who gets it");
  app.add_option("--nat-idle-timeout", o.nat_idle_s,
                 "seconds before an idle client's NAT entry is closed")
      ->capture_default_str();
  app.add_option("--cpu", o.cpu, "pin the datapath thread to this CPU");
  app.add_flag("--busy-poll", o.busy_poll, "never block when idle (lowest latency, a whole core)");
  app.add_flag("--json-stats", o.json_stats, "print stats as JSON (stdout) on SIGUSR1 and at exit");
  app.add_option("--control", o.control,
                 "control socket for gaonctl and libgaon ('none': no control plane; default "
                 "/run/gaon/gaond.sock as root, none otherwise)")
      ->capture_default_str();
  app.add_option("--max-instances-per-owner", o.max_instances,
                 "instances one non-root user may create through the control socket")
      ->capture_default_str();
  app.add_option("--max-state-per-owner", o.max_state,
                 "state bytes one non-root user's instances may take in total")
      ->capture_default_str();
  app.add_option("--state-dir", o.state_dir,
                 "where the persistent instances (gaonctl create) and their flows are recorded, "
                 "to be restored when gaond starts again ('' or 'none': nowhere; default "
                 "/var/lib/gaon as root with the default control socket, nowhere otherwise)");
  app.add_option("--metrics", o.metrics,
                 "serve Prometheus metrics at http://IP:PORT/metrics (e.g. 127.0.0.1:9187; "
                 "off unless given; docs/metrics.md)");
  app.add_option("--log-level", o.log_level,
                 "least important messages logged: error, warning, notice, info or debug")
      ->check(CLI::IsMember({"error", "warning", "notice", "info", "debug"}))
      ->capture_default_str();
}

}  // namespace gaond
