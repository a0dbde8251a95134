#include "netdev.h"

#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "gaon/packet.h"

namespace gaon::netdev {

namespace {

// An ethtool request (`data` starts with its ETHTOOL_G* command) on `fd`; false if refused.
bool ethtool(int fd, const std::string& ifname, void* data) {
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname.c_str());
  ifr.ifr_data = static_cast<char*>(data);
  return ioctl(fd, SIOCETHTOOL, &ifr) == 0;
}

// The same on a socket of its own.
bool ethtool(const std::string& ifname, void* data) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool ok = ethtool(fd, ifname, data);
  close(fd);
  return ok;
}

// An ethtool value (ETHTOOL_G*), or -1 when the driver does not say.
int ethtool_get(int fd, const std::string& ifname, uint32_t cmd) {
  struct ethtool_value v {};
  v.cmd = cmd;
  return ethtool(fd, ifname, &v) ? int(v.data) : -1;
}

}  // namespace

Result<void> check_frames_fit(const std::string& ifname, bool after_gro, const char* who) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error("{}: socket: {}", ifname, std::strerror(errno));
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname.c_str());
  const bool have_mtu = ioctl(fd, SIOCGIFMTU, &ifr) == 0;
  const int mtu = ifr.ifr_mtu;
  const int gro = after_gro ? ethtool_get(fd, ifname, ETHTOOL_GGRO) : 0;
  const int flags = after_gro ? ethtool_get(fd, ifname, ETHTOOL_GFLAGS) : 0;
  close(fd);
  constexpr int kL2 = 14 + 4;  // Ethernet header and one VLAN tag
  if (have_mtu && mtu + kL2 > int(kMaxData))
    return make_error(
        "{}: MTU {} makes frames of up to {} bytes, but {} holds at most {} (set it to {} or "
        "less: ip link set {} mtu {})",
        ifname, mtu, mtu + kL2, who, kMaxData, kMaxData - kL2, ifname, kMaxData - kL2);
  if (gro > 0 || (flags > 0 && (flags & ETH_FLAG_LRO)))
    return make_error(
        "{}: {} is on, so the kernel merges TCP segments into frames of up to 64 KiB that {} "
        "cannot hold (turn it off: ethtool -K {} {} off)",
        ifname, gro > 0 ? "GRO" : "LRO", who, ifname, gro > 0 ? "gro" : "lro");
  return ok();
}

std::string driver(const std::string& ifname) {
  ethtool_drvinfo info{};
  info.cmd = ETHTOOL_GDRVINFO;
  return ethtool(ifname, &info) ? std::string(info.driver) : "";
}

uint32_t rx_queues(const std::string& ifname) {
  ethtool_channels ch{};
  ch.cmd = ETHTOOL_GCHANNELS;
  if (ethtool(ifname, &ch) && ch.combined_count + ch.rx_count > 0)
    return ch.combined_count + ch.rx_count;
  uint32_t n = 0;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator("/sys/class/net/" + ifname + "/queues", ec))
    if (e.path().filename().string().starts_with("rx-")) ++n;
  return n ? n : 1;
}

}  // namespace gaon::netdev
