#!/usr/bin/env bash
# scripts/plot on small TSV fixtures (tests/data/plot/): the PNG exists and is a PNG,
# gnuplot said nothing; bad input and bad arguments get one line and a non-zero exit.
# Run by ctest (Scripts.Plot); needs gnuplot (scripts/setup installs gnuplot-nox).
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
data=tests/data/plot
command -v gnuplot >/dev/null || { echo "plot_test: skipped: no gnuplot (scripts/setup installs it)"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gaon-plot-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

is_png() { [[ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" == 89504e470d0a1a0a ]]; }

# Good fixtures: the sidecar demo's two paths, the netns demo's six.
for f in demo demo-netns; do
  if ! scripts/plot "$data/$f.tsv" "$tmp/$f.png" >"$tmp/out" 2>"$tmp/err"; then
    fail "$f.tsv: exit status $?: $(cat "$tmp/err")"
    continue
  fi
  [[ -s "$tmp/err" ]] && fail "$f.tsv: printed on stderr: $(cat "$tmp/err")"
  [[ -s "$tmp/$f.png" ]] || { fail "$f.tsv: no $f.png"; continue; }
  is_png "$tmp/$f.png" || fail "$f.tsv: $f.png does not start with PNG's magic bytes"
  [[ "$(cat "$tmp/out")" == "scripts/plot: wrote $tmp/$f.png" ]] || fail "$f.tsv: said $(cat "$tmp/out")"
done
# --title, and the help.
if ! scripts/plot --title "a title" "$data/demo.tsv" "$tmp/t.png" >/dev/null 2>&1 || ! is_png "$tmp/t.png"; then
  fail "--title"
fi
scripts/plot --help | grep -q '^usage: scripts/plot' || fail "--help"

# Bad input: one line on stderr naming the file, exit status 1, no PNG left behind.
printf 'nothing\there\n' >"$tmp/header.tsv"
: >"$tmp/empty.tsv"
printf 'hit\tpath\tcpu_us\tp99_us\n' >"$tmp/norows.tsv"
printf 'hit\tpath\tcpu_us\tp99_us\n1.5\tx\t1\t2\n' >"$tmp/hit.tsv"
printf 'hit\tpath\tcpu_us\tp99_us\n0.5\tx\t1\n' >"$tmp/fields.tsv"
check_bad() {  # file, expected status, text the message must contain
  local st=0
  scripts/plot "$1" "$tmp/bad.png" >"$tmp/out" 2>"$tmp/err" || st=$?
  ((st == $2)) || fail "$1: exit status $st, wanted $2"
  [[ "$(wc -l <"$tmp/err")" == 1 ]] || fail "$1: not one line on stderr: $(cat "$tmp/err")"
  grep -qF -- "$3" "$tmp/err" || fail "$1: the message lacks '$3': $(cat "$tmp/err")"
  [[ ! -e "$tmp/bad.png" ]] || fail "$1: left a PNG behind"
  rm -f "$tmp/bad.png"
}
check_bad "$data/bad-no-p99.tsv" 1 "lacks the column(s) p99_us"
check_bad "$data/bad-number.tsv" 1 "cpu_us is not a number: 'lots'"
check_bad "$tmp/header.tsv" 1 "lacks the column(s) hit, path, cpu_us, p99_us"
check_bad "$tmp/empty.tsv" 1 "no header line"
check_bad "$tmp/norows.tsv" 1 "no rows below the header"
check_bad "$tmp/hit.tsv" 1 "hit must be a fraction"
check_bad "$tmp/fields.tsv" 1 "3 fields, the header has 4"
check_bad "$tmp/nonexistent.tsv" 1 "cannot read it"

# Bad arguments: exit status 2, one line.
for args in "" "$data/demo.tsv" "$data/demo.tsv $tmp/x.jpg" "--bogus $data/demo.tsv $tmp/x.png"; do
  st=0
  # shellcheck disable=SC2086
  scripts/plot $args >"$tmp/out" 2>"$tmp/err" || st=$?
  ((st == 2)) || fail "scripts/plot $args: exit status $st, wanted 2"
  [[ "$(wc -l <"$tmp/err")" == 1 ]] || fail "scripts/plot $args: not one line: $(cat "$tmp/err")"
done

# The demos take --plot and check it before measuring anything (the netns one before it
# needs root or the testbed: nothing here touches the testbed).
for demo in scripts/demo scripts/demo-netns; do
  st=0
  "$demo" --plot "$tmp/x.jpg" >"$tmp/out" 2>"$tmp/err" || st=$?
  ((st == 2)) || fail "$demo --plot x.jpg: exit status $st, wanted 2"
  grep -q -- "--plot FILE.png" "$tmp/err" || fail "$demo --plot x.jpg: $(cat "$tmp/err")"
  "$demo" --help | grep -q -- "--plot FILE.png" || fail "$demo --help does not show --plot"
done

((failures == 0)) || { echo "plot_test: $failures failure(s)" >&2; exit 1; }
echo "plot_test: all passed"
