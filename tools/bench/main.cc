// gaon-bench: a memcached load generator: closed loop (N requests outstanding) or open
// loop (--rate R requests/s, sent on schedule whatever the replies; latency counted from
// the scheduled time, so a slow server cannot hide its queueing).
//
//   gaon-bench --server 127.0.0.1:11211 --keys 10000 --hit-fraction 0.9 --duration 5 --json
//
// Loads the keys over TCP first (--load tcp), then sends GETs with memcached's UDP frame
// header: a share --hit-fraction of them for loaded keys, the rest for keys that were
// never loaded; popularity uniform or Zipf(θ). --transport tcp sends everything over
// --connections TCP connections instead, --pipeline requests outstanding on each (ASCII);
// --transport mixed sends the GETs over UDP and the writes (--write-fraction) over TCP, as
// memcached's UDP users run it. Reports throughput, hits/misses, timeouts, errors and
// latency percentiles (p50/p99/p99.9) as a table or JSON.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "gaon/sidecar.h"
#include "loadgen.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace gaon::bench;

int fail(const std::string& msg) {
  fmt::print(stderr, "gaon-bench: error: {}\n", msg);
  return 2;
}

// "IP:PORT", checked like gaond's addresses (concrete IPv4, port not 0).
gaon::Result<sockaddr_in> parse_addr(const std::string& text) {
  auto a = gaon::sidecar::parse_udp_address("udp:" + text);
  if (a) return a;
  std::string why = a.error();  // name the address as the user wrote it
  if (auto at = why.find("udp:" + text); at != std::string::npos) why.erase(at, 4);
  if (why.starts_with("flow ")) why.erase(0, 5);
  return gaon::make_error("{}", why);
}

gaon::Result<void> load_tcp(const sockaddr_in& to, uint64_t keys, size_t ksize, size_t vsize) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) != 0) {
    close(fd);
    return gaon::make_error("load: cannot connect to {}:{} over TCP: {}", inet_ntoa(to.sin_addr),
                            ntohs(to.sin_port), std::strerror(errno));
  }
  const uint64_t chunk = 200;
  std::string in;
  char buf[65536];
  for (uint64_t first = 0; first < keys; first += chunk) {
    const uint64_t n = std::min(chunk, keys - first);
    std::string out;
    for (uint64_t i = first; i < first + n; ++i)
      out += fmt::format("set {} 0 0 {}\r\n{}\r\n", make_key(i, ksize, true), vsize,
                         make_value(i, vsize));
    if (send(fd, out.data(), out.size(), MSG_NOSIGNAL) != ssize_t(out.size())) break;
    uint64_t stored = 0;
    while (stored < n) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 5000) <= 0) {
        close(fd);
        return gaon::make_error("load: no reply from the server");
      }
      const ssize_t r = recv(fd, buf, sizeof(buf), 0);
      if (r <= 0) break;
      in.append(buf, size_t(r));
      size_t pos;
      while ((pos = in.find("\r\n")) != std::string::npos) {
        if (in.compare(0, pos, "STORED") != 0) {
          close(fd);
          return gaon::make_error("load: the server answered '{}'", in.substr(0, pos));
        }
        in.erase(0, pos + 2);
        ++stored;
      }
    }
  }
  close(fd);
  return gaon::ok();
}

// The load phase over UDP: sets in windows of 64 with memcached's frame header, each
// window retried (up to 5 times) until every set is STORED.
gaon::Result<void> load_udp(const sockaddr_in& to, Proto proto, uint64_t keys, size_t ksize,
                            size_t vsize) {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) != 0) {
    close(fd);
    return gaon::make_error("load: {}", std::strerror(errno));
  }
  char buf[2048];
  for (uint64_t first = 0; first < keys; first += 64) {
    const uint64_t n = std::min<uint64_t>(64, keys - first);
    std::vector<bool> done(n);
    uint64_t left = n;
    for (int attempt = 0; attempt < 5 && left; ++attempt) {
      for (uint64_t i = 0; i < n; ++i) {
        if (done[i]) continue;
        const std::string d = set_request(proto, make_key(first + i, ksize, true),
                                          make_value(first + i, vsize), uint16_t(i));
        send(fd, d.data(), d.size(), 0);
      }
      pollfd p{fd, POLLIN, 0};
      while (left && poll(&p, 1, 200) > 0) {
        const ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r <= 0) break;
        const Reply rep = parse_reply(std::string_view(buf, size_t(r)), proto);
        if (rep.req_id < n && !done[rep.req_id]) {
          if (!rep.stored) {
            close(fd);
            return gaon::make_error("load: the server refused set {}", first + rep.req_id);
          }
          done[rep.req_id] = true;
          --left;
        }
      }
    }
    if (left) {
      close(fd);
      return gaon::make_error("load: no reply over UDP for {} sets", left);
    }
  }
  close(fd);
  return gaon::ok();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gaon-bench: memcached load generator over UDP, TCP or both"};
  app.set_version_flag("--version", "gaon-bench " GAON_VERSION);
  std::string server = "127.0.0.1:11211", load_server, load = "tcp", proto_name = "ascii",
              dist = "uniform", transport = "udp";
  uint64_t keys = 10000, seed = 1;
  size_t key_size = 16, value_size = 32;
  double theta = 0.99, hit_fraction = 0.9, duration = 5, warmup = 1, rate = 0, write_fraction = 0;
  uint32_t concurrency = 32, timeout_ms = 100, connections = 4, pipeline = 8;
  bool json = false, quiet = false, verify = false;
  app.add_option("--server", server, "target IP:PORT (memcached's UDP and TCP port)")
      ->capture_default_str();
  app.add_option("--transport", transport,
                 "udp, tcp (everything over TCP, ASCII) or mixed (GETs over UDP, writes over TCP)")
      ->capture_default_str();
  app.add_option("--connections", connections, "TCP connections (tcp, mixed)")
      ->capture_default_str();
  app.add_option("--pipeline", pipeline,
                 "requests outstanding on each TCP connection (tcp; closed loop)")
      ->capture_default_str();
  app.add_option("--load-server", load_server,
                 "TCP IP:PORT for the load phase (default: --server)");
  app.add_option("--load", load, "load phase: tcp, udp or none")->capture_default_str();
  app.add_option("--protocol", proto_name, "ascii or binary")->capture_default_str();
  app.add_option("--keys", keys, "keys loaded")->capture_default_str();
  app.add_option("--key-size", key_size, "key bytes")->capture_default_str();
  app.add_option("--value-size", value_size, "value bytes")->capture_default_str();
  app.add_option("--dist", dist, "key popularity: uniform or zipf")->capture_default_str();
  app.add_option("--zipf-theta", theta, "Zipf skew")->capture_default_str();
  app.add_option("--hit-fraction", hit_fraction, "share of GETs for loaded keys")
      ->capture_default_str();
  app.add_option("--concurrency", concurrency, "requests outstanding (closed loop; udp, mixed)")
      ->capture_default_str();
  app.add_option("--rate", rate, "open loop: requests per second (0: closed loop)");
  app.add_option("--write-fraction", write_fraction,
                 "share of requests that are SETs of loaded keys")
      ->capture_default_str();
  app.add_option("--duration", duration, "seconds measured")->capture_default_str();
  app.add_option("--warmup", warmup, "seconds before measuring")->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "a request unanswered this long is a timeout")
      ->capture_default_str();
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  app.add_flag("--verify", verify, "check every hit's value");
  app.add_flag("--json", json, "print the result as JSON");
  app.add_flag("--quiet", quiet, "no progress line");
  CLI11_PARSE(app, argc, argv);

  auto to = parse_addr(server);
  if (!to) return fail("--server " + to.error());
  auto load_to = parse_addr(load_server.empty() ? server : load_server);
  if (!load_to) return fail("--load-server " + load_to.error());
  if (load != "tcp" && load != "udp" && load != "none")
    return fail("--load must be tcp, udp or none");
  if (proto_name != "ascii" && proto_name != "binary")
    return fail("--protocol must be ascii or binary");
  if (transport != "udp" && transport != "tcp" && transport != "mixed")
    return fail("--transport must be udp, tcp or mixed");
  if (transport != "udp" && proto_name != "ascii")
    return fail("--transport " + transport + " speaks the ASCII protocol over TCP");
  if (connections < 1 || connections > 1024) return fail("--connections must be 1..1024");
  if (pipeline < 1 || pipeline > 1024) return fail("--pipeline must be 1..1024");
  if (transport == "tcp" && rate > 0)
    return fail("--rate (open loop) works with --transport udp or mixed");
  if (dist != "uniform" && dist != "zipf") return fail("--dist must be uniform or zipf");
  if (keys == 0) return fail("--keys must be at least 1");
  if (hit_fraction < 0 || hit_fraction > 1) return fail("--hit-fraction must be in [0, 1]");
  if (key_size < 4 + std::to_string(keys - 1).size() || key_size > 250)
    return fail(fmt::format("--key-size must be {}..250 to hold {} distinct keys",
                            4 + std::to_string(keys - 1).size(), keys));
  if (value_size + key_size + 64 > 1400)
    return fail("--value-size: a reply must fit one UDP datagram (1400 bytes)");
  if (concurrency < 1 || concurrency > 4096) return fail("--concurrency must be 1..4096");
  if (rate < 0 || rate > 5e6) return fail("--rate must be 0..5000000 requests/s");
  if (write_fraction < 0 || write_fraction > 1) return fail("--write-fraction must be in [0, 1]");
  if (duration <= 0 || warmup < 0) return fail("--duration must be positive, --warmup >= 0");
  const Proto proto = proto_name == "ascii" ? Proto::ascii : Proto::binary;

  if (load == "tcp")
    if (auto r = load_tcp(*load_to, keys, key_size, value_size); !r) return fail(r.error());
  if (load == "udp")
    if (auto r = load_udp(*load_to, proto, keys, key_size, value_size); !r) return fail(r.error());

  // tcp: everything over TCP; mixed (both): writes over TCP, GETs over UDP.
  const bool use_udp = transport != "tcp", use_tcp = transport != "udp";
  const int fd = use_udp ? socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0) : -1;
  const int rcvbuf = 4 << 20;
  if (use_udp) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (connect(fd, reinterpret_cast<const sockaddr*>(&*to), sizeof(*to)) != 0)
      return fail(fmt::format("--server {}: {}", server, std::strerror(errno)));
  }
  // TCP connections: requests without the frame header, replies in order on each.
  struct Conn {
    int fd = -1;
    std::string in, out;
    std::deque<uint16_t> fifo;  // the slots of the requests outstanding, oldest first
  };
  std::vector<Conn> conns(use_tcp ? connections : 0);
  for (Conn& c : conns) {
    c.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c.fd, reinterpret_cast<const sockaddr*>(&*to), sizeof(*to)) != 0)
      return fail(fmt::format("--server {} over TCP: {}", server, std::strerror(errno)));
    const int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK);
  }
  uint32_t next_conn = 0;

  std::mt19937_64 rng(seed);
  std::bernoulli_distribution hit_draw(hit_fraction);
  std::uniform_int_distribution<uint64_t> uni(0, keys - 1);
  const Zipf zipf(dist == "zipf" ? keys : 1, theta);
  std::bernoulli_distribution write_draw(write_fraction);
  std::vector<bool> written(keys);  // --verify checks only keys never overwritten
  uint64_t version = 0, stored = 0;
  struct Slot {
    Clock::time_point sent;    // latency is counted from here (open loop: the schedule)
    Clock::time_point issued;  // and a timeout from here (when it really went out)
    uint64_t key = 0;
    bool loaded = false;
    bool write = false;
    bool busy = false;
    int conn = -1;  // the TCP connection it went out on (-1: UDP)
  };
  std::vector<Slot> by_id(65536);
  uint16_t next_id = 0;
  uint64_t requests = 0, replies = 0, hits = 0, misses = 0, timeouts = 0, bad = 0, wrong = 0,
           unexpected = 0;
  Histogram hist;
  std::vector<std::string> pending;  // datagrams to send
  pending.reserve(concurrency);
  const auto t0 = Clock::now();
  const auto measure_from = t0 + std::chrono::duration<double>(warmup);
  const auto until = measure_from + std::chrono::duration<double>(duration);
  bool measuring = warmup == 0;
  uint64_t in_flight = 0, dropped_schedule = 0;
  // `now`: what latency counts from (open loop: the schedule); `issued`: the time it goes
  // out, which a timeout counts from; `conn`: the TCP connection to use (-1: any).
  auto issue = [&](Clock::time_point now, Clock::time_point issued, int conn = -1) {
    if (in_flight >= by_id.size() - 1) {  // open loop far ahead of the server
      ++dropped_schedule;
      return;
    }
    while (by_id[next_id].busy) ++next_id;
    Slot& s = by_id[next_id];
    s.busy = true;
    ++in_flight;
    s.sent = now;
    s.issued = issued;
    s.key = dist == "zipf" ? zipf(rng) : uni(rng);
    s.write = write_fraction > 0 && write_draw(rng);
    std::string d;
    if (s.write) {
      s.loaded = true;
      written[s.key] = true;
      d = set_request(proto, make_key(s.key, key_size, true),
                      make_value(s.key + keys * ++version, value_size), next_id);
    } else {
      s.loaded = hit_draw(rng);
      d = get_request(proto, make_key(s.key, key_size, s.loaded), next_id);
    }
    s.conn = -1;
    if (!use_udp || (use_tcp && s.write)) {
      s.conn = conn >= 0 ? conn : int(next_conn++ % conns.size());
      Conn& c = conns[size_t(s.conn)];
      c.out.append(d, 8);  // without the UDP frame header
      c.fifo.push_back(next_id);
    } else {
      pending.push_back(std::move(d));
    }
    ++next_id;
    if (measuring) ++requests;
  };
  auto flush = [&] {
    mmsghdr msgs[64];
    iovec iov[64];
    size_t done = 0;
    while (done < pending.size()) {
      const size_t n = std::min<size_t>(64, pending.size() - done);
      for (size_t i = 0; i < n; ++i) {
        iov[i] = {pending[done + i].data(), pending[done + i].size()};
        msgs[i].msg_hdr = {};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
      }
      const int s = sendmmsg(fd, msgs, unsigned(n), 0);
      if (s <= 0) break;  // dropped requests turn into timeouts
      done += size_t(s);
    }
    pending.clear();
    for (Conn& c : conns)
      if (!c.out.empty()) {
        const ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) c.out.erase(0, size_t(n));  // the rest goes when the socket has room
      }
  };
  bool tcp_failed = false;
  std::string tcp_error;
  const bool open_loop = rate > 0;
  uint64_t scheduled = 0;  // open loop: requests sent so far on the schedule
  if (!open_loop) {
    const auto now = Clock::now();
    if (!use_udp) {
      for (size_t c = 0; c < conns.size(); ++c)
        for (uint32_t i = 0; i < pipeline; ++i) issue(now, now, int(c));
    } else {
      for (uint32_t i = 0; i < concurrency; ++i) issue(now, now);
    }
    flush();
  }
  // A reply to slot `s`, received at `got_at`.
  auto complete = [&](Slot& s, const Reply& r, Clock::time_point got_at) {
    s.busy = false;
    --in_flight;
    if (!measuring) return;
    ++replies;
    hist.add(std::chrono::duration<double, std::micro>(got_at - s.sent).count());
    if (!r.ok || (s.write && !r.stored))
      ++bad;
    else if (s.write)
      ++stored;
    else if (r.hit)
      ++hits;
    else
      ++misses;
    if (verify && !s.write && r.hit &&
        (!s.loaded || (!written[s.key] && r.value != make_value(s.key, value_size))))
      ++wrong;
  };
  std::vector<pollfd> pfds;
  if (use_udp) pfds.push_back({fd, POLLIN, 0});
  for (const Conn& c : conns) pfds.push_back({c.fd, POLLIN, 0});
  auto last_scan = Clock::now(), last_progress = last_scan;
  const auto scan_every = std::max<Clock::duration>(std::chrono::milliseconds(1),
                                                    std::chrono::milliseconds(timeout_ms) / 10);
  uint64_t progress_replies = 0;
  char bufs[64][2048];
  while (true) {
    const auto now = Clock::now();
    if (now >= until) break;
    if (!measuring && now >= measure_from) measuring = true;
    poll(pfds.data(), pfds.size(), open_loop ? 0 : 1);
    mmsghdr msgs[64];
    iovec iov[64];
    for (int i = 0; i < 64; ++i) {
      iov[i] = {bufs[i], sizeof(bufs[i])};
      msgs[i].msg_hdr = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    const int n = use_udp ? recvmmsg(fd, msgs, 64, MSG_DONTWAIT, nullptr) : 0;
    const auto got_at = Clock::now();
    for (int i = 0; i < n; ++i) {
      const std::string_view d(bufs[i], msgs[i].msg_len);
      const Reply r = parse_reply(d, proto);
      if (d.size() < 8 || !by_id[r.req_id].busy || by_id[r.req_id].conn >= 0) {
        ++unexpected;  // late (timed out) or unknown
        continue;
      }
      complete(by_id[r.req_id], r, got_at);
      if (!open_loop) issue(got_at, got_at);
    }
    for (size_t ci = 0; ci < conns.size() && !tcp_failed; ++ci) {
      Conn& c = conns[ci];
      if (!(pfds[(use_udp ? 1 : 0) + ci].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char* const buf = &bufs[0][0];  // all of bufs: one stream read
      const ssize_t got = recv(c.fd, buf, sizeof(bufs), MSG_DONTWAIT);
      if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        tcp_failed = true;
        tcp_error = got == 0 ? "the server closed a TCP connection" : std::strerror(errno);
        break;
      }
      if (got < 0) continue;
      c.in.append(buf, size_t(got));
      Reply r;
      size_t used = 0;
      while (size_t len = ascii_reply(std::string_view(c.in).substr(used), r)) {
        used += len;
        if (c.fifo.empty()) {  // a reply to nothing asked
          ++unexpected;
          continue;
        }
        const uint16_t id = c.fifo.front();
        c.fifo.pop_front();
        complete(by_id[id], r, got_at);
        if (!open_loop) issue(got_at, got_at, use_udp ? -1 : int(ci));
      }
      c.in.erase(0, used);
    }
    if (tcp_failed) break;
    if (open_loop) {  // everything due by now, stamped with its scheduled time
      const double elapsed = std::chrono::duration<double>(got_at - t0).count();
      const uint64_t due = uint64_t(elapsed * rate);
      for (; scheduled < due; ++scheduled)
        issue(t0 + std::chrono::duration_cast<Clock::duration>(
                       std::chrono::duration<double>(double(scheduled) / rate)),
              got_at);
    }
    // Timeouts, counted from when a request really went out: an open loop that fell behind
    // its schedule (a busy machine) sends late and counts the delay as latency, but does
    // not call requests lost that were sent a moment ago. The scan runs ten times per
    // timeout (at most every millisecond), not on every turn.
    if (got_at - last_scan > scan_every) {
      last_scan = got_at;
      for (size_t id = 0; id < by_id.size(); ++id) {
        Slot& s = by_id[id];
        // (over TCP nothing is lost: a reply comes, in order, however late)
        if (s.busy && s.conn < 0 && got_at - s.issued > std::chrono::milliseconds(timeout_ms)) {
          s.busy = false;
          --in_flight;
          if (measuring) ++timeouts;
          if (!open_loop) issue(got_at, got_at);
        }
      }
    }
    flush();
    if (!quiet && got_at - last_progress >= std::chrono::seconds(1)) {
      fmt::print(stderr, "\rgaon-bench: {:>9.0f} ops/s  {} timeouts   ",
                 double(replies - progress_replies) /
                     std::chrono::duration<double>(got_at - last_progress).count(),
                 timeouts);
      last_progress = got_at;
      progress_replies = replies;
    }
  }
  if (!quiet) fmt::print(stderr, "\n");
  if (fd >= 0) close(fd);
  for (Conn& c : conns) close(c.fd);
  if (tcp_failed) return fail("--transport " + transport + ": " + tcp_error);

  const double ops = double(replies) / duration;
  nlohmann::json j = {
      {"config",
       {{"server", server},
        {"protocol", proto_name},
        {"keys", keys},
        {"key_size", key_size},
        {"value_size", value_size},
        {"dist", dist},
        {"zipf_theta", theta},
        {"hit_fraction", hit_fraction},
        {"transport", transport},
        {"concurrency", use_udp ? concurrency : connections * pipeline},
        {"connections", use_tcp ? connections : 0},
        {"pipeline", use_udp ? 0 : pipeline},
        {"duration_s", duration},
        {"warmup_s", warmup},
        {"timeout_ms", timeout_ms}}},
      {"duration_s", duration},
      {"requests", requests},
      {"replies", replies},
      {"ops_per_s", ops},
      {"hits", hits},
      {"stored", stored},
      {"schedule_dropped", dropped_schedule},
      {"misses", misses},
      {"hit_rate", hits + misses ? double(hits) / double(hits + misses) : 0.0},
      {"timeouts", timeouts},
      {"errors", {{"malformed", bad}, {"wrong_value", wrong}, {"unexpected", unexpected}}},
      {"latency_us",
       {{"p50", hist.percentile(50)},
        {"p99", hist.percentile(99)},
        {"p999", hist.percentile(99.9)},
        {"max", hist.max()},
        {"mean", hist.mean()}}}};
  if (json) {
    fmt::print("{}\n", j.dump(2));
  } else {
    fmt::print("{:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n", "ops/s", "hit rate", "p50 us",
               "p99 us", "p99.9 us", "timeouts", "errors", "replies");
    fmt::print("{:>12.0f} {:>10.3f} {:>9.1f} {:>9.1f} {:>9.1f} {:>9} {:>9} {:>8}\n", ops,
               j["hit_rate"].get<double>(), hist.percentile(50), hist.percentile(99),
               hist.percentile(99.9), timeouts, bad + wrong, replies);
  }
  return (bad + wrong) ? 1 : 0;
}
