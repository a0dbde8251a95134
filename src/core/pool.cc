#include "gaon/pool.h"

#include "mapping.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

namespace gaon {

Result<std::unique_ptr<BufferPool>> BufferPool::create(uint32_t frames) {
  if (frames == 0) return make_error("buffer pool: need at least one frame");
  const size_t bytes = size_t{frames} * kFrameSize;
  void* mem = detail::map_region(bytes);
  if (mem == MAP_FAILED) {
    return make_error("buffer pool: cannot map {} frames ({} bytes): {}", frames, bytes,
                      std::strerror(errno));
  }
  std::unique_ptr<BufferPool> pool(new BufferPool());
  pool->mem_ = static_cast<uint8_t*>(mem);
  pool->n_ = frames;
  pool->pkts_.resize(frames);
  pool->free_.resize(frames);
  for (uint32_t i = 0; i < frames; ++i) {
    pool->pkts_[i].frame = pool->mem_ + size_t{i} * kFrameSize;
    pool->pkts_[i].index = i;
    pool->free_[i] = frames - 1 - i;  // hand out low indices first
  }
  pool->top_ = frames;
  return pool;
}

BufferPool::~BufferPool() {
  if (mem_ != nullptr) munmap(mem_, region_bytes());
}

}  // namespace gaon
