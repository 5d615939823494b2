"""Fault case 12 against real processes: out of memory inside a job fails it clearly; the next job runs.

The worker caps each job's memory (DATASLAYER_JOB_MEMORY_MB: RLIMIT_DATA in the job's process), so
the job runs out long before the host does and the kernel's OOM killer never comes into it.
"""

import psutil
from queue_helpers import versions_of

# A tiny job (ResNet18, 32 px, one epoch) adds about 620 MB to its process, most of it MLflow's
# logging; ResNet50 at 512 px needs tens of GB for its first batch.
CAP_MB = 1024
# Whatever the code under test does, no process of the worker grows past this (its pool children
# start from about 900 MB of imports).
BACKSTOP = 4 * 2**30


def _backstop(worker) -> None:
    """Limit the worker and the processes it has (the children it forks later inherit the limit)."""
    parent = psutil.Process(worker.proc.pid)
    for proc in (parent, *parent.children(recursive=True)):
        proc.rlimit(psutil.RLIMIT_DATA, (BACKSTOP, BACKSTOP))


def test_a_job_out_of_memory_fails_clearly_and_the_worker_takes_the_next_job(job_client, start_worker, tiny_job):
    assert psutil.virtual_memory().available > 3 * BACKSTOP, "too little free memory to run an out-of-memory job safely"
    w1 = start_worker("w1", DATASLAYER_JOB_MEMORY_MB=str(CAP_MB))
    _backstop(w1)
    huge = job_client.submit_train({**tiny_job, "arch": "resnet50", "image_size": 512, "batch_size": 256})
    nxt = job_client.submit_train(tiny_job)

    job = job_client.wait(huge, timeout=120)
    assert job.status == "FAILED", job.failure
    assert job.failure.startswith("OutOfMemory: out of memory on cpu at batch_size=256, image_size=512"), job.failure
    assert "lower batch_size or image_size" in job.failure
    done = job_client.wait(nxt, timeout=120)
    assert done.status == "FINISHED", done.failure
    assert [v.run_id for v in versions_of(job_client, tiny_job["registered_model_name"])] == [nxt]
    assert job_client.list_jobs(status="RUNNING", queue=job_client.settings.queue) == []
    assert w1.log_path.read_text().count(f"job memory capped at {CAP_MB} MB") == 2  # the cap, not the backstop
