# shellcheck shell=bash
# Helpers for bench/run.sh: statistics, number formatting, table rows, JSON fields, dd bandwidth,
# page-cache dropping and memory cgroups (v1 or v2). Sourced, not run.

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# stats V... -> "median min max count" of the numeric arguments (others ignored; "nan nan nan 0"
# when none). The median of an even count is the mean of the two middle values.
stats() {
  printf '%s\n' "$@" | grep -E '^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$' | sort -g |
    awk '{ v[NR] = $1 }
         END { if (NR == 0) { print "nan nan nan 0"; exit }
               m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
               printf "%.9g %.9g %.9g %d\n", m, v[1], v[NR], NR }'
}

# stats_file FILE -> stats of its lines.
stats_file() {
  if [[ -s $1 ]]; then
    # shellcheck disable=SC2046
    stats $(cat "$1")
  else
    echo "nan nan nan 0"
  fi
}

# calc EXPR -> awk's value of EXPR, for operands already checked with is_num.
calc() { awk "BEGIN { printf \"%.9g\", $1 }"; }

# is_num X: true when X is a finite number.
is_num() { [[ $1 =~ ^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$ ]]; }

# div A B -> A / B, or "nan" when either is not a number or B is 0.
div() {
  if is_num "$1" && is_num "$2" && awk -v b="$2" 'BEGIN { exit !(b != 0) }'; then
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.9g", a / b }'
  else
    printf nan
  fi
}

# mul A B [C] -> product ("nan" unless all are numbers).
mul() {
  local r=1 x
  for x in "$@"; do
    is_num "$x" || { printf nan; return; }
    r=$(awk -v a="$r" -v b="$x" 'BEGIN { printf "%.9g", a * b }')
  done
  printf '%s' "$r"
}

# fmtn X -> X with about three significant digits ("—" when not a number).
fmtn() {
  is_num "${1:-}" || { printf '—'; return; }
  awk -v x="$1" 'BEGIN { a = x < 0 ? -x : x
    if (a >= 100) printf "%.0f", x; else if (a >= 10) printf "%.1f", x;
    else if (a >= 1) printf "%.2f", x; else if (a == 0) printf "0"; else printf "%.3g", x }'
}

# fmt_ratio X -> X with three decimals.
fmt_ratio() {
  is_num "${1:-}" || { printf '—'; return; }
  awk -v x="$1" 'BEGIN { printf "%.3f", x }'
}

# bytes -> "1.23 GiB" / "456 MiB".
fmt_bytes() {
  is_num "${1:-}" || { printf '—'; return; }
  awk -v b="$1" 'BEGIN { if (b >= 1073741824) printf "%.2f GiB", b / 1073741824;
                         else printf "%.0f MiB", b / 1048576 }'
}

# parse_bytes "600MiB" -> 629145600 (B, KB, MB, GB, KiB, MiB, GiB, TiB; plain numbers are bytes).
parse_bytes() {
  awk -v t="$1" 'BEGIN {
    if (!match(t, /^[0-9.]+/)) { print "nan"; exit }
    n = substr(t, 1, RLENGTH); u = toupper(substr(t, RLENGTH + 1))
    f["B"] = 1; f[""] = 1; f["KB"] = 1e3; f["MB"] = 1e6; f["GB"] = 1e9; f["TB"] = 1e12
    f["KIB"] = 1024; f["MIB"] = 1048576; f["GIB"] = 1073741824; f["TIB"] = 1099511627776
    if (!(u in f)) { print "nan"; exit }
    printf "%.0f", n * f[u] }'
}

# Markdown cell text: no pipes, no newlines, at most 600 bytes.
md() { printf '%s' "$*" | tr '\n\r\t' '   ' | sed 's/|/\\|/g; s/  */ /g' | cut -c1-600; }

# row FIGURE MEDIAN MIN MAX BOUND RATIO TARGET NOTES: appends a table row to $ROWS.
row() {
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(md "$1")" "$(md "$2")" "$(md "$3")" \
    "$(md "$4")" "$(md "$5")" "$(md "$6")" "$(md "$7")" "$(md "$8")" >>"$ROWS"
}

# fail_row FIGURE TARGET REASON: a row that says what failed; the run goes on.
fail_row() { row "$1" "FAILED" "—" "—" "—" "—" "$2" "$3"; }

# section TITLE: a bold separator row.
section() { printf '| **%s** | | | | | | | |\n' "$(md "$1")" >>"$ROWS"; }

# last_error FILE -> its last non-empty line (for failure rows).
last_error() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -n 1; }

# json_get FILE a.b.c -> the value at that path ("" when absent). jq, else python3, else awk on
# ferry's two-space-indented output (one level of nesting).
json_get() {
  local file=$1 path=$2
  if command -v jq >/dev/null 2>&1; then
    jq -r --arg p "$path" 'getpath($p | split(".")) // empty | tostring' "$file" 2>/dev/null
  elif command -v python3 >/dev/null 2>&1; then
    python3 - "$file" "$path" <<'EOF' 2>/dev/null
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else v)
EOF
  else
    local first=${path%%.*} last=${path#*.}
    if [[ $first == "$path" ]]; then
      grep -o "^  \"$first\": *[-0-9.eE+]*" "$file" | head -n 1 | sed 's/.*: *//'
    else
      awk -v a="\"$first\": {" -v b="\"$last\":" '
        index($0, a) { inside = 1; next }
        inside && /^  }/ { exit }
        inside && index($0, b) { sub(/.*: */, ""); sub(/,$/, ""); print; exit }' "$file"
    fi
  fi
}

# drop_caches: write back and drop the page cache (root). False when not allowed.
drop_caches() {
  sync
  { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null
}

# dd_read FLAGS FILE... -> "bytes seconds" summed over one `dd bs=4M` per file (FLAGS e.g.
# iflag=direct, or "-" for none). False (and the dd message on stderr) when a dd fails.
dd_read() {
  local flags=$1 f out total_b=0 total_s=0 b s
  shift
  for f in "$@"; do
    if [[ $flags == - ]]; then
      out=$(LC_ALL=C dd if="$f" of=/dev/null bs=4M 2>&1) || { echo "$out" >&2; return 1; }
    else
      out=$(LC_ALL=C dd if="$f" of=/dev/null bs=4M "$flags" 2>&1) || { echo "$out" >&2; return 1; }
    fi
    b=$(awk '/copied/ { print $1 }' <<<"$out")
    s=$(awk '/copied/ { print $(NF - 3) }' <<<"$out")
    is_num "$b" && is_num "$s" || { echo "cannot parse dd output: $out" >&2; return 1; }
    total_b=$((total_b + b))
    total_s=$(awk -v a="$total_s" -v b="$s" 'BEGIN { printf "%.9g", a + b }')
  done
  echo "$total_b $total_s"
}

# ---- memory cgroups -------------------------------------------------------------------------
# cg_detect sets CG_KIND (v1, v2 or none) and CG_ROOT.
cg_detect() {
  CG_KIND=none
  CG_ROOT=
  if [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]]; then
    CG_KIND=v1
    CG_ROOT=/sys/fs/cgroup/memory
  elif grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    CG_KIND=v2
    CG_ROOT=/sys/fs/cgroup
  fi
}

CGROUPS=()  # created and not yet removed; the EXIT trap removes them

# cg_create NAME LIMIT_BYTES: a new memory cgroup limited to LIMIT_BYTES (no swap); its path in
# CG_PATH. Not in a subshell: CGROUPS must remember it for the EXIT trap.
cg_create() {
  local path=$CG_ROOT/$1 limit=$2
  CG_PATH=
  [[ $CG_KIND != none ]] || return 1
  [[ -d $path ]] && cg_remove "$path"
  mkdir "$path" || return 1
  CGROUPS+=("$path")
  CG_PATH=$path
  if [[ $CG_KIND == v1 ]]; then
    echo "$limit" >"$path/memory.limit_in_bytes" || return 1
    if [[ -f $path/memory.memsw.limit_in_bytes ]]; then
      { echo "$limit" >"$path/memory.memsw.limit_in_bytes"; } 2>/dev/null
    fi
    { echo 0 >"$path/memory.swappiness"; } 2>/dev/null
  else
    grep -qw memory "$CG_ROOT/cgroup.subtree_control" 2>/dev/null ||
      { echo +memory >"$CG_ROOT/cgroup.subtree_control"; } 2>/dev/null
    echo "$limit" >"$path/memory.max" || return 1
    { echo 0 >"$path/memory.swap.max"; } 2>/dev/null
  fi
}

# cg_oom_kills PATH -> how many processes the cgroup's OOM killer has killed ("" if unknown).
cg_oom_kills() {
  if [[ $CG_KIND == v1 ]]; then
    awk '$1 == "oom_kill" { print $2 }' "$1/memory.oom_control" 2>/dev/null
  else
    awk '$1 == "oom_kill" { print $2 }' "$1/memory.events" 2>/dev/null
  fi
}

# cg_peak PATH -> the cgroup's peak charge in bytes, page cache included ("" if unknown).
cg_peak() {
  if [[ $CG_KIND == v1 ]]; then
    cat "$1/memory.max_usage_in_bytes" 2>/dev/null
  else
    cat "$1/memory.peak" 2>/dev/null
  fi
}

# cg_remove PATH: kills what is left in it (only processes this harness put there) and removes it.
cg_remove() {
  local path=$1 pid i keep=()
  [[ -d $path ]] || return 0
  for i in 1 2 3 4 5 6 7 8 9 10; do
    [[ -s $path/cgroup.procs ]] || break
    while read -r pid; do kill -KILL "$pid" 2>/dev/null; done <"$path/cgroup.procs"
    sleep 0.2
  done
  rmdir "$path" 2>/dev/null || log "could not remove cgroup $path"
  for i in "${CGROUPS[@]}"; do [[ $i == "$path" ]] || keep+=("$i"); done
  CGROUPS=("${keep[@]}")
}

cg_remove_all() {
  local path
  for path in "${CGROUPS[@]}"; do cg_remove "$path"; done
}
