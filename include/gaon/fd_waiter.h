// FdWaiter: the idle hook of a datapath whose ports are file descriptors (AF_XDP and
// AF_PACKET sockets): blocks in poll() until one is readable, the timeout passes, or
// another thread calls wake() (Engine::set_waker: a control change to apply).
#pragma once

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

namespace gaon {

class FdWaiter {
 public:
  FdWaiter() : wake_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~FdWaiter() {
    if (wake_fd_ >= 0) close(wake_fd_);
  }
  FdWaiter(const FdWaiter&) = delete;
  FdWaiter& operator=(const FdWaiter&) = delete;

  void watch(int fd) { fds_.push_back({fd, POLLIN, 0}); }

  void wait(int timeout_ms) {
    if (fds_.empty() || fds_.back().fd != wake_fd_) fds_.push_back({wake_fd_, POLLIN, 0});
    ++waits_;
    if (poll(fds_.data(), fds_.size(), timeout_ms) > 0 && (fds_.back().revents & POLLIN)) {
      uint64_t v;
      (void)!read(wake_fd_, &v, sizeof(v));
    }
  }
  void wake() {  // any thread
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
  uint64_t waits() const { return waits_; }

 private:
  int wake_fd_;
  std::vector<pollfd> fds_;
  uint64_t waits_ = 0;
};

}  // namespace gaon
