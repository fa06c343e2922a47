"""One (decoder, seed) run's result: what result.json holds, what the run store keeps in a
finished checkpoint.pt, and what summary.json is built from (experiment.summarise_model).

Test scores are of the run's decoder: the epoch chosen on validation CIDEr-D with
--select val_cider, the last epoch with --select final (the study's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# what a run records after every epoch (self-critical epochs also record scst_reward)
HISTORY = ("train_loss", "val_bleu4", "val_cider", "test_cider", "test_coco_bleu4", "epoch_seconds")
# what only some runs record: self-critical epochs' reward, the cross-entropy model's test
# scores, and an attention decoder's validation maps per epoch
OPTIONAL_HISTORY = ("scst_reward", "before_scst", "val_border_ratio", "val_attention_peak",
                    "val_attention_shift")


@dataclass
class RunResult:
    model: str
    seed: int
    config: dict                  # the run's key: everything its numbers depend on
    # test scores
    coco: dict                    # coco-caption BLEU-1..4, METEOR, ROUGE-L, CIDEr-D
    test_bleu4: float             # the study's metric (mean of nltk sentence BLEU-4)
    test_bleu4_best: float        # the same for the decoder best by validation
    corpus_bleu: dict             # nltk corpus BLEU-1..4
    cider: float
    rouge_l: float
    meteor: float | None          # None: not measured (--no-meteor, or no Java)
    test_bleu4_per_image: list
    cider_per_image: list
    captions: dict                # test image name -> caption
    # the checkpoint, and validation
    best_epoch: int
    selected_by: str              # "val_cider" or "val_bleu4": the metric best_epoch is best by
    final_val_bleu4: float
    best_val_bleu4: float
    best_val_cider: float
    seconds: float                # training and test scoring
    # per epoch (HISTORY); test_cider and test_coco_bleu4 feed the "as published" column only
    train_loss: list
    val_bleu4: list
    val_cider: list
    test_cider: list
    test_coco_bleu4: list
    epoch_seconds: list
    scst_reward: list | None = None  # per self-critical epoch
    before_scst: dict | None = None  # the cross-entropy model's test scores, before that stage
    val_border_ratio: list | None = None    # per epoch, attention decoders: greedy validation
    val_attention_peak: list | None = None  # maps' outer-ring ratio, peak and shift
    val_attention_shift: list | None = None  # (metrics.border_mass)
    # attention decoders: where the attention looked while writing the test captions
    # (metrics.border_mass)
    border_mass: float | None = None
    border_area_share: float | None = None
    border_ratio: float | None = None
    attention_peak: float | None = None
    attention_entropy: float | None = None
    attention_shift: float | None = None
    sentinel_weight: float | None = None
    tokens: int | None = None
    # reference captioners (caption/reference.py): what was chosen on validation, e.g. nearest's k
    choice: dict | None = None

    def to_dict(self) -> dict:
        """The JSON form: the optional parts only where the run has them (meteor always)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k == "meteor"}

    @classmethod
    def from_dict(cls, stored: dict) -> RunResult:
        """A stored result (result.json, a finished checkpoint); keys this version does not
        know are left out."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in names})

    @property
    def has_attention_maps(self) -> bool:
        return self.border_mass is not None
