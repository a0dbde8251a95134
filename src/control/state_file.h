// gaond's state file: the persistent instances (created with "persist": true) and their
// flows, so that a restarted gaond brings them back. One JSON document, DIR/state.json:
//
//   {"format": "gaond-state", "version": 1, "instances": [
//     {"id": 3, "type": "kvcache", "owner": 1000, "params": ["capacity=64M"],
//      "quota": 67108864, "bytes": 1052672,
//      "traffic_class": {"weight": 1, "rate_bps": 0, "burst_bytes": 0},
//      "flows": ["udp:127.0.0.1:11211"]}]}
//
// Written atomically (a temporary file in DIR, fsync, rename, fsync of DIR), mode 0600 in
// a directory created 0700. The directory is locked (flock) while a gaond uses it, so two
// gaonds never share one. A file that does not decode is reported in one line and moved
// aside (state.json.bad), never half-used.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gaon/flow.h"
#include "gaon/ikernel.h"
#include "gaon/instance.h"
#include "gaon/result.h"

namespace gaon::control {

inline constexpr const char* kStateFormat = "gaond-state";
inline constexpr uint32_t kStateVersion = 1;
inline constexpr const char* kStateFileName = "state.json";

struct SavedInstance {
  uint32_t id = 0;  // the id it had; a restored instance gets the lowest free one
  std::string type;
  uint32_t owner = 0;
  std::vector<std::string> params;  // "k=v", as given at create
  uint64_t quota = 0;               // state quota it was created with (after any clamping)
  uint64_t bytes = 0;               // state it held
  TrafficClass tc;
  std::vector<FlowKey> flows;
  bool operator==(const SavedInstance&) const = default;
};

// The document above (with a trailing newline).
std::string encode_state(const std::vector<SavedInstance>& instances);
// The instances of a document; an error says in one line what is wrong (not JSON, not
// gaond's, another version, an entry's missing or mistyped field, an unknown type, a bad
// flow). Types are looked up in `reg`.
Result<std::vector<SavedInstance>> decode_state(std::string_view text, const Registry& reg);

class StateFile {
 public:
  // Creates `dir` (0700) when missing and locks it; fails (one line) when it cannot, or
  // when another gaond holds it.
  static Result<StateFile> open(const std::string& dir);
  StateFile(StateFile&& o) noexcept;
  StateFile& operator=(StateFile&& o) noexcept;
  StateFile(const StateFile&) = delete;
  StateFile& operator=(const StateFile&) = delete;
  ~StateFile();  // unlocks

  const std::string& path() const { return path_; }
  // What the file records; nothing when there is no file yet. An error (one line) names
  // the file and what is wrong; a file that does not decode has been moved to
  // path() + ".bad" (said in the error), so the next save does not erase it unseen.
  Result<std::vector<SavedInstance>> load(const Registry& reg);
  // Replaces the file atomically.
  Result<void> save(const std::vector<SavedInstance>& instances);

 private:
  StateFile(int dir_fd, std::string dir, std::string path)
      : dir_fd_(dir_fd), dir_(std::move(dir)), path_(std::move(path)) {}
  int dir_fd_ = -1;
  std::string dir_, path_;
};

}  // namespace gaon::control
