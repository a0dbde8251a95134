// The datapath's clock: CLOCK_MONOTONIC, read through the vDSO (no syscall). Engine::now_ns
// and the `now` every Context carries come from it; an ikernel's state operations, which
// run outside a burst, read it here to compare with what the datapath saw.
#pragma once

#include <time.h>

#include <cstdint>

namespace gaon {

inline constexpr uint64_t kSecondNs = 1'000'000'000;

inline uint64_t clock_ns(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return uint64_t(ts.tv_sec) * kSecondNs + uint64_t(ts.tv_nsec);
}
inline uint64_t mono_ns() { return clock_ns(CLOCK_MONOTONIC); }

// Wall-clock seconds minus monotonic seconds, now: add it to now_ns / kSecondNs for the
// time of day (absolute memcached exptimes, JWT exp/nbf).
inline int64_t wall_minus_mono_s() {
  return int64_t(clock_ns(CLOCK_REALTIME) / kSecondNs) - int64_t(mono_ns() / kSecondNs);
}

}  // namespace gaon
