"""Manifests, the feature cache of `audiodiff.prepare`, random mel segments and resumable loaders.

    ds = MelDataset("data/prepared", segment_frames=87)             # {"mel" [n_mels, 87], "label", ...}
    loader = make_loader(ds, batch_size=64, shuffle=True, seed=0, num_workers=2)
    for position, batch in batches(loader, ckpt.get("data_position")):
        ...                                                          # one training step
        ckpt["data_position"] = position                             # a dict of ints

Segments. Item i of epoch e is a fixed-length window of clip i's cached log-mel: clips longer
than `segment_frames` are cropped at an offset that is a pure function of (seed, e, i) (a
SplitMix64 hash, no RNG state anywhere), shorter ones are padded at the end with the silence
value (-1 for minmax normalisation, log(log_floor) for none); "length" says how many frames
are real. Nothing per process is stateful, so any sampler and any number of workers see the
same segment for the same (seed, epoch, index).

The epoch travels with the index. `ResumableSampler(with_epoch=True)` (what make_loader
uses) yields (index, epoch) pairs, and MelDataset accepts them, so DataLoader workers, even
persistent ones, never need the dataset's epoch updated. A plain int index (for example
from torch's DistributedSampler) uses `MelDataset.set_epoch` instead, which reaches
workers only when they are started per epoch (persistent_workers=False).

Sampler and resume. `ResumableSampler` orders indices exactly like
`torch.utils.data.DistributedSampler(shuffle, seed, drop_last=not pad)`: a permutation from a
torch.Generator seeded with seed + epoch, padded (by repeating its head) or truncated to a
multiple of world_size, and rank r takes positions r, r + world_size, ... So the ranks
partition the data, and every rank knows the whole order from (seed, epoch) alone.
`set_start(k)` skips this rank's first k indices of the epoch. A data position is
{"epoch": e, "batch": b, ...}: b batches of epoch e have been consumed by the training
loop (not merely prefetched by workers). `batches(loader, position)` sets the sampler to
epoch e, start b * batch_size, and yields (position after this batch, batch) forever, moving
to the next epoch when one ends; saving that position with a checkpoint and passing it back
on resume reproduces exactly the batches an unstopped run would have seen. Resuming
mid-epoch needs the same batch size, world size and seed (checked); a position at
batch 0 may change them.

Features are stored time-major ([F, n_mels], float16 by default, see audiodiff.prepare), so
a segment is one contiguous slice. in_memory=True loads every clip into one contiguous
tensor (shared copy-on-write with forked DataLoader workers); in_memory=False reads
segments from memory-mapped .npy files (an LRU of open maps bounds the file handles).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sized, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .audio import AudioConfig
from .manifest import read_prepared

_MASK64 = (1 << 64) - 1
MMAP_CACHE = 256  # open memory maps per process in in_memory=False mode


MIN_STD = 1e-3  # floor of the fitted std (bin_statistics): a constant bin is not divided by ~0


def _splitmix64(x: int) -> int:
    """SplitMix64 finaliser (Steele et al. 2014): a well-mixed 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def segment_draw(seed: int, epoch: int, index: int) -> int:
    """The 64-bit random number behind item `index`'s crop in `epoch`: a pure function."""
    return _splitmix64(_splitmix64(_splitmix64(seed & _MASK64) ^ (epoch & _MASK64)) ^ (index & _MASK64))


class MelDataset(Dataset):
    """Fixed-length log-mel segments from a prepared folder.

    Item: {"mel": float32 [n_mels, segment_frames], "label": int64 scalar (-1 unlabelled),
    "index": int, "length": real frames (the rest is silence padding)}.
    Keys are an int (uses set_epoch's epoch) or an (index, epoch) pair (see the module doc).

    split: keep only manifest entries whose "split" equals it. random_crop=False takes
    each clip's first segment. split_frames: clips longer than this many frames become
    several items of split_frames each (so a long recording is seen more than once per
    epoch); None keeps one item per clip. in_memory: preload every clip into one
    contiguous tensor (None: when the features take under 4 GiB).
    """

    takes_epoch_keys = True  # make_loader: the sampler may yield (index, epoch)

    def __init__(self, prepared_dir: str | Path, segment_frames: int, *, split: str | None = None,
                 random_crop: bool = True, seed: int = 0, in_memory: bool | None = True,
                 split_frames: int | None = None) -> None:
        if isinstance(segment_frames, bool) or not isinstance(segment_frames, int) or segment_frames < 1:
            raise ValueError(f"segment_frames={segment_frames!r} must be an integer >= 1 "
                             "(1 s at 22,050 Hz, hop 256 is 87)")
        if split_frames is not None and (not isinstance(split_frames, int) or split_frames < segment_frames):
            raise ValueError(f"split_frames={split_frames!r} must be None or an integer >= segment_frames "
                             f"({segment_frames})")
        self.dir = Path(prepared_dir)
        entries, cache = read_prepared(self.dir)
        if split is not None:
            splits = sorted({str(e.get("split")) for e in entries if "split" in e})
            entries = [e for e in entries if e.get("split") == split]
            if not entries:
                raise ValueError(f"no clips with split={split!r} in {self.dir}/manifest.jsonl; "
                                 f"splits there: {', '.join(splits) or 'none (no split key)'}")
        if not entries:
            raise ValueError(f"{self.dir}/manifest.jsonl lists no usable clips; see {self.dir}/skipped.tsv")
        self.entries = entries
        self._audio_config = AudioConfig.from_dict(cache["audio_config"])
        self.segment_frames, self.random_crop, self.seed = segment_frames, random_crop, int(seed)
        self.epoch = 0
        c = self._audio_config
        self.silence = c.silence
        self.n_mels = c.n_mels
        self.labels = [int(e.get("label", -1)) for e in entries]
        frames = np.array([int(e["num_frames"]) for e in entries], dtype=np.int64)

        # items: (clip, first frame, frames) windows of the clips
        if split_frames is None:
            self._item_clip = np.arange(len(entries), dtype=np.int64)
            self._item_start = np.zeros(len(entries), dtype=np.int64)
            self._item_frames = frames.copy()
        else:
            pieces = np.maximum(1, -(-frames // split_frames))
            self._item_clip = np.repeat(np.arange(len(entries), dtype=np.int64), pieces)
            first = np.concatenate([[0], np.cumsum(pieces)[:-1]])
            self._item_start = (np.arange(len(self._item_clip)) - first[self._item_clip]) * split_frames
            self._item_frames = np.minimum(split_frames, frames[self._item_clip] - self._item_start)

        dtype = np.dtype(cache.get("feature_dtype", "float16"))
        nbytes = int(frames.sum()) * c.n_mels * dtype.itemsize
        self.in_memory = nbytes < 4 * 2 ** 30 if in_memory is None else bool(in_memory)
        self._maps: OrderedDict = OrderedDict()
        if self.in_memory:
            self._offsets = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64)
            data = torch.empty(int(frames.sum()), c.n_mels, dtype=getattr(torch, dtype.name))  # [sum F, n_mels]
            view = data.numpy()  # same memory; numpy copies from the read-only maps without a warning
            for i in range(len(entries)):
                view[self._offsets[i]:self._offsets[i] + frames[i]] = self._open(i)
                self._maps.pop(i)
            self._data = data
            self._maps.clear()

    # -- properties
    @property
    def audio_config(self) -> AudioConfig:
        return self._audio_config

    @property
    def num_classes(self) -> int:
        """max label + 1, or 0 when no clip is labelled."""
        return max(self.labels) + 1 if max(self.labels) >= 0 else 0

    def set_epoch(self, epoch: int) -> None:
        """Epoch for plain int keys (pairs from ResumableSampler carry their own)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._item_clip)

    # -- reading
    def _open(self, clip: int) -> np.ndarray:
        """The memory-mapped features [F, n_mels] of one clip (LRU of open maps)."""
        arr = self._maps.get(clip)
        if arr is not None:
            self._maps.move_to_end(clip)
            return arr
        e = self.entries[clip]
        path = self.dir / e["feats"]
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"{path}: cannot read the cached features of {e['path']} ({err}); "
                                    f"re-run python -m audiodiff.prepare") from None
        if arr.shape != (int(e["num_frames"]), self.n_mels):
            raise ValueError(f"{path}: features have shape {arr.shape}, the manifest says "
                             f"({e['num_frames']}, {self.n_mels}); re-run python -m audiodiff.prepare")
        self._maps[clip] = arr
        if len(self._maps) > MMAP_CACHE:
            self._maps.popitem(last=False)
        return arr

    def _frames(self, clip: int, start: int, stop: int) -> torch.Tensor:
        """Features [stop - start, n_mels] of one clip, in the stored dtype."""
        if self.in_memory:
            o = int(self._offsets[clip])
            return self._data[o + start:o + stop]
        return torch.from_numpy(np.array(self._open(clip)[start:stop]))  # a writable copy of the slice

    def clip(self, clip: int) -> torch.Tensor:
        """All features of manifest entry `clip` as float32 [n_mels, F]."""
        return self._frames(clip, 0, int(self.entries[clip]["num_frames"])).T.float().contiguous()

    def crop_offset(self, index: int, epoch: int) -> int:
        """First frame (within the item) of the segment of item `index` in `epoch`."""
        n = int(self._item_frames[index])
        room = n - self.segment_frames
        if room <= 0 or not self.random_crop:
            return 0
        return segment_draw(self.seed, epoch, index) % (room + 1)

    def __getitem__(self, key) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a MelDataset of {len(self)} items")
        clip = int(self._item_clip[index])
        start = int(self._item_start[index]) + self.crop_offset(index, int(epoch))
        length = min(int(self._item_frames[index]), self.segment_frames)
        seg = self._frames(clip, start, start + length)  # [length, n_mels]
        if length == self.segment_frames:
            mel = seg.T.float().contiguous()  # [n_mels, segment_frames]
        else:
            mel = torch.full((self.n_mels, self.segment_frames), self.silence)
            mel[:, :length] = seg.T
        return {"mel": mel, "label": torch.tensor(self.labels[clip], dtype=torch.long),
                "index": index, "length": length}


def bin_statistics(dataset: MelDataset, max_clips: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of every mel bin over the real frames of a dataset's clips:
    float32 [n_mels], [n_mels], accumulated in float64 (audiodiff.diffusion.scaling uses them).

    Standard deviations are at least MIN_STD. Up to max_clips clips,
    evenly spaced through the manifest, so a large corpus costs seconds; the
    result is a pure function of the folder's contents (every rank of a DDP run gets the same).
    """
    n = len(dataset.entries)
    picks = range(n) if n <= max_clips else np.linspace(0, n - 1, max_clips).round().astype(np.int64)
    total = torch.zeros(dataset.n_mels, dtype=torch.float64)
    squares = torch.zeros(dataset.n_mels, dtype=torch.float64)
    count = 0
    for clip in picks:
        frames = dataset._frames(int(clip), 0, int(dataset.entries[int(clip)]["num_frames"])).double()  # [F, n_mels]
        total += frames.sum(0)
        squares += frames.pow(2).sum(0)
        count += frames.shape[0]
    if count == 0:
        raise ValueError(f"{dataset.dir}: the clips have no frames to take statistics from")
    mean = total / count
    var = (squares / count - mean.pow(2)).clamp(min=0)
    # a bin that never changes (band-limited or silent audio) gets MIN_STD, not a division by ~0
    return mean.float(), var.sqrt().clamp(min=MIN_STD).float()


def collate(items: list[dict]) -> dict:
    """Stack items: {"mel" [B, n_mels, F], "label" [B], "index" [B], "length" [B]}."""
    return {"mel": torch.stack([it["mel"] for it in items]),
            "label": torch.stack([torch.as_tensor(it["label"], dtype=torch.long) for it in items]),
            "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long),
            "length": torch.tensor([int(it.get("length", it["mel"].shape[-1])) for it in items], dtype=torch.long)}


# --------------------------------------------------------------------------- sampler and loader

class ResumableSampler(Sampler):
    """DistributedSampler's order (same seed + epoch permutation, same padding and sharding),
    plus set_start(k) to skip this rank's first k indices, for resuming mid-epoch.

    pad=True repeats the head of the permutation to a multiple of world_size (like
    drop_last=False); pad=False drops the tail. with_epoch=True yields (index, epoch) pairs.
    """

    def __init__(self, dataset_len: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, pad: bool = True, with_epoch: bool = False) -> None:
        if dataset_len < 1:
            raise ValueError(f"ResumableSampler: dataset_len={dataset_len} must be >= 1")
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"ResumableSampler: rank={rank!r} must be in [0, world_size={world_size!r})")
        self.n, self.shuffle, self.seed = int(dataset_len), bool(shuffle), int(seed)
        self.rank, self.world_size, self.pad, self.with_epoch = rank, world_size, bool(pad), bool(with_epoch)
        if pad or self.n % world_size == 0:
            self.per_rank = math.ceil(self.n / world_size)
        else:
            self.per_rank = math.ceil((self.n - world_size) / world_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation; resets the start to 0."""
        self.epoch, self.start = int(epoch), 0

    def set_start(self, start: int) -> None:
        """Skip this rank's first `start` indices of the current epoch."""
        if start < 0:
            raise ValueError(f"set_start({start}): must be >= 0")
        self.start = int(start)

    def indices(self) -> list[int]:
        """This rank's whole index list for the current epoch (before set_start)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        if total > self.n:
            extra = total - self.n
            order += (order * math.ceil(extra / self.n))[:extra]
        return order[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator:
        rest = self.indices()[self.start:]
        if self.with_epoch:
            return iter([(i, self.epoch) for i in rest])
        return iter(rest)

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers slice tensors; threads would only fight over 2 cores
    # Ctrl-C reaches the whole process group and schedulers send SIGTERM to every process: the
    # main process decides (finish the step, checkpoint, exit) and still needs its workers'
    # batches to do so; they exit with it (DataLoader watches its parent).
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0, num_workers: int = 0,
                distributed: bool = False, drop_last: bool = True, *, rank: int | None = None,
                world_size: int | None = None, pin_memory: bool | None = None) -> DataLoader:
    """A DataLoader over `dataset` with a ResumableSampler (loader.sampler); batch_size is per rank.

    distributed=True shards by torch.distributed's rank and world size (or the given
    ones). Drive it with `batches(loader, position)`, or call loader.sampler.set_epoch /
    set_start yourself before each epoch. Workers are persistent (the epoch travels with
    each index, so they need no update).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
    if distributed:
        import torch.distributed as dist

        if rank is None or world_size is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("make_loader(distributed=True) needs torch.distributed initialised "
                                   "(torchrun) or explicit rank= and world_size=")
            rank, world_size = dist.get_rank(), dist.get_world_size()
    else:
        rank, world_size = 0, 1
    sampler = ResumableSampler(len(cast(Sized, dataset)), shuffle=shuffle, seed=seed, rank=rank,
                               world_size=world_size, pad=True, with_epoch=getattr(dataset, "takes_epoch_keys", False))
    if drop_last and sampler.per_rank < batch_size:
        raise ValueError(f"the dataset has {sampler.per_rank} item(s) per rank, fewer than batch_size="
                         f"{batch_size} with drop_last=True, so an epoch would have no batch; lower the "
                         "batch size or add data")
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, drop_last=drop_last,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      persistent_workers=num_workers > 0, worker_init_fn=_worker_init if num_workers else None)


def batches(loader: DataLoader, position: dict | None = None) -> Iterator[tuple[dict, Any]]:
    """Endless (position, batch) pairs from data position `position` (None: the start).

    position = {"epoch", "batch", "batch_size", "world_size", "seed"}: after the yielded
    batch, `batch` batches of `epoch` are consumed; store it in the checkpoint with the
    weights of the step that used this batch and pass it back to resume.
    """
    sampler = loader.sampler
    if not isinstance(sampler, ResumableSampler):
        raise TypeError("batches() needs a loader from make_loader (a ResumableSampler)")
    meta = {"batch_size": loader.batch_size, "world_size": sampler.world_size, "seed": sampler.seed}
    epoch, done = 0, 0
    if position is not None:
        epoch, done = int(position["epoch"]), int(position["batch"])
        changed = {k: (position[k], v) for k, v in meta.items() if k in position and position[k] != v}
        if done and changed:
            what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
            raise ValueError(f"cannot resume mid-epoch (epoch {epoch}, batch {done}) with a changed {what}; "
                             f"keep them, or resume from the next epoch: {{'epoch': {epoch + 1}, 'batch': 0}}")
    while True:
        sampler.set_epoch(epoch)
        sampler.set_start(done * cast(int, loader.batch_size))  # make_loader's loaders have one
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        fresh = done == 0
        for batch in loader:
            done += 1
            yield {"epoch": epoch, "batch": done, **meta}, batch
        if fresh and done == 0:
            raise RuntimeError(f"epoch {epoch} gave no batch (fewer items per rank than batch_size with "
                               "drop_last?); lower the batch size or add data")
        epoch, done = epoch + 1, 0
