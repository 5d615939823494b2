"""Cross-validation through the queue: a `cv_folds` training job runs its folds on the worker that takes it."""

from queue_helpers import versions_of


def test_a_queued_cv_job_runs_its_folds_as_child_runs_and_registers_one_ensemble(job_client, start_worker, tiny_job):
    start_worker("w1")
    run_id = job_client.submit_train({**tiny_job, "cv_folds": 2})
    job = job_client.wait(run_id, timeout=400)
    assert job.status == "FINISHED", job.failure
    parent = job_client.mlflow.get_run(run_id)
    children = job_client.mlflow.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(c.data.params["cv_fold"] for c in children) == ["0", "1"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.info.run_id for c in children} == {f["run_id"] for f in job.progress["summary"]["folds"]}
    versions = versions_of(job_client, tiny_job["registered_model_name"])
    assert [v.run_id for v in versions] == [run_id] and versions[0].tags["cv_folds"] == "2"
    assert "cv_mean_val_f1_at_threshold" in parent.data.metrics
