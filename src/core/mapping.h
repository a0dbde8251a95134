// Anonymous memory for the datapath's big regions (the frame pool, instance state).
#pragma once

#include <sys/mman.h>

#include <cstddef>

namespace gaon::detail {

// Maps `bytes` of zeroed, private memory, asking for transparent huge pages when the
// region is large enough to use them (fewer TLB misses on hash-table lookups; this
// machine's THP setting is `madvise`). MAP_FAILED on failure, with errno set.
inline void* map_region(size_t bytes) {
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem != MAP_FAILED && bytes >= (size_t{2} << 20))
    madvise(mem, bytes, MADV_HUGEPAGE);  // advice only: an error changes nothing
  return mem;
}

}  // namespace gaon::detail
