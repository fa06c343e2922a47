"""The study's published numbers (the seed report and the other sources SPEC.md lists).

These are the targets a run is compared against in the report's closing table: they are
the study's, not ours, so they are data here and never computed.
"""

# The seed report (Deep Learning, IST Lisbon 2021-22, Homework 2).
SEED = {
    "cnn_params": 10_298,
    "mlp_params": 236_310,
    "ratio_stated": "22 times",
    "classify": {"lr": 0.01, "dropout": 0.2, "train_loss": 0.3175, "val_acc": 0.9060, "test_acc": 0.9025},
    "caption": {"no_attention": 0.4927, "attention": 0.5294},
}

# Other sources, for the tables that show the spread between groups.
OTHER_CLASSIFY = [
    # source, dropout, lr, train loss, dev acc, test acc
    ("official solution", 0.3, 0.01, None, 0.9129, 0.9053),
    ("another group", 0.3, 0.01, 0.3268, 0.9111, 0.9060),
    ("another group", 0.3, 0.001, 0.6465, 0.8572, 0.8517),
    ("another group", 0.3, 0.1, 0.2542, 0.9016, 0.8986),
]
OTHER_GROUP_CAPTIONS = {
    "219": "a residential area with houses arranged neatly and some roads go through this area",
    "357": "a curved river with some green waters and a highway passed by",
    "540": "an industrial area with many white buildings and some roads go through this area",
}

SYDNEY_HOWTO = (
    "Sydney-Captions (Qu et al., \"Deep semantic understanding of high resolution remote "
    "sensing image\", CITS 2016) is distributed with the RSICD release (Lu et al., IEEE TGRS "
    "2017). `convattn download sydney-captions` fetches and checks a public copy (on a machine "
    "with internet, `make reproduce` does so itself); or lay it out as a folder holding a "
    "Karpathy-style `dataset.json` (`images[]` with `filename`, `split` and `sentences[].tokens`) "
    "and an `images/` folder with the 613 images, then pass it with `--sydney DIR`, set "
    "`CONVATTN_SYDNEY=DIR`, or put it at `./data/sydney-captions`."
)

RSICD_HOWTO_SHORT = (
    "to run it, pass --rsicd download (convattn download rsicd fetches and checks it, docs/rsicd.md), "
    "or --rsicd DIR / CONVATTN_RSICD=DIR for a copy laid out as dataset.json + images/")
