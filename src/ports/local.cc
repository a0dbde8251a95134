#include "gaon/local.h"

#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <ifaddrs.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "gaon/clock.h"
#include "gaon/counters.h"
#include "gaon/net.h"
#include "gaon/xdp_program.h"
#include "netdev.h"

namespace gaon::local {

struct Host::Impl {
  std::unique_ptr<XdpProgram> xdp;
  std::vector<std::string> ifnames;
  std::vector<int> ifindex;
  bool generic = false;
};

uint32_t NoFramePort::rx_burst(std::span<Packet*>) {
  if (wire_) host_.renew_lease();  // every poll starts here
  return 0;
}
uint32_t NoFramePort::tx_burst(std::span<Packet*> pkts) {
  for (Packet* p : pkts) pool_.free(p);  // (nothing is received, so nothing is sent)
  return uint32_t(pkts.size());
}
uint64_t NoFramePort::gaps() const { return wire_ ? host_.impl_->xdp->lease_lapses() : 0; }

Host::Host() : impl_(std::make_unique<Impl>()) {}

Host::~Host() {
  // The steering program goes first (frames pass to the stack as without gaon), then the
  // fast paths' other programs with the XdpProgram.
  for (int ifx : impl_->ifindex) impl_->xdp->detach(ifx);  // only gaon's program
  impl_->xdp.reset();
}

void Host::renew_lease() { impl_->xdp->renew_lease(); }

std::vector<std::string> Host::default_ifaces() {
  std::set<std::string> names;
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return {};
  for (ifaddrs* i = ifs; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
      continue;
    if (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6) continue;
    names.insert(i->ifa_name);
  }
  freeifaddrs(ifs);
  return {names.begin(), names.end()};
}

namespace {

// A cgroup v2 hierarchy to attach sock_ops to: the one mounted (its root covers every
// process, whichever cgroup it is in), else one mounted for gaon (hosts with cgroup v1
// only, and `ip netns exec`, which hides /sys/fs/cgroup, still have the v2 root).
Result<std::string> cgroup2_root() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos || line.compare(dash + 3, 8, "cgroup2 ") != 0) continue;
    std::istringstream ls(line);
    std::string id, parent, dev, root, mnt;
    ls >> id >> parent >> dev >> root >> mnt;
    if (root == "/") return mnt;
  }
  const char* dir = "/run/gaon/cgroup2";
  ::mkdir("/run/gaon", 0755);
  ::mkdir(dir, 0755);
  if (::mount("cgroup2", dir, "cgroup2", 0, nullptr) != 0 && errno != EBUSY)
    return make_error("no cgroup v2 hierarchy for the socket programs, and mounting one on {}: {}",
                      dir, std::strerror(errno));
  return std::string(dir);
}

}  // namespace

Result<std::unique_ptr<Host>> Host::open(const Options& opt, BufferPool& pool) {
  std::unique_ptr<Host> h(new Host());
  Impl& im = *h->impl_;
  im.ifnames = opt.ifaces.empty() ? default_ifaces() : opt.ifaces;
  if (im.ifnames.empty())
    return make_error("no interface to attach to: none is up with an address (--iface IF)");
  if (opt.xdp_mode != "auto" && opt.xdp_mode != "native" && opt.xdp_mode != "generic")
    return make_error("XDP mode '{}': expected auto, native or generic", printable(opt.xdp_mode));
  std::vector<uint32_t> ifx;
  bool all_veth = true;
  for (const auto& n : im.ifnames) {
    const uint32_t i = if_nametoindex(n.c_str());
    if (i == 0) return make_error("{}: no such interface ({})", n, std::strerror(errno));
    for (uint32_t seen : ifx)
      if (seen == i) return make_error("--iface {} is given twice", n);
    ifx.push_back(i);
    all_veth = all_veth && netdev::driver(n) == "veth";
  }
  XdpProgram::Options xo;
  xo.object_file = opt.bpf_object;
  xo.fp_chunks = opt.fp_chunks;
  xo.local = true;
  xo.local_ifindexes = ifx;
  if (opt.cgroup.empty()) {
    auto cg = cgroup2_root();
    if (!cg) return Error{cg.error()};
    xo.cgroup = *cg;
  } else {
    xo.cgroup = opt.cgroup;
  }
  auto x = XdpProgram::load(xo);
  if (!x) return Error{x.error()};
  im.xdp = std::move(*x);
  im.xdp->start_lease(opt.lease_ns);
  for (uint32_t i : ifx)
    if (auto r = im.xdp->set_port(i, GAON_LOCAL, 0); !r) return Error{r.error()};
  // auto: native XDP, but generic on veth (as a bump: cheaper for the traffic the host's
  // own sockets send, which is most of it here).
  const bool want_generic = opt.xdp_mode == "generic" || (opt.xdp_mode == "auto" && all_veth);
  // Through libxdp's dispatcher, beside other programs (XdpProgram::attach).
  auto attach = [&](uint32_t mode) -> int {
    for (size_t k = 0; k < ifx.size(); ++k) {
      if (int e = im.xdp->attach(int(ifx[k]), mode == XDP_FLAGS_SKB_MODE); e != 0) {
        for (size_t j = 0; j < k; ++j) im.xdp->detach(int(ifx[j]));
        return e;
      }
    }
    return 0;
  };
  auto why = [](int e) {
    const std::string more = XdpProgram::attach_error();
    return more.empty() ? std::string(std::strerror(-e))
                        : fmt::format("{}: {}", std::strerror(-e), more);
  };
  int native_err = 0;
  if (!want_generic) native_err = attach(XDP_FLAGS_DRV_MODE);
  if (opt.xdp_mode == "native" && native_err != 0)
    return make_error("attaching the XDP program in native mode: {}", why(native_err));
  if (want_generic || native_err != 0) {
    im.generic = true;
    if (int e = attach(XDP_FLAGS_SKB_MODE); e != 0)
      return make_error("attaching the XDP program: {}{}",
                        native_err ? fmt::format("{} (native), ", std::strerror(-native_err)) : "",
                        fmt::format("{} (generic)", why(e)));
  }
  for (uint32_t i : ifx) im.ifindex.push_back(int(i));
  h->wire_.reset(new NoFramePort(*h, pool, "local:wire", true));
  h->host_.reset(new NoFramePort(*h, pool, "local:host", false));
  return h;
}

Result<void> Host::flow_added(const FlowKey& key, uint32_t instance, const FastPathSpec& fp) {
  if (fp.object.empty())
    return make_error(
        "this ikernel type has no fast path: on a server with one NIC (gaond --local) only "
        "types with one run (kvcache)");
  if (key.proto == net::kProtoTcp) {
    if (const size_t n = established_connections(key); n != 0)
      return make_error(
          "{}: {} TCP connection{} already established; their writes could not be watched "
          "(attach before clients connect, or restart the application)",
          key.to_string(), n, n == 1 ? " is" : "s are");
  }
  if (auto r = impl_->xdp->add_flow(key, instance, fp); !r) return r;
  if (impl_->xdp->fast_path(instance) == nullptr) {
    const auto why = impl_->xdp->fast_path_stats(instance);
    impl_->xdp->remove_flow(key);
    return make_error("no fast path for the instance: {}", why.is_object() && why.contains("why")
                                                               ? why["why"].get<std::string>()
                                                               : std::string("not loaded"));
  }
  return ok();
}

void Host::flow_removed(const FlowKey& key) { impl_->xdp->remove_flow(key); }
FastPathState* Host::fast_path(uint32_t instance) { return impl_->xdp->fast_path(instance); }
nlohmann::json Host::fast_path_stats(uint32_t instance) {
  return impl_->xdp->fast_path_stats(instance);
}
void Host::instance_removed(uint32_t instance) { impl_->xdp->instance_removed(instance); }

std::string Host::describe() const {
  return fmt::format("one NIC: {} XDP on {} ({}), lease {} ms",
                     impl_->generic ? "generic" : "native", fmt::join(impl_->ifnames, ", "),
                     impl_->xdp->attach_description(), impl_->xdp->lease_ns() / 1'000'000);
}

nlohmann::json Host::stats() const {
  nlohmann::json j = {{"interfaces", impl_->ifnames},
                      {"xdp_mode", impl_->generic ? "generic" : "native"},
                      {"lease_ms", impl_->xdp->lease_ns() / 1e6},
                      {"lease_lapses", impl_->xdp->lease_lapses()},
                      {"steered_flows", impl_->xdp->flows()},
                      {"fast_path_memory_free_mb", impl_->xdp->fp_chunks_free()},
                      {"xdp", impl_->xdp->stats()}};
  j.update(impl_->xdp->attach_stats());
  return j;
}

size_t established_connections(const FlowKey& key) {
  size_t n = 0;
  for (const char* path : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    const bool v6 = std::strstr(path, "tcp6") != nullptr;
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      std::string sl, local, remote, st;
      ls >> sl >> local >> remote >> st;
      if (st != "01") continue;  // TCP_ESTABLISHED
      const size_t colon = local.find(':');
      if (colon == std::string::npos) continue;
      const uint16_t port = uint16_t(std::stoul(local.substr(colon + 1), nullptr, 16));
      if (port != key.local_port) continue;
      // The address: 4 bytes (tcp) or 16 (tcp6) as 32-bit words in host order.
      const std::string hex = local.substr(0, colon);
      uint8_t a[16] = {};
      const size_t bytes = hex.size() / 2;
      if (bytes != 4 && bytes != 16) continue;
      for (size_t w = 0; w < bytes / 4; ++w) {
        const uint32_t word = uint32_t(std::stoul(hex.substr(w * 8, 8), nullptr, 16));
        std::memcpy(a + w * 4, &word, 4);  // (the kernel printed it in host order)
      }
      static const uint8_t zero[16] = {};
      const bool any = std::memcmp(key.local_ip, zero, key.family == 4 ? 4 : 16) == 0;
      bool match = false;
      if (key.family == 4) {
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (!v6)
          match = any || std::memcmp(a, key.local_ip, 4) == 0;
        else if (std::memcmp(a, mapped, 12) == 0)
          match = any || std::memcmp(a + 12, key.local_ip, 4) == 0;
      } else if (v6) {
        match = any || std::memcmp(a, key.local_ip, 16) == 0;
      }
      n += match;
    }
  }
  return n;
}

}  // namespace gaon::local
