"""Model directories: reading what a run or model directory declares, loading and saving weights.

    spec = read_model_config("exp/digits")        # cheap: no net, no weights; ModelLoadError names the path
    spec.check_request(steps=25, labels=[3])       # validate a request before any expensive work
    weights, source, step = load_weights(spec)     # EMA of the newest good checkpoint, or model.safetensors
    save_model_dir("models/digits", config, state_dict)

A *run directory* is what `python -m audiodiff.train` writes (config.yaml, checkpoints/); a *model
directory* is what save_pretrained writes (config.yaml + model.safetensors). Weights are read with
safetensors or torch.load(weights_only=True) only, and a config may only build audiodiff classes.
Loading is kept apart from the pipeline class, as diffusers' pipeline_loading_utils and audiocraft's
models/loaders: inference reads here, and nothing here imports training.
"""

from __future__ import annotations

import math
import numbers
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .atomic import replace_dir
from .audio import AudioConfig, AudioConfigError
from .bundled import bundled_names, bundled_path
from .checkpoint import CheckpointError, list_checkpoints, load_latest, safe_load, verify
from .config import MODEL_FORMAT, MODEL_FORMAT_VERSION, instantiate, model_config, to_plain
from .diffusion.guidance import check_guidance_interval
from .diffusion.objectives import PREDICTIONS
from .diffusion.samplers import SAMPLERS
from .version import __version__

CONFIG_NAME = "config.yaml"
WEIGHTS_NAME = "model.safetensors"
# Config `_target_`s are instantiated by Hydra, which can call any importable function; a model
# directory from elsewhere must not be able to run code, so only audiodiff classes are built.
ALLOWED_TARGET_PREFIX = "audiodiff."


class ModelLoadError(ValueError):
    """A run or model directory could not be loaded; the message is one line naming the path."""


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
        return to_plain(OmegaConf.to_container(cfg, resolve=True))
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
    path = Path(path)
    checkpoint = None
    if path.is_file() and path.suffix == ".pt" and path.parent.name == "checkpoints":
        checkpoint, path = path, path.parent.parent
    if not path.exists():
        path = bundled_path(str(path)) or path
    if not path.exists():
        raise ModelLoadError(f"{path}: no such run or model directory, nor a bundled model (bundled: "
                             f"{', '.join(bundled_names()) or 'none'})")
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
        need("audio"), need("net"), need("diffusion.schedule"), need("data.segment_frames")
        config = model_config(raw)
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
    try:
        return instantiate(node)
    except Exception as e:  # config.UsageError and friends: keep it one line, name the file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"{path}: cannot build {where} ({reason})") from None


def match_weights(net: nn.Module, weights: dict, source: Path, config_file: Path) -> None:
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
    folder = spec.path / "checkpoints"
    file: Path | None  # load_latest's is None only together with its state
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
    assert file is not None and isinstance(weights, dict)  # both checked above
    return weights, file, int(step) if isinstance(step, int) else None


def find_latest_run(root: Path = Path(".")) -> Path | None:
    """The run (config.yaml + checkpoints/step_*.pt) under root/exp or root/egs/*/exp, one or two
    levels down, whose newest checkpoint was written last; None when there is none."""
    patterns = ("exp/*", "exp/*/*", "egs/*/exp/*", "egs/*/exp/*/*")
    best, best_time = None, -math.inf
    for pattern in patterns:
        for run in root.glob(pattern):
            if not (run / CONFIG_NAME).is_file():
                continue
            ckpts = list_checkpoints(run / "checkpoints")
            if not ckpts:
                continue
            newest = max(p.stat().st_mtime for p in ckpts)
            if newest > best_time:
                best, best_time = run, newest
    return best


def load_weights(spec: ModelSpec) -> tuple[dict, Path, int | None]:
    """(state dict, the file it came from, training step or None) of a run (EMA weights of its newest
    good checkpoint, or spec.checkpoint) or a model directory (model.safetensors)."""
    if spec.kind == "run":
        return _load_run_weights(spec)
    source = spec.path / WEIGHTS_NAME
    return _load_safetensors(source), source, spec.config.get("step")


def build_net(spec: ModelSpec):
    """(net, schedule) built from a spec's config (allow-listed targets only, see read_model_config)."""
    config_file = spec.path / CONFIG_NAME
    return (_instantiate(spec.config["net"], "net", config_file),
            _instantiate(spec.config["diffusion"]["schedule"], "diffusion.schedule", config_file))


def save_model_dir(path: str | os.PathLike, config: dict, state_dict: dict) -> Path:
    """Write `path/config.yaml` + `path/model.safetensors` atomically (a temporary folder beside `path`,
    then a rename). An existing model directory is replaced; any other non-empty folder is refused."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"save_pretrained({path}): exists and is not a directory")
        others = sorted(p.name for p in path.iterdir() if p.name not in (CONFIG_NAME, WEIGHTS_NAME))
        if others:
            raise ValueError(f"save_pretrained({path}): the folder holds other files ({', '.join(others[:3])}"
                             f"{', ...' if len(others) > 3 else ''}); choose an empty or new folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {**config, "audiodiff_version": __version__}
    weights = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        (tmp / CONFIG_NAME).write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        # one metadata key: safetensors keeps it in a hash map, so two keys made two different files
        save_file(weights, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        replace_dir(tmp, path, fsync=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; a failure's leftovers
    return path
