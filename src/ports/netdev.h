// What a port needs to know of a network interface before it takes its frames: whether
// every frame the kernel hands it fits one of the engine's buffers.
#pragma once

#include <string>

#include "gaon/result.h"

namespace gaon::netdev {

// Fails, naming the interface, the limit and the fix, when a frame `ifname` receives could
// be larger than a buffer's kMaxData bytes: its MTU (plus Ethernet and one VLAN tag) is
// too large, or — when the frames are taken after GRO (`after_gro`: packet sockets and
// generic XDP) — GRO or LRO is on, which hands the stack merged frames of up to 64 KiB.
Result<void> check_frames_fit(const std::string& ifname, bool after_gro, const char* who);

// The interface's driver ("veth", "mlx5_core", ...; "" when it cannot be read).
std::string driver(const std::string& ifname);

// How many receive queues `ifname` has: its combined and receive-only channels (ethtool
// -l), or its sysfs queues/rx-* entries where the driver does not report channels; at
// least 1. An AF_XDP socket takes the frames of one queue, so a port needs one per queue.
uint32_t rx_queues(const std::string& ifname);

}  // namespace gaon::netdev
