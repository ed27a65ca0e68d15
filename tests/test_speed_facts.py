"""Every speed the book quotes is one value of one record, named for what it times."""
from cxr.report import speed_facts


def test_each_timing_is_named_and_comes_from_its_record():
    summary = {"inference": {"images_per_second": 46.6, "batch": 64, "size": 224, "threads": 2}}
    found = speed_facts.facts(summary, training_seconds=1200)
    assert found["batched"]["text"] == "21.5 ms (47 films/s)"
    assert "batches of 64" in found["batched"]["label"] and "summary" in found["batched"]["source"]
    assert found["training"]["text"] == "20 min"
    # the committed benchmark records give cxr predict's timings and the model alone per runtime
    for name in ("predict_one", "predict_one_cam", "predict_folder", "model_alone"):
        assert name in found and found[name]["source"].startswith("python benchmarks/")
    # two timings of different things never share a label
    labels = [f["label"] for f in found.values()]
    assert len(set(labels)) == len(labels)


def test_every_glued_name_exists_even_without_a_record():
    glued = speed_facts.glue_names(speed_facts.facts(None))
    assert glued["speed_batched"] == "not measured here"
    assert set(glued) == {f"speed_{n}{s}" for n in speed_facts.LABELS for s in ("", "_said")}
    table = speed_facts.table(speed_facts.facts({"inference": {"images_per_second": 50.0, "batch": 64, "size": 224,
                                                               "threads": 2}}))
    assert table.index.name == "what is timed" and "20.0 ms (50 films/s)" in set(table["median"])
