"""Training approach ``linear``: frozen ImageNet EfficientNet-Lite0 features and a class-weighted
logistic-regression head, folded into the network's last layer so its checkpoint is an ordinary
EfficientNet-Lite0 checkpoint."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from cxr.core import metrics
from cxr.core.config import CLASSES
from cxr.core.files import write_csv
from cxr.model.architectures import efficientnet_lite0
from cxr.model.checkpoints import save_checkpoint
from cxr.model.features import embed
from cxr.model.registry import write_predictions


def fit_linear_head(features: np.ndarray, y: np.ndarray, seed: int = 0, cs=(0.003, 0.01, 0.03, 0.1)) -> Pipeline:
    """Standardise, then class-weighted multinomial logistic regression; C by 3-fold CV on these rows only."""
    if len(np.unique(y)) < 2:
        raise ValueError("A linear head needs at least two classes in its training rows.")
    if int(np.bincount(y).min(initial=0)) >= 3:
        clf = LogisticRegressionCV(Cs=list(cs), cv=3, max_iter=3000, class_weight="balanced",
                                   scoring="neg_log_loss", random_state=seed)
    else:  # too few rows for cross-validation
        clf = LogisticRegression(C=cs[1], max_iter=3000, class_weight="balanced", random_state=seed)
    return make_pipeline(StandardScaler(), clf).fit(features, y)


def proba_all_classes(model, features: np.ndarray, n_classes: int = len(CLASSES)) -> np.ndarray:
    """predict_proba with one column per class, zeros for classes the model never saw."""
    p = model.predict_proba(features)
    out = np.zeros((len(features), n_classes))
    out[:, model.classes_] = p
    return out


def fit_run(path, config, table, pixels, y, progress, eval_every_s, root):
    feats = embed(pixels, config, size=config.input_size, progress=progress)
    masks = {s: (table.split == s).to_numpy() for s in ("train", "val", "test")}
    head = fit_linear_head(feats[masks["train"]], y[masks["train"]], seed=config.seed)
    for s in ("val", "test"):
        write_predictions(path, s, table, np.flatnonzero(masks[s]), proba_all_classes(head, feats[masks[s]]))
    lr = head[-1]
    write_csv(pd.DataFrame([{"epoch": 1, "val_accuracy": metrics.accuracy_from_proba(
        y[masks["val"]], proba_all_classes(head, feats[masks["val"]]))}]), path / "history.csv")
    # the scaler folded into the logistic regression, as the network's own final layer: the
    # checkpoint is then an ordinary EfficientNet-Lite0 checkpoint that load_model can read
    scaler = head[0]
    coef = np.zeros((len(CLASSES), feats.shape[1]))
    bias = np.full(len(CLASSES), -1e4)  # a class never seen in training is never predicted
    coef[lr.classes_] = lr.coef_ / scaler.scale_
    bias[lr.classes_] = lr.intercept_ - (lr.coef_ / scaler.scale_) @ scaler.mean_
    model = efficientnet_lite0(pretrained=True)
    model._fc.weight.data.copy_(torch.from_numpy(coef))
    model._fc.bias.data.copy_(torch.from_numpy(bias))
    save_checkpoint(path / "checkpoint.pt", model, "efficientnet_lite0", config,
                    head="logistic regression", C=float(np.atleast_1d(getattr(lr, "C_", [lr.C]))[0]))
    return {"arch": "efficientnet_lite0 (frozen) + logistic regression", "epochs": 1}
