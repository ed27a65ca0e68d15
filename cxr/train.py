"""Training: a linear head on frozen features, and (below) partial fine-tuning."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def fit_linear_head(features: np.ndarray, y: np.ndarray, seed: int = 0, cs=(0.003, 0.01, 0.03, 0.1)) -> Pipeline:
    """Standardise, then class-weighted multinomial logistic regression; C by 3-fold CV on these rows only."""
    if len(np.unique(y)) < 2:
        raise ValueError("A linear head needs at least two classes in its training rows.")
    min_count = int(np.bincount(y).min(initial=0)) if len(y) else 0
    if min_count >= 3:
        clf = LogisticRegressionCV(Cs=list(cs), cv=3, max_iter=3000, class_weight="balanced",
                                   scoring="neg_log_loss", random_state=seed)
    else:  # too few rows for cross-validation (smoke profile)
        clf = LogisticRegression(C=cs[1], max_iter=3000, class_weight="balanced", random_state=seed)
    return make_pipeline(StandardScaler(), clf).fit(features, y)


def proba_all_classes(model, features: np.ndarray, n_classes: int = 4) -> np.ndarray:
    """predict_proba with one column per class, zeros for classes the model never saw."""
    p = model.predict_proba(features)
    out = np.zeros((len(features), n_classes))
    out[:, model.classes_] = p
    return out
