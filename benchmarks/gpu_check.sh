#!/usr/bin/env bash
# Every GPU measurement of issue 8 (and issue 3's training benchmark) in one run, in under 8 minutes.
#
#   Here, with network, once:      bash benchmarks/gpu_check.sh --prepare
#       fills .whl/ (../shared/device/wheels.sh plus diffusers and the packages it imports; ~25 MB).
#   On the GPU machine (device tool, from the project root):
#       run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=560)
#       or by hand: OUT=/tmp/gpu_results bash benchmarks/gpu_check.sh
#
# It needs no network and no data (random weights and inputs; speed does not depend on them).
# Steps, each bounded by what is left of GPU_CHECK_BUDGET_S (default 470 s):
#   1. the fast-path tests on CUDA (tests/test_fast.py: CUDA graph = eager, no host sync per step)
#   2. checks: which SDPA kernel our attention gets (flash?), the q/k/v layout it is handed, and
#      host syncs per sampler step with the fast path on and off
#   3. training throughput + MFU per preset (benchmarks/train_throughput.py), channels_last on/off
#   4. ours beside diffusers' UNet2DModel (benchmarks/peer.py): training, DDIM sampling, end to end
#   5. torch.compile'd training on the digits pair, ours and the peer
#   6. one-clip latency through the pipeline (DPM++ 25 + HiFi-GAN bf16), fast path on/off
#   7. channels_last off for the 2D net's training (ablation), with what is left
# then prints a short table last. Results (JSON + summary.md) go to $OUT (default ./gpu_results).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

if [[ "${1:-}" == "--prepare" ]]; then
  set -e
  bash ../shared/device/wheels.sh diffusers
  plat=""
  for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_28_x86_64 manylinux_2_34_x86_64 \
           manylinux1_x86_64 any; do plat="$plat --platform $p"; done
  # What diffusers imports beyond the GPU image (python 3.12, torch, numpy, scipy, matplotlib/pillow,
  # tqdm, tensorboard, pytest): huggingface_hub and its HTTP stack, regex, requests, safetensors
  # (and a typing_extensions new enough for anyio).
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat \
    -d .whl 'huggingface_hub<3' hf-xet httpx2 httpcore2 h11 anyio idna truststore click regex requests \
    charset_normalizer urllib3 certifi safetensors pyyaml lazy_importer zipp typing_extensions 2>&1 | grep -v '^WARNING' || true
  du -sh .whl
  exit 0
fi

OUT=${OUT:-$PWD/gpu_results}
mkdir -p "$OUT"
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-470}
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
# step NAME MAX_SECONDS CMD...: run CMD under min(MAX, time left); skip it if under 25 s are left.
step() {
  local name=$1 max=$2 t0 l rc
  shift 2
  l=$(left)
  (( l < max )) && max=$l
  if (( max < 25 )); then echo "== $name: skipped ($(left) s of the budget left)"; return 0; fi
  echo "== $name (at most ${max} s)"
  t0=$(date +%s)
  timeout --kill-after=10 "$max" "$@"
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s"
}

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  echo "no .whl/ here: using the installed packages"
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "no CUDA device: this script is for a GPU machine"; exit 1; }

# 1. fast-path tests on CUDA
step "tests (CUDA)" 60 python3 -m pytest -q -p no:cacheprovider tests/test_fast.py

# 2. attention kernel, q/k/v layout, host syncs per sampler step
step "checks" 60 python3 - "$OUT/checks.json" <<'EOF'
import json, sys, time, warnings
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from audiodiff.nets import layers
from audiodiff.nets.layers import Attention

out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "attention": []}
seen = {}
plain_sdpa = F.scaled_dot_product_attention
def spy(q, k, v, *a, **kw):
    seen.update(shape=list(q.shape), stride=list(q.stride()), dtype=str(q.dtype), contiguous=q.is_contiguous())
    return plain_sdpa(q, k, v, *a, **kw)
# (where, channels, head_dim, H, W): the attention levels of `digits` at 80x88 and `peer` at 256x256
for where, C, hd, H, W, B in [("digits level 2", 192, 32, 20, 22, 64), ("digits level 3 + middle", 256, 32, 10, 11, 64),
                              ("peer level 4", 512, 64, 16, 16, 16), ("peer middle", 512, 64, 8, 8, 16)]:
    attn = Attention(C, head_dim=hd).cuda()
    x = torch.randn(B, C, H, W, device="cuda").to(memory_format=torch.channels_last)
    row = {"where": where, "channels": C, "head_dim": hd, "positions": H * W}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        F.scaled_dot_product_attention = spy
        try:
            attn(x)
        finally:
            F.scaled_dot_product_attention = plain_sdpa
        row["q"] = dict(seen)
        try:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                attn(x)
            row["flash_usable"] = True
        except RuntimeError as e:
            row["flash_usable"] = False; row["flash_error"] = str(e).splitlines()[0][:200]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            attn(x); torch.cuda.synchronize()
        names = [e.key for e in prof.key_averages() if any(s in e.key.lower() for s in ("flash", "fmha", "attention", "efficient", "cudnn"))]
        row["kernels"] = names[:4]
    out["attention"].append(row)
    print(json.dumps(row))

# Host syncs per sampler step (torch's CUDA sync debug mode): fast path on and off.
from audiodiff.audio import AudioConfig
from audiodiff.diffusion.schedules import NoiseSchedule
from audiodiff.nets.unet import from_preset
from audiodiff.pipeline import AudioDiffusionPipeline
pipe = AudioDiffusionPipeline(from_preset("digits"), NoiseSchedule(), AudioConfig(), num_classes=10, segment_frames=88).to("cuda")
def syncs(fast, steps):
    pipe.fast = fast
    pipe.sample_mel(batch_size=4, steps=steps, labels=[1, 2, 3, 4], progress=False)  # warm-up / capture
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            pipe.sample_mel(batch_size=4, steps=steps, labels=[1, 2, 3, 4], progress=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)
for fast in (True, False):
    n10, n20 = syncs(fast, 10), syncs(fast, 20)
    row = {"fast": fast, "syncs_10_steps": n10, "syncs_20_steps": n20, "syncs_per_step": (n20 - n10) / 10}
    out.setdefault("syncs", []).append(row)
    print(json.dumps(row))
json.dump(out, open(sys.argv[1], "w"), indent=2)
EOF

# 3. training throughput per preset (issue 3) + MFU
step "train_throughput" 100 python3 benchmarks/train_throughput.py --device cuda --steps 10 --warmup 4 \
  --json "$OUT/train.json"

# 4. ours beside diffusers, eager: training, DDIM sampling (ours eager and CUDA-graphed), end to end
#    (ours: the pipeline with the fast path on and off)
step "peer" 190 python3 benchmarks/peer.py --device cuda --deadline-s 160 --json "$OUT/peer.json"

# 5. torch.compile'd training on the digits pair (compiles take about a minute each)
step "peer compiled" 150 python3 benchmarks/peer.py --device cuda --pairs digits --compile-only \
  --deadline-s 60 --json "$OUT/peer_compile.json"

# 6. latency through the pipeline: one clip, DPM++ 25 + HiFi-GAN bf16, fast path on/off
step "sample batch 1" 35 python3 benchmarks/sample_throughput.py --preset digits --device cuda --batch-size 1 \
  --samplers dpmpp --steps 25 --vocoders hifigan --hifigan random --hifigan-bf16 --fast both --repeats 5 \
  --json "$OUT/sample_b1.json"

# 7. channels_last off for the 2D net's training (the ablation of train.py's default), if time is left
step "train channels_last off" 35 python3 benchmarks/train_throughput.py --device cuda \
  --cases digits:256 --channels-last off --steps 10 --warmup 4 --repeats 2 --json "$OUT/train_cl_off.json"

# The short table, last.
python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception:
        return None
lines = []
def emit(s=""):
    lines.append(s); print(s)
meta = next((d["meta"] for d in map(load, ["peer.json", "train.json"]) if d), {})
emit(f"## GPU check: {meta.get('card', '?')}, torch {meta.get('torch', '?')}, {meta.get('date', '?')}")
peak = meta.get("peak", {})
emit(f"matmul peak measured in the same run: {peak.get('case', '?')} {peak.get('tflops', float('nan')):.1f} TFLOP/s")
emit("\n| what | ours | diffusers | ours/peer | note |\n|---|---:|---:|---:|---|")
peer = (load("peer.json") or {"rows": []})["rows"] + (load("peer_compile.json") or {"rows": []})["rows"]
def val(r):
    return r.get("samples_per_s", r.get("audio_s_per_s"))
groups = {}
for r in peer:
    if "error" in r or "skipped" in r:
        continue
    groups.setdefault((r["pair"], r["part"], r.get("batch"), r["how"] if r["part"] == "train" else ""), []).append(r)
for (pair, part, batch, how), rs in groups.items():
    ours = [r for r in rs if r["net"] == "ours"]
    theirs = [r for r in rs if r["net"] == "diffusers"]
    if not ours or not theirs:
        continue
    best = max(ours, key=val)
    unit = "audio s/s" if part == "e2e" else "samples/s"
    mfu = f"MFU {best.get('mfu_pct', 0):.1f}% vs {theirs[0].get('mfu_pct', 0):.1f}%" if "mfu_pct" in best else ""
    emit(f"| {pair} {part} {how} b{batch} ({unit}) | {val(best):.1f} ({best['how']}) | {val(theirs[0]):.1f} | "
         f"{val(best) / val(theirs[0]):.2f} | {mfu} |")
for r in [x for x in peer if "error" in x or "skipped" in x]:
    emit(f"| {r['pair']} {r['part']} {r.get('net', '')} | | | | {r.get('skipped') or r['error'][:80]} |")
emit("\n| train (ours) | batch | samples/s | ms/step | peak GiB | MFU |\n|---|---:|---:|---:|---:|---:|")
for name in ("train.json", "train_cl_off.json"):
    for r in (load(name) or {"rows": []})["rows"]:
        if "error" in r:
            emit(f"| {r['preset']} | {r['batch']} | error: {r['error'][:60]} | | | |"); continue
        tag = " (contiguous)" if "cuda" in meta.get("device", "") and r["preset"] in ("digits", "peer") \
            and not r["channels_last"] else ""
        emit(f"| {r['preset']}{tag} | {r['batch']} | {r['samples_per_s']:.0f} | {r['ms_per_step']:.1f} | "
             f"{r['peak_gib']:.1f} | {r['mfu_pct']:.1f}% |")
emit("\n| pipeline sampling (ours) | fast | sample s | vocoder s | clips/s | audio s/s |\n|---|---|---:|---:|---:|---:|")
for name in ("sample_b1.json",):
    d = load(name)
    for r in (d or {"rows": []})["rows"]:
        emit(f"| b{r['batch_size']} {r['sampler']} {r['steps']} + {r['vocoder']} | {r['fast']} | {r['sample_s']:.3f} | "
             f"{r['vocode_s']:.3f} | {r['clips_per_s']:.1f} | {r['rtf']:.1f} |")
c = load("checks.json")
if c:
    emit("\nattention: " + "; ".join(f"{a['where']}: flash {'yes' if a['flash_usable'] else 'NO'} "
                                      f"({', '.join(a['kernels'][:1]) or '?'})" for a in c["attention"]))
    emit("host syncs per sampler step: " + ", ".join(f"fast={s['fast']}: {s['syncs_per_step']:.1f}" for s in c.get("syncs", [])))
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
EOF
echo "total $(( $(date +%s) - START )) s; results in $OUT"
