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

import math
import numbers
import os
import shutil
import sys
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from audiodiff.audio import AudioConfig
from audiodiff.diffusion.scaling import DataScaler

MODEL_FORMAT = "audiodiff-model"
MODEL_FORMAT_VERSION = 1
CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.safetensors"
PRECISIONS = ("auto", "bf16", "fp32")
# Config `_target_`s are instantiated by Hydra, which can call any importable function; a model
# directory from elsewhere must not be able to run code, so only audiodiff classes are built.
ALLOWED_TARGET_PREFIX = "audiodiff."


class ModelLoadError(ValueError):
    """A run or model directory could not be loaded; the message is one line naming the path."""


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


# --------------------------------------------------------------------------- model config

@dataclass
class ModelSpec:
    """What a run or model directory declares, read without building the net or loading weights.

    Enough to validate a request (labels, steps, seconds) before any expensive work.
    """

    path: Path
    kind: str  # "run" | "model"
    config: dict  # the model config (see AudioDiffusionPipeline.config)
    audio_config: AudioConfig
    num_classes: int
    segment_frames: int
    prediction: str
    num_steps: int  # the schedule's T: samplers take 1..T steps
    checkpoint: Path | None = None  # a run: a specific checkpoint file, None = the newest good one

    def check_request(self, **kwargs) -> dict:
        """Validate sampling arguments against this model (see `check_request`)."""
        return check_request(self.num_classes, self.num_steps, self.audio_config, self.segment_frames, **kwargs)


def _plain(value):
    """OmegaConf/tuples -> plain dicts and lists (what YAML and safetensors metadata take)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra-core
        pass
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_targets(node, where: str, path: Path) -> None:
    """Every `_target_` under `node` must name an audiodiff class (see ALLOWED_TARGET_PREFIX)."""
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and not str(target).startswith(ALLOWED_TARGET_PREFIX):
            raise ModelLoadError(f"{path}: {where}._target_={target!r} is not an audiodiff class; refusing to "
                                 f"build it (a model config may only name {ALLOWED_TARGET_PREFIX}* classes)")
        for key, value in node.items():
            _check_targets(value, f"{where}.{key}", path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_targets(value, f"{where}[{i}]", path)


def _load_yaml(file: Path) -> dict:
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(file)
        return _plain(OmegaConf.to_container(cfg, resolve=True))
    except Exception as e:
        reason = " ".join(str(e).split())[:200]
        raise ModelLoadError(f"{file}: cannot read the config ({reason})") from None


def _is_run_dir(path: Path) -> bool:
    return (path / "checkpoints").is_dir()


def read_model_config(path: str | os.PathLike) -> ModelSpec:
    """Read the config of a run directory, a checkpoint file inside one, or a model directory.

    Cheap (no net, no weights) and strict: a missing file or a config without the keys a model
    needs raises ModelLoadError naming the path.
    """
    from audiodiff.audio import AudioConfigError
    from audiodiff.diffusion.objectives import PREDICTIONS

    path = Path(path)
    checkpoint = None
    if path.is_file() and path.suffix == ".pt" and path.parent.name == "checkpoints":
        checkpoint, path = path, path.parent.parent
    if not path.exists():
        raise ModelLoadError(f"{path}: no such run or model directory")
    if not path.is_dir():
        raise ModelLoadError(f"{path}: not a directory; pass a training run directory (config.yaml + "
                             f"checkpoints/), a checkpoint inside one, or a model directory from save_pretrained")
    config_file = path / CONFIG_NAME
    run = _is_run_dir(path)
    if not config_file.is_file():
        raise ModelLoadError(f"{path}: missing {CONFIG_NAME}; a run directory has config.yaml and checkpoints/, "
                             f"a model directory config.yaml and {WEIGHTS_NAME}")
    if not run and not (path / WEIGHTS_NAME).is_file():
        raise ModelLoadError(f"{path}: missing {WEIGHTS_NAME} (and no checkpoints/ folder); not a model "
                             "directory (save_pretrained) or a training run directory")
    raw = _load_yaml(config_file)

    def need(keys: str):
        node = raw
        for key in keys.split("."):
            if not isinstance(node, dict) or key not in node:
                raise ModelLoadError(f"{config_file}: missing key {keys!r}; not an audiodiff "
                                     f"{'training' if run else 'model'} config")
            node = node[key]
        return node

    if run:
        config = {
            "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
            "audio": need("audio"), "net": need("net"),
            "diffusion": {"schedule": need("diffusion.schedule"),
                          "prediction": raw.get("diffusion", {}).get("prediction", "eps"),
                          **{k: raw["diffusion"][k] for k in ("data_mean", "data_std")
                             if raw.get("diffusion", {}).get(k) is not None}},
            "num_classes": int(raw.get("data", {}).get("num_classes", 0) or 0),
            "segment_frames": int(need("data.segment_frames")),
        }
    else:
        if raw.get("format", MODEL_FORMAT) != MODEL_FORMAT:
            raise ModelLoadError(f"{config_file}: format {raw.get('format')!r} is not {MODEL_FORMAT!r}")
        version = raw.get("format_version", MODEL_FORMAT_VERSION)
        if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
            raise ModelLoadError(f"{config_file}: format_version {version!r} is newer than this audiodiff reads "
                                 f"({MODEL_FORMAT_VERSION}); upgrade audiodiff")
        need("audio"), need("net"), need("diffusion.schedule"), need("segment_frames")
        config = dict(raw)
        config.setdefault("num_classes", 0)
        config["diffusion"].setdefault("prediction", "eps")
    _check_targets(config["net"], "net", config_file)
    _check_targets(config["diffusion"], "diffusion", config_file)
    try:
        audio_config = AudioConfig.from_dict(config["audio"])
    except (AudioConfigError, TypeError) as e:
        raise ModelLoadError(f"{config_file}: bad audio config ({e})") from None
    prediction = config["diffusion"]["prediction"]
    if prediction not in PREDICTIONS:
        raise ModelLoadError(f"{config_file}: diffusion.prediction={prediction!r} is not one of {PREDICTIONS}")
    schedule = _instantiate(config["diffusion"]["schedule"], "diffusion.schedule", config_file)
    return ModelSpec(path=path, kind="run" if run else "model", config=config, audio_config=audio_config,
                     num_classes=int(config["num_classes"]), segment_frames=int(config["segment_frames"]),
                     prediction=prediction, num_steps=int(schedule.num_steps), checkpoint=checkpoint)


def _instantiate(node: dict, where: str, path: Path):
    from audiodiff.train import instantiate

    try:
        return instantiate(node)
    except Exception as e:  # train.UsageError and friends: keep it one line, name the file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"{path}: cannot build {where} ({reason})") from None


def _match_weights(net: nn.Module, weights: dict, source: Path, config_file: Path) -> None:
    """Load `weights` into `net` strictly; a key or shape mismatch is a one-line ModelLoadError."""
    own = net.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[0]!r})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} shape mismatch(es) (e.g. {k!r}: weights {list(weights[k].shape)} "
                         f"vs net {list(own[k].shape)})")
        raise ModelLoadError(f"{source}: the weights do not match the net in {config_file}: {', '.join(parts)}; "
                             "the config was changed after training, or the weights belong to another model")
    net.load_state_dict(weights, strict=True)


# --------------------------------------------------------------------------- request checks

def _as_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}={value!r} must be an integer")
    return int(value)


def check_request(num_classes: int, num_steps: int, audio_config: AudioConfig, segment_frames: int, *,
                  batch_size: int = 1, steps: int = 25, sampler: str = "dpmpp", seed: int = 0, labels=None,
                  guidance_scale: float = 1.0, seconds: float | None = None, eta: float = 0.0,
                  guidance_interval=None) -> dict:
    """Validate a sampling request against a model; returns {"labels": list | None, "num_frames": int,
    "guidance_interval": (low, high) | None}.

    Every mistake raises ValueError naming the bad value and the valid choices, before any sampling.
    """
    from audiodiff.diffusion.guidance import check_guidance_interval
    from audiodiff.diffusion.samplers import SAMPLERS

    batch_size = _as_int(batch_size, "batch_size")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not known; choose one of {', '.join(sorted(SAMPLERS))}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= num_steps:
        raise ValueError(f"steps={steps!r} is out of range: use an integer from 1 to {num_steps} "
                         "(the schedule's num_steps)")
    seed = _as_int(seed, "seed")
    if seed < 0 or seed + batch_size > 2**63:
        raise ValueError(f"seed={seed} must be an integer from 0 to 2**63 - batch_size")
    eta = float(eta)
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta={eta} must be a finite number >= 0 (0: deterministic DDIM, 1: DDPM-like)")
    if eta != 0 and sampler != "ddim":
        raise ValueError(f"eta={eta} applies to sampler='ddim' only (got sampler={sampler!r}); drop eta")
    guidance_scale = float(guidance_scale)
    if not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale={guidance_scale} must be a finite number (1.0 = no guidance)")
    guidance_interval = check_guidance_interval(guidance_interval)

    if labels is not None:
        if num_classes == 0:
            raise ValueError(f"labels {labels!r} given to an unconditional model (num_classes=0); "
                             "sample without labels (they are for class-conditional models)")
        if isinstance(labels, torch.Tensor):
            labels = labels.tolist()
        labels = [labels] * batch_size if not isinstance(labels, (list, tuple)) else list(labels)
        if len(labels) != batch_size:
            raise ValueError(f"got {len(labels)} labels for batch_size={batch_size}; pass one int for all "
                             "clips or one label per clip")
        for label in labels:
            if isinstance(label, bool) or not isinstance(label, numbers.Integral):
                raise ValueError(f"label {label!r} is not an integer; use a class index 0..{num_classes - 1}")
            if not 0 <= label < num_classes:
                raise ValueError(f"label {label} is out of range: this model has {num_classes} classes, "
                                 f"labels 0..{num_classes - 1}")
        labels = [int(v) for v in labels]
    if guidance_scale != 1.0:
        if num_classes == 0:
            raise ValueError(f"guidance_scale={guidance_scale:g} needs a class-conditional model, but this one "
                             "is unconditional (num_classes=0); use guidance_scale=1.0")
        if labels is None:
            raise ValueError(f"guidance_scale={guidance_scale:g} needs labels (classifier-free guidance steers "
                             f"towards a class); pass labels in 0..{num_classes - 1} or guidance_scale=1.0")

    if seconds is None:
        num_frames = int(segment_frames)
    else:
        try:
            seconds = float(seconds)
        except (TypeError, ValueError):
            raise ValueError(f"seconds={seconds!r} is not a number") from None
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"seconds={seconds} must be a finite number > 0")
        num_frames = audio_config.num_frames(round(seconds * audio_config.sample_rate))
        if num_frames < 2:
            raise ValueError(f"seconds={seconds} is shorter than two mel frames "
                             f"({2 * audio_config.hop_length / audio_config.sample_rate:.4f} s)")
    return {"labels": labels, "num_frames": num_frames, "guidance_interval": guidance_interval}


# --------------------------------------------------------------------------- the pipeline

def _default_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


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

    def __init__(self, net: nn.Module, schedule, audio_config: AudioConfig, prediction: str = "eps",
                 num_classes: int = 0, vocoder=None, config: dict | None = None,
                 segment_frames: int | None = None) -> None:
        from audiodiff.diffusion.objectives import PREDICTIONS

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
        self.vocoder = None
        self.vocoder_name = None
        self.set_vocoder("griffinlim" if vocoder is None else vocoder)
        self.fast = True
        self._graphs: OrderedDict = OrderedDict()  # audiodiff.fast's captured denoisers

    # ---- construction helpers

    def _model_config(self, config: dict | None, segment_frames: int | None) -> dict:
        config = _plain(dict(config or {}))
        if "net" not in config:
            net_kwargs = getattr(self.net, "config", None)
            if net_kwargs is None:
                raise ValueError(f"{type(self.net).__name__} has no .config dict of constructor arguments; pass "
                                 "config={'net': {'_target_': ..., **kwargs}} so save_pretrained can rebuild it")
            cls = type(self.net)
            config["net"] = {"_target_": f"{cls.__module__}.{cls.__qualname__}", **_plain(net_kwargs)}
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
        from audiodiff.vocoders import IncompatibleVocoderError, get_vocoder

        if isinstance(vocoder, (str, os.PathLike)):
            name = str(vocoder)
            key = name.lower().replace("-", "").replace("_", "")
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
        theirs = getattr(vocoder, "audio_config", None)
        if theirs is None:
            raise ValueError(f"vocoder {name!r} has no .audio_config; a vocoder must declare the mel it takes")
        if isinstance(theirs, dict):
            theirs = AudioConfig.from_dict(theirs)
        mismatch = self.audio_config.describe_mismatch(theirs, "model", f"vocoder {name}")
        if mismatch:
            raise IncompatibleVocoderError(
                f"the model's mel and vocoder {name!r}'s differ ({mismatch}); use a vocoder trained on the "
                "model's audio config, or griffinlim, which fits any mel")
        if isinstance(vocoder, nn.Module):
            vocoder = vocoder.eval().to(self.device)
        self.vocoder, self.vocoder_name = vocoder, name
        return self

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device=None, vocoder="griffinlim") -> "AudioDiffusionPipeline":
        """Load a training run directory (newest good checkpoint, EMA weights), a checkpoint file in a run's
        checkpoints/, or a model directory from save_pretrained. Errors are one-line ModelLoadErrors."""
        spec = read_model_config(path)
        config_file = spec.path / CONFIG_NAME
        net = _instantiate(spec.config["net"], "net", config_file)
        schedule = _instantiate(spec.config["diffusion"]["schedule"], "diffusion.schedule", config_file)
        source, step = spec.path, None
        if spec.kind == "run":
            weights, source, step = _load_run_weights(spec)
        else:
            source = spec.path / WEIGHTS_NAME
            weights = _load_safetensors(source)
            step = spec.config.get("step")
        _match_weights(net, weights, source, config_file)
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
        return pipe.to(_default_device() if device is None else device)

    # ---- saving

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write `path/config.yaml` + `path/model.safetensors` atomically (a temporary folder beside `path`,
        then a rename). An existing model directory is replaced; any other non-empty folder is refused."""
        from omegaconf import OmegaConf
        from safetensors.torch import save_file

        import audiodiff

        path = Path(path)
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"save_pretrained({path}): exists and is not a directory")
            others = sorted(p.name for p in path.iterdir() if p.name not in (CONFIG_NAME, WEIGHTS_NAME))
            if others:
                raise ValueError(f"save_pretrained({path}): the folder holds other files ({', '.join(others[:3])}"
                                 f"{', ...' if len(others) > 3 else ''}); choose an empty or new folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        config = dict(self.config)
        config["audiodiff_version"] = audiodiff.__version__
        weights = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.net.state_dict().items()}
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            (tmp / CONFIG_NAME).write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
            save_file(weights, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "producer": "audiodiff"})
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old.exists() and not path.exists():
                os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return path

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
        c = self.audio_config
        return (-1.0, 1.0) if c.normalization == "minmax" else (math.log(c.log_floor), c.log_max)

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

        from audiodiff import fast
        from audiodiff.diffusion.guidance import clip_x0, make_eps_fn
        from audiodiff.diffusion.samplers import get_sampler, per_sample_noise

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
        state_low, state_high = low, high  # the mel range in the units the sampler works in
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
        from audiodiff import fast

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


# --------------------------------------------------------------------------- weight loading

def hifigan_checkpoint(path: str | os.PathLike) -> Path:
    """A HiFi-GAN generator file from a path: the file itself, or a train_vocoder run's generator.pt."""
    path = Path(path)
    if path.is_dir():
        if not (path / "generator.pt").is_file():
            raise ValueError(f"vocoder folder {path} has no generator.pt (python -m audiodiff.train task=vocoder "
                             "writes one); pass the generator file, griffinlim or hifigan")
        return path / "generator.pt"
    return path


def _load_safetensors(file: Path) -> dict:
    from safetensors.torch import load_file

    if not file.is_file():
        raise ModelLoadError(f"{file}: no such file")
    try:
        return load_file(str(file), device="cpu")
    except Exception as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise ModelLoadError(f"{file}: cannot read the weights ({reason})") from None


def _load_run_weights(spec: ModelSpec) -> tuple[dict, Path, int | None]:
    """EMA state dict of a run's newest good checkpoint (or of spec.checkpoint), its path and step."""
    from audiodiff.checkpoint import CheckpointError, list_checkpoints, load_latest, safe_load, verify

    folder = spec.path / "checkpoints"
    if spec.checkpoint is not None:
        reason = verify(spec.checkpoint)
        if reason is not None:
            raise ModelLoadError(f"{spec.checkpoint}: {reason}")
        try:
            state, file = safe_load(spec.checkpoint), spec.checkpoint
        except CheckpointError as e:
            raise ModelLoadError(str(e)) from None
    else:
        state, file = load_latest(folder)
        if state is None:
            found = len(list_checkpoints(folder))
            raise ModelLoadError(f"{folder}: no checkpoint that loads (found {found} step_*.pt file(s)"
                                 f"{', all damaged or incomplete' if found else ''}); train first or pass "
                                 "another run")
    if not isinstance(state, dict) or not isinstance(state.get("ema", state.get("model")), dict):
        raise ModelLoadError(f"{file}: not an audiodiff training checkpoint (no 'ema' or 'model' state dict)")
    if "ema" not in state:
        warnings.warn(f"{file}: no EMA weights; sampling with the raw model weights")
    ckpt_audio = state.get("audio")
    if isinstance(ckpt_audio, dict):
        try:
            mismatch = spec.audio_config.describe_mismatch(AudioConfig.from_dict(ckpt_audio), "config.yaml",
                                                           "checkpoint")
        except ValueError:
            mismatch = "unreadable audio config in the checkpoint"
        if mismatch:
            raise ModelLoadError(f"{file}: trained with another audio config than {spec.path / CONFIG_NAME} "
                                 f"says ({mismatch})")
    weights = state.get("ema", state.get("model"))
    step = state.get("step")
    return weights, file, int(step) if isinstance(step, int) else None
