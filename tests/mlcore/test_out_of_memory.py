"""Running out of memory becomes OutOfMemory: one line naming the device and the parameters to lower.

The real allocators fail under a data-segment limit (RLIMIT_DATA) set in a subprocess, so nothing
here can take the machine's memory.
"""

import json
import os
import resource
import subprocess
import sys

import pytest
import torch
from services import VENV_BIN

from mlcore.engine import Runtime, make_runtime, out_of_memory
from mlcore.errors import USER_ERRORS, OutOfMemory

ALLOCATE_UNDER_A_LIMIT = """
import json, re, resource, numpy as np, torch
from mlcore.engine import make_runtime, out_of_memory
used = int(re.search(r"VmData:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) * 1024
resource.setrlimit(resource.RLIMIT_DATA, (used + 256 * 2**20, resource.getrlimit(resource.RLIMIT_DATA)[1]))
seen = []
for allocate in (lambda: torch.empty(2**30, dtype=torch.uint8), lambda: np.empty(2**30, dtype=np.uint8)):
    try:
        with out_of_memory(make_runtime(torch.device("cpu"), "auto"), batch_size=256, image_size=224):
            allocate()
    except Exception as exc:
        cause = f"{type(exc.__cause__).__name__}: {exc.__cause__}"
        seen.append({"type": type(exc).__name__, "message": str(exc), "cause": cause})
print(json.dumps(seen))
"""


def test_the_cpu_and_numpy_allocators_failing_under_a_memory_limit_become_out_of_memory():
    proc = subprocess.run([sys.executable, "-c", ALLOCATE_UNDER_A_LIMIT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch_oom, numpy_oom = json.loads(proc.stdout.strip().splitlines()[-1])
    for seen in (torch_oom, numpy_oom):
        assert seen["type"] == "OutOfMemory"
        assert (
            seen["message"]
            == "out of memory on cpu at batch_size=256, image_size=224 (fp32): lower batch_size or image_size"
        )
    assert "DefaultCPUAllocator: can't allocate memory" in torch_oom["cause"]
    assert numpy_oom["cause"].startswith("MemoryError: Unable to allocate 1.00 GiB")


def test_a_cuda_out_of_memory_names_the_gpu_and_precision_and_keeps_the_cause():
    runtime = Runtime(torch.device("cuda", 0), torch.bfloat16)
    original = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.06 GiB")
    with (
        pytest.raises(OutOfMemory) as caught,
        out_of_memory(runtime, lower=("batch_size",), batch_size=512, image_size=224),
    ):
        raise original
    assert str(caught.value) == "out of memory on cuda:0 at batch_size=512, image_size=224 (bf16): lower batch_size"
    assert caught.value.__cause__ is original
    assert isinstance(caught.value, USER_ERRORS)


@pytest.mark.parametrize(
    "error", [RuntimeError("mat1 and mat2 shapes cannot be multiplied"), FileNotFoundError(2, "gone"), ValueError("x")]
)
def test_other_errors_pass_through_unchanged(error):
    with pytest.raises(type(error)) as caught, out_of_memory(make_runtime(torch.device("cpu")), batch_size=8):
        raise error
    assert caught.value is error


def test_the_cli_reports_a_training_out_of_memory_in_one_line(demo_root, tmp_path, tracking_store):
    def limit():  # 3 GiB of data for the whole command: its imports take about 1.1 GiB
        resource.setrlimit(resource.RLIMIT_DATA, (3 * 2**30, resource.getrlimit(resource.RLIMIT_DATA)[1]))

    proc = subprocess.run(
        [
            str(VENV_BIN / "dataslayer"),
            "train",
            "--data",
            str(demo_root),
            "--arch",
            "resnet50",
            "--pretrained",
            "none",
            "--image-size",
            "512",
            "--batch-size",
            "256",
            "--epochs",
            "1",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=tmp_path,
        timeout=300,
        preexec_fn=limit,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (
        "error: out of memory on cpu at batch_size=256, image_size=512 (fp32): lower batch_size or image_size"
        in proc.stderr
    )
    assert "Traceback" not in proc.stderr
