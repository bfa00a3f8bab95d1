"""Editing and long audio with a trained pipeline (AudioDiffusionPipeline inherits these methods):

    out = pipe.vary("in.wav", strength=0.4, labels=7)                    # SDEdit (invert=True: DDIM-invert first)
    out = pipe.inpaint("in.wav", regions=[(0.3, 0.5), ("-0:00.2", None)])   # RePaint; bins=(lo, hi) for mel bands
    out = pipe.extend("in.wav", seconds=30, side="right")                # any length, windows of the segment
    out = pipe.make_loop("in.wav", seam_seconds=0.3)                     # the end runs on into the start
    enc = pipe.encode("in.wav", steps=50, refine=3); out = pipe.decode(enc)
    out = pipe.interpolate("a.wav", "b.wav", alphas=(0, .25, .5, .75, 1))

A source is a file, a waveform tensor [T] or [B, T] with sample_rate=, an AudioOutput, or mel= [B, n_mels, F]
(normalised, the model's audio config). Edits happen in the normalised mel: the kept mel cells are the
input's, bit for bit, and with keep_audio (the default, when the source has audio) so are the kept
samples, joined to the new material by an equal-power crossfade of crossfade_ms just outside each
regenerated span. The math is audiodiff.diffusion.editing; every output's `edit` dict records the
snapped regions, network evaluations (nfe, per clip; guidance doubles each call's batch) and metrics.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from .audio import AudioConfig, MelSpec, load_audio, resample
from .diffusion.editing import (ddim_invert, repaint, repaint_plan, sdedit, seam_ratio, slerp, strength_start,
                                windows_per_step)
from .diffusion.samplers import ddim, get_sampler, per_sample_noise, visited
from .diffusion.schedules import NoiseSchedule
from .outputs import AudioOutput, EncodeOutput
from .regions import crossfade_splice, loop_metrics, parse_time

@dataclass
class Source:
    """An edit's input at the model's rate: mel [B, n_mels, F] (normalised, CPU) and audio [B, T] or None."""

    mel: torch.Tensor
    audio: torch.Tensor | None
    name: str


class EditingMixin:
    """vary, inpaint, extend, make_loop, encode, decode and interpolate for AudioDiffusionPipeline."""

    if TYPE_CHECKING:  # provided by AudioDiffusionPipeline (audiodiff.pipeline)
        audio_config: AudioConfig
        schedule: NoiseSchedule
        check_request: Callable[..., dict]
        start_noise: Callable[..., tuple[list, torch.Tensor]]
        to_state: Callable[..., torch.Tensor]
        from_state: Callable[..., torch.Tensor]
        sampling_eps_fn: Callable[..., Callable]
        cpu_threads: Callable[..., Any]
        window_for: Callable[..., int | None]
        vocode: Callable[..., torch.Tensor]
        vocode_loop: Callable[..., torch.Tensor]
        __call__: Callable[..., AudioOutput]

    # ---- inputs

    def load_source(self, src, sample_rate: int | None = None, mel: torch.Tensor | None = None) -> Source:
        """A source (see the module docstring) at the model's rate and in its normalised mel."""
        c = self.audio_config
        if mel is not None:
            if mel.dim() == 2:
                mel = mel.unsqueeze(0)
            if mel.dim() != 3 or mel.shape[1] != c.n_mels or mel.shape[-1] < 2:
                raise ValueError(f"mel of shape {tuple(mel.shape)} is not [B, n_mels={c.n_mels}, F >= 2]")
            return Source(mel.float().cpu(), None, "mel")
        if isinstance(src, AudioOutput):
            if src.mel is not None:
                return Source(src.mel.float().cpu(), src.audio.float().cpu(), "output")
            src, sample_rate = src.audio, src.sample_rate
        if isinstance(src, (str, os.PathLike)):
            audio, name = load_audio(Path(src), c.sample_rate)[None], os.fspath(src)
        elif isinstance(src, torch.Tensor):
            if sample_rate is None:
                raise ValueError("a waveform tensor needs its sample_rate= (e.g. sample_rate=22050)")
            if src.dim() not in (1, 2) or src.shape[-1] == 0:
                raise ValueError(f"a waveform of shape {tuple(src.shape)} is not [T] or [B, T]")
            audio, name = src.float().cpu().reshape(-1, src.shape[-1]), "tensor"
            if int(sample_rate) != c.sample_rate:
                audio = torch.stack([resample(a, int(sample_rate), c.sample_rate) for a in audio])
        else:
            raise ValueError(f"source {type(src).__name__} is not a file, a waveform tensor, an AudioOutput or mel=")
        if audio.shape[-1] <= c.n_fft // 2:
            raise ValueError(f"{name}: {audio.shape[-1]} samples is too short (more than {c.n_fft // 2} needed)")
        return Source(MelSpec(c)(audio), audio, name)

    def _frames(self, seconds: float) -> int:
        return round(seconds * self.audio_config.sample_rate / self.audio_config.hop_length)

    def region_mask(self, frames: int, regions, bins=None) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Mask [n_mels or 1, F] (True: generate) of regions [(start, end)] in seconds or mm:ss.s (None: the
        clip's start or end; negative: from the end), snapped to frames, optionally limited to mel bins
        (lo, hi). Returns the mask and the snapped frame spans."""
        total = frames * self.audio_config.hop_length / self.audio_config.sample_rate
        if not regions:
            raise ValueError("regions is empty: give at least one (start, end) in seconds")
        spans = []
        for region in regions:
            if not isinstance(region, (list, tuple)) or len(region) != 2:
                raise ValueError(f"region {region!r} is not a (start, end) pair")
            start = 0.0 if region[0] is None else parse_time(region[0], total)
            end = total if region[1] is None else parse_time(region[1], total)
            a, b = max(0, self._frames(start)), min(frames, self._frames(end))
            if b <= a:
                raise ValueError(f"region {region!r} is empty after snapping to frames ({start:.3f} s to {end:.3f} s "
                                 f"of a {total:.3f} s clip)")
            spans.append((a, b))
        mask = torch.zeros(1, frames, dtype=torch.bool)
        for a, b in spans:
            mask[:, a:b] = True
        if bins is not None:
            lo, hi = (int(v) for v in bins)
            if not 0 <= lo < hi <= self.audio_config.n_mels:
                raise ValueError(f"bins=({lo}, {hi}) must satisfy 0 <= lo < hi <= n_mels={self.audio_config.n_mels}")
            band = torch.zeros(self.audio_config.n_mels, 1, dtype=torch.bool)
            band[lo:hi] = True
            mask = mask & band
        return mask, sorted(spans)

    # ---- the shared RePaint run (inpaint, extend, make_loop)

    def _repaint(self, mel, mask, *, steps, sampler, resample, jump, eta, seed, labels, guidance_scale,
                 guidance_interval, precision, window_frames, stride_frames, circular=False, progress=True):
        from tqdm.auto import tqdm

        batch = mel.shape[0]
        request = self.check_request(batch_size=batch, steps=steps, sampler="ddpm", seed=seed, labels=labels,
                                     guidance_scale=guidance_scale, guidance_interval=guidance_interval)
        plan = repaint_plan(len(visited(self.schedule, steps)), resample, jump)  # checks resample and jump
        generators, z = self.start_noise(batch, seed, mel.shape[-1])
        window = self.window_for(mel.shape[-1], window_frames, circular)
        eps_fn = self.sampling_eps_fn(request["labels"], guidance_scale, request["guidance_interval"], precision,
                                      True, z, window, stride_frames, circular=circular)
        bar = tqdm(total=len(plan) - 1, desc=f"inpaint x{batch}", disable=not progress, leave=False)
        guided = float(guidance_scale) != 1.0 and request["labels"] is not None
        try:
            with torch.inference_mode(), self.cpu_threads(batch, window or mel.shape[-1], guided):
                x = repaint(eps_fn, self.to_state(mel), mask.to(self.device), self.schedule, steps, z, sampler=sampler,
                            resample=resample, jump=jump, eta=eta, noise=per_sample_noise(generators, z),
                            callback=lambda i, n: bar.update(1))
        finally:
            bar.close()
        out = torch.where(mask, self.from_state(x).cpu(), mel)  # the kept cells: the input's, bit for bit
        downs = sum(b > a for a, b in zip(plan, plan[1:]))
        nfe = downs * windows_per_step(mel.shape[-1], window, stride_frames, circular)
        return out, z.cpu(), request["labels"], nfe

    def _finish(self, op, src, out_mel, mask, spans, audio, seed, labels, noise, nfe, keep_audio, fade,
                sample_spans=None, **extra):
        """The AudioOutput of an edit: kept samples spliced back (keep_audio), metrics, the edit record."""
        hop = self.audio_config.hop_length
        sr = self.audio_config.sample_rate
        sample_spans = [(a * hop, b * hop) for a, b in spans] if sample_spans is None else sample_spans
        kept = ~mask.expand_as(out_mel)
        metrics = {"kept_max_abs": float((out_mel - src.mel)[kept].abs().max()) if kept.any() and
                   src.mel.shape == out_mel.shape else 0.0,
                   "seam_flux_ratio": None, "nfe": nfe}
        inner = [b for s in spans for b in s if 0 < b < out_mel.shape[-1]]
        if inner:  # mel flux across each boundary over the median flux inside (1: no seam)
            metrics["seam_flux_ratio"] = seam_ratio(out_mel, inner)
        if keep_audio and audio is not None and src.audio is not None and src.audio.shape == audio.shape:
            outside = torch.ones(audio.shape[-1], dtype=torch.bool)
            for a, b in sample_spans:
                outside[max(0, a - fade):b + fade] = False
            if outside.any():  # some samples are kept: splice them back
                # new material louder than full scale is turned down, not the file: the kept samples stay exact
                peak = max([float(audio[:, max(0, a - fade):b + fade].abs().max()) for a, b in sample_spans] + [0.0])
                if peak > 0.99:
                    audio = audio * (0.99 / peak)
                    metrics["new_material_gain_db"] = 20 * math.log10(0.99 / peak)
                audio = crossfade_splice(src.audio, audio, sample_spans, fade)
                metrics["kept_audio_max_abs"] = float((audio - src.audio)[:, outside].abs().max())
        edit = {"op": op, "source": src.name, "regions_frames": spans,
                "regions_seconds": [(a * hop / sr, b * hop / sr) for a, b in spans],
                "nfe": nfe, "metrics": metrics, **extra}
        return AudioOutput(audio=audio.contiguous(), sample_rate=self.audio_config.sample_rate,
                           seeds=[seed + i for i in range(out_mel.shape[0])], labels=labels, mel=out_mel,
                           mask=(mask[0] if mask.shape[0] == 1 else mask).expand(out_mel.shape[0], *mask.shape[-2 if
                                 mask.shape[0] > 1 else -1:]).clone(), edit=edit, noise=noise)

    # ---- operations

    def vary(self, src, strength: float = 0.5, steps: int = 25, sampler: str = "dpmpp", seed: int = 0, labels=None,
             guidance_scale: float = 1.0, guidance_interval=None, invert: bool = False, refine: int = 3,
             source_labels=None, eta: float = 0.0, keep_audio: bool = True, sample_rate: int | None = None,
             mel: torch.Tensor | None = None, precision: str = "auto", progress: bool = True) -> AudioOutput:
        """SDEdit: a variation of the source. strength is the fraction of the T training steps (0: the input,
        bit for bit; 1: fresh noise, i.e. exactly pipe(seed=...)); labels steer towards a class (a label
        swap). invert=True reaches the starting level by DDIM inversion (with source_labels) instead of noise."""
        src = self.load_source(src, sample_rate, mel)
        batch, frames = src.mel.shape[0], src.mel.shape[-1]
        request = self.check_request(batch_size=batch, steps=steps, sampler=sampler, seed=seed, labels=labels,
                                     guidance_scale=guidance_scale, eta=eta, guidance_interval=guidance_interval)
        start = strength_start(self.schedule, strength)
        ts = visited(self.schedule, steps, start=start)
        generators, z = self.start_noise(batch, seed, frames)
        window = self.window_for(frames)
        eps_fn = self.sampling_eps_fn(request["labels"], guidance_scale, request["guidance_interval"], precision,
                                      True, z, window)
        x0 = self.to_state(src.mel)
        noise = per_sample_noise(generators, z)
        kwargs: dict[str, Any] = {"eta": float(eta)} if sampler == "ddim" else {}
        nfe = len(ts)
        with torch.inference_mode(), self.cpu_threads(batch, window or frames, guidance_scale != 1.0):
            if invert and len(ts):
                src_labels = self.check_request(batch_size=batch, labels=source_labels)["labels"]
                inv_fn = self.sampling_eps_fn(src_labels, 1.0, None, precision, True, z, window)
                x_t = ddim_invert(inv_fn, x0, self.schedule, steps, refine=refine, start=start)
                x = get_sampler(sampler)(eps_fn, x_t, self.schedule, steps, noise=noise, start=start, **kwargs)
                nfe += len(ts) * (1 + refine)
            else:
                x = sdedit(eps_fn, x0, self.schedule, steps, strength, z, sampler=sampler, noise=noise, **kwargs)
        mask = torch.full((1, frames), len(ts) > 0)
        out = torch.where(mask, self.from_state(x).cpu(), src.mel)
        audio = src.audio if (not len(ts) and src.audio is not None) else self._vocode_like(out, src, seed)
        nfe *= windows_per_step(frames, window)
        return self._finish("vary", src, out, mask, [(0, frames)] if len(ts) else [], audio, seed,
                            request["labels"], z.cpu(), nfe, keep_audio, 0, strength=float(strength),
                            invert=bool(invert), steps_run=len(ts))

    def _vocode_like(self, mel, src, seed):
        audio = self.vocode(mel, seed=seed)
        return audio[:, :src.audio.shape[-1]] if src.audio is not None else audio

    def inpaint(self, src, regions, bins=None, steps: int = 50, sampler: str = "ddpm", resample: int = 5,
                jump: int = 1, eta: float = 0.0, seed: int = 0, labels=None, guidance_scale: float = 1.0,
                guidance_interval=None, keep_audio: bool = True, crossfade_ms: float = 20.0,
                sample_rate: int | None = None, mel: torch.Tensor | None = None, window_frames="auto",
                stride_frames: int | None = None, precision: str = "auto", progress: bool = True) -> AudioOutput:
        """RePaint: regenerate the regions [(start, end)] (seconds or mm:ss.s; None = clip start/end;
        negative = from the end), optionally only mel bins (lo, hi); everything else is kept."""
        src = self.load_source(src, sample_rate, mel)
        mask, spans = self.region_mask(src.mel.shape[-1], regions, bins)
        out, z, labels, nfe = self._repaint(src.mel, mask, steps=steps, sampler=sampler, resample=resample, jump=jump,
                                            eta=eta, seed=seed, labels=labels, guidance_scale=guidance_scale,
                                            guidance_interval=guidance_interval, precision=precision,
                                            window_frames=window_frames, stride_frames=stride_frames,
                                            progress=progress)
        audio = self._vocode_like(out, src, seed)
        return self._finish("inpaint", src, out, mask, spans, audio, seed, labels, z, nfe, keep_audio,
                            self._fade(crossfade_ms), resample=resample, bins=None if bins is None else list(bins))

    def _fade(self, crossfade_ms: float) -> int:
        if not (isinstance(crossfade_ms, (int, float)) and 0 <= crossfade_ms <= 1000):
            raise ValueError(f"crossfade_ms={crossfade_ms!r} must be from 0 to 1000")
        return round(crossfade_ms * self.audio_config.sample_rate / 1000)

    def extend(self, src, seconds: float, side: str = "right", steps: int = 50, sampler: str = "ddpm",
               resample: int = 5, jump: int = 1, eta: float = 0.0, seed: int = 0, labels=None,
               guidance_scale: float = 1.0, guidance_interval=None, keep_audio: bool = True,
               crossfade_ms: float = 20.0, sample_rate: int | None = None, mel: torch.Tensor | None = None,
               window_frames="auto", stride_frames: int | None = None, precision: str = "auto",
               progress: bool = True) -> AudioOutput:
        """Add `seconds` of new audio on the right, the left or both sides (half each), continuing the source;
        any length, denoised in windows of the training segment. The added time snaps to whole frames."""
        if side not in ("right", "left", "both"):
            raise ValueError(f"side={side!r} is not right, left or both")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < 3600:
            raise ValueError(f"seconds={seconds!r} must be a number above 0 (seconds to add) and below 3600")
        src = self.load_source(src, sample_rate, mel)
        add = max(1, self._frames(seconds))
        left = {"right": 0, "left": add, "both": add // 2}[side]
        right = add - left
        m = src.mel
        fill = m.amin()
        grown = torch.cat([m.new_full((*m.shape[:2], left), fill), m, m.new_full((*m.shape[:2], right), fill)], -1)
        mask = torch.zeros(1, grown.shape[-1], dtype=torch.bool)
        mask[:, :left] = True
        mask[:, grown.shape[-1] - right:] = True
        out, z, labels, nfe = self._repaint(grown, mask, steps=steps, sampler=sampler, resample=resample, jump=jump,
                                            eta=eta, seed=seed, labels=labels, guidance_scale=guidance_scale,
                                            guidance_interval=guidance_interval, precision=precision,
                                            window_frames=window_frames, stride_frames=stride_frames,
                                            progress=progress)
        hop = self.audio_config.hop_length
        spans = [s for s in ((0, left), (grown.shape[-1] - right, grown.shape[-1])) if s[1] > s[0]]
        audio = self.vocode(out, seed=seed)
        grown_src, sample_spans = Source(grown, None, src.name), None
        if src.audio is not None:  # exactly the source's samples plus the added frames' worth
            length = src.audio.shape[-1] + add * hop
            audio = audio[:, :length]
            placed = torch.zeros(src.audio.shape[0], length)
            placed[:, left * hop:left * hop + src.audio.shape[-1]] = src.audio
            grown_src = Source(grown, placed, src.name)
            sample_spans = [s for s in ((0, left * hop), (left * hop + src.audio.shape[-1], length)) if s[1] > s[0]]
        return self._finish("extend", grown_src, out, mask, spans, audio, seed, labels, z, nfe, keep_audio,
                            self._fade(crossfade_ms), sample_spans, side=side, added_frames=add,
                            added_seconds=add * hop / self.audio_config.sample_rate)

    def make_loop(self, src, seam_seconds: float = 0.3, steps: int = 50, sampler: str = "ddpm", resample: int = 5,
                  jump: int = 1, eta: float = 0.0, seed: int = 0, labels=None, guidance_scale: float = 1.0,
                  guidance_interval=None, keep_audio: bool = True, crossfade_ms: float = 20.0,
                  sample_rate: int | None = None, mel: torch.Tensor | None = None, window_frames="auto",
                  stride_frames: int | None = None, precision: str = "auto", progress: bool = True) -> AudioOutput:
        """Make the source loop: its seam (end -> start) is rolled to the middle and the seam_seconds on each
        side are regenerated under circular windows; the result is one period of (frames x hop) samples."""
        src = self.load_source(src, sample_rate, mel)
        hop, c = self.audio_config.hop_length, self.audio_config
        if src.audio is not None:  # one period of whole frames, its mel computed as if it repeated
            period = (src.audio.shape[-1] // hop) * hop
            a = src.audio[:, :period]
            pad = c.n_fft // 2
            if pad % hop == 0 and period > pad:
                mel_full = MelSpec(c)(torch.cat([a[:, -pad:], a, a[:, :pad]], -1))
                src = Source(mel_full[..., pad // hop:pad // hop + period // hop], a, src.name)
            else:
                src = Source(src.mel[..., :period // hop], a, src.name)
        frames = src.mel.shape[-1]
        seam = self._frames(seam_seconds) if isinstance(seam_seconds, (int, float)) else -1
        if not 1 <= seam <= frames // 2 - 1:
            raise ValueError(f"seam_seconds={seam_seconds!r} must be at least one frame and under a half of the "
                             f"{frames * hop / self.audio_config.sample_rate:.2f} s clip")
        shift = frames // 2
        rolled = torch.roll(src.mel, shift, -1)
        mask = torch.zeros(1, frames, dtype=torch.bool)
        mask[:, shift - seam:shift + seam] = True
        out, z, labels, nfe = self._repaint(rolled, mask, steps=steps, sampler=sampler, resample=resample, jump=jump,
                                            eta=eta, seed=seed, labels=labels, guidance_scale=guidance_scale,
                                            guidance_interval=guidance_interval, precision=precision,
                                            window_frames=window_frames, stride_frames=stride_frames, circular=True,
                                            progress=progress)
        audio = self.vocode_loop(out, seed=seed)
        rolled_src = Source(rolled, None if src.audio is None else torch.roll(src.audio, shift * hop, -1), src.name)
        result = self._finish("loop", rolled_src, out, mask, [(shift - seam, shift + seam)], audio, seed, labels, z,
                              nfe, keep_audio, self._fade(crossfade_ms),
                              seam_seconds=seam * hop / self.audio_config.sample_rate)
        result.mel = torch.roll(result.mel, -shift, -1)
        result.audio = torch.roll(result.audio, -shift * hop, -1).contiguous()
        result.mask = torch.roll(result.mask, -shift, -1)
        result.edit["regions_frames"] = [(0, seam), (frames - seam, frames)]
        result.edit["metrics"].update(loop_metrics(result.mel, result.audio))
        return result

    def encode(self, src, steps: int = 50, refine: int = 3, labels=None, guidance_scale: float = 1.0,
               guidance_interval=None, sample_rate: int | None = None, mel: torch.Tensor | None = None,
               window_frames="auto", precision: str = "auto", progress: bool = True) -> EncodeOutput:
        """The noise x_T whose deterministic DDIM decoding (decode, same settings) gives the source back:
        DDIM inversion with `refine` fixed-point iterations per step (0: the plain inversion, far less
        exact). The relative round-trip error in the normalised mel is measured and returned."""
        src = self.load_source(src, sample_rate, mel)
        batch, frames = src.mel.shape[0], src.mel.shape[-1]
        request = self.check_request(batch_size=batch, steps=steps, sampler="ddim", labels=labels,
                                     guidance_scale=guidance_scale, guidance_interval=guidance_interval)
        x0 = self.to_state(src.mel)
        window = self.window_for(frames, window_frames)
        eps_fn = self.sampling_eps_fn(request["labels"], guidance_scale, request["guidance_interval"], precision,
                                      True, x0, window)
        with torch.inference_mode(), self.cpu_threads(batch, window or frames, guidance_scale != 1.0):
            z = ddim_invert(eps_fn, x0, self.schedule, steps, refine=refine)
            back = self.from_state(ddim(eps_fn, z, self.schedule, steps)).cpu()
        error = ((back - src.mel).flatten(1).norm(dim=1) / src.mel.flatten(1).norm(dim=1).clamp(min=1e-12)).tolist()
        return EncodeOutput(noise=z.cpu(), roundtrip_error=error, steps=steps, labels=request["labels"],
                            guidance_scale=float(guidance_scale), guidance_interval=request["guidance_interval"],
                            refine=refine)

    def decode(self, encoded: EncodeOutput, seed: int = 0, window_frames="auto", precision: str = "auto",
               progress: bool = True) -> AudioOutput:
        """Audio from encode's noise: deterministic DDIM with the settings it was encoded with."""
        return self(noise=encoded.noise, sampler="ddim", steps=encoded.steps, labels=encoded.labels, seed=seed,
                    guidance_scale=encoded.guidance_scale, guidance_interval=encoded.guidance_interval,
                    window_frames=window_frames, precision=precision, progress=progress, return_mel=True)

    def interpolate(self, a, b, alphas=(0.0, 0.25, 0.5, 0.75, 1.0), steps: int = 50, refine: int = 3, labels=None,
                    sample_rate: int | None = None, precision: str = "auto", progress: bool = True) -> AudioOutput:
        """Clips between a and b: both encoded, their noises slerped per alpha, decoded (one clip per alpha;
        alpha 0 and 1 are the round trips of a and b). The longer source is cut to the shorter."""
        alphas = [float(v) for v in alphas]
        if not alphas or not all(0 <= v <= 1 for v in alphas):
            raise ValueError(f"alphas={alphas!r} must be numbers from 0 (a) to 1 (b)")
        sa, sb = self.load_source(a, sample_rate), self.load_source(b, sample_rate)
        frames = min(sa.mel.shape[-1], sb.mel.shape[-1])
        encoded = [self.encode(None, steps=steps, refine=refine, labels=labels, mel=s.mel[:1, :, :frames],
                               precision=precision, progress=progress) for s in (sa, sb)]
        n = len(alphas)
        z = slerp(encoded[0].noise.expand(n, -1, -1), encoded[1].noise.expand(n, -1, -1), torch.tensor(alphas))
        out = self(noise=z, sampler="ddim", steps=steps, labels=None if labels is None else [labels] * n,
                   precision=precision, progress=progress, return_mel=True)
        out.noise = z
        out.edit = {"op": "interpolate", "sources": [sa.name, sb.name], "alphas": alphas, "frames": frames,
                    "nfe": 2 * steps * (2 + refine) + steps,
                    "metrics": {"roundtrip_rel_error": [e.roundtrip_error[0] for e in encoded]}}
        return out

