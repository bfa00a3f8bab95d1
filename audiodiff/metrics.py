"""Sample-quality and vocoder metrics, and the evaluation classifier's scoring.

Distribution metrics on feature sets [N, D] or classifier probabilities [N, K] (float64 NumPy):
FID / FD (Heusel et al. 2017), IS (Salimans et al. 2016), modified IS (Gurumurthy et al. 2017),
AM score (Zhou et al. 2018), NDB/K (Richardson & Weiss 2018), KID (Binkowski et al. 2018);
weight-free mel statistics for FD-mel and KID-mel; the digit classifier (load_classifier,
classify). Waveform metrics for vocoders: multi-resolution STFT distance, log-spectral distance
and mel L1. Used by `python -m audiodiff.evaluate`, the classifier's training and benchmarks.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .audio import AudioConfig, MelSpec
from .checkpoint import CheckpointError, safe_load
from .cli import UsageError
from .nets.classifier import CLASSIFIER_FORMAT, MelClassifier

NDB_BINS = 50
NDB_ALPHA = 0.05


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
    """The bins of NDB (Richardson & Weiss 2018, sec. 3): K-means (K=50) on reference features,
    fitted once on the train split's, then `score(features)` for each set of clips."""

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

def fit_frames(mel: torch.Tensor, frames: int, silence: float) -> torch.Tensor:
    """[n_mels, F] -> [n_mels, frames]: centre crop when longer, silence-pad at the end when shorter."""
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
    """(MelClassifier in eval mode, its checkpoint dict: kwargs, audio_config (an AudioConfig here),
    segment_frames, accuracy, train_label_counts, the folders it was trained on) from train_classifier's
    classifier.pt, loaded with weights_only=True; a one-line UsageError when it is missing or no classifier."""
    path = Path(path)
    if path.is_dir():
        path = path / "classifier.pt"
    if not path.is_file():
        raise UsageError(f"classifier {path} not found; train one with "
                         "python -m audiodiff.train task=classifier (it writes RUN_DIR/classifier.pt)")
    try:
        blob = safe_load(path)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    if not isinstance(blob, dict) or blob.get("format") != CLASSIFIER_FORMAT:
        raise UsageError(f"{path} is not an audiodiff classifier (no format {CLASSIFIER_FORMAT!r}); "
                         "train one with python -m audiodiff.train task=classifier")
    try:
        net = MelClassifier(**blob["kwargs"])
        net.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise UsageError(f"{path}: classifier weights do not load ({str(e).splitlines()[0]})") from None
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


# --------------------------------------------------------------------------- waveform metrics (vocoders)

# (n_fft, hop_length, win_length) of Parallel WaveGAN's multi-resolution STFT loss (Yamamoto et al. 2020, Table 1)
MR_STFT_RESOLUTIONS = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))


def _pair(estimate: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Batch both [T] or [B, T] waveforms, float32, on one device, cropped to the shorter."""
    squeeze = estimate.dim() == 1 and reference.dim() == 1
    estimate = estimate.reshape(-1, estimate.shape[-1]).float()
    reference = reference.reshape(-1, reference.shape[-1]).float().to(estimate.device)
    if estimate.shape[0] != reference.shape[0]:
        raise ValueError(f"batch sizes differ: estimate {tuple(estimate.shape)} vs reference {tuple(reference.shape)}")
    n = min(estimate.shape[-1], reference.shape[-1])
    return estimate[..., :n], reference[..., :n], squeeze


def _stft_magnitude(wave: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    window = torch.hann_window(win, device=wave.device)
    spec = torch.stft(wave, n_fft, hop, win, window, center=True, pad_mode="reflect", return_complex=True)
    return spec.abs()  # [B, n_freq, frames]


def multi_resolution_stft_distance(estimate: torch.Tensor, reference: torch.Tensor,
                                   resolutions=MR_STFT_RESOLUTIONS, return_components: bool = False):
    """Multi-resolution STFT distance (Yamamoto et al. 2020, eq. 5-7), lower is better.

    Per resolution: spectral convergence ||S_ref - S_est||_F / ||S_ref||_F plus the mean
    absolute difference of log magnitudes; averaged over the resolutions. Waveforms [T] or
    [B, T] (cropped to the shorter); returns a scalar or [B]. With return_components,
    a dict with "spectral_convergence", "log_magnitude" and "total".
    """
    estimate, reference, squeeze = _pair(estimate, reference)
    sc = torch.zeros(estimate.shape[0], device=estimate.device)
    lm = torch.zeros_like(sc)
    for n_fft, hop, win in resolutions:
        s_est = _stft_magnitude(estimate, n_fft, hop, win)
        s_ref = _stft_magnitude(reference, n_fft, hop, win)
        reference_norm = torch.linalg.norm(s_ref.flatten(1), dim=1).clamp_min(1e-7)
        sc += torch.linalg.norm((s_ref - s_est).flatten(1), dim=1) / reference_norm
        lm += (torch.log(s_ref.clamp_min(1e-7)) - torch.log(s_est.clamp_min(1e-7))).abs().mean(dim=(1, 2))
    sc, lm = sc / len(resolutions), lm / len(resolutions)
    out = {"spectral_convergence": sc, "log_magnitude": lm, "total": sc + lm}
    if squeeze:
        out = {k: v[0] for k, v in out.items()}
    return out if return_components else out["total"]


def log_spectral_distance(estimate: torch.Tensor, reference: torch.Tensor, n_fft: int = 2048,
                          hop_length: int = 512) -> torch.Tensor:
    """Log-spectral distance in dB: mean over frames of the RMS over frequency of
    10 log10(|S_ref|^2 / |S_est|^2) (e.g. Gray & Markel 1976). Scalar or [B]."""
    estimate, reference, squeeze = _pair(estimate, reference)
    p_est = _stft_magnitude(estimate, n_fft, hop_length, n_fft).pow(2).clamp_min(1e-10)
    p_ref = _stft_magnitude(reference, n_fft, hop_length, n_fft).pow(2).clamp_min(1e-10)
    lsd = (10 * torch.log10(p_ref / p_est)).pow(2).mean(dim=1).sqrt().mean(dim=1)  # [B]
    return lsd[0] if squeeze else lsd


def mel_l1_distance(estimate: torch.Tensor, reference: torch.Tensor,
                    audio_config: AudioConfig | None = None) -> torch.Tensor:
    """Mean absolute difference of natural-log mels (audiodiff's MelSpec). Scalar or [B]."""
    estimate, reference, squeeze = _pair(estimate, reference)
    mel_spec = MelSpec(audio_config or AudioConfig()).to(estimate.device)
    d = (mel_spec.log_mel(estimate) - mel_spec.log_mel(reference)).abs().mean(dim=(1, 2))
    return d[0] if squeeze else d


# --------------------------------------------------------------------------- scoring clip sets

class ClassifierScorer:
    """Classifier metrics of clip sets against one reference (train) split, whose probabilities,
    features and NDB bins are computed once: score(mels, labels) -> {num, accuracy, IS, mIS,
    mIS_within_class (all labels known), and with a reference FID, AM, NDB/K}."""

    def __init__(self, classifier, info: dict, reference_mels=None, device=None, seed: int = 0) -> None:
        self.classifier, self.device = classifier, device
        self.frames = int(info["segment_frames"])
        self.silence = info["audio_config"].silence
        self.reference_mels = reference_mels
        self.ref_probs = self.ref_feats = self.bins = None
        if reference_mels is not None:
            self.ref_probs, self.ref_feats = classify(classifier, reference_mels, self.frames, self.silence,
                                                      device=device)
            self.bins = NDBBins(self.ref_feats, NDB_BINS, seed)

    def score(self, mels, labels) -> dict:
        labels = np.asarray(labels, dtype=np.int64)
        if self.reference_mels is not None and mels is self.reference_mels:
            probs, feats = self.ref_probs, self.ref_feats
        else:
            probs, feats = classify(self.classifier, mels, self.frames, self.silence, device=self.device)
        row = {"num": len(mels), "accuracy": accuracy(probs, labels), "IS": inception_score(probs),
               "mIS": modified_inception_score(probs)}
        if (labels >= 0).all():  # DeLiGAN's within-class reading, pairs of one (requested) class
            row["mIS_within_class"] = modified_inception_score(probs, groups=labels)
        if self.bins is not None:
            row["FID"] = frechet_distance(self.ref_feats, feats) if len(mels) > 1 else None
            row["AM"] = am_score(probs, self.ref_probs)
            row["NDB/K"] = self.bins.score(feats)
        return row
