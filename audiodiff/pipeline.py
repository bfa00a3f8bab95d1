"""AudioDiffusionPipeline: a trained mel diffusion model plus a vocoder, from noise to waveforms.

    from audiodiff import AudioDiffusionPipeline

    pipe = AudioDiffusionPipeline.from_pretrained("egs/digits/exp/smoke")   # run or model directory
    out = pipe(batch_size=4, steps=25, sampler="dpmpp", seed=0, labels=[0, 1, 2, 3])
    out.audio.shape, out.sample_rate                                       # [4, T] float32, 22050
    pipe.save_pretrained("models/digits")                                  # config.yaml + model.safetensors

A *run directory* is what `python -m audiodiff.train` writes (config.yaml, checkpoints/); the
newest checkpoint that verifies is used, with its EMA weights. A *model directory* is what
`save_pretrained` writes: config.yaml (audio, net, diffusion, num_classes, segment_frames) and
model.safetensors. Weights are read with safetensors or torch.load(weights_only=True) only, and a
config may only build classes from the audiodiff package.

Determinism: sample i of a call uses seed + i, with its own CPU torch.Generator for its starting
noise and every per-step noise draw, so a clip depends on its seed alone, not on the batch it was
drawn in (bit-exact on the CPU; on CUDA under bf16 autocast up to kernel choice).
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import fast
from .audio import AudioConfig
from .config import pipeline_model_config
from .diffusion.guidance import check_eps_scaling, clip_x0, make_eps_fn, scale_eps
from .diffusion.objectives import PREDICTIONS
from .diffusion.editing import window_eps_fn, windows_per_step
from .diffusion.samplers import get_sampler, per_sample_noise
from .diffusion.scaling import DataScaler
from .editing import EditingMixin
from .hub import (ModelLoadError, build_net, check_request, hifigan_checkpoint, load_weights, match_weights,
                  read_model_config, save_model_dir)
from .outputs import AudioOutput
from .regions import loop_metrics
from .runtime import pick_device
from .vocoders import IncompatibleVocoderError, check_compatible, get_vocoder, vocoder_key

PRECISIONS = ("auto", "bf16", "fp32")


# --------------------------------------------------------------------------- the pipeline

class AudioDiffusionPipeline(EditingMixin):
    """Noise -> sampler(net) -> normalised mel -> vocoder -> waveform.

        pipe = AudioDiffusionPipeline.from_pretrained("exp/digits")        # or AudioDiffusionPipeline(net, ...)
        out = pipe(batch_size=2, steps=25, seed=0)                           # AudioOutput
        save_audio("a.wav", out.audio[0], out.sample_rate)
        out = pipe(batch_size=2, labels=[3, 7], guidance_scale=3.0)          # class-conditional + CFG
        pipe.to("cuda").save_pretrained("models/digits")

    Args:
        net: the denoiser, net(x [B, n_mels, F], t [B], labels=None) -> [B, n_mels, F].
        schedule: the NoiseSchedule it was trained with.
        audio_config: the mel the net was trained on.
        prediction: what the net predicts: "eps", "v" or "x0".
        num_classes: 0 = unconditional; else labels 0..num_classes-1 and null label num_classes.
        vocoder: a Vocoder module; a name for audiodiff.vocoders.get_vocoder ("griffinlim", "hifigan");
            a fine-tuned HiFi-GAN's generator.pt or its train_vocoder run folder; None = Griffin-Lim.
        config: the model config (audio, net, diffusion, num_classes, segment_frames) that save_pretrained
            writes; built from the net's `.config` when not given.
        segment_frames: default frame count per clip (the training segment); overrides config's.

    The net is put in eval mode; nothing else about it (device, gradients) is changed until `.to()`,
    except that the CUDA fast path stores a 2D net's weights channels_last.

    Attribute `fast` (default True) selects the fast path (audiodiff.fast): on CUDA, the denoiser
    step replayed from a cached CUDA graph; "compile" adds torch.compile; on the CPU, one thread for
    small nets. False gives the plain eager path. Samples agree to float rounding either way.

    Attribute `eps_scaling` (lambda; 1 = off, else config diffusion.eps_scaling): sampling steps divide the noise
    estimate by it (guidance.scale_eps, after guidance); only at sigma <= diffusion.eps_scaling_max_sigma if set.
    """

    path: Path  # set by from_pretrained only: the model's folder and the weights file
    source: Path

    def __init__(self, net: nn.Module, schedule, audio_config: AudioConfig, prediction: str = "eps",
                 num_classes: int = 0, vocoder=None, config: dict | None = None,
                 segment_frames: int | None = None) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction={prediction!r} is not known; choose one of {', '.join(PREDICTIONS)}")
        if isinstance(audio_config, dict):
            audio_config = AudioConfig.from_dict(audio_config)
        net_classes = getattr(net, "num_classes", None)
        if net_classes is not None and int(net_classes) != int(num_classes):
            raise ValueError(f"num_classes={num_classes} but the net was built with num_classes={net_classes}")
        self.net = net.eval()  # sampling runs under inference_mode; gradients stay as they were
        self.schedule = schedule
        self.audio_config = audio_config
        self.prediction = prediction
        self.num_classes = int(num_classes)
        self.config = pipeline_model_config(net, schedule, prediction, audio_config, self.num_classes, config,
                                            segment_frames)
        self.segment_frames = int(self.config["segment_frames"])
        self.scaler = DataScaler.from_config(self.config.get("diffusion"), audio_config.n_mels)  # None: identity
        self.vocoder: Any = None  # a Vocoder module or any callable mel -> waveform; set just below
        self.vocoder_name: str | None = None
        self.set_vocoder("griffinlim" if vocoder is None else vocoder)
        self.fast = True
        self._graphs: OrderedDict = OrderedDict()  # audiodiff.fast's captured denoisers

    # ---- vocoder

    def set_vocoder(self, vocoder) -> "AudioDiffusionPipeline":
        """Use `vocoder` (a Vocoder module, a name for get_vocoder, or a HiFi-GAN generator.pt / vocoder run
        folder); its audio config must match the model's, else IncompatibleVocoderError naming both values."""
        if isinstance(vocoder, (str, os.PathLike)):
            name = str(vocoder)
            key = vocoder_key(name)
            if key == "griffinlim":  # zero phase: same seed, same bytes (MR-STFT to a noisy chirp 2.95, random 2.99)
                vocoder = get_vocoder("griffinlim", self.audio_config, rand_init=False)
            elif key == "hifigan" or not Path(name).exists():
                vocoder = get_vocoder(name, self.audio_config)
            else:  # a fine-tuned HiFi-GAN: train_vocoder's generator.pt, or the run folder holding it
                file = hifigan_checkpoint(name)
                try:
                    vocoder = get_vocoder("hifigan", self.audio_config, checkpoint=file)
                except IncompatibleVocoderError:
                    raise
                except Exception as e:  # torch.load's errors on a file that is no checkpoint are not ValueErrors
                    reason = " ".join(str(e).split())[:200] or type(e).__name__
                    raise ValueError(f"{file}: cannot load a HiFi-GAN generator ({reason})") from None
        else:
            name = getattr(vocoder, "name", type(vocoder).__name__)
        check_compatible(vocoder, self.audio_config)
        if isinstance(vocoder, nn.Module):
            vocoder = vocoder.eval().to(self.device)
        self.vocoder, self.vocoder_name = vocoder, name
        return self

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device=None, vocoder="griffinlim") -> "AudioDiffusionPipeline":
        """Load a training run directory (newest good checkpoint, EMA weights), a checkpoint file in a run's
        checkpoints/, or a model directory from save_pretrained. Errors are one-line ModelLoadErrors."""
        spec = read_model_config(path)
        net, schedule = build_net(spec)
        weights, source, step = load_weights(spec)
        match_weights(net, weights, source, spec.path / "config.yaml")
        config = {**spec.config, "source": str(source), **({} if step is None else {"step": int(step)})}
        try:
            pipe = cls(net, schedule, spec.audio_config, prediction=spec.prediction, num_classes=spec.num_classes,
                       vocoder=vocoder, config=config)
        except ValueError as e:
            raise ModelLoadError(f"{spec.path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        pipe.path = spec.path
        pipe.source = source
        return pipe.to(pick_device(device))

    # ---- saving, device

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write `path/config.yaml` + `path/model.safetensors` atomically (a temporary folder beside `path`,
        then a rename). An existing model directory is replaced; any other non-empty folder is refused."""
        return save_model_dir(path, self.config, self.net.state_dict())

    def to(self, device) -> "AudioDiffusionPipeline":
        """Move the net, the schedule tables and the vocoder to `device` (in place; returns self)."""
        device = torch.device(device)
        self._graphs.clear()
        self.net.to(device)
        self.schedule.to(device)
        if isinstance(self.vocoder, nn.Module):
            self.vocoder.to(device)
        return self

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def eps_scaling(self) -> float:
        return float(self.config["diffusion"].get("eps_scaling", 1.0))

    @eps_scaling.setter
    def eps_scaling(self, value) -> None:  # kept in config, so save_pretrained writes it
        self.config["diffusion"]["eps_scaling"] = check_eps_scaling(value)

    @property
    def sample_rate(self) -> int:
        return self.audio_config.sample_rate

    def __repr__(self) -> str:
        return (f"AudioDiffusionPipeline(net={type(self.net).__name__} "
                f"{sum(p.numel() for p in self.net.parameters()):,} params, {self.schedule!r}, "
                f"prediction={self.prediction!r}, num_classes={self.num_classes}, vocoder={self.vocoder_name!r}, "
                f"{self.sample_rate} Hz x {self.audio_config.n_mels} mels, device={self.device})")

    # ---- sampling

    def check_request(self, **kw) -> dict:  # validate sampling arguments (hub.check_request)
        return check_request(self.num_classes, self.schedule.num_steps, self.audio_config, self.segment_frames, **kw)

    def data_range(self) -> tuple[float, float]:  # normalised mels: [-1, 1] minmax, [log floor, log max] none
        return self.audio_config.data_range

    # ---- the pieces of sampling (shared with the edits in audiodiff.editing)

    def start_noise(self, batch_size: int, seed: int, frames: int) -> tuple[list, torch.Tensor]:
        """One CPU generator per sample (seed + i) and the starting noise x_T [B, n_mels, F] drawn from them,
        so a clip depends on its seed alone, on any device and in any batch."""
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch_size)]
        shape = (self.audio_config.n_mels, frames)
        x_T = torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
        return generators, x_T.to(self.device)

    def to_state(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised mel -> the units the sampler works in (the per-bin standardisation, if any)."""
        mel = mel.to(self.device).float()
        return mel if self.scaler is None else self.scaler.encode(mel)

    def from_state(self, x: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """Sampler units -> normalised mel, clamped to the data range when clip (see sample_mel)."""
        mel = x.float() if self.scaler is None else self.scaler.decode(x.float())
        return mel.clamp(*self.data_range()) if clip else mel

    def sampling_eps_fn(self, labels=None, guidance_scale: float = 1.0, guidance_interval=None,
                        precision: str = "auto", clip: bool = True, x_T: torch.Tensor | None = None,
                        window: int | None = None, stride: int | None = None, circular: bool = False):
        """The eps_fn(x_t, t) the samplers take: labels bound, guidance, bf16 autocast on CUDA, windows
        (diffusion.editing.window_eps_fn over x_T's frames) and static thresholding (guidance.clip_x0).
        The CUDA graph path is used when x_T is given and no windows are."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
        device = self.device
        use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
        label_tensor = None if labels is None else torch.tensor(labels, device=device)
        windowed = x_T is not None and window is not None and (circular or window < x_T.shape[-1])
        mode = fast.resolve_mode(self.fast, device)
        if mode != "eager" and x_T is not None and not windowed:  # CUDA: a captured graph (audiodiff.fast)
            fast.prepare_net(self.net, device)
            eps_fn = fast.graphed_eps_fn(self._graphs, self.net, self.schedule, self.prediction, x_T, label_tensor,
                                         float(guidance_scale), self.num_classes, use_bf16, mode,
                                         guidance_interval=guidance_interval)
        else:
            eps_fn = make_eps_fn(self.net, self.schedule, self.prediction, labels=label_tensor,
                                 guidance_scale=float(guidance_scale), null_label=self.num_classes,
                                 guidance_interval=guidance_interval)
            if use_bf16:  # autocast at the network boundary only; the sampler stays float32
                eps_fn = fast.bf16_eps_fn(eps_fn, device.type)
            if windowed:
                assert x_T is not None and window is not None
                eps_fn = window_eps_fn(eps_fn, x_T.shape[-1], window, stride, circular=circular)
        eps_fn = scale_eps(eps_fn, self.eps_scaling, self.schedule,
                           self.config["diffusion"].get("eps_scaling_max_sigma"))
        if clip:
            low: float | torch.Tensor
            high: float | torch.Tensor
            low, high = self.data_range()
            if self.scaler is not None:
                low, high = self.scaler.bounds(low, high, device)  # [n_mels, 1] each
            eps_fn = clip_x0(eps_fn, self.schedule, low, high)
        return eps_fn

    def cpu_threads(self, batch_size: int, frames: int, guided: bool):
        """fast.cpu_threads(n) for sampling this batch on the CPU (one thread for small nets)."""
        threads = None
        if self.device.type == "cpu" and self.fast:
            flops = fast.net_forward_flops(self.net, self.audio_config.n_mels, frames)
            threads = fast.cpu_threads_for(None if flops is None else flops * batch_size * (2 if guided else 1))
        return fast.cpu_threads(threads)

    def window_for(self, frames: int, window_frames="auto", loop: bool = False) -> int | None:
        """The window of window_eps_fn: "auto" = the training segment when the clip is longer (or loops),
        None = the net sees the whole length at once."""
        if window_frames == "auto":
            return self.segment_frames if (loop or frames > self.segment_frames) else None
        if window_frames is None:
            return None
        if isinstance(window_frames, bool) or not isinstance(window_frames, int) or window_frames < 2:
            raise ValueError(f"window_frames={window_frames!r} must be a whole number of frames >= 2 "
                             f"(e.g. the training segment, {self.segment_frames}), 'auto' or None")
        return window_frames

    @torch.inference_mode()
    def sample_mel(self, batch_size: int = 1, steps: int = 25, sampler: str = "dpmpp", seed: int = 0, labels=None,
                   guidance_scale: float = 1.0, seconds: float | None = None, eta: float = 0.0,
                   progress: bool = True, precision: str = "auto", clip: bool = True,
                   guidance_interval=None, noise: torch.Tensor | None = None, window_frames="auto",
                   stride_frames: int | None = None, loop: bool = False) -> torch.Tensor:
        """Sample normalised mels [B, n_mels, F] (float32, on the pipeline's device); no vocoder.

        guidance_interval: (sigma_low, sigma_high): guidance only at noise levels sigma in that range,
            the conditional model alone elsewhere (guidance.classifier_free_guidance); None: every step.
        clip: keep the clean estimate in the data range of the audio config's normalisation at every
            step (static thresholding, guidance.clip_x0) and clamp the result to it.
        noise: a starting x_T [B, n_mels, F] (e.g. from encode); sets the batch size and length.
        window_frames, stride_frames: clips longer than the training segment are denoised in windows of
            that many frames fused with tapered weights (MultiDiffusion; "auto": the segment; None: whole).
        loop: circular windows, so the clip's end runs on into its start (seconds sets the period).
        """
        from tqdm.auto import tqdm

        if noise is not None:
            batch_size = int(noise.shape[0])
        request = self.check_request(batch_size=batch_size, steps=steps, sampler=sampler, seed=seed, labels=labels,
                                     guidance_scale=guidance_scale, seconds=seconds, eta=eta,
                                     guidance_interval=guidance_interval)
        frames = request["num_frames"] if not loop else self.loop_frames(seconds)
        generators, x_T = self.start_noise(batch_size, seed, frames if noise is None else noise.shape[-1])
        if noise is not None:
            if noise.dim() != 3 or noise.shape[1] != self.audio_config.n_mels:
                raise ValueError(f"noise of shape {tuple(noise.shape)} is not "
                                 f"[B, n_mels={self.audio_config.n_mels}, F]")
            x_T = noise.to(self.device).float()
        window = self.window_for(x_T.shape[-1], window_frames, loop)
        eps_fn = self.sampling_eps_fn(request["labels"], guidance_scale, request["guidance_interval"], precision,
                                      clip, x_T, window, stride_frames, circular=loop)
        kwargs = {"eta": float(eta)} if sampler == "ddim" else {}
        bar = tqdm(total=steps, desc=f"{sampler} x{batch_size}", disable=not progress, leave=False,
                   file=sys.stderr, dynamic_ncols=True)
        guided = float(guidance_scale) != 1.0 and request["labels"] is not None
        try:
            with self.cpu_threads(batch_size, window or x_T.shape[-1], guided):
                x = get_sampler(sampler)(eps_fn, x_T, self.schedule, int(steps),
                                         noise=per_sample_noise(generators, x_T),
                                         callback=lambda i, n: bar.update(1), **kwargs)
        finally:
            bar.close()
        return self.from_state(x, clip)  # out of range is no mel the vocoder knows (and can overflow its exp)

    def loop_frames(self, seconds: float | None) -> int:
        """Frames of a loop `seconds` long (default: the training segment): its period is frames x hop samples."""
        hop = self.audio_config.hop_length
        return self.segment_frames if seconds is None else max(2, round(float(seconds) * self.sample_rate / hop))

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Normalised mel [B, n_mels, F] -> waveform float32 [B, T] on the CPU.

        A vocoder that draws from the global RNG (Griffin-Lim with rand_init=True) does so in a forked
        RNG seeded with `seed`, so the caller's RNG is untouched and a call is repeatable.
        """
        device = self.device
        threads = None
        if device.type == "cpu" and self.fast:
            threads = fast.cpu_threads_for(fast.griffinlim_flops(self.vocoder, mel.shape[0], mel.shape[-1]))
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), \
                fast.cpu_threads(threads):
            if seed is not None:
                torch.manual_seed(seed)
            wave = self.vocoder(mel.to(device).float())  # [B, T]
        return wave.float().cpu()

    def vocode_loop(self, mel: torch.Tensor, seed: int | None = None, pad_frames: int = 16) -> torch.Tensor:
        """A looping mel [B, n_mels, F] -> one period of audio [B, F x hop]: vocoded with pad_frames of
        the mel wrapped on each side, then cropped, so the period joins its own start without a click."""
        pad = min(pad_frames, mel.shape[-1])
        wave = self.vocode(torch.cat([mel[..., -pad:], mel, mel[..., :pad]], -1), seed=seed)
        hop = self.audio_config.hop_length
        return wave[:, pad * hop:(pad + mel.shape[-1]) * hop].contiguous()

    def __call__(self, batch_size: int = 1, steps: int = 25, sampler: str = "dpmpp", seed: int = 0, labels=None,
                 guidance_scale: float = 1.0, seconds: float | None = None, eta: float = 0.0, progress: bool = True,
                 return_mel: bool = False, precision: str = "auto", guidance_interval=None,
                 noise: torch.Tensor | None = None, window_frames="auto", stride_frames: int | None = None,
                 loop: bool = False) -> AudioOutput:
        """Generate `batch_size` clips; clip i uses seed + i (see the module docstring).

        steps: sampler steps (1..T). sampler: ddpm | ddim | dpmpp. labels: None, an int for every clip, or
        one int per clip (class-conditional models). guidance_scale: classifier-free guidance (1 = off).
        seconds: clip length, any length (default: the training segment); longer clips are denoised in
        windows (window_frames, stride_frames: see sample_mel). loop: a seamless loop of period `seconds`.
        eta: DDIM stochasticity. guidance_interval: (sigma_low, sigma_high) to guide only at those noise
        levels (see sample_mel). noise: a starting x_T (encode's, to decode).
        precision: auto (bf16 autocast for the net on CUDA, float32 on CPU) | bf16 | fp32.
        """
        batch_size = batch_size if noise is None else int(noise.shape[0])
        labels = self.check_request(batch_size=batch_size, steps=steps, sampler=sampler, seed=seed, labels=labels,
                                    guidance_scale=guidance_scale, seconds=seconds, eta=eta,
                                    guidance_interval=guidance_interval)["labels"]
        mel = self.sample_mel(batch_size=batch_size, steps=steps, sampler=sampler, seed=seed, labels=labels,
                              guidance_scale=guidance_scale, seconds=seconds, eta=eta, progress=progress,
                              precision=precision, guidance_interval=guidance_interval, noise=noise,
                              window_frames=window_frames, stride_frames=stride_frames, loop=loop)
        if loop:
            audio = self.vocode_loop(mel, seed=seed)
        else:
            audio = self.vocode(mel, seed=seed)  # [B, T]
            if seconds is not None and noise is None:  # F frames come back as F * hop samples: trim
                audio = audio[:, :round(float(seconds) * self.sample_rate)]
        window = self.window_for(mel.shape[-1], window_frames, loop)
        nfe = steps * windows_per_step(mel.shape[-1], window, stride_frames, loop)
        return AudioOutput(audio=audio.contiguous(), sample_rate=self.sample_rate,
                           seeds=[seed + i for i in range(batch_size)], labels=labels,
                           mel=mel.cpu() if return_mel else None,
                           edit={"op": "loop" if loop else "generate", "frames": mel.shape[-1],
                                 "window_frames": window, "nfe": nfe,
                                 **({"metrics": loop_metrics(mel.cpu(), audio)} if loop else {})})
