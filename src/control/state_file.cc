#include "state_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <nlohmann/json.hpp>

namespace gaon::control {

namespace {

using nlohmann::json;

constexpr size_t kMaxStateFile = 16u << 20;  // far above what 255 instances can need

// A field of an entry that must be a non-negative integer no larger than `max`.
Result<uint64_t> number(const json& o, const char* name, const std::string& who,
                        uint64_t max = UINT64_MAX) {
  auto it = o.find(name);
  if (it == o.end()) return make_error("{}: no \"{}\"", who, name);
  if (!it->is_number_unsigned() || it->get<uint64_t>() > max)
    return make_error("{}: \"{}\" must be an integer 0..{}", who, name, max);
  return it->get<uint64_t>();
}

Result<std::vector<std::string>> strings(const json& o, const char* name, const std::string& who) {
  auto it = o.find(name);
  if (it == o.end()) return make_error("{}: no \"{}\"", who, name);
  if (!it->is_array()) return make_error("{}: \"{}\" must be a list of strings", who, name);
  std::vector<std::string> out;
  for (const auto& v : *it) {
    if (!v.is_string()) return make_error("{}: \"{}\" must be a list of strings", who, name);
    out.push_back(v.get<std::string>());
  }
  return out;
}

Result<SavedInstance> decode_instance(const json& e, size_t index, const Registry& reg) {
  std::string who = fmt::format("instance #{}", index + 1);
  if (!e.is_object()) return make_error("{}: not a JSON object", who);
  SavedInstance s;
  auto id = number(e, "id", who, UINT32_MAX);
  if (!id) return Error{id.error()};
  s.id = uint32_t(*id);
  who = fmt::format("instance {}", s.id);
  auto type = e.find("type");
  if (type == e.end() || !type->is_string()) return make_error("{}: no \"type\" (a string)", who);
  s.type = type->get<std::string>();
  if (reg.find(s.type) == nullptr)
    return make_error("{}: unknown ikernel type '{}'", who, printable(s.type));
  auto owner = number(e, "owner", who, UINT32_MAX);
  if (!owner) return Error{owner.error()};
  s.owner = uint32_t(*owner);
  auto params = strings(e, "params", who);
  if (!params) return Error{params.error()};
  s.params = std::move(*params);
  auto quota = number(e, "quota", who);
  if (!quota) return Error{quota.error()};
  s.quota = *quota;
  auto bytes = number(e, "bytes", who);
  if (!bytes) return Error{bytes.error()};
  s.bytes = *bytes;
  auto tc = e.find("traffic_class");
  if (tc == e.end() || !tc->is_object())
    return make_error("{}: no \"traffic_class\" (an object)", who);
  const std::string tc_who = who + " traffic_class";
  auto weight = number(*tc, "weight", tc_who, 1000);
  if (!weight) return Error{weight.error()};
  if (*weight == 0) return make_error("{}: \"weight\" must be 1..1000", tc_who);
  auto rate = number(*tc, "rate_bps", tc_who);
  if (!rate) return Error{rate.error()};
  auto burst = number(*tc, "burst_bytes", tc_who, UINT32_MAX);
  if (!burst) return Error{burst.error()};
  s.tc = {.weight = uint32_t(*weight), .rate_bps = *rate, .burst_bytes = uint32_t(*burst)};
  auto flows = strings(e, "flows", who);
  if (!flows) return Error{flows.error()};
  for (const auto& f : *flows) {
    auto k = FlowKey::parse(f);
    if (!k) return make_error("{}: bad flow '{}': {}", who, printable(f), k.error());
    s.flows.push_back(*k);
  }
  return s;
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

std::string encode_state(const std::vector<SavedInstance>& instances) {
  json list = json::array();
  for (const auto& s : instances) {
    json flows = json::array();
    for (const auto& f : s.flows) flows.push_back(f.to_string());
    list.push_back({{"id", s.id},
                    {"type", s.type},
                    {"owner", s.owner},
                    {"params", s.params},
                    {"quota", s.quota},
                    {"bytes", s.bytes},
                    {"traffic_class",
                     {{"weight", s.tc.weight},
                      {"rate_bps", s.tc.rate_bps},
                      {"burst_bytes", s.tc.burst_bytes}}},
                    {"flows", flows}});
  }
  const json doc = {{"format", kStateFormat}, {"version", kStateVersion}, {"instances", list}};
  // Strings came in as JSON, so they are UTF-8; replace anything else rather than throw.
  return doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

Result<std::vector<SavedInstance>> decode_state(std::string_view text, const Registry& reg) {
  const json doc = json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_discarded()) return make_error("not valid JSON (truncated or corrupt)");
  if (!doc.is_object() || !doc.contains("format"))
    return make_error("not a gaond state file (no \"format\": \"{}\")", kStateFormat);
  if (doc["format"] != kStateFormat)
    return make_error("not a gaond state file (\"format\" is {}, not \"{}\")",
                      printable(doc["format"].dump(-1, ' ', false, json::error_handler_t::replace)),
                      kStateFormat);
  auto version = doc.find("version");
  if (version == doc.end() || !version->is_number_unsigned())
    return make_error("no \"version\" (a number)");
  if (version->get<uint64_t>() != kStateVersion)
    return make_error("version {}, but this gaond reads version {}", version->get<uint64_t>(),
                      kStateVersion);
  auto list = doc.find("instances");
  if (list == doc.end() || !list->is_array()) return make_error("no \"instances\" (a list)");
  std::vector<SavedInstance> out;
  for (size_t i = 0; i < list->size(); ++i) {
    auto s = decode_instance((*list)[i], i, reg);
    if (!s) return Error{s.error()};
    out.push_back(std::move(*s));
  }
  return out;
}

// ---------------------------------------------------------------- the file

Result<StateFile> StateFile::open(const std::string& dir_in) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty()) return make_error("state dir: empty path");
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return make_error("state dir {}: cannot create it: {}", dir, errno_text());
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return make_error("state dir {}: {}", dir, errno_text());
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const std::string why =
        errno == EWOULDBLOCK ? std::string("another gaond is using it") : errno_text();
    ::close(fd);
    return make_error("state dir {}: {}", dir, why);
  }
  return StateFile(fd, dir, dir + "/" + kStateFileName);
}

StateFile::StateFile(StateFile&& o) noexcept
    : dir_fd_(std::exchange(o.dir_fd_, -1)), dir_(std::move(o.dir_)), path_(std::move(o.path_)) {}

StateFile& StateFile::operator=(StateFile&& o) noexcept {
  if (this != &o) {
    if (dir_fd_ >= 0) ::close(dir_fd_);
    dir_fd_ = std::exchange(o.dir_fd_, -1);
    dir_ = std::move(o.dir_);
    path_ = std::move(o.path_);
  }
  return *this;
}

StateFile::~StateFile() {
  if (dir_fd_ >= 0) ::close(dir_fd_);  // releases the lock
}

Result<std::vector<SavedInstance>> StateFile::load(const Registry& reg) {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT) return std::vector<SavedInstance>{};
  std::string text;
  char buf[65536];
  Result<void> read_ok;
  if (fd < 0) read_ok = make_error("cannot read it: {}", errno_text());
  for (; fd >= 0;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      read_ok = make_error("{}", errno_text());
      break;
    }
    if (n == 0) break;
    text.append(buf, size_t(n));
    if (text.size() > kMaxStateFile) {
      read_ok = make_error("larger than {} bytes", kMaxStateFile);
      break;
    }
  }
  if (fd >= 0) ::close(fd);
  Result<std::vector<SavedInstance>> r =
      read_ok ? decode_state(text, reg)
              : Result<std::vector<SavedInstance>>(Error{read_ok.error()});
  if (r) return r;
  const std::string bad = path_ + ".bad";
  if (::rename(path_.c_str(), bad.c_str()) != 0)
    return make_error("state file {}: {} (and it cannot be moved aside: {})", path_, r.error(),
                      errno_text());
  return make_error("state file {}: {} (moved to {})", path_, r.error(), bad);
}

Result<void> StateFile::save(const std::vector<SavedInstance>& instances) {
  const std::string text = encode_state(instances);
  const std::string tmp = dir_ + "/." + kStateFileName + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return make_error("state file {}: cannot write {}: {}", path_, tmp, errno_text());
  fchmod(fd, 0600);  // whatever the umask, and a left-over temporary file's mode
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = errno_text();
      ::close(fd);
      ::unlink(tmp.c_str());
      return make_error("state file {}: cannot write {}: {}", path_, tmp, why);
    }
    off += size_t(n);
  }
  if (::fsync(fd) != 0) {
    const std::string why = errno_text();
    ::close(fd);
    ::unlink(tmp.c_str());
    return make_error("state file {}: fsync: {}", path_, why);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    return make_error("state file {}: cannot replace it: {}", path_, why);
  }
  ::fsync(dir_fd_);  // the rename itself
  return ok();
}

}  // namespace gaon::control
