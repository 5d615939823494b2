"""The training engine on random tensors: numbers out, reproducible, cancellable."""

import math

import pytest
import torch
from torch.nn import functional as F

from mlcore.augment import eval_preprocess
from mlcore.engine import (
    Cancelled,
    evaluate,
    make_optimizer,
    make_runtime,
    make_scheduler,
    prepare_model,
    train_one_epoch,
)
from mlcore.model import build_model


def _batches(seed: int, n: int = 3, bs: int = 4, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(0, 256, (bs, 3, size, size), dtype=torch.uint8, generator=g),
            torch.randint(0, 2, (bs,), generator=g),
        )
        for _ in range(n)
    ]


def _train_once(seed: int = 0):
    torch.manual_seed(seed)
    runtime = make_runtime(torch.device("cpu"), "fp32")
    model = prepare_model(build_model("resnet18", "none"), runtime)
    opt = make_optimizer(model, 1e-3, 0.0, runtime.device)
    out = train_one_epoch(model, _batches(seed), opt, augment=eval_preprocess, runtime=runtime, steps=3)
    return out, model


def test_train_one_epoch_returns_numbers_and_is_reproducible_on_cpu():
    (a, model_a), (b, model_b) = _train_once(), _train_once()
    assert math.isfinite(a["train_loss"]) and a["images"] == 12 and a["img_per_s"] > 0
    assert a["train_loss"] == b["train_loss"]
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)


def test_train_loss_is_the_mean_of_batch_losses_like_the_notebook():
    runtime = make_runtime(torch.device("cpu"), "fp32")
    torch.manual_seed(0)
    model = prepare_model(build_model("resnet18", "none"), runtime)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights stay put, so losses can be recomputed
    model.eval()  # batch-norm statistics are frozen in eval mode: compare against the same mode
    batches = _batches(1)
    expected = []
    with torch.no_grad():
        for x, y in batches:
            expected.append(F.cross_entropy(model(eval_preprocess(x)), y).item())
    model.train = lambda mode=True: model  # keep eval mode inside train_one_epoch
    out = train_one_epoch(model, batches, opt, augment=eval_preprocess, runtime=runtime, steps=3)
    assert out["train_loss"] == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def test_should_stop_raises_cancelled_before_the_next_step():
    runtime = make_runtime(torch.device("cpu"), "fp32")
    model = prepare_model(build_model("resnet18", "none"), runtime)
    opt = make_optimizer(model, 1e-3, 0.0, runtime.device)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled):
        train_one_epoch(model, _batches(0), opt, augment=eval_preprocess, runtime=runtime, steps=3, should_stop=stop)
    assert len(calls) == 2


def test_evaluate_gives_probabilities_and_mean_loss():
    runtime = make_runtime(torch.device("cpu"), "fp32")
    torch.manual_seed(0)
    model = prepare_model(build_model("resnet18", "none"), runtime)
    batches = _batches(2)
    out = evaluate(model, batches, runtime=runtime)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        logits = model.eval()(eval_preprocess(x))
    assert out["val_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert out["probs"] == pytest.approx(torch.softmax(logits, 1)[:, 1].numpy(), abs=1e-6)
    assert list(out["labels"]) == y.tolist()


def test_scheduler_warms_up_linearly_then_decays_to_zero():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = make_scheduler(opt, "cosine", warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)
    assert make_scheduler(opt, "constant", 0, 12) is None


def test_runtime_precision_choices():
    cpu = torch.device("cpu")
    assert make_runtime(cpu, "auto").amp_dtype is None
    assert make_runtime(cpu, "fp32").amp_dtype is None
    assert make_runtime(cpu, "bf16").amp_dtype is torch.bfloat16


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2", "half"])
def test_a_bad_gpu_share_is_refused_naming_the_variable(monkeypatch, value):
    from mlcore.engine import gpu_fraction

    monkeypatch.setenv("DATASLAYER_GPU_FRACTION", value)
    with pytest.raises(ValueError, match=rf"DATASLAYER_GPU_FRACTION='{value}': expected a number in \(0, 1\]"):
        gpu_fraction()


def test_the_gpu_share_defaults_to_the_whole_gpu_and_cpu_jobs_ignore_it(monkeypatch):
    from mlcore.engine import gpu_fraction, make_runtime

    monkeypatch.delenv("DATASLAYER_GPU_FRACTION", raising=False)
    assert gpu_fraction() == 1.0
    monkeypatch.setenv("DATASLAYER_GPU_FRACTION", "0.25")
    assert gpu_fraction() == 0.25
    assert make_runtime(torch.device("cpu")).device.type == "cpu"  # no CUDA call on a CPU job
