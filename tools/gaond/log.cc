#include "log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace gaond {
namespace {

std::atomic<int> g_level{int(Level::info)};

// systemd sets JOURNAL_STREAM=DEV:INODE when stdout/stderr go to the journal.
bool stderr_is_journal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  struct stat st {};
  if (!js || fstat(STDERR_FILENO, &st) != 0) return false;
  unsigned long long dev = 0, ino = 0;
  return std::sscanf(js, "%llu:%llu", &dev, &ino) == 2 && dev == st.st_dev && ino == st.st_ino;
}

}  // namespace

bool parse_level(std::string_view text, Level* out) {
  static constexpr std::pair<std::string_view, Level> kNames[] = {{"error", Level::error},
                                                                  {"warning", Level::warning},
                                                                  {"notice", Level::notice},
                                                                  {"info", Level::info},
                                                                  {"debug", Level::debug}};
  for (const auto& [n, l] : kNames)
    if (n == text) {
      *out = l;
      return true;
    }
  return false;
}

void set_level(Level l) { g_level = int(l); }

void log_line(Level l, std::string_view msg) {
  if (int(l) > g_level.load(std::memory_order_relaxed)) return;
  static const bool journal = stderr_is_journal();
  const char* what = l == Level::error ? "error: " : l == Level::warning ? "warning: " : "";
  std::string line = journal ? fmt::format("<{}>", int(l)) : std::string();
  line += fmt::format("gaond: {}{}\n", what, msg);
  // One write per line, so lines of two threads never interleave.
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace gaond
