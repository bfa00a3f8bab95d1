"""Configuration: Hydra composition, and the one place config becomes objects.

    cfg = compose_config(["+experiment=digits_smoke", "data.dir=dump/train"])   # recipes/config.yaml
    audio, net, schedule = build(cfg)                                            # objects
    model_config(to_plain(cfg))                                                  # what a model declares

Training and inference both build through here (k-diffusion's `K.config.make_model`, audiocraft's
`models/builders.py`), so the pipeline never imports a training module. Mistakes in a config are
UsageErrors with one line that names the key and lists the valid choices.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from pathlib import Path
from typing import cast

import yaml

from .audio import AudioConfig
from .cli import UsageError

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
TASKS = ("diffusion", "vocoder", "classifier")
MODEL_FORMAT = "audiodiff-model"
MODEL_FORMAT_VERSION = 1


def compose_config(overrides: list[str], recipes: Path | None = None, check_missing: bool = True):
    """Compose recipes/config.yaml with Hydra overrides; errors become one-line UsageErrors."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    recipes = Path(os.environ.get("AUDIODIFF_RECIPES", recipes or RECIPES))
    if not (recipes / "config.yaml").exists():
        raise UsageError(f"recipes folder {recipes} has no config.yaml; set AUDIODIFF_RECIPES to the "
                         "recipes/ folder of an audiodiff checkout")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(recipes), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides))
    except Exception as e:  # Hydra's errors are multi-line; keep the first informative line
        raise UsageError(_hydra_message(e, recipes, overrides)) from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing and check_missing:
        raise UsageError(f"config value(s) missing: {', '.join(missing)} (pass e.g. {missing[0]}=...)")
    try:
        for key in cfg:  # resolve interpolations, leaving ??? values for --get and --cfg
            if key not in missing:
                OmegaConf.select(cfg, cast(str, key))  # a composed config's keys are strings
        if not missing:
            OmegaConf.resolve(cfg)
    except Exception as e:
        raise UsageError(f"config does not resolve: {str(e).splitlines()[0]}") from None
    if cfg.task not in TASKS:
        raise UsageError(f"task={cfg.task!r} is not one of {', '.join(TASKS)}")
    return cfg


def _hydra_message(e: Exception, recipes: Path, overrides=()) -> str:
    text = " ".join(str(e).split())
    m = re.search(r"Could not find '([^']+)'", text) or re.search(r"Could not load '([^']+)'", text)
    if m:
        group = m.group(1).split("/")[0]
        choices = sorted(p.stem for p in (recipes / group).glob("*.yaml")) if (recipes / group).is_dir() else []
        hint = f"; valid {group}: {', '.join(choices)}" if choices else ""
        return f"unknown config option {m.group(1)!r}{hint}"
    m = re.search(r"Key '([^']+)' is not in struct", text) or re.search(r"Could not override '([^']+)'", text)
    if m:
        key = m.group(1)
        valid = _sibling_keys(key, recipes, overrides)
        where = f" under {key.rsplit('.', 1)[0]}" if "." in key else ""
        hint = f"; valid keys{where}: {', '.join(valid)}" if valid else ""
        return f"unknown config key {key!r}{hint} (or add a new one with +{key}=...)"
    return text.split(". ")[0][:300]


def _sibling_keys(key: str, recipes: Path, overrides) -> list[str]:
    """The keys next to an unknown `key`, from the config composed without that override."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(recipes), version_base="1.3"):
            cfg = compose("config", overrides=rest)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return sorted(str(k) for k in node.keys()) if OmegaConf.is_dict(node) else []
    except Exception:  # another override is broken too: the message without the list
        return []


def instantiate(node, **kwargs):
    """The one place config becomes objects (`_target_` plus plain kwargs); a failure is a
    one-line UsageError naming the target."""
    from hydra.utils import instantiate as _inst

    try:
        return _inst(node, **kwargs, _convert_="all")
    except Exception as e:
        cause = e.__cause__ or e
        target = node.get("_target_", "?") if hasattr(node, "get") else "?"
        raise UsageError(f"cannot build {target}: {str(cause).splitlines()[0]}") from None


def build(cfg):
    """Config -> (audio_config, net, schedule). Used by training, the pipeline and dry runs."""
    audio = AudioConfig.from_dict(to_plain(cfg.audio) if not isinstance(cfg.audio, dict) else cfg.audio)
    net = instantiate(cfg["net"])
    schedule = instantiate(cfg["diffusion"]["schedule"])
    return audio, net, schedule


def to_plain(value):
    """OmegaConf nodes, tuples and paths -> plain dicts, lists and scalars (what YAML, JSON and
    safetensors metadata take). NumPy numbers become Python ones, AudioConfigs dicts, paths and
    other objects strings."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra-core
        pass
    if isinstance(value, AudioConfig):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


def model_config(run: dict) -> dict:
    """The model a training config declares (plain dict, see to_plain): audio, net, diffusion
    (schedule, prediction, per-bin statistics), num_classes, segment_frames. This is what a model
    directory's config.yaml holds, and what the pipeline needs of a run directory."""
    diffusion = run.get("diffusion", {})
    return {
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
        "audio": run["audio"], "net": run["net"],
        "diffusion": {"schedule": diffusion["schedule"], "prediction": diffusion.get("prediction", "eps"),
                      **{k: diffusion[k] for k in ("data_mean", "data_std") if diffusion.get(k) is not None}},
        "num_classes": int(run.get("data", {}).get("num_classes", 0) or 0),
        "segment_frames": int(run["data"]["segment_frames"]),
    }


def pipeline_model_config(net, schedule, prediction: str, audio_config: AudioConfig, num_classes: int,
                          config: dict | None = None, segment_frames: int | None = None) -> dict:
    """The model config (as model_config) of a pipeline built from objects: `config`'s entries, with the
    net's constructor arguments (its `.config`), the schedule, prediction, audio and classes filled in."""
    config = to_plain(dict(config or {}))
    if "net" not in config:
        net_kwargs = getattr(net, "config", None)
        if net_kwargs is None:
            raise ValueError(f"{type(net).__name__} has no .config dict of constructor arguments; pass "
                             "config={'net': {'_target_': ..., **kwargs}} so save_pretrained can rebuild it")
        cls = type(net)
        config["net"] = {"_target_": f"{cls.__module__}.{cls.__qualname__}", **to_plain(net_kwargs)}
    diffusion = dict(config.get("diffusion") or {})
    if "schedule" not in diffusion:
        s = schedule
        diffusion["schedule"] = {"_target_": "audiodiff.diffusion.schedules.NoiseSchedule", "kind": s.kind,
                                 "num_steps": s.num_steps, "beta_start": s.beta_start,
                                 "beta_end": s.beta_end, "cosine_s": s.cosine_s}
    diffusion["prediction"] = prediction
    config["diffusion"] = diffusion
    config["audio"] = {"_target_": "audiodiff.audio.AudioConfig", **audio_config.to_dict()}
    config["num_classes"] = int(num_classes)
    if segment_frames is not None:
        config["segment_frames"] = int(segment_frames)
    if "segment_frames" not in config:  # one second of audio, like the default training segment
        config["segment_frames"] = audio_config.num_frames(audio_config.sample_rate)
    config["format"], config["format_version"] = MODEL_FORMAT, MODEL_FORMAT_VERSION
    return config


def load_audio_config_file(path: Path, flag: str = "audio config") -> dict:
    """AudioConfig fields from YAML or JSON: flat keys, or under "audio"; Hydra `defaults` of sibling
    files are merged first (so recipes/audio/small.yaml works). UsageError naming `flag` and the file."""
    try:
        text = Path(path).read_text()
        raw = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    except Exception as e:
        raise UsageError(f"{flag} {path}: cannot read it ({' '.join(str(e).split())})") from None
    if isinstance(raw, dict) and isinstance(raw.get("audio"), dict):
        raw = raw["audio"]
    if not isinstance(raw, dict):
        raise UsageError(f"{flag} {path}: expected a mapping of AudioConfig fields")
    values: dict = {}
    for parent in raw.pop("defaults", None) or []:
        if isinstance(parent, str) and parent != "_self_":
            values.update(load_audio_config_file(Path(path).with_name(parent + Path(path).suffix), flag))
    values.update(raw)
    values.pop("_target_", None)
    return values
