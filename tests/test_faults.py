"""Bad input and broken environments: one-line errors, non-zero exits, nothing created or lost.

Storage faults (a folder that cannot be written, a file that is not a database, a folder as the
database, a URL that does not parse, a server that does not answer), unwritable outputs, binary
input files, and values that used to be accepted silently.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner

import stmsearch
from stmsearch.cli.dashboard import dashboard_cmd
from stmsearch.cli.evaluate import eval_cmd
from stmsearch.cli.export import export_cmd
from stmsearch.cli.search import search_cmd
from stmsearch.cli.verify import verify_cmd
from stmsearch.database import StorageError, open_existing, open_storage, rdb_of, redact, set_finished_trial_attr
from stmsearch.models import CheckpointError
from stmsearch.search import SpaceError, load_space
from test_search_run import TESTS, write_space

UNWRITABLE = "/proc/stmsearch-no-such-dir"  # not even root can make a folder in /proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bad_urls(tmp_path: Path) -> dict[str, tuple[str, str, str]]:
    """name -> (storage URL, what the search's one-line error says, what a reader's says)."""
    garbage = tmp_path / "notes.db"
    garbage.write_text("these are my notes, not a database\n" * 10)
    folder = tmp_path / "folder.db"
    folder.mkdir()
    return {
        "missing folder": (f"sqlite:///{UNWRITABLE}/s.db", "does not exist", "no such database file"),
        "read-only folder": ("sqlite:////proc/stmsearch.db", "unable to open database file", "no such database file"),
        "not a database": (f"sqlite:///{garbage}", "not a SQLite database", "not a SQLite database"),
        "folder as database": (f"sqlite:///{folder}", "is a folder", "is a folder"),
        "no URL at all": ("runs/demo.db", "not a database URL", "not a database URL"),
        "unknown dialect": ("nosuchdb://host/x", "cannot open the study database", "cannot open the study database"),
        "unreachable server": (f"postgresql://me:secret@127.0.0.1:{_free_port()}/x", "cannot open the study database",
                               "cannot open the study database"),
    }


def _one_line_error(result) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize("case", ["missing folder", "read-only folder", "not a database", "folder as database",
                                  "no URL at all", "unknown dialect", "unreachable server"])
def test_storage_faults_are_one_line_for_every_command(tmp_path, case):
    url, search_says, reader_says = bad_urls(tmp_path)[case]
    space = write_space(tmp_path)
    runner = CliRunner()
    for cmd, args in ((search_cmd, [str(space), "--storage", url, "--executor", "local", "--no-progress",
                                    "--out", str(tmp_path / "runs")]),
                      (dashboard_cmd, ["--storage", url, "--study", "s", "--out", str(tmp_path / "d.html")]),
                      (export_cmd, ["--storage", url, "--study", "s", "--out", str(tmp_path / "x")]),
                      (verify_cmd, ["--storage", url, "--study", "s"])):
        line = _one_line_error(runner.invoke(cmd, args))
        assert (search_says if cmd is search_cmd else reader_says) in line, (cmd.name, line)
        assert "secret" not in line  # passwords never printed


def test_readers_never_create_a_database_from_a_typo(tmp_path, stm_study, storage_url):
    typo = tmp_path / "studeis.db"
    for cmd, args in ((dashboard_cmd, ["--out", str(tmp_path / "d.html")]), (export_cmd, ["--out", str(tmp_path / "x")]),
                      (verify_cmd, [])):
        line = _one_line_error(CliRunner().invoke(cmd, ["--storage", f"sqlite:///{typo}", "--study", "stm-proxy",
                                                        *args]))
        assert "no such database file" in line
    assert not typo.exists()
    with pytest.raises(StorageError):
        open_existing(f"sqlite:///{typo}")
    assert open_existing(storage_url) is not None  # the real one opens


def test_redact_hides_passwords():
    assert redact("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("sqlite:///a.db") == "sqlite:///a.db"


@pytest.mark.parametrize("command", ["search", "export", "dashboard"])
def test_unwritable_out_is_one_line(tmp_path, stm_study, storage_url, command):
    out = f"{UNWRITABLE}/out"
    if command == "search":
        result = CliRunner().invoke(search_cmd, [str(write_space(tmp_path)), "--executor", "local", "--no-progress",
                                                 "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", out])
    elif command == "export":
        result = CliRunner().invoke(export_cmd, ["--storage", storage_url, "--study", "stm-proxy", "--unverified",
                                                 "--out", out])
    else:
        result = CliRunner().invoke(dashboard_cmd, ["--storage", storage_url, "--study", "stm-proxy",
                                                    "--out", f"{out}/d.html"])
    assert UNWRITABLE in _one_line_error(result)


def test_a_search_with_an_unwritable_out_stores_nothing(tmp_path):
    db = tmp_path / "s.db"
    CliRunner().invoke(search_cmd, [str(write_space(tmp_path)), "--executor", "local", "--no-progress",
                                    "--storage", f"sqlite:///{db}", "--out", f"{UNWRITABLE}/out"])
    assert not db.exists()  # refused before the study was made


# --- input files ----------------------------------------------------------------------------------

def test_binary_space_and_config_files_name_the_file(tmp_path):
    binary = tmp_path / "space.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    line = _one_line_error(CliRunner().invoke(search_cmd, [str(binary), "--executor", "local"]))
    assert str(binary) in line and "not a UTF-8 text" in line
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(b"\xff\xfe{\x00\"\x00")
    with pytest.raises(stmsearch.ConfigError, match=f"{cfg}: not a UTF-8 text config file"):
        stmsearch.load_config(cfg)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("method: stm  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(stmsearch.ConfigError, match="latin.yaml: not a UTF-8"):
        stmsearch.load_config(latin)


def test_capacity_errors_name_the_config_file(tmp_path):
    cfg = tmp_path / "greedy.yaml"
    cfg.write_text("method: stm\nschedule: [0, 150]\n")
    with pytest.raises(stmsearch.ConfigError, match=r"greedy.yaml: schedule\[1\]: asks to remove 150"):
        stmsearch.apply(stmsearch.create_model("vim_proxy"), stmsearch.load_config(cfg))
    line = _one_line_error(CliRunner().invoke(eval_cmd, ["--model", "vim_proxy", "--dataset", "mnist5k", "--limit", "2",
                                                         "--config", str(cfg), "--device", "cpu"]))
    assert "greedy.yaml: schedule[1]" in line


def test_schedule_entries_must_be_integers(tmp_path):
    for bad, index in (("[true, 8]", 0), ("[1.5, 8]", 0), ("[0, '8']", 1)):
        path = tmp_path / "cfg.yaml"
        path.write_text(f"method: stm\nschedule: {bad}\n")
        with pytest.raises(stmsearch.ConfigError) as err:
            stmsearch.load_config(path)
        assert str(err.value) == f"{path}: schedule[{index}]: Input should be a valid integer"
    stmsearch.MergeConfig(schedule=[0, 8])


def test_non_finite_checkpoint_weights_are_refused(tmp_path):
    model = stmsearch.create_model("vim_proxy", pretrained=False)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["layers.3.mixer.A_log"][0, 0] = float("nan")
    torch.save({"model": sd}, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"nan.pt: non-finite weights \(NaN or inf\) in layers.3.mixer.A_log"):
        stmsearch.create_model("vim_proxy", checkpoint=tmp_path / "nan.pt")


def test_count_ranges_beyond_any_layer_are_refused(tmp_path):
    space = write_space(tmp_path, schedule={"form": "parametric", "count": {"type": "int", "low": 2, "high": 410}})
    with pytest.raises(SpaceError, match=r"schedule.count: 410 tokens in one layer is more than vim_proxy can remove "
                                         r"\(\d+ at most"):
        load_space(space)
    free = write_space(tmp_path, schedule={"form": "free", "layers": [1, 2], "max_per_layer": 500})
    with pytest.raises(SpaceError, match="schedule.max_per_layer: 500 tokens"):
        load_space(free)


def test_an_invalid_device_fails_before_any_study_exists(tmp_path):
    db = tmp_path / "s.db"
    space = write_space(tmp_path, device="gpu0")
    line = _one_line_error(CliRunner().invoke(search_cmd, [str(space), "--storage", f"sqlite:///{db}",
                                                           "--executor", "local"]))
    assert "device" in line
    ok = write_space(tmp_path)
    result = CliRunner().invoke(search_cmd, [str(ok), "--storage", f"sqlite:///{db}", "--executor", "local",
                                             "--device", "tpu"])
    assert result.exit_code != 0 and "--device: device" in result.output
    assert not db.exists()


# --- concurrent searches and killed trials ---------------------------------------------------------

def _launch(space: Path, url: str, study: str, runs: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "STMSEARCH_FAKE_SLEEP": "0.2"}
    return subprocess.Popen([sys.executable, "-m", "stmsearch.cli", "search", str(space), "--storage", url,
                             "--study", study, "--executor", "local", "--no-progress", "--no-verify",
                             "--out", str(runs)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def check_two_searches_share_one_study(tmp_path: Path, url: str, study: str) -> None:
    space = write_space(tmp_path, budget={"trials": 8})
    procs = [_launch(space, url, study, tmp_path / f"runs{i}") for i in range(2)]  # started together
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = optuna.load_study(study_name=study, storage=url).trials
    counted = [t for t in trials if not t.user_attrs.get("interrupted")]
    assert len(counted) == 8, [(t.number, t.state, t.user_attrs.get("error")) for t in trials]
    refs = [t for t in counted if t.user_attrs.get("is_reference")]
    assert len(refs) == 1 and refs[0].state.name == "COMPLETE"
    assert sum(t.user_attrs.get("seed_config") == "hand" for t in counted) == 1
    # each process reports the trials it finished itself, and together they are all of them
    ran = [int(o.split(" finished by this run")[0].rsplit("; ", 1)[1]) for o in outs]
    assert sum(ran) == 8 and all(n >= 1 for n in ran), outs


OPEN_ONE = "import sys; from stmsearch.database import open_storage; open_storage(sys.argv[1])"


def test_processes_creating_one_new_database_together_all_open_it(tmp_path):
    """Two searches started at once both create optuna's tables; neither may fail on the other's rows."""
    for attempt in range(4):  # the race is lost about every second time without the retry
        url = f"sqlite:///{tmp_path}/new{attempt}.db"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_ONE, url], stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], errors
    storage = open_existing(url)
    assert storage.get_all_studies() == []


def test_two_searches_on_one_sqlite_study(tmp_path):
    check_two_searches_share_one_study(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}", "shared")


def test_two_searches_on_one_postgresql_study(tmp_path, postgres_url):
    name = f"shared-{uuid.uuid4().hex[:8]}"
    try:
        check_two_searches_share_one_study(tmp_path, postgres_url, name)
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)


def test_a_trial_of_a_dead_process_is_reaped_at_once(tmp_path):
    """Killed moments ago, its heartbeat is still fresh: the process is gone, so its trial is not kept."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    space = write_space(tmp_path, budget={"trials": 3})
    first = stmsearch.search.run_search(load_space(space), space, trials=2, executor="local", storage_url=url,
                                        runs=tmp_path / "runs", progress=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage = open_storage(url)
    study = optuna.load_study(study_name=first.study_name, storage=storage)
    orphan = study.ask()
    storage.record_heartbeat(orphan._trial_id)
    for key, value in {"host": __import__("platform").node(), "pid": dead.pid, "pid_start": None}.items():
        orphan.set_user_attr(key, value)
    again = stmsearch.search.run_search(load_space(space), space, trials=3, executor="local", storage_url=url,
                                        runs=tmp_path / "runs", progress=False)
    assert again.reaped == 1
    trial = optuna.load_study(study_name=first.study_name, storage=url).trials[orphan.number]
    assert trial.state.name == "FAIL" and trial.user_attrs["interrupted"]


def test_ctrl_c_under_ray_exits_130_and_the_search_resumes(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    space = write_space(tmp_path, budget={"trials": 30})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "STMSEARCH_FAKE_SLEEP": "1.0"}
    # SIGINT as a terminal leaves it: pytest started in the background by a non-interactive shell inherits it
    # ignored, Python then never raises KeyboardInterrupt, and the search ran to its end (rc 0)
    proc = subprocess.Popen([sys.executable, "-m", "stmsearch.cli", "search", str(space), "--storage", url,
                             "--no-progress", "--no-verify", "--out", str(tmp_path / "runs")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    done = 0
    while time.monotonic() < deadline and done < 3 and proc.poll() is None:
        time.sleep(1)
        try:
            study = optuna.load_study(study_name=_study_name(space), storage=url)
            done = sum(t.state.name == "COMPLETE" for t in study.trials)
        except KeyError:  # the study is not created yet
            continue
    assert done >= 3, proc.communicate(timeout=60)[0][-3000:]
    proc.send_signal(2)  # SIGINT, as Ctrl-C sends
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted; run the same command again to resume" in out and "Tuner.restore" not in out
    assert "Pareto front of" not in out  # no table as if the search had finished
    study = optuna.load_study(study_name=_study_name(space), storage=url)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    assert 3 <= len([t for t in study.trials if t.state.name == "COMPLETE"]) < 30


def _study_name(space: Path) -> str:
    from stmsearch.search.storage import study_name

    return study_name(space, load_space(space))


# --- the Pareto table ------------------------------------------------------------------------------

def test_pareto_table_fits_80_columns_with_long_free_schedules(tmp_path, storage_url):
    from rich.console import Console

    from stmsearch.results.records import load_study_data
    from stmsearch.results.table import pareto_table, schedule_text
    from study_factory import make_study

    study = make_study(storage_url, "wide", "stm", seed=3)
    long = {"method": "stm", "schedule": [0, 0, 0, 0, 0] + [12] * 17 + [0, 0], "window": 0, "runs": 3,
            "fading": "layer", "metric": "x"}
    assert schedule_text(long) == "L5-21, 204 tok"
    for t in study.trials:  # every merge trial gets the long free-form schedule and every knob changed
        if t.state.name == "COMPLETE" and not t.user_attrs["is_reference"]:
            set_finished_trial_attr(study._storage, t._trial_id, "config", long)
    console = Console(width=80, record=True, file=open(os.devnull, "w"))
    console.print(pareto_table(load_study_data(storage_url, "wide")))
    text = console.export_text()
    assert "L5-21, 204 tok" in text and max(len(line) for line in text.splitlines()) <= 80
    assert all(head in text for head in ("acc %", "img/s", "MACs", "schedule"))  # no column cut to a letter


@contextlib.contextmanager
def _ctrl_c_in_next_commit():
    """Ctrl-C where it hurts most: inside SQLAlchemy's commit, before the database commits (the
    connection goes back to the pool with its transaction open, holding SQLite's write lock). Yields
    ``arm(storage)``: the storage's next commit is interrupted, and the next write after it takes
    another pooled connection (as a search's heartbeat thread makes happen by chance)."""
    from sqlalchemy.engine.base import Connection

    real, armed = Connection._commit_impl, []

    def arm(storage) -> None:
        engine = rdb_of(storage).engine
        with engine.connect(), engine.connect():  # two idle connections, taken in turn
            pass
        armed.append(True)

    def commit(self, *args, **kwargs):
        if armed:
            armed.clear()
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Connection, "_commit_impl", commit)
        yield arm


def _interrupted_trial(url: str, name: str, number: int) -> optuna.trial.FrozenTrial:
    study = optuna.load_study(study_name=name, storage=url)
    assert not [t.number for t in study.trials if t.state.name == "RUNNING"]
    trial = study.trials[number]
    assert trial.state.name == "FAIL" and trial.user_attrs["interrupted"], (trial.state, trial.user_attrs)
    return trial


def test_ctrl_c_inside_a_commit_still_fails_the_local_trial(tmp_path, monkeypatch):
    import stmsearch.search.local as local

    # no heartbeat thread: its next beat, on the locked connection, would commit it by chance
    monkeypatch.setattr("stmsearch.search.record._interval", lambda storage: None)

    space = write_space(tmp_path, budget={"trials": 4})
    url = f"sqlite:///{tmp_path / 's.db'}"

    with _ctrl_c_in_next_commit() as arm:
        def tell(study, trial, *args, **kwargs):
            if trial.number == 2:
                arm(study._storage)
            return real_tell(study, trial, *args, **kwargs)

        real_tell = local.tell
        monkeypatch.setattr(local, "tell", tell)
        with pytest.raises(KeyboardInterrupt):
            stmsearch.search.run_search(load_space(space), space, executor="local", storage_url=url,
                                        runs=tmp_path / "runs", progress=False)
    _interrupted_trial(url, _study_name(space), 2)


def test_ctrl_c_inside_a_commit_still_fails_the_ray_trial(tmp_path):
    """Tune's searcher fails the trials it did not finish (stop_pending) after Ctrl-C hit a commit."""
    pytest.importorskip("ray", reason="the ray executor's searcher needs ray (installed by the [dev] extra)")
    from stmsearch.search.ray_executor import recording_search
    from stmsearch.search.record import Heartbeat

    space_path = write_space(tmp_path, budget={"trials": 4})
    space, url = load_space(space_path), f"sqlite:///{tmp_path / 's.db'}"
    first = stmsearch.search.run_search(space, space_path, trials=1, executor="local", storage_url=url,
                                        runs=tmp_path / "runs", progress=False)
    study = optuna.load_study(study_name=first.study_name, storage=open_storage(url, heartbeat_s=None))
    with Heartbeat(study._storage) as beat:  # without a thread: its next beat would commit the lock by chance
        searcher = recording_search(study, space, beat, types.SimpleNamespace(update=lambda: None), budget=4)
        assert isinstance(searcher.suggest("t1"), dict)
        number = searcher._ot_trials["t1"].number
        with _ctrl_c_in_next_commit() as arm:
            arm(study._storage)
            with pytest.raises(KeyboardInterrupt):
                searcher.on_trial_complete("t1")  # as Tune reports a trial it stopped
            searcher.stop_pending()
    trial = _interrupted_trial(url, first.study_name, number)
    assert "stopped by Tune" in trial.user_attrs["error"]


def test_an_error_raised_by_ctrl_c_ends_the_search_as_ctrl_c_does(tmp_path, monkeypatch):
    """SQLAlchemy turns some interrupted commits into an AssertionError: exit 130 and the resume hint,
    while an error of its own still fails the command."""
    space = write_space(tmp_path)

    def interrupted_commit(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise AssertionError  # as sqlalchemy's `assert not self.is_active`

    def plain_bug(*args, **kwargs):
        raise AssertionError

    for run, code in ((interrupted_commit, 130), (plain_bug, 1)):
        monkeypatch.setattr("stmsearch.cli.search.run_search", run)
        result = CliRunner().invoke(search_cmd, [str(space), "--out", str(tmp_path / "runs"), "--no-progress"])
        assert result.exit_code == code, result.output
        assert ("run the same command again to resume" in result.output) == (code == 130)
