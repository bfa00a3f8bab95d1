"""python -m audiodiff.train [OVERRIDES...]: train a mel diffusion model (or a vocoder).

Configuration is Hydra's (recipes/config.yaml and its groups); arguments are Hydra
overrides, e.g. `+experiment=digits_smoke data.dir=dump/train run_dir=exp/smoke`.
Re-running the same command in the same run_dir resumes from its last good checkpoint.
Under `torchrun --nproc_per_node N` the same command trains with DDP; with
`torchrun --max-restarts K` a rank that dies brings the job back from the last checkpoint.
`task=vocoder` trains a HiFi-GAN (kwargs: the `vocoder_train` group) and `task=classifier`
the evaluation classifier (kwargs: the `classifier_train` block) on data.dir instead.

Interrupting: SIGTERM or SIGINT (Ctrl-C) finishes the current step, writes a checkpoint and
exits 0 saying how to resume; a second signal exits at once (checkpoints are atomic, so
nothing is corrupted). A checkpoint that is truncated, damaged or has no checksum is
skipped on resume with a warning naming it; one that holds pickled code is refused.

Flags: `--dry-run` composes and builds everything, prints the config and exits;
`--cfg` prints the resolved config only; `--get KEY` prints one resolved value (recipes
read their settings this way, so no data-dependent value lives in bash).
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from .audio import AudioConfig, AudioConfigError
from .checkpoint import CheckpointError
from .cli import UsageError, one_line
from .config import build, compose_config, to_plain
from .install import InstallError
from .manifest import check_prepared_audio, read_prepared
from .train_classifier import train_classifier
from .train_diffusion import train_diffusion
from .train_vocoder import train_vocoder


def train(cfg) -> dict:
    """Train the diffusion model of a composed config (audiodiff.train_diffusion)."""
    return train_diffusion(cfg)


# --------------------------------------------------------------------------- other tasks

def task_call(cfg):
    """(function, kwargs) for task=vocoder (audiodiff.train_vocoder.train_vocoder, kwargs from the
    `vocoder_train` group) or task=classifier (audiodiff.train_classifier.train_classifier, kwargs
    from `classifier_train`). run_dir, data.dir, the audio config, seed and device come from the
    top level; a key the function does not take is a UsageError listing the ones it does."""
    data_dir = cfg.data.dir
    if not Path(data_dir).exists():
        raise UsageError(f"data.dir={data_dir!r} does not exist; pass a folder from `python -m audiodiff.prepare`"
                         + (" or of audio files" if cfg.task == "vocoder" else ""))
    audio = AudioConfig.from_dict(to_plain(cfg.audio))
    if cfg.task == "vocoder":
        fn = train_vocoder
        block = "vocoder_train"
        given = {"run_dir": cfg.run_dir, "data": data_dir, "audio_config": audio.to_dict()}
        defaults = {"seed": cfg.seed, "device": cfg.device}
    else:
        fn = train_classifier
        block = "classifier_train"
        try:
            _, cache = read_prepared(data_dir)
        except (FileNotFoundError, ValueError) as e:
            message = one_line(e)
            raise UsageError(message if str(data_dir) in message else f"data.dir={data_dir!r}: {message}") from None
        # the classifier scores generated mels: it must see the same mel
        check_prepared_audio(data_dir, AudioConfig.from_dict(cache["audio_config"]), audio)
        given = {"prepared_dir": data_dir, "run_dir": cfg.run_dir}
        defaults = {"segment_frames": cfg.data.segment_frames, "num_classes": cfg.data.num_classes or None,
                    "seed": cfg.seed, "device": cfg.device}
    params = inspect.signature(fn).parameters
    kwargs = to_plain(cfg[block]) if cfg.get(block) is not None else {}
    valid = sorted(k for k in params if k not in given)
    for key in kwargs:
        if key in given:
            source = "data.dir" if key in ("data", "prepared_dir") else "audio" if key == "audio_config" else key
            raise UsageError(f"{block}.{key} is set from the top level ({source}); remove {block}.{key}")
        if key not in params:
            raise UsageError(f"unknown key {block}.{key}; valid keys: {', '.join(valid)}")
    return fn, {**{k: v for k, v in defaults.items() if k in params}, **kwargs, **given}


def _task_summary(result) -> str:
    if not isinstance(result, dict):
        return str(result)
    parts = []
    for key, value in result.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        elif isinstance(value, (int, str)) or value is None:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- entry point

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    get = None
    if "--get" in argv:
        i = argv.index("--get")
        if i + 1 >= len(argv):
            print("audiodiff.train: --get needs a KEY, e.g. --get recipe.per_digit", file=sys.stderr)
            return 2
        get = argv.pop(i + 1)
        argv.pop(i)
    dry_run = "--dry-run" in argv
    show = "--cfg" in argv
    flags = [a for a in argv if a.startswith("--") and a not in ("--dry-run", "--cfg")]
    if flags:
        print(f"audiodiff.train: unknown flag {flags[0]!r}; valid flags: --dry-run, --cfg, --get KEY, -h "
              "(everything else is a Hydra override key=value)", file=sys.stderr)
        return 2
    overrides = [a for a in argv if not a.startswith("--")]
    try:
        cfg = compose_config(overrides, check_missing=get is None and not show)
        if get is not None:
            value = OmegaConf.select(cfg, get, default="__missing__")
            if value == "__missing__":
                parent, _, leaf = get.rpartition(".")
                node = OmegaConf.select(cfg, parent) if parent else cfg
                if OmegaConf.is_config(node) and leaf in node.keys() and OmegaConf.is_missing(node, leaf):
                    raise UsageError(f"config key {get!r} has no value yet (???); pass {get}=...")
                raise UsageError(f"config has no key {get!r}")
            print(OmegaConf.to_yaml(value).strip() if OmegaConf.is_config(value) else value)
            return 0
        if show:
            print(OmegaConf.to_yaml(cfg))
            return 0
        if cfg.task in ("vocoder", "classifier"):
            fn, kwargs = task_call(cfg)
            if dry_run:
                print(OmegaConf.to_yaml(cfg))
                print(f"dry run: {fn.__module__}.{fn.__name__}({', '.join(sorted(kwargs))})")
                return 0
            try:
                result = fn(**kwargs)
            except ValueError as e:  # the task's own checks of its data and settings: one line
                raise UsageError(f"task={cfg.task}: {one_line(e)}") from None
            print(f"audiodiff.train: task={cfg.task} finished: {_task_summary(result)}", file=sys.stderr)
            return 0
        if dry_run:
            audio, net, schedule = build(cfg)
            n = sum(p.numel() for p in net.parameters())
            print(OmegaConf.to_yaml(cfg))
            print(f"dry run: net {type(net).__name__} with {n:,} parameters, schedule T={schedule.num_steps}, "
                  f"audio {audio.sample_rate} Hz x {audio.n_mels} mels")
            return 0
        summary = train(cfg)
    except UsageError as e:
        print(f"audiodiff.train: {e}", file=sys.stderr)
        return 2
    except (AudioConfigError, CheckpointError, InstallError) as e:  # a known library error with a one-line message
        print(f"audiodiff.train: {e}", file=sys.stderr)
        return 2 if isinstance(e, AudioConfigError) else 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"audiodiff.train: {summary['reason']} (step {summary['step']}, loss {summary['loss']:.4f}, "
              f"run {summary['run_dir']})", file=sys.stderr)
    return 0 if summary["reason"] in ("finished",) or " checkpoint written" in summary["reason"] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `--get KEY | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
