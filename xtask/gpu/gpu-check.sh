#!/bin/sh
# gpu-check.sh: the appliance's models on an NVIDIA GPU, on a host that has
# the GPU driver and the CUDA libraries and nothing else of ours (no Rust
# toolchain, no network). Its input is the pack `cargo xtask gpu-pack`
# writes: this script, SHA256SUMS and the parts hms-gpu.tar.xz.NN (each at
# most 60 MB), all in one directory.
#
#   sh gpu-check.sh [PACK_DIR] [RESULTS_DIR]
#
# PACK_DIR defaults to the script's directory, RESULTS_DIR to
# ./gpu-check-results. It checks the parts, assembles and unpacks them
# (under $TMPDIR), finds the CUDA libraries (ldconfig, /usr/local/cuda*,
# the nvidia-* Python wheels, /usr/lib*), and then:
#   1. models check --cuda --batches 1,64,4096,65536: both models' test
#      vectors on the CPU and CUDA sessions within their manifest tolerance
#      (TensorFloat-32 off), single-row and batch latency and rows/s per
#      provider, and the recommended inference.cuda_min_rows; exit 0 needed;
#   2. the same with --tf32, for the record (its verdict is not required);
#   3. the appliance itself with inference.cuda = true: /health shows the
#      models on cuda, the forecast answers from the model, SIGTERM stops
#      it with exit 0.
# Exit 0 when 1 and 3 pass; every step's output is in RESULTS_DIR.
# Takes under 3 minutes on an H100 or H200.
set -u

here=$(cd "$(dirname "$0")" && pwd)
pack=$(cd "${1:-$here}" && pwd)
results=${2:-./gpu-check-results}
mkdir -p "$results"
results=$(cd "$results" && pwd)
work=${TMPDIR:-/tmp}/hms-gpu-check.$$
mkdir -p "$work"
started=$(date +%s)
failed=0

say() { echo "gpu-check: $*" | tee -a "$results/summary.txt"; }
fail() { say "FAIL: $*"; failed=1; }

# -- the pack ------------------------------------------------------------
if [ ! -f "$pack/SHA256SUMS" ]; then
  echo "gpu-check: no SHA256SUMS in $pack (run cargo xtask gpu-pack and copy target/gpu-pack/)" >&2
  exit 64
fi
(cd "$pack" && sha256sum -c --quiet SHA256SUMS) || { echo "gpu-check: a part is damaged or missing" >&2; exit 1; }
cat "$pack"/hms-gpu.tar.xz.[0-9][0-9] > "$work/hms-gpu.tar.xz"
want=$(awk '$2 == "hms-gpu.tar.xz" || $2 == "*hms-gpu.tar.xz" {print $1}' "$pack/SHA256SUMS.whole")
got=$(sha256sum "$work/hms-gpu.tar.xz" | awk '{print $1}')
if [ "$want" != "$got" ]; then
  echo "gpu-check: the assembled pack does not match its checksum" >&2
  exit 1
fi
if ! tar -xJf "$work/hms-gpu.tar.xz" -C "$work" 2>/dev/null; then
  python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
    "$work/hms-gpu.tar.xz" "$work" || { echo "gpu-check: cannot unpack" >&2; exit 1; }
fi
rm -f "$work/hms-gpu.tar.xz"
g=$work/hms-gpu
bin=$g/bin/hms-edge
lib=$(ls "$g"/lib/libonnxruntime.so.* | head -n 1)
chmod +x "$bin"

# -- the GPU and its libraries -------------------------------------------
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$results/gpu.txt" 2>&1 \
  || { echo "gpu-check: no NVIDIA GPU here (nvidia-smi failed); nothing measured" >&2; exit 2; }
say "gpu: $(cat "$results/gpu.txt")"
# Directories that may hold CUDA's libraries, most specific first.
candidates() {
  ldconfig -p 2>/dev/null | awk '/libcudart\.so|libcublas|libcurand|libcudnn|libcufft/ {print $NF}' | xargs -r -n1 dirname
  for d in /usr/local/cuda/lib64 /usr/local/cuda*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib \
           /usr/lib/x86_64-linux-gnu /usr/lib64 /opt/nvidia/*/lib /opt/cuda*/lib64; do
    [ -d "$d" ] && echo "$d"
  done
  python3 - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + sys.path)
for r in roots:
    for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")):
        print(d)
EOF
}
path=""
for want in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudnn.so.9 libcufft.so.12; do
  found=""
  for d in $(candidates | awk '!seen[$0]++'); do
    if [ -e "$d/$want" ]; then found=$d; break; fi
  done
  if [ -z "$found" ]; then
    found=$(find /usr /opt -name "$want" 2>/dev/null | head -n 1 | xargs -r dirname)
  fi
  if [ -n "$found" ]; then
    say "found $want in $found"
    case ":$path:" in *":$found:"*) ;; *) path=${path:+$path:}$found ;; esac
  else
    say "not found: $want (the CUDA provider may not load)"
  fi
done
export LD_LIBRARY_PATH="$g/lib${path:+:$path}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUST_LOG=${RUST_LOG:-warn}

# -- 1. the models on CUDA, TF32 off --------------------------------------
say "step 1: models check --cuda --batches 1,64,4096,65536"
timeout 120 "$bin" models check --dir "$g/models" --library "$lib" --cuda --runs 2000 \
  --batches 1,64,4096,65536 > "$results/check-cuda.jsonl" 2> "$results/check-cuda.err"
rc=$?
cat "$results/check-cuda.jsonl"
say "step 1 exit $rc"
[ "$rc" = 0 ] || fail "models check --cuda exited $rc (139: a crash at exit)"

# -- 2. the same with TF32, for the record ---------------------------------
say "step 2: models check --cuda --tf32"
timeout 60 "$bin" models check --dir "$g/models" --library "$lib" --cuda --tf32 --runs 200 \
  > "$results/check-tf32.jsonl" 2> "$results/check-tf32.err"
rc=$?
cat "$results/check-tf32.jsonl"
say "step 2 exit $rc (1: outputs outside tolerance; 139 would be a crash)"
[ "$rc" = 0 ] || [ "$rc" = 1 ] || fail "models check --tf32 exited $rc"

# -- 3. the appliance with inference.cuda = true --------------------------
say "step 3: hms-edge run with inference.cuda = true"
data=$work/data
mkdir -p "$data"
sed -e "s|^models = .*|models = \"$g/models\"\nlibrary = \"$lib\"\ncuda = true|" \
    "$g/config/demo-hospital.toml" > "$work/edge.toml"
"$bin" token create --data-dir "$data" --role admin --name gpu-check > "$work/token.txt" 2>> "$results/run.err" \
  || fail "token create"
token=$(tail -n 1 "$work/token.txt")
"$bin" run --config "$work/edge.toml" --data-dir "$data" --http 127.0.0.1:18080 --mllp 127.0.0.1:12575 \
  > "$results/run.out" 2> "$results/run.err" &
pid=$!
TOKEN=$token python3 - > "$results/run-health.json" 2>> "$results/run.err" <<'EOF'
import json, os, time, urllib.request
def get(path):
    req = urllib.request.Request("http://127.0.0.1:18080" + path,
                                 headers={"Authorization": "Bearer " + os.environ["TOKEN"]})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, json.load(r)
deadline = time.time() + 60
health = None
while time.time() < deadline:
    try:
        _, health = get("/health")
        if health["components"]["models"]["models"]:
            break
    except Exception:
        time.sleep(0.5)
deadline = time.time() + 30
while True:
    status, forecast = get("/api/v1/forecast")
    if forecast.get("units_from_model") or time.time() > deadline:
        break
    time.sleep(0.5)
print(json.dumps({"models": health["components"]["models"], "forecast_status": status,
                  "units": forecast.get("units"),
                  "units_from_model": forecast.get("units_from_model")}))
EOF
cat "$results/run-health.json"
python3 - "$results/run-health.json" <<'EOF' || fail "the appliance did not run its models on cuda"
import json, sys
h = json.load(open(sys.argv[1]))
providers = {m["name"]: m["provider"] for m in h["models"]["models"]}
assert providers == {"bed_demand": "cuda", "or_duration": "cuda"}, providers
assert h["forecast_status"] == 200, h
assert h["units_from_model"] == h["units"] > 0, h
EOF
kill -TERM "$pid"
wait "$pid"
rc=$?
say "step 3: the appliance exited $rc after SIGTERM"
[ "$rc" = 0 ] || fail "the appliance exited $rc after SIGTERM (139: a crash at exit)"

rm -rf "$work"
say "took $(( $(date +%s) - started )) s"
if [ "$failed" = 0 ]; then say "PASS"; else say "FAILED"; fi
exit "$failed"
