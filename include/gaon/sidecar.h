// Sidecar ports: UDP sockets in front of an application, no privileges needed.
//
//   ServicePort (the wire side): one UDP socket bound to the service address clients use.
//     rx: recvmmsg straight into pool frames, behind synthesized Ethernet/IPv4/UDP headers
//     (src = the client, dst = the service address; UDP checksum 0 = none).
//     tx: sendmmsg each frame's UDP payload to the frame's destination from that socket.
//   AppPort (the host side): what passes to the host goes to the application's address
//     from a per-client socket (a NAT entry, created on a client's first datagram, closed
//     after an idle timeout, or the least recently used one when max_clients are in use), so the
//     application's replies come back on that socket and through the engine's egress path (frames
//     from the service address to the client).
// A datagram larger than a frame passes whole, both ways, through the same NAT entry
// (OversizeStore below; the instance sees its head in IKernel::on_oversize).
// Syscalls are per burst (one recvmmsg/sendmmsg per socket per burst), never per packet
// in steady state; a NAT entry is allocated once per client. IPv4 only for now.
//   Waiter: blocks until either port has something to receive and tells each port what it
//     saw, so the first poll after a wake-up skips the receive syscall of a port that was
//     not ready (a port reads normally from the poll after). With Engine::run(..., 1) and
//     Port::rx_drained this is an event loop like memcached's own: a wake-up costs the
//     epoll_wait, one receive per ready socket and one send per destination.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "gaon/pool.h"
#include "gaon/port.h"
#include "gaon/result.h"

namespace gaon::sidecar {

// Datagrams larger than a frame. The sidecar ports receive each datagram's bytes past the
// frame into a scratch buffer (a second iovec), keep them here under a ticket that the head
// frame carries (Packet::oversize), and send head + tail as one datagram, byte for byte.
// Buffers are swapped, not copied: keeping message i's tail trades scratch buffer i for
// the oldest slot of a ring. A tail overwritten before its frame was sent (more than
// `slots` oversize datagrams in flight) is counted lost and its frame dropped. Memory:
// (kBurst + slots) x 64 KiB of address space, touched only as large datagrams arrive.
class OversizeStore {
 public:
  static constexpr uint32_t kMaxDatagram = 65535;
  static Result<std::unique_ptr<OversizeStore>> create(uint32_t slots = 64);
  ~OversizeStore();
  // Where message i (< kBurst) of a receive burst puts what does not fit its frame.
  std::span<uint8_t> scratch(uint32_t i) { return {buf(scratch_[i]), kMaxDatagram}; }
  // Keeps message i's tail of `len` bytes; returns its ticket (never 0).
  uint32_t keep(uint32_t i, uint32_t len);
  // The tail kept under `ticket`, or an empty span when it was overwritten since.
  std::span<const uint8_t> tail(uint32_t ticket) const;
  uint64_t kept() const { return kept_; }
  size_t bytes() const { return bytes_; }

 private:
  OversizeStore() = default;
  uint8_t* buf(uint32_t b) const { return base_ + size_t(b) * kMaxDatagram; }
  struct Slot {
    uint32_t buf = 0, gen = 0, len = 0;
  };
  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
  std::vector<uint32_t> scratch_;  // kBurst buffer indexes
  std::vector<Slot> ring_;
  uint32_t next_ = 0, gen_ = 0;
  uint64_t kept_ = 0;
};

// "udp:IP:PORT" (IPv4, concrete address) → sockaddr_in.
Result<sockaddr_in> parse_udp_address(std::string_view text);
std::string to_string(const sockaddr_in& a);

class ServicePort final : public Port {
 public:
  // With `big`, datagrams larger than a frame pass whole (OversizeStore); without, they are
  // dropped and counted as truncated.
  static Result<std::unique_ptr<ServicePort>> open(const sockaddr_in& listen, BufferPool& pool,
                                                   OversizeStore* big = nullptr);
  ~ServicePort() override;
  uint32_t rx_burst(std::span<Packet*> out) override;
  uint32_t tx_burst(std::span<Packet*> pkts) override;
  std::string name() const override;
  nlohmann::json stats() const override;
  bool rx_drained() const override { return drained_; }
  int fd() const { return fd_; }
  // The next rx_burst skips its syscall (returns 0) when `ready` is false.
  void hint_ready(bool ready) { skip_rx_ = !ready; }

 private:
  ServicePort(BufferPool& pool) : pool_(pool) {}
  BufferPool& pool_;
  OversizeStore* big_ = nullptr;
  int fd_ = -1;
  bool drained_ = false, skip_rx_ = false;
  sockaddr_in addr_{};
  uint64_t rx_ = 0, tx_ = 0, truncated_ = 0, unsendable_ = 0, send_errors_ = 0;
  uint64_t oversize_rx_ = 0, oversize_passed_ = 0, oversize_lost_ = 0, refused_ = 0;
  uint64_t rx_calls_ = 0, tx_calls_ = 0;  // syscalls: rx / rx_calls is the mean burst
};

class AppPort final : public Port {
 public:
  struct Options {
    size_t max_clients = 4096;
    uint64_t idle_timeout_ns = 60'000'000'000ull;
    OversizeStore* oversize = nullptr;  // as for ServicePort::open
  };
  // `app`: where the application listens; `service`: the address clients use (the
  // source of the frames this port builds from the application's replies).
  static Result<std::unique_ptr<AppPort>> open(const sockaddr_in& app, const sockaddr_in& service,
                                               BufferPool& pool, Options opt);
  ~AppPort() override;
  uint32_t rx_burst(std::span<Packet*> out) override;
  uint32_t tx_burst(std::span<Packet*> pkts) override;
  std::string name() const override;
  nlohmann::json stats() const override;
  bool rx_drained() const override { return drained_; }
  int epoll_fd() const { return ep_; }
  // The application refused datagrams (ECONNREFUSED: restarted, or gone) this many times.
  uint64_t gaps() const override { return refused_; }
  void hint_ready(bool ready) { skip_rx_ = !ready; }
  // Closes NAT entries idle for longer than the timeout (called at most once a second).
  void sweep(uint64_t now_ns);
  size_t clients() const { return nat_.size(); }

 private:
  struct Nat {
    int fd = -1;
    sockaddr_in client{};
    uint64_t last_used = 0;
    std::list<uint64_t>::iterator lru;  // its place in lru_
  };
  AppPort(BufferPool& pool) : pool_(pool) {}
  Nat* nat_for(const sockaddr_in& client, uint64_t now);
  void close_entry(uint64_t key);

  BufferPool& pool_;
  sockaddr_in app_{}, service_{};
  Options opt_;
  int ep_ = -1;
  bool drained_ = false, skip_rx_ = false;
  std::unordered_map<uint64_t, Nat> nat_;
  std::list<uint64_t> lru_;  // client keys, most recently used first: O(1) evict and expire
  uint64_t last_sweep_ = 0;
  uint64_t closed_drops_ = 0;  // socket_full of NAT sockets since closed
  uint64_t rx_ = 0, tx_ = 0, created_ = 0, expired_ = 0, evicted_ = 0, truncated_ = 0,
           unsendable_ = 0, send_errors_ = 0;
  uint64_t oversize_rx_ = 0, oversize_passed_ = 0, oversize_lost_ = 0, refused_ = 0;
  uint64_t rx_calls_ = 0, tx_calls_ = 0, polls_ = 0;  // recvmmsg/sendmmsg, epoll_wait
};

class Waiter {
 public:
  static Result<std::unique_ptr<Waiter>> open(ServicePort& wire, AppPort& host) {
    return open(std::vector<ServicePort*>{&wire}, std::vector<AppPort*>{&host});
  }
  static Result<std::unique_ptr<Waiter>> open(std::vector<ServicePort*> wire,
                                              std::vector<AppPort*> host);
  ~Waiter();
  // Blocks for up to `timeout_ms` until a port has something to receive, or wake() is
  // called.
  void wait(int timeout_ms);
  // Any thread: ends the current (or next) wait early (Engine::set_waker).
  void wake();
  uint64_t waits() const { return waits_; }

 private:
  Waiter() = default;
  std::vector<ServicePort*> wire_;
  std::vector<AppPort*> host_;
  int ep_ = -1, wake_fd_ = -1;
  uint64_t waits_ = 0;
};

// Several sidecar services behind one engine: one Port over the services' ServicePorts (a
// frame leaves by the one whose address is its source) or over their AppPorts (by the one
// whose service address is its destination). Receives take turns across the members.
// Frames no member serves are freed and counted (`unroutable`).
class PortGroup final : public Port {
 public:
  enum class Route { by_source, by_destination };
  PortGroup(std::string name, Route route, BufferPool& pool)
      : name_(std::move(name)), route_(route), pool_(pool) {}
  void add(Port& member, const sockaddr_in& service);  // not owned
  uint32_t rx_burst(std::span<Packet*> out) override;
  uint32_t tx_burst(std::span<Packet*> pkts) override;
  std::string name() const override { return name_; }
  nlohmann::json stats() const override;
  bool rx_drained() const override { return drained_; }
  uint64_t gaps() const override;  // the members'

 private:
  int member_for(Packet& p);
  std::string name_;
  Route route_;
  BufferPool& pool_;
  std::vector<Port*> members_;
  std::vector<uint64_t> keys_;  // service address of each member
  size_t next_ = 0;             // whose turn it is to receive first
  bool drained_ = false;
  uint64_t unroutable_ = 0;
};

// Writes Ethernet + IPv4 + UDP headers for a `payload_len`-byte datagram from `src` to
// `dst` in front of the payload already at p.data() + 42, and sets p.len.
void frame_datagram(Packet& p, const sockaddr_in& src, const sockaddr_in& dst, size_t payload_len);
inline constexpr uint32_t kSynthHeaders = 14 + 20 + 8;

}  // namespace gaon::sidecar
