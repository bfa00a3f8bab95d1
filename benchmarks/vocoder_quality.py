"""Vocoder quality on held-out clips: audio -> mel -> vocoder -> audio, scored against the input.

    python benchmarks/vocoder_quality.py --clips DIR_OR_JSONL [--vocoders griffinlim,hifigan]
        [--json results.json] [--save-audio out_dir] [--device cpu]

Metrics (audiodiff.vocoders, lower is better for all):
- MR-STFT: multi-resolution STFT distance, spectral convergence + log-magnitude L1 over
  FFT sizes 512/1024/2048 (Yamamoto et al. 2020), and its two parts;
- LSD: log-spectral distance in dB (n_fft 2048);
- mel L1: mean |log-mel difference| in audiodiff's mel (natural log).
Speed is seconds of audio per second of wall time (after one warm-up call), per clip,
batch 1, on the chosen device and torch thread count.

Prints a markdown table (means over clips) and, with --json, writes every per-clip number.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

try:
    import audiodiff  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audiodiff.audio import AudioConfig, AudioFileError, MelSpec, load_audio
from audiodiff.manifest import resolve_audio_files
from audiodiff.metrics import log_spectral_distance, mel_l1_distance, multi_resolution_stft_distance
from audiodiff.vocoders import get_vocoder

METRICS = ("mr_stft", "spectral_convergence", "log_magnitude", "lsd_db", "mel_l1")


def score(vocoder, wave: torch.Tensor, mel_spec: MelSpec, config: AudioConfig,
          device: torch.device) -> tuple[dict, torch.Tensor]:
    """Metrics and timing of one clip [T] through `vocoder`; returns (row, vocoded clip)."""
    wave = wave.to(device)
    mel = mel_spec(wave[None])  # [1, n_mels, F]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        sync()
        start = time.perf_counter()
        out = vocoder(mel)  # [1, F * hop]
        sync()
        seconds = time.perf_counter() - start
        mr = multi_resolution_stft_distance(out, wave[None], return_components=True)
        return dict(
            mr_stft=mr["total"].item(), spectral_convergence=mr["spectral_convergence"].item(),
            log_magnitude=mr["log_magnitude"].item(),
            lsd_db=log_spectral_distance(out, wave[None]).item(),
            mel_l1=mel_l1_distance(out, wave[None], config).item(),
            audio_seconds=wave.shape[-1] / config.sample_rate, wall_seconds=seconds,
        ), out[0].cpu()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", required=True,
                        help="audio folder, prepared folder, .jsonl / wav.scp manifest or one file")
    parser.add_argument("--vocoders", default="griffinlim,hifigan", help="comma-separated vocoder names")
    parser.add_argument("--hifigan-checkpoint", default="universal", help="universal, ljspeech or a path")
    parser.add_argument("--gl-iters", type=int, default=32)
    parser.add_argument("--bf16", action="store_true", help="HiFi-GAN under bf16 autocast (CUDA only)")
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=10.0, help="read at most this much of each clip")
    parser.add_argument("--peak", type=float, default=None, help="peak-normalise clips to this level (e.g. 0.95)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write per-clip and mean results here")
    parser.add_argument("--save-audio", default=None, help="write each vocoded clip here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = AudioConfig()
    mel_spec = MelSpec(config).to(device)
    try:
        clips = resolve_audio_files(args.clips)[: args.max_clips]
    except (OSError, ValueError) as e:
        raise SystemExit(f"--clips: {e}") from None
    waves = {}
    for clip in clips:
        try:
            wave = load_audio(clip, config.sample_rate, max_seconds=args.max_seconds)
        except AudioFileError as e:
            print(f"skipping {e}", file=sys.stderr)
            continue
        if args.peak:
            wave = wave * (args.peak / wave.abs().max().clamp_min(1e-8))
        waves[clip] = wave

    results: dict = {"device": str(device), "torch": torch.__version__, "platform": platform.platform(),
                     "threads": torch.get_num_threads(), "clips": [str(c) for c in waves], "vocoders": {}}
    for name in [v.strip() for v in args.vocoders.split(",") if v.strip()]:
        kwargs = {"n_iter": args.gl_iters} if name == "griffinlim" else {}
        if name == "hifigan":
            kwargs = {"checkpoint": args.hifigan_checkpoint, "autocast_bf16": args.bf16}
        try:
            vocoder = get_vocoder(name, config, **kwargs).to(device)
        except (ValueError, ImportError, OSError) as e:
            raise SystemExit(f"vocoder {name}: {e}") from None
        torch.manual_seed(args.seed)
        with torch.no_grad():  # warm-up (allocator, kernels, thread pools)
            vocoder(mel_spec(next(iter(waves.values()))[None, : config.sample_rate].to(device)))
        rows = {}
        for clip, wave in waves.items():
            row, out = score(vocoder, wave, mel_spec, config, device)
            rows[str(clip)] = row
            if args.save_audio:
                from audiodiff.audio import save_audio
                save_audio(Path(args.save_audio) / name / f"{clip.stem}.wav", out, config.sample_rate)
        mean = {m: sum(r[m] for r in rows.values()) / len(rows) for m in METRICS}
        mean["audio_s_per_s"] = (sum(r["audio_seconds"] for r in rows.values())
                                 / sum(r["wall_seconds"] for r in rows.values()))
        results["vocoders"][name] = {"mean": mean, "clips": rows}

    print(f"\n{len(waves)} clips, device {device}, {torch.get_num_threads()} threads\n")
    print("| vocoder | MR-STFT | spectral conv. | log-mag L1 | LSD (dB) | mel L1 | audio s / s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results["vocoders"].items():
        m = r["mean"]
        print(f"| {name} | {m['mr_stft']:.3f} | {m['spectral_convergence']:.3f} | {m['log_magnitude']:.3f} "
              f"| {m['lsd_db']:.2f} | {m['mel_l1']:.3f} | {m['audio_s_per_s']:.1f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
