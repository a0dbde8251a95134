// gaond's log: one line per message on stderr, "gaond: ..." for people; when stderr is the
// journal (systemd's JOURNAL_STREAM names it), with sd-daemon priority prefixes ("<3>").
// --log-level drops what is below it.
#pragma once

#include <string>
#include <string_view>

#include <fmt/core.h>

namespace gaond {

enum class Level { error = 3, warning = 4, notice = 5, info = 6, debug = 7 };

// Parses "error", "warning", "notice", "info" or "debug".
bool parse_level(std::string_view text, Level* out);
void set_level(Level l);
void log_line(Level l, std::string_view msg);

template <typename... A>
void log(Level l, fmt::format_string<A...> f, A&&... a) {
  log_line(l, fmt::format(f, std::forward<A>(a)...));
}

}  // namespace gaond
