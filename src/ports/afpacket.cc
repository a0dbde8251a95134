#include "gaon/afpacket.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/core.h>

#include "netdev.h"

namespace gaon::afpacket {

Result<std::string> parse_spec(std::string_view text) {
  if (!text.starts_with("afpacket:"))
    return make_error("'{}': expected afpacket:IFACE", printable(text));
  std::string_view name = text.substr(9);
  if (name.empty() || name.size() >= IFNAMSIZ || name.find_first_of("@/ :") != name.npos)
    return make_error("'{}': expected afpacket:IFACE (an interface name)", printable(text));
  return std::string(name);
}

AfPacketPort::~AfPacketPort() {
  if (ring_ != nullptr) munmap(ring_, ring_bytes_);
  if (fd_ >= 0) close(fd_);
}

Result<std::unique_ptr<AfPacketPort>> AfPacketPort::open(const std::string& ifname,
                                                         BufferPool& pool, uint32_t ring_frames) {
  std::unique_ptr<AfPacketPort> p(new AfPacketPort(ifname, pool));
  p->ifindex_ = int(if_nametoindex(ifname.c_str()));
  if (p->ifindex_ == 0)
    return make_error("{}: no such interface ({})", ifname, std::strerror(errno));
  // A frame larger than a buffer would be cut (and dropped): refuse what could bring one.
  if (auto fit = netdev::check_frames_fit(ifname, true, "an AF_PACKET frame"); !fit)
    return Error{fit.error()};
  // A bridge port would have every frame forwarded twice: by the bridge and by gaond.
  if (access(fmt::format("/sys/class/net/{}/master", ifname).c_str(), F_OK) == 0)
    return make_error(
        "{} is a port of a bridge, which would forward its frames a second time (take it out: "
        "ip link set {} nomaster)",
        ifname, ifname);
  bpf_xdp_query_opts q{};
  q.sz = sizeof(q);
  if (bpf_xdp_query(p->ifindex_, 0, &q) == 0 && (q.drv_prog_id || q.skb_prog_id || q.hw_prog_id))
    return make_error(
        "{} has an XDP program (id {}), which takes frames before a packet socket sees them "
        "(remove it: ip link set dev {} {} off; or use afxdp:{})",
        ifname,
        q.drv_prog_id   ? q.drv_prog_id
        : q.skb_prog_id ? q.skb_prog_id
                        : q.hw_prog_id,
        ifname,
        q.drv_prog_id   ? "xdp"
        : q.skb_prog_id ? "xdpgeneric"
                        : "xdpoffload",
        ifname);
  p->fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (p->fd_ < 0)
    return make_error("AF_PACKET socket: {} (needs root or CAP_NET_RAW)", std::strerror(errno));
  const int v2 = TPACKET_V2, one = 1;
  if (setsockopt(p->fd_, SOL_PACKET, PACKET_VERSION, &v2, sizeof(v2)) != 0)
    return make_error("TPACKET_V2: {}", std::strerror(errno));
  setsockopt(p->fd_, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
  if (setsockopt(p->fd_, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) != 0)
    return make_error("PACKET_IGNORE_OUTGOING: {}", std::strerror(errno));
  // The ring: 2 KiB frames in 64 KiB blocks.
  p->frame_size_ = 2048;
  const uint32_t block = 1 << 16, per_block = block / p->frame_size_;
  const uint32_t blocks = (ring_frames + per_block - 1) / per_block;
  tpacket_req req{};
  req.tp_block_size = block;
  req.tp_block_nr = blocks;
  req.tp_frame_size = p->frame_size_;
  req.tp_frame_nr = blocks * per_block;
  if (setsockopt(p->fd_, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) != 0)
    return make_error("AF_PACKET rx ring: {}", std::strerror(errno));
  p->frames_ = req.tp_frame_nr;
  p->ring_bytes_ = size_t{block} * blocks;
  void* m = mmap(nullptr, p->ring_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd_, 0);
  if (m == MAP_FAILED) return make_error("mapping the rx ring: {}", std::strerror(errno));
  p->ring_ = static_cast<uint8_t*>(m);
  sockaddr_ll ll{};
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = htons(ETH_P_ALL);
  ll.sll_ifindex = p->ifindex_;
  if (bind(p->fd_, reinterpret_cast<sockaddr*>(&ll), sizeof(ll)) != 0)
    return make_error("binding to {}: {}", ifname, std::strerror(errno));
  // Promiscuous: frames for the far side's MAC address are ours to pass on.
  packet_mreq mr{};
  mr.mr_ifindex = p->ifindex_;
  mr.mr_type = PACKET_MR_PROMISC;
  if (setsockopt(p->fd_, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) != 0)
    return make_error("promiscuous mode on {}: {}", ifname, std::strerror(errno));
  return p;
}

uint32_t AfPacketPort::rx_burst(std::span<Packet*> out) {
  uint32_t n = 0;
  while (n < out.size()) {
    auto* h = reinterpret_cast<tpacket2_hdr*>(ring_ + size_t{next_} * frame_size_);
    if ((__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) == 0) break;
    const uint8_t* data = reinterpret_cast<const uint8_t*>(h) + h->tp_mac;
    const bool vlan = (h->tp_status & TP_STATUS_VLAN_VALID) != 0;
    const uint32_t len = h->tp_snaplen + (vlan ? 4 : 0);
    Packet* p = nullptr;
    if (h->tp_snaplen < h->tp_len || len > kMaxData || h->tp_snaplen < 14) {
      ++rx_truncated_;
    } else if ((p = pool_.alloc()) == nullptr) {
      ++pool_empty_;
    } else {
      uint8_t* d = p->data();
      if (vlan) {  // the kernel took the tag off: put it back after the MAC addresses
        std::memcpy(d, data, 12);
        const uint16_t tpid =
            htons((h->tp_status & TP_STATUS_VLAN_TPID_VALID) && h->tp_vlan_tpid ? h->tp_vlan_tpid
                                                                                : ETH_P_8021Q);
        const uint16_t tci = htons(h->tp_vlan_tci);
        std::memcpy(d + 12, &tpid, 2);
        std::memcpy(d + 14, &tci, 2);
        std::memcpy(d + 16, data + 12, h->tp_snaplen - 12);
      } else {
        std::memcpy(d, data, h->tp_snaplen);
      }
      p->len = uint16_t(len);
      out[n++] = p;
    }
    __atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    next_ = next_ + 1 == frames_ ? 0 : next_ + 1;
  }
  rx_ += n;
  drained_ = n < out.size();
  return n;
}

uint32_t AfPacketPort::tx_burst(std::span<Packet*> pkts) {
  mmsghdr msgs[kBurst];
  iovec iov[kBurst];
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_ifindex = ifindex_;
  to.sll_halen = 6;
  uint32_t done = 0;
  while (done < pkts.size()) {
    const uint32_t n = uint32_t(std::min<size_t>(kBurst, pkts.size() - done));
    for (uint32_t i = 0; i < n; ++i) {
      Packet* p = pkts[done + i];
      iov[i] = {p->data(), p->len};
      msgs[i].msg_hdr = {};
      msgs[i].msg_hdr.msg_name = &to;
      msgs[i].msg_hdr.msg_namelen = sizeof(to);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    ++tx_calls_;
    const int s = sendmmsg(fd_, msgs, n, MSG_DONTWAIT);
    if (s <= 0) {
      if (errno == EAGAIN || errno == ENOBUFS) break;  // the caller keeps the rest
      ++tx_errors_;                                    // a frame the device refuses: drop it
      pool_.free(pkts[done]);
      ++done;
      continue;
    }
    for (int i = 0; i < s; ++i) pool_.free(pkts[done + uint32_t(i)]);
    done += uint32_t(s);
    tx_ += uint32_t(s);
  }
  return done;
}

nlohmann::json AfPacketPort::stats() const {
  return {{"rx", rx_},
          {"tx", tx_},
          {"tx_calls", tx_calls_},
          {"rx_truncated", rx_truncated_},
          {"rx_pool_empty", pool_empty_},
          {"tx_errors", tx_errors_},
          {"rx_dropped", {{"truncated", rx_truncated_}, {"pool_empty", pool_empty_}}},
          {"tx_dropped", {{"send_errors", tx_errors_}}}};
}

}  // namespace gaon::afpacket
