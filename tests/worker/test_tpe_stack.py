"""A TPE sweep with ASHA pruning through the real stack: Redis, the MLflow server, a worker process."""

from queue_helpers import epoch_steps, versions_of

from mlcore.names import Tag


def test_a_tpe_sweep_with_asha_prunes_trials_and_picks_the_best_unpruned(job_client, start_worker, tiny_job):
    start_worker("w1")
    parent = job_client.submit_sweep(
        {
            "base": {**tiny_job, "epochs": 4},
            "strategy": "tpe",
            "samples": 5,
            "seed": 1,
            "ranges": {"learning_rate": {"low": 1e-4, "high": 5e-2, "log": True}},
            "objective": "val_loss",  # continuous, so ASHA's comparisons have no ties on the tiny data
            "pruner": "asha",
            "pruning_warmup_epochs": 0,
            "max_concurrent": 2,
        }
    )
    job = job_client.wait(parent, timeout=300)
    assert job.status == "FINISHED", job.failure
    children = job_client.list_jobs(sweep=parent)
    assert len(children) == 5 and all(c.status == "FINISHED" for c in children)
    assert sorted(int(c.tags[Tag.SWEEP_INDEX]) for c in children) == list(range(5))  # no duplicate proposal
    assert len({c.tags[Tag.PARAMS_JSON] for c in children}) == 5
    pruned = [c for c in children if c.pruned]
    kept = [c for c in children if not c.pruned]
    assert pruned and kept
    registered = {v.run_id for v in versions_of(job_client, tiny_job["registered_model_name"])}
    for c in pruned:
        stopped = int(c.tags[Tag.PRUNED])
        assert c.state == "PRUNED" and stopped in (1, 2)  # the ASHA rungs of a 4-epoch trial
        assert epoch_steps(job_client, c.run_id) == list(range(1, stopped + 1))
        assert c.run_id not in registered
    assert {c.run_id for c in kept} == registered
    loss = {c.run_id: min(m.value for m in job_client.mlflow.get_metric_history(c.run_id, "val_loss")) for c in kept}
    best = job.tags[Tag.BEST_CHILD_RUN_ID]
    assert best in loss and loss[best] == min(loss.values()) == job.metrics["best_val_loss"]
