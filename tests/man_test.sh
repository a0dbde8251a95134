#!/usr/bin/env bash
# ctest: a generated man page renders without warnings and names every long option of its
# program's --help.   tests/man_test.sh PAGE PROGRAM
set -euo pipefail
page=$1 prog=$2
[[ -s "$page" ]] || { echo "no page: $page" >&2; exit 1; }
warnings=$(groff -man -ww -z "$page" 2>&1)
if command -v man >/dev/null; then
  warnings+=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
fi
[[ -z "$warnings" ]] || { echo "$page: warnings:" >&2; echo "$warnings" >&2; exit 1; }
# The long options --help lists (at the start of an option line), and the page's text.
mapfile -t options < <("$prog" --help | grep -oE '^ +(-[A-Za-z],)?--[A-Za-z0-9][A-Za-z0-9-]*' |
  grep -oE -- '--[A-Za-z0-9-]+' | sort -u)
((${#options[@]})) || { echo "$prog --help lists no long option" >&2; exit 1; }
text=$(sed 's/\\-/-/g; s/\\f[BIRP]//g' "$page")
missing=()
for opt in "${options[@]}"; do
  grep -qE -- "(^|[^A-Za-z0-9-])${opt}([^A-Za-z0-9-]|$)" <<<"$text" || missing+=("$opt")
done
((${#missing[@]} == 0)) || { echo "$page: missing options: ${missing[*]}" >&2; exit 1; }
echo "$page: renders cleanly, all ${#options[@]} long options of --help present"
