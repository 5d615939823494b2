"""The training job on the tiny dataset with an in-memory tracker."""

import numpy as np
import pytest
import torch
from torch import nn

from mlcore.data import DataError
from mlcore.engine import Cancelled
from mlcore.hooks import JobHooks, NullTracker
from mlcore.params import train_params
from mlcore.train import STREAMS, TrainState, epoch_seed, run_training

NO_AUGMENTATION = dict(aug_flip=False, aug_rotation=0, aug_brightness=0, aug_contrast=0, aug_saturation=0, aug_hue=0)


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
        **NO_AUGMENTATION,
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


def test_a_tie_keeps_the_first_best_epoch_state():
    state, model = TrainState(), nn.Linear(2, 2)
    for epoch, (score, weight) in enumerate([(0.5, 1.0), (0.8, 2.0), (0.8, 3.0), (0.7, 4.0)], 1):
        nn.init.constant_(model.weight, weight)
        state.record(epoch, {"val_f1_weighted": score}, model, np.full(3, weight))
    assert (state.best_epoch, state.best_score) == (2, 0.8)
    assert torch.all(state.best_model["weight"] == 2.0) and np.all(state.best_probs == 2.0)


def test_a_real_tie_between_epochs_keeps_the_first_ones_model(tiny_train_values):
    # A learning rate of 1e-12 leaves the argmax predictions (so val_f1_weighted) unchanged, while
    # batch-norm statistics still move the probabilities: each epoch's model is told apart by its val_loss.
    captured = {}

    class Spy(NullTracker):
        def log_evaluation(self, evaluation):
            captured.update(evaluation)

    tracker = Spy()
    values = {**tiny_train_values, "epochs": 3, "learning_rate": 1e-12, **NO_AUGMENTATION}
    summary = run_training(train_params(**values), tracker=tracker)
    scores = [tracker.epochs[e]["val_f1_weighted"] for e in (1, 2, 3)]
    losses = [tracker.epochs[e]["val_loss"] for e in (1, 2, 3)]
    assert scores[0] == scores[1] == scores[2]  # a real tie
    assert len({round(v, 5) for v in losses}) == 3
    assert summary["best_epoch"] == 1
    labels, probs = np.array(captured["labels"]), np.array(captured["probs"])
    kept_loss = -np.mean(np.log(np.where(labels == 1, probs, 1 - probs)))
    assert kept_loss == pytest.approx(losses[0], rel=1e-4)  # the evaluated (and registered) model is epoch 1's
    assert min(abs(kept_loss - v) for v in losses[1:]) > 5 * abs(kept_loss - losses[0])


def test_shuffle_and_augmentation_never_share_a_seed():
    seeds = [(seed, epoch, purpose) for seed in range(20) for epoch in range(1, 101) for purpose in STREAMS]
    drawn = [epoch_seed(*key) for key in seeds]
    assert len(set(drawn)) == len(drawn)  # every purpose, epoch and job seed gets its own
    assert all(0 <= d < 2**63 for d in drawn)
    assert epoch_seed(0, 1, "shuffle") == epoch_seed(0, 1, "shuffle")  # reproducible (resume relies on it)
    # With seed 0 the two generators of an epoch draw different streams.
    shuffle, augment = (torch.Generator().manual_seed(epoch_seed(0, 1, p)) for p in STREAMS)
    assert not torch.equal(torch.rand(8, generator=shuffle), torch.rand(8, generator=augment))
