// The consistency checker for a cache in front of memcached: concurrent clients GET, SET
// and DELETE a small hot key set, and no GET that started after a write's acknowledgement
// may return an older value. GETs go over UDP; writes over UDP or over TCP (optionally cut
// into pieces sent as separate segments, so commands are split across segments).
#pragma once

#include <netinet/in.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace gaon::test {

// One operation as a client saw it.
struct Op {
  enum Kind { get, set, del } kind;
  int key;
  std::string value;  // set: written; get: returned ("" = miss)
  std::chrono::steady_clock::time_point start, end;
};

struct Workload {
  sockaddr_in server{};  // memcached's address as the clients see it (UDP, and TCP)
  int clients = 4;
  int keys = 6;
  std::chrono::milliseconds duration{3000};
  int write_percent = 20;  // the rest are GETs; writes are 3/4 SET, 1/4 DELETE
  bool writes_over_tcp = false;
  size_t tcp_piece = 0;  // > 0: each write goes out in pieces of this many bytes
  // Client i runs on CPU i % (CPUs): with XDP in generic mode on veth, the receive path —
  // a fast path included — runs on the sender's CPU, so readers run on every CPU at once.
  bool pin_clients = false;
  // Makes the clients' sockets (SOCK_DGRAM / SOCK_STREAM); e.g. inside a namespace.
  std::function<int(int type)> make_socket;
};

// Runs the workload; returns every completed operation (lost ones are left out).
std::vector<Op> run_workload(const Workload& w);

// Sends a command over TCP in pieces of `piece` bytes (0: whole), `pause` after each but
// the last (with TCP_NODELAY: each its own segment), and reads one reply line.
std::optional<std::string> tcp_ask(
    int fd, const std::string& cmd, size_t piece,
    std::chrono::microseconds pause = std::chrono::microseconds(200));

// A GET returned value V (written by W). It is stale if some write or delete W' of the
// same key started after W was acknowledged and was itself acknowledged before the GET
// started: W' certainly replaced V before the GET began. Returns the stale GETs.
size_t count_stale(const std::vector<Op>& ops);

}  // namespace gaon::test
