"""audiodiff.data: segments, padding, determinism, labels, sharding and exact resume."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, DistributedSampler

from audiodiff.audio import AudioConfig
from audiodiff.data import MelDataset, ResumableSampler, batches, collate, make_loader, segment_draw
from audiodiff.prepare import prepare

SR = 16000
CONFIG = AudioConfig(sample_rate=SR, n_fft=512, hop_length=128, win_length=512, n_mels=16, fmax=8000.0)
SEG = 64  # frames: 0.51 s
LENGTHS = [0.2, 1.5, 0.3, 2.0, 0.9, 1.2, 0.6, 1.8, 0.25, 1.0, 1.4, 0.7]  # seconds; 0.2 s = 26 frames


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """12 labelled clips (3 classes, two splits) and 4 unlabelled ones."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    lines = []
    for i, seconds in enumerate(LENGTHS):
        name = f"wavs/{i:02d}.wav"
        (root / "wavs").mkdir(exist_ok=True)
        sf.write(root / name, (0.2 * rng.standard_normal(int(seconds * SR))).astype(np.float32), SR)
        lines.append({"path": name, "label": i % 3, "split": "valid" if i >= 10 else "train"})
    (root / "list.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    labelled = root / "labelled"
    prepare(root / "list.jsonl", labelled, CONFIG, workers=0)
    unlabelled = root / "unlabelled"
    (root / "plain").mkdir()
    for i in range(4):
        sf.write(root / "plain" / f"{i}.wav", (0.2 * rng.standard_normal(SR)).astype(np.float32), SR)
    prepare(root / "plain", unlabelled, CONFIG, workers=0)
    none_norm = root / "none_norm"
    prepare(root / "plain", none_norm, AudioConfig(**{**CONFIG.to_dict(), "normalization": "none"}), workers=0)
    return {"labelled": labelled, "unlabelled": unlabelled, "none_norm": none_norm}


def test_segment_shapes_crops_and_padding(prepared):
    ds = MelDataset(prepared["labelled"], SEG)
    assert len(ds) == len(LENGTHS) and ds.audio_config == CONFIG
    for i in range(len(ds)):
        item = ds[i]
        mel, full = item["mel"], ds.clip(i)
        assert mel.shape == (16, SEG) and mel.dtype == torch.float32 and mel.is_contiguous()
        assert item["label"].dtype == torch.long and item["label"].shape == () and item["index"] == i
        frames = full.shape[1]
        assert frames == CONFIG.num_frames(int(LENGTHS[i] * SR))
        if frames < SEG:  # short clip: real frames first, then silence (-1 for minmax)
            assert item["length"] == frames
            torch.testing.assert_close(mel[:, :frames], full)
            assert (mel[:, frames:] == -1.0).all()
        else:
            off = ds.crop_offset(i, 0)
            assert 0 <= off <= frames - SEG and item["length"] == SEG
            torch.testing.assert_close(mel, full[:, off:off + SEG])
    assert ds[0]["length"] == 26


def test_silence_value_without_normalisation(prepared):
    ds = MelDataset(prepared["none_norm"], 200)  # 1 s clips = 126 frames: padded
    item = ds[0]
    assert item["length"] == 126
    assert torch.allclose(item["mel"][:, 126:], torch.tensor(math.log(CONFIG.log_floor)))


def test_crops_are_deterministic_per_seed_epoch_index(prepared):
    a = MelDataset(prepared["labelled"], SEG, seed=5)
    b = MelDataset(prepared["labelled"], SEG, seed=5, in_memory=False)  # mmap gives the same values
    long = [i for i in range(len(a)) if a.clip(i).shape[1] > SEG + 50]
    for epoch in (0, 1, 7):
        for i in range(len(a)):
            torch.testing.assert_close(a[(i, epoch)]["mel"], b[(i, epoch)]["mel"], rtol=0, atol=0)
    offsets = lambda ds, e: [ds.crop_offset(i, e) for i in long]  # noqa: E731
    assert offsets(a, 0) != offsets(a, 1)  # a new epoch gives new crops
    assert offsets(a, 0) != offsets(MelDataset(prepared["labelled"], SEG, seed=6), 0)  # so does a new seed
    a.set_epoch(3)  # int keys use the dataset's epoch
    assert all(torch.equal(a[i]["mel"], b[(i, 3)]["mel"]) for i in range(len(a)))
    assert segment_draw(1, 2, 3) == segment_draw(1, 2, 3) != segment_draw(1, 3, 2)
    fixed = MelDataset(prepared["labelled"], SEG, random_crop=False)
    assert all(fixed.crop_offset(i, e) == 0 for i in range(len(fixed)) for e in range(3))


def test_labels_splits_and_num_classes(prepared):
    ds = MelDataset(prepared["labelled"], SEG)
    assert ds.num_classes == 3 and [int(ds[i]["label"]) for i in range(len(ds))] == [i % 3 for i in range(12)]
    valid = MelDataset(prepared["labelled"], SEG, split="valid")
    assert len(valid) == 2 and [int(valid[i]["label"]) for i in range(2)] == [1, 2]
    with pytest.raises(ValueError, match="no clips with split='test'.*splits there: train, valid"):
        MelDataset(prepared["labelled"], SEG, split="test")
    plain = MelDataset(prepared["unlabelled"], SEG)
    assert plain.num_classes == 0 and int(plain[0]["label"]) == -1


def test_split_frames_makes_several_items_per_long_clip(prepared):
    ds = MelDataset(prepared["labelled"], SEG, split_frames=100)
    frames = [ds.clip(i).shape[1] for i in range(len(LENGTHS))]
    assert len(ds) == sum(math.ceil(f / 100) for f in frames)
    seen = {}
    for i in range(len(ds)):
        clip = int(ds._item_clip[i])
        start = int(ds._item_start[i]) + ds.crop_offset(i, 0)
        n = min(SEG, int(ds._item_frames[i]))
        torch.testing.assert_close(ds[i]["mel"][:, :n], ds.clip(clip)[:, start:start + n])
        seen.setdefault(clip, []).append(int(ds._item_start[i]))
    assert seen[3] == [0, 100, 200]  # the 2 s clip (251 frames)


def test_errors_are_clear(prepared, tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m audiodiff.prepare"):
        MelDataset(tmp_path, SEG)
    with pytest.raises(ValueError, match="segment_frames=0"):
        MelDataset(prepared["labelled"], 0)
    with pytest.raises(IndexError):
        MelDataset(prepared["labelled"], SEG)[99]
    ds = MelDataset(prepared["labelled"], SEG)
    with pytest.raises(ValueError, match="fewer than batch_size=64"):
        make_loader(ds, 64)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), world_size=st.integers(1, 5), shuffle=st.booleans(), pad=st.booleans(),
       seed=st.integers(0, 2 ** 31), epoch=st.integers(0, 100))
def test_sampler_order_equals_distributed_sampler(n, world_size, shuffle, pad, seed, epoch):
    if not pad and n < world_size:
        return  # DistributedSampler(drop_last=True) gives nothing; ours refuses too
    shards = []
    for rank in range(world_size):
        ours = ResumableSampler(n, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, pad=pad)
        theirs = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                    drop_last=not pad)
        ours.set_epoch(epoch)
        theirs.set_epoch(epoch)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)
        shards.append(list(ours))
    flat = [i for s in shards for i in s]
    if n % world_size == 0:  # the ranks partition the data: each index exactly once
        assert sorted(flat) == list(range(n))
    elif pad:  # every index at least once, only the padding repeats
        assert set(flat) == set(range(n)) and len(flat) == math.ceil(n / world_size) * world_size
    else:
        assert len(set(flat)) == len(flat)


def test_set_start_skips_a_prefix():
    s = ResumableSampler(30, seed=1, rank=1, world_size=3, with_epoch=True)
    s.set_epoch(4)
    whole = list(s)
    assert all(e == 4 for _, e in whole) and len(whole) == 10
    s.set_start(7)
    assert list(s) == whole[7:] and len(s) == 3
    s.set_epoch(5)
    assert len(s) == 10  # a new epoch starts at its beginning


def test_distributed_loaders_cover_each_index_once(prepared):
    ds = MelDataset(prepared["labelled"], SEG)
    seen = []
    for rank in range(3):
        loader = make_loader(ds, 2, shuffle=True, seed=9, distributed=True, rank=rank, world_size=3)
        _, batch = next(batches(loader))
        seen += batch["index"].tolist()
        position, batch2 = next(batches(loader, {"epoch": 0, "batch": 1}))
        seen += batch2["index"].tolist()
    assert sorted(seen) == list(range(12))  # 12 clips / 3 ranks = 2 batches of 2 each


def take(iterator, count):
    out = []
    for _ in range(count):
        position, batch = next(iterator)
        out.append((position, batch["index"].tolist(), batch["mel"].clone(), batch["label"].clone()))
    return out


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_gives_the_batches_of_an_unstopped_run(prepared, num_workers):
    ds = MelDataset(prepared["labelled"], SEG, seed=1)
    loader = make_loader(ds, 5, shuffle=True, seed=3, num_workers=num_workers, pin_memory=False)
    reference = take(batches(loader), 7)  # 2 batches per epoch (12 clips, drop_last): 3.5 epochs
    assert [p["epoch"] for p, *_ in reference] == [0, 0, 1, 1, 2, 2, 3]
    assert reference[0][1] != reference[2][1]  # epochs reshuffle
    stops = [1, 2, 3, 5] if num_workers == 0 else [3]
    for stop in stops:
        fresh = MelDataset(prepared["labelled"], SEG, seed=1)
        resumed_loader = make_loader(fresh, 5, shuffle=True, seed=3, num_workers=num_workers, pin_memory=False)
        position = json.loads(json.dumps(reference[stop - 1][0]))  # as stored in a checkpoint
        resumed = take(batches(resumed_loader, position), len(reference) - stop)
        for (p1, i1, m1, l1), (p2, i2, m2, l2) in zip(reference[stop:], resumed):
            assert p1 == p2 and i1 == i2
            assert torch.equal(m1, m2) and torch.equal(l1, l2)


def test_resume_mid_epoch_needs_the_same_batch_size(prepared):
    ds = MelDataset(prepared["labelled"], SEG)
    position = {"epoch": 2, "batch": 1, "batch_size": 5, "world_size": 1, "seed": 0}
    with pytest.raises(ValueError, match="batch_size 5 -> 4"):
        next(batches(make_loader(ds, 4), position))
    position["batch"] = 0  # the start of an epoch is fine with any batch size
    assert next(batches(make_loader(ds, 4), position))[0]["epoch"] == 2


def test_plain_distributed_sampler_with_set_epoch(prepared):
    ds = MelDataset(prepared["labelled"], SEG, seed=2)
    sampler = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=3, sampler=sampler, collate_fn=collate)
    sampler.set_epoch(4)
    ds.set_epoch(4)
    batch = next(iter(loader))
    ours = ResumableSampler(len(ds), seed=0, rank=0, world_size=2)
    ours.set_epoch(4)
    idx = list(ours)[:3]
    assert batch["index"].tolist() == idx
    assert torch.equal(batch["mel"], torch.stack([ds[(i, 4)]["mel"] for i in idx]))
