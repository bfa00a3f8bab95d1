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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import fast
from .audio import AudioConfig
from .config import MODEL_FORMAT, MODEL_FORMAT_VERSION, to_plain
from .diffusion.guidance import clip_x0, make_eps_fn
from .diffusion.objectives import PREDICTIONS
from .diffusion.samplers import get_sampler, per_sample_noise
from .diffusion.scaling import DataScaler
from .hub import (ModelLoadError, build_net, check_request, hifigan_checkpoint, load_weights, match_weights,
                  read_model_config, save_model_dir)
from .runtime import pick_device
from .vocoders import IncompatibleVocoderError, check_compatible, get_vocoder, vocoder_key

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class AudioOutput:
    """What a pipeline call returns. audio: float32 [B, T] on the CPU, in [-1, 1] (roughly).

    mel is the sampled normalised log-mel [B, n_mels, F] (CPU, float32) when return_mel=True.
    seeds[i] (and labels[i], None when unconditional) regenerate clip i on its own.
    """

    audio: torch.Tensor
    sample_rate: int
    seeds: list[int]
    labels: list[int] | None = None
    mel: torch.Tensor | None = None

    @property
    def seconds(self) -> float:
        """Duration of one clip in seconds."""
        return self.audio.shape[-1] / self.sample_rate


# --------------------------------------------------------------------------- the pipeline

class AudioDiffusionPipeline:
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
        self.config = self._model_config(config, segment_frames)
        self.segment_frames = int(self.config["segment_frames"])
        # Per-bin standardisation the net was trained in (audiodiff.diffusion.scaling); None = identity.
        self.scaler = DataScaler.from_config(self.config.get("diffusion"), audio_config.n_mels)
        self.vocoder: Any = None  # a Vocoder module or any callable mel -> waveform; set just below
        self.vocoder_name: str | None = None
        self.set_vocoder("griffinlim" if vocoder is None else vocoder)
        self.fast = True
        self._graphs: OrderedDict = OrderedDict()  # audiodiff.fast's captured denoisers

    # ---- construction helpers

    def _model_config(self, config: dict | None, segment_frames: int | None) -> dict:
        config = to_plain(dict(config or {}))
        if "net" not in config:
            net_kwargs = getattr(self.net, "config", None)
            if net_kwargs is None:
                raise ValueError(f"{type(self.net).__name__} has no .config dict of constructor arguments; pass "
                                 "config={'net': {'_target_': ..., **kwargs}} so save_pretrained can rebuild it")
            cls = type(self.net)
            config["net"] = {"_target_": f"{cls.__module__}.{cls.__qualname__}", **to_plain(net_kwargs)}
        diffusion = dict(config.get("diffusion") or {})
        if "schedule" not in diffusion:
            s = self.schedule
            diffusion["schedule"] = {"_target_": "audiodiff.diffusion.schedules.NoiseSchedule", "kind": s.kind,
                                     "num_steps": s.num_steps, "beta_start": s.beta_start,
                                     "beta_end": s.beta_end, "cosine_s": s.cosine_s}
        diffusion["prediction"] = self.prediction
        config["diffusion"] = diffusion
        config["audio"] = {"_target_": "audiodiff.audio.AudioConfig", **self.audio_config.to_dict()}
        config["num_classes"] = self.num_classes
        if segment_frames is not None:
            config["segment_frames"] = int(segment_frames)
        if "segment_frames" not in config:
            # One second of audio, like the default training segment.
            config["segment_frames"] = self.audio_config.num_frames(self.audio_config.sample_rate)
        config["format"], config["format_version"] = MODEL_FORMAT, MODEL_FORMAT_VERSION
        return config

    def set_vocoder(self, vocoder) -> "AudioDiffusionPipeline":
        """Use `vocoder` (a Vocoder module, a name for get_vocoder, or a HiFi-GAN generator.pt / vocoder run
        folder); its audio config must match the model's, else IncompatibleVocoderError naming both values."""
        if isinstance(vocoder, (str, os.PathLike)):
            name = str(vocoder)
            key = vocoder_key(name)
            if key == "griffinlim":
                # Zero phase, not random phase: the same seed must give the same bytes, and the global
                # RNG is no per-sample generator. Quality is the same (MR-STFT distance to the original
                # on a 1 s chirp with noise: 2.95 from zero phase, 2.99 from random phase).
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
        config = dict(spec.config)
        config["source"] = str(source)
        if step is not None:
            config["step"] = int(step)
        try:
            pipe = cls(net, schedule, spec.audio_config, prediction=spec.prediction, num_classes=spec.num_classes,
                       vocoder=vocoder, config=config)
        except ValueError as e:
            raise ModelLoadError(f"{spec.path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        pipe.path = spec.path
        pipe.source = source
        return pipe.to(pick_device(device))

    # ---- saving

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write `path/config.yaml` + `path/model.safetensors` atomically (a temporary folder beside `path`,
        then a rename). An existing model directory is replaced; any other non-empty folder is refused."""
        return save_model_dir(path, self.config, self.net.state_dict())

    # ---- device

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
    def sample_rate(self) -> int:
        return self.audio_config.sample_rate

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.net.parameters())
        return (f"AudioDiffusionPipeline(net={type(self.net).__name__} {n:,} params, {self.schedule!r}, "
                f"prediction={self.prediction!r}, num_classes={self.num_classes}, vocoder={self.vocoder_name!r}, "
                f"{self.sample_rate} Hz x {self.audio_config.n_mels} mels, device={self.device})")

    # ---- sampling

    def check_request(self, **kwargs) -> dict:
        """Validate sampling arguments (see module-level check_request)."""
        return check_request(self.num_classes, self.schedule.num_steps, self.audio_config, self.segment_frames,
                             **kwargs)

    def data_range(self) -> tuple[float, float]:
        """The range normalised mels lie in: [-1, 1] for minmax, [log(log_floor), log_max] for none."""
        return self.audio_config.data_range

    @torch.inference_mode()
    def sample_mel(self, batch_size: int = 1, steps: int = 25, sampler: str = "dpmpp", seed: int = 0, labels=None,
                   guidance_scale: float = 1.0, seconds: float | None = None, eta: float = 0.0,
                   progress: bool = True, precision: str = "auto", clip: bool = True,
                   guidance_interval=None) -> torch.Tensor:
        """Sample normalised mels [B, n_mels, F] (float32, on the pipeline's device); no vocoder.

        guidance_interval: (sigma_low, sigma_high): guidance only at noise levels sigma in that range,
            the conditional model alone elsewhere (guidance.classifier_free_guidance); None: every step.

        clip: keep the clean estimate in the data range of the audio config's normalisation at every
            step (static thresholding, guidance.clip_x0) and clamp the result to it.
        """
        from tqdm.auto import tqdm

        request = self.check_request(batch_size=batch_size, steps=steps, sampler=sampler, seed=seed, labels=labels,
                                     guidance_scale=guidance_scale, seconds=seconds, eta=eta,
                                     guidance_interval=guidance_interval)
        interval = request["guidance_interval"]
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
        device = self.device
        mode = fast.resolve_mode(self.fast, device)
        use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
        shape = (self.audio_config.n_mels, request["num_frames"])
        # One CPU generator per sample: the same seed gives the same noise on any device and in any batch.
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch_size)]
        x_T = torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
        x_T = x_T.to(device)  # [B, n_mels, F]
        label_tensor = None if request["labels"] is None else torch.tensor(request["labels"], device=device)
        if mode != "eager":  # CUDA: the denoiser step replayed from a captured graph (audiodiff.fast)
            fast.prepare_net(self.net, device)
            eps_fn = fast.graphed_eps_fn(self._graphs, self.net, self.schedule, self.prediction, x_T, label_tensor,
                                         float(guidance_scale), self.num_classes, use_bf16, mode,
                                         guidance_interval=interval)
        else:
            eps_fn = make_eps_fn(self.net, self.schedule, self.prediction, labels=label_tensor,
                                 guidance_scale=float(guidance_scale), null_label=self.num_classes,
                                 guidance_interval=interval)
            if use_bf16:  # autocast at the network boundary only; the sampler stays float32
                eps_fn = fast.bf16_eps_fn(eps_fn, device.type)
        low, high = self.data_range()
        state_low: float | torch.Tensor = low  # the mel range in the units the sampler works in
        state_high: float | torch.Tensor = high
        if self.scaler is not None:
            state_low, state_high = self.scaler.bounds(low, high, device)  # [n_mels, 1] each
        if clip:
            eps_fn = clip_x0(eps_fn, self.schedule, state_low, state_high)
        threads = None
        if device.type == "cpu" and self.fast:
            flops = fast.net_forward_flops(self.net, *shape)
            calls = batch_size * (2 if float(guidance_scale) != 1.0 and label_tensor is not None else 1)
            threads = fast.cpu_threads_for(None if flops is None else flops * calls)
        kwargs = {"eta": float(eta)} if sampler == "ddim" else {}
        bar = tqdm(total=steps, desc=f"{sampler} x{batch_size}", disable=not progress, leave=False,
                   file=sys.stderr, dynamic_ncols=True)
        try:
            with fast.cpu_threads(threads):
                mel = get_sampler(sampler)(eps_fn, x_T, self.schedule, int(steps),
                                           noise=per_sample_noise(generators, x_T),
                                           callback=lambda i, n: bar.update(1), **kwargs)
        finally:
            bar.close()
        mel = mel.float()  # [B, n_mels, F]
        if self.scaler is not None:
            mel = self.scaler.decode(mel)
        if clip:  # a sample outside the data range is no mel the vocoder knows (and can overflow its exp)
            mel = mel.clamp(low, high)
        return mel

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

    def __call__(self, batch_size: int = 1, steps: int = 25, sampler: str = "dpmpp", seed: int = 0, labels=None,
                 guidance_scale: float = 1.0, seconds: float | None = None, eta: float = 0.0, progress: bool = True,
                 return_mel: bool = False, precision: str = "auto", guidance_interval=None) -> AudioOutput:
        """Generate `batch_size` clips; clip i uses seed + i (see the module docstring).

        steps: sampler steps (1..T). sampler: ddpm | ddim | dpmpp. labels: None, an int for every clip, or
        one int per clip (class-conditional models). guidance_scale: classifier-free guidance (1 = off).
        seconds: clip length (default: the training segment). eta: DDIM stochasticity.
        guidance_interval: (sigma_low, sigma_high) to guide only at those noise levels (see sample_mel).
        precision: auto (bf16 autocast for the net on CUDA, float32 on CPU) | bf16 | fp32.
        """
        request = self.check_request(batch_size=batch_size, steps=steps, sampler=sampler, seed=seed, labels=labels,
                                     guidance_scale=guidance_scale, seconds=seconds, eta=eta,
                                     guidance_interval=guidance_interval)
        mel = self.sample_mel(batch_size=batch_size, steps=steps, sampler=sampler, seed=seed,
                              labels=request["labels"], guidance_scale=guidance_scale, seconds=seconds, eta=eta,
                              progress=progress, precision=precision, guidance_interval=request["guidance_interval"])
        audio = self.vocode(mel, seed=seed)  # [B, T]
        if seconds is not None:  # F frames come back as F * hop samples: trim to the length asked for
            audio = audio[:, :round(float(seconds) * self.sample_rate)]
        return AudioOutput(audio=audio.contiguous(), sample_rate=self.sample_rate,
                           seeds=[seed + i for i in range(batch_size)], labels=request["labels"],
                           mel=mel.cpu() if return_mel else None)
