"""Fine-tuning jobs queued over the API (issue 20): who may queue one, and on what.

A job ends by pushing an adapter version to ``main``, so queueing one takes the role that
may change ``main`` directly (``PROMPTREV_MERGE_ROLE``), checked when it is queued; and
it trains only on a model the operator configured as a local one, never on a path or a
remote model a caller names. Nothing refused reaches the queue.
"""

from __future__ import annotations

import pytest

from promptrev import Registry
from promptrev.errors import NotFound
from promptrev.jobs import FinetuneJobs, JobQueue

from ..conftest import make_server_env


@pytest.fixture
def env(tmp_path):
    models = {"tiny": {"backend": "hf", "path": str(tmp_path / "weights")},
              "remote": {"backend": "openai", "name": "gpt-x", "base_url":
                         "http://127.0.0.1:9/v1", "api_key": "none"}}
    server_env = make_server_env(tmp_path, models=models, merge_role="admin")
    yield server_env
    server_env.app.extensions["promptrev"].close()


def request(**extra) -> dict:
    return {"dataset": "sentiment@1", "model": "tiny", "name": "attack-lora", **extra}


def queued(env) -> int:
    """Jobs recorded plus messages waiting in the queue."""
    with Registry.open(env.settings.registry) as reg:
        try:
            FinetuneJobs(reg).job(1)
        except NotFound:
            recorded = 0
        else:
            recorded = 1
    return recorded + JobQueue(env.settings).pending()


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_only_who_may_write_main_queues_a_finetune(env, role):
    r = env.api("POST", "/finetunes", role=role, json=request())
    assert r.status_code == 403, r.get_data(as_text=True)
    assert queued(env) == 0
    assert env.api("POST", "/finetunes", role=None, json=request()).status_code == 401


@pytest.mark.parametrize("model", ["/etc", "remote", "../weights", "tiny2"])
def test_a_finetune_trains_only_on_a_configured_local_model(env, model):
    r = env.api("POST", "/finetunes", json=request(model=model))
    assert r.status_code == 400, r.get_data(as_text=True)
    assert "is not a configured local model (configured: tiny)" in r.get_json()["error"][
        "message"]
    assert queued(env) == 0


@pytest.mark.parametrize("extra", [{"name": "../x"}, {"config": {"target_modules": "all"}},
                                   {"config": {"extra": {"a": 1}}}, {"author": "someone"},
                                   {"config": {"max_steps": True}}])
def test_a_finetune_request_is_checked_field_by_field(env, extra):
    r = env.api("POST", "/finetunes", json=request(**extra))
    assert r.status_code == 400, r.get_data(as_text=True)
    assert queued(env) == 0


def test_an_admin_queues_one_as_themself(env):
    r = env.api("POST", "/finetunes", json=request())
    assert r.status_code == 202, r.get_data(as_text=True)
    job = r.get_json()
    assert job["author"].startswith("admin") and job["queue"]["state"] == "queued"
    assert queued(env) == 2  # the job's row and its message


@pytest.mark.parametrize("config", [
    {"max_steps": 10**9}, {"max_steps": 0}, {"max_steps": -5}, {"rank": 10**6},
    {"rank": 0}, {"batch_size": 10**9}, {"epochs": 1e12}, {"epochs": 0},
    {"learning_rate": 1e309}, {"learning_rate": -1.0}, {"validation_split": 5.0},
    {"num_virtual_tokens": 10**7}, {"seed": -1}, {"alpha": 2**70},
])
def test_a_finetune_asking_the_shared_worker_for_too_much_is_refused(env, config):
    r = env.api("POST", "/finetunes", json=request(config=config))
    assert r.status_code == 400, r.get_data(as_text=True)
    key = next(iter(config))
    assert f"config.{key}" in r.get_json()["error"]["message"]
    assert queued(env) == 0


def test_a_finetune_within_the_ranges_is_queued(env):
    r = env.api("POST", "/finetunes", json=request(config={
        "max_steps": 200, "rank": 16, "learning_rate": 1e-4, "validation_split": 0.0,
        "epochs": 2, "batch_size": 4, "seed": 7}))
    assert r.status_code == 202, r.get_data(as_text=True)


class _Payload:
    """What a forged pickle does when a worker reads it: here, make a folder."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def test_a_forged_pickle_on_the_queue_runs_no_code_in_a_worker(tmp_path):
    """Whoever can write to the queue's store gets a run id past, never code."""
    import pickle

    from promptrev.jobs import open_huey

    huey = open_huey(f"sqlite:///{tmp_path / 'queue.db'}")
    marker = tmp_path / "pwned"
    huey.storage.enqueue(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ValueError):
        huey.dequeue()  # the consumer logs this and goes on
    assert not marker.exists()
    # The messages promptrev sends still travel: a task name and a row id.
    task = huey.task(name="finetune")(lambda job_id: job_id)
    task(7)
    message = huey.dequeue()
    assert message.name == "finetune" and message.args == (7,)
