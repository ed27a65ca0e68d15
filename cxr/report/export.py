"""The shippable model: `cxr export` writes a run's weights in half precision with what `cxr predict`
needs (classes, preprocessing, temperature, operating points, out-of-distribution statistics, the site
check's reference) and a model card."""
from __future__ import annotations

import tempfile
from pathlib import Path

from cxr.assess import shortcuts
from cxr.assess.evaluate import evaluate_folder
from cxr.core.config import Config
from cxr.data.dataset import external_dir, find_dataset
from cxr.model import checkpoints, registry
from cxr.model.ood import fit_on_split
from cxr.report.records import twin_audit
from cxr.report.site_record import attach


def export_model(run_path: str | Path, out: str | Path, config: Config) -> Path:
    """`cxr export`: a run's model (or an exported file, measured again) in half precision, with what the shipped file carries measured on
    the half-precision weights themselves (the model users run and every record describes): the
    operating points chosen on its validation predictions, the test and external numbers of its
    card, its twin agreement, its out-of-distribution statistics and the site check's reference;
    and the run's training history."""
    if Path(run_path).is_file():  # an exported file measured again (`cxr export --remeasure`): same weights
        checkpoint, name, training = Path(run_path), Path(run_path).stem, None
    else:
        run = registry.load_run(run_path)
        checkpoint, name = run.checkpoint, run.name
        training = {"history": run.history.to_dict("records"), "summary": run.summary}
    n_boot = 1000 if not config.smoke else 200
    with tempfile.TemporaryDirectory() as tmp:
        # the half-precision model, loaded and hashed once, and measured by every step below
        half = registry.at(checkpoints.export(checkpoint, Path(tmp) / name / "checkpoint.pt", training=training),
                           config, name, "export")
        evaluation = evaluate_folder(find_dataset(), half, split="test", config=config, progress=False,
                                     n_boot=n_boot, seed=config.seed)
        data = external_dir()
        external = (evaluate_folder(data, half, progress=False, n_boot=n_boot, seed=config.seed, config=config,
                                    thresholds_from=evaluation) if data is not None else None)
        twins = twin_audit(config, half)
        audit = ({"agreement": twins["agreement"], "twins": twins["n"],
                  "twins_from": "originals in the validation and test splits"} if twins["n"] else None)
        model, meta = half.loaded
        stats = fit_on_split(model, meta, config)
        hidden = shortcuts.figures(half, config)
    out = checkpoints.export(checkpoint, out, evaluation, external, audit, stats, training=training,
                             shortcut_figures=hidden)

    return attach(out, config)  # the site check's reference, fitted on the exported weights' features
