"""python -m audiodiff.evaluate: sample-quality metrics (the SC09 protocol) and vocoder metrics.

    python -m audiodiff.evaluate --model exp/digits --num 2048 --classifier exp/classifier/classifier.pt \\
        --reference dump/digits/train --test dump/digits/test --json exp/digits/eval.json
    python -m audiodiff.evaluate --clips exp/digits/clips --classifier exp/classifier/classifier.pt
    python -m audiodiff.evaluate --clips some/folder --reference dump/digits/train      # no classifier
    python -m audiodiff.evaluate --vocoder-metrics --clips data/digits/wavs/test --vocoder griffinlim,hifigan

With a classifier (audiodiff.train_classifier) the table has the metrics of DiffWave (Kong et al.
2021, Table 2) and SaShiMi (Goel et al. 2022, Table 4) on SC09: FID on the classifier's penultimate
features, IS, mIS, AM and NDB/K, plus the classifier's accuracy against the label a clip was made
for (class-conditional models) or is known to have. Reference rows score the train and test splits
themselves with the same classifier, so every table carries its own scale (FID and NDB/K of the
train row are 0 by construction; the test row is the real-data level to compare with). FID, AM and
NDB/K are measured against the train split (--reference; by default the split the classifier was
trained on, when its folder still exists). mIS is the mean over all pairs of clips, the quantity
DiffWave and SaShiMi report (their values, far above IS, only fit that reading); the within-class
variant is in the JSON as mIS_within_class. With a confident classifier mIS is dominated by how
small its off-class probabilities are, so compare it only with rows scored by the same classifier.

Without a classifier: FD-mel and KID-mel, the Frechet distance and the kernel inception distance on
weight-free features (per clip: mean and standard deviation over time of each normalised log-mel
bin, and the standard deviation of its frame-to-frame difference). They rank systems on one dataset;
they are not comparable with FAD on VGGish embeddings or with FID on classifier features.

Vocoder metrics (--vocoder-metrics): each clip -> mel -> vocoder -> waveform, compared with the clip:
multi-resolution STFT distance, log-spectral distance (dB) and mel L1 (audiodiff.vocoders).

Bad input (an empty folder, no decodable audio, a missing or unloadable classifier, a prepared folder
that does not match the classifier's mel) prints one line on stderr and exits with status 2 before
anything is written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import AudioConfig, AudioFileError, MelSpec, load_audio, resample

DEFAULT_NUM = 2048
NDB_BINS = 50
NDB_ALPHA = 0.05


class EvaluateError(Exception):
    """A user-facing problem (bad path, nothing to score, mismatched mels): one line, exit status 2."""


# --------------------------------------------------------------------------- metrics

def _as_2d(x, name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must be a 2D array [N, D] with N >= 1, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has NaN or Inf values")
    return a


def _probs(p, name: str = "probs") -> np.ndarray:
    p = _as_2d(p, name)
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(f"{name} must be probability rows (non-negative, summing to 1); pass softmax outputs")
    return p


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(p, np.finfo(np.float64).tiny))  # 0 * log 0 = 0; no -inf


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased, N - 1) of features [N, D]."""
    f = _as_2d(features, "features")
    if f.shape[0] < 2:
        raise ValueError("a covariance needs at least 2 feature vectors")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(features_a, features_b, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, D] (Heusel et al. 2017, eq. 6;
    Dowson & Landau 1982): ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    On a classifier's penultimate features this is FID (DiffWave's FID on SC09); on log-mel
    statistics it is FD-mel. The matrix square root is scipy.linalg.sqrtm; when S_a S_b is near
    singular, eps is added to both diagonals (as pytorch-fid does).
    """
    from scipy import linalg

    mu_a, s_a = gaussian_stats(features_a)
    mu_b, s_b = gaussian_stats(features_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sizes differ: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    with warnings.catch_warnings():
        # Fewer clips than feature dimensions make S_a S_b singular; the root is still defined.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a @ s_b)
        if not np.isfinite(covmean).all():
            offset = np.eye(s_a.shape[0]) * eps
            covmean = linalg.sqrtm((s_a + offset) @ (s_b + offset))
    covmean = np.real(covmean)  # numerical error leaves a tiny imaginary part
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # exact distance is >= 0; rounding can give -1e-12


def inception_score(probs) -> float:
    """IS = exp(E_x KL(p(y|x) || p(y))), p(y) = E_x p(y|x) (Salimans et al. 2016, sec. 4).

    probs: classifier softmax [N, K] of the clips. 1 when every clip gets the same distribution;
    K when the clips are classified confidently and spread evenly over K classes. One split.
    """
    p = _probs(probs)
    p_y = p.mean(axis=0)
    kl = (p * (_log(p) - _log(p_y))).sum(axis=1)
    return float(np.exp(kl.mean()))


def modified_inception_score(probs, groups=None) -> float:
    """mIS = exp(E_{x, x'} KL(p(y|x) || p(y|x'))) (Gurumurthy et al. 2017, DeLiGAN, sec. 5).

    Large when clips are confidently classified AND differ from each other. groups=None takes the
    expectation over all ordered pairs of clips (self-pairs included): the definition DiffWave
    (Table 2) and SaShiMi (its sc09 classifier code, a Monte-Carlo estimate over random pairs)
    report, computed here exactly in O(N K):
        E_{i,j} KL(p_i || p_j) = mean_i sum_y p_i log p_i - sum_y mean_i p_i(y) * mean_j log p_j(y).
    groups (an int per clip, e.g. the requested class) restricts pairs to the same group, the
    within-class diversity reading of DeLiGAN; groups are weighted by their share of the clips.
    """
    p = _probs(probs)

    def mean_pair_kl(q: np.ndarray) -> float:
        log_q = _log(q)
        return float((q * log_q).sum(axis=1).mean() - q.mean(axis=0) @ log_q.mean(axis=0))

    if groups is None:
        return float(np.exp(mean_pair_kl(p)))
    groups = np.asarray(groups).reshape(-1)
    if groups.shape[0] != p.shape[0]:
        raise ValueError(f"groups has {groups.shape[0]} entries for {p.shape[0]} clips")
    total = sum(mean_pair_kl(p[groups == g]) * np.sum(groups == g) for g in np.unique(groups))
    return float(np.exp(total / p.shape[0]))


def am_score(probs, reference_probs) -> float:
    """AM score = KL(p*(y) || p(y)) + E_x H(p(y|x)) (Zhou et al. 2018, AM-GAN, sec. 5.2), lower is better.

    p*(y): the class distribution of the training data, here the mean classifier output on the train
    split (reference_probs [M, K], as SaShiMi's SC09 code does) or a given distribution [K];
    p(y) = E_x p(y|x) over the clips. The first term penalises a wrong class balance, the second
    clips the classifier is unsure about.
    """
    p = _probs(probs)
    ref = np.asarray(reference_probs, dtype=np.float64)
    p_star = _probs(ref, "reference_probs").mean(axis=0) if ref.ndim == 2 else ref / ref.sum()
    if p_star.shape[0] != p.shape[1]:
        raise ValueError(f"reference has {p_star.shape[0]} classes, probs {p.shape[1]}")
    p_y = p.mean(axis=0)
    kl = float((p_star * (_log(p_star) - _log(p_y))).sum())
    entropy = float(-(p * _log(p)).sum(axis=1).mean())
    return kl + entropy


class NDBBins:
    """The bins of NDB (Richardson & Weiss 2018, sec. 3): K-means (K=50) on reference features.

    Fit once on the train split's features, then `score(features)` for each set of clips.
    """

    def __init__(self, reference_features, k: int = NDB_BINS, seed: int = 0) -> None:
        from sklearn.cluster import KMeans

        ref = _as_2d(reference_features, "reference_features")
        self.k = int(min(k, ref.shape[0]))
        if self.k < 2:
            raise ValueError(f"NDB needs at least 2 reference clips, got {ref.shape[0]}")
        self.kmeans = KMeans(n_clusters=self.k, n_init=3, random_state=seed).fit(ref)
        self.ref_counts = np.bincount(self.kmeans.labels_, minlength=self.k)
        self.n_ref = ref.shape[0]

    def different_bins(self, features, alpha: float = NDB_ALPHA) -> np.ndarray:
        """Boolean [K]: bins whose share of `features` differs from the reference's (two-proportion
        z-test, pooled standard error, two-sided, level alpha)."""
        from scipy.stats import norm

        f = _as_2d(features, "features")
        counts = np.bincount(self.kmeans.predict(f), minlength=self.k)
        n = f.shape[0]
        p_ref, p_gen = self.ref_counts / self.n_ref, counts / n
        pooled = (self.ref_counts + counts) / (self.n_ref + n)
        se = np.sqrt(pooled * (1 - pooled) * (1 / self.n_ref + 1 / n))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(se > 0, (p_ref - p_gen) / se, 0.0)
        return 2 * norm.sf(np.abs(z)) < alpha

    def score(self, features, alpha: float = NDB_ALPHA) -> float:
        """NDB/K: the share of bins that differ significantly (0 = same distribution)."""
        return float(self.different_bins(features, alpha).sum() / self.k)


def ndb_score(reference_features, features, k: int = NDB_BINS, alpha: float = NDB_ALPHA, seed: int = 0) -> float:
    """NDB/K (Richardson & Weiss 2018): bin the reference with K-means (K=50), count the bins where
    the clips' share differs by a two-proportion z-test at level alpha, divide by K. About alpha for
    a sample of the reference distribution, near 1 for a disjoint one."""
    return NDBBins(reference_features, k, seed).score(features, alpha)


def kid(features_a, features_b, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (Binkowski et al. 2018, sec. 3): the unbiased estimate of MMD^2 with
    the polynomial kernel k(x, y) = (x.y / D + 1)^3, averaged over `num_subsets` random subsets of
    `subset_size` (capped at the smaller set) from each side. Returns (mean, standard deviation).
    About 0 (it can be slightly negative) for two samples of one distribution.
    """
    a, b = _as_2d(features_a, "features_a"), _as_2d(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 clips on each side")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        k_xx = (x @ x.T / d + 1) ** 3
        k_yy = (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        mmd = ((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
               - 2 * k_xy.mean())
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def mel_statistics(mels) -> np.ndarray:
    """Weight-free clip features [N, 3 * n_mels]: per mel bin, the mean and standard deviation over
    time and the standard deviation of the first difference over time (a delta feature), from
    normalised log-mels (a list of [n_mels, F] or a tensor [N, n_mels, F]). Used by FD-mel, KID-mel."""
    rows = []
    for mel in mels:
        m = torch.as_tensor(mel).double()  # [n_mels, F]
        delta = m[:, 1:] - m[:, :-1] if m.shape[1] > 1 else torch.zeros_like(m)
        rows.append(torch.cat([m.mean(dim=1), m.std(dim=1, unbiased=False), delta.std(dim=1, unbiased=False)]))
    if not rows:
        raise ValueError("mel_statistics: no clips")
    return torch.stack(rows).numpy()


def accuracy(probs, labels) -> float | None:
    """Share of clips whose most likely class is their label; labels < 0 (unknown) are left out."""
    labels = np.asarray(labels).reshape(-1)
    known = labels >= 0
    if not known.any():
        return None
    return float((np.asarray(probs)[known].argmax(axis=1) == labels[known]).mean())


# --------------------------------------------------------------------------- classifier

def silence_value(config: AudioConfig) -> float:
    """The normalised log-mel value of silence (what padding uses)."""
    return -1.0 if config.normalization == "minmax" else math.log(config.log_floor)


def fit_frames(mel: torch.Tensor, frames: int, silence: float) -> torch.Tensor:
    """[n_mels, F] -> [n_mels, frames]: centre crop when longer, silence-pad at the end when shorter
    (like audiodiff.data's segments)."""
    n = mel.shape[-1]
    if n == frames:
        return mel
    if n > frames:
        start = (n - frames) // 2
        return mel[..., start:start + frames]
    out = torch.full((*mel.shape[:-1], frames), float(silence), dtype=mel.dtype)
    out[..., :n] = mel
    return out


def load_classifier(path: str | os.PathLike, device="cpu"):
    """(MelClassifier in eval mode, its checkpoint dict) from a classifier.pt of train_classifier.

    The dict holds "kwargs", "audio_config" (an AudioConfig here), "segment_frames", "accuracy",
    "train_label_counts" and the folders it was trained on. Loaded with weights_only=True.
    Raises EvaluateError with one line when the file is missing or is not a classifier.
    """
    from .checkpoint import CheckpointError, safe_load
    from .nets.classifier import CLASSIFIER_FORMAT, MelClassifier

    path = Path(path)
    if path.is_dir():
        path = path / "classifier.pt"
    if not path.is_file():
        raise EvaluateError(f"classifier {path} not found; train one with "
                            "python -m audiodiff.train task=classifier (it writes RUN_DIR/classifier.pt)")
    try:
        blob = safe_load(path)
    except CheckpointError as e:
        raise EvaluateError(str(e)) from None
    if not isinstance(blob, dict) or blob.get("format") != CLASSIFIER_FORMAT:
        raise EvaluateError(f"{path} is not an audiodiff classifier (no format {CLASSIFIER_FORMAT!r}); "
                            "train one with python -m audiodiff.train task=classifier")
    try:
        net = MelClassifier(**blob["kwargs"])
        net.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise EvaluateError(f"{path}: classifier weights do not load ({str(e).splitlines()[0]})") from None
    info = dict(blob)
    info["audio_config"] = AudioConfig.from_dict(blob["audio_config"])
    info["path"] = str(path)
    return net.to(device).eval(), info


@torch.no_grad()
def classify(net, mels, frames: int, silence: float, batch_size: int = 128,
             device=None) -> tuple[np.ndarray, np.ndarray]:
    """(probs [N, K] float64, features [N, D] float64) of a classifier on normalised log-mels
    (a list of [n_mels, F] or [N, n_mels, F]), each fitted to `frames` (fit_frames)."""
    device = device or next(net.parameters()).device
    net.eval()
    probs, feats = [], []
    mels = list(mels)
    for start in range(0, len(mels), batch_size):
        x = torch.stack([fit_frames(torch.as_tensor(m).float(), frames, silence)
                         for m in mels[start:start + batch_size]]).to(device)  # [b, n_mels, frames]
        f = net.features(x)  # [b, D]
        logits = net.head(f).double()  # the head without dropout: eval mode anyway
        probs.append(torch.softmax(logits, dim=1).cpu())
        feats.append(f.double().cpu())
    if not probs:
        return np.zeros((0, net.num_classes)), np.zeros((0, net.embed_dim))
    return torch.cat(probs).numpy(), torch.cat(feats).numpy()


# --------------------------------------------------------------------------- inputs

@dataclass
class ClipSet:
    """Clips to score: normalised log-mels [n_mels, F] in one audio config, with labels (-1 unknown)."""

    name: str
    mels: list
    labels: np.ndarray
    audio_config: AudioConfig
    note: str = ""
    extra: dict = field(default_factory=dict)


def read_prepared_split(prepared_dir: str | os.PathLike, name: str, audio_config: AudioConfig | None = None) -> ClipSet:
    """The cached mels and labels of a folder written by audiodiff.prepare. When `audio_config` is
    given, the folder's must equal it (else EvaluateError naming both values)."""
    from .data import read_prepared

    d = Path(prepared_dir)
    try:
        entries, cache = read_prepared(d)
    except (FileNotFoundError, ValueError) as e:
        raise EvaluateError(str(e).splitlines()[0]) from None
    if not entries:
        raise EvaluateError(f"{d}/manifest.jsonl lists no clips; see {d}/skipped.tsv")
    config = AudioConfig.from_dict(cache["audio_config"])
    if audio_config is not None:
        diff = audio_config.describe_mismatch(config, ours="classifier", theirs=f"{d}")
        if diff:
            raise EvaluateError(f"{d} was prepared with another mel than the classifier's ({diff}); prepare it "
                                "with the classifier's audio config (python -m audiodiff.prepare --audio-config)")
    mels, labels = [], []
    for e in entries:
        try:
            arr = np.load(d / e["feats"])
        except (OSError, ValueError) as err:
            raise EvaluateError(f"{d / e['feats']}: cannot read cached features ({err}); re-run "
                                "python -m audiodiff.prepare") from None
        mels.append(torch.from_numpy(arr.astype(np.float32)).T.contiguous())  # [n_mels, F]
        label = e.get("label", -1)
        labels.append(int(label) if isinstance(label, int) else -1)
    return ClipSet(name, mels, np.array(labels, dtype=np.int64), config)


def waves_to_mels(waves, sample_rate: int, config: AudioConfig, mel_spec: MelSpec | None = None) -> list:
    """Waveforms ([T] tensors, or [B, T]) at sample_rate -> normalised log-mels [n_mels, F] in `config`.
    Clips too short for one STFT frame are zero-padded to n_fft samples."""
    mel_spec = mel_spec or MelSpec(config)
    out = []
    for w in waves:
        w = torch.as_tensor(w).float().reshape(-1)
        if sample_rate != config.sample_rate:
            w = resample(w, sample_rate, config.sample_rate)
        if w.shape[-1] <= config.n_fft // 2:
            w = torch.nn.functional.pad(w, (0, config.n_fft - w.shape[-1]))
        out.append(mel_spec(w.unsqueeze(0).to(mel_spec.mel_basis.device))[0].cpu())  # [n_mels, F]
    return out


def scan_clips(folder: str | os.PathLike) -> list[dict]:
    """Audio files under `folder`, recursively: [{"path", "label"}] (label -1 when unknown; labels are
    read from clips.jsonl when audiodiff.generate wrote the folder). EvaluateError when none."""
    from .prepare import scan_folder

    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluateError(f"--clips {folder} is not a folder")
    entries, _, _ = scan_folder(folder)
    if not entries:
        raise EvaluateError(f"--clips {folder} holds no audio files (looked recursively for .wav, .flac, .ogg, ...)")
    labels = {}
    index = folder / "clips.jsonl"
    if index.is_file():
        for line in index.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("label"), int) and "file" in record:
                labels[os.path.normpath(folder / record["file"])] = record["label"]
    return [{"path": e["path"], "label": labels.get(os.path.normpath(e["path"]), -1)} for e in entries]


def load_clips(folder: str | os.PathLike, config: AudioConfig, limit: int | None = None,
               keep_waves: bool = False, seed: int = 0) -> ClipSet:
    """Decode every audio file under `folder` (resampled to config.sample_rate) into a ClipSet;
    with `limit`, a random subset of that many (seeded; sorted paths would be sorted by class).
    Undecodable files are skipped and counted in .note; EvaluateError when none decodes."""
    files = scan_clips(folder)
    if limit is not None and limit < len(files):
        keep = np.sort(np.random.default_rng(seed).choice(len(files), limit, replace=False))
        files = [files[i] for i in keep]
    mel_spec = MelSpec(config)
    mels, labels, waves, bad = [], [], [], []
    for f in files:
        try:
            wave = load_audio(f["path"], config.sample_rate)
        except AudioFileError as e:
            bad.append(str(e))
            continue
        if not torch.isfinite(wave).all():
            bad.append(f"{f['path']}: non-finite samples")
            continue
        mels.extend(waves_to_mels([wave], config.sample_rate, config, mel_spec))
        labels.append(f["label"])
        if keep_waves:
            waves.append(wave)
    if not mels:
        first = bad[0] if bad else "no files"
        raise EvaluateError(f"--clips {folder}: none of {len(files)} audio file(s) could be decoded ({first})")
    note = f"{len(bad)} undecodable file(s) skipped, e.g. {bad[0]}" if bad else ""
    clips = ClipSet("clips", mels, np.array(labels, dtype=np.int64), config, note)
    if keep_waves:
        clips.extra["waves"] = waves
    return clips


def generate_clips(model: str | os.PathLike, num: int, config: AudioConfig, *, steps: int = 25,
                   sampler: str = "dpmpp", vocoder: str = "griffinlim", guidance: float = 1.0,
                   batch_size: int = 64, device=None, seed: int = 0, guidance_interval=None) -> ClipSet:
    """Sample `num` clips from a run or model directory (AudioDiffusionPipeline); clip i uses seed + i.
    A class-conditional model gets balanced labels (i % num_classes), kept as the clips' labels."""
    from .pipeline import AudioDiffusionPipeline, ModelLoadError

    try:
        pipe = AudioDiffusionPipeline.from_pretrained(model, device=device, vocoder=vocoder)
    except (ModelLoadError, FileNotFoundError, ValueError, ImportError) as e:
        raise EvaluateError(str(e).splitlines()[0] if str(e) else f"cannot load model {model}") from None
    labels = [i % pipe.num_classes for i in range(num)] if pipe.num_classes > 0 else None
    try:  # a bad --steps, --sampler or --guidance: one line now, not a traceback after loading
        guidance_interval = pipe.check_request(
            batch_size=min(batch_size, num), steps=steps, sampler=sampler, seed=seed,
            labels=None if labels is None else labels[:min(batch_size, num)],
            guidance_scale=guidance, seconds=None, eta=0.0, guidance_interval=guidance_interval)["guidance_interval"]
    except ValueError as e:
        message = str(e).splitlines()[0].replace("guidance_interval=", "--guidance-interval ")
        raise EvaluateError(f"{model}: {message}") from None
    mel_spec = MelSpec(config)
    mels, started = [], time.time()
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        out = pipe(batch_size=n, steps=steps, sampler=sampler, seed=seed + start,
                   labels=None if labels is None else labels[start:start + n], guidance_scale=guidance,
                   guidance_interval=guidance_interval, progress=False)
        mels.extend(waves_to_mels(out.audio, out.sample_rate, config, mel_spec))
        print(f"evaluate: generated {start + n}/{num} clips ({time.time() - started:.0f} s)", file=sys.stderr)
    within = "" if guidance_interval is None else f" for sigma in ({guidance_interval[0]:g}, {guidance_interval[1]:g}]"
    note = (f"{model}: {steps} {sampler} steps, vocoder {vocoder}, guidance {guidance:g}{within}, seed {seed}")
    return ClipSet("generated", mels, np.array(labels if labels is not None else [-1] * num, dtype=np.int64),
                   config, note)


# --------------------------------------------------------------------------- scoring

def score_sets(sets: list[ClipSet], classifier=None, classifier_info: dict | None = None,
               reference: ClipSet | None = None, device=None, kid_subsets: int = 100, seed: int = 0) -> dict:
    """Score each ClipSet: {name: {metric: value}}. With a classifier: accuracy, IS, mIS, and with a
    reference (the train split) FID, AM and NDB/K too. With a reference: FD-mel and KID-mel."""
    rows = {s.name: {"num": len(s.mels)} for s in sets}
    if classifier is not None:
        frames = int(classifier_info["segment_frames"])
        silence = silence_value(classifier_info["audio_config"])
        ref_probs = ref_feats = bins = None
        if reference is not None:
            ref_probs, ref_feats = classify(classifier, reference.mels, frames, silence, device=device)
            bins = NDBBins(ref_feats, NDB_BINS, seed)
        for s in sets:
            if s is reference:
                probs, feats = ref_probs, ref_feats
            else:
                probs, feats = classify(classifier, s.mels, frames, silence, device=device)
            row = rows[s.name]
            row["accuracy"] = accuracy(probs, s.labels)
            row["IS"] = inception_score(probs)
            row["mIS"] = modified_inception_score(probs)
            if (s.labels >= 0).all():  # DeLiGAN's within-class reading, pairs of one (requested) class (JSON only)
                row["mIS_within_class"] = modified_inception_score(probs, groups=s.labels)
            if reference is not None:
                row["FID"] = frechet_distance(ref_feats, feats) if len(s.mels) > 1 else None
                row["AM"] = am_score(probs, ref_probs)
                row["NDB/K"] = bins.score(feats)
    if reference is not None:
        ref_stats = mel_statistics(reference.mels)
        for s in sets:
            stats = ref_stats if s is reference else mel_statistics(s.mels)
            row = rows[s.name]
            row["FD-mel"] = frechet_distance(ref_stats, stats) if len(s.mels) > 1 else None
            row["KID-mel"] = kid(ref_stats, stats, num_subsets=kid_subsets, seed=seed)[0] if len(s.mels) > 1 else None
    return rows


def vocoder_metrics(waves: list, sample_rate: int, vocoder, device=None) -> dict:
    """Mean over clips of MR-STFT distance, log-spectral distance (dB) and mel L1 between each clip
    and its copy through mel -> `vocoder` -> waveform (the vocoder's own audio config)."""
    from .vocoders import log_spectral_distance, mel_l1_distance, multi_resolution_stft_distance

    config = vocoder.audio_config
    mel_spec = MelSpec(config).to(device or "cpu")
    totals = {"MR-STFT": 0.0, "LSD": 0.0, "mel-L1": 0.0}
    with torch.no_grad():
        for w in waves:
            w = torch.as_tensor(w).float().reshape(-1)
            if sample_rate != config.sample_rate:
                w = resample(w, sample_rate, config.sample_rate)
            w = w.to(mel_spec.mel_basis.device)
            if w.shape[-1] <= config.n_fft // 2:
                w = torch.nn.functional.pad(w, (0, config.n_fft - w.shape[-1]))
            est = vocoder(mel_spec(w.unsqueeze(0)))[0]  # [F * hop]
            totals["MR-STFT"] += float(multi_resolution_stft_distance(est, w))
            totals["LSD"] += float(log_spectral_distance(est, w))
            totals["mel-L1"] += float(mel_l1_distance(est, w, config))
    return {"num": len(waves), **{k: v / max(1, len(waves)) for k, v in totals.items()}}


# --------------------------------------------------------------------------- CLI

COLUMNS = ("num", "accuracy", "FID", "IS", "mIS", "AM", "NDB/K", "FD-mel", "KID-mel", "MR-STFT", "LSD", "mel-L1")
LOWER_IS_BETTER = {"FID": True, "IS": False, "mIS": False, "AM": True, "NDB/K": True, "FD-mel": True,
                   "KID-mel": True, "MR-STFT": True, "LSD": True, "mel-L1": True, "accuracy": False}


def format_table(rows: dict, first: str = "set") -> str:
    """A fixed-width text table of {row name: {metric: value}}; absent metrics are '-'."""
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows.values())]
    head = [first] + [c + ("" if c == "num" else " " + ("↓" if LOWER_IS_BETTER[c] else "↑")) for c in cols]

    def cell(c, v):
        if v is None:
            return "-"
        if c == "num":
            return str(v)
        if c == "accuracy":
            return f"{100 * v:.1f}%"
        if c == "KID-mel":
            return f"{v:.4f}"
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.1f}"

    body = [[name] + [cell(c, r.get(c)) for c in cols] for name, r in rows.items()]
    widths = [max(len(line[i]) for line in [head] + body) for i in range(len(head))]
    fmt = lambda line: "  ".join(s.ljust(w) if i == 0 else s.rjust(w) for i, (s, w) in enumerate(zip(line, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(line) for line in body])


def _write_json_atomic(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
    os.replace(tmp, path)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        raise EvaluateError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m audiodiff.evaluate", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", type=Path, help="run or model directory to generate from")
    src.add_argument("--clips", type=Path, help="folder of audio clips (searched recursively)")
    p.add_argument("--num", type=int, default=None,
                   help=f"clips to generate (default {DEFAULT_NUM}); with --clips, use at most this many")
    p.add_argument("--classifier", type=Path, help="classifier.pt from train_classifier (FID, IS, mIS, AM, NDB/K)")
    p.add_argument("--reference", type=Path,
                   help="prepared train split (audiodiff.prepare): FID/AM/NDB/K reference and the train row; "
                        "default: the classifier's train folder, when it exists")
    p.add_argument("--test", type=Path, help="prepared test split: scored as a reference row; "
                                             "default: the classifier's test folder, when it exists")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--sampler", default="dpmpp", help="ddpm | ddim | dpmpp (default dpmpp)")
    p.add_argument("--vocoder", default="griffinlim",
                   help="vocoder for --model (default griffinlim); for --vocoder-metrics a comma-separated list")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                   help="guide only at noise levels sigma in (LO, HI], e.g. 2,inf (default: every step)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto (GPU when present) | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=0, help="clip i uses seed + i; also K-means and KID subsets")
    p.add_argument("--vocoder-metrics", action="store_true",
                   help="score vocoders on --clips: clip -> mel -> vocoder -> waveform vs the clip")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EvaluateError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvaluateError(f"--device {name} but no CUDA GPU is available; use --device cpu")
    return device


def _check_args(args) -> None:
    if args.model is None and args.clips is None:
        raise EvaluateError("give --model RUN_DIR (generate, then score) or --clips DIR (score a folder)")
    if args.num is not None and args.num < 1:
        raise EvaluateError(f"--num {args.num} must be >= 1")
    if args.batch_size < 1:
        raise EvaluateError(f"--batch-size {args.batch_size} must be >= 1")
    if args.vocoder_metrics and args.clips is None:
        raise EvaluateError("--vocoder-metrics scores vocoders on real clips: give --clips DIR")
    for name in ("reference", "test"):
        value = getattr(args, name)
        if value is not None and not (value / "manifest.jsonl").is_file():
            raise EvaluateError(f"--{name} {value} is not a prepared folder (no manifest.jsonl); "
                                f"run python -m audiodiff.prepare AUDIO_OR_MANIFEST --out {value}")
    if args.json is not None and args.json.is_dir():
        raise EvaluateError(f"--json {args.json} is a folder; give a file name")


def run(args) -> dict:
    """Everything main does except printing and writing: returns the result dict."""
    _check_args(args)
    device = _device(args.device)

    if args.vocoder_metrics:
        from .vocoders import get_vocoder

        config = AudioConfig()
        if args.reference is not None:
            config = read_prepared_split(args.reference, "train").audio_config
        clips = load_clips(args.clips, config, limit=args.num, keep_waves=True, seed=args.seed)
        rows = {}
        for name in [v.strip() for v in args.vocoder.split(",") if v.strip()]:
            try:
                vocoder = get_vocoder(name, config).to(device).eval()
            except (ValueError, ImportError, FileNotFoundError) as e:
                raise EvaluateError(f"--vocoder {name}: {str(e).splitlines()[0]}") from None
            rows[name] = vocoder_metrics(clips.extra["waves"], config.sample_rate, vocoder, device)
        return {"kind": "vocoder", "clips": str(args.clips), "audio_config": config.to_dict(), "rows": rows,
                "notes": [clips.note] if clips.note else []}

    classifier = info = None
    notes = []
    if args.classifier is not None:
        classifier, info = load_classifier(args.classifier, device)
    reference_dir, test_dir = args.reference, args.test
    if info is not None:  # default to the splits the classifier was trained and tested on
        for attr, key in (("reference", "train_dir"), ("test", "test_dir")):
            stored = info.get(key)
            if getattr(args, attr) is None and stored and (Path(stored) / "manifest.jsonl").is_file():
                if attr == "reference":
                    reference_dir = Path(stored)
                else:
                    test_dir = Path(stored)
    if classifier is None and reference_dir is None:
        raise EvaluateError("nothing to score against: give --classifier PATH (IS, mIS; FID, AM, NDB/K with "
                            "--reference) or --reference PREPARED_TRAIN_DIR (FD-mel, KID-mel)")
    config = info["audio_config"] if info is not None else None
    reference = read_prepared_split(reference_dir, "train", config) if reference_dir is not None else None
    config = config or reference.audio_config
    test = read_prepared_split(test_dir, "test", config) if test_dir is not None else None
    if args.clips is not None:
        clips = load_clips(args.clips, config, limit=args.num, seed=args.seed)
    else:
        clips = generate_clips(args.model, args.num or DEFAULT_NUM, config, steps=args.steps, sampler=args.sampler,
                               vocoder=args.vocoder, guidance=args.guidance, batch_size=args.batch_size,
                               device=device, seed=args.seed, guidance_interval=args.guidance_interval)
    if clips.note:
        notes.append(clips.note)
    if classifier is not None and reference is None:
        notes.append("FID, AM and NDB/K need the train split: pass --reference PREPARED_TRAIN_DIR")
    sets = [clips] + [s for s in (reference, test) if s is not None]
    rows = score_sets(sets, classifier, info, reference, device=device, seed=args.seed)
    return {
        "kind": "samples",
        "source": str(args.model if args.model is not None else args.clips),
        "classifier": info["path"] if info is not None else None,
        "reference": str(reference_dir) if reference_dir is not None else None,
        "test": str(test_dir) if test_dir is not None else None,
        "features": {"FID/NDB/K": "classifier penultimate embedding" if info is not None else None,
                     "FD-mel/KID-mel": "per-clip mean and std over time of each normalised log-mel bin "
                                       "+ std of its frame difference (weight-free)"},
        "generation": clips.note if args.model is not None else None,
        "audio_config": config.to_dict(),
        "rows": rows,
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        result = run(args)
    except EvaluateError as e:
        print(f"python -m audiodiff.evaluate: error: {e}", file=sys.stderr)
        return 2
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(format_table(result["rows"], "vocoder" if result["kind"] == "vocoder" else "set"))
    if args.json is not None:
        _write_json_atomic(args.json, result)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
