"""Train or fine-tune a HiFi-GAN vocoder (Kong et al. 2020) on audiodiff's mel.

    from audiodiff.train_vocoder import train_vocoder
    train_vocoder(run_dir="exp/vocoder", data="data/prepared", init_from="universal", max_steps=50_000)

or `python -m audiodiff.train task=vocoder` (Hydra passes the `vocoder_train` group as kwargs).

One loop, top to bottom, as in the paper's recipe: random 8192-sample segments -> input
log-mel (audiodiff.audio.MelSpec, then denormalise, exactly what the vocoder sees at
inference) -> generator -> discriminator step (MPD + MSD, least-squares GAN) -> generator
step (LSGAN + feature matching x2 + mel L1 x45 on a full-band mel) -> log -> checkpoint.
AdamW(2e-4, betas 0.8/0.99) for both, learning rate x0.999 per epoch.

Checkpoints (generator, discriminators, optimisers, schedulers, step, data position, RNG
states) go to run_dir/checkpoints/step_XXXXXXXX.pt atomically (audiodiff.checkpoint);
re-running the same call resumes from the newest one, and the data order is a pure
function of (seed, epoch), so a stopped and resumed run sees the same batches as an
unstopped one. run_dir/generator.pt holds the generator alone for
`audiodiff.vocoders.HiFiGAN(checkpoint="run_dir/generator.pt")`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from .audio import AudioConfig, MelSpec, load_audio
from .checkpoint import atomic_torch_save, load_latest, save_checkpoint
from .config import to_plain
from .data import ResumableSampler, batches, segment_draw
from .manifest import resolve_audio_files
from .metrics import mel_l1_distance, multi_resolution_stft_distance
from .nets.hifigan import (HiFiGANGenerator, MultiPeriodDiscriminator, MultiScaleDiscriminator, discriminator_loss,
                           feature_matching_loss, generator_adversarial_loss, mel_l1_loss)
from .runtime import pick_device, rng_state, set_rng_state
from .vocoders import (PRETRAINED_HIFIGAN, align_to_centred_mel, hifigan_forward, load_hifigan_weights,
                       read_hifigan_checkpoint)

log = logging.getLogger("audiodiff.train_vocoder")


# --------------------------------------------------------------------------- data

class WaveSegments(Dataset):
    """Random fixed-length waveform segments [segment_size], one item per file per epoch.

    The crop of item i in epoch e is a pure function of (seed, e, i) (data.segment_draw),
    so any worker count and a resumed run see the same segments. Keys are (index, epoch)
    pairs from data.ResumableSampler(with_epoch=True), or plain ints (epoch 0).
    Short files are zero-padded at the end. peak: scale each file to this peak (the
    reference normalises to 0.95); None keeps the level.
    """

    takes_epoch_keys = True

    def __init__(self, files: Sequence[Path], sample_rate: int, segment_size: int, seed: int = 0,
                 peak: float | None = 0.95, in_memory: bool = False) -> None:
        self.files = list(files)
        self.sample_rate, self.segment_size, self.seed = sample_rate, int(segment_size), int(seed)
        self.peak, self.in_memory = peak, in_memory
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> torch.Tensor:
        if index in self._cache:
            return self._cache[index]
        wave = load_audio(self.files[index], self.sample_rate)  # [T]
        if self.peak:
            wave = wave * (self.peak / wave.abs().max().clamp_min(1e-8))
        if self.in_memory:
            self._cache[index] = wave
        return wave

    def __getitem__(self, key) -> torch.Tensor:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        wave = self.load(index)
        extra = wave.shape[-1] - self.segment_size
        if extra > 0:
            start = segment_draw(self.seed, epoch, index) % (extra + 1)
            return wave[start:start + self.segment_size]
        return torch.nn.functional.pad(wave, (0, -extra))  # [segment_size]


def _collate(waves: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(waves)  # [B, segment_size]


# --------------------------------------------------------------------------- helpers

def _audio_config(value) -> AudioConfig:
    if value is None:
        return AudioConfig()
    if isinstance(value, AudioConfig):
        return value
    if isinstance(value, Mapping):
        return AudioConfig.from_dict(dict(value))
    raise TypeError(f"audio_config must be an AudioConfig, a dict or None, got {type(value).__name__}")


def _build_generator(generator, n_mels: int) -> HiFiGANGenerator:
    if isinstance(generator, str):
        return HiFiGANGenerator(generator, n_mels=n_mels)
    if isinstance(generator, Mapping):
        kwargs = dict(generator)
        version = kwargs.pop("version", None)
        kwargs.setdefault("n_mels", n_mels)
        return HiFiGANGenerator(version, **kwargs)
    raise TypeError(f"generator must be a version name (v1, v2, v3) or a dict of HiFiGANGenerator "
                    f"kwargs, got {type(generator).__name__}")


def _init_generator(generator: HiFiGANGenerator, init_from, audio_config: AudioConfig) -> None:
    """Load pretrained generator weights for fine-tuning (checks the mel definition)."""
    if not (isinstance(init_from, str) and init_from in PRETRAINED_HIFIGAN) and not Path(init_from).is_file():
        raise FileNotFoundError(f"init_from={str(init_from)!r} is not a file; use a path or one of "
                                f"{', '.join(PRETRAINED_HIFIGAN)}")
    state, _, native = read_hifigan_checkpoint(init_from)
    if native is not None:
        native = dataclasses.replace(native, normalization=audio_config.normalization, log_max=audio_config.log_max)
        diff = audio_config.describe_mismatch(native, ours="training", theirs=f"init_from {init_from}")
        if diff:
            raise ValueError(f"init_from={str(init_from)!r} was trained on another mel ({diff}); train from "
                             f"scratch (init_from=None) or use weights for this mel")
    load_hifigan_weights(generator, state, f"init_from={str(init_from)!r}")


def _log_to(path: Path) -> logging.Handler:
    """Log to `path` too; print to stderr when the program configured no logging."""
    if not logging.getLogger().handlers and not log.handlers and not logging.getLogger("audiodiff").handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return handler


# --------------------------------------------------------------------------- training

def train_vocoder(run_dir: str | os.PathLike, data, *, audio_config=None, generator="v1",
                  init_from: str | os.PathLike | None = None, valid_data=None, split: str | None = None,
                  valid_split: str | None = None, segment_size: int = 8192, batch_size: int = 16,
                  learning_rate: float = 2e-4, betas: Sequence[float] = (0.8, 0.99), weight_decay: float = 0.01,
                  lr_decay: float = 0.999, max_steps: int | None = 100_000, max_epochs: int | None = None,
                  mel_loss_weight: float = 45.0, feature_loss_weight: float = 2.0,
                  mpd_periods: Sequence[int] = (2, 3, 5, 7, 11), msd_scales: int = 3,
                  discriminator_channel_scale: float = 1.0, peak: float | None = 0.95,
                  in_memory: bool = False, num_workers: int = 0, device=None, seed: int = 1234,
                  discriminator_warmup_steps: int = 0,
                  log_every: int = 100, checkpoint_every: int = 5000, valid_every: int = 1000,
                  num_valid_clips: int = 4, keep_checkpoints: int = 2, resume: bool = True,
                  tensorboard: bool = True, max_nonfinite: int = 10) -> dict:
    """Train (init_from=None) or fine-tune (init_from="universal", "ljspeech" or a path) HiFi-GAN.

    data / valid_data: a prepared folder (audiodiff.prepare), an audio folder, a .jsonl or
    wav.scp manifest, one file or a list of files (split / valid_split filter manifests).
    generator: "v1" | "v2" | "v3" or a dict of HiFiGANGenerator kwargs (tiny ones for tests).
    discriminator_channel_scale shrinks MPD/MSD widths (1.0 is the paper's).
    discriminator_warmup_steps: for the first steps train the discriminators alone, the
    generator frozen; a fine-tune whose discriminators start from scratch (the released
    HiFi-GAN weights hold only the generator) then does not let untrained discriminators
    push the pretrained generator around. Stops after
    max_steps optimizer steps or max_epochs epochs, whichever comes first. Returns a summary
    dict (step, last losses, checkpoint and generator paths).
    """
    resolved = to_plain(dict(locals()))  # every argument, stored in each checkpoint
    run_dir = Path(run_dir)
    config = _audio_config(audio_config)
    resolved["audio_config"] = config.to_dict()
    if max_steps is None and max_epochs is None:
        raise ValueError("set max_steps or max_epochs, or training never stops")
    if discriminator_warmup_steps < 0:
        raise ValueError(f"discriminator_warmup_steps={discriminator_warmup_steps} must be 0 or more")
    if segment_size % config.hop_length:
        raise ValueError(f"segment_size={segment_size} must be a multiple of hop_length={config.hop_length} "
                         f"(e.g. {max(1, round(segment_size / config.hop_length)) * config.hop_length})")
    device = pick_device(device)
    torch.manual_seed(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"

    # Data: one item per file per epoch; ResumableSampler gives the (seed, epoch) order.
    files = resolve_audio_files(data, split)
    dataset = WaveSegments(files, config.sample_rate, segment_size, seed=seed, peak=peak, in_memory=in_memory)
    if len(dataset) < batch_size:
        raise ValueError(f"{len(dataset)} training file(s) is fewer than batch_size={batch_size}; "
                         "lower the batch size or add data")
    sampler = ResumableSampler(len(dataset), shuffle=True, seed=seed, with_epoch=True)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=_collate, drop_last=True, pin_memory=device.type == "cuda",
                        persistent_workers=num_workers > 0)
    valid_files = resolve_audio_files(valid_data, valid_split)[:num_valid_clips] if valid_data else []

    # Nets, mels, optimisers.
    G = _build_generator(generator, config.n_mels).to(device)
    if G.hop_length != config.hop_length:
        raise ValueError(f"the generator upsamples by {G.hop_length} (upsample_rates "
                         f"{G.config['upsample_rates']}) but hop_length is {config.hop_length}")
    mpd = MultiPeriodDiscriminator(mpd_periods, channel_scale=discriminator_channel_scale).to(device)
    msd = MultiScaleDiscriminator(msd_scales, channel_scale=discriminator_channel_scale).to(device)
    mel_spec = MelSpec(config).to(device)  # the generator's input, as at inference
    # The paper's mel loss uses the full band (fmax_for_loss = None -> Nyquist).
    loss_config = dataclasses.replace(config, fmax=config.sample_rate / 2, normalization="none")
    loss_mel = MelSpec(loss_config).to(device)
    optim_g = torch.optim.AdamW(G.parameters(), learning_rate,  # ignore: the stub wants betas as a 2-tuple
                                betas=tuple(betas), weight_decay=weight_decay)  # type: ignore[arg-type]
    optim_d = torch.optim.AdamW([*mpd.parameters(), *msd.parameters()], learning_rate,  # likewise
                                betas=tuple(betas), weight_decay=weight_decay)  # type: ignore[arg-type]
    sched_g = torch.optim.lr_scheduler.ExponentialLR(optim_g, gamma=lr_decay)
    sched_d = torch.optim.lr_scheduler.ExponentialLR(optim_d, gamma=lr_decay)

    nets: dict = {"generator": G, "mpd": mpd, "msd": msd, "optim_g": optim_g, "optim_d": optim_d,
                  "sched_g": sched_g, "sched_d": sched_d}
    step, position, epoch = _resume(ckpt_dir, nets, config) if resume else (0, None, 0)
    if step == 0 and position is None and init_from is not None:
        _init_generator(G, init_from, config)
        log.info("generator initialised from %s", init_from)

    def write_checkpoint() -> Path:
        state = {**{k: v.state_dict() for k, v in nets.items()}, "step": step, "data_position": position,
                 "rng": rng_state(),
                 "generator_config": G.config, "audio_config": config.to_dict(), "train_config": resolved}
        saved = save_checkpoint(state, ckpt_dir, step, keep=keep_checkpoints)
        atomic_torch_save({"generator": G.state_dict(), "generator_config": G.config,
                           "audio_config": config.to_dict(), "step": step}, run_dir / "generator.pt")
        return saved

    def done() -> bool:
        return ((max_steps is not None and step >= max_steps)
                or (max_epochs is not None and epoch >= max_epochs))

    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run_dir / "tensorboard_vocoder"))
    file_handler = _log_to(run_dir / "train_vocoder.log")
    metrics_file = open(run_dir / "vocoder_metrics.jsonl", "a")
    try:
        hop = config.hop_length
        saved_step = step
        losses: dict = {}
        nonfinite = 0
        start_time, last_log = time.time(), step
        G.train(), mpd.train(), msd.train()
        data_iter = batches(loader, position)
        while not done():
            next_position, y = next(data_iter)
            if next_position["epoch"] > epoch:  # x0.999 learning rate per epoch (paper section 4)
                for _ in range(next_position["epoch"] - epoch):
                    if step >= discriminator_warmup_steps:  # the generator's decay counts its own epochs
                        sched_g.step()
                    sched_d.step()
                epoch = next_position["epoch"]
                if done():
                    break
            position = next_position  # saved with the weights that this batch updates
            y = y.to(device, non_blocking=True)  # [B, S]
            warmup = step < discriminator_warmup_steps  # discriminators only, generator frozen
            with torch.no_grad():
                log_mel = mel_spec.denormalize(mel_spec(y))  # [B, n_mels, S / hop + 1]
                y_mel = loss_mel.log_mel(y)  # [B, n_mels, S / hop + 1], full band
            with torch.set_grad_enabled(not warmup):
                y_hat = align_to_centred_mel(G(log_mel), hop, y.shape[-1])  # [B, S]

            loss_d, loss_g, parts = _gan_losses(y, y_hat, y_mel, mpd, msd, optim_d, optim_g, loss_mel, warmup,
                                                mel_loss_weight, feature_loss_weight)
            if torch.isfinite(loss_g) and torch.isfinite(loss_d):
                if not warmup:
                    loss_g.backward()
                    optim_g.step()
                nonfinite = 0
            else:
                nonfinite += 1
                optim_g.zero_grad(set_to_none=True)
                log.warning("step %d: non-finite loss (generator %s, discriminator %s); step skipped",
                            step, loss_g.item(), loss_d.item())
                if nonfinite >= max_nonfinite:
                    raise RuntimeError(f"{nonfinite} consecutive non-finite losses at step {step}; lower "
                                       f"learning_rate (now {learning_rate}) or resume from an earlier checkpoint")
            step += 1

            losses = {"loss_g": loss_g.item(), "loss_d": loss_d.item(), **{k: v.item() for k, v in parts.items()},
                      "mel_l1": parts["loss_mel"].item() / mel_loss_weight, "lr": optim_g.param_groups[0]["lr"]}
            if step % log_every == 0 or step == 1 or done():
                rate = (step - last_log) / max(time.time() - start_time, 1e-9)
                start_time, last_log = time.time(), step
                log.info("step %d epoch %d | G %.3f (mel L1 %.3f, adv %.3f, fm %.3f) | D %.3f | lr %.2e | %.2f steps/s",
                         step, epoch, losses["loss_g"], losses["mel_l1"], losses["loss_adv"], losses["loss_fm"],
                         losses["loss_d"], losses["lr"], rate)
                _record(metrics_file, writer, "vocoder", step, {**losses, "steps_per_s": rate}, epoch=epoch)
            if valid_files and (step % valid_every == 0 or done()):
                scores = validate(G, valid_files, config, device)
                log.info("step %d validation | mel L1 %.4f | MR-STFT %.4f", step, scores["mel_l1"], scores["mr_stft"])
                _record(metrics_file, writer, "vocoder_valid", step, {f"valid_{k}": v for k, v in scores.items()})
            if step % checkpoint_every == 0 or done():
                write_checkpoint()
                saved_step = step
        if saved_step != step:  # stopped at an epoch boundary (max_epochs)
            write_checkpoint()
    finally:
        metrics_file.close()
        log.removeHandler(file_handler)
        file_handler.close()
        if writer is not None:
            writer.close()
    last = ckpt_dir / f"step_{step:08d}.pt"
    return {"step": step, "epoch": epoch, "losses": losses, "checkpoint": str(last) if last.exists() else None,
            "generator": str(run_dir / "generator.pt")}


def _resume(ckpt_dir: Path, nets: dict, config: AudioConfig) -> tuple[int, dict | None, int]:
    """(step, data position, epoch) after loading the newest good checkpoint into `nets` (generator,
    discriminators, optimisers, schedulers by their checkpoint keys); (0, None, 0) when there is none."""
    state, path = load_latest(ckpt_dir)
    if state is None:
        return 0, None, 0
    G = nets["generator"]
    if state["generator_config"] != G.config:
        raise ValueError(f"{path} holds a generator {state['generator_config']} but this run builds "
                         f"{G.config}; use another run_dir or the same generator settings")
    stored = AudioConfig.from_dict(state["audio_config"])
    if stored != config:
        mismatch = config.describe_mismatch(stored, "this run", "checkpoint")
        raise ValueError(f"{path} was trained on another mel ({mismatch}); use another run_dir")
    for key, module in nets.items():
        module.load_state_dict(state[key])
    set_rng_state(state["rng"])
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"]), state["data_position"], int(state["data_position"]["epoch"])


def _gan_losses(y, y_hat, y_mel, mpd, msd, optim_d, optim_g, loss_mel, warmup: bool, mel_loss_weight: float,
                feature_loss_weight: float):
    """The discriminator step (taken here), then the generator's losses (loss_d, loss_g, their parts).

    Discriminators: LSGAN (paper eq. 1) on MPD and MSD. Generator: LSGAN + feature matching + mel L1
    (paper eq. 5) against the updated discriminators, whose weights take no gradient here (the
    reference computes it and throws it away): the real branch then builds no graph and the fake
    one only d/d(y_hat). During the warm-up the generator takes no gradient at all.
    """
    optim_d.zero_grad(set_to_none=True)
    r_p, f_p, _, _ = mpd(y, y_hat.detach())
    r_s, f_s, _, _ = msd(y, y_hat.detach())
    loss_d = discriminator_loss(r_p, f_p) + discriminator_loss(r_s, f_s)
    if torch.isfinite(loss_d):
        loss_d.backward()
        optim_d.step()

    optim_g.zero_grad(set_to_none=True)
    discriminators = [*mpd.parameters(), *msd.parameters()]
    for p in discriminators:
        p.requires_grad_(False)
    with torch.set_grad_enabled(not warmup):
        loss_mel_value = mel_l1_loss(y_mel, loss_mel.log_mel(y_hat), mel_loss_weight)
        _, f_p, fm_rp, fm_fp = mpd(y, y_hat)
        _, f_s, fm_rs, fm_fs = msd(y, y_hat)
        loss_adv = generator_adversarial_loss(f_p) + generator_adversarial_loss(f_s)
        loss_fm = (feature_matching_loss(fm_rp, fm_fp, feature_loss_weight)
                   + feature_matching_loss(fm_rs, fm_fs, feature_loss_weight))
        loss_g = loss_adv + loss_fm + loss_mel_value
    for p in discriminators:
        p.requires_grad_(True)
    return loss_d, loss_g, {"loss_mel": loss_mel_value, "loss_adv": loss_adv, "loss_fm": loss_fm}


def _record(metrics_file, writer, prefix: str, step: int, values: dict, **extra) -> None:
    """One line of vocoder_metrics.jsonl, and the values to TensorBoard under prefix/."""
    metrics_file.write(json.dumps({"step": step, **extra, **values}) + "\n")
    metrics_file.flush()
    if writer is not None:
        for k, v in values.items():
            writer.add_scalar(f"{prefix}/{k}", v, step)


@torch.no_grad()
def validate(G: HiFiGANGenerator, files: Sequence[Path], config: AudioConfig, device: torch.device,
             max_seconds: float = 10.0) -> dict:
    """Mean mel L1 and MR-STFT distance of whole clips, vocoded as at inference."""
    was_training = G.training
    G.eval()
    mel_spec = MelSpec(config).to(device)
    mel_l1, mr = [], []
    for f in files:
        wave = load_audio(f, config.sample_rate, max_seconds=max_seconds).to(device)[None]  # [1, T]
        out = hifigan_forward(G, mel_spec.denormalize(mel_spec(wave)), config.hop_length)  # as the vocoder does
        mel_l1.append(mel_l1_distance(out, wave, config).item())
        mr.append(multi_resolution_stft_distance(out, wave).item())
    G.train(was_training)
    return {"mel_l1": sum(mel_l1) / len(mel_l1), "mr_stft": sum(mr) / len(mr)}
