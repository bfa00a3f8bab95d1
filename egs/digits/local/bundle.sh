#!/usr/bin/env bash
# The bundled model (audiodiff/models/digits) as made on 2026-12-01: run from egs/digits after
#   bash run.sh --cpu --stop-stage 2 name=digits_cpu1k recipe.per_digit=1000 train.max_steps=24000
#   bash run.sh --cpu --stage 5 --stop-stage 5 name=digits_cpu1k recipe.per_digit=1000   # the classifier
#   python -m audiodiff.train +experiment=digits_cpu data.dir=./dump/digits_cpu1k/train \
#     run_dir=exp/digits_cpu1k_ft48k train.max_steps=24000 optim.optimizer.lr=2.5e-4 recipe.per_digit=1000 \
#     train.init_from=exp/digits_cpu1k/checkpoints/step_00024000.pt
# (24,000 more steps from step 24,000 at half the peak learning rate; it was run with train.init_from=digits
# while the bundled model was that step in float16, sha256 d1486c97...), the judge (its command is in the
# card), the staging folder exp/digits_cpu1k_ft48k/fp16 (this script with --out there), and the two tables
# results/digits_cpu1k_ft48k_*2048.json (their commands are in the JSON and the card).
set -euo pipefail
cd "$(dirname "$0")/.."
python local/bundle_model.py --run exp/digits_cpu1k_ft48k --classifier exp/digits_cpu1k/classifier/classifier.pt \
  --table results/digits_cpu1k_ft48k_gl2048.json --table results/digits_cpu1k_ft48k_hifigan2048.json \
  --made-by "bash egs/digits/run.sh --cpu --stop-stage 2 name=digits_cpu1k recipe.per_digit=1000 train.max_steps=24000, then (from egs/digits) python -m audiodiff.train +experiment=digits_cpu data.dir=./dump/digits_cpu1k/train run_dir=exp/digits_cpu1k_ft48k train.max_steps=24000 optim.optimizer.lr=2.5e-4 recipe.per_digit=1000 train.init_from=digits" \
  --wall "48,000 steps of batch 32 in all: 24,000 in 97.6 min, then 24,000 more from those weights (float16, sha256 d1486c97..., the model bundled before; a fresh optimizer and a cosine schedule from half the recipe's peak rate) in 83.3 min, each on one torch thread of a 2-core Intel Xeon CPU, 2026-12-01, sharing the machine with other work" \
  --guidance 2 --eps-scaling 0.85 --vocoder griffinlim \
  --judge "a second classifier trained only on the 65 validation speakers (650 clips; never the model's 518 training speakers), wider (622k parameters), seed 1, mixup 0.2, SpecAugment (python -m audiodiff.train task=classifier +experiment=digits_cpu data.dir=dump/digits_cpu1k/valid run_dir=exp/digits_cpu1k/judge classifier_train.test_dir=dump/digits_cpu1k/test seed=1 classifier_train.mixup=0.2 classifier_train.width=48 classifier_train.steps=2000); 100% on the 650 test clips" \
  --notes "**What issue 15 asks, and where it stands.** With Griffin-Lim, the default, at N = 2,048: FID 3.57 (target 5 or less: met), IS 9.72 = 0.978x the test split's (target 0.95x: met), accuracy 99.7% (met) and the stricter judge 99.8% against its 100% on real clips (met). Loudness: mean peak -3.6 and RMS -22.5 dBFS against -4.0 and -22.2 for the real files (within 1 dB: met), but 6.2% of the clips exceed full scale before any scaling, where no real file does (not met; generate scales those clips down and says so; the real test mels through the same Griffin-Lim give 0.6%). HiFi-GAN (universal weights) on the same mels: FID 4.23, IS 9.60, no clip over full scale, peak -3.3 dBFS, but RMS -23.6 dBFS, 1.4 dB low (the real test mels through it lose 1.2 dB RMS too). Griffin-Lim is the default because it scores better on FID, IS, the judge and the level, needs no 104 MB package and is about 20 times faster on the CPU; \`--vocoder hifigan\` picks the other. What made the difference is epsilon scaling 0.85 (config.yaml \`diffusion.eps_scaling\`): without it this model scores FID 8.98 with Griffin-Lim (N = 512, other seeds) and its clips are 3 dB too loud; egs/digits/README.md has the sweep. Guidance 2 and lambda 0.85 were picked on seeds 100000-100511, which this table does not use. Clip i asks for digit i % 10; the two rows share their mels."
