#!/usr/bin/env bash
# ctest: gaonctl's bash completion completes subcommands, options and a subcommand's
# options.   tests/completion_test.sh COMPLETION_FILE GAONCTL
set -euo pipefail
file=$1 gaonctl=$2
# shellcheck source=/dev/null
source "$file"
fails=0
expect() {  # "WORDS..." "EXPECTED COMPREPLY (sorted, space-separated)"
  local -a words
  read -ra words <<<"$1"
  [[ "$1" == *" " ]] && words+=("")
  COMP_WORDS=("$gaonctl" "${words[@]:1}")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  _gaonctl
  local got
  got=$(printf '%s\n' "${COMPREPLY[@]}" | sort | paste -sd' ')
  if [[ "$got" == "$2" ]]; then
    echo "ok: '$1' -> $got"
  else
    echo "FAIL: '$1': expected '$2', got '$got'" >&2
    fails=$((fails + 1))
  fi
}
# Every subcommand gaonctl --help lists, for an empty word.
all=$("$gaonctl" --help | awk '/^Subcommands:/ {s = 1; next} s && /^  [a-z]/ {print $1}' | sort | paste -sd' ')
[[ -n "$all" ]] || { echo "gaonctl --help lists no subcommand" >&2; exit 1; }
expect "gaonctl " "$all"
expect "gaonctl ty" "types"
expect "gaonctl d" "destroy detach"
expect "gaonctl --j" "--json"
expect "gaonctl --con" "--control"
expect "gaonctl --control /tmp/x.sock li" "list"
expect "gaonctl types --h" "--help"
expect "gaonctl --json types --he" "--help"
((fails == 0)) || exit 1
echo "completion: all passed"
