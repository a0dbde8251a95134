// Reading and writing Ethernet pcap files with libpcap (tools and tests only).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gaon/result.h"

namespace gaon::pcapio {

struct Frame {
  uint64_t timestamp_ns = 0;
  std::vector<uint8_t> bytes;
};

// Every frame of an Ethernet (DLT_EN10MB) capture.
Result<std::vector<Frame>> read(const std::string& path);
// Writes `frames` as an Ethernet capture (microsecond timestamps).
Result<void> write(const std::string& path, const std::vector<Frame>& frames);

}  // namespace gaon::pcapio
