// Test helpers: real processes (memcached, gaond) on loopback, and a UDP memcached client.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace gaon::test {

// A free UDP+TCP port on 127.0.0.1, below the ephemeral range and reserved (a lock file
// under /tmp/gaon-test-ports) until this process exits: never handed out twice, even to
// tests running at the same time.
uint16_t free_port();

// A socket inside network namespace `ns` (made on a thread that enters it; the socket
// stays in that namespace). -1 when it cannot be made.
int socket_in(const std::string& ns, int type, int family = AF_INET);
// A TCP connection (TCP_NODELAY) made from inside network namespace `ns` to `to`, tried for
// up to 5 s (a server starting, neighbours resolving): its fd, or -1.
int tcp_connect_in(const std::string& ns, const sockaddr_in6& to);
// Takes the netns testbed for this test (one at a time: ctest runs tests in parallel
// processes, and each takes over its interfaces) and brings it up (scripts/testbed up).
// The lock's descriptor (closing it gives the testbed back), or -1 with the reason.
int take_testbed(std::string* why);
// An IPv4 address and port.
sockaddr_in addr(const char* ip, uint16_t port);
sockaddr_in6 addr6(const char* ip, uint16_t port);  // the same for IPv6

// 127.0.0.1:port.
sockaddr_in loopback(uint16_t port);

// A UDP socket bound to 127.0.0.1:port (0: any free port); -1 when the bind fails.
int bind_udp(uint16_t port);

// Sends one datagram `what` from `fd` to `to` and returns the first datagram that comes
// back within `wait` (nullopt: none).
std::optional<std::string> udp_ask(int fd, const sockaddr_in& to, const std::string& what,
                                   std::chrono::milliseconds wait);

// A child process, killed (SIGTERM, then SIGKILL) when this goes away.
class Child {
 public:
  Child() = default;
  // Starts argv[0] with stdout captured to a temp file (read with output()).
  static Child start(const std::vector<std::string>& argv);
  Child(Child&& o) noexcept;
  Child& operator=(Child&& o) noexcept;
  ~Child();
  pid_t pid() const { return pid_; }
  bool running();
  // SIGTERM and wait (up to `wait`); the exit status (128 + signal when killed by one),
  // or -1 if it had to be killed with SIGKILL. For a child that already exited: its status.
  int stop(std::chrono::milliseconds wait = std::chrono::milliseconds(5000));
  void signal(int sig);
  std::string output() const;  // everything it wrote to stdout so far
  std::string errors() const;  // and to stderr
  // Waits until `text` shows up in its stdout (`on_stderr`: stderr); false after `wait`
  // or when it exits without having written it.
  bool wait_for(const std::string& text, bool on_stderr,
                std::chrono::milliseconds wait = std::chrono::milliseconds(5000));
  bool wait_output(const std::string& text) { return wait_for(text, false); }
  bool wait_errors(const std::string& text) { return wait_for(text, true); }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
  std::string out_path_, err_path_;
};

// gaond in sidecar mode: clients on udp:127.0.0.1:wire_port, the application on
// udp:127.0.0.1:host_port, the control socket at `control` (wait for "ready" on stderr).
Child start_sidecar_gaond(uint16_t wire_port, uint16_t host_port, const std::string& control);

// Programs of the build tree (GAON_BIN_DIR) made runnable by other users. The build tree
// may sit where only its owner can enter (a clone under /root or in a `mktemp -d`, mode
// 0700), so each program, and every shared library it loads from the build tree
// (libgaon.so.0, ...), is copied into a fresh directory under /tmp that everyone may
// enter and read (0755); the copies run with LD_LIBRARY_PATH pointing there. The directory
// is removed when this goes away.
class AsOtherUsers {
 public:
  // Copies GAON_BIN_DIR/<name> for each of `programs` and checks that each of `uids`
  // (with group `gid`, no supplementary groups) can run the copies; unusable() says why
  // not, when not.
  AsOtherUsers(const std::vector<std::string>& programs, const std::vector<uid_t>& uids,
               gid_t gid = 65534);
  ~AsOtherUsers();
  AsOtherUsers(const AsOtherUsers&) = delete;
  AsOtherUsers& operator=(const AsOtherUsers&) = delete;
  // Empty when every uid can run every copy; otherwise the cause (for a GTEST_SKIP).
  const std::string& unusable() const { return unusable_; }
  // The command line that runs the copy of `program` (one of those copied) with `args` as
  // `uid` (setpriv: real and effective uid and gid, no supplementary groups).
  std::vector<std::string> argv(uid_t uid, const std::string& program,
                                const std::vector<std::string>& args) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, unusable_;
  gid_t gid_;
};

// Runs argv to its end (killed after `wait`): exit status (as Child::stop) and output.
struct Ran {
  int status = -1;
  std::string out, err;
};
Ran run(const std::vector<std::string>& argv,
        std::chrono::milliseconds wait = std::chrono::milliseconds(5000));

// IPv6 on (its address on the interface, no duplicate detection, and on the namespace's
// loopback, for a server's own answer asked from its host) or off again, at each end.
struct Ipv6End {
  const char* ns;
  const char* dev;
  const char* ip;
};
void ipv6_at(std::initializer_list<Ipv6End> ends, bool on);

// memcached from Debian's package, on 127.0.0.1:port (UDP and TCP), one thread, 64 MB
// (as user nobody when root): its command line, and a started one (waited for until it
// answers; nullopt when /usr/bin/memcached is missing).
std::vector<std::string> memcached_argv(uint16_t port, const std::string& ip = "127.0.0.1");
std::optional<Child> start_memcached(uint16_t port);

// A UDP socket talking memcached's frame protocol to one address.
class McUdp {
 public:
  explicit McUdp(uint16_t port);          // to 127.0.0.1:port
  McUdp(int fd, const sockaddr_in& to);   // takes `fd` (e.g. made in a namespace)
  McUdp(int fd, const sockaddr_in6& to);  // the same over IPv6
  ~McUdp();
  McUdp(const McUdp&) = delete;
  McUdp& operator=(const McUdp&) = delete;
  // Sends `body` with a frame header carrying `req_id`; returns every datagram payload
  // (frame header included) received until `quiet` passes without one (or the first
  // `expect` datagrams, when given).
  std::vector<std::string> ask(const std::string& body, uint16_t req_id, size_t expect = 0,
                               std::chrono::milliseconds quiet = std::chrono::milliseconds(300));
  // Sends `body` and returns the first reply datagram that carries `req_id` (late replies
  // to earlier requests are skipped), frame header included; nullopt after `wait` of quiet.
  std::optional<std::string> reply_to(const std::string& body, uint16_t req_id,
                                      std::chrono::milliseconds wait);
  void send(const std::string& body, uint16_t req_id);
  std::optional<std::string> recv(std::chrono::milliseconds wait);
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  sockaddr_storage to_{};
  socklen_t to_len_ = 0;
};

// Sends 64-byte datagrams to `to` in bursts of 32, from the sockets `fds` in turn (reading
// and discarding whatever comes back), until `stop`: one burst every `pace`, or as fast as
// the kernel takes them when `pace` is 0. What the kernel took is added to `offered`.
void flood_udp(const std::vector<int>& fds, const sockaddr_in& to, const std::atomic<bool>& stop,
               std::atomic<uint64_t>& offered,
               std::chrono::microseconds pace = std::chrono::microseconds(0));

// Resident memory of a process, in KiB (VmRSS of /proc/PID/status; 0 if unreadable).
uint64_t rss_kib(pid_t pid);

// Waits until something answers a memcached `version` on UDP port `port`.
bool wait_udp_ready(uint16_t port,
                    std::chrono::milliseconds wait = std::chrono::milliseconds(5000));

// ASCII over TCP: sends `cmd` and returns the reply line(s) until `until` is seen.
std::string tcp_command(uint16_t port, const std::string& cmd, const std::string& until);

// Prometheus' text from http://127.0.0.1:port/metrics (inside network namespace `ns`
// when given); "" when nothing answers 200.
std::string scrape(uint16_t port, const std::string& ns = "");
// The value of the first sample line that starts with `series` ("name{labels"), -1 if none.
double sample(const std::string& text, const std::string& series);

}  // namespace gaon::test
