"""Training recipes as data: one frozen config class, one instance per preset.

Every field but `preset` is a flag of `convattn classify` whose default comes from the
chosen preset, so `--help` shows the study's values. Instances check themselves, so a
config built in code (reproduce, tests) is held to the same rules as the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from convattn.common.config import Config, option, require


@dataclass(frozen=True)
class ClassifyConfig(Config):
    """The study's protocol (Q2): SGD without momentum, 15 epochs, batch 8, seed 42,
    learning rate chosen on dev from {0.001, 0.01, 0.1}, dropout 0.2."""

    preset: str = option("homework", "the preset this recipe came from", key=False)
    lrs: tuple[float, ...] = option((0.001, 0.01, 0.1), "learning rates to sweep; the best on "
                                    "dev is reported", flag="--lr")
    epochs: int = option(15, "training epochs per learning rate")
    batch_size: int = option(8, "training batch size")
    optimizer: str = option("sgd", "optimizer", choices=("sgd", "adamw"))
    momentum: float = option(0.0, "SGD momentum")
    nesterov: bool = option(False, "Nesterov momentum (SGD)")
    weight_decay: float = option(0.0, "weight decay (L2 for SGD, decoupled for AdamW)")
    schedule: str = option("constant", "learning-rate schedule per step: constant, or "
                           "one-cycle (linear warm-up, cosine decay to 0)",
                           choices=("constant", "onecycle"))
    warmup: float = option(0.0, "one-cycle warm-up as a fraction of all steps")
    label_smoothing: float = option(0.0, "label smoothing of the training loss")
    augment: str = option("none", "training augmentation: horizontal flip, and/or shift by up "
                          "to 2 px", choices=("none", "flip", "shift-flip"))
    dropout: float = option(0.2, "dropout after the first linear layer")
    amp: str = option("off", "mixed precision: bf16 runs the forward pass under torch.autocast "
                      "(weights, gradients and loss stay fp32); off: fp32 throughout, the "
                      "study's numbers. For GPUs with bf16; on a CPU without bf16 "
                      "instructions 3x slower (measured, bench/classify_speed.py)",
                      choices=("off", "bf16"))
    cuda_graph: bool = option(True, "on a GPU, replay each training step from a CUDA graph "
                              "when the recipe allows it (a constant lr, --amp off): batch-8 "
                              "steps are kernel-launch bound there, 8x faster on an H100 "
                              "(bench/classify_speed.py); ignored on a CPU (speed only)",
                              speed=True)
    seed: int = option(42, "seed of initialisation, shuffling and dropout (the dev split is "
                       "fixed)")
    train_limit: int = option(0, "train on the first N training images only (0: all)")
    eval_limit: int = option(0, "score the first N dev and N test images only (0: all)")
    eval_batch_size: int = option(1000, "evaluation batch size (speed only)", speed=True)
    # At batch 8 every op is tiny, and with 2 threads each op ends in an OpenMP barrier:
    # faster when the machine is idle, up to 100x slower when another process holds a core.
    threads: int = option(1, "CPU threads per run, 0: one per core (1 avoids OpenMP stalls "
                          "at batch 8 on a busy machine; speed only)", speed=True)
    sweep: str = option("processes", "how the learning rates are trained: stacked (one model "
                        "stack in one process, one forward/backward per step for all; SGD "
                        "without momentum at a constant lr in fp32, else processes) or "
                        "processes (one per lr, see --jobs); speed only: the same numbers up to "
                        "float rounding",
                        choices=("stacked", "processes"), speed=True)
    jobs: int = option(0, "processes: learning rates trained at once, one process each, 0: all, up "
                       "to two per CPU core; stacked: stacks trained at once, the lrs split among "
                       "them, 0: one per CPU core (speed only: each run gives the numbers it gives "
                       "alone, up to float rounding for stacks)",
                       speed=True)

    def check(self) -> None:
        require(all(lr > 0 for lr in self.lrs), self, "lrs", "learning rates must be > 0")
        require(len(set(self.lrs)) == len(self.lrs), self, "lrs",
                "learning rates must be distinct")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            require(getattr(self, name) >= 1, self, name, "must be >= 1")
        for name in ("threads", "jobs", "momentum", "weight_decay", "train_limit",
                     "eval_limit"):
            require(getattr(self, name) >= 0, self, name, "must be >= 0")
        for name in ("dropout", "label_smoothing", "warmup"):
            require(0 <= getattr(self, name) < 1, self, name, "must be in [0, 1)")
        require(not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0), self,
                "nesterov", "needs --optimizer sgd and --momentum > 0")


HOMEWORK = ClassifyConfig()

# Chosen on the dev set only, among 9 candidates (docs/results.md, "Fast preset"): same network and
# parameter count; batch 128 for throughput; SGD with Nesterov momentum under a one-cycle
# schedule (20% warm-up to lr 0.1, cosine to 0); weight decay, label smoothing and dropout
# 0.3 as mild regularisers. Flips and shifts lowered dev accuracy at this epoch budget.
# 13 epochs: dev accuracy 0.9267, against 0.9249 for 11.
FAST = HOMEWORK.replace(
    preset="fast", lrs=(0.1,), epochs=13, batch_size=128, optimizer="sgd", momentum=0.9,
    nesterov=True, weight_decay=5e-4, schedule="onecycle", warmup=0.2, label_smoothing=0.1,
    augment="none", dropout=0.3, eval_batch_size=2000, threads=1,
)

# Seconds, for tests and quick checks: a tiny subset, one epoch, the study's optimiser, one
# process (starting workers would take longer than the runs).
SMOKE = HOMEWORK.replace(preset="smoke", epochs=1, train_limit=2000, eval_limit=500, jobs=1)

PRESETS = {c.preset: c for c in (HOMEWORK, FAST, SMOKE)}
