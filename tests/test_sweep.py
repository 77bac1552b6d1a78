"""Sweeps: the grid is planned up front, finished runs are skipped, and the local executor (in
process or a process pool) and Ray give bit-identical records, even when a Ray worker is killed
in the middle of a run (its task is retried and resumes from the run's checkpoint)."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from osrbench import checkpoints, cli, engine, ray_cluster, records, sweep

METHODS = ("softmax", "arpl")
SPLITS = (0, 1)
EPOCHS = 2  # a checkpoint every epoch: killed after the first and before the second = mid-run
GRID_ARGS = ["--methods", *METHODS, "--datasets", "digits", "--splits", "0-1", "--epochs", str(EPOCHS),
             "--device", "cpu", "--quiet"]


def _requests(out, methods=METHODS, splits=SPLITS, epochs=EPOCHS, **kw):
    return [engine.RunRequest(method=m, dataset="digits", split=s, seed=0, epochs=epochs, device="cpu", out=out,
                              progress=False, checkpoint_every=1, **kw) for m in methods for s in splits]


def _key(rec):
    return rec.method, rec.dataset, rec.protocol, rec.split, rec.seed


def _assert_same(a, b):
    """Two records of one run are the same result: config, metrics, loss history and every score."""
    assert _key(a) == _key(b)
    for k in ("config_hash", "config", "counts", "metrics", "history"):
        assert getattr(a, k) == getattr(b, k), (k, _key(a))
    sa, sb = np.load(Path(a.dir) / records.SCORES), np.load(Path(b.dir) / records.SCORES)
    assert sorted(sa.files) == sorted(sb.files)
    for name in sa.files:
        assert np.array_equal(sa[name], sb[name]), (name, _key(a))


def _assert_same_records(got, want):
    assert len(got) == len(want)
    want = {_key(r): r for r in want}
    for rec in got:
        _assert_same(rec, want[_key(rec)])


class Events(list):
    def __call__(self, ev):
        self.append(ev)

    def kinds(self, kind):
        return [e for e in self if e.kind == kind]

    @property
    def stats(self):
        (ev,) = self.kinds("summary")
        return ev.info["stats"]


@pytest.fixture(scope="module")
def local_pool(tmp_path_factory):
    """The reference: the grid run by the local executor in a pool of 2 processes."""
    out = tmp_path_factory.mktemp("local")
    events = Events()
    records, failures = sweep.execute(_requests(out), executor="local", jobs=2, on_event=events)
    assert failures == []
    assert len(records) == len(METHODS) * len(SPLITS)
    assert len(events.kinds("start")) == len(records)
    assert {r.threads for r in records} == {r.config["threads"] for r in records} == {1}  # the config default
    return out, records


@pytest.fixture
def local_ray():
    """A local Ray instance as ``sweep --executor ray`` starts one: on the loopback only."""
    ray = pytest.importorskip("ray")
    ray_cluster.start_local(ray, num_cpus=2)
    yield ray
    ray.shutdown()


# --------------------------------------------------------------------------------- local


def test_in_process_equals_process_pool_and_reports_throughput(tmp_path, local_pool):
    _, reference = local_pool
    events = Events()
    reqs = _requests(tmp_path, methods=("softmax",), splits=(1,))
    records, failures = sweep.execute(reqs + reqs, executor="local", jobs=1, on_event=events)  # a duplicate runs once
    assert failures == [] and len(records) == 1
    _assert_same_records(records, [r for r in reference if _key(r) == _key(records[0])])
    s = events.stats
    assert (s.total, s.submitted, s.completed, s.skipped) == (1, 1, 1, 0)
    assert s.images == records[0].counts["train"] * EPOCHS and s.images_per_s > 0
    assert [e.kind for e in events if e.kind != "log"] == ["plan", "start", "done", "summary"]


# ----------------------------------------------------------------------------------- ray


LOOPBACK_IPS = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return []


class SocketWatch(threading.Thread):
    """Collects ``(process name, address, port)`` of every listening TCP socket of the processes
    ``pids()`` names, every 0.1 s until stopped."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids, self.seen, self._stop_event = pids, set(), threading.Event()

    def run(self):
        import psutil

        while not self._stop_event.is_set():
            for pid in self.pids():
                try:
                    proc = psutil.Process(pid)
                    self.seen |= {(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet")
                                  if c.status == psutil.CONN_LISTEN}
                except psutil.Error:
                    pass
            time.sleep(0.1)

    def stop(self):
        self._stop_event.set()
        self.join()

    def beyond_loopback(self):
        return {s for s in self.seen if s[1] not in LOOPBACK_IPS}


@pytest.mark.ray_cluster
def test_a_failing_method_on_a_local_ray_is_reported_not_retried_and_ray_listens_on_the_loopback_only(capsys, tmp_path):
    """``--executor ray`` without ``--address`` starts a Ray instance whose every server (GCS,
    raylet, workers, agents: this process's descendants) listens on the loopback only."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("another test's Ray instance is connected: the sweep would use it instead of starting one")
    argv = ["sweep", "--methods", "softmax", "--datasets", "digits", "--splits", "0", "--epochs", "1", "--device",
            "cpu", "--set", "lr=1.0e+10", "--executor", "ray", "--out", str(tmp_path)]
    watch = SocketWatch(lambda: _descendants(os.getpid()))
    watch.start()
    try:
        assert cli.main(argv) == 1
    finally:
        watch.stop()
    cap = capsys.readouterr()
    assert "1 runs: 0 done already, 1 to run (Ray executor (new local instance on 127.0.0.1 only)" in cap.out
    assert len(re.findall(r"started softmax", cap.out)) == 1 and "restarted" not in cap.out
    assert "FAILED softmax digits/auroc split 0 seed 0" in cap.out and "became nan" in cap.out
    assert "1 run(s) failed:" in cap.err
    assert not list(tmp_path.rglob(records.RESULT))
    assert not ray.is_initialized()  # the sweep stopped the instance it started
    names = {name for name, _, _ in watch.seen}
    assert {"gcs_server", "raylet"} <= names, watch.seen
    assert watch.beyond_loopback() == set(), watch.seen


@pytest.mark.ray_cluster
def test_ray_sweep_with_a_killed_worker_equals_the_local_executor(tmp_path, local_pool, local_ray):
    import psutil

    _, reference = local_pool
    reqs = _requests(tmp_path)
    dirs = {sweep.label(r): engine.plan(r).dir for r in reqs}
    pids: dict[str, int] = {}
    killed: list[str] = []
    stop = threading.Event()

    def on_event(ev):
        events.append(ev)
        if ev.kind in ("start", "retry"):
            pids[ev.label] = ev.info["pid"]

    def killer():  # SIGKILL the worker of up to two runs while they train their second epoch
        while not stop.is_set() and len(killed) < 2:
            for lab, pid in list(pids.items()):
                d = dirs[lab]
                if lab in killed or not (d / checkpoints.CHECKPOINT).exists() or (d / checkpoints.PREVIOUS).exists():
                    continue  # no checkpoint yet, or the second one (written after the last epoch) exists
                proc = psutil.Process(pid)
                assert proc.cmdline()[0].startswith("ray::"), proc.cmdline()  # a Ray worker this test started
                proc.kill()
                killed.append(lab)
                print(f"killed the Ray worker (pid {pid}) of {lab}")
            time.sleep(0.05)

    events = Events()
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        records, failures = sweep.execute(reqs, executor="ray", max_retries=2, on_event=on_event)
    finally:
        stop.set()
        thread.join()
    print(f"{len(killed)} kill(s): {killed}")
    assert killed, "no worker was killed mid-run"
    assert failures == []
    _assert_same_records(records, reference)
    retried = {e.label for e in events.kinds("retry")}
    resumed = {e.label: e.info["epoch"] for e in events.kinds("resume")}
    for lab in killed:
        assert lab in retried
        assert resumed[lab] == 1  # the retried task continued from the first epoch's checkpoint
    s = events.stats
    assert (s.total, s.submitted, s.completed, s.failed, s.skipped) == (4, 4, 4, 0, 0)
    assert s.retries == len(killed)

    # The same sweep again schedules nothing and returns the same records.
    again = Events()
    records2, failures2 = sweep.execute(reqs, executor="ray", on_event=again)
    assert failures2 == []
    assert again.kinds("start") == [] and again.kinds("retry") == []
    assert (again.stats.submitted, again.stats.skipped, again.stats.images) == (0, 4, 0)
    _assert_same_records(records2, reference)


# ------------------------------------------------------------------------------------- cli


def test_cli_rerun_of_a_finished_grid_schedules_nothing(capsys, tmp_path, local_pool):
    out, _ = local_pool
    assert cli.main(["sweep", *GRID_ARGS, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "sweep: 4 runs: 4 done already, 0 to run" in stdout
    assert "started" not in stdout and "throughput" not in stdout
    # The same grid from a YAML file, on Ray: nothing to schedule, so no cluster is needed either.
    grid = tmp_path / "grid.yaml"
    grid.write_text("methods: [softmax, arpl]\ndatasets: digits\nsplits: 0-1\nseeds: [0]\nepochs: 2\n")
    argv = ["sweep", "--grid", str(grid), "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "4 runs: 4 done already, 0 to run" in capsys.readouterr().out
    assert cli.main([*argv, "--splits", "0-2", "--dry-run"]) == 0  # flags win over the file
    stdout = capsys.readouterr().out
    assert "6 runs: 4 done already, 2 to run" in stdout and stdout.count("split 2 seed 0 ->") == 2


def test_cli_threads_is_the_config_key_threads_of_every_run(capsys, tmp_path):
    """``--threads T`` = ``--set threads=T``: the runs' config (and hash, and folder) say T; the
    executor sets no thread count of its own."""
    argv = ["sweep", "--methods", "softmax", "--datasets", "digits", "--splits", "0", "--epochs", "1", "--device",
            "cpu", "--out", str(tmp_path), "--dry-run"]
    dirs = {}
    for extra in ([], ["--threads", "2"], ["--set", "threads=2"], ["--set", "threads=3", "--threads", "2"]):
        assert cli.main([*argv, *extra]) == 0
        out = capsys.readouterr().out
        threads = 1 if not extra else 2
        assert f"this process, {threads} thread(s) per run" in out, out
        dirs[tuple(extra)] = out.split(" -> ")[1].strip()
    (req,) = _requests(tmp_path, methods=("softmax",), splits=(0,), epochs=1, overrides={"threads": 2})
    p = engine.plan(req)
    assert p.config["threads"] == 2
    assert dirs[()] != dirs[("--threads", "2")] == dirs[("--set", "threads=2")] == str(p.dir)
    assert dirs[("--set", "threads=3", "--threads", "2")] == str(p.dir)  # --threads wins


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("osrbench: error: ")
    return err[0]


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--methods", "softmax", "sofmax", "--datasets", "digits"], "unknown method 'sofmax'.*did you mean 'softmax'"),
        (["--methods", "softmax", "--datasets", "digits", "digitz"], "unknown dataset 'digitz'"),
        (["--methods", "softmax", "--datasets", "digits", "--splits", "3-9"], "out of range"),
        (["--methods", "softmax", "--datasets", "digits", "--set", "lr=fast"], "config key 'lr' expects float"),
        (["--methods", "softmax", "--datasets", "digits", "--epochs", "0"], "--epochs must be positive"),
        (["--methods", "softmax", "--datasets", "digits", "cifar10", "--data-root", "{tmp}"],
         "dataset cifar10 is not ready"),
        (["--datasets", "digits"], "no methods"),
        (["--methods", "softmax", "--datasets", "digits", "--jobs", "2", "--executor", "ray"], "--jobs applies to --executor local"),
        (["--methods", "softmax", "--datasets", "digits", "--gpus-per-run", "0.25"], "--gpus-per-run applies to --executor ray"),
        (["--methods", "softmax", "--datasets", "digits", "--grid", "{tmp}/grid.yaml"], "unknown key 'method'"),
        (["--methods", "softmax", "--datasets", "digits", "--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_sweeps_are_one_line_and_exit_2_before_anything_runs(capsys, tmp_path, argv, expect):
    (tmp_path / "grid.yaml").write_text("method: softmax\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert cli.main(["sweep", *argv, "--out", str(tmp_path / "runs")]) == 2
    assert re.search(expect, _err(capsys)), expect
    assert not (tmp_path / "runs").exists()


def test_ray_executor_without_ray_says_how_to_install(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert not sweep.ray_available()
    argv = ["sweep", "--methods", "softmax", "--datasets", "digits", "--executor", "ray", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    assert _err(capsys) == f"osrbench: error: {sweep.RAY_MISSING}"
    assert "pip install 'osrbench[ray]'" in sweep.RAY_MISSING
    with pytest.raises(sweep.SweepError, match="pip install 'osrbench\\[ray\\]'"):
        sweep.execute(_requests(tmp_path), executor="ray")
    assert not list(tmp_path.iterdir())


def test_an_address_where_nothing_listens_is_one_line_at_once(tmp_path):
    """Ray would wait a minute and more; the sweep says at once that nothing listens at the address given."""
    import socket

    ray = pytest.importorskip("ray")
    with socket.socket() as s:  # a loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ray_cluster.RayJoinError, match=rf"^cannot reach the Ray cluster at 127\.0\.0\.1:{port}: "
                                                      "nothing accepts connections there"):
        ray_cluster.connect(ray, f"127.0.0.1:{port}")
    assert time.perf_counter() - t0 < ray_cluster.PROBE_TIMEOUT_S
    # Ray names the interface address it resolved; the line names the one the user gave.
    resolved = ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6390")
    resolved.__cause__ = RuntimeError("Failed to connect to GCS. Last connection error: Traceback ...\n  File")
    assert ray_cluster.join_error(ray, resolved, "127.0.0.1:6390") == (
        "cannot join the Ray cluster at 127.0.0.1:6390: Failed to connect to GCS")
    assert ray_cluster.host_port("[::1]:6379") == ("::1", 6379)
    assert ray_cluster.host_port("auto") is None and ray_cluster.host_port("ray://head:10001") is None


# --------------------------------------------------------------------- failures, local executor

DOOMED = """
import os
import signal

import osrbench
from osrbench_softmax.softmax import DEFAULTS, OPTIONS, RECIPES, Softmax


class Doomed(Softmax):
    \"\"\"Softmax whose process kills itself (SIGKILL, like the OOM killer) in epoch ``die_in_epoch``.\"\"\"

    def train_step(self, phase, images, labels):
        if self.epoch == self.cfg["die_in_epoch"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().train_step(phase, images, labels)


@osrbench.hookimpl
def osrbench_register_methods(register):
    register(osrbench.MethodSpec(name="doomed", factory=Doomed, defaults={**DEFAULTS, "die_in_epoch": -1},
                                 recipes=RECIPES, default_recipe="arpl-release", options=OPTIONS))
"""


@pytest.fixture(scope="module")
def doomed(tmp_path_factory):
    """The method ``doomed``, an installed plugin (a module and its .dist-info on ``sys.path``), so
    that the spawned ``--jobs`` workers load it from its entry point like any plugin."""
    import importlib

    from osrbench import plugins

    site = tmp_path_factory.mktemp("site")
    (site / "osrbench_doomed.py").write_text(DOOMED)
    info = site / "osrbench_doomed-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: osrbench-doomed\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[osrbench]\ndoomed = osrbench_doomed\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))  # spawned workers start with this process's sys.path
        importlib.invalidate_caches()
        plugins.reset()
        assert "doomed" in plugins.get().methods
        yield "doomed"
    importlib.invalidate_caches()
    plugins.reset()


def _failing_requests(out, data_root):
    """A run whose loss becomes NaN (MethodFailed) and one whose data is missing (UserError)."""
    nan = engine.RunRequest(method="softmax", dataset="digits", split=0, seed=0, epochs=1, device="cpu", out=out,
                            progress=False, overrides={"lr": 1.0e10})
    no_data = engine.RunRequest(method="softmax", dataset="mnist", split=0, seed=0, epochs=1, device="cpu", out=out,
                                progress=False, data_root=data_root)
    return [nan, no_data]


def test_a_dead_worker_fails_only_its_own_run_and_the_others_go_on(tmp_path, doomed):
    empty = tmp_path / "no-data"
    empty.mkdir()
    # The reference: in this process, one run after the other; the sweep goes on after a method
    # that fails and after a run error.
    seq = tmp_path / "sequential"
    good = _requests(seq, methods=(doomed,), splits=(0, 2))
    events = Events()
    reference, failures = sweep.execute([good[0], *_failing_requests(seq, empty), good[1]], executor="local",
                                        jobs=1, on_event=events)
    assert sorted(r.split for r in reference) == [0, 2]
    assert [f.kind for f in failures] == ["method", "run"], failures
    assert "became nan" in failures[0].message and "mnist" in failures[1].message
    assert events.stats.completed == 2 and events.stats.failed == 2

    # Two worker processes: split 1 kills its worker in its second epoch, every time it is tried.
    pool = tmp_path / "pool"
    good = _requests(pool, methods=(doomed,), splits=(0, 2))
    (killer,) = _requests(pool, methods=(doomed,), splits=(1,), overrides={"die_in_epoch": 1})
    events = Events()
    records, failures = sweep.execute([good[0], killer, *_failing_requests(pool, empty), good[1]],
                                      executor="local", jobs=2, max_retries=2, on_event=events)
    assert [(f.request.split, f.kind) for f in failures] == [(1, "worker"), (0, "method"), (0, "run")], failures
    assert "its worker process died 3 time(s) (last: killed by SIGKILL" in failures[0].message
    _assert_same_records(records, reference)  # the other runs: as if nothing had happened
    retries = events.kinds("retry")
    assert [(e.request.split, e.info["attempt"]) for e in retries] == [(1, 2), (1, 3)]
    assert "the previous one died (killed by SIGKILL" in retries[0].message
    assert len({e.info["pid"] for e in events.kinds("start") + retries}) >= 3  # new workers replaced the dead
    s = events.stats
    assert (s.total, s.submitted, s.completed, s.failed, s.retries) == (5, 5, 2, 3, 2)
    assert (engine.plan(killer).dir / checkpoints.CHECKPOINT).exists()  # kept for a rerun of the sweep


# ------------------------------------------------------------- a two-node Ray cluster on the loopback

CLUSTER = """
import json
import sys

from ray._private import ray_constants
from ray.cluster_utils import Cluster

assert not ray_constants.ENABLE_RAY_CLUSTER, "started without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0"
node = dict(num_cpus=1, node_ip_address="127.0.0.1", temp_dir=sys.argv[1], object_store_memory=80 * 1024**2)
cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
worker = cluster.add_node(**node)
print(json.dumps({"address": cluster.address, "worker_raylet": worker.all_processes["raylet"][0].process.pid}),
      flush=True)
sys.stdin.read()  # until the test closes this process's stdin
cluster.shutdown()
"""


def _session(sid: int) -> list[int]:
    """The processes of session ``sid`` (the cluster process's own: it started it with a new session)."""
    import psutil

    pids = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                pids.append(proc.pid)
        except OSError:
            pass
    return pids


@pytest.fixture(scope="module")
def loopback_cluster(tmp_path_factory):
    """A head and a worker node (1 CPU each) on 127.0.0.1 with Ray's token authentication, in a
    process of its own session: every process of that session, and only those, is killed at the end.
    Nodes started with `ray start` cannot stay on the loopback (Ray 2.60 swaps 127.0.0.1 for the
    interface address, and a worker node refuses RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), so the nodes
    are ray.cluster_utils.Cluster's: the same GCS, raylets and workers."""
    import secrets
    import select
    import shutil
    import signal
    import subprocess
    import tempfile

    pytest.importorskip("ray")
    temp = Path(tempfile.mkdtemp(prefix="osrray-"))  # short: Ray's socket paths must fit 107 bytes
    script = tmp_path_factory.mktemp("cluster") / "cluster.py"
    script.write_text(CLUSTER)
    env = {**os.environ, ray_cluster.CLUSTER_SWITCH: "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, str(script), str(temp)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 180)
        line = proc.stdout.readline() if ready else ""
        assert line, f"the cluster did not start in 180 s (exit code {proc.poll()})"
        info = json.loads(line)
        info["sid"], info["env"] = proc.pid, env
        yield info
    finally:
        try:
            proc.stdin.close()
            proc.wait(timeout=60)  # cluster.shutdown()
        except (OSError, subprocess.TimeoutExpired):
            pass
        for pid in _session(proc.pid):  # whatever is left of this cluster, by process id
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if proc.poll() is None:
            proc.wait(timeout=10)
        shutil.rmtree(temp, ignore_errors=True)


def _osrbench(argv, env, **kw):
    import subprocess

    return subprocess.run([sys.executable, "-m", "osrbench.cli", *argv], env=env, capture_output=True, text=True,
                          **kw)


@pytest.mark.ray_cluster
def test_joining_a_cluster_with_a_wrong_or_no_token_is_one_line_naming_the_token_and_the_given_address(
        tmp_path, loopback_cluster):
    """The issue's case through the command (no RAY_AUTH_MODE, no token file: exit 2, one line);
    a wrong token through :func:`ray_cluster.connect` alone (a process without torch: quicker)."""
    address = loopback_cluster["address"]
    argv = ["sweep", "--methods", "softmax", "--datasets", "digits", "--splits", "0", "--epochs", "1", "--device",
            "cpu", "--executor", "ray", "--address", address, "--out", str(tmp_path)]
    unset = {k: v for k, v in loopback_cluster["env"].items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    unset["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    res = _osrbench(argv, unset, timeout=180)
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("osrbench: error: ")]
    assert res.returncode == 2 and len(err) == 1, (res.returncode, res.stderr[-2000:])
    assert err[0].startswith(f"osrbench: error: cannot join the Ray cluster at {address}: its token "
                             "authentication failed (Authentication token is missing or incorrect): RAY_AUTH_MODE "
                             "is not 'token' here, so this process sent no token: export RAY_AUTH_MODE=token"), err
    assert "RAY_AUTH_TOKEN" in err[0] and "~/.ray/auth_token" in err[0], err
    assert not list(tmp_path.rglob(records.RESULT))

    import subprocess

    wrong = {**loopback_cluster["env"], "RAY_AUTH_TOKEN": "0" * 64}
    code = ("import ray\nfrom osrbench import ray_cluster\ntry:\n    ray_cluster.connect(ray, %r)\n"
            "except ray_cluster.RayJoinError as exc:\n    print(exc)\n" % address)
    res = subprocess.run([sys.executable, "-c", code], env=wrong, capture_output=True, text=True, timeout=180)
    assert res.stdout.startswith(f"cannot join the Ray cluster at {address}: its token authentication failed ("), \
        (res.stdout, res.stderr[-2000:])
    assert "or not the cluster's: use the head node's" in res.stdout and res.stdout.count("\n") == 1, res.stdout


@pytest.mark.ray_cluster
def test_a_sweep_on_a_two_node_cluster_survives_the_loss_of_its_worker_node(tmp_path, local_pool, loopback_cluster):
    """``osrbench sweep --address 127.0.0.1:PORT`` on the loopback cluster; the worker node is lost
    (its raylet and the workers it started are killed) while a run on it trains its second epoch:
    that run is retried on the head node, resumes from its first epoch's checkpoint, and every
    record equals the local executor's. No socket of the cluster or of the sweep listens beyond the
    loopback."""
    import subprocess

    import psutil

    _, reference = local_pool
    out = tmp_path / "runs"
    argv = [sys.executable, "-m", "osrbench.cli", "sweep", *GRID_ARGS, "--checkpoint-every", "1", "--executor", "ray",
            "--address", loopback_cluster["address"], "--max-retries", "2", "--out", str(out)]
    dirs = {sweep.label(r): engine.plan(r).dir for r in _requests(out)}
    raylet = loopback_cluster["worker_raylet"]
    sweep_proc = subprocess.Popen(argv, env=loopback_cluster["env"], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(sweep_proc.stdout.readline, "")), daemon=True)
    reader.start()
    watch = SocketWatch(lambda: _session(loopback_cluster["sid"]) + _descendants(sweep_proc.pid))
    watch.start()
    killed = None
    try:
        deadline = time.monotonic() + 420
        while sweep_proc.poll() is None and time.monotonic() < deadline:
            for line in list(lines):
                m = re.search(r"started (.+) on \S+ \(pid (\d+)\)", line)
                if killed or not m:
                    continue
                d = dirs[m.group(1)]
                try:
                    on_worker = psutil.Process(int(m.group(2))).ppid() == raylet
                except psutil.Error:
                    continue
                if on_worker and (d / checkpoints.CHECKPOINT).exists() and not (d / checkpoints.PREVIOUS).exists():
                    node = psutil.Process(raylet)  # the worker node is lost mid-run: its raylet and every
                    for proc in [*node.children(recursive=True), node]:  # process it started (this test's)
                        try:
                            proc.kill()
                        except psutil.NoSuchProcess:  # a worker that ended between the listing and the kill
                            pass
                    killed = m.group(1)
            time.sleep(0.05)
        if sweep_proc.poll() is None:
            sweep_proc.kill()
        rc = sweep_proc.wait(timeout=30)
    finally:
        watch.stop()
        if sweep_proc.poll() is None:
            sweep_proc.kill()
    reader.join(timeout=10)
    text = "".join(lines)
    assert killed, f"no run on the worker node was caught mid-run:\n{text[-3000:]}"
    assert rc == 0, text[-3000:]
    assert re.search(rf"{re.escape(killed)}: restarted on \S+ \(pid \d+\), attempt 2", text), text[-3000:]
    assert f"{killed}: resumed from the checkpoint of epoch 1" in text, text[-3000:]
    assert "sweep: 4 runs: 0 done already, 4 completed, 0 failed" in text, text[-3000:]
    got, failures = sweep.execute(_requests(out), executor="local")  # reads the records; trains nothing
    assert failures == []
    _assert_same_records(got, reference)
    names = {name for name, _, _ in watch.seen}
    assert {"gcs_server", "raylet"} <= names, watch.seen
    assert watch.beyond_loopback() == set(), watch.seen
