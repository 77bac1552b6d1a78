"""Training that can be watched: the logger hook's events, and what each built-in logger wrote, read
back with the tool's own reader (TensorBoard's EventAccumulator, MlflowClient on the real local
store, the W&B offline run file parsed with wandb's own protobuf records)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import struct
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from osrbench import engine, loggers, plugins, records, sweep
from osrbench.cli import main
from osrbench.method import MethodSpec
from osrbench.training import lr_at

EPOCHS = 2
TOOLS = ("tensorboard", "mlflow", "wandb")


def _request(out: Path, **kw) -> engine.RunRequest:
    return engine.RunRequest(**{"method": "softmax", "dataset": "digits", "epochs": EPOCHS, "device": "cpu",
                                "out": out, "progress": False, **kw})


@pytest.fixture(autouse=True)
def _local_trackers(monkeypatch, tmp_path_factory):
    """No tracker reaches a server or the home folder: MLflow's default store, W&B offline."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path_factory.mktemp("wandb-home")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(home))


def _available() -> tuple[str, ...]:
    return tuple(t for t in TOOLS if importlib.util.find_spec(t) is not None)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One softmax run on digits, logged by every built-in logger whose package is installed."""
    out = tmp_path_factory.mktemp("logged")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT"):
            mp.delenv(var, raising=False)
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(var, str(out / "wandb-home"))
        plugins.reset()
        rec = engine.run(_request(out, loggers=_available())).record
        plugins.reset()
    return out, rec


def _losses(rec: records.Record) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "epoch"} for row in rec.history]


def _lrs(rec: records.Record) -> list[float]:
    return [lr_at(e, rec.config) for e in range(rec.epochs)]


def _final(rec: records.Record) -> dict[str, float]:
    return {f"eval/{k}": v for k, v in rec.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


# ------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_event_files_hold_every_epochs_loss_terms_and_lr(logged):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install 'osrbench[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, rec = logged
    acc = EventAccumulator(str(rec.dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    losses = _losses(rec)
    assert set(losses[0]) == {"train/loss"}
    for key in losses[0]:
        events = acc.Scalars(key)
        assert [e.step for e in events] == list(range(EPOCHS))
        assert [e.value for e in events] == pytest.approx([row[key] for row in losses], rel=1e-6)
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx(_lrs(rec), rel=1e-6)
    for key, value in _final(rec).items():
        (event,) = acc.Scalars(key)
        assert (event.step, event.value) == (EPOCHS, pytest.approx(value, rel=1e-6))
    assert "config/text_summary" in acc.Tags()["tensors"]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert rec.config_hash in text


# ------------------------------------------------------------------------------------ MLflow


def _mlflow_run(out: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("osrbench")
    return client, client.search_runs([exp.experiment_id])


def test_mlflow_store_holds_the_config_per_epoch_metrics_final_metrics_and_the_record(logged):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'osrbench[mlflow]')")
    out, rec = logged
    client, runs = _mlflow_run(out)
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert run.data.params["config_hash"] == rec.config_hash == run.data.tags["config_hash"]
    assert run.data.params["epochs"] == str(EPOCHS) and json.loads(run.data.params["milestones"]) == rec.config["milestones"]
    assert (run.data.tags["method"], run.data.tags["run_dir"]) == ("softmax", str(rec.dir))
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(e, row["train/loss"]) for e, row in enumerate(_losses(rec))]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "lr")] == _lrs(rec)
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("eval/")} == _final(rec)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["record.json"]
    local = client.download_artifacts(run.info.run_id, "record.json", str(out / "download"))
    assert Path(local).read_text() == (rec.dir / records.RESULT).read_text()
    # the record's copy is no second result.json under --out: reading the runs finds the one record
    assert [r.dir for r in records.iter_records(out, on_error=pytest.fail)] == [rec.dir]


# ------------------------------------------------------------------------------------- W&B


def _wandb_records(path: Path) -> list:
    """The records of a W&B ``.wandb`` file: its LevelDB-style log (a ``:W&B`` header, 32 KiB
    blocks of chunks with a 7-byte header: CRC, length, type FULL/FIRST/MIDDLE/LAST), each record
    one of wandb's own ``wandb_internal_pb2.Record`` protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, chunk, out = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:  # block padding
            pos += left
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = pb.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


def _wandb_log(folder: Path) -> tuple[list[dict], dict, list[str], dict]:
    """(history rows, summary, saved files, config) of the offline runs under ``folder/wandb``."""
    history, summary, files, config = [], {}, [], {}

    def key(item) -> str:
        return item.key or "/".join(item.nested_key)

    for path in sorted((folder / "wandb").glob("offline-run-*/run-*.wandb")):
        for r in _wandb_records(path):
            kind = r.WhichOneof("record_type")
            if kind == "history":
                history.append({key(i): json.loads(i.value_json) for i in r.history.item if not key(i).startswith("_")})
            elif kind == "summary":
                summary.update({key(i): json.loads(i.value_json) for i in r.summary.update})
            elif kind == "files":
                files += [f.path for f in r.files.files]
            elif kind == "run":
                config.update({key(i): json.loads(i.value_json) for i in r.run.config.update})
    return history, summary, files, config


def test_wandb_offline_run_holds_config_per_epoch_metrics_summary_and_the_record(logged):
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install 'osrbench[wandb]')")
    out, rec = logged
    history, summary, files, config = _wandb_log(rec.dir)
    assert [(row["epoch"], row["train/loss"], row["lr"]) for row in history] == [
        (e, row["train/loss"], lr) for e, (row, lr) in enumerate(zip(_losses(rec), _lrs(rec)))]
    assert {k: v for k, v in summary.items() if k.startswith("eval/")} == pytest.approx(_final(rec))
    assert "record.json" in files
    (saved,) = (rec.dir / "wandb").glob("offline-run-*/files/record.json")
    assert saved.read_text() == (rec.dir / records.RESULT).read_text()
    assert config["config_hash"] == rec.config_hash and config["epochs"] == EPOCHS and config["method"] == "softmax"


# --------------------------------------------------------------- the hook: a plugin's logger


@contextmanager
def _installed(dist: str, module: str, source: str) -> Iterator[None]:
    """A fake installed distribution whose ``osrbench`` entry point is ``module`` (no pip)."""
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[osrbench]\n{dist} = {module}\n")
        sys.path.insert(0, str(site))
        importlib.invalidate_caches()
        plugins.reset()
        try:
            yield
        finally:
            sys.path.remove(str(site))
            sys.modules.pop(module, None)
            importlib.invalidate_caches()
            plugins.reset()


RECORDER = """
import osrbench
from osrbench.loggers import Logger, LoggerSpec

EVENTS = []

class Recorder(Logger):
    def on_run_start(self, run):
        EVENTS.append(("start", run))
    def on_epoch_end(self, epoch, losses, lrs):
        EVENTS.append(("epoch", epoch, losses, lrs))
    def on_evaluation(self, metrics):
        EVENTS.append(("evaluation", metrics))
    def on_run_end(self, record, artifacts):
        EVENTS.append(("end", record, artifacts))
    def on_failure(self, error):
        EVENTS.append(("failure", error))

class Raiser(Logger):
    def on_epoch_end(self, epoch, losses, lrs):
        raise ValueError(f"tracker down in epoch {epoch}")
    def on_run_end(self, record, artifacts):
        raise OSError("disk full")

@osrbench.hookimpl
def osrbench_register_loggers(register):
    register(LoggerSpec(name="recorder", factory=Recorder))
    register(LoggerSpec(name="raiser", factory=Raiser))
    register(LoggerSpec(name="needs-extra", factory=Recorder, requires=("osrbench_no_such_module",),
                        extra="osrbench-needs-extra"))
"""


def _events() -> list:
    return sys.modules["recorder_mod"].EVENTS


def test_a_plugin_logger_receives_every_event_in_order(tmp_path):
    with _installed("recorder-logger", "recorder_mod", RECORDER):
        rec = engine.run(_request(tmp_path, loggers=("recorder",))).record
        events = _events()
    assert [e[0] for e in events] == ["start", "epoch", "epoch", "evaluation", "end"]
    run = events[0][1]
    assert (run.method, run.dataset, run.protocol, run.split, run.seed) == ("softmax", "digits", "auroc", 0, 0)
    assert (run.config_hash, dict(run.config), run.run_dir, run.log_dir) == (rec.config_hash, rec.config, rec.dir, rec.dir)
    assert (run.epochs, run.start_epoch, run.log_root) == (EPOCHS, 0, tmp_path)
    assert [(e[1], e[2], e[3]) for e in events[1:3]] == [
        (i, row, {"lr": lr}) for i, (row, lr) in enumerate(zip(_losses(rec), _lrs(rec)))]
    assert events[3][1] == rec.metrics
    assert events[4][1] == rec.dir / records.RESULT and events[4][2] == [rec.dir / records.RESULT, rec.dir / records.SCORES]


def test_a_raising_logger_warns_once_and_the_run_ends_with_the_same_record(tmp_path):
    plain = engine.run(_request(tmp_path / "plain")).record
    lines: list[str] = []
    with _installed("recorder-logger", "recorder_mod", RECORDER):
        rec = engine.run(_request(tmp_path / "logged", loggers=("raiser", "recorder")), log=lines.append).record
        events = _events()
    # once, though it raised in both epochs and at the run's end
    assert lines == ["warning: logger 'raiser' failed in on_epoch_end (ValueError: tracker down in epoch 0); "
                     "the run goes on"]
    assert [e[0] for e in events] == ["start", "epoch", "epoch", "evaluation", "end"]  # the next logger got them all
    assert (rec.metrics, rec.history, rec.scores_sha256, rec.config_hash) == (
        plain.metrics, plain.history, plain.scores_sha256, plain.config_hash)


def test_a_failing_run_tells_its_loggers_once_and_nothing_after(tmp_path):
    with _installed("recorder-logger", "recorder_mod", RECORDER):
        reg = plugins.get()
        base = reg.method("softmax")

        def factory():
            method = base.factory()
            step = method.train_step

            def train_step(phase, images, labels):
                if method.epoch == 1:
                    raise RuntimeError("boom in epoch 1")
                return step(phase, images, labels)

            method.train_step = train_step
            return method

        reg.methods["breaks"] = dataclasses.replace(base, name="breaks", factory=factory)
        reg.origin["method:breaks"] = "osrbench"
        with pytest.raises(Exception, match="boom in epoch 1"):
            engine.run(_request(tmp_path, method="breaks", loggers=("recorder",)), reg)
        events = _events()
    assert [e[0] for e in events] == ["start", "epoch", "failure"]
    assert events[2][1].startswith("MethodRaised: ") and "RuntimeError: boom in epoch 1" in events[2][1]


def test_a_resumed_run_logs_from_its_resumed_epoch_on(tmp_path):
    with _installed("recorder-logger", "recorder_mod", RECORDER):
        engine.run(_request(tmp_path, epochs=1, loggers=("recorder",)))
        rec = engine.run(_request(tmp_path, epochs=2, resume="yes", loggers=("recorder",))).record
        events = _events()
    assert [e[0] for e in events] == ["start", "epoch", "evaluation", "end", "start", "epoch", "evaluation", "end"]
    assert (events[4][1].start_epoch, events[5][1]) == (1, 1)  # epoch 0 is not sent again
    assert events[5][2] == _losses(rec)[1]


def test_a_resumed_run_continues_its_tensorboard_mlflow_and_wandb_runs(tmp_path):
    tools = _available()
    if not tools:
        pytest.skip("none of the tensorboard, mlflow and wandb extras is installed")
    engine.run(_request(tmp_path, epochs=1, loggers=tools))
    rec = engine.run(_request(tmp_path, epochs=2, resume="yes", loggers=tools)).record
    if "tensorboard" in tools:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(rec.dir / "tensorboard"), size_guidance={"scalars": 0})
        acc.Reload()
        assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [
            (e, pytest.approx(row["train/loss"], rel=1e-6)) for e, row in enumerate(_losses(rec))]
    if "mlflow" in tools:
        client, runs = _mlflow_run(tmp_path)
        (run,) = runs  # one MLflow run, continued
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert [(m.step, m.value) for m in history] == [(e, row["train/loss"]) for e, row in enumerate(_losses(rec))]
        assert run.info.status == "FINISHED" and run.data.metrics["eval/auroc"] == rec.metrics["auroc"]
    if "wandb" in tools:
        history, _, _, _ = _wandb_log(rec.dir)
        assert [(row["epoch"], row["train/loss"]) for row in history] == [
            (e, row["train/loss"]) for e, row in enumerate(_losses(rec))]
        folders = sorted((rec.dir / "wandb").glob("offline-run-*"))
        assert len(folders) == 2 and len({f.name.rsplit("-", 1)[1] for f in folders}) == 1  # one W&B run id, resumed


def test_log_dir_mirrors_the_run_folders_and_holds_the_mlflow_store(tmp_path):
    p = engine.plan(_request(tmp_path / "out", loggers=(), log_dir=tmp_path / "logs"))
    assert loggers.log_dir_of(p) == tmp_path / "logs" / p.dir.relative_to(tmp_path / "out")
    assert loggers.log_dir_of(engine.plan(_request(tmp_path / "out"))) == p.dir
    from osrbench.loggers import mlflow as mlflow_logger  # imports no mlflow until a run starts

    with _installed("recorder-logger", "recorder_mod", RECORDER):
        engine.run(_request(tmp_path / "out", epochs=1, loggers=("recorder",), log_dir=tmp_path / "logs"))
        run = _events()[0][1]
    assert (run.log_dir, run.log_root) == (loggers.log_dir_of(p), tmp_path / "logs")
    assert mlflow_logger.tracking_uri(run) == f"sqlite:///{tmp_path / 'logs' / 'mlflow.db'}"


def test_packed_runs_log_each_run_separately(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reqs = [_request(tmp_path, split=k, loggers=("tensorboard",)) for k in (0, 1)]
    got, failures = sweep.execute(reqs, jobs=2, pack="yes")
    assert not failures and len(got) == 2
    for rec in got:
        acc = EventAccumulator(str(rec.dir / "tensorboard"), size_guidance={"scalars": 0})
        acc.Reload()
        assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(
            [row["train/loss"] for row in _losses(rec)], rel=1e-6)
    assert got[0].history != got[1].history  # two runs, each its own losses


# ---------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("command", ["run", "compare", "sweep"])
def test_an_unknown_logger_is_one_line_listing_the_valid_ones(tmp_path, capsys, command):
    argv = {"run": ["run", "--method", "softmax", "--dataset", "digits"],
            "compare": ["compare", "softmax", "--dataset", "digits"],
            "sweep": ["sweep", "--methods", "softmax", "--datasets", "digits"]}[command]
    code = main([*argv, "--epochs", "1", "--device", "cpu", "--out", str(tmp_path), "--log", "tensorbord"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["osrbench: error: unknown logger 'tensorbord' for --log (valid: mlflow, tensorboard, "
                                 "wandb); did you mean 'tensorboard'?"]
    assert not list(tmp_path.rglob("*.pt"))


@pytest.mark.parametrize("tool", TOOLS)
def test_a_missing_extra_is_one_line_naming_it_before_any_training(tmp_path, capsys, monkeypatch, tool):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tool else real(name, *a))
    code = main(["run", "--method", "softmax", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                 "--out", str(tmp_path), "--log", tool])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"osrbench: error: --log {tool} needs the {tool!r} package, which is not installed: "
                                 f"pip install 'osrbench[{tool}]'"]
    assert not any(tmp_path.iterdir())  # nothing trained, no run folder


def test_a_plugin_loggers_missing_package_names_what_to_install(tmp_path, capsys):
    with _installed("recorder-logger", "recorder_mod", RECORDER):
        code = main(["run", "--method", "softmax", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                     "--out", str(tmp_path), "--log", "recorder", "--log", "needs-extra"])
    assert code == 2 and capsys.readouterr().err.strip() == (
        "osrbench: error: --log needs-extra needs the 'osrbench_no_such_module' package, which is not installed: "
        "pip install 'osrbench-needs-extra'")


def test_log_names_parse_from_commas_and_repeats():
    assert loggers.parse(["tensorboard,mlflow", " wandb ", "mlflow"]) == ("tensorboard", "mlflow", "wandb")
    assert loggers.parse([]) == loggers.parse(None) == ()


# ------------------------------------------------------------------------------ the progress bar


def test_the_progress_bar_shows_the_epoch_and_the_main_loss():
    assert loggers.progress_postfix(2, 10, {"train/loss": 0.123456, "train/acc": 0.5}) == {
        "epoch": "3/10", "loss": "0.1235"}
    # no term named loss: the first term seen, by its full name
    assert loggers.progress_postfix(0, 5, {"gen/g_adv": 2.5, "dis/d_loss": 1.0}) == {"epoch": "1/5", "gen/g_adv": "2.5"}
    assert loggers.progress_postfix(0, 1, {}) == {"epoch": "1/1"}


def test_learning_rates_are_named_by_optimiser_and_group():
    import torch

    class Two:
        def __init__(self):
            w = [torch.nn.Parameter(torch.zeros(1)) for _ in range(3)]
            self.opt = torch.optim.SGD([w[0]], lr=0.1)
            self.opt_d = torch.optim.SGD([{"params": [w[1]], "lr": 0.2}, {"params": [w[2]], "lr": 0.3}], lr=0.2)

        def optimizers(self):
            return [self.opt, self.opt_d]

    assert loggers.learning_rates(Two()) == {"lr/opt": 0.1, "lr/opt_d.0": 0.2, "lr/opt_d.1": 0.3}


@pytest.mark.slow
def test_runs_in_worker_processes_log_each_run_to_one_mlflow_store(tmp_path):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'osrbench[mlflow]')")
    reqs = [_request(tmp_path, split=k, loggers=("mlflow",)) for k in (0, 1)]
    got, failures = sweep.execute(reqs, jobs=2, pack="no")
    assert not failures and len(got) == 2
    client, runs = _mlflow_run(tmp_path)
    by_dir = {r.data.tags["run_dir"]: r for r in runs}
    assert sorted(by_dir) == sorted(str(rec.dir) for rec in got)  # one MLflow run per osrbench run
    for rec in got:
        history = client.get_metric_history(by_dir[str(rec.dir)].info.run_id, "train/loss")
        assert [m.value for m in history] == [row["train/loss"] for row in _losses(rec)]


def test_the_guides_logger_plugin_example_works(tmp_path):
    # docs/PLUGINS.md's ~15-line logger plugin, installed as is: --log csv writes every epoch's losses.
    guide = (Path(__file__).resolve().parents[1] / "docs" / "PLUGINS.md").read_text()
    section = guide.split("## Shipping a training logger", 1)[1]
    source = section.split("```python\n", 1)[1].split("```", 1)[0]
    with _installed("osrbench-csvlog", "csvlog_mod", source):
        rec = engine.run(_request(tmp_path, loggers=("csv",))).record
    rows = (rec.dir / "losses.csv").read_text().splitlines()
    assert rows == [f"{e},{row['train/loss']},{lr}" for e, (row, lr) in enumerate(zip(_losses(rec), _lrs(rec)))]
