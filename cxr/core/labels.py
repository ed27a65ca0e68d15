"""The words a reader sees for the names the code uses: a class is "Lung Opacity", never
`Lung_Opacity`; a record's key `twin_to_lung_opacity` reads "twins called Lung Opacity". Code, records
and files keep the code names; the page shows these. `NAMES` is the one list of code names that may
reach a page, and the book's page test fails when one of them is shown in prose or a table.
"""
from __future__ import annotations

import re

#: each class as the page writes it (the code's names are `config.CLASSES`)
CLASS_LABELS = {"COVID": "COVID-19", "Lung_Opacity": "Lung Opacity", "Normal": "Normal",
                "Viral Pneumonia": "Viral Pneumonia"}

#: every other code name (a record's key, a table's column, a collection's folder) that reaches a page
NAMES = {
    # image statistics (chapter 01; `preprocess.image_stats`)
    "p05": "5th percentile", "p95": "95th percentile", "black_share": "share of black pixels",
    "hf_energy": "fine-detail energy", "label": "class", "chain": "processing chain",
    # the audit and mitigation records (chapter 05)
    "test_accuracy": "test accuracy", "test_macro_auc": "test macro ROC-AUC",
    "twin_agreement": "twin agreement", "twin_to_lung_opacity": "twins called Lung Opacity",
    "twin_agreement_train_twins": "twin agreement (training twins)", "twins_evaluated": "twins evaluated",
    "probe_auc": "source probe AUC", "lung_area_fraction": "lung share of the image",
    "border_area_fraction": "border share of the image",
    # the external collections (folders of ../shared/cxr-external-dev; chapter 06)
    "covidnet_fig1_actualmed": "Actualmed (COVID-Net)", "ieee8023_noncovid": "ieee8023 case reports (non-COVID)",
    # the comparison record's columns (chapter 03; `metrics.comparison_row`)
    "COVID sensitivity": "COVID-19 sensitivity", "COVID specificity": "COVID-19 specificity",
    # library builds (the reproduction record)
    "torch_build": "torch build",
}

#: the image statistics' other columns, whose names are words other tables use otherwise
IMAGE_STATS = {"mean": "mean grey level", "std": "contrast (SD)"}

# a code name in running text: a key with an underscore, as a whole word (so "Lung_Opacity" in
# "called Lung_Opacity" is found, "Normal" in "Normal films" is left alone), never a file's name
# (the database's "Lung_Opacity-12.png" is shown as it is)
_IN_TEXT = {k: v for k, v in {**CLASS_LABELS, **NAMES}.items() if "_" in k}
_WORD = re.compile(r"(?<![\w/.])(" + "|".join(sorted(map(re.escape, _IN_TEXT), key=len, reverse=True)) + r")(?![\w/-])")


def label(name) -> object:
    """A name as the page shows it: a class's or a code name's label, else a string's code names
    replaced inside it ("Lung_Opacity sensitivity" reads "Lung Opacity sensitivity"); anything that is
    not a string comes back as it is."""
    if not isinstance(name, str):
        return name
    if name in CLASS_LABELS:
        return CLASS_LABELS[name]
    if name in NAMES:
        return NAMES[name]
    return prose(name)


def prose(text: str) -> str:
    """Running text with the code names in it replaced by their labels (whole words only)."""
    return _WORD.sub(lambda m: _IN_TEXT[m.group(1)], text)


def code_names(text: str) -> list[str]:
    """The code names (of `CLASS_LABELS` and `NAMES` that contain an underscore) shown in a page's text."""
    return sorted({m.group(1) for m in _WORD.finditer(text)})


def readable(frame):
    """A table as the page shows it: its index, columns, their names and its text cells labelled."""
    import pandas as pd

    out = frame.copy()
    if isinstance(out, pd.Series):
        out = out.to_frame()

    def axis(index):
        if isinstance(index, pd.MultiIndex):
            return index.set_levels([[label(v) for v in level] for level in index.levels],
                                    verify_integrity=False).set_names([label(n) for n in index.names])
        return pd.Index([label(v) for v in index], name=label(index.name))

    out.index, out.columns = axis(out.index), axis(out.columns)
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(label)
    return out
