#include "gaon/capture.h"

#include <algorithm>
#include <bit>
#include <cstring>

namespace gaon {

Capture::Capture(const CaptureOptions& o) : opt_(o) {
  opt_.snaplen = std::clamp<uint32_t>(opt_.snaplen, 1, kFrameSize);
  const uint64_t n = std::bit_ceil(uint64_t(std::max<uint32_t>(opt_.slots, 2)));
  opt_.slots = uint32_t(n);
  mask_ = n - 1;
  stride_ = (sizeof(Slot) + opt_.snaplen + 7) & ~size_t{7};
  ring_.assign(n * stride_, 0);
}

uint64_t Capture::put(const Packet& p, CapturePoint at, Direction dir, Verdict v, uint64_t now) {
  const uint64_t taken = taken_.load(std::memory_order_relaxed);
  if (taken >= opt_.count) return UINT64_MAX;
  if (next_ - tail_.load(std::memory_order_acquire) > mask_) {
    lost_.store(lost_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    return UINT64_MAX;
  }
  const uint64_t i = next_++;
  Slot& s = slot(i);
  s.ts_ns = now;
  s.len = p.len;
  s.caplen = std::min<uint32_t>(p.len, opt_.snaplen);
  s.at = uint8_t(at);
  s.dir = uint8_t(dir);
  s.verdict = uint8_t(v);
  std::memcpy(&s + 1, p.data(), s.caplen);
  taken_.store(taken + 1, std::memory_order_relaxed);
  return i;
}

void Capture::before(std::span<Packet* const> pkts, Direction dir, uint64_t now) {
  npending_ = 0;
  if (!opt_.in) return;
  for (Packet* p : pkts) {
    if (npending_ == pending_.size()) break;
    pending_[npending_++] = put(*p, CapturePoint::in, dir, Verdict::to_host, now);
  }
}

void Capture::after(std::span<Packet* const> pkts) {
  for (size_t k = 0; k < npending_ && k < pkts.size(); ++k)
    if (pending_[k] != UINT64_MAX) slot(pending_[k]).verdict = uint8_t(pkts[k]->verdict);
  npending_ = 0;
}

void Capture::out(const Packet& p, uint64_t now) {
  if (opt_.out) put(p, CapturePoint::out, p.dir, p.verdict, now);
}

void Capture::publish() { head_.store(next_, std::memory_order_release); }

CaptureRecord Capture::record_at(uint64_t i) {
  const Slot& s = slot(i);
  return {.ts_ns = s.ts_ns,
          .len = s.len,
          .caplen = s.caplen,
          .at = CapturePoint(s.at),
          .dir = Direction(s.dir),
          .verdict = Verdict(s.verdict),
          .data = reinterpret_cast<const uint8_t*>(&s + 1)};
}

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::to_host:
      return "to_host";
    case Verdict::to_wire:
      return "to_wire";
    case Verdict::drop:
      return "drop";
  }
  return "bad_verdict";
}

// ---------------------------------------------------------------- pcapng

namespace {

void put32(std::string& o, uint32_t v) { o.append(reinterpret_cast<const char*>(&v), 4); }
void put16(std::string& o, uint16_t v) { o.append(reinterpret_cast<const char*>(&v), 2); }
void put64(std::string& o, uint64_t v) { o.append(reinterpret_cast<const char*>(&v), 8); }
void pad4(std::string& o) { o.append((4 - o.size() % 4) % 4, '\0'); }

// An option: code, length, value padded to 4 bytes.
void option(std::string& o, uint16_t code, const void* v, size_t n) {
  put16(o, code);
  put16(o, uint16_t(n));
  o.append(static_cast<const char*>(v), n);
  pad4(o);
}
void option(std::string& o, uint16_t code, const std::string& s) {
  option(o, code, s.data(), s.size());
}
void end_of_options(std::string& o) { put32(o, 0); }

// A block of `type` around `body` (a multiple of 4 bytes).
void block(std::string& out, uint32_t type, const std::string& body) {
  const uint32_t total = uint32_t(12 + body.size());
  put32(out, type);
  put32(out, total);
  out += body;
  put32(out, total);
}

std::string fmt_name(uint32_t instance, const char* point) {
  return std::to_string(instance) + "-" + point;
}

uint32_t interface_of(const CaptureOptions& o, CapturePoint at) {
  return at == CapturePoint::out && o.in ? 1 : 0;
}

}  // namespace

std::string pcapng_header(uint32_t instance, const CaptureOptions& o, const std::string& app) {
  std::string out, b;
  put32(b, 0x1A2B3C4D);  // byte-order magic
  put16(b, 1);
  put16(b, 0);
  put64(b, ~uint64_t{0});  // section length: not given
  option(b, 4, app);       // shb_userappl
  end_of_options(b);
  block(out, 0x0A0D0D0A, b);
  for (CapturePoint at : {CapturePoint::in, CapturePoint::out}) {
    if (!(at == CapturePoint::in ? o.in : o.out)) continue;
    const char* point = at == CapturePoint::in ? "in" : "out";
    b.clear();
    put16(b, 1);  // LINKTYPE_ETHERNET
    put16(b, 0);
    put32(b, o.snaplen);
    option(b, 2, fmt_name(instance, point));  // if_name
    option(b, 3,
           std::string("gaon instance ") + std::to_string(instance) +
               (at == CapturePoint::in ? ": frames as they reach it, with the verdict it gave"
                                       : ": frames as they leave it, with where they go"));
    const uint8_t nanoseconds = 9;
    option(b, 9, &nanoseconds, 1);  // if_tsresol
    end_of_options(b);
    block(out, 1, b);
  }
  return out;
}

void pcapng_packet(std::string& out, const CaptureOptions& o, const CaptureRecord& r,
                   int64_t realtime_offset_ns) {
  std::string b;
  const uint64_t ts = uint64_t(int64_t(r.ts_ns) + realtime_offset_ns);
  put32(b, interface_of(o, r.at));
  put32(b, uint32_t(ts >> 32));
  put32(b, uint32_t(ts));
  put32(b, r.caplen);
  put32(b, r.len);
  b.append(reinterpret_cast<const char*>(r.data), r.caplen);
  pad4(b);
  const uint32_t flags = r.dir == Direction::ingress ? 1 : 2;  // inbound / outbound
  option(b, 2, &flags, 4);                                     // epb_flags
  option(b, 1,
         std::string(r.at == CapturePoint::in ? "in " : "out ") + to_string(r.verdict));  // comment
  end_of_options(b);
  block(out, 6, b);
}

void pcapng_stats(std::string& out, const CaptureOptions& o, uint64_t now_realtime_ns,
                  uint64_t taken, uint64_t lost) {
  const int n = int(o.in) + int(o.out);
  for (int i = 0; i < n; ++i) {
    std::string b;
    put32(b, uint32_t(i));
    put32(b, uint32_t(now_realtime_ns >> 32));
    put32(b, uint32_t(now_realtime_ns));
    option(b, 4, &taken, 8);  // isb_ifrecv: frames recorded (both points)
    option(b, 5, &lost, 8);   // isb_ifdrop: frames that found the ring full
    end_of_options(b);
    block(out, 5, b);
  }
}

}  // namespace gaon
