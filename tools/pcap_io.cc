#include "pcap_io.h"

#include <pcap/pcap.h>

#include <memory>

namespace gaon::pcapio {

Result<std::vector<Frame>> read(const std::string& path) {
  char err[PCAP_ERRBUF_SIZE] = {};
  std::unique_ptr<pcap_t, decltype(&pcap_close)> pc(pcap_open_offline(path.c_str(), err),
                                                    &pcap_close);
  if (!pc) return make_error("{}: {}", path, err);
  if (pcap_datalink(pc.get()) != DLT_EN10MB)
    return make_error("{}: not an Ethernet capture (link type {})", path, pcap_datalink(pc.get()));
  std::vector<Frame> out;
  pcap_pkthdr* h;
  const u_char* data;
  int rc;
  while ((rc = pcap_next_ex(pc.get(), &h, &data)) == 1) {
    if (h->caplen < h->len)
      return make_error("{}: frame {} was captured truncated ({} of {} bytes)", path,
                        out.size() + 1, h->caplen, h->len);
    Frame f;
    f.timestamp_ns = uint64_t(h->ts.tv_sec) * 1000000000ull + uint64_t(h->ts.tv_usec) * 1000ull;
    f.bytes.assign(data, data + h->caplen);
    out.push_back(std::move(f));
  }
  if (rc == PCAP_ERROR) return make_error("{}: {}", path, pcap_geterr(pc.get()));
  return out;
}

Result<void> write(const std::string& path, const std::vector<Frame>& frames) {
  std::unique_ptr<pcap_t, decltype(&pcap_close)> pc(pcap_open_dead(DLT_EN10MB, 65535), &pcap_close);
  if (!pc) return make_error("{}: cannot open a pcap writer", path);
  pcap_dumper_t* d = pcap_dump_open(pc.get(), path.c_str());
  if (d == nullptr) return make_error("{}: {}", path, pcap_geterr(pc.get()));
  for (const Frame& f : frames) {
    pcap_pkthdr h{};
    h.ts.tv_sec = static_cast<time_t>(f.timestamp_ns / 1000000000ull);
    h.ts.tv_usec = static_cast<suseconds_t>((f.timestamp_ns % 1000000000ull) / 1000ull);
    h.caplen = h.len = static_cast<bpf_u_int32>(f.bytes.size());
    pcap_dump(reinterpret_cast<u_char*>(d), &h, f.bytes.data());
  }
  const bool failed = pcap_dump_flush(d) != 0;
  pcap_dump_close(d);
  if (failed) return make_error("{}: write failed", path);
  return ok();
}

}  // namespace gaon::pcapio
