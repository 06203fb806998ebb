"""The ``ray`` executor (Ray Tune): one GPU per trial when the cluster has GPUs, the CPUs otherwise.

Tuner + OptunaSearch on the study's SQL storage. Ray's OptunaSearch asks and tells the
study in the driver; :class:`RecordingSearch` adds the trial attributes before each tell
(so each trial is in the storage as soon as it completes) and heartbeats running trials.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import optuna

from ..database import reset_connections
from .executor import start_study
from .objective import OUTCOME_KEY, REUSE_KEY, SEED_KEY, TrialOutcome, ray_trial, run_trial
from .params import suggest
from .progress import SearchProgress
from .ray_connect import init_ray
from .record import Heartbeat, admitted, finished, measured_twin, owner, reference_metrics, tell, withdraw
from .space import REFERENCE, SearchSpace

# no usage stats; Tune's legacy console output, which verbose=0 silences (the live display is ours); Ctrl-C
# raises KeyboardInterrupt in the driver as it does without Ray (Tune's own handler would end the run
# quietly, as if it had finished, and point to Tuner.restore, which a study in SQL storage does not need)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0", "RAY_DEDUP_LOGS": "0",
           "TUNE_DISABLE_SIGINT_HANDLER": "1",
           "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "3600"}
WORKER_DIED = ("the Ray worker running this trial died without a result (killed, or out of host memory?); "
               "see the trial's Ray logs")
STOPPED = "stopped by Tune before it finished (time budget or interrupt)"


def define_by_run(trial: Any, space: SearchSpace) -> dict | None:
    """OptunaSearch's space: suggest every parameter; an enqueued seed also names itself, and a
    config this study already measured travels with its metrics (the worker records them)."""
    params = suggest(trial, space)
    seed = trial.user_attrs.get("seed_config")
    twin = measured_twin(trial.study, space, params, seed)
    extra = {**({SEED_KEY: seed} if seed else {}), **({REUSE_KEY: json.dumps(twin)} if twin else {})}
    return extra or None


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _reference_task(space_data: dict) -> str:
    return run_trial(SearchSpace.model_validate(space_data), {}, REFERENCE).to_json()


def _make_searcher(**kwargs: Any) -> Any:
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    class RecordingSearch(OptunaSearch):
        """OptunaSearch that records each outcome's attributes and heartbeats running trials."""

        def __init__(self, *, stm_space: SearchSpace, reference: dict, beat: Heartbeat,
                     progress: SearchProgress, budget: int, **kw: Any):
            super().__init__(**kw)
            self._stm = (stm_space, reference, beat, progress)
            self._budget, self.finished_numbers = budget, []

        def suggest(self, trial_id: str) -> dict | str | None:
            with warnings.catch_warnings():  # optuna warns that heartbeats are meant for optimize()
                warnings.simplefilter("ignore", UserWarning)
                params = super().suggest(trial_id)
            if trial_id not in self._ot_trials:
                return params
            ot_trial = self._ot_trials[trial_id]
            if not admitted(self._ot_study, ot_trial.number, self._budget):  # another search filled the study
                withdraw(self._ot_study, ot_trial._trial_id, "the study's budget is full")
                self._completed_trials.add(trial_id)
                return Searcher.FINISHED
            for key, value in owner().items():
                ot_trial.set_user_attr(key, value)
            self._stm[2].add(ot_trial._trial_id)
            return params

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            space, reference, beat, progress = self._stm
            ot_trial = self._ot_trials[trial_id]
            if result and result.get(OUTCOME_KEY):
                outcome = TrialOutcome.from_json(result[OUTCOME_KEY])
            elif error:
                outcome = TrialOutcome(values=None, error=WORKER_DIED)
            else:  # not the trial's fault: does not count against the budget
                outcome = TrialOutcome(values=None, attrs={"interrupted": True}, error=STOPPED)
            tell(self._ot_study, ot_trial, outcome, space, reference)
            if not outcome.attrs.get("interrupted"):
                self.finished_numbers.append(ot_trial.number)
            self._completed_trials.add(trial_id)
            beat.remove(ot_trial._trial_id)
            progress.update()

        def stop_pending(self) -> None:
            """Fail the trials Tune stopped without reporting (time budget): not counted, tried again."""
            reset_connections(self._ot_study._storage)
            for trial_id in set(self._ot_trials) - self._completed_trials:
                self.on_trial_complete(trial_id)

        def __getstate__(self) -> dict:  # Tune pickles its config: leave out the live driver-side helpers
            return {k: v for k, v in self.__dict__.items() if k != "_stm"}

        # the study in SQL storage is the search state: nothing for Tune to checkpoint
        def save(self, checkpoint_path: str) -> None:
            return None

        def restore(self, checkpoint_path: str) -> None:
            return None

    return RecordingSearch(**kwargs)


def recording_search(study: optuna.Study, space: SearchSpace, beat: Heartbeat, progress: Any, budget: int) -> Any:
    """Tune's searcher for ``study``: OptunaSearch on its storage and sampler, recording each outcome."""
    return _make_searcher(
        space=partial(define_by_run, space=space), metric=list(space.objectives),
        mode=["max" if d == "maximize" else "min" for d in space.directions], sampler=study.sampler,
        storage=study._storage, study_name=study.study_name, stm_space=space,
        reference=reference_metrics(study), beat=beat, progress=progress, budget=budget)


def trial_resources(resources: dict, device: str, max_concurrent: int | None) -> tuple[dict, int]:
    """Per-trial Ray resources and concurrency: one GPU each when there are GPUs, else all CPUs.

    Throughput is measured with the device to itself, so CPU trials run one at a time
    unless --max-concurrent says otherwise (they then split the CPUs).
    """
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if gpus and device != "cpu":
        conc = max_concurrent or gpus
        return {"gpu": 1, "cpu": max(1, cpus // gpus)}, conc
    conc = max_concurrent or 1
    return {"cpu": max(1, cpus // conc)}, conc


def run_ray(study: optuna.Study, space: SearchSpace, budget: int, progress: SearchProgress, *,
            deadline: float | None = None, max_concurrent: int | None = None, address: str | None = None,
            runs: Path = Path("runs"), **_: object) -> list[int]:
    """Evaluate the reference on a worker, then trials through Tune until the study holds ``budget``."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    started = not ray.is_initialized()
    if started:
        init_ray(address)
    try:
        per_trial, conc = trial_resources(ray.cluster_resources(), space.device, max_concurrent)
        space_data = space.model_dump(mode="json")
        task = ray.remote(_reference_task).options(num_cpus=per_trial["cpu"], num_gpus=per_trial.get("gpu", 0))
        mine = start_study(study, space, lambda: TrialOutcome.from_json(ray.get(task.remote(space_data))))
        progress.update()
        remaining = budget - len(finished(study))  # at most; admission decides under concurrent searches
        if remaining <= 0:
            return mine
        with Heartbeat(study._storage) as beat:
            searcher = recording_search(study, space, beat, progress, budget)
            trainable = tune.with_resources(tune.with_parameters(ray_trial, space_data=space_data), per_trial)
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=conc),
                                            num_samples=remaining, reuse_actors=True,
                                            time_budget_s=max(1.0, deadline - time.monotonic()) if deadline else None,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=study.study_name, storage_path=str(runs.resolve() / "ray"),
                                          verbose=0, failure_config=tune.FailureConfig(max_failures=0)))
            try:
                tuner.fit()
            finally:
                searcher.stop_pending()
        return mine + searcher.finished_numbers
    finally:
        if started:
            ray.shutdown()
