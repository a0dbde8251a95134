// Capture: the frames of one instance, recorded on the datapath for `gaonctl capture`, and
// written out as pcapng (readable by tcpdump -r, tshark and Wireshark).
//
// The engine records into a Capture only while one is set on the instance
// (Engine::set_capture): other instances, and this one when nobody asked, pay one pointer
// test per burst. Points:
//   in   each frame as it reaches the instance (before the ikernel sees it), with the
//        verdict the ikernel then gave it (to_host, to_wire, drop)
//   out  each frame as it leaves the instance (after the ikernel: a reply it wrote in
//        place, a frame it emitted), with where it goes (to_host, to_wire)
// The ring is a fixed array of slots made when the capture starts: the datapath copies at
// most `snaplen` bytes of a frame into the next free slot, and a frame that finds the ring
// full is counted (lost()), never waited for. One producer (the datapath thread), one
// consumer (the control thread, drain()).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "gaon/packet.h"

namespace gaon {

enum class CapturePoint : uint8_t { in = 0, out = 1 };

struct CaptureOptions {
  bool in = true, out = true;     // which points are recorded
  uint32_t snaplen = kFrameSize;  // bytes kept of each frame (1..kFrameSize)
  uint64_t count = 1000;          // frames recorded before the capture stops taking more
  uint32_t slots = 1024;          // ring size in frames (rounded up to a power of two)
};

struct CaptureRecord {
  uint64_t ts_ns = 0;   // the engine's clock (monotonic)
  uint32_t len = 0;     // the frame's length
  uint32_t caplen = 0;  // bytes kept (data)
  CapturePoint at = CapturePoint::in;
  Direction dir = Direction::ingress;
  Verdict verdict = Verdict::to_host;
  const uint8_t* data = nullptr;
};

class Capture {
 public:
  explicit Capture(const CaptureOptions& o);
  const CaptureOptions& options() const { return opt_; }

  // ---- datapath (one thread; the engine calls these) ----
  // The frames of a burst as they reach the instance; their verdicts come with after().
  void before(std::span<Packet* const> pkts, Direction dir, uint64_t now);
  void after(std::span<Packet* const> pkts);
  // A frame leaving the instance with verdict p.verdict.
  void out(const Packet& p, uint64_t now);
  // Makes what was recorded since the last publish visible to drain().
  void publish();

  // ---- consumer (one other thread) ----
  // Calls f(const CaptureRecord&) for every published record, oldest first; returns how many.
  template <class F>
  size_t drain(F&& f) {
    const uint64_t head = head_.load(std::memory_order_acquire);
    uint64_t tail = tail_.load(std::memory_order_relaxed);
    const uint64_t from = tail;
    for (; tail != head; ++tail) f(record_at(tail));
    tail_.store(tail, std::memory_order_release);
    return size_t(tail - from);
  }
  uint64_t taken() const { return taken_.load(std::memory_order_relaxed); }  // recorded
  uint64_t lost() const { return lost_.load(std::memory_order_relaxed); }    // ring full
  // Every frame it will take was taken (count reached) and published.
  bool full() const { return taken() >= opt_.count; }

 private:
  struct Slot {
    uint64_t ts_ns;
    uint32_t len, caplen;
    uint8_t at, dir, verdict, pad;
  };
  // Reserves the next slot for p (or counts it lost); UINT64_MAX when none.
  uint64_t put(const Packet& p, CapturePoint at, Direction dir, Verdict v, uint64_t now);
  Slot& slot(uint64_t i) { return *reinterpret_cast<Slot*>(&ring_[(i & mask_) * stride_]); }
  CaptureRecord record_at(uint64_t i);

  CaptureOptions opt_;
  uint64_t mask_ = 0;
  size_t stride_ = 0;
  std::vector<uint8_t> ring_;
  uint64_t next_ = 0;  // producer: the next slot to fill (published up to head_)
  std::array<uint64_t, kBurst> pending_{};  // slots of before()'s frames, for after()
  size_t npending_ = 0;
  alignas(64) std::atomic<uint64_t> head_{0};
  alignas(64) std::atomic<uint64_t> tail_{0};
  alignas(64) std::atomic<uint64_t> taken_{0}, lost_{0};
};

// ---- pcapng (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-01.html) ----
// A section header and one Ethernet interface per recorded point ("ID-in", "ID-out";
// nanosecond timestamps). Interface ids: 0 for the first point recorded, 1 for the second.
std::string pcapng_header(uint32_t instance, const CaptureOptions& o, const std::string& app);
// An enhanced packet block: the frame, its direction (flags: inbound for frames towards
// the host, outbound for frames towards the wire) and a comment "<point> <verdict>".
// `realtime_offset_ns` turns the engine's clock into the Unix epoch.
void pcapng_packet(std::string& out, const CaptureOptions& o, const CaptureRecord& r,
                   int64_t realtime_offset_ns);
// Interface statistics for each point: frames taken and frames lost (isb_ifrecv, isb_ifdrop).
void pcapng_stats(std::string& out, const CaptureOptions& o, uint64_t now_realtime_ns,
                  uint64_t taken, uint64_t lost);
const char* to_string(Verdict v);

}  // namespace gaon
