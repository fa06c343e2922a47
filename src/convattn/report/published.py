"""Published captioning results on Sydney-Captions and RSICD, with the protocol behind each.

How the values were obtained (researched from stored public material, nothing run):

- bleu4 and cider are copied from a source only; CIDEr is on coco-caption's x1 scale. A
  value is None when no stored source gives it. The papers' own tables (mostly IEEE, paywalled)
  were not readable in the stored corpora: web pages give only their opening text. So every
  Sydney value the project carried before (SAA 0.454/1.71, Hoxha 0.572/2.56, RSGPT 0.622/2.73,
  JTTS 0.650/2.80, MLSFF 0.667/2.98) is None here and is quoted in `evidence` as unverified.
- The RSICD BLEU-4 values come second-hand, from the comparison table of the RSDiX-CLIP paper's
  README (it quotes the original papers; it gives no CIDEr).
- split, selection and encoder were read in the papers' public code where it exists (the
  evidence names the file and lines, at the commit read). Vocabulary: split is "official",
  "random" or "not stated"; selection starts with "validation", "test" or "not stated";
  "(code)" means read from the code, not from the paper.
- The Aware-Transformer row is the median of its public training log (24 runs), not a paper
  table; the log was parsed here and the numbers checked.

docs/published.md lays these rows out as tables and discusses them.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedResult:
    method: str
    paper: str  # authors, venue (as far as a stored source confirms it)
    year: int
    dataset: str  # "sydney" or "rsicd"
    bleu4: float | None  # test BLEU-4, x1 scale; None: not in a stored source
    cider: float | None  # test CIDEr (coco-caption), x1 scale; None: not in a stored source
    split: str  # "official" / "random" / "not stated"
    selection: str  # which split picked the reported checkpoint
    runs: str  # "one", "several (n, mean/median)", "not stated"
    encoder: str  # image encoder, frozen or fine-tuned
    evidence: str  # URL (file and lines) or "paper text: ..."


GH = "https://github.com/"
MLSFF_TRAIN = GH + "xtye5025/MLSFF/blob/c5dcebc36f18cf61497183642d2a4f736bc9e075/train.py#L203-L247"
MG = GH + "One-paper-luck/MG-Transformer/blob/a8394339f31427d8053f706f67217256d07de905/"
PKG = GH + "One-paper-luck/PKG-Transformer/blob/bbded76f2e429912e4de764efeb7f45d8517b5eb/"
SFDR = GH + "zxk688/SFDR/blob/ff125cdaec1701b8e284a2220e502fdb54b62684/"
WORDSENT = GH + "hw2hwei/WordSent/blob/c4202e0c8eccd56e1160469ff23d89270ac892ab/"
AWARE_LOG = GH + "yunruYan/Aware-Transformer/blob/fd09e14093bd1660ee6dffb15d7ebcc41db88cb5/AwareT_Sydney/log.txt"
RSGPT_CFG = GH + "Lavender105/RSGPT/blob/d3fd7fc630c21a3a2fa6d7dd9783507ec9ea1c27/train_configs/rsgpt_train.yaml"
RSDIX = GH + "NeuRoNeLab/RSDiX-CLIP/blob/7dbe073eea52d3131fd0b472ce68f893380c69da/README.md"
LU2017 = "Lu, Wang, Zheng, Li, IEEE TGRS 56(4) (early access 2017)"
NO_TABLE = "paper's table not in any stored source (only the page opening is stored)"
RSDIX_NOTE = "; RSDiX-CLIP README table (second-hand, no CIDEr)"


def _unread(method: str, paper: str, year: int, dataset: str, evidence: str) -> PublishedResult:
    """A row about which no stored source says anything beyond its name."""
    return PublishedResult(
        method=method, paper=paper, year=year, dataset=dataset, bleu4=None, cider=None,
        split="not stated", selection="not stated", runs="not stated", encoder="not stated",
        evidence=evidence)


def _rsicd_paper_soft_attention(dataset: str, evidence: str) -> PublishedResult:
    """The RSICD paper's soft-attention baseline, on either dataset's official split."""
    return PublishedResult(
        method="Soft attention (SAT baseline of the RSICD paper)", paper=LU2017, year=2017,
        dataset=dataset, bleu4=None, cider=None, split="official", selection="not stated",
        runs="not stated", encoder="not verified (ImageNet CNN features)",
        evidence=f"{NO_TABLE}; {evidence}")


def _rsicd_secondary(method: str, paper: str, year: int, bleu4: float, line: int) -> PublishedResult:
    """A row whose BLEU-4 comes only from the RSDiX-CLIP README's comparison table."""
    return PublishedResult(
        method=method, paper=paper, year=year, dataset="rsicd", bleu4=bleu4, cider=None,
        split="not stated", selection="not stated", runs="not stated", encoder="not stated",
        evidence=f"{RSDIX}#L{line}{RSDIX_NOTE}; protocol unknown: {NO_TABLE}")


SYDNEY = (
    _rsicd_paper_soft_attention("sydney", "official split = the split field of the Sydney json "
                                "distributed with RSICD (github.com/201528014227051/RSICD_optimal)"),
    _unread("SAA, sound active attention (LSTM + attention)", "Lu et al., IEEE TGRS", 2020,
            "sydney", f"project previously carried 0.454 / 1.71; {NO_TABLE}; no code found"),
    PublishedResult(
        method="Word-Sentence framework", paper="Wang, Huang, Zhang, Li, IEEE TGRS", year=2020,
        dataset="sydney", bleu4=None, cider=None, split="official (code)",
        selection="validation (code default: --val_caption_path; test.py scores the same path)",
        runs="not stated", encoder="ImageNet CNN, default ResNet-18, fine-tuned (the freeze is "
                                    "written require_grad, a no-op)",
        evidence=f"{WORDSENT}main.py#L79-L92 and args_parser.py#L16; its coco/annotations "
                 "{train,val,test}_Sydney.json match the official 497/58/58 exactly; " + NO_TABLE),
    _unread("MLCA-Net", "Cheng, Huang, Xu, Zhou, Li, Wang, IEEE TGRS", 2022, "sydney",
            f"{NO_TABLE}; repo HaiyanHuang98/NWPU-Captions holds only a title README"),
    _unread("JTTS, joint-training two-stage", "Ye et al., IEEE TGRS", 2022, "sydney",
            f"project previously carried 0.650 / 2.80; {NO_TABLE}; no code found (first author's "
            "only public repo is MLSFF, which selects on test)"),
    PublishedResult(
        method="MLSFF, multi-label semantic feature fusion",
        paper="Wang, Ye et al. (xtye5025/MLSFF; venue not in the repo)", year=2022,
        dataset="sydney", bleu4=None, cider=None, split="official (code: split field of talk.json)",
        selection="test (code: evaluates split='test' while printing 'val', keeps best test CIDEr)",
        runs="one (seed 123 in opts.py)", encoder="pre-extracted CNN features, frozen (extractor "
                                                  "not in the repo)",
        evidence=f"{MLSFF_TRAIN}; project previously carried 0.667 / 2.98 (number not found in "
                 "a stored source)"),
    _unread("Post-processing of captions", "Hoxha et al. (title, venue not verified)", 2023,
            "sydney", f"project previously carried 0.572 / 2.56; {NO_TABLE}"),
    PublishedResult(
        method="RSGPT, fine-tuned multimodal LLM (InstructBLIP, Vicuna-13B)",
        paper="Hu, Yuan, Wen, Lu, Li, arXiv 2307.15266", year=2023, dataset="sydney",
        bleu4=None, cider=None, split="not stated", selection="not stated (released config: "
                                                             "5 fixed epochs, evaluate: False)",
        runs="not stated", encoder="EVA-G ViT frozen, Q-Former fine-tuned",
        evidence=f"{RSGPT_CFG}; project previously carried 0.622 / 2.73; a third-party note "
                 "quotes only BLEU-1 82.26 on Sydney; " + NO_TABLE),
    PublishedResult(
        method="PKG-Transformer", paper="Meng, Wang, Yang, Xiao, IEEE TGRS 61, 4706213", year=2023,
        dataset="sydney", bleu4=None, cider=None, split="random (np.random.shuffle, seed 6)",
        selection="validation (code)", runs="one (seed 6)",
        encoder="pre-extracted ResNet features, frozen",
        evidence=f"{PKG}data/dataset.py#L238-L242, {PKG}train.py#L311 and #L359; test split "
                 "shares 5 of the 58 official test images; " + NO_TABLE),
    PublishedResult(
        method="MG-Transformer", paper="Meng, Wang, Meng, Yang, Xiao, IEEE TGRS (doi "
                                       "10.1109/TGRS.2024.3385500)",
        year=2024, dataset="sydney", bleu4=None, cider=None, split="random (np.random.shuffle, "
                                                                 "seed 1)",
        selection="not stated (code saves a validation-picked and a test-picked checkpoint; "
                  "test.py loads the validation one)",
        runs="one (seed 1)", encoder="pre-extracted ResNet-152 grid + CLIP ViT-B/32, frozen",
        evidence=f"{MG}data/dataset.py#L224-L229, {MG}train.py#L349-L352 and #L400-L401, "
                 f"{MG}test.py#L109-L110; test split shares 4 of the 58 official test images; "
                 + NO_TABLE),
    PublishedResult(
        method="SFDR", paper="Liu, Liu, Zhang, IEEE JSTARS (arXiv 2503.23453)", year=2025,
        dataset="sydney", bleu4=None, cider=None, split="random (np.random.shuffle, seed 6)",
        selection="validation (code)", runs="one (seed 6)",
        encoder="CLIP ViT-B/32 + ResNet-50 grid + ROI, frozen; CLIP input has the image's own "
                "reference captions appended (label leakage, test images included)",
        evidence=f"{SFDR}process_features/CLIP_feat_extract.py#L32-L86, "
                 f"{SFDR}data/dataset.py#L238-L239, {SFDR}train.py#L319 and #L367; " + NO_TABLE),
    PublishedResult(
        method="Aware-Transformer (public training log, not a paper table)",
        paper="yunruYan/Aware-Transformer (paper not named in the repo)", year=2023,
        dataset="sydney", bleu4=0.577, cider=2.481, split="official (code: mssydney/misc "
                                                          "val/test json match)",
        selection="validation (picked here from the log; the code saves every epoch)",
        runs="several (24 in the log; value = median of validation-picked test scores, CIDEr "
             "range 2.152-2.735, up to 2.922 picked on test)",
        encoder="pre-extracted 1536-d grid features (Swin-sized), frozen",
        evidence=AWARE_LOG),
)

RSICD = (
    _rsicd_paper_soft_attention("rsicd", "the claimed BLEU-4 0.369 / CIDEr 1.98 for the RSICD "
                                "paper's baseline could not be checked, nor which model it is"),
    _rsicd_secondary("VLAD-LSTM (hand-crafted baseline of the RSICD paper)", LU2017, 2017,
                     0.178, 106),
    _rsicd_secondary("SAT, soft attention, as re-run in LAM-TL",
                     "row label 'SAT (LAM-TL)' in the RSDiX table", 2019, 0.415, 110),
    _rsicd_secondary("SM-Att + LSTM (attribute attention)",
                     "Zhang et al., Remote Sensing 11(6) 612", 2019, 0.459, 131),
    _rsicd_secondary("Word-Sentence framework", "Wang, Huang, Zhang, Li, IEEE TGRS", 2020,
                     0.425, 116),
    _rsicd_secondary("Structured attention (SAT-Str)", "Zhao, Shi, Zou, IEEE TGRS", 2021,
                     0.393, 124),
    _rsicd_secondary("SVM-based decoder (SVM-D CONC)", "Hoxha, Melgani, IEEE TGRS", 2021,
                     0.269, 122),
    _rsicd_secondary("RASG, recurrent attention and semantic gate", "Li et al., IEEE TGRS", 2022,
                     0.506, 118),
    _rsicd_secondary("GVFGA + LSGA", "Zhang et al., IEEE TGRS", 2022, 0.417, 120),
    _rsicd_secondary("JTTS, joint-training two-stage", "Ye et al., IEEE TGRS", 2022, 0.514, 126),
    _rsicd_secondary("MLCA-Net (B-1..B-4 identical to SM-Att's row: likely a copy slip)",
                     "Cheng, Huang, Xu, Zhou, Li, Wang, IEEE TGRS", 2022, 0.459, 134),
    PublishedResult(
        method="MLSFF, multi-label semantic feature fusion",
        paper="Wang, Ye et al. (xtye5025/MLSFF; venue not in the repo)", year=2022,
        dataset="rsicd", bleu4=None, cider=None, split="official (code: split field of the json)",
        selection="test (code: same train.py, --dataset rsicd)", runs="one (seed 123)",
        encoder="pre-extracted CNN features, frozen", evidence=f"{MLSFF_TRAIN}; {NO_TABLE}"),
    PublishedResult(
        method="MG-Transformer", paper="Meng, Wang, Meng, Yang, Xiao, IEEE TGRS", year=2024,
        dataset="rsicd", bleu4=None, cider=None,
        split="random (np.random.shuffle into 8734/1094/1093, seed 1)",
        selection="not stated (validation- and test-picked checkpoints both saved)",
        runs="one (seed 1)", encoder="pre-extracted ResNet-152 grid + CLIP ViT-B/32, frozen",
        evidence=f"{MG}data/dataset.py#L364-L370, {MG}train.py#L400-L401; {NO_TABLE}"),
)


def scored(rows: tuple[PublishedResult, ...]) -> list[PublishedResult]:
    """The rows with a BLEU-4 or CIDEr that a stored source gives: the ones a score table can
    set beside ours."""
    return [r for r in rows if r.bleu4 is not None or r.cider is not None]
