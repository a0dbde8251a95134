#include "gaon/sidecar.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sock_diag.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "gaon/checksum.h"
#include "gaon/engine.h"
#include "gaon/net.h"
#include "gaon/parse.h"

namespace gaon::sidecar {

Result<sockaddr_in> parse_udp_address(std::string_view text) {
  auto k = FlowKey::parse(text);
  if (!k) return Error{k.error()};
  if (k->proto != net::kProtoUdp) return make_error("'{}': sidecar ports are udp", text);
  if (k->family != 4) return make_error("'{}': sidecar ports are IPv4 only for now", text);
  if (!k->wildcard) return make_error("'{}': give one address, IP:PORT", text);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(k->local_port);
  std::memcpy(&a.sin_addr, k->local_ip, 4);
  if (a.sin_addr.s_addr == htonl(INADDR_ANY))
    return make_error("'{}': a concrete address is needed, not 0.0.0.0", text);
  if (k->local_port == 0) return make_error("'{}': port 0 is not a service port", text);
  return a;
}

std::string to_string(const sockaddr_in& a) {
  char ip[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a.sin_addr, ip, sizeof(ip));
  return fmt::format("udp:{}:{}", ip, ntohs(a.sin_port));
}

void frame_datagram(Packet& p, const sockaddr_in& src, const sockaddr_in& dst, size_t payload_len) {
  static constexpr uint8_t kMacA[6] = {0x02, 0x67, 0x61, 0x6f, 0x6e, 0x01};  // "gaon"
  static constexpr uint8_t kMacB[6] = {0x02, 0x67, 0x61, 0x6f, 0x6e, 0x02};
  uint8_t* d = p.data();
  std::memcpy(d + net::eth::dst, kMacB, 6);
  std::memcpy(d + net::eth::src, kMacA, 6);
  net::store16(d + net::eth::type, net::kEthIPv4);
  uint8_t* ip = d + net::kEthHdr;
  ip[0] = 0x45;
  ip[1] = 0;
  net::store16(ip + net::ip4::total_len, uint16_t(20 + 8 + payload_len));
  net::store16(ip + net::ip4::id, 0);
  net::store16(ip + net::ip4::frag, 0x4000);  // DF
  ip[net::ip4::ttl] = 64;
  ip[net::ip4::proto] = net::kProtoUdp;
  net::store16(ip + net::ip4::csum, 0);
  std::memcpy(ip + net::ip4::src, &src.sin_addr, 4);
  std::memcpy(ip + net::ip4::dst, &dst.sin_addr, 4);
  net::store16(ip + net::ip4::csum, csum::ipv4_header(ip, 20));
  uint8_t* udp = ip + 20;
  std::memcpy(udp + net::udp::sport, &src.sin_port, 2);
  std::memcpy(udp + net::udp::dport, &dst.sin_port, 2);
  net::store16(udp + net::udp::len, uint16_t(8 + payload_len));
  net::store16(udp + net::udp::csum, 0);
  p.len = uint16_t(kSynthHeaders + payload_len);
  p.parsed = false;
}

static Result<int> udp_socket() {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error("socket: {}", std::strerror(errno));
  const int buf = 4 << 20;  // absorb bursts
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
  return fd;
}

// The destination and payload of a frame the engine sends; false if it is not UDP/IPv4.
static bool udp_target(Packet& p, sockaddr_in& to, sockaddr_in* from = nullptr) {
  if (!p.parsed && parse(p, {.verify_l4_checksum = false}) != ParseResult::ok) return false;
  if (p.hdr.l4_proto != L4::udp || p.hdr.l3_proto != L3::ipv4) return false;
  to = {};
  to.sin_family = AF_INET;
  std::memcpy(&to.sin_addr, p.l3() + net::ip4::dst, 4);
  std::memcpy(&to.sin_port, p.l4() + net::udp::dport, 2);
  if (from) {
    *from = {};
    from->sin_family = AF_INET;
    std::memcpy(&from->sin_addr, p.l3() + net::ip4::src, 4);
    std::memcpy(&from->sin_port, p.l4() + net::udp::sport, 2);
  }
  return true;
}

// Why a frame the engine sends cannot go out as a datagram.
enum class Unsent { none, not_udp, tail_lost };

// The iovecs of the datagram a frame carries: its payload, then the tail kept for an
// oversize one. `to` (and `from`) as for udp_target.
static Unsent datagram_of(Packet& p, OversizeStore* big, iovec (&iov)[2], size_t& niov,
                          sockaddr_in& to, sockaddr_in* from = nullptr) {
  if (!udp_target(p, to, from)) return Unsent::not_udp;
  iov[0] = {p.payload(), p.hdr.payload_len};
  niov = 1;
  if (p.oversize == 0) return Unsent::none;
  const std::span<const uint8_t> tail = big ? big->tail(p.oversize) : std::span<const uint8_t>{};
  if (tail.empty()) return Unsent::tail_lost;
  iov[1] = {const_cast<uint8_t*>(tail.data()), tail.size()};
  niov = 2;
  return Unsent::none;
}

// Datagrams the kernel dropped because the socket's receive buffer was full (gaond did
// not read fast enough, or the pool had no frames to read them into).
static uint64_t socket_drops(int fd) {
  uint32_t mem[SK_MEMINFO_VARS] = {};
  socklen_t len = sizeof(mem);
  if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0 || len <= SK_MEMINFO_DROPS * 4)
    return 0;
  return mem[SK_MEMINFO_DROPS];
}

// ---------------------------------------------------------------- OversizeStore

Result<std::unique_ptr<OversizeStore>> OversizeStore::create(uint32_t slots) {
  if (slots < 1 || slots > 256) return make_error("oversize store: 1..256 slots, not {}", slots);
  std::unique_ptr<OversizeStore> s(new OversizeStore());
  s->bytes_ = size_t(kBurst + slots) * kMaxDatagram;
  void* m = mmap(nullptr, s->bytes_, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return make_error("oversize store: mmap: {}", std::strerror(errno));
  s->base_ = static_cast<uint8_t*>(m);
  s->scratch_.resize(kBurst);
  for (uint32_t i = 0; i < kBurst; ++i) s->scratch_[i] = i;
  s->ring_.resize(slots);
  for (uint32_t i = 0; i < slots; ++i) s->ring_[i].buf = uint32_t(kBurst) + i;
  return s;
}

OversizeStore::~OversizeStore() {
  if (base_ != nullptr) munmap(base_, bytes_);
}

uint32_t OversizeStore::keep(uint32_t i, uint32_t len) {
  const uint32_t s = next_;
  next_ = (next_ + 1) % uint32_t(ring_.size());
  Slot& slot = ring_[s];
  std::swap(slot.buf, scratch_[i]);
  gen_ = (gen_ + 1) & 0xffffff;
  if (gen_ == 0) gen_ = 1;
  slot.gen = gen_;
  slot.len = len;
  ++kept_;
  return gen_ << 8 | s;
}

std::span<const uint8_t> OversizeStore::tail(uint32_t ticket) const {
  const uint32_t s = ticket & 0xff;
  if (s >= ring_.size() || ring_[s].gen != ticket >> 8) return {};
  return {buf(ring_[s].buf), ring_[s].len};
}

// ---------------------------------------------------------------- receive and send

// Receives up to `want` datagrams from `fd` straight into fresh pool frames, behind room
// for the synthesized headers. Returns how many; their payload lengths (what is in the
// frame) go to `len` and, when `from` is given, their sources to `from`. With `big`, what
// does not fit a frame is kept there (Packet::oversize); without, such datagrams are
// freed and counted as truncated. `drained` tells whether the socket had fewer than asked;
// `refused` counts ICMP port unreachable reported on a connected socket.
static uint32_t recv_frames(int fd, BufferPool& pool, OversizeStore* big, Packet** out,
                            uint32_t want, sockaddr_in* from, uint32_t* len, uint64_t& truncated,
                            uint64_t& oversize, uint64_t& refused, bool& drained, uint64_t& calls) {
  constexpr uint32_t kHead = kMaxData - kSynthHeaders;
  mmsghdr msgs[kBurst];
  iovec iov[kBurst][2];
  want = std::min<uint32_t>(want, kBurst);
  drained = false;
  if (want == 0 || pool.available() < want) return 0;
  for (uint32_t i = 0; i < want; ++i) {
    out[i] = pool.alloc();
    iov[i][0] = {out[i]->data() + kSynthHeaders, kHead};
    if (big) {
      const std::span<uint8_t> rest = big->scratch(i);
      iov[i][1] = {rest.data(), OversizeStore::kMaxDatagram - kHead};
    }
    msgs[i].msg_hdr = {};
    if (from) {
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
    }
    msgs[i].msg_hdr.msg_iov = iov[i];
    msgs[i].msg_hdr.msg_iovlen = big ? 2 : 1;
  }
  const int n = recvmmsg(fd, msgs, want, MSG_DONTWAIT, nullptr);
  ++calls;
  if (n < 0 && errno == ECONNREFUSED) ++refused;  // a connected socket's peer is gone
  const uint32_t got = n > 0 ? uint32_t(n) : 0;
  drained = got < want;
  uint32_t kept = 0;
  for (uint32_t i = 0; i < got; ++i) {
    if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
      ++truncated;
      pool.free(out[i]);
      continue;
    }
    if (from) from[kept] = from[i];
    len[kept] = std::min(msgs[i].msg_len, kHead);
    if (msgs[i].msg_len > kHead) {
      out[i]->oversize = big->keep(i, msgs[i].msg_len - kHead);
      out[i]->oversize_len = msgs[i].msg_len;
      ++oversize;
    }
    out[kept++] = out[i];
  }
  for (uint32_t i = got; i < want; ++i) pool.free(out[i]);
  return kept;
}

// ---------------------------------------------------------------- ServicePort

Result<std::unique_ptr<ServicePort>> ServicePort::open(const sockaddr_in& listen, BufferPool& pool,
                                                       OversizeStore* big) {
  auto fd = udp_socket();
  if (!fd) return Error{fd.error()};
  std::unique_ptr<ServicePort> port(new ServicePort(pool));
  port->fd_ = *fd;
  port->big_ = big;
  port->addr_ = listen;
  if (bind(*fd, reinterpret_cast<const sockaddr*>(&listen), sizeof(listen)) != 0)
    return make_error("{}: {}", to_string(listen),
                      errno == EADDRINUSE ? "address already in use" : std::strerror(errno));
  return port;
}

ServicePort::~ServicePort() {
  if (fd_ >= 0) close(fd_);
}

std::string ServicePort::name() const { return to_string(addr_); }

nlohmann::json ServicePort::stats() const {
  return {{"rx", rx_},
          {"tx", tx_},
          {"rx_calls", rx_calls_},
          {"tx_calls", tx_calls_},
          {"truncated", truncated_},
          {"unsendable", unsendable_},
          {"send_errors", send_errors_},
          {"oversize_rx", oversize_rx_},
          {"oversize_passed", oversize_passed_},
          {"oversize_lost", oversize_lost_},
          {"rx_dropped", {{"truncated", truncated_}, {"socket_full", socket_drops(fd_)}}},
          {"tx_dropped",
           {{"unsendable", unsendable_},
            {"send_errors", send_errors_},
            {"oversize_lost", oversize_lost_}}}};
}

uint32_t ServicePort::rx_burst(std::span<Packet*> out) {
  if (skip_rx_) {
    skip_rx_ = false;
    drained_ = true;
    return 0;
  }
  sockaddr_in from[kBurst];
  uint32_t len[kBurst];
  const uint32_t n = recv_frames(fd_, pool_, big_, out.data(), uint32_t(out.size()), from, len,
                                 truncated_, oversize_rx_, refused_, drained_, rx_calls_);
  for (uint32_t i = 0; i < n; ++i) frame_datagram(*out[i], from[i], addr_, len[i]);
  rx_ += n;
  return n;
}

uint32_t ServicePort::tx_burst(std::span<Packet*> pkts) {
  mmsghdr msgs[kBurst];
  iovec iov[kBurst][2];
  sockaddr_in to[kBurst];
  uint32_t taken = 0;
  while (taken < pkts.size()) {
    // Build up to a burst of sendable frames, dropping (and counting) unsendable ones.
    uint32_t n = 0, first = taken;
    for (uint32_t i = taken; i < pkts.size() && n < kBurst; ++i) {
      Packet* p = pkts[i];
      size_t niov = 0;
      if (const Unsent why = datagram_of(*p, big_, iov[n], niov, to[n]); why != Unsent::none) {
        if (i != first) break;  // only at the front: the caller keeps an unbroken tail
        ++(why == Unsent::tail_lost ? oversize_lost_ : unsendable_);
        pool_.free(p);
        ++first;
        ++taken;
        continue;
      }
      msgs[n].msg_hdr = {};
      msgs[n].msg_hdr.msg_name = &to[n];
      msgs[n].msg_hdr.msg_namelen = sizeof(to[n]);
      msgs[n].msg_hdr.msg_iov = iov[n];
      msgs[n].msg_hdr.msg_iovlen = niov;
      ++n;
    }
    if (n == 0) continue;
    const int sent = sendmmsg(fd_, msgs, n, MSG_DONTWAIT);
    ++tx_calls_;
    if (sent < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) break;
      ++send_errors_;  // this datagram cannot go (e.g. an unroutable address): drop it
      pool_.free(pkts[first]);
      taken = first + 1;
      continue;
    }
    for (int i = 0; i < sent; ++i) {
      oversize_passed_ += pkts[first + uint32_t(i)]->oversize != 0;
      pool_.free(pkts[first + uint32_t(i)]);
    }
    tx_ += uint32_t(sent);
    taken = first + uint32_t(sent);
    if (uint32_t(sent) < n) break;
  }
  return taken;
}

// ---------------------------------------------------------------- AppPort

Result<std::unique_ptr<AppPort>> AppPort::open(const sockaddr_in& app, const sockaddr_in& service,
                                               BufferPool& pool, Options opt) {
  std::unique_ptr<AppPort> port(new AppPort(pool));
  port->app_ = app;
  port->service_ = service;
  port->opt_ = opt;
  port->ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (port->ep_ < 0) return make_error("epoll_create1: {}", std::strerror(errno));
  port->nat_.reserve(opt.max_clients);
  return port;
}

AppPort::~AppPort() {
  for (auto& [k, e] : nat_) close(e.fd);
  if (ep_ >= 0) close(ep_);
}

std::string AppPort::name() const { return to_string(app_); }

nlohmann::json AppPort::stats() const {
  uint64_t full = closed_drops_;  // NAT sockets: the open ones and those closed since
  for (const auto& [k, e] : nat_) full += socket_drops(e.fd);
  return {{"rx", rx_},
          {"tx", tx_},
          {"rx_calls", rx_calls_},
          {"tx_calls", tx_calls_},
          {"polls", polls_},
          {"nat_clients", nat_.size()},
          {"nat_created", created_},
          {"nat_expired", expired_},
          {"nat_evicted", evicted_},
          {"truncated", truncated_},
          {"unsendable", unsendable_},
          {"send_errors", send_errors_},
          {"oversize_rx", oversize_rx_},
          {"oversize_passed", oversize_passed_},
          {"oversize_lost", oversize_lost_},
          {"refused", refused_},
          {"rx_dropped", {{"truncated", truncated_}, {"socket_full", full}}},
          {"tx_dropped",
           {{"unsendable", unsendable_},
            {"send_errors", send_errors_},
            {"oversize_lost", oversize_lost_}}}};
}

static uint64_t client_key(const sockaddr_in& c) {
  return uint64_t{c.sin_addr.s_addr} << 16 | c.sin_port;
}

void AppPort::close_entry(uint64_t key) {
  auto it = nat_.find(key);
  if (it == nat_.end()) return;
  epoll_ctl(ep_, EPOLL_CTL_DEL, it->second.fd, nullptr);
  closed_drops_ += socket_drops(it->second.fd);
  close(it->second.fd);
  lru_.erase(it->second.lru);
  nat_.erase(it);
}

AppPort::Nat* AppPort::nat_for(const sockaddr_in& client, uint64_t now) {
  const uint64_t key = client_key(client);
  if (auto it = nat_.find(key); it != nat_.end()) {
    it->second.last_used = now;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return &it->second;
  }
  if (nat_.size() >= opt_.max_clients && !lru_.empty()) {  // full: the least recently used goes
    close_entry(lru_.back());
    ++evicted_;
  }
  auto fd = udp_socket();
  if (!fd) return nullptr;
  if (connect(*fd, reinterpret_cast<const sockaddr*>(&app_), sizeof(app_)) != 0) {
    close(*fd);
    return nullptr;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = key;
  epoll_ctl(ep_, EPOLL_CTL_ADD, *fd, &ev);
  ++created_;
  Nat& e = nat_[key];
  e.fd = *fd;
  e.client = client;
  e.last_used = now;
  lru_.push_front(key);
  e.lru = lru_.begin();
  return &e;
}

uint32_t AppPort::tx_burst(std::span<Packet*> pkts) {
  const uint64_t now = Engine::now_ns();
  mmsghdr msgs[kBurst];
  iovec iov[kBurst][2];
  uint32_t taken = 0;
  while (taken < pkts.size()) {
    // A run of frames from the same client goes out with one sendmmsg on its socket.
    sockaddr_in to, from;
    Packet* p = pkts[taken];
    size_t niov = 0;
    if (const Unsent why = datagram_of(*p, opt_.oversize, iov[0], niov, to, &from);
        why != Unsent::none) {
      ++(why == Unsent::tail_lost ? oversize_lost_ : unsendable_);
      pool_.free(p);
      ++taken;
      continue;
    }
    Nat* e = nat_for(from, now);
    if (e == nullptr) {
      ++send_errors_;
      pool_.free(p);
      ++taken;
      continue;
    }
    uint32_t n = 0;
    for (uint32_t i = taken; i < pkts.size() && n < kBurst; ++i) {
      sockaddr_in t2, f2;
      if (i > taken &&
          (datagram_of(*pkts[i], opt_.oversize, iov[n], niov, t2, &f2) != Unsent::none ||
           client_key(f2) != client_key(from)))
        break;
      msgs[n].msg_hdr = {};
      msgs[n].msg_hdr.msg_iov = iov[n];
      msgs[n].msg_hdr.msg_iovlen = niov;
      ++n;
    }
    const int sent = sendmmsg(e->fd, msgs, n, MSG_DONTWAIT);
    ++tx_calls_;
    if (sent < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) break;
      ++send_errors_;  // e.g. ECONNREFUSED: the application is not listening
      refused_ += errno == ECONNREFUSED;
      pool_.free(pkts[taken]);
      ++taken;
      continue;
    }
    for (int i = 0; i < sent; ++i) {
      oversize_passed_ += pkts[taken + uint32_t(i)]->oversize != 0;
      pool_.free(pkts[taken + uint32_t(i)]);
    }
    tx_ += uint32_t(sent);
    taken += uint32_t(sent);
    if (uint32_t(sent) < n) break;
  }
  return taken;
}

uint32_t AppPort::rx_burst(std::span<Packet*> out) {
  drained_ = true;
  const bool skip = std::exchange(skip_rx_, false);
  if (nat_.empty()) return 0;
  if (const uint64_t now = Engine::now_ns(); now - last_sweep_ > 1'000'000'000ull) sweep(now);
  if (skip) return 0;
  epoll_event ev[16];
  const int ready = epoll_wait(ep_, ev, 16, 0);
  ++polls_;
  drained_ = ready < 16;
  uint32_t got = 0;
  for (int r = 0; r < ready; ++r) {
    if (got == out.size()) {
      drained_ = false;
      break;
    }
    const uint64_t key = ev[r].data.u64;  // epoll_event is packed: copy, don't bind
    auto it = nat_.find(key);
    if (it == nat_.end()) continue;
    Nat& e = it->second;
    uint32_t len[kBurst];
    bool empty = false;
    const uint32_t n =
        recv_frames(e.fd, pool_, opt_.oversize, out.data() + got, uint32_t(out.size() - got),
                    nullptr, len, truncated_, oversize_rx_, refused_, empty, rx_calls_);
    drained_ = drained_ && empty;
    for (uint32_t i = 0; i < n; ++i) frame_datagram(*out[got + i], service_, e.client, len[i]);
    got += n;
  }
  rx_ += got;
  return got;
}

// ---------------------------------------------------------------- Waiter

Result<std::unique_ptr<Waiter>> Waiter::open(std::vector<ServicePort*> wire,
                                             std::vector<AppPort*> host) {
  std::unique_ptr<Waiter> w(new Waiter());
  w->wire_ = std::move(wire);
  w->host_ = std::move(host);
  w->ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (w->ep_ < 0) return make_error("epoll_create1: {}", std::strerror(errno));
  const size_t nw = w->wire_.size();
  for (size_t i = 0; i < nw + w->host_.size(); ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = uint32_t(i);  // wire ports first, then host ports
    const int fd = i < nw ? w->wire_[i]->fd() : w->host_[i - nw]->epoll_fd();
    if (epoll_ctl(w->ep_, EPOLL_CTL_ADD, fd, &ev) != 0)
      return make_error("epoll_ctl: {}", std::strerror(errno));
  }
  w->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = UINT32_MAX;
  if (w->wake_fd_ < 0 || epoll_ctl(w->ep_, EPOLL_CTL_ADD, w->wake_fd_, &ev) != 0)
    return make_error("eventfd: {}", std::strerror(errno));
  return w;
}

Waiter::~Waiter() {
  if (ep_ >= 0) close(ep_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

void Waiter::wake() {
  const uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) < 0) {
  }  // already signalled (counter full): fine
}

void Waiter::wait(int timeout_ms) {
  epoll_event ev[64];
  const int n = epoll_wait(ep_, ev, 64, timeout_ms);
  ++waits_;
  const bool all = n < 0 || n == 64;  // interrupted, or maybe more than we saw: read all
  for (auto* p : wire_) p->hint_ready(all);
  for (auto* p : host_) p->hint_ready(all);
  for (int i = 0; i < n; ++i) {
    const uint32_t which = ev[i].data.u32;  // packed struct: copy the field
    if (which == UINT32_MAX) {
      uint64_t n;
      if (read(wake_fd_, &n, sizeof(n)) < 0) {
      }
    } else if (which < wire_.size())
      wire_[which]->hint_ready(true);
    else if (which - wire_.size() < host_.size())
      host_[which - wire_.size()]->hint_ready(true);
  }
}

// ---------------------------------------------------------------- PortGroup

static uint64_t addr_key(const uint8_t* ip, const uint8_t* port) {
  uint32_t a;
  uint16_t p;
  std::memcpy(&a, ip, 4);
  std::memcpy(&p, port, 2);
  return uint64_t{a} << 16 | p;
}

void PortGroup::add(Port& member, const sockaddr_in& service) {
  members_.push_back(&member);
  keys_.push_back(uint64_t{service.sin_addr.s_addr} << 16 | service.sin_port);
}

int PortGroup::member_for(Packet& p) {
  if (members_.size() == 1) return 0;  // the member checks what it can send
  if (!p.parsed && parse(p, {.verify_l4_checksum = false}) != ParseResult::ok) return -1;
  if (p.hdr.l4_proto != L4::udp || p.hdr.l3_proto != L3::ipv4) return -1;
  const bool src = route_ == Route::by_source;
  const uint64_t k = addr_key(p.l3() + (src ? net::ip4::src : net::ip4::dst),
                              p.l4() + (src ? net::udp::sport : net::udp::dport));
  for (size_t i = 0; i < keys_.size(); ++i)
    if (keys_[i] == k) return int(i);
  return -1;
}

uint32_t PortGroup::rx_burst(std::span<Packet*> out) {
  uint32_t got = 0;
  bool drained = true;
  const size_t n = members_.size();
  for (size_t i = 0; i < n && got < out.size(); ++i) {
    Port& m = *members_[(next_ + i) % n];
    got += m.rx_burst(out.subspan(got));
    drained = drained && m.rx_drained();
    if (got == out.size() && i + 1 < n) drained = false;  // others not asked this time
  }
  if (n > 0) next_ = (next_ + 1) % n;
  drained_ = drained;
  return got;
}

uint32_t PortGroup::tx_burst(std::span<Packet*> pkts) {
  uint32_t taken = 0;
  while (taken < pkts.size()) {
    const int m = member_for(*pkts[taken]);
    if (m < 0) {
      ++unroutable_;
      pool_.free(pkts[taken++]);
      continue;
    }
    uint32_t run = 1;  // frames for the same member go in one call
    while (taken + run < pkts.size() && member_for(*pkts[taken + run]) == m) ++run;
    const uint32_t sent = members_[size_t(m)]->tx_burst(pkts.subspan(taken, run));
    taken += sent;
    if (sent < run) break;
  }
  return taken;
}

uint64_t PortGroup::gaps() const {
  uint64_t n = 0;
  for (const Port* m : members_) n += m->gaps();
  return n;
}

nlohmann::json PortGroup::stats() const {
  nlohmann::json members = nlohmann::json::array();
  for (const Port* m : members_) {
    nlohmann::json j = m->stats();
    j["name"] = m->name();
    members.push_back(j);
  }
  // The members' drops added up, with this group's own.
  nlohmann::json rx_dropped = nlohmann::json::object(), tx_dropped = {{"unroutable", unroutable_}};
  uint64_t rx = 0, tx = 0;
  for (const auto& m : members) {
    rx += m.value("rx", uint64_t{0});
    tx += m.value("tx", uint64_t{0});
    const nlohmann::json mr = m.value("rx_dropped", nlohmann::json::object()),
                         mt = m.value("tx_dropped", nlohmann::json::object());
    for (const auto& [k, v] : mr.items())
      rx_dropped[k] = rx_dropped.value(k, uint64_t{0}) + v.get<uint64_t>();
    for (const auto& [k, v] : mt.items())
      tx_dropped[k] = tx_dropped.value(k, uint64_t{0}) + v.get<uint64_t>();
  }
  return {{"members", members}, {"unroutable", unroutable_}, {"rx", rx},
          {"tx", tx},           {"rx_dropped", rx_dropped},  {"tx_dropped", tx_dropped}};
}

void AppPort::sweep(uint64_t now_ns) {
  last_sweep_ = now_ns;
  while (!lru_.empty()) {  // oldest first: stop at the first one still in use
    const uint64_t key = lru_.back();
    if (now_ns - nat_.find(key)->second.last_used <= opt_.idle_timeout_ns) break;
    close_entry(key);
    ++expired_;
  }
}

}  // namespace gaon::sidecar
