"""The training job on the tiny dataset with an in-memory tracker."""

import pytest

from mlcore.data import DataError
from mlcore.engine import Cancelled
from mlcore.hooks import JobHooks, NullTracker
from mlcore.params import train_params
from mlcore.train import run_training


def test_training_job_selects_best_epoch_and_tunes_threshold(tiny_train_values):
    tracker, events = NullTracker(), []
    summary = run_training(train_params(**tiny_train_values), tracker=tracker, hooks=JobHooks(progress=events.append))
    assert sorted(tracker.epochs) == [1, 2]
    for metrics in tracker.epochs.values():
        assert {
            "train_loss",
            "val_loss",
            "val_f1_weighted",
            "val_f1",
            "val_accuracy",
            "val_precision",
            "val_recall",
            "val_roc_auc",
        } <= set(metrics)
    scores = [tracker.epochs[e]["val_f1_weighted"] for e in (1, 2)]
    assert summary["best_epoch"] == scores.index(max(scores)) + 1  # first best wins, as the notebook
    assert summary["val_f1_weighted"] == pytest.approx(max(scores), abs=1e-6)
    assert 0.0 <= summary["threshold"] <= 0.9
    assert summary["train_images"] + summary["val_images"] == 48
    assert {e["phase"] for e in events} >= {"decoding", "training", "evaluating", "logging"}


def test_subject_split_keeps_subjects_apart_in_the_job(tiny_train_values):
    class Spy(NullTracker):
        def log_dataset(self, dataset, train_idx, val_idx, context="training"):
            self.sides = ({dataset.subjects[i] for i in train_idx}, {dataset.subjects[i] for i in val_idx})

    spy = Spy()
    run_training(train_params(**{**tiny_train_values, "epochs": 1}), tracker=spy)
    train_subjects, val_subjects = spy.sides
    assert train_subjects and val_subjects and not train_subjects & val_subjects


def test_resumed_job_continues_from_its_checkpoint_and_matches_an_unbroken_run(tiny_train_values, tmp_path):
    unbroken = NullTracker()
    full = run_training(train_params(**tiny_train_values), tracker=unbroken)

    first = NullTracker()
    run_training(train_params(**{**tiny_train_values, "epochs": 1}), tracker=first, checkpoint_dir=tmp_path)
    assert (tmp_path / "last.pt").exists()

    resumed, events = NullTracker(), []
    summary = run_training(
        train_params(**tiny_train_values),
        tracker=resumed,
        checkpoint_dir=tmp_path,
        hooks=JobHooks(progress=events.append),
    )
    assert {e["epoch"] for e in events if e["phase"] == "training"} == {2}  # epoch 1 was not trained again
    assert sorted(resumed.epochs) == [1, 2]
    for epoch in (1, 2):
        for key in ("train_loss", "val_loss", "val_f1_weighted"):
            assert resumed.epochs[epoch][key] == pytest.approx(unbroken.epochs[epoch][key], rel=1e-4, abs=1e-5)
    assert summary["threshold"] == pytest.approx(full["threshold"])


def test_early_stopping_stops_after_patience_epochs_without_improvement(tiny_train_values):
    tracker = NullTracker()
    values = {
        **tiny_train_values,
        "epochs": 6,
        "learning_rate": 1e-12,
        "early_stopping_patience": 1,
        "aug_flip": False,
        "aug_rotation": 0,
        "aug_brightness": 0,
        "aug_contrast": 0,
        "aug_saturation": 0,
        "aug_hue": 0,
    }
    summary = run_training(train_params(**values), tracker=tracker)
    assert summary["epochs_run"] < 6
    assert summary["best_epoch"] == 1


def test_bad_training_images_are_skipped_and_listed(tiny_train_values, demo_copy):
    victim = sorted((demo_copy / "train").rglob("*.jpg"))[0]
    victim.write_bytes(b"not a jpeg at all")
    (victim.parent / "empty.jpg").write_bytes(b"")
    captured = {}

    class Spy(NullTracker):
        def log_evaluation(self, evaluation):
            captured.update(evaluation)

    summary = run_training(
        train_params(**{**tiny_train_values, "data_dir": str(demo_copy), "epochs": 1}), tracker=Spy()
    )
    assert summary["skipped_files"] == 2
    names = {s["file"] for s in captured["skipped"]}
    assert victim.relative_to(demo_copy / "train").as_posix() in names
    assert all(s["reason"] for s in captured["skipped"])
    assert summary["train_images"] + summary["val_images"] == 48 - 1  # the empty file was an extra


def test_cancel_stops_the_job(tiny_train_values):
    with pytest.raises(Cancelled):
        run_training(train_params(**tiny_train_values), hooks=JobHooks(should_stop=lambda: True))


def test_a_class_left_empty_by_bad_files_is_refused_before_training(tiny_train_values, demo_copy):
    for f in (demo_copy / "train").rglob("*.jpg"):
        if "/fall/" in f.as_posix():
            f.write_bytes(b"garbage")
    with pytest.raises(DataError, match="both classes"):
        run_training(train_params(**{**tiny_train_values, "data_dir": str(demo_copy), "split": "image"}))


def test_a_batch_too_large_for_the_dataset_is_warned_about(tiny_train_values, caplog):
    class Spy(NullTracker):
        tags: dict = {}

        def set_tags(self, tags):
            self.tags = {**self.tags, **tags}

    spy = Spy()
    with caplog.at_level("WARNING", logger="mlcore.train"):
        run_training(train_params(**{**tiny_train_values, "epochs": 1, "batch_size": 64}), tracker=spy)
    assert "batch_size 64 gives 1 optimizer step per epoch" in spy.tags["dataslayer.warning"]
    assert "lower batch_size or raise epochs" in caplog.text
