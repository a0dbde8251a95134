#include "gaon/afxdp.h"

#include <arpa/inet.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include <fmt/core.h>

#include "gaon/clock.h"
#include "gaon/counters.h"
#include "gaon/net.h"
#include "gaon/xdp_program.h"
#include "netdev.h"

namespace gaon::afxdp {

Result<Spec> parse_spec(std::string_view text) {
  if (!text.starts_with("afxdp:"))
    return make_error("'{}': expected afxdp:IFACE[@QUEUE]", printable(text));
  std::string_view rest = text.substr(6);
  Spec s;
  const size_t at = rest.find('@');
  std::string_view name = rest.substr(0, at);
  if (name.empty() || name.size() >= IFNAMSIZ)
    return make_error("'{}': expected afxdp:IFACE[@QUEUE] (an interface name)", printable(text));
  s.ifname = std::string(name);
  if (at != std::string_view::npos) {
    std::string_view q = rest.substr(at + 1);
    uint32_t queue = 0;
    auto [p, ec] = std::from_chars(q.data(), q.data() + q.size(), queue);
    if (ec != std::errc() || p != q.data() + q.size() || q.empty())
      return make_error("'{}': the queue after @ must be a number", printable(text));
    s.queue = queue;
  }
  return s;
}

struct Bump::Impl {
  std::unique_ptr<XdpProgram> xdp;  // the steering program, its maps, fast paths, lease
  int ifindex[2] = {0, 0};
  bool generic = false;   // XDP in generic (skb) mode: the driver has no native XDP
  bool zerocopy = false;  // both sockets bound zero-copy
  xsk_umem* umem = nullptr;
  uint32_t ring = 2048;
  uint32_t fill_target = 2048;  // frames kept in each queue's fill ring (all fit the pool)
};

// One receive queue's socket and rings (libxdp keeps pointers to them: they never move).
struct XskPort::Rings {
  uint32_t queue = 0;
  uint64_t taken = 0;  // frames taken from this queue
  xsk_socket* xsk = nullptr;
  xsk_ring_cons rx{}, comp{};
  xsk_ring_prod tx{}, fill{};
};

XskPort::XskPort(Bump& bump, std::string ifname, uint32_t first_queue, uint32_t queues)
    : bump_(bump), ifname_(std::move(ifname)) {
  for (uint32_t i = 0; i < queues; ++i) {
    q_.push_back(std::make_unique<Rings>());
    q_.back()->queue = first_queue + i;
  }
}

XskPort::~XskPort() {
  for (auto& r : q_)
    if (r->xsk) xsk_socket__delete(r->xsk);
}

int XskPort::fd() const { return xsk_socket__fd(q_[0]->xsk); }
std::string XskPort::name() const {
  if (q_.size() == 1) return fmt::format("afxdp:{}@{}", ifname_, q_[0]->queue);
  return fmt::format("afxdp:{} ({} queues)", ifname_, q_.size());
}

// Keeps a fill ring full with free pool frames (the kernel receives into them).
void XskPort::refill(Rings& r) {
  BufferPool& pool = *bump_.pool_;
  const uint32_t ring = bump_.impl_->ring, target = bump_.impl_->fill_target;
  const uint32_t filled = ring - std::min(ring, xsk_prod_nb_free(&r.fill, ring));
  uint32_t want = target > filled ? target - filled : 0;
  if (want > 2 * kBurst) want = 2 * kBurst;  // bounded work per call
  if (want > pool.available()) {
    want = pool.available();
    ++fill_short_;
  }
  if (want == 0) return;
  uint32_t idx = 0;
  const uint32_t n = xsk_ring_prod__reserve(&r.fill, want, &idx);
  for (uint32_t i = 0; i < n; ++i) {
    Packet* p = pool.alloc();
    *xsk_ring_prod__fill_addr(&r.fill, idx + i) = uint64_t{p->index} * kFrameSize;
  }
  xsk_ring_prod__submit(&r.fill, n);
}

// Frees the frames the kernel has finished sending (queue 0's socket sends them all).
void XskPort::complete() {
  if (outstanding_ == 0) return;
  Rings& r = *q_[0];
  uint32_t idx = 0;
  const uint32_t n = xsk_ring_cons__peek(&r.comp, 4 * kBurst, &idx);
  BufferPool& pool = *bump_.pool_;
  for (uint32_t i = 0; i < n; ++i) {
    const uint64_t addr = *xsk_ring_cons__comp_addr(&r.comp, idx + i);
    pool.free(&pool.at(uint32_t(addr / kFrameSize)));
  }
  xsk_ring_cons__release(&r.comp, n);
  outstanding_ -= n;
}

void XskPort::kick_tx() {
  if (outstanding_ == 0) return;
  if (!bump_.impl_->zerocopy || xsk_ring_prod__needs_wakeup(&q_[0]->tx)) {
    ++tx_kicks_;
    // EAGAIN/EBUSY: the kernel is still sending the last batch; the next poll kicks again.
    (void)sendto(fd(), nullptr, 0, MSG_DONTWAIT, nullptr, 0);
  }
}

void Bump::renew_lease() {
  if (impl_->xdp) impl_->xdp->renew_lease();
}

uint64_t XskPort::gaps() const {
  return this == bump_.wire_.get() ? bump_.impl_->xdp->lease_lapses() : 0;
}

uint32_t XskPort::rx_burst(std::span<Packet*> out) {
  if (this == bump_.wire_.get()) bump_.renew_lease();  // every poll starts here
  complete();
  kick_tx();  // transmits still outstanding go on even when nothing else happens
  BufferPool& pool = *bump_.pool_;
  const uint32_t nq = uint32_t(q_.size());
  uint32_t n = 0;
  // Round-robin over the queues, starting one further each burst, so that none waits
  // behind a busy one.
  for (uint32_t k = 0; k < nq && n < out.size(); ++k) {
    Rings& r = *q_[(next_ + k) % nq];
    refill(r);
    uint32_t idx = 0;
    const uint32_t got = xsk_ring_cons__peek(&r.rx, uint32_t(out.size()) - n, &idx);
    for (uint32_t i = 0; i < got; ++i) {
      const xdp_desc* d = xsk_ring_cons__rx_desc(&r.rx, idx + i);
      Packet* p = &pool.at(uint32_t(d->addr / kFrameSize));
      p->reset();
      p->data_off = uint16_t(d->addr % kFrameSize);
      p->len = uint16_t(d->len);
      out[n + i] = p;
    }
    xsk_ring_cons__release(&r.rx, got);
    r.taken += got;
    n += got;
    if (got == 0 && xsk_ring_prod__needs_wakeup(&r.fill)) {
      ++rx_kicks_;
      (void)recvfrom(xsk_socket__fd(r.xsk), nullptr, 0, MSG_DONTWAIT, nullptr, nullptr);
    }
  }
  next_ = nq > 1 ? (next_ + 1) % nq : 0;
  rx_ += n;
  drained_ = n < out.size();
  return n;
}

uint32_t XskPort::tx_burst(std::span<Packet*> pkts) {
  complete();
  uint32_t idx = 0;
  Rings& r = *q_[0];
  const uint32_t n = xsk_ring_prod__reserve(&r.tx, uint32_t(pkts.size()), &idx);
  if (n < pkts.size()) ++tx_full_;
  for (uint32_t i = 0; i < n; ++i) {
    xdp_desc* d = xsk_ring_prod__tx_desc(&r.tx, idx + i);
    d->addr = uint64_t{pkts[i]->index} * kFrameSize + pkts[i]->data_off;
    d->len = pkts[i]->len;
  }
  xsk_ring_prod__submit(&r.tx, n);
  outstanding_ += n;
  tx_ += n;
  kick_tx();
  return n;
}

nlohmann::json XskPort::stats() const {
  // What the kernel dropped before gaond saw it, and what it refused to send, summed
  // over the queues' sockets.
  xdp_statistics xs{};
  nlohmann::json by_queue = nlohmann::json::array();
  for (const auto& r : q_) {
    by_queue.push_back(r->taken);
    xdp_statistics one{};
    socklen_t len = sizeof(one);
    if (getsockopt(xsk_socket__fd(r->xsk), SOL_XDP, XDP_STATISTICS, &one, &len) != 0) continue;
    xs.rx_ring_full += one.rx_ring_full;
    xs.rx_fill_ring_empty_descs += one.rx_fill_ring_empty_descs;
    xs.rx_dropped += one.rx_dropped;
    xs.tx_invalid_descs += one.tx_invalid_descs;
  }
  return {{"rx", rx_},
          {"rx_by_queue", by_queue},
          {"tx", tx_},
          {"rx_kicks", rx_kicks_},
          {"tx_kicks", tx_kicks_},
          {"fill_short", fill_short_},
          {"tx_ring_full", tx_full_},
          {"tx_outstanding", outstanding_},
          {"rx_dropped",
           {{"ring_full", xs.rx_ring_full},
            {"pool_empty", xs.rx_fill_ring_empty_descs},
            {"kernel", xs.rx_dropped}}},
          {"tx_dropped", nlohmann::json::object()},  // the ring takes what it has room for
          {"tx_invalid", xs.tx_invalid_descs}};      // sent, then refused by the kernel
}

// ---------------------------------------------------------------- Bump

Bump::Bump() : impl_(std::make_unique<Impl>()) {}

Bump::~Bump() {
  // Sockets first (the kernel drops them from the XSKMAP: the program forwards
  // everything), then the UMEM. The program stays attached: fail-open (in libxdp's
  // dispatcher, its link pinned in bpffs; the next gaond replaces it).
  wire_.reset();
  host_.reset();
  if (impl_->umem) xsk_umem__delete(impl_->umem);
  impl_->xdp.reset();
}

Result<std::unique_ptr<Bump>> Bump::open(const Spec& wire, const Spec& host, BufferPool& pool,
                                         const Options& opt) {
  std::unique_ptr<Bump> b(new Bump());
  Impl& im = *b->impl_;
  b->pool_ = &pool;
  im.ring = opt.ring_size;
  const Spec* specs[2] = {&wire, &host};
  for (int i = 0; i < 2; ++i) {
    im.ifindex[i] = int(if_nametoindex(specs[i]->ifname.c_str()));
    if (im.ifindex[i] == 0)
      return make_error("{}: no such interface ({})", specs[i]->ifname, std::strerror(errno));
  }
  if (im.ifindex[0] == im.ifindex[1])
    return make_error("the wire and host interfaces are the same");
  auto x = XdpProgram::load({opt.bpf_object, opt.fp_chunks});
  if (!x) return Error{x.error()};
  im.xdp = std::move(*x);
  im.xdp->start_lease(opt.lease_ns);
  for (uint32_t slot = 0; slot < 2; ++slot) {
    const uint32_t ifx = uint32_t(im.ifindex[slot]);
    if (auto r = im.xdp->set_port(ifx, gaon_role(slot), 1 - slot); !r) return Error{r.error()};
    if (auto r = im.xdp->set_peer(slot, ifx); !r) return Error{r.error()};
  }
  // Attach to both interfaces (through libxdp's dispatcher, beside other programs; an
  // earlier gaond's program is replaced: XdpProgram::attach). Native mode when the driver
  // has it, generic otherwise; both interfaces in the same mode.
  auto attach = [&](uint32_t mode) -> int {
    for (int i = 0; i < 2; ++i)
      if (int e = im.xdp->attach(im.ifindex[i], mode == XDP_FLAGS_SKB_MODE); e != 0) {
        if (i == 1) im.xdp->detach(im.ifindex[0]);
        return e;
      }
    return 0;
  };
  auto why = [](int e) {
    const std::string more = XdpProgram::attach_error();
    return more.empty() ? std::string(std::strerror(-e))
                        : fmt::format("{}: {}", std::strerror(-e), more);
  };
  if (opt.xdp_mode != "auto" && opt.xdp_mode != "native" && opt.xdp_mode != "generic")
    return make_error("XDP mode '{}': expected auto, native or generic", printable(opt.xdp_mode));
  // auto: native XDP, except between veths, where generic is cheaper for the traffic
  // sockets send (native XDP on veth copies each such frame into a page first; measured in
  // docs/benchmarks.md: unattached traffic 0-1 % dearer than the kernel's own path in
  // generic mode, 3-15 % in native).
  // Frames that do not fit a buffer would be lost between the program and gaond.
  for (const Spec* sp : specs)
    if (auto fit = netdev::check_frames_fit(sp->ifname, false, "an AF_XDP frame"); !fit)
      return Error{fit.error()};
  const bool veths = netdev::driver(wire.ifname) == "veth" && netdev::driver(host.ifname) == "veth";
  const bool want_generic = opt.xdp_mode == "generic" || (opt.xdp_mode == "auto" && veths);
  int native_err = 0;
  if (!want_generic) native_err = attach(XDP_FLAGS_DRV_MODE);
  if (opt.xdp_mode == "native" && native_err != 0)
    return make_error("attaching the XDP program to {} and {} in native mode: {}", wire.ifname,
                      host.ifname, why(native_err));
  if (want_generic || native_err != 0) {
    im.generic = true;
    if (int e2 = attach(XDP_FLAGS_SKB_MODE); e2 != 0)
      return make_error("attaching the XDP program to {} and {}: {}{}", wire.ifname, host.ifname,
                        native_err ? fmt::format("{} (native), ", std::strerror(-native_err)) : "",
                        fmt::format("{} (generic)", why(e2)));
    // Generic XDP runs after GRO: merged frames would not fit either.
    for (const Spec* sp : specs)
      if (auto fit = netdev::check_frames_fit(sp->ifname, true, "an AF_XDP frame"); !fit) {
        for (int i = 0; i < 2; ++i) im.xdp->detach(im.ifindex[i]);
        return make_error("{} (generic XDP sees frames after GRO)", fit.error());
      }
  }
  // One UMEM over the whole pool, shared by both sockets.
  xsk_umem_config uc{};
  uc.fill_size = uc.comp_size = im.ring;
  uc.frame_size = kFrameSize;
  uc.frame_headroom = 0;  // the kernel puts data XDP_PACKET_HEADROOM (= kHeadroom) in
  // A socket on every receive queue: the kernel delivers a queue's frames only to a socket
  // bound to that queue.
  std::unique_ptr<XskPort>* made[2] = {&b->wire_, &b->host_};
  for (int i = 0; i < 2; ++i) {
    const uint32_t nq = netdev::rx_queues(specs[i]->ifname);
    if (nq > GAON_MAX_QUEUES)
      return make_error(
          "{} has {} receive queues; gaond takes at most {} (ethtool -L {} combined {})",
          specs[i]->ifname, nq, GAON_MAX_QUEUES, specs[i]->ifname, GAON_MAX_QUEUES);
    if (specs[i]->queue && nq > 1)
      return make_error(
          "afxdp:{}@{}: {} has {} receive queues and frames on the others would never reach "
          "gaond; drop @{} (gaond takes every queue)",
          specs[i]->ifname, *specs[i]->queue, specs[i]->ifname, nq, *specs[i]->queue);
    made[i]->reset(new XskPort(*b, specs[i]->ifname, specs[i]->queue.value_or(0), nq));
  }
  // Every queue's fill ring kept full must leave half the pool for frames in flight.
  const uint32_t nq_all = b->wire_->queues() + b->host_->queues();
  im.fill_target =
      std::min(im.ring, std::max(pool.capacity() / (2 * nq_all), uint32_t(2 * kBurst)));
  if (int e = xsk_umem__create(&im.umem, pool.region(), pool.region_bytes(), &b->wire_->q_[0]->fill,
                               &b->wire_->q_[0]->comp, &uc);
      e != 0)
    return make_error("AF_XDP UMEM over {} bytes: {}", pool.region_bytes(), std::strerror(-e));
  XskPort* ports[2] = {b->wire_.get(), b->host_.get()};
  for (uint16_t copy_flag : {uint16_t(XDP_ZEROCOPY), uint16_t(XDP_COPY)}) {
    bool ok = true;
    std::string why;
    for (uint32_t slot = 0; slot < 2 && ok; ++slot)
      for (auto& rp : ports[slot]->q_) {
        XskPort::Rings& r = *rp;
        xsk_socket_config sc{};
        sc.rx_size = sc.tx_size = im.ring;
        sc.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
        sc.xdp_flags = im.generic ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
        sc.bind_flags = uint16_t(copy_flag | XDP_USE_NEED_WAKEUP);
        // Only queue 0's socket transmits; the others receive.
        xsk_ring_prod* tx = &rp == &ports[slot]->q_[0] ? &r.tx : nullptr;
        if (int e = xsk_socket__create_shared(&r.xsk, specs[slot]->ifname.c_str(), r.queue, im.umem,
                                              &r.rx, tx, &r.fill, &r.comp, &sc);
            e != 0) {
          ok = false;
          why = fmt::format("AF_XDP socket on {} queue {}: {}", specs[slot]->ifname, r.queue,
                            std::strerror(-e));
          r.xsk = nullptr;
          break;
        }
      }
    if (ok) {
      im.zerocopy = copy_flag == XDP_ZEROCOPY;
      break;
    }
    for (XskPort* p : ports)
      for (auto& r : p->q_)
        if (r->xsk) {
          xsk_socket__delete(r->xsk);
          r->xsk = nullptr;
        }
    if (copy_flag == XDP_COPY) return make_error("{}", why);
  }
  for (uint32_t slot = 0; slot < 2; ++slot)
    for (auto& r : ports[slot]->q_) {
      ports[slot]->refill(*r);
      if (auto x = im.xdp->set_xsk(gaon_role(slot), r->queue, xsk_socket__fd(r->xsk)); !x)
        return Error{x.error()};
      b->waiter_.watch(xsk_socket__fd(r->xsk));
    }
  return b;
}

Result<void> Bump::flow_added(const FlowKey& key, uint32_t instance, const FastPathSpec& fp) {
  return impl_->xdp->add_flow(key, instance, fp);
}

void Bump::flow_removed(const FlowKey& key) { impl_->xdp->remove_flow(key); }

FastPathState* Bump::fast_path(uint32_t instance) { return impl_->xdp->fast_path(instance); }

nlohmann::json Bump::fast_path_stats(uint32_t instance) {
  return impl_->xdp->fast_path_stats(instance);
}

void Bump::instance_removed(uint32_t instance) { impl_->xdp->instance_removed(instance); }

std::string Bump::describe() const {
  return fmt::format("AF_XDP {} ({}), {} XDP on {} and {} ({})",
                     impl_->zerocopy ? "zero-copy" : "copy mode",
                     impl_->zerocopy ? "the driver supports it" : "no zero-copy on this driver",
                     impl_->generic ? "generic" : "native", wire_->name(), host_->name(),
                     impl_->xdp->attach_description());
}

nlohmann::json Bump::stats() const {
  nlohmann::json j = {{"afxdp_mode", impl_->zerocopy ? "zero-copy" : "copy"},
                      {"xdp_mode", impl_->generic ? "generic" : "native"},
                      {"lease_ms", impl_->xdp->lease_ns() / 1e6},
                      {"lease_lapses", impl_->xdp->lease_lapses()},
                      {"fill_per_queue", impl_->fill_target},
                      {"steered_flows", impl_->xdp->flows()},
                      {"fast_path_memory_free_mb", impl_->xdp->fp_chunks_free()},
                      {"xdp", impl_->xdp->stats()}};
  j.update(impl_->xdp->attach_stats());
  return j;
}

}  // namespace gaon::afxdp
