"""The driver's side of a trial: outcome -> trial attributes, feasibility, tell; study upkeep.

Every completed trial is told to the SQL storage the moment it lands, so a killed search
loses nothing finished. Trials orphaned by a killed search are failed on the next run.
"""
from __future__ import annotations

import os
import platform
import threading
from typing import Any

import optuna
from optuna.trial import TrialState

from .objective import TrialOutcome, trial_config
from .ladder import warm_start
from .params import distributions, project, reference_params, seed_config
from .space import REFERENCE, Constraints, SearchSpace

INTERRUPTED = "interrupted: the search running this trial stopped (killed?) before it finished"


def constraint_values(metrics: dict, constraints: Constraints, speedup: float | None) -> dict[str, float]:
    """Optuna-style constraint values (<= 0 is satisfied), one per set constraint."""
    out = {}
    if constraints.min_accuracy is not None:
        out["min_accuracy"] = constraints.min_accuracy - float(metrics.get("accuracy", 0.0))
    if constraints.max_flops is not None:
        out["max_flops"] = (float(metrics.get("flops", 0.0)) - constraints.max_flops) / constraints.max_flops
    if constraints.min_speedup is not None:
        out["min_speedup"] = constraints.min_speedup - (speedup if speedup is not None else 0.0)
    return out


def _measured_speedup(metrics: dict, reference: dict | None) -> float | None:
    """Throughput over the reference trial's (the ``measured`` estimator: each timed alone)."""
    ref_thr, thr = (reference or {}).get("throughput"), metrics.get("throughput")
    return thr / ref_thr if thr and ref_thr else None


def final_attrs(outcome: TrialOutcome, space: SearchSpace, reference: dict | None) -> dict:
    """The outcome's attributes plus error, or speed-up and feasibility against the reference."""
    attrs = dict(outcome.attrs)
    if outcome.error is not None:
        attrs["error"] = outcome.error
        return attrs
    metrics = attrs["metrics"]
    speedup = 1.0 if attrs.get("is_reference") else metrics.get("speedup") or _measured_speedup(metrics, reference)
    cons = constraint_values(metrics, space.constraints, speedup)
    attrs.update(speedup=speedup, constraint_values=cons, feasible=all(c <= 0 for c in cons.values()))
    return attrs


def tell(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome, space: SearchSpace,
         reference: dict | None) -> optuna.trial.FrozenTrial:
    """Write the attributes and constraints, then complete or fail the trial."""
    attrs = final_attrs(outcome, space, reference)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if hasattr(trial, "set_constraint"):  # optuna >= 5; older ones read constraint_values on tell
        for key, value in attrs.get("constraint_values", {}).items():
            trial.set_constraint(key, value)
    if outcome.error is not None:
        return study.tell(trial, state=TrialState.FAIL)
    return study.tell(trial, [outcome.values[o] for o in space.objectives])


def owner() -> dict[str, Any]:
    """Who runs a trial: host, pid and that process's start time (so a reused pid is not mistaken for it)."""
    return {"host": platform.node(), "pid": os.getpid(), "pid_start": _process_start(os.getpid())}


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def owner_gone(attrs: dict) -> bool:
    """True if ``attrs`` name a process on this host that no longer runs (its trial is orphaned)."""
    if attrs.get("host") != platform.node() or not isinstance(attrs.get("pid"), int):
        return False
    pid = attrs["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it runs, as another user
    start = attrs.get("pid_start")
    return start is not None and _process_start(pid) not in (None, start)


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``, owned by this process from the write that creates the trial: a search killed
    between asking and recording its owner would leave a RUNNING trial the next search cannot reap at once
    (no owner; never, if it died before its first heartbeat), counted against the budget meanwhile. A waiting
    (enqueued) trial is owned one write after it is taken."""
    study._thread_local.cached_all_trials = None  # as Study.ask: sync with the storage once per trial
    trial_id = study._pop_waiting_trial_id()
    if trial_id is None:
        return _owned_trial(study, {})
    trial = optuna.Trial(study, trial_id)
    for key, value in owner().items():
        trial.set_user_attr(key, value)
    return trial


def _owned_trial(study: optuna.Study, user_attrs: dict, **fields: Any) -> optuna.Trial:
    """A new RUNNING trial owned by this process from the write that creates it (``fields``: create_trial's)."""
    template = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs={**user_attrs, **owner()}, **fields)
    return optuna.Trial(study, study._storage.create_new_trial(study._study_id, template_trial=template))


def new_running_trial(study: optuna.Study, space: SearchSpace, user_attrs: dict) -> optuna.Trial:
    """A RUNNING trial at the least-reduction parameters (the reference's), owned by this process."""
    return _owned_trial(study, user_attrs, params=reference_params(space), distributions=distributions(space))


def claim_reference(study: optuna.Study, space: SearchSpace) -> optuna.Trial | None:
    """Stand for evaluating the study's reference: the lowest-numbered live claim wins.

    Trial numbers are handed out atomically by the database, so when several searches start on
    one study at once exactly one of them evaluates the reference. Returns the claim trial to
    evaluate, or None when another search's claim came first (ours is withdrawn: not counted).
    """
    mine = new_running_trial(study, space, {"seed_config": REFERENCE, "is_reference": True, "reference_claim": True})
    claims = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
              if t.user_attrs.get("reference_claim") and not t.user_attrs.get("interrupted")]
    if min(t.number for t in claims) == mine.number:
        return mine
    withdraw(study, mine._trial_id, "another search on this study claimed the reference first")
    return None


def withdraw(study: optuna.Study, trial_id: int, why: str) -> None:
    """Fail a trial that was never evaluated; it does not count against the budget."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial_id, "error", f"withdrawn: {why}")
        storage.set_trial_user_attr(trial_id, "interrupted", True)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count against the budget: finished by their own result, or running now."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL,
                                                                 TrialState.RUNNING))
            if not t.user_attrs.get("interrupted")]


def admitted(study: optuna.Study, number: int, budget: int) -> bool:
    """Whether trial ``number`` fits the study's budget: fewer than ``budget`` counted trials are
    numbered below it. Numbers are atomic, so concurrent searches on one study never overrun it."""
    return sum(t.number < number for t in counted(study)) < budget


def reference_metrics(study: optuna.Study) -> dict | None:
    """Metrics of the study's completed reference trial, if any."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("is_reference"):
            return t.user_attrs.get("metrics")
    return None


def measured_twin(study: optuna.Study, space: SearchSpace, params: dict, seed: str | None) -> dict | None:
    """{number, metrics} of a completed trial of this study that evaluated the same config, if any."""
    try:
        config = trial_config(space, params, seed)[0].to_dict()
    except Exception:  # noqa: BLE001 - a config that cannot be built fails in run_trial, with its error
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("config") == config and "metrics" in t.user_attrs:
            return {"number": t.number, "metrics": t.user_attrs["metrics"]}
    return None


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count against the budget: completed, or failed by their own error."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
            if not t.user_attrs.get("interrupted")]


def _interval(storage: Any) -> int | None:
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if get is not None else None


def reap_stale(study: optuna.Study) -> int:
    """Fail RUNNING trials whose search is gone: their heartbeat stopped, or the process that ran
    them on this host no longer exists (killed moments ago, within the heartbeat's grace). Returns how many."""
    storage = study._storage  # optuna wraps RDBStorage in a cache that forwards heartbeats
    stale = set(storage._get_stale_trial_ids(study._study_id)) \
        if hasattr(storage, "_get_stale_trial_ids") and _interval(storage) else set()
    stale |= {t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
              if owner_gone(t.user_attrs)}
    n = 0
    for trial_id in stale:
        try:
            storage.set_trial_user_attr(trial_id, "error", INTERRUPTED)
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            n += bool(storage.set_trial_state_values(trial_id, state=TrialState.FAIL))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another search reaped it first
    return n


def enqueue_seeds(study: optuna.Study, space: SearchSpace) -> list[str]:
    """Enqueue the space's seed configs (its own, then its ladder's) not yet tried (an interrupted one is tried again)."""
    tried = {t.user_attrs.get("seed_config") for t in study.get_trials(deepcopy=False)
             if not t.user_attrs.get("interrupted")}
    added = []
    for seed in warm_start(space):
        if seed.name not in tried:
            study.enqueue_trial(project(space, seed_config(space, seed.name)), user_attrs={"seed_config": seed.name})
            added.append(seed.name)
    return added


class Heartbeat:
    """Records heartbeats for the trials this process runs, from a background thread."""

    def __init__(self, storage: Any):
        self._storage, self._ids, self._lock = storage, set(), threading.Lock()
        self._stop = threading.Event()
        self._interval = _interval(storage)
        self._thread = threading.Thread(target=self._run, name="stmsearch-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        if self._interval:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def add(self, trial_id: int) -> None:
        if self._interval:
            self._storage.record_heartbeat(trial_id)
        with self._lock:
            self._ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = list(self._ids)
            for trial_id in ids:
                try:
                    self._storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 - a missed beat only delays reaping
                    pass
