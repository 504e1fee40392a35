#!/usr/bin/env bash
# Runs every benchmark of ferry and writes one Markdown table (bench/README.md says what each row
# means and how it is measured).
#
#   bash bench/run.sh [--quick|--full] [--build DIR] [--out FILE] [--runs N] [--rev REV]
#
#   --quick      the 1.5 GB reference model, small micro-benchmarks (default; ~10 minutes)
#   --full       the 6 GB TinyLlama-dimension reference model of shared/BENCHMARKING.md
#   --build DIR  build directory (default build-bench; configured Release with benchmarks on)
#   --out FILE   the table (default bench/results.md); also printed
#   --runs N     runs per figure (default 3; fewer than 3 is allowed but flagged in the table)
#   --rev REV    benchmark a committed revision instead of the working tree: REV's files are
#                exported (git archive) to DIR/src and built in DIR/out (default DIR
#                build-bench-rev) — for when the working tree is mid-edit and does not build
#
# Environment:
#   FERRY_RUN_FLAGS="--threads 2 --no-prefetch"  extra `ferry run` flags for every scenario
#   FERRY_COMPARE_FLAGS="--no-prefetch"          run each `ferry run` scenario without and with
#                                                these flags (interleaved); the table shows both
#   FERRY_SIM_GPUS=1:8GiB                        adds scenario (d): simulated GPU 0 + CPU + disk
#   FERRY_SIM_MAX_MEMORY="0=600MiB,cpu=600MiB"   its budgets (default 0 = 50 %, cpu = 30 % of
#                                                the model, rest on disk)
# Flags that `ferry run --help` does not list are skipped with a note in the table.
#
# Needs root for dropping the page cache and for memory cgroups (v1 or v2); without, those rows
# say so. A failing scenario becomes a row saying why; the run goes on. Ctrl-C removes the
# cgroups and temporary files.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=bench/lib/common.sh
source "$HERE/lib/common.sh"

MODE=quick
BUILD=
OUT=$ROOT/bench/results.md
RUNS=3
REV=
usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --quick) MODE=quick ;;
    --full) MODE=full ;;
    --build) BUILD=${2:?--build needs a directory}; shift ;;
    --out) OUT=${2:?--out needs a file}; shift ;;
    --runs) RUNS=${2:?--runs needs a number}; shift ;;
    --rev) REV=${2:?--rev needs a revision}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench/run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "bench/run.sh: --runs must be a positive integer" >&2; exit 2; }
cd "$ROOT" || exit 1
[[ -n $BUILD ]] || BUILD=$([[ -n $REV ]] && echo build-bench-rev || echo build-bench)
mkdir -p "$BUILD" && BUILD=$(cd "$BUILD" && pwd)
[[ $OUT == /* ]] || OUT=$ROOT/$OUT

# ---- temporary state and cleanup ------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench.XXXXXX")
ROWS=$TMP/rows.md
NOTES=$TMP/notes.md
: >"$ROWS"
: >"$NOTES"
LOGS=$BUILD/bench-logs  # raw output of the last run, kept for reading (not temporary)
rm -rf "$LOGS" && mkdir -p "$LOGS"
CHILD=
# run_child OUT ERR COMMAND...: runs COMMAND in the background and waits, so that Ctrl-C reaches
# the trap at once; cleanup stops the child by its id.
run_child() {
  local out=$1 err=$2 rc
  shift 2
  "$@" >"$out" 2>"$err" &
  CHILD=$!
  wait "$CHILD"
  rc=$?
  CHILD=
  return $rc
}
SAMPLER=
cleanup() {
  trap - EXIT INT TERM
  [[ -z $SAMPLER ]] || kill "$SAMPLER" 2>/dev/null
  if [[ -n $CHILD ]]; then
    kill -TERM "$CHILD" 2>/dev/null
    wait "$CHILD" 2>/dev/null
  fi
  cg_remove_all
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'log "interrupted: cleaning up"; exit 130' INT TERM
export TMPDIR=$TMP  # anything that asks for a temporary directory gets one we remove
note() { printf -- '- %s\n' "$*" >>"$NOTES"; log "note: $*"; }
START_S=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# Who else uses the CPUs: a sample every 10 s in $LOGS/load.log (the machine is shared).
if command -v top >/dev/null 2>&1; then
  (sleeper=
   trap '[[ -z $sleeper ]] || kill "$sleeper" 2>/dev/null; exit 0' TERM
   while :; do
     { echo "== $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg)"
       top -b -n 1 -o %CPU 2>/dev/null | sed -n 8,11p; } >>"$LOGS/load.log"
     sleep 10 &
     sleeper=$!
     wait "$sleeper"
   done) &
  SAMPLER=$!
fi

# ---- mode ------------------------------------------------------------------------------------
if [[ $MODE == quick ]]; then
  MODEL_NAME=ref-1.5GB
  MODEL_ARGS=(--arch llama --hidden 1024 --layers 24 --heads 16 --kv-heads 16 --intermediate 2816)
  LOAD_MIB=256; LOAD_SHARD_MIB=64; P3_ROUNDS=3; RUN_TIMEOUT=600
else
  MODEL_NAME=ref-6GB
  MODEL_ARGS=(--arch llama --hidden 2048 --layers 31 --heads 32 --kv-heads 4 --intermediate 5632)
  LOAD_MIB=1024; LOAD_SHARD_MIB=256; P3_ROUNDS=7; RUN_TIMEOUT=1800
fi
MODEL_ARGS+=(--dtype float32 --seed 0 --max-shard-size 1GB)
VOCAB=32000
((RUNS >= 3)) || note "only $RUNS run(s) per figure: BENCHMARKING.md asks for at least 3"

# ---- build -----------------------------------------------------------------------------------
SRC=$ROOT
BIN=$BUILD
BUILD_NOTE=
if [[ -n $REV ]]; then
  SHA=$(git rev-parse --verify "$REV^{commit}") || { echo "bench/run.sh: unknown revision $REV" >&2; exit 2; }
  SRC=$BUILD/src
  BIN=$BUILD/out
  log "exporting $REV ($SHA) to $SRC"
  rm -rf "$TMP/export" && mkdir -p "$TMP/export" "$SRC"
  git archive "$SHA" | tar -x -C "$TMP/export"
  # Copy only files that changed, with fresh times, so ninja rebuilds exactly what differs.
  (cd "$TMP/export" && find . -type f) | while read -r f; do
    cmp -s "$TMP/export/$f" "$SRC/$f" || { mkdir -p "$(dirname "$SRC/$f")" && cp "$TMP/export/$f" "$SRC/$f"; }
  done
  (cd "$SRC" && find . -type f) | while read -r f; do [[ -e $TMP/export/$f ]] || rm -f "$SRC/$f"; done
  rm -rf "$TMP/export"
  BUILD_NOTE="revision $(git rev-parse --short "$SHA") (exported; the working tree is not used)"
else
  BUILD_NOTE="working tree at $(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
fi
build() {
  if [[ ! -f $BIN/CMakeCache.txt ]] || ! grep -q '^FERRY_BUILD_BENCH:BOOL=ON' "$BIN/CMakeCache.txt"; then
    log "configuring $BIN (Release, benchmarks on)"
    cmake -S "$SRC" -B "$BIN" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFERRY_BUILD_BENCH=ON \
      -DFERRY_BUILD_TESTS=OFF >"$LOGS/configure.log" 2>&1 || return 1
  fi
  local targets
  targets=$(cmake --build "$BIN" --target help 2>/dev/null | grep -oE '^(ferry_cli|bench_[a-z0-9_]+)' | sort -u)
  [[ -n $targets ]] || targets="ferry_cli bench_meta_init bench_plan bench_load bench_dispatch_overhead"
  log "building $(tr '\n' ' ' <<<"$targets")in $BIN (the first build takes ~10 minutes on 2 cores)"
  # shellcheck disable=SC2086
  cmake --build "$BIN" --target $targets >"$LOGS/build.log" 2>&1
}
if ! build; then
  err=$(grep -m1 -E 'error|FAILED' "$LOGS/build.log" "$LOGS/configure.log" 2>/dev/null | cut -c1-240)
  if [[ -x $BIN/ferry ]]; then
    BUILD_NOTE+="; BUILD FAILED, using the binaries left from an earlier build ($err)"
    note "build failed ($err): figures come from the binaries of an earlier build; see $LOGS/build.log, or use --rev HEAD"
  else
    BUILD_NOTE+="; BUILD FAILED ($err)"
    note "build failed and no earlier binaries: see $LOGS/build.log (try --rev HEAD)"
  fi
fi
BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BIN/CMakeCache.txt" 2>/dev/null)
[[ $BUILD_TYPE == Release ]] || note "build type is '$BUILD_TYPE', not Release"
FERRY=$BIN/ferry

# ---- machine ---------------------------------------------------------------------------------
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
CORES=$(nproc)
MEM_GIB=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
BLAS=$( (ldd "$FERRY" 2>/dev/null | grep -oE 'lib[a-z]*blas[^ ]*' | head -n 1;
        readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu 2>/dev/null) | tr '\n' ' ')
DISK=$(df --output=source,fstype "$BUILD" 2>/dev/null | tail -n 1 | tr -s ' ')
cg_detect
[[ $(id -u) == 0 ]] || note "not root: the page cache cannot be dropped and no memory cgroup can be made"
SIM_GPUS=${FERRY_SIM_GPUS:-}
unset FERRY_SIM_GPUS  # only scenario (d) simulates GPUs

# ---- ferry run flags -------------------------------------------------------------------------
RUN_HELP=$("$FERRY" run --help 2>/dev/null)
# supported_flags "FLAGS" -> the flags `ferry run --help` lists (values kept with their flag);
# the others are noted and dropped.
supported_flags() {
  local words w name keep=() skip_value=0
  read -ra words <<<"$1"
  for w in "${words[@]}"; do
    if [[ $w == --* ]]; then
      name=${w%%=*}
      if grep -qE -- "(^|[ ,])$name([ =]|\$)" <<<"$RUN_HELP"; then
        keep+=("$w"); skip_value=0
      else
        note "\`ferry run --help\` does not list $name: skipped"
        skip_value=1
      fi
    elif ((skip_value)); then
      skip_value=0
    else
      keep+=("$w")
    fi
  done
  echo "${keep[*]}"
}
RUN_FLAGS=$(supported_flags "${FERRY_RUN_FLAGS:-}")
VARIANTS=("$RUN_FLAGS")
VARIANT_LABELS=("")
if [[ -n ${FERRY_COMPARE_FLAGS:-} ]]; then
  cmp_flags=$(supported_flags "$FERRY_COMPARE_FLAGS")
  if [[ -n $cmp_flags ]]; then
    VARIANTS+=("${RUN_FLAGS:+$RUN_FLAGS }$cmp_flags")
    VARIANT_LABELS+=("with \`$cmp_flags\`")
  else
    note "FERRY_COMPARE_FLAGS='$FERRY_COMPARE_FLAGS': no flag is supported, no comparison"
  fi
fi
THREADS=$(grep -oE -- '--threads[ =][0-9]+' <<<"$RUN_FLAGS" | grep -oE '[0-9]+$')
if [[ -z $THREADS ]]; then
  if grep -q -- '--threads' <<<"$RUN_HELP"; then THREADS="ferry run's default"
  else THREADS="LibTorch's default (1 here; \`ferry run\` has no --threads yet)"; fi
fi
DTYPE=$(grep -oE -- '--dtype[ =][a-z0-9]+' <<<"$RUN_FLAGS" | grep -oE '[a-z0-9]+$')
DTYPE=${DTYPE:-float32 (as stored)}

# ---- the models --------------------------------------------------------------------------------
# make_model NAME PAD ARGS...: a cached checkpoint folder $BUILD/bench-models/NAME, remade when
# the arguments or make-model's source change. PAD: grow the vocabulary to $VOCAB (pad_vocab.py).
MODELS=$BUILD/bench-models
make_model() {
  local name=$1 pad=$2 dir stamp
  shift 2
  dir=$MODELS/$name
  stamp="$* pad=$pad vocab=$VOCAB no-tokenizer $(cat "$SRC/src/models/make_model.cpp" "$HERE/lib/pad_vocab.py" | cksum)"
  if [[ -f $dir/.bench-stamp && $(cat "$dir/.bench-stamp") == "$stamp" ]]; then
    echo "$dir"; return 0
  fi
  log "making model $name: ferry make-model $*"
  rm -rf "$dir" "$dir.partial" && mkdir -p "$MODELS"
  "$FERRY" make-model "$@" --out "$dir.partial" >"$LOGS/make-$name.log" 2>&1 || return 1
  if [[ $pad == yes ]]; then
    python3 "$HERE/lib/pad_vocab.py" "$dir.partial" "$VOCAB" rope_theta=10000 \
      >>"$LOGS/make-$name.log" 2>&1 || return 1
  fi
  # No tokenizer: --prompt-ids needs none, and `ferry run --json` fails ("invalid UTF-8 byte",
  # nlohmann type_error 316) when the generated ids decode to a partial UTF-8 sequence.
  rm -f "$dir.partial/tokenizer.json" "$dir.partial/tokenizer_config.json"
  echo "$stamp" >"$dir.partial/.bench-stamp"
  mv "$dir.partial" "$dir" && echo "$dir"
}
PAD=yes
if ! command -v python3 >/dev/null 2>&1; then
  PAD=no
  note "python3 missing: the models keep make-model's vocabulary (512) instead of $VOCAB"
fi
MODEL=$(make_model "$MODEL_NAME" "$PAD" "${MODEL_ARGS[@]}")
TINY=$(make_model tiny no --arch llama --dtype float32 --seed 0)
SHARDS=()
if [[ -d $MODEL ]]; then
  mapfile -t SHARDS < <(ls "$MODEL"/*.safetensors 2>/dev/null)
  MODEL_BYTES=$(json_get "$MODEL/model.safetensors.index.json" metadata.total_size)
  is_num "$MODEL_BYTES" || MODEL_BYTES=$(cat "${SHARDS[@]}" | wc -c)
  FILE_BYTES=$(cat "${SHARDS[@]}" | wc -c)
  MODEL_DESC="$(json_get "$MODEL/config.json" model_type): hidden $(json_get "$MODEL/config.json" hidden_size), $(json_get "$MODEL/config.json" num_hidden_layers) layers, $(json_get "$MODEL/config.json" num_attention_heads) heads ($(json_get "$MODEL/config.json" num_key_value_heads) kv), intermediate $(json_get "$MODEL/config.json" intermediate_size), vocab $(json_get "$MODEL/config.json" vocab_size), $(json_get "$MODEL/config.json" torch_dtype), $(fmt_bytes "$MODEL_BYTES") of weights in ${#SHARDS[@]} safetensors files"
else
  MODEL=
  MODEL_BYTES=
  MODEL_DESC="could not be made: $(last_error "$LOGS/make-$MODEL_NAME.log")"
  note "model $MODEL_NAME could not be made: $(last_error "$LOGS/make-$MODEL_NAME.log")"
fi
[[ -d $TINY ]] || TINY=

# ===============================================================================================
# 1. Bounds measured in this run
# ===============================================================================================
section "Bounds measured in this run"
BW_DIRECT=; BW_COLD=; BW_WARM=; BW_MEMCPY=
bound_rows() {
  local r out direct=() buffered=() warm=() zero=() memcpy=() err=$TMP/dd.err s
  if [[ -z $MODEL ]]; then
    fail_row "disk bounds" "" "no model to read"; return
  fi
  if ! drop_caches; then
    note "cannot drop the page cache (not root?): the 'cold' figures are not cold"
  fi
  for ((r = 0; r < RUNS; r++)); do
    log "bounds: run $((r + 1))/$RUNS"
    drop_caches
    out=$(dd_read iflag=direct "${SHARDS[@]}" 2>"$err") && direct+=("$(div "${out% *}" "${out#* }")")
    drop_caches
    out=$(dd_read - "${SHARDS[@]}" 2>>"$err") && buffered+=("$(div "${out% *}" "${out#* }")")
    out=$(dd_read - "${SHARDS[@]}" 2>>"$err") && warm+=("$(div "${out% *}" "${out#* }")")
    out=$(LC_ALL=C dd if=/dev/zero of=/dev/null bs=1M count=8192 2>&1) &&
      zero+=("$(div "$(awk '/copied/ { print $1 }' <<<"$out")" "$(awk '/copied/ { print $(NF - 3) }' <<<"$out")")")
    if command -v python3 >/dev/null 2>&1; then
      memcpy+=("$(python3 - <<'EOF'
import time
n = 1 << 30
src = bytearray(b"\x5a") * n   # filled: every page touched
dst = bytearray(b"\x01") * n
view = memoryview(dst)
view[:] = src                  # warm-up copy
t = time.perf_counter()
view[:] = src                  # one memcpy of 1 GiB (CPython copies contiguous buffers with memcpy)
print(n / (time.perf_counter() - t))
EOF
)")
    fi
  done
  local what="$(fmt_bytes "$FILE_BYTES") in ${#SHARDS[@]} file(s) of the model, one dd bs=4M each"
  s=($(stats "${direct[@]}"))
  if ((s[3] > 0)); then
    BW_DIRECT=${s[2]}  # P4's bound: the fastest dd run (a single stream is noisy here; the fastest is the tightest bound)
    row "disk, cold, O_DIRECT (GB/s)" "$(fmtn "$(div "${s[0]}" 1e9)")" "$(fmtn "$(div "${s[1]}" 1e9)")" \
      "$(fmtn "$(div "${s[2]}" 1e9)")" "—" "—" "bound for P4" "drop_caches, then dd iflag=direct; $what"
  else
    fail_row "disk, cold, O_DIRECT (GB/s)" "bound for P4" "$(last_error "$err")"
  fi
  s=($(stats "${buffered[@]}"))
  if ((s[3] > 0)); then
    BW_COLD=${s[0]}
    row "disk, cold, buffered (GB/s)" "$(fmtn "$(div "${s[0]}" 1e9)")" "$(fmtn "$(div "${s[1]}" 1e9)")" \
      "$(fmtn "$(div "${s[2]}" 1e9)")" "—" "—" "bound for P7" "drop_caches, then dd; $what"
  else
    fail_row "disk, cold, buffered (GB/s)" "bound for P7" "$(last_error "$err")"
  fi
  s=($(stats "${warm[@]}"))
  if ((s[3] > 0)); then
    BW_WARM=${s[0]}
    row "page cache, warm (GB/s)" "$(fmtn "$(div "${s[0]}" 1e9)")" "$(fmtn "$(div "${s[1]}" 1e9)")" \
      "$(fmtn "$(div "${s[2]}" 1e9)")" "—" "—" "" "the same dd again right after; $what"
  else
    fail_row "page cache, warm (GB/s)" "" "$(last_error "$err")"
  fi
  s=($(stats "${memcpy[@]}"))
  if ((s[3] > 0)); then
    BW_MEMCPY=${s[0]}
    row "memcpy, one thread (GB/s)" "$(fmtn "$(div "${s[0]}" 1e9)")" "$(fmtn "$(div "${s[1]}" 1e9)")" \
      "$(fmtn "$(div "${s[2]}" 1e9)")" "—" "—" "" "python3: memoryview copy of a 1 GiB bytearray into another (one memcpy; pages touched beforehand)"
  else
    row "memcpy, one thread (GB/s)" "not measured" "—" "—" "—" "—" "" "needs python3 (no C++ added for it)"
  fi
  s=($(stats "${zero[@]}"))
  if ((s[3] > 0)); then
    [[ -n $BW_MEMCPY ]] || BW_MEMCPY=${s[0]}
    row "dd /dev/zero → /dev/null (GB/s)" "$(fmtn "$(div "${s[0]}" 1e9)")" "$(fmtn "$(div "${s[1]}" 1e9)")" \
      "$(fmtn "$(div "${s[2]}" 1e9)")" "—" "—" "" "bs=1M count=8192: a memset into a cache-resident buffer; rough upper bound, not memcpy"
  fi
}
bound_rows

# ===============================================================================================
# 2. Micro-benchmarks in bench/ (P1, P2, P3, P7)
# ===============================================================================================
section "Micro-benchmarks (bench/)"
# run_bench NAME ARGS...: runs $BIN/bench/NAME, output in $LOGS/NAME.N.log; false on failure.
BENCH_N=0
run_bench() {
  local name=$1 exe=$BIN/bench/$1
  shift
  BENCH_N=$((BENCH_N + 1))
  BENCH_LOG=$LOGS/$name.$BENCH_N.log
  if [[ ! -x $exe ]]; then echo "not built ($exe)" >"$BENCH_LOG"; return 1; fi
  run_child "$BENCH_LOG" "$BENCH_LOG.err" timeout "$RUN_TIMEOUT" "$exe" "$@"
  local rc=$?
  cat "$BENCH_LOG.err" >>"$BENCH_LOG" && rm -f "$BENCH_LOG.err"
  ((rc == 0)) || echo "exit status $rc" >>"$BENCH_LOG"
  return $rc
}

# P1: bench_meta_init prints median/min/max of its own runs.
log "P1: bench_meta_init $RUNS"
if run_bench bench_meta_init "$RUNS"; then
  read -r m mn mx <<<"$(awk '/^build time/ { print $4, $7, $9 }' "$BENCH_LOG")"
  row "P1 build 1000 × Linear(10000, 10000) on meta (ms)" "$(fmtn "$m")" "$(fmtn "$mn")" "$(fmtn "$mx")" \
    "—" "$(fmt_ratio "$(div "$m" 100)") of target" "≤ 100 ms" "bench_meta_init $RUNS (in one process)"
  read -r m mn mx <<<"$(awk '/^RSS growth/ { print $4, $7, $9 }' "$BENCH_LOG")"
  row "P1 RSS growth of that build (MiB)" "$(fmtn "$m")" "$(fmtn "$mn")" "$(fmtn "$mx")" \
    "—" "$(fmt_ratio "$(div "$m" 64)") of target" "≤ 64 MiB" "bench_meta_init"
else
  fail_row "P1 build on meta" "≤ 100 ms, ≤ 64 MiB" "$(last_error "$BENCH_LOG")"
fi

# P1/P2: bench_plan prints one measurement per process: run it RUNS times.
log "P1/P2: bench_plan × $RUNS"
p1=(); p2=(); moe=(); plan_err=
for ((r = 0; r < RUNS; r++)); do
  if run_bench bench_plan; then
    l=$(grep '^1000 x Linear' "$BENCH_LOG")
    b=$(grep -oE 'build [0-9.]+ ms' <<<"$l" | grep -oE '[0-9.]+')
    t=$(grep -oE 'sizes \+ map total [0-9.]+' <<<"$l" | grep -oE '[0-9.]+$')
    is_num "$b" && is_num "$t" && p1+=("$(calc "$b + $t")")
    p2+=("$(grep '^70B' "$BENCH_LOG" | grep -oE 'in [0-9.]+ ms' | grep -oE '[0-9.]+')")
    moe+=("$(grep '^MoE' "$BENCH_LOG" | grep -oE 'in [0-9.]+ ms' | grep -oE '[0-9.]+')")
  else
    plan_err=$(last_error "$BENCH_LOG")
  fi
done
s=($(stats "${p1[@]}"))
if ((s[3] > 0)); then
  row "P1 build on meta + tree + sizes + auto map, 100B params (ms)" "$(fmtn "${s[0]}")" "$(fmtn "${s[1]}")" \
    "$(fmtn "${s[2]}")" "—" "$(fmt_ratio "$(div "${s[0]}" 100)") of target" "≤ 100 ms" "bench_plan, ${s[3]} processes"
else
  fail_row "P1 build + sizes + auto map" "≤ 100 ms" "${plan_err:-no figure in bench_plan output}"
fi
s=($(stats "${p2[@]}")); q=($(stats "${moe[@]}"))
if ((s[3] > 0)); then
  row "P2 plan a 70B Llama from headers (ms)" "$(fmtn "${s[0]}")" "$(fmtn "${s[1]}")" "$(fmtn "${s[2]}")" \
    "—" "$(fmt_ratio "$(div "${s[0]}" 200)") of target" "≤ 200 ms" \
    "tree + balanced budgets + auto map; 175,000-tensor MoE headers: median $(fmtn "${q[0]}") ms"
else
  fail_row "P2 plan a 70B Llama from headers" "≤ 200 ms" "${plan_err:-no figure in bench_plan output}"
fi

# Start-up (issue 13): whole `ferry` processes that compute nothing must not load the tensor
# engine. `ferry plan` on the 70B headers written as a sparse file (two simulated 40 GiB GPUs and
# a 64 GiB CPU), and `ferry --help`; wall time from date(1), peak RSS from /usr/bin/time.
log "start-up: ferry plan on 70B headers, ferry --help × $RUNS"
headers70b=$TMP/headers-70b
if run_bench bench_plan --write-headers "$headers70b"; then
  t_plan=(); t_help=(); rss_plan=()
  for ((r = 0; r < RUNS; r++)); do
    a=$(date +%s%N)
    FERRY_SIM_GPUS=2:40GiB "$FERRY" plan "$headers70b" --max-memory 0=40GiB,1=40GiB,cpu=64GiB \
      >"$LOGS/startup-plan.log" 2>&1 || { t_plan=(); break; }
    b=$(date +%s%N)
    t_plan+=("$(calc "($b - $a) / 1e6")")
    a=$(date +%s%N); "$FERRY" --help >/dev/null 2>&1; b=$(date +%s%N)
    t_help+=("$(calc "($b - $a) / 1e6")")
    if [[ -x /usr/bin/time ]]; then
      m=$(FERRY_SIM_GPUS=2:40GiB /usr/bin/time -f %M "$FERRY" plan "$headers70b" \
        --max-memory 0=40GiB,1=40GiB,cpu=64GiB 2>&1 >/dev/null | tail -1)
      is_num "$m" && rss_plan+=("$(calc "$m / 1024")")
    fi
  done
  s=($(stats "${t_plan[@]}")); q=($(stats "${t_help[@]}")); m=($(stats "${rss_plan[@]}"))
  if ((s[3] > 0)); then
    row "Start-up: whole \`ferry plan\` on 70B headers (ms)" "$(fmtn "${s[0]}")" "$(fmtn "${s[1]}")" \
      "$(fmtn "${s[2]}")" "—" "$(fmt_ratio "$(div "${s[0]}" 50)") of target" "≤ 50 ms" \
      "${s[3]} processes; \`ferry --help\`: median $(fmtn "${q[0]}") ms; peak RSS of plan: $( ((m[3] > 0)) && echo "$(fmtn "${m[0]}") MiB" || echo "not measured")"
  else
    fail_row "Start-up: ferry plan on 70B headers" "≤ 50 ms" "$(tail -1 "$LOGS/startup-plan.log")"
  fi
else
  fail_row "Start-up: ferry plan on 70B headers" "≤ 50 ms" "$(last_error "$BENCH_LOG")"
fi

# P3: bench_dispatch_overhead, RUNS processes of P3_ROUNDS rounds each.
log "P3: bench_dispatch_overhead $P3_ROUNDS × $RUNS"
hooked=(); plain=(); ratios=(); p3_err=; p3_desc=
for ((r = 0; r < RUNS; r++)); do
  if run_bench bench_dispatch_overhead "$P3_ROUNDS"; then
    plain+=("$(awk '/without hooks/ { print $4 }' "$BENCH_LOG")")
    hooked+=("$(awk '/dispatched/ { print $3 }' "$BENCH_LOG")")
    ratios+=("$(awk '/overhead ratio/ { print $3 }' "$BENCH_LOG")")
    p3_desc=$(head -n 1 "$BENCH_LOG")
  else
    p3_err=$(last_error "$BENCH_LOG")
  fi
done
s=($(stats "${hooked[@]}")); b=($(stats "${plain[@]}")); q=($(stats "${ratios[@]}"))
if ((s[3] > 0)); then
  row "P3 dispatch overhead, all weights resident (ms/forward, dispatched)" "$(fmtn "${s[0]}")" "$(fmtn "${s[1]}")" \
    "$(fmtn "${s[2]}")" "$(fmtn "${b[0]}") ms without hooks" "$(fmt_ratio "${q[0]}")" "≤ 1.03" \
    "ratio = median of per-process ratios (min $(fmt_ratio "${q[1]}"), max $(fmt_ratio "${q[2]}")); ${p3_desc#P3: }"
else
  fail_row "P3 dispatch overhead" "≤ 1.03" "${p3_err:-no figure in output}"
fi

# P7: bench_load, RUNS processes of one run each (its output has medians only).
log "P7: bench_load ${LOAD_MIB} MiB × $RUNS"
load=(); dd16=(); lratio=(); openw=(); openc=(); p7_err=
for ((r = 0; r < RUNS; r++)); do
  if run_bench bench_load --size-mib "$LOAD_MIB" --shard-mib "$LOAD_SHARD_MIB" --runs 1 --dir "$TMP/load"; then
    dd16+=("$(awk '/dd bs=16M/ { print $3 }' "$BENCH_LOG")")
    load+=("$(awk '/ferry load \(copy\)/ { print $4 }' "$BENCH_LOG")")
    lratio+=("$(awk '/ratio ferry \/ dd/ { print $5 }' "$BENCH_LOG")")
    openw+=("$(awk '/warm page cache/ { print $4 }' "$BENCH_LOG")")
    openc+=("$(awk -v s="$LOAD_MIB" '$1 == s && /checkpoint/ && !/warm/ { print $4; exit }' "$BENCH_LOG")")
  else
    p7_err=$(last_error "$BENCH_LOG")
  fi
  rm -rf "$TMP/load"
done
s=($(stats "${load[@]}")); b=($(stats "${dd16[@]}")); q=($(stats "${lratio[@]}"))
if ((s[3] > 0)); then
  row "P7 checkpoint load to CPU, cold, with copy (s)" "$(fmtn "${s[0]}")" "$(fmtn "${s[1]}")" "$(fmtn "${s[2]}")" \
    "$(fmtn "${b[0]}") s dd bs=16M, cold" "$(fmt_ratio "${q[0]}")" "≤ 1.1 × dd" \
    "$LOAD_MIB MiB in $LOAD_SHARD_MIB MiB shards (F16), page cache dropped per file (fadvise); ratio = median of per-process ratios (min $(fmt_ratio "${q[1]}"), max $(fmt_ratio "${q[2]}"))"
  s=($(stats "${openw[@]}")); q=($(stats "${openc[@]}"))
  row "P7 open + zero-copy view of every tensor, warm (ms)" "$(fmtn "${s[0]}")" "$(fmtn "${s[1]}")" "$(fmtn "${s[2]}")" \
    "—" "—" "≈ 0 with mmap warm" "$LOAD_MIB MiB checkpoint; cold: median $(fmtn "${q[0]}") ms"
else
  fail_row "P7 checkpoint load to CPU" "≤ 1.1 × dd" "${p7_err:-no figure in output}"
fi

# ===============================================================================================
# 3. The reference workload through `ferry run`
# ===============================================================================================
section "Reference workload: ferry run, 128-token prompt, 17 new tokens (1 prefill + 16 decode)"
PROMPT_IDS=$(awk 'BEGIN { for (i = 0; i < 128; i++) printf "%s%d", i ? "," : "", (i * 37 + 11) % 450 + 1 }')
BUDGET=; CG_LIMIT=
if is_num "$MODEL_BYTES"; then
  BUDGET=$(awk -v b="$MODEL_BYTES" 'BEGIN { printf "%.0f", b * 0.4 }')
  CG_LIMIT=$(awk -v b="$BUDGET" 'BEGIN { printf "%.0f", b + 512 * 1048576 }')
fi
[[ $CG_KIND != none ]] || note "no memory cgroup (v1 /sys/fs/cgroup/memory or v2 memory.max): scenario (b) is not RAM-limited"

# warm_model: read every shard once so the page cache holds the model.
warm_model() { [[ -n $MODEL ]] && cat "${SHARDS[@]}" >/dev/null; }

# ferry_once KEY VARIANT COLD(yes/no) CGROUP(yes/no) MODEL ENV -- ARGS...: one `ferry run`; appends
# its figures to $TMP/res/KEY.VARIANT.{load,prefill,decode,rss,disk,cpu,gpu,cgpeak} and its fate
# ("ok", "killed: ...", "failed: ...") to .status.
RUN_N=0
ferry_once() {
  local key=$1 v=$2 cold=$3 use_cg=$4 model=$5 envs=$6
  shift 7
  local base=$TMP/res/$key.$v cg='' rc kills='' status json err
  local -a cmd
  RUN_N=$((RUN_N + 1))
  json=$LOGS/run-$key-v$v-$RUN_N.json
  err=$LOGS/run-$key-v$v-$RUN_N.err
  mkdir -p "$TMP/res" "$TMP/offload"
  cmd=(env $envs timeout "$RUN_TIMEOUT" "$FERRY" run "$model" --prompt-ids "$PROMPT_IDS" --max-new-tokens 17
       --ignore-eos --json --no-progress --offload-folder "$TMP/offload/$RUN_N" "$@" ${VARIANTS[$v]})
  echo "${cmd[*]}" | sed "s|$PROMPT_IDS|<128 ids>|" >"$base.cmd"
  [[ $cold == yes ]] && { drop_caches || true; }
  if [[ $use_cg == yes && $CG_KIND != none ]]; then
    if ! cg_create "ferry-bench-$$" "$CG_LIMIT"; then
      echo "failed: cannot create a memory cgroup ($CG_ROOT)" >>"$base.status"; return
    fi
    cg=$CG_PATH
    run_child "$json" "$err" bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' _ "$cg" "${cmd[@]}"
    rc=$?
    kills=$(cg_oom_kills "$cg")
    cg_peak "$cg" >>"$base.cgpeak"
    cg_remove "$cg"
  else
    run_child "$json" "$err" "${cmd[@]}"
    rc=$?
  fi
  rm -rf "$TMP/offload/$RUN_N"
  if [[ -n $cg ]] && { [[ ${kills:-0} -gt 0 ]] || ((rc == 137)); }; then
    status="killed: memory promise broken (OOM in the $(fmt_bytes "$CG_LIMIT") cgroup, exit $rc)"
  elif ((rc == 124)); then
    status="failed: timed out after $RUN_TIMEOUT s"
  elif ((rc != 0)); then
    status="failed: exit $rc: $(last_error "$err")"
  else
    local tps
    tps=$(json_get "$json" tokens_per_second)
    if ! is_num "$tps" || [[ $(div 1 "$tps") == nan ]]; then
      status="failed: no tokens_per_second in the JSON ($(last_error "$err"))"
    else
      status=ok
      json_get "$json" load_seconds >>"$base.load"
      json_get "$json" first_token_seconds >>"$base.prefill"
      div 1000 "$tps" >>"$base.decode" && echo >>"$base.decode"
      json_get "$json" peak_bytes.cpu >>"$base.rss"
      echo "$(json_get "$json" devices.cpu.page_cache_in_place_bytes)" >>"$base.borrowed"
      echo "$(json_get "$json" placed_bytes.disk)" >>"$base.disk"
      echo "$(json_get "$json" placed_bytes.cpu)" >>"$base.cpu"
      echo "$(json_get "$json" peak_bytes.0)" >>"$base.gpu"
      echo "$(json_get "$json" placed_bytes.0)" >>"$base.gpuplaced"
      echo "$json" >"$base.lastjson"
    fi
  fi
  echo "$status" >>"$base.status"
  log "  $key ${VARIANT_LABELS[$v]:-} run: $status"
}

# scenario KEY COLD CGROUP MODEL ENV -- ARGS...: RUNS runs of every variant, interleaved.
scenario() {
  local key=$1 cold=$2 use_cg=$3 model=$4 envs=$5 r v
  shift 6
  for ((r = 0; r < RUNS; r++)); do
    for ((v = 0; v < ${#VARIANTS[@]}; v++)); do
      log "$key: run $((r + 1))/$RUNS${VARIANT_LABELS[$v]:+ (${VARIANT_LABELS[$v]})}"
      ferry_once "$key" "$v" "$cold" "$use_cg" "$model" "$envs" -- "$@"
    done
  done
}

# outcome KEY V -> "" when at least one run succeeded, else the first failure; sets OUTCOME_NOTE
# to "k of N runs ..." when some failed.
outcome() {
  local f=$TMP/res/$1.$2.status ok bad
  OUTCOME_NOTE=
  [[ -f $f ]] || { echo "not run"; return; }
  ok=$(grep -c '^ok$' "$f"); bad=$(grep -v '^ok$' "$f" | head -n 1)
  if ((ok == 0)); then echo "$bad"; return; fi
  [[ -z $bad ]] || OUTCOME_NOTE="$(grep -vc '^ok$' "$f") of $(wc -l <"$f") runs: $bad"
}

# med KEY V FIELD -> median of a figure ("nan" if none).
med() { local s; s=($(stats_file "$TMP/res/$1.$2.$3")); echo "${s[0]}"; }

# run_facts KEY V -> what the last good run's JSON says about threads, I/O and prefetching (fields
# that `ferry run --json` may or may not print yet), e.g. "2 threads, io direct, read 1.2 GiB per
# forward (prefetch: 10 hits, 3 waits, 0 late, 0 misses)".
run_facts() {
  local j out=() t io br fw
  j=$(cat "$TMP/res/$1.$2.lastjson" 2>/dev/null) || return 0
  t=$(json_get "$j" threads); io=$(json_get "$j" io)
  br=$(json_get "$j" prefetch.bytes_read); fw=$(json_get "$j" prefetch.forwards)
  [[ -z $t ]] || out+=("$t thread(s)")
  [[ -z $io ]] || out+=("io $io")
  if is_num "$br" && is_num "$fw" && ((fw > 0)); then
    out+=("read $(fmt_bytes "$(div "$br" "$fw")") per forward (prefetch lookahead $(json_get "$j" prefetch.lookahead): $(json_get "$j" prefetch.hits) hits, $(json_get "$j" prefetch.waits) waits, $(json_get "$j" prefetch.late) late, $(json_get "$j" prefetch.misses) misses)")
  fi
  local IFS=';'
  [[ ${#out[@]} -eq 0 ]] || echo "${out[*]}" | sed 's/;/, /g'
}

# figure_rows KEY V TITLE BUDGET_BYTES BOUND_KIND: the load/prefill/decode/RSS rows of a scenario.
figure_rows() {
  local key=$1 v=$2 title=$3 budget=$4 kind=$5 label="" fail s b notes cmpnote facts
  [[ -z ${VARIANT_LABELS[$v]} ]] || label=", ${VARIANT_LABELS[$v]}"
  fail=$(outcome "$key" "$v")
  if [[ -n $fail ]]; then
    if [[ $fail == killed:* ]]; then
      row "$title$label" "$fail" "—" "—" "—" "—" "" "every run was killed; $(cat "$TMP/res/$key.$v.cmd" 2>/dev/null)"
    else
      fail_row "$title$label" "" "$fail"
    fi
    return
  fi
  local disk cpu
  disk=$(med "$key" "$v" disk); cpu=$(med "$key" "$v" cpu)
  is_num "$disk" || disk=0
  is_num "$cpu" || cpu=0
  # load
  s=($(stats_file "$TMP/res/$key.$v.load"))
  case $kind in
    warm) b=$(div "$(calc "$cpu + $disk")" "$BW_WARM"); notes="bound: the checkpoint's bytes from the page cache" ;;
    cold) b=$(div "$cpu" "$BW_COLD"); notes="bound: the CPU-placed bytes read cold (buffered dd)" ;;
    *) b=nan; notes= ;;
  esac
  row "$title$label: load, to ready (s)" "$(fmtn "${s[0]}")" "$(fmtn "${s[1]}")" "$(fmtn "${s[2]}")" \
    "$(fmtn "$b")$(is_num "$b" && echo ' s')" "$(fmt_ratio "$(div "${s[0]}" "$b")")" "P7: ≤ 1.1 × dd cold, ≈ 0 warm" "$notes${OUTCOME_NOTE:+; $OUTCOME_NOTE}"
  # prefill
  s=($(stats_file "$TMP/res/$key.$v.prefill"))
  if [[ $kind == cold ]]; then
    b=$(div "$disk" "$BW_DIRECT"); notes="bound: the disk-placed bytes at O_DIRECT bandwidth (one forward's reads)"
  else
    b=nan; notes="first_token_seconds: the 128-token forward and the first sampled token"
  fi
  row "$title$label: prefill, 128 tokens (s)" "$(fmtn "${s[0]}")" "$(fmtn "${s[1]}")" "$(fmtn "${s[2]}")" \
    "$(fmtn "$b")$(is_num "$b" && echo ' s')" "$(fmt_ratio "$(div "${s[0]}" "$b")")" "" "$notes"
  # decode
  s=($(stats_file "$TMP/res/$key.$v.decode"))
  cmpnote=
  facts=$(run_facts "$key" "$v")
  [[ -z $facts ]] || cmpnote="; $facts"
  if ((v > 0)); then
    local base_dec
    base_dec=$(med "$key" 0 decode)
    cmpnote+="; × $(fmt_ratio "$(div "${s[0]}" "$base_dec")") the decode time without"
  fi
  case $kind in
    cold)
      b=$(mul "$(div "$disk" "$BW_DIRECT")" 1000)
      row "$title$label: decode (ms/token)" "$(fmtn "${s[0]}")" "$(fmtn "${s[1]}")" "$(fmtn "${s[2]}")" \
        "$(fmtn "$b") ms" "$(fmt_ratio "$(div "${s[0]}" "$b")")" "P4: ≤ 1.25" \
        "P4 ratio: ms per forward ÷ ($(fmt_bytes "$disk") on disk ÷ O_DIRECT $(fmtn "$(div "$BW_DIRECT" 1e9)") GB/s)$cmpnote"
      ;;
    warm)
      local a_dec
      a_dec=$(med a "$v" decode)
      if [[ $key == a ]]; then
        b=$(mul "$(div "$(calc "$cpu + $disk")" "$BW_MEMCPY")" 1000)
        row "$title$label: decode (ms/token)" "$(fmtn "${s[0]}")" "$(fmtn "${s[1]}")" "$(fmtn "${s[2]}")" \
          "$(fmtn "$b") ms" "$(fmt_ratio "$(div "${s[0]}" "$b")")" "" \
          "bound: every weight read once per token at one-thread memcpy bandwidth (a low bound: GEMV through LibTorch is slower)$cmpnote"
      else
        row "$title$label: decode (ms/token)" "$(fmtn "${s[0]}")" "$(fmtn "${s[1]}")" "$(fmtn "${s[2]}")" \
          "$(fmtn "$a_dec") ms (a)" "$(fmt_ratio "$(div "${s[0]}" "$a_dec")")" "" \
          "bound = compute: scenario (a)'s decode, everything in RAM$cmpnote$(
            [[ $(json_get "$(cat "$TMP/res/$key.$v.lastjson" 2>/dev/null)" io 2>/dev/null) == direct ]] &&
              echo "; NB: io direct bypasses the page cache, so the disk weights are read from the disk as in (b) (add --io buffered for a warm-cache figure)")"
      fi
      ;;
    *)
      row "$title$label: decode (ms/token)" "$(fmtn "${s[0]}")" "$(fmtn "${s[1]}")" "$(fmtn "${s[2]}")" \
        "—" "—" "" "tokens_per_second of the 16 decode steps$cmpnote"
      ;;
  esac
  # peak RSS
  s=($(stats_file "$TMP/res/$key.$v.rss"))
  local cg_note=
  if [[ -s $TMP/res/$key.$v.cgpeak ]]; then
    local c
    c=($(stats_file "$TMP/res/$key.$v.cgpeak"))
    cg_note="; cgroup peak (page cache included) $(fmt_bytes "${c[0]}") of $(fmt_bytes "$CG_LIMIT")"
  fi
  # Page cache used in place (--io auto): in RSS, not in peak_bytes.cpu (Note [Page cache used in
  # place] in src/core/memory.cpp).
  local borrowed
  borrowed=$(med "$key" "$v" borrowed)
  if is_num "$borrowed" && [[ $(awk -v b="$borrowed" 'BEGIN { print (b > 0) }') == 1 ]]; then
    cg_note="; + $(fmt_bytes "$borrowed") of page cache used in place, beside the peak$cg_note"
  fi
  row "$title$label: peak RSS (GiB)" "$(fmtn "$(div "${s[0]}" 1073741824)")" "$(fmtn "$(div "${s[1]}" 1073741824)")" \
    "$(fmtn "$(div "${s[2]}" 1073741824)")" "$(fmt_bytes "$budget") $([[ $key == a ]] && echo weights || echo 'CPU budget')" \
    "$(fmt_ratio "$(div "${s[0]}" "$budget")")" "" \
    "peak_bytes.cpu (process peak RSS less the page cache used in place); placed: cpu $(fmt_bytes "$cpu"), disk $(fmt_bytes "$disk")$cg_note"
}

if [[ -z $MODEL ]]; then
  fail_row "reference workload" "" "no model (see notes)"
elif [[ ! -x $FERRY ]]; then
  fail_row "reference workload" "" "no ferry binary at $FERRY"
else
  log "(a) everything in CPU RAM, page cache warm"
  warm_model
  scenario a no no "$MODEL" "" --
  log "(b) cpu=$(fmt_bytes "$BUDGET") (40 %), rest on disk, cgroup $(fmt_bytes "$CG_LIMIT"), cold"
  scenario b yes yes "$MODEL" "" -- --max-memory "cpu=$BUDGET"
  log "(c) the same map, page cache warm, no cgroup"
  warm_model
  # Warm page cache only means something for reads that go through it: (c) reads buffered.
  scenario c no no "$MODEL" "" -- --max-memory "cpu=$BUDGET" --io buffered
  if [[ -n $SIM_GPUS ]]; then
    SIM_MM=${FERRY_SIM_MAX_MEMORY:-0=$(awk -v b="$MODEL_BYTES" 'BEGIN { printf "%.0fMiB", b * 0.5 / 1048576 }'),cpu=$(awk -v b="$MODEL_BYTES" 'BEGIN { printf "%.0fMiB", b * 0.3 / 1048576 }')}
    SIM_MM_TEXT=$SIM_MM
    [[ -n ${FERRY_SIM_MAX_MEMORY:-} ]] || SIM_MM_TEXT="$SIM_MM (GPU 0 = 50 %, cpu = 30 %, rest on disk)"
    log "(d) FERRY_SIM_GPUS=$SIM_GPUS --max-memory $SIM_MM, page cache warm"
    warm_model
    scenario d no no "$MODEL" "FERRY_SIM_GPUS=$SIM_GPUS" -- --max-memory "$SIM_MM"
  fi
  log "P6: the runtime's footprint (tiny model, same flags)"
  if [[ -n $TINY ]]; then
    scenario tiny no no "$TINY" "" -- --max-memory "cpu=$BUDGET"
  fi

  # Rows: scenario by scenario, each variant right under the first.
  for ((v = 0; v < ${#VARIANTS[@]}; v++)); do
    figure_rows a "$v" "(a) all in CPU RAM, warm" "$MODEL_BYTES" warm
  done
  for ((v = 0; v < ${#VARIANTS[@]}; v++)); do
    figure_rows b "$v" "(b) cpu = 40 %, rest on disk, RAM-limited, cold" "$BUDGET" cold
  done
  for ((v = 0; v < ${#VARIANTS[@]}; v++)); do
    figure_rows c "$v" "(c) cpu = 40 %, rest on disk, page cache warm, --io buffered" "$BUDGET" warm
  done
  if [[ -n $SIM_GPUS ]]; then
    sim_cpu=$(parse_bytes "$(grep -oE '(^|,)cpu=[^,]+' <<<"$SIM_MM" | sed 's/^,\{0,1\}cpu=//')")
    sim_gpu=$(parse_bytes "$(grep -oE '(^|,)0=[^,]+' <<<"$SIM_MM" | sed 's/^,\{0,1\}0=//')")
    for ((v = 0; v < ${#VARIANTS[@]}; v++)); do
      figure_rows d "$v" "(d) simulated GPU $SIM_GPUS, $SIM_MM_TEXT, warm" "$sim_cpu" none
      fail=$(outcome d "$v")
      if [[ -z $fail ]]; then
        s=($(stats_file "$TMP/res/d.$v.gpu"))
        row "(d) GPU 0 peak${VARIANT_LABELS[$v]:+, ${VARIANT_LABELS[$v]}} (GiB)" "$(fmtn "$(div "${s[0]}" 1073741824)")" \
          "$(fmtn "$(div "${s[1]}" 1073741824)")" "$(fmtn "$(div "${s[2]}" 1073741824)")" \
          "$(fmt_bytes "$sim_gpu") GPU 0 budget" "$(fmt_ratio "$(div "${s[0]}" "$sim_gpu")")" "P6: ≤ 1.00" \
          "peak_bytes.0 of the simulated GPU; placed on it: $(fmt_bytes "$(med d "$v" gpuplaced)")"
      fi
    done
  fi
  # P6: peak RSS of (b) vs budget × 1.05 + the runtime's footprint.
  for ((v = 0; v < ${#VARIANTS[@]}; v++)); do
    label=${VARIANT_LABELS[$v]:+, ${VARIANT_LABELS[$v]}}
    fail=$(outcome b "$v"); tfail=$(outcome tiny "$v")
    if [[ -n $fail ]]; then
      row "P6 memory promise, scenario (b)$label" "$fail" "—" "—" "—" "—" "≤ 1.00" ""
    elif [[ -n $tfail ]]; then
      fail_row "P6 memory promise$label" "≤ 1.00" "footprint run: $tfail"
    else
      s=($(stats_file "$TMP/res/b.$v.rss")); foot=$(med tiny "$v" rss)
      bound=$(calc "$BUDGET * 1.05 + $foot")
      row "P6 memory promise: peak RSS of (b)$label (GiB)" "$(fmtn "$(div "${s[0]}" 1073741824)")" \
        "$(fmtn "$(div "${s[1]}" 1073741824)")" "$(fmtn "$(div "${s[2]}" 1073741824)")" \
        "$(fmt_bytes "$bound") = budget × 1.05 + footprint" "$(fmt_ratio "$(div "${s[0]}" "$bound")")" "≤ 1.00" \
        "footprint = median peak RSS of the same command on the $(fmt_bytes "$(cat "$TINY"/*.safetensors | wc -c)") tiny model: $(fmt_bytes "$foot")"
    fi
  done
fi

# ===============================================================================================
# 3b. One plan, kept (issue 11): the memory promise per scenario, and plan = run
# ===============================================================================================
# promise_scenario TITLE ENV PLAN_ONLY RUN_ONLY -- ARGS...: `ferry plan --json PLAN_ONLY ARGS` and
# `ferry run --json RUN_ONLY ARGS` once each (the *_ONLY strings are split on spaces); one row per device of the run: its peak against
# limit_bytes (= budget × 1.05, plus the runtime's footprint on the CPU, as `ferry run` reports),
# and whether plan printed the same device map as run used.
PROMISE_N=0
promise_scenario() {
  local title=$1 envs=$2 plan_only=$3 run_only=$4 json plan err same dev peak limit budget placed reserves
  shift 5
  PROMISE_N=$((PROMISE_N + 1))
  json=$LOGS/promise-$PROMISE_N.run.json; plan=$LOGS/promise-$PROMISE_N.plan.json
  err=$LOGS/promise-$PROMISE_N.err
  # shellcheck disable=SC2086
  if ! env $envs timeout "$RUN_TIMEOUT" "$FERRY" plan "$MODEL" --json $plan_only "$@" >"$plan" 2>"$err"; then
    fail_row "memory promise: $title" "≤ 1.00" "ferry plan: $(last_error "$err")"; return
  fi
  # shellcheck disable=SC2086
  if ! run_child "$json" "$err" env $envs timeout "$RUN_TIMEOUT" "$FERRY" run "$MODEL" --json \
      --no-progress --ignore-eos $run_only "$@"; then
    fail_row "memory promise: $title" "≤ 1.00" "ferry run: $(last_error "$err")"; return
  fi
  if [[ $(json_get "$plan" device_map) == "$(json_get "$json" device_map)" ]]; then same="plan = run"
  else same="PLAN ≠ RUN (maps in $plan and $json)"; fi
  for dev in 0 1 cpu; do
    peak=$(json_get "$json" "devices.$dev.peak_bytes"); limit=$(json_get "$json" "devices.$dev.limit_bytes")
    is_num "$peak" && is_num "$limit" || continue
    budget=$(json_get "$json" "devices.$dev.budget_bytes"); placed=$(json_get "$json" "devices.$dev.placed_bytes")
    reserves=$(json_get "$json" "devices.$dev.reserves")
    row "memory promise: $title, device $dev (MiB)" "$(fmtn "$(div "$peak" 1048576)")" "—" "—" \
      "$(fmt_bytes "$limit") = budget $(fmt_bytes "$budget") × 1.05$([[ $dev == cpu ]] && echo " + footprint")" \
      "$(fmt_ratio "$(div "$peak" "$limit")")" "≤ 1.00" \
      "$same; placed $(fmt_bytes "${placed:-0}"); reserves: ${reserves:-none}; flags: $envs $*"
  done
}
if [[ -n $MODEL ]] && is_num "$MODEL_BYTES"; then
  section "One plan, kept: peak per device ÷ (1.05 × resolved budget + footprint), one run each"
  pct() { awk -v b="$MODEL_BYTES" -v f="$1" 'BEGIN { printf "%.0fMiB", b * f / 1048576 }'; }
  log "memory promise: disk offload, --dtype conversion, two simulated GPUs, batch 8 × 1024"
  one="--prompt-ids $PROMPT_IDS"
  common=(--max-new-tokens 17)  # plan and run alike (the KV cache reserve follows it)
  promise_scenario "disk offload, cpu = 40 %" "" "" "$one" -- "${common[@]}" --max-memory "cpu=$(pct 0.4)"
  promise_scenario "--dtype bfloat16 conversion, cpu = 20 %, rest on disk" "" "" "$one" -- "${common[@]}" \
    --dtype bfloat16 --max-memory "cpu=$(pct 0.2)"
  g=$(pct 0.35)
  promise_scenario "two simulated GPUs of capacity = budget = 35 %, split map" \
    "FERRY_SIM_GPUS=$g,$g" "" "$one" -- "${common[@]}" --max-memory "0=$g,1=$g,cpu=$(pct 1.5)"
  # Batch 8 × 1024 tokens: cpu = 40 % of the model + the KV cache and activation reserves that
  # `ferry plan` reports for that shape (the rest streams from disk).
  batch=; for ((i = 0; i < 8; i++)); do batch+=" $one"; done
  "$FERRY" plan "$MODEL" --json --batch 8 --context 1024 "${common[@]}" --max-memory "cpu=$(pct 4)" \
    >"$LOGS/promise-shape.json" 2>"$LOGS/promise-shape.err"
  shape=$(json_get "$LOGS/promise-shape.json" devices.cpu.reserve_bytes)
  if is_num "$shape"; then
    cpu=$(awk -v b="$MODEL_BYTES" -v r="$shape" 'BEGIN { printf "%.0fMiB", (b * 0.4 + r) / 1048576 }')
    promise_scenario "batch 8, 1024-token context, cpu = 40 % + its KV and activation reserves" "" \
      "--batch 8" "$batch" -- "${common[@]}" --context 1024 --max-memory "cpu=$cpu"
  else
    fail_row "memory promise: batch 8, 1024-token context" "≤ 1.00" "ferry plan: $(last_error "$LOGS/promise-shape.err")"
  fi
fi

# ===============================================================================================
# 4. Simulated CPU → GPU streaming (bench_stream, written elsewhere)
# ===============================================================================================
section "Streaming and reading (benchmarks being written: rows appear once they are built)"
if [[ -x $BIN/bench/bench_stream ]]; then
  log "sim CPU→GPU streaming: bench_stream"
  if [[ $MODE == quick ]]; then stream_args=(24 1024 "$RUNS"); else stream_args=(24 2048 $((RUNS > 5 ? RUNS : 5))); fi
  if run_bench bench_stream "${stream_args[@]}"; then
    line=$(grep -m1 '^SUMMARY' "$BENCH_LOG")
    [[ -n $line ]] || line=$(grep -iE 'ratio|summary' "$BENCH_LOG" | tail -n 1)
    [[ -n $line ]] || line=$(last_error "$BENCH_LOG")
    # "prefetcher, lookahead  X GB/s (min-max)  R x memcpy" and "memcpy (bound)  Y GB/s (...)"
    read -r m mn mx r <<<"$(sed -n 's/^ *prefetcher, lookahead *\([0-9.]*\) GB\/s (\([0-9.]*\)-\([0-9.]*\)) *\([0-9.]*\) x memcpy.*/\1 \2 \3 \4/p' "$BENCH_LOG")"
    bw=$(sed -n 's/^ *memcpy (bound) *\([0-9.]*\) GB\/s.*/\1/p' "$BENCH_LOG")
    if is_num "${m:-}"; then
      row "P5 sim CPU→GPU streaming, prefetcher (GB/s)" "$(fmtn "$m")" "$(fmtn "$mn")" "$(fmtn "$mx")" \
        "$(fmtn "$bw") GB/s memcpy" "$(fmt_ratio "$r")" "≥ 0.80 of pinned H2D" "bench_stream ${stream_args[*]} (medians over its rounds): ${line#SUMMARY }"
    else
      row "P5 sim CPU→GPU streaming" "see notes" "—" "—" "—" "—" "≥ 0.80 of pinned H2D" "bench_stream: $line"
    fi
  else
    fail_row "P5 sim CPU→GPU streaming" "≥ 0.80 of pinned H2D" "$(last_error "$BENCH_LOG")"
  fi
else
  row "sim CPU→GPU streaming (P5)" "not built" "—" "—" "—" "—" "≥ 0.80 of pinned H2D" "no $BIN/bench/bench_stream"
fi
if [[ -x $BIN/bench/bench_read ]]; then
  log "disk readers: bench_read"
  if run_bench bench_read --size-mib "$LOAD_MIB" --dir "$TMP" --runs "$RUNS"; then
    cache=$(sed -n 's/^cache before each run: \([^;]*\);.*/\1/p' "$BENCH_LOG")
    # Rows: "LABEL  GB/s min max vs-dd"; the dd row and the fastest Direct and Buffered readers.
    read -r m mn mx <<<"$(awk '/^dd bs=4M iflag=direct/ { print $(NF-3), $(NF-2), $(NF-1) }' "$BENCH_LOG")"
    for mode in Direct Buffered; do
      l=$(awk -v m="$mode" '$1 == m && NF >= 8 { print }' "$BENCH_LOG" | sort -k"$(awk -v m="$mode" '$1 == m { print NF - 3; exit }' "$BENCH_LOG")" -g | tail -n 1)
      [[ -n $l ]] || continue
      read -r rm rmn rmx rr <<<"$(awk '{ print $(NF-3), $(NF-2), $(NF-1), $NF }' <<<"$l")"
      row "disk reader, fastest $mode configuration (GB/s)" "$(fmtn "$rm")" "$(fmtn "$rmn")" "$(fmtn "$rmx")" \
        "$(fmtn "$m") GB/s dd iflag=direct" "$(fmt_ratio "$rr")" "" \
        "bench_read: $(awk '{ NF -= 4; print }' <<<"$l"), $LOAD_MIB MiB file, cache before each run: ${cache:-?}"
    done
  else
    fail_row "disk readers (bench_read)" "" "$(last_error "$BENCH_LOG")"
  fi
fi

# ===============================================================================================
# 5. Decode kernels (bench_kernels): one layer, batch 1, weight GB/s vs memcpy in the same run
# ===============================================================================================
if [[ -x $BIN/bench/bench_kernels ]]; then
  section "Decode kernels, M = 1, 2 threads: weight bytes read per second (P8, one layer)"
  log "decode kernels: bench_kernels"
  if [[ $MODE == quick ]]; then kernel_sizes=4096,8192; else kernel_sizes=4096,8192,16384; fi
  if run_bench bench_kernels --threads 2 --reps $((RUNS > 9 ? RUNS : 9)) --sizes "$kernel_sizes"; then
    # "ROW size=S format=F gbps=… min=… max=… memcpy=… read=… memcpy_ratio=… read_ratio=… old_gbps=…"
    while read -r line; do
      declare -A kv=()
      for pair in ${line#ROW }; do kv[${pair%%=*}]=${pair#*=}; done
      row "P8 ${kv[size]}² ${kv[format]} linear (GB/s)" "$(fmtn "${kv[gbps]}")" "$(fmtn "${kv[min]}")" \
        "$(fmtn "${kv[max]}")" "$(fmtn "${kv[memcpy]}") GB/s memcpy" "$(fmt_ratio "${kv[memcpy_ratio]}")" \
        "≥ 0.80 of memcpy (bf16, f16, int8)" \
        "$(fmt_ratio "${kv[read_ratio]}") × read-only ($(fmtn "${kv[read]}") GB/s); old path (convert + at::linear) $(fmtn "${kv[old_gbps]}") GB/s; isa ${kv[isa]}"
      unset kv
    done < <(grep '^ROW ' "$BENCH_LOG")
    note "bench_kernels int8 accuracy: $(grep -E 'group 32|per channel' "$BENCH_LOG" | sed 's/  */ /g' | paste -sd';' -)"
  else
    fail_row "P8 decode kernels (bench_kernels)" "≥ 0.80 of memcpy" "$(last_error "$BENCH_LOG")"
  fi
fi

# ===============================================================================================
# The table
# ===============================================================================================
ELAPSED=$(($(date +%s) - START_S))
# What ferry itself says about threads and BLAS, once its JSON has them.
if j=$(cat "$TMP/res/a.0.lastjson" 2>/dev/null); then
  t=$(json_get "$j" threads); bl=$(json_get "$j" blas)
  [[ -z $t ]] || THREADS="$t (\`ferry run --json\`)"
  [[ -z $bl ]] || BLAS="$bl (\`ferry run --json\`); $BLAS"
fi
CMDLINE="bash bench/run.sh --$MODE${REV:+ --rev $REV} --runs $RUNS"
[[ -z ${FERRY_RUN_FLAGS:-} ]] || CMDLINE="FERRY_RUN_FLAGS=\"$FERRY_RUN_FLAGS\" $CMDLINE"
[[ -z ${FERRY_COMPARE_FLAGS:-} ]] || CMDLINE="FERRY_COMPARE_FLAGS=\"$FERRY_COMPARE_FLAGS\" $CMDLINE"
[[ -z $SIM_GPUS ]] || CMDLINE="FERRY_SIM_GPUS=$SIM_GPUS $CMDLINE"
# Processes not ours that used a CPU during the run, with how many samples saw each.
OTHERS=$(awk '$1 ~ /^[0-9]+$/ && $9 + 0 > 50 { print $12 }' "$LOGS/load.log" 2>/dev/null |
  grep -vE '^(ferry|bench_.*|dd|python3|top|cat|sync|timeout|bash)$' | sort | uniq -c | sort -rn |
  awk '{ printf "%s%s ×%s", (NR > 1 ? ", " : ""), $2, $1 }' | head -c 200)
{
  echo "## ferry benchmarks ($MODE), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- **command**: \`$CMDLINE\` — ran in $((ELAPSED / 60)) min $((ELAPSED % 60)) s"
  echo "- **machine**: $CORES cores ($CPU_MODEL), $MEM_GIB GiB RAM, disk $DISK, kernel $(uname -r), BLAS: ${BLAS:-unknown}"
  echo "- **load average** (1, 5, 15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg); other processes above 50 % CPU in the 10-s samples of bench-logs/load.log: ${OTHERS:-none}"
  echo "- **build**: $BIN ($BUILD_TYPE), $BUILD_NOTE"
  echo "- **threads**: $THREADS; **dtype**: $DTYPE; extra \`ferry run\` flags: ${RUN_FLAGS:-none}"
  echo "- **model**: $MODEL_DESC (ferry make-model ${MODEL_ARGS[*]}$([[ $PAD == yes ]] && echo "; vocabulary padded to $VOCAB and rope_theta 10000 by bench/lib/pad_vocab.py"))"
  echo "- **regimes**: (a) no --max-memory, everything in CPU RAM, page cache warm; (b) --max-memory cpu=$(fmt_bytes "$BUDGET") (40 %), the rest on disk, inside a memory cgroup ($CG_KIND) of budget + 512 MiB = $(fmt_bytes "$CG_LIMIT"), page cache dropped before each run; (c) the map of (b), page cache warm, no cgroup$([[ -n $SIM_GPUS ]] && echo "; (d) FERRY_SIM_GPUS=$SIM_GPUS, --max-memory $SIM_MM_TEXT, warm")"
  echo "- each figure: median of $RUNS runs with min and max; the bound is measured in the same run; ratio = median ÷ bound (times: lower is better; GB/s: higher is better)"
  echo
  echo "| figure | median | min | max | bound (this run) | ratio | target (DESIGN.md) | notes |"
  echo "|---|---|---|---|---|---|---|---|"
  cat "$ROWS"
  if [[ -s $NOTES ]]; then
    echo
    echo "Notes:"
    cat "$NOTES"
  fi
  echo
  echo "Commands (scenario, first variant):"
  for k in a b c d tiny; do
    [[ -f $TMP/res/$k.0.cmd ]] && echo "- $k: \`$(sed "s|$TMP|\$TMP|g; s|$ROOT/||g" "$TMP/res/$k.0.cmd")\`"
  done
  echo
  echo "Raw output: $LOGS"
} >"$OUT.tmp" && mv "$OUT.tmp" "$OUT"
cat "$OUT"
log "table written to $OUT ($ELAPSED s)"
