#include "gaon/xdp_program.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sys/mman.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fmt/core.h>

#include "gaon/clock.h"

// The steering program's object file, embedded at build time (CMake: steer_bpf_obj.cc).
extern const unsigned char gaon_steer_bpf_obj[];
extern const unsigned long gaon_steer_bpf_obj_len;

namespace gaon {

namespace {

constexpr uint64_t kRestNs = 1'000'000'000;  // before a removed instance's slot is reused
// One NIC: where gaond's tc egress filter sits (a later gaond replaces an earlier one's).
constexpr uint32_t kTcHandle = 0x6a6f, kTcPriority = 0x6a6f;

// Every map the programs share, with the sizes gaon/xdp_abi.h gives them.
struct MapAbi {
  const char* name;
  uint32_t key, value;
  uint32_t entries;  // 0: any
};
const MapAbi kMaps[] = {
    {GAON_MAP_PORTS, 4, sizeof(gaon_port), GAON_MAX_PORTS},
    {GAON_MAP_XSKS, 4, 4, 2 * GAON_MAX_QUEUES},
    {GAON_MAP_PEERS, 4, 4, 2},
    {GAON_MAP_FLOWS, sizeof(gaon_flow), sizeof(gaon_flow_target), GAON_MAX_FLOWS},
    {GAON_MAP_LEASE, 4, sizeof(gaon_lease), 1},
    {GAON_MAP_STATS, 4, 8, GAON_STEER_NSTATS},
    {GAON_MAP_FP_PROGS, 4, 4, GAON_FP_PROGS},
    {GAON_MAP_FP_SLOTS, 4, sizeof(gaon_fp_slot), GAON_FP_SLOTS},
    {GAON_MAP_FP_MEM, 4, GAON_FP_CHUNK, 0},
    {GAON_MAP_FP_CTX, 4, sizeof(gaon_fp_ctx), 1},
    {GAON_MAP_FP_STATS, 4, 8, GAON_FP_SLOTS* GAON_FP_NSTATS},
};

#define GAON_X_NAME(name, doc) #name,
const char* const kSteerStats[] = {GAON_STEER_STATS(GAON_X_NAME)};
const char* const kFpStats[] = {GAON_FP_STATS(GAON_X_NAME)};
#undef GAON_X_NAME

Result<void> check_maps(bpf_object* obj, const char* what) {
  for (const MapAbi& m : kMaps) {
    const bpf_map* map = bpf_object__find_map_by_name(obj, m.name);
    if (map == nullptr) return make_error("{}: no map {}", what, m.name);
    if (bpf_map__key_size(map) != m.key || bpf_map__value_size(map) != m.value ||
        (m.entries && bpf_map__max_entries(map) != m.entries))
      return make_error(
          "{}: map {} has keys of {} bytes, values of {}, {} entries; gaon/xdp_abi.h says {}, "
          "{}, {} (a program built from other headers?)",
          what, m.name, bpf_map__key_size(map), bpf_map__value_size(map), bpf_map__max_entries(map),
          m.key, m.value, m.entries ? std::to_string(m.entries) : "any");
  }
  return ok();
}

size_t possible_cpus() {
  const int cpus = libbpf_num_possible_cpus();
  return size_t(cpus > 0 ? cpus : 1);
}

std::vector<uint64_t> per_cpu(int fd, uint32_t key) {
  std::vector<uint64_t> per(possible_cpus());
  if (bpf_map_lookup_elem(fd, &key, per.data()) != 0) per.assign(per.size(), 0);
  return per;
}

uint64_t sum_percpu(int fd, uint32_t key) {
  uint64_t sum = 0;
  for (uint64_t v : per_cpu(fd, key)) sum += v;
  return sum;
}

std::string key_bytes(const gaon_flow& f) {
  return std::string(reinterpret_cast<const char*>(&f), sizeof(f));
}

// libxdp's warnings since the last attach began (why it failed or went without its
// dispatcher); its chatter otherwise stays quiet, as libbpf's does.
std::string& libxdp_said() {
  static std::string s;
  return s;
}
int libxdp_print(enum libxdp_print_level level, const char* format, va_list args) {
  if (level == LIBXDP_DEBUG) return 0;
  char buf[512];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
  vsnprintf(buf, sizeof(buf), format, args);
#pragma GCC diagnostic pop
  std::string m(buf);
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  for (char& c : m)
    if (c == '\n') c = ' ';
  if (!m.empty() && libxdp_said().find(m) == std::string::npos)
    libxdp_said() += (libxdp_said().empty() ? "" : "; ") + m;
  return 0;
}

// libxdp returns an error encoded in the pointer, or null.
bool libxdp_ok(const void* p) { return p != nullptr && libxdp_get_error(p) == 0; }

std::string ifname_of(int ifindex) {
  char n[IF_NAMESIZE] = {};
  return if_indextoname(unsigned(ifindex), n) ? std::string(n) : std::to_string(ifindex);
}

}  // namespace

gaon_flow XdpProgram::flow_key(const FlowKey& k) {
  gaon_flow f{};
  f.family = k.family;
  f.proto = k.proto;
  f.port = htons(k.local_port);
  if (k.family == 4) {
    static const uint8_t zero[4] = {};
    if (std::memcmp(k.local_ip, zero, 4) != 0) {  // 0.0.0.0: any (all zero)
      f.ip[10] = f.ip[11] = 0xff;
      std::memcpy(f.ip + 12, k.local_ip, 4);
    }
  } else {
    std::memcpy(f.ip, k.local_ip, 16);
  }
  return f;
}

Result<std::unique_ptr<XdpProgram>> XdpProgram::load(const Options& opt) {
  std::unique_ptr<XdpProgram> x(new XdpProgram());
  libbpf_set_print(nullptr);  // errors are reported by what fails, not libbpf's chatter
  if (opt.object_file.empty()) {
    bpf_object_open_opts oo{};
    oo.sz = sizeof(oo);
    oo.object_name = "gaon_steer";
    x->obj_ = bpf_object__open_mem(gaon_steer_bpf_obj, gaon_steer_bpf_obj_len, &oo);
  } else {
    x->obj_ = bpf_object__open_file(opt.object_file.c_str(), nullptr);
  }
  if (x->obj_ == nullptr) return make_error("the XDP program: {}", std::strerror(errno));
  if (auto c = check_maps(x->obj_, "the XDP steering program"); !c) return Error{c.error()};
  if (opt.fp_chunks == 0) return make_error("fast-path memory of 0 chunks");
  bpf_map* mem = bpf_object__find_map_by_name(x->obj_, GAON_MAP_FP_MEM);
  if (bpf_map__set_max_entries(mem, opt.fp_chunks) != 0)
    return make_error("sizing the fast-path memory: {}", std::strerror(errno));
  if (int e = bpf_object__load(x->obj_); e != 0)
    return make_error(
        "loading the XDP program: {} (root, or CAP_BPF and CAP_NET_ADMIN?{})", std::strerror(-e),
        e == -ENOMEM ? fmt::format("; {} MiB of fast-path memory", opt.fp_chunks) : "");
  auto fd = [&](const char* name) { return bpf_object__find_map_fd_by_name(x->obj_, name); };
  x->ports_ = fd(GAON_MAP_PORTS);
  x->xsks_ = fd(GAON_MAP_XSKS);
  x->peers_ = fd(GAON_MAP_PEERS);
  x->flows_ = fd(GAON_MAP_FLOWS);
  x->stats_ = fd(GAON_MAP_STATS);
  x->fp_progs_ = fd(GAON_MAP_FP_PROGS);
  x->fp_slots_ = fd(GAON_MAP_FP_SLOTS);
  x->fp_stats_ = fd(GAON_MAP_FP_STATS);
  bpf_program* prog = bpf_object__find_program_by_name(x->obj_, "gaon_steer");
  x->prog_fd_ = prog ? bpf_program__fd(prog) : -1;
  if (x->prog_fd_ < 0) return make_error("the XDP object has no program gaon_steer");
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  void* l = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd(GAON_MAP_LEASE), 0);
  if (l == MAP_FAILED) return make_error("mapping the XDP lease: {}", std::strerror(errno));
  x->lease_ = static_cast<gaon_lease*>(l);
  x->fp_chunks_ = opt.fp_chunks;
  x->opt_ = opt;
  x->fp_mem_bytes_ = size_t(opt.fp_chunks) * GAON_FP_CHUNK;
  void* m =
      mmap(nullptr, x->fp_mem_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd(GAON_MAP_FP_MEM), 0);
  if (m == MAP_FAILED) return make_error("mapping the fast-path memory: {}", std::strerror(errno));
  x->fp_mem_ = static_cast<uint8_t*>(m);
  x->chunk_owner_.assign(opt.fp_chunks, 0);
  x->chunk_freed_.assign(opt.fp_chunks, 0);
  x->slot_instance_.assign(GAON_FP_SLOTS, 0);
  x->slot_freed_.assign(GAON_FP_SLOTS, 0);
  return x;
}

XdpProgram::~XdpProgram() {
  for (Attached& a : attached_) {  // (the programs stay attached: their links are pinned)
    if (a.libxdp) xdp_program__close(a.libxdp);
    if (a.obj) bpf_object__close(a.obj);
  }
  for (bpf_link* l : links_) bpf_link__destroy(l);
  for (const TcHook& t : tc_) {
    DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = int(t.ifindex),
                        .attach_point = BPF_TC_EGRESS);
    DECLARE_LIBBPF_OPTS(bpf_tc_opts, to, .handle = kTcHandle, .priority = kTcPriority);
    bpf_tc_detach(&hook, &to);
  }
  if (fp_mem_) munmap(fp_mem_, fp_mem_bytes_);
  if (lease_) munmap(lease_, size_t(sysconf(_SC_PAGESIZE)));
  for (bpf_object* o : fp_objs_) bpf_object__close(o);
  if (obj_) bpf_object__close(obj_);
}

// Through libxdp's dispatcher: a second copy of the steering program over the same maps
// (libxdp loads it itself, as an extension program of the dispatcher), then attached.
// Earlier gaonds' gaon_steer leave the interface once this one is in (no moment without
// one); one attached directly is removed first (libxdp cannot join it).
int XdpProgram::attach(int ifindex, bool generic) {
  libxdp_set_print(libxdp_print);
  libxdp_said().clear();
  const std::string ifname = ifname_of(ifindex);
  const enum xdp_attach_mode mode = generic ? XDP_MODE_SKB : XDP_MODE_NATIVE;
  const char* mode_name = generic ? "generic" : "native";
  Attached a{ifindex, generic, nullptr, nullptr};
  std::vector<uint32_t> earlier;  // earlier gaonds' programs in the dispatcher
  std::string why;
  xdp_multiprog* mp = xdp_multiprog__get_from_ifindex(ifindex);
  if (libxdp_ok(mp)) {
    if (xdp_multiprog__is_legacy(mp)) {
      xdp_program* m = xdp_multiprog__main_prog(mp);
      const char* n = m ? xdp_program__name(m) : nullptr;
      if (n != nullptr && std::strcmp(n, "gaon_steer") == 0) {
        bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, nullptr);
        bpf_xdp_detach(ifindex, XDP_FLAGS_SKB_MODE, nullptr);
      } else {
        why = fmt::format("{} has an XDP program ({}) that libxdp did not load", ifname,
                          n ? n : "unnamed");
      }
    } else {
      for (xdp_program* p = xdp_multiprog__next_prog(nullptr, mp); p != nullptr;
           p = xdp_multiprog__next_prog(p, mp))
        if (const char* n = xdp_program__name(p); n && std::strcmp(n, "gaon_steer") == 0)
          earlier.push_back(xdp_program__id(p));
      if (xdp_multiprog__attach_mode(mp) != mode &&
          xdp_multiprog__program_count(mp) == int(earlier.size())) {
        xdp_multiprog__detach(mp);  // only earlier gaonds', in the other mode: replaced
        earlier.clear();
      } else if (xdp_multiprog__attach_mode(mp) != mode) {
        xdp_multiprog__close(mp);
        libxdp_said() = fmt::format(
            "{} has XDP programs in {} mode (xdp-loader status {}); the kernel runs one mode at "
            "a time",
            ifname, generic ? "native" : "generic", ifname);
        return -EBUSY;
      }
    }
    xdp_multiprog__close(mp);
  }
  if (why.empty()) {
    bpf_object_open_opts oo{};
    oo.sz = sizeof(oo);
    oo.object_name = "gaon_steer";
    a.obj = opt_.object_file.empty()
                ? bpf_object__open_mem(gaon_steer_bpf_obj, gaon_steer_bpf_obj_len, &oo)
                : bpf_object__open_file(opt_.object_file.c_str(), nullptr);
    if (a.obj == nullptr) why = fmt::format("opening the program again: {}", std::strerror(errno));
    bpf_map* m = nullptr;
    if (a.obj != nullptr) bpf_object__for_each_map(m, a.obj) {
        const int fd = bpf_object__find_map_fd_by_name(obj_, bpf_map__name(m));
        if (fd < 0 || bpf_map__reuse_fd(m, fd) != 0) {
          why = fmt::format("sharing map {}: {}", bpf_map__name(m), std::strerror(errno));
          break;
        }
      }
    if (why.empty()) {
      DECLARE_LIBXDP_OPTS(xdp_program_opts, po, .obj = a.obj, .prog_name = "gaon_steer");
      a.libxdp = xdp_program__create(&po);
      if (!libxdp_ok(a.libxdp)) {
        a.libxdp = nullptr;
        why = fmt::format("libxdp: {}", std::strerror(errno));
      }
    }
    if (why.empty()) {
      if (int e = xdp_program__attach(a.libxdp, ifindex, mode, 0); e != 0) {
        why = fmt::format("libxdp: {}{}", std::strerror(-e),
                          libxdp_said().empty() ? "" : " (" + libxdp_said() + ")");
      } else {
        // libxdp attaches alone, without its dispatcher, when it cannot load one.
        xdp_multiprog* now = xdp_multiprog__get_from_ifindex(ifindex);
        const bool legacy = !libxdp_ok(now) || xdp_multiprog__is_legacy(now);
        if (libxdp_ok(now)) xdp_multiprog__close(now);
        if (!legacy) {
          for (uint32_t id : earlier) {
            xdp_program* old = xdp_program__from_id(id);
            if (!libxdp_ok(old)) continue;
            xdp_program__detach(old, ifindex, mode, 0);
            xdp_program__close(old);
          }
          attached_.push_back(a);
          return 0;
        }
        why = fmt::format("libxdp could not use its dispatcher{}",
                          libxdp_said().empty() ? "" : " (" + libxdp_said() + ")");
        xdp_program__detach(a.libxdp, ifindex, mode, 0);
      }
    }
    if (a.libxdp) xdp_program__close(a.libxdp);
    if (a.obj) bpf_object__close(a.obj);
    a.libxdp = nullptr;
    a.obj = nullptr;
  }
  // Directly, as before libxdp: replacing what is there (an earlier gaond's dispatcher
  // with only gaon_steer in it too; one with other programs is left alone: refused).
  // (the first interface's reason: libxdp gives its whole reason once per process)
  if (direct_why_.empty()) direct_why_ = fmt::format("{} ({} XDP on {})", why, mode_name, ifname);
  uint32_t flags = generic ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
  xdp_multiprog* mp2 = xdp_multiprog__get_from_ifindex(ifindex);
  if (libxdp_ok(mp2)) {
    const bool others =
        !xdp_multiprog__is_legacy(mp2) && xdp_multiprog__program_count(mp2) > int(earlier.size());
    xdp_multiprog__close(mp2);
    if (others) flags |= XDP_FLAGS_UPDATE_IF_NOEXIST;
  }
  if (!(flags & XDP_FLAGS_UPDATE_IF_NOEXIST)) {
    bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, nullptr);
    bpf_xdp_detach(ifindex, XDP_FLAGS_SKB_MODE, nullptr);
  }
  if (int e = bpf_xdp_attach(ifindex, prog_fd_, flags, nullptr); e != 0) {
    libxdp_said() = direct_why_;
    return e;
  }
  attached_.push_back(a);
  return 0;
}

void XdpProgram::detach(int ifindex) {
  for (auto it = attached_.begin(); it != attached_.end(); ++it) {
    if (it->ifindex != ifindex) continue;
    if (it->libxdp) {
      xdp_program__detach(it->libxdp, ifindex, it->generic ? XDP_MODE_SKB : XDP_MODE_NATIVE, 0);
      xdp_program__close(it->libxdp);
      bpf_object__close(it->obj);
    } else {  // only if it is still ours
      DECLARE_LIBBPF_OPTS(bpf_xdp_attach_opts, o, .old_prog_fd = prog_fd_);
      bpf_xdp_detach(
          ifindex, (it->generic ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE) | XDP_FLAGS_REPLACE, &o);
    }
    attached_.erase(it);
    return;
  }
}

std::string XdpProgram::attach_description() const {
  bool direct = false;
  for (const Attached& a : attached_) direct = direct || a.libxdp == nullptr;
  if (!direct) return fmt::format("libxdp dispatcher, priority {}", GAON_XDP_RUN_PRIO);
  return fmt::format("attached directly, not through libxdp's dispatcher: {}", direct_why_);
}

nlohmann::json XdpProgram::attach_stats() const {
  bool direct = false;
  for (const Attached& a : attached_) direct = direct || a.libxdp == nullptr;
  nlohmann::json j = {{"xdp_attach", direct ? "direct" : "dispatcher"}};
  if (direct)
    j["xdp_attach_why"] = direct_why_;
  else
    j["xdp_run_prio"] = GAON_XDP_RUN_PRIO;
  return j;
}

// The reason the last attach failed (libxdp's or the kernel's), for the caller's error.
std::string XdpProgram::attach_error() { return libxdp_said(); }

int XdpProgram::map_fd(const char* name) const {
  return bpf_object__find_map_fd_by_name(obj_, name);
}

static_assert((GAON_MAX_PORTS & (GAON_MAX_PORTS - 1)) == 0);

// gaon_ports is probed linearly from each interface's home (xdp_abi.h): an interface goes
// where it already is or into the first empty element from its home; one that leaves is
// filled by the later entries of its run that may move back (backward-shift deletion), so
// every entry stays reachable from its home without passing an empty element.
Result<void> XdpProgram::set_port(uint32_t ifindex, gaon_role role, uint32_t peer_slot) {
  if (ifindex == 0) return make_error("the XDP port map: ifindex 0");
  std::lock_guard lock(mu_);
  for (uint32_t i = 0; i < GAON_MAX_PORTS; ++i) {
    uint32_t k = (gaon_port_home(ifindex) + i) & (GAON_MAX_PORTS - 1);
    if (ports_at_[k].ifindex != 0 && ports_at_[k].ifindex != ifindex) continue;
    const gaon_port p{ifindex, uint32_t(role), peer_slot};
    if (bpf_map_update_elem(ports_, &k, &p, BPF_ANY) != 0)
      return make_error("the XDP port map: {}", std::strerror(errno));
    ports_at_[k] = p;
    return ok();
  }
  return make_error("the XDP port map: more than {} interfaces", GAON_MAX_PORTS);
}

void XdpProgram::remove_port(uint32_t ifindex) {
  std::lock_guard lock(mu_);
  constexpr uint32_t kMask = GAON_MAX_PORTS - 1;
  uint32_t hole = GAON_MAX_PORTS;
  for (uint32_t i = 0; i < GAON_MAX_PORTS && hole == GAON_MAX_PORTS; ++i) {
    const uint32_t k = (gaon_port_home(ifindex) + i) & kMask;
    if (ports_at_[k].ifindex == 0) return;  // not there
    if (ports_at_[k].ifindex == ifindex) hole = k;
  }
  if (hole == GAON_MAX_PORTS) return;
  for (uint32_t j = (hole + 1) & kMask; ports_at_[j].ifindex != 0 && j != hole;
       j = (j + 1) & kMask) {
    const uint32_t home = gaon_port_home(ports_at_[j].ifindex);
    // May the entry at j move back to the hole: is its home not in (hole, j]?
    if (((j - home) & kMask) < ((j - hole) & kMask)) continue;
    // Written at the hole first: it is reachable at every moment (twice, for a moment).
    (void)bpf_map_update_elem(ports_, &hole, &ports_at_[j], BPF_ANY);
    ports_at_[hole] = ports_at_[j];
    hole = j;
  }
  const gaon_port empty{};
  (void)bpf_map_update_elem(ports_, &hole, &empty, BPF_ANY);
  ports_at_[hole] = empty;
}
Result<void> XdpProgram::set_peer(uint32_t slot, uint32_t ifindex) {
  if (bpf_map_update_elem(peers_, &slot, &ifindex, BPF_ANY) != 0)
    return make_error("the XDP peer map: {}", std::strerror(errno));
  return ok();
}
Result<void> XdpProgram::set_xsk(gaon_role role, uint32_t queue, int fd) {
  const uint32_t key = gaon_xsk_key(role, queue);
  if (queue >= GAON_MAX_QUEUES || bpf_map_update_elem(xsks_, &key, &fd, BPF_ANY) != 0)
    return make_error("registering the AF_XDP socket with the program: {}", std::strerror(errno));
  return ok();
}

// A type's program, loaded over the steering program's maps and put in gaon_fp_progs.
Result<void> XdpProgram::load_fast_path(const FastPathSpec& fp) {
  if (auto it = fp_loaded_.find(fp.prog); it != fp_loaded_.end()) {
    if (it->second.empty()) return ok();
    return make_error("{}", it->second);
  }
  auto fail = [&](std::string why) -> Result<void> {
    fp_loaded_[fp.prog] = why;
    return make_error("{}", why);
  };
  if (fp.prog >= GAON_FP_PROGS) return fail(fmt::format("fast path {}: no such slot", fp.prog));
#if !defined(__x86_64__)
  // Its readers check sequence counters with plain loads (docs/fast-path.md).
  return fail("fast paths rely on x86-64's memory ordering; this CPU runs them in gaond");
#endif
  bpf_object_open_opts oo{};
  oo.sz = sizeof(oo);
  const std::string name(fp.program);
  oo.object_name = name.c_str();
  bpf_object* o = bpf_object__open_mem(fp.object.data(), fp.object.size(), &oo);
  if (o == nullptr) return fail(fmt::format("the fast path {}: {}", name, std::strerror(errno)));
  fp_objs_.push_back(o);
  for (const MapAbi& m : kMaps) {
    bpf_map* map = bpf_object__find_map_by_name(o, m.name);
    if (map == nullptr) continue;  // a fast path need not use every map
    if (bpf_map__key_size(map) != m.key || bpf_map__value_size(map) != m.value)
      return fail(
          fmt::format("the fast path {}: map {} differs from gaon/xdp_abi.h", name, m.name));
    if (bpf_map__reuse_fd(map, map_fd(m.name)) != 0)
      return fail(
          fmt::format("the fast path {}: sharing map {}: {}", name, m.name, std::strerror(errno)));
  }
  // A bump runs only the XDP programs; one NIC, all of them (fast_path.h).
  bpf_program* p = nullptr;
  bpf_object__for_each_program(p, o) {
    if (!opt_.local && bpf_program__type(p) != BPF_PROG_TYPE_XDP)
      bpf_program__set_autoload(p, false);
  }
  bpf_program* prog = bpf_object__find_program_by_name(o, name.c_str());
  // The verifier's last words, for the error (its whole log is long): a log per program
  // loaded; libbpf loads them in order and stops at the one refused, the last that logged.
  std::vector<std::pair<std::string, std::vector<char>>> logs;
  bpf_object__for_each_program(p, o) {
    if (!bpf_program__autoload(p)) continue;
    logs.emplace_back(bpf_program__name(p), std::vector<char>(1 << 20, '\0'));
    bpf_program__set_log_buf(p, logs.back().second.data(), logs.back().second.size());
  }
  if (int e = bpf_object__load(o); e != 0) {
    std::string who = name, v;
    for (const auto& [pn, buf] : logs)
      if (buf[0] != '\0') {
        who = pn;
        v = std::string(buf.data());
      }
    while (!v.empty() && v.back() == '\n') v.pop_back();
    if (getenv("GAON_VERIFIER_LOG")) fmt::print(stderr, "{}\n", v);
    size_t cut = v.size();  // its last three lines
    for (int lines = 0; lines < 3 && cut != std::string::npos && cut > 0; ++lines)
      cut = v.rfind('\n', cut - 1);
    if (cut != std::string::npos && cut < v.size()) v = v.substr(cut + 1);
    for (char& c : v)
      if (c == '\n') c = ';';
    return fail(fmt::format("loading the fast path {} (program {}): {}{}", name, who,
                            std::strerror(-e), v.empty() ? "" : " (verifier: " + v + ")"));
  }
  const int pfd = prog ? bpf_program__fd(prog) : -1;
  if (pfd < 0) return fail(fmt::format("the fast path's object has no program {}", name));
  for (const FastPathExtra& e : fp.extras) {  // first: the fast path may call them at once
    const std::string en(e.program);
    bpf_program* ep = bpf_object__find_program_by_name(o, en.c_str());
    const int efd = ep ? bpf_program__fd(ep) : -1;
    if (efd < 0 || e.prog >= GAON_FP_PROGS ||
        bpf_map_update_elem(fp_progs_, &e.prog, &efd, BPF_ANY) != 0)
      return fail(fmt::format("the fast path {}: its program {}: {}", name, en,
                              efd < 0 ? "not in the object" : std::strerror(errno)));
  }
  if (opt_.local)
    if (auto a = attach_local(o, name); !a) return fail(a.error());
  if (bpf_map_update_elem(fp_progs_, &fp.prog, &pfd, BPF_ANY) != 0)
    return fail(fmt::format("the fast path {}: {}", name, std::strerror(errno)));
  fp_loaded_[fp.prog] = "";
  return ok();
}

// One NIC: the object's tc programs at the egress of every local interface, its sock_ops
// and cgroup_skb programs on the cgroup.
Result<void> XdpProgram::attach_local(bpf_object* o, const std::string& name) {
  bpf_program* p = nullptr;
  bpf_object__for_each_program(p, o) {
    const int fd = bpf_program__fd(p);
    switch (bpf_program__type(p)) {
      case BPF_PROG_TYPE_SCHED_CLS:
        for (uint32_t ifx : opt_.local_ifindexes) {
          DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = int(ifx),
                              .attach_point = BPF_TC_EGRESS);
          if (int e = bpf_tc_hook_create(&hook); e != 0 && e != -EEXIST)
            return make_error("the fast path {}: tc egress on interface {}: {}", name, ifx,
                              std::strerror(-e));
          DECLARE_LIBBPF_OPTS(bpf_tc_opts, to, .prog_fd = fd, .flags = BPF_TC_F_REPLACE,
                              .handle = kTcHandle, .priority = kTcPriority);
          if (int e = bpf_tc_attach(&hook, &to); e != 0)
            return make_error("the fast path {}: attaching {} at tc egress of interface {}: {}",
                              name, bpf_program__name(p), ifx, std::strerror(-e));
          tc_.push_back({ifx, fd});
        }
        break;
      case BPF_PROG_TYPE_SOCK_OPS:
      case BPF_PROG_TYPE_CGROUP_SKB: {
        if (opt_.cgroup.empty()) break;  // (tests: no sockets watched)
        const int cg = open(opt_.cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cg < 0)
          return make_error("the fast path {}: cgroup {}: {}", name, opt_.cgroup,
                            std::strerror(errno));
        bpf_link* l = bpf_program__attach_cgroup(p, cg);
        const int err = errno;
        close(cg);
        if (l == nullptr)
          return make_error("the fast path {}: attaching {} to cgroup {}: {}", name,
                            bpf_program__name(p), opt_.cgroup, std::strerror(err));
        links_.push_back(l);
        break;
      }
      default:
        break;
    }
  }
  return ok();
}

Result<void> XdpProgram::add_flow(const FlowKey& key, uint32_t instance, const FastPathSpec& fp) {
  std::lock_guard lk(mu_);
  uint32_t value = 0;
  if (fp) {
    auto it = instances_.find(instance);
    if (it == instances_.end()) {  // its first flow: a slot, memory, the program
      Instance in;
      const size_t bytes = opt_.local ? fp.kernel_bytes : fp.bytes;
      const uint32_t need = uint32_t((bytes + GAON_FP_CHUNK - 1) / GAON_FP_CHUNK);
      // Slots and chunks given up by a removed instance rest a while first: a program that
      // started on one before the removal may still be reading it.
      const uint64_t now = mono_ns();
      auto rested = [&](uint64_t freed) { return freed == 0 || now - freed >= kRestNs; };
      uint32_t slot = 0;
      for (uint32_t s = 1; s < GAON_FP_SLOTS && slot == 0; ++s)
        if (slot_instance_[s] == 0 && rested(slot_freed_[s])) slot = s;
      uint32_t first = 0, run = 0;
      for (uint32_t c = 0; c < fp_chunks_ && run < need; ++c) {
        if (chunk_owner_[c] != 0 || !rested(chunk_freed_[c])) {
          run = 0;
          continue;
        }
        if (run++ == 0) first = c;
      }
      if (auto l = load_fast_path(fp); !l) {
        in.why_none = l.error();
      } else if (slot == 0) {
        in.why_none = fmt::format("all {} fast-path slots are taken", GAON_FP_SLOTS - 1);
      } else if (need == 0 || run < need) {
        in.why_none = fmt::format(
            "the fast-path memory has no {} MiB free in one piece ({} MiB in all, gaond "
            "--xdp-memory-mb)",
            need, fp_chunks_);
      } else {
        for (uint32_t c = first; c < first + need; ++c) chunk_owner_[c] = slot;
        uint8_t* mem = fp_mem_ + size_t(first) * GAON_FP_CHUNK;
        std::memset(mem, 0, size_t(need) * GAON_FP_CHUNK);
        const gaon_fp_slot d{fp.prog, first, need, instance};
        const std::vector<uint64_t> zero(possible_cpus());
        for (uint32_t i = 0; i < GAON_FP_NSTATS; ++i) {  // counters start at zero
          const uint32_t k = slot * GAON_FP_NSTATS + i;
          bpf_map_update_elem(fp_stats_, &k, zero.data(), BPF_ANY);
        }
        if (bpf_map_update_elem(fp_slots_, &slot, &d, BPF_ANY) != 0) {
          for (uint32_t c = first; c < first + need; ++c) chunk_owner_[c] = 0;
          in.why_none = fmt::format("the fast-path slot map: {}", std::strerror(errno));
        } else {
          slot_instance_[slot] = instance + 1;
          in.first_chunk = first;
          in.chunks = need;
          in.state = {mem, size_t(need) * GAON_FP_CHUNK, slot, opt_.local};
        }
      }
      it = instances_.emplace(instance, std::move(in)).first;
    }
    value = it->second.state.slot;
  }
  const gaon_flow f = flow_key(key);
  const std::string k = key_bytes(f);
  FlowRef& ref = flow_refs_[k];
  // One local address shared by flows of different instances: all of it to gaond. On one
  // NIC there is no gaond in the path to give it to: refused.
  if (opt_.local && ref.refs != 0 && ref.value != value)
    return make_error(
        "{}: another instance has a flow on this address and port; on a server "
        "with one NIC an address is one instance's",
        key.to_string());
  const uint32_t want = ref.refs == 0 || ref.value == value ? value : 0;
  if (ref.refs == 0 || want != ref.value) {
    const gaon_flow_target t{want};
    if (bpf_map_update_elem(flows_, &f, &t, BPF_ANY) != 0) {
      if (ref.refs == 0) flow_refs_.erase(k);
      return make_error("the XDP flow map: {}", std::strerror(errno));
    }
    ref.value = want;
  }
  ++ref.refs;
  return ok();
}

void XdpProgram::remove_flow(const FlowKey& key) {
  const gaon_flow f = flow_key(key);
  std::lock_guard lk(mu_);
  auto it = flow_refs_.find(key_bytes(f));
  if (it == flow_refs_.end()) return;
  if (--it->second.refs == 0) {
    bpf_map_delete_elem(flows_, &f);
    flow_refs_.erase(it);
  }
}

FastPathState* XdpProgram::fast_path(uint32_t instance) {
  std::lock_guard lk(mu_);
  auto it = instances_.find(instance);
  return it == instances_.end() || it->second.state.mem == nullptr ? nullptr : &it->second.state;
}

void XdpProgram::instance_removed(uint32_t instance) {
  std::lock_guard lk(mu_);
  auto it = instances_.find(instance);
  if (it == instances_.end()) return;
  if (const uint32_t slot = it->second.state.slot; slot != 0) {
    const gaon_fp_slot none{};
    bpf_map_update_elem(fp_slots_, &slot, &none, BPF_ANY);  // no frame reaches it now
    const uint64_t now = mono_ns();
    for (uint32_t c = 0; c < fp_chunks_; ++c)
      if (chunk_owner_[c] == slot) chunk_owner_[c] = 0, chunk_freed_[c] = now;
    slot_instance_[slot] = 0;
    slot_freed_[slot] = now;
  }
  instances_.erase(it);
}

void XdpProgram::start_lease(uint64_t bound_ns) {
  lease_ns_ = bound_ns;
  lease_->renewed_ns = mono_ns();  // fresh before the program is attached; a lapse before
                                   // the first poll (start-up) is not counted
  lease_->bound_ns = bound_ns;
}

void XdpProgram::renew_lease() {
  if (lease_ns_ == 0) return;
  const uint64_t now = mono_ns();
  if (resume_next_) {
    resume_next_ = false;  // the engine saw the gap in the last poll: resume
  } else if (renewed_ns_ != 0 && now - renewed_ns_ > lease_ns_) {
    lapses_.add();  // until renewed, the programs keep everything away from the fast paths
    resume_next_ = true;
    return;
  }
  renewed_ns_ = now;
  std::atomic_ref<__u64>(lease_->renewed_ns).store(now, std::memory_order_release);
}

int XdpProgram::fast_path_program_fd(const std::string& name) const {
  std::lock_guard lk(mu_);
  for (bpf_object* o : fp_objs_)
    if (bpf_program* p = bpf_object__find_program_by_name(o, name.c_str())) {
      const int fd = bpf_program__fd(p);
      if (fd >= 0) return fd;
    }
  return -1;
}

nlohmann::json XdpProgram::stats() const {
  nlohmann::json j = nlohmann::json::object();
  for (uint32_t i = 0; i < GAON_STEER_NSTATS; ++i) j[kSteerStats[i]] = sum_percpu(stats_, i);
  return j;
}

nlohmann::json XdpProgram::fast_path_stats(uint32_t instance) {
  std::lock_guard lk(mu_);
  auto it = instances_.find(instance);
  if (it == instances_.end()) return nullptr;
  const Instance& in = it->second;
  if (in.state.slot == 0) return {{"active", false}, {"why", in.why_none}};
  nlohmann::json j = {{"active", true}, {"slot", in.state.slot}, {"memory_bytes", in.state.bytes}};
  for (uint32_t i = 0; i < GAON_FP_NSTATS; ++i)
    j[kFpStats[i]] = sum_percpu(fp_stats_, in.state.slot * GAON_FP_NSTATS + i);
  j["answered_by_cpu"] = per_cpu(fp_stats_, in.state.slot * GAON_FP_NSTATS + GAON_FP_STAT_answered);
  return j;
}

size_t XdpProgram::flows() const {
  std::lock_guard lk(mu_);
  return flow_refs_.size();
}

uint32_t XdpProgram::fp_chunks_free() const {
  std::lock_guard lk(mu_);
  uint32_t n = 0;
  for (uint32_t o : chunk_owner_) n += o == 0;
  return n;
}

}  // namespace gaon
