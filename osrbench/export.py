"""One JSON bundle per comparison, for a leaderboard: the library of the ``export`` command.

The bundle holds the metrics, per-split values, paired statistics, config and split hashes and
versions of a comparison, with a content hash; :func:`validate_export` checks one. The command
itself (its flags and what it prints) is in :mod:`osrbench.commands.export`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

from osrbench import compare, results, verify
from osrbench.errors import UserError

#: 2: each method and run names the plugin distribution and version that made it. Version-1
#: bundles (without them) still validate, without the plugin checks.
EXPORT_VERSION = 2


#: The largest file :func:`read_bundle` reads (an export bundle is a few hundred kB).
MAX_BUNDLE_BYTES = 100_000_000


class ExportInvalid(UserError, ValueError):
    """An export bundle that fails :func:`validate_export`; the message lists every problem."""


def read_bundle(path: Path) -> dict[str, Any]:
    """The bundle in ``path``, checked as ``export --validate`` checks it; one :class:`UserError`
    line naming the file otherwise (unreadable, too large, not JSON, or :func:`validate_export`'s
    problems)."""
    try:
        if Path(path).stat().st_size > MAX_BUNDLE_BYTES:
            raise UserError(f"{path}: larger than {MAX_BUNDLE_BYTES:,} bytes, not an export bundle")
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"{path}: cannot read an export bundle ({type(exc).__name__})") from None
    try:
        validate_export(doc)
    except ExportInvalid as exc:
        raise UserError(f"{path}: invalid export: {exc}") from None
    return doc


def export_doc(c: compare.Comparison, unique_splits: bool = False, dropped: Mapping[int, int] | None = None,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The export bundle of a comparison (without its ``sha256``, which :func:`write_export` adds);
    ``extra``: further sections (``intervals``, ``classes``, ``variance``) when compare computed them."""
    import osrbench

    methods = {}
    for m in c.methods:
        recs = sorted(c.records[m], key=lambda r: (r.split, r.seed))
        versions = [r.versions for r in recs]
        g = c.groups[m]
        methods[m] = {
            "config_hash": g.config_hash, "recipe": g.recipe,
            # The one plugin that made every run of this method (compare.build refuses a mix).
            "plugin": {"distribution": g.plugin_distribution, "version": g.plugin_version},
            "config": recs[0].config,
            "metrics": {metric: {"mean": c.summaries[metric][m].mean,
                                 "std": results.json_number(c.summaries[metric][m].std),  # null: one split
                                 "per_split": {str(k): v for k, v in c.summaries[metric][m].per_split.items()},
                                 # what the paired tests paired (one split, several seeds)
                                 **({"per_seed": {str(k): v for k, v in compare.per_seed(c.records[m], metric)
                                                  .get(m, {}).items()}} if c.unit == "seed" else {})}
                        for metric in c.metrics if m in c.summaries[metric]},
            "split_hashes": {str(r.split): r.split_hash for r in recs},
            "versions": versions[0],
            "versions_consistent": all(v == versions[0] for v in versions),
            "runs": [{"split": r.split, "seed": r.seed, "record_sha256": r.sha256,
                      "created": r.created, "device": r.device,
                      "plugin": dict(zip(("distribution", "version"), r.plugin_id)),
                      # osrbench verify rebuilt it from its checkpoint, and its files are unchanged since
                      "verified_from_checkpoint": verify.stamped(r),
                      # included by --allow-unverified: no scores hash, its metrics were not checked
                      **({"unverified": True} if r.unverified else {})}
                     for r in recs],
        }
    return {
        "osrbench_export": EXPORT_VERSION, "dataset": c.dataset, "protocol": c.protocol,
        "splits": c.splits, "seeds": c.seeds, "unique_splits": unique_splits,
        "dropped_duplicate_splits": {str(k): v for k, v in (dropped or {}).items()},
        "aggregation": f"seeds averaged within a split; mean and {compare.std_label(c.ddof)} over splits; fractions",
        "std_ddof": c.ddof, "score": c.score,
        "methods": methods,
        "paired": [p.as_dict() for metric in c.metrics for p in c.pairs.get(metric, [])],
        "paired_tests": {"unit": c.unit,
                         "wilcoxon": f"two-sided exact Wilcoxon signed-rank on per-{c.unit} differences A - B, "
                                     "zero differences dropped",
                         "paired_t": f"two-sided paired t-test, df = {c.unit}s - 1",
                         "holm": "p_*_holm: Holm step-down adjustment over every pair of one metric",
                         "tie_tol": c.tie_tol},
        **(extra or {}),
        "exporter": {"osrbench": osrbench.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_export(path: Path, doc: Mapping[str, Any]) -> dict[str, Any]:
    """Write a bundle atomically with its content hash; returns the bundle as written."""
    results.write_json(Path(path), doc)
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _plugin_problems(name: str, m: Mapping[str, Any]) -> list[str]:
    """A method's ``plugin`` must name a distribution and version, and each of its runs the same one."""
    plugin = m.get("plugin")
    if plugin is None:
        return []  # reported as a missing field
    if not (isinstance(plugin, dict) and all(isinstance(plugin.get(k), str) and plugin.get(k)
                                             for k in ("distribution", "version"))):
        return [f"method {name!r}: plugin must name a distribution and a version"]
    want = (plugin["distribution"], plugin["version"])
    seen = []
    runs = m.get("runs") if isinstance(m.get("runs"), list) else []
    for run in runs:
        got = run.get("plugin") if isinstance(run, dict) else None
        ident = (got.get("distribution"), got.get("version")) if isinstance(got, dict) else None
        if ident != want:
            where = f"split {run.get('split')} seed {run.get('seed')}" if isinstance(run, dict) else "a run"
            seen.append(f"{where}: {compare.plugin_label(*ident) if ident else 'no plugin'}")
    versions = m.get("versions")
    vp = versions.get("plugin") if isinstance(versions, dict) else None
    if isinstance(vp, dict) and (vp.get("distribution"), vp.get("version")) != want:
        seen.append(f"versions: {compare.plugin_label(vp.get('distribution'), vp.get('version'))}")
    if not seen:
        return []
    return [f"method {name!r}: made by plugin {compare.plugin_label(*want)}, but not every run was "
            f"({'; '.join(seen)})"]


def _stamp_problems(name: str, m: Mapping[str, Any]) -> list[str]:
    """A run's ``verified_from_checkpoint`` (absent in bundles before stamps) must be true or false, and
    a run that claims it must name its record's sha256 (what the stamp covered)."""
    runs = m.get("runs") if isinstance(m.get("runs"), list) else []
    problems = []
    for run in runs:
        if not isinstance(run, dict) or "verified_from_checkpoint" not in run:
            continue
        where = f"method {name!r}, split {run.get('split')} seed {run.get('seed')}"
        claim = run["verified_from_checkpoint"]
        if not isinstance(claim, bool):
            problems.append(f"{where}: verified_from_checkpoint must be true or false, not {claim!r}")
        elif claim and not (isinstance(run.get("record_sha256"), str) and len(run["record_sha256"]) == 64):
            problems.append(f"{where}: verified_from_checkpoint without the record's sha256")
    return problems


def validate_export(doc: Any) -> None:
    """Check an export bundle's structure, content hash and internal consistency (:func:`_validate`).

    A bundle edited by hand may hold anything where a field should be: whatever the structure,
    the only exception this raises is :class:`ExportInvalid`.
    """
    try:
        _validate(doc)
    except ExportInvalid:
        raise
    except Exception as exc:  # noqa: BLE001 - a structure the checks did not foresee is still an invalid bundle
        raise ExportInvalid(f"malformed bundle: a field has the wrong structure ({type(exc).__name__}: "
                            f"{str(exc)[:120]})") from None


def _validate(doc: Any) -> None:
    """Check an export bundle's structure, content hash and internal consistency.

    Raises :class:`ExportInvalid` listing every problem: wrong or missing fields, a content hash
    that does not match (the bundle was edited), means / stds that do not follow from the
    per-split values, per-split values on splits the bundle does not list, missing split hashes,
    methods evaluated on different splits under the same split index, or a method whose runs (or
    whose ``versions``) name another plugin distribution or version than its ``plugin``.
    """
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise ExportInvalid("not an osrbench export (not a JSON object)")
    version = doc.get("osrbench_export")
    if version not in (1, EXPORT_VERSION):
        problems.append(f"osrbench_export must be 1 or {EXPORT_VERSION}, got {version!r}")
    body = {k: v for k, v in doc.items() if k != "sha256"}
    if not isinstance(doc.get("sha256"), str) or results.canonical_hash(body, 64) != doc["sha256"]:
        problems.append("content hash (sha256) does not match: the bundle was modified or damaged")
    for key, kind in (("dataset", str), ("protocol", str), ("splits", list), ("seeds", list), ("methods", dict),
                      ("created", str)):
        if not isinstance(doc.get(key), kind):
            problems.append(f"field {key!r} missing or not a {kind.__name__}")
    if problems and any("missing" in p for p in problems):
        raise ExportInvalid("; ".join(problems))
    splits = {str(s) for s in doc["splits"]}
    if not all(isinstance(s, int) for s in doc["splits"] + doc["seeds"]):
        problems.append("splits and seeds must be integers")
    if not doc["methods"]:
        problems.append("no methods")
    ddof = doc.get("std_ddof", 1)  # before std_ddof existed every export was ddof 1
    if ddof not in (0, 1):
        problems.append(f"std_ddof must be 0 or 1, not {ddof!r}")
        ddof = 1
    split_hash_seen: dict[str, tuple[str, str]] = {}
    for name, m in doc["methods"].items():
        if not isinstance(m, dict):
            problems.append(f"method {name!r} is not an object")
            continue
        for key in ("config_hash", "metrics", "split_hashes", "versions", *(("plugin",) if version != 1 else ())):
            if key not in m:
                problems.append(f"method {name!r}: field {key!r} missing")
        if version != 1:
            problems.extend(_plugin_problems(name, m))
        problems.extend(_stamp_problems(name, m))
        if not isinstance(m.get("config_hash"), str) or not m.get("config_hash"):
            problems.append(f"method {name!r}: config_hash must be a non-empty string")
        hashes = m.get("split_hashes") or {}
        if not isinstance(hashes, dict) or not isinstance(m.get("metrics") or {}, dict):
            problems.append(f"method {name!r}: metrics and split_hashes must be objects")
            continue
        for metric, v in (m.get("metrics") or {}).items():
            try:
                per = {str(k): float(x) for k, x in v["per_split"].items()}
                mean = float(v["mean"])
                std = math.nan if v["std"] is None else float(v["std"])  # null: undefined (one split)
            except (KeyError, TypeError, ValueError, AttributeError):
                problems.append(f"method {name!r}, {metric}: needs numeric mean, std and per_split")
                continue
            if not per:
                problems.append(f"method {name!r}, {metric}: no per-split values")
                continue
            extra = sorted(set(per) - splits)
            if extra:
                problems.append(f"method {name!r}, {metric}: values for splits {extra} not in the bundle's splits")
            m2, s2 = results.mean_std(per.values(), ddof)
            same_std = (math.isnan(s2) and math.isnan(std)) or math.isclose(s2, std, rel_tol=1e-9, abs_tol=1e-12)
            if not (math.isclose(m2, mean, rel_tol=1e-9, abs_tol=1e-12) and same_std):
                problems.append(f"method {name!r}, {metric}: mean/std do not follow from the per-split values")
            missing = sorted(set(per) - set(hashes))
            if missing:
                problems.append(f"method {name!r}: no split hash for splits {missing}")
        for split, h in hashes.items():
            if split in split_hash_seen and split_hash_seen[split][0] != h:
                problems.append(f"split {split}: method {name!r} ran on split hash {h}, "
                                f"{split_hash_seen[split][1]!r} on {split_hash_seen[split][0]}")
            split_hash_seen.setdefault(split, (h, name))
    for p in doc.get("paired", []) or []:
        try:
            a, b, metric = doc["methods"][p["a"]], doc["methods"][p["b"]], p["metric"]
            unit = p.get("unit", "split")  # bundles before seed pairing paired splits only
            if unit not in ("split", "seed"):
                raise KeyError(unit)
            pa, pb = a["metrics"][metric][f"per_{unit}"], b["metrics"][metric][f"per_{unit}"]
            for k, d in p[f"per_{unit}_diff"].items():
                if not math.isclose(float(pa[k]) - float(pb[k]), float(d), rel_tol=1e-9, abs_tol=1e-12):
                    problems.append(f"paired {p['a']} - {p['b']}, {metric}: {unit} {k} difference does not match")
        except (KeyError, TypeError, ValueError, AttributeError):
            problems.append("a paired entry names a method, metric or split the bundle lacks")
    if problems:
        raise ExportInvalid("; ".join(problems))
