"""Great Expectations suite for the Hybrid CIFAR-10 splits, run by build_hybrid_splits.

Pixels never go to Great Expectations: we build small pandas tables of per-image metadata
plus derived columns (image hash, shape, Linf and SSIM recomputed against the paired real
image) and let GE check them, each expectation tagged with a check name (``meta.check``):

- ``arrays``: one row per split x required array (schema, dtype, length)
- ``images``: one row per image (labels, is_adv, shape, dtype, target, duplicates)
- ``sources``: one row per (source, split) (leakage: a source in one split only)
- ``adversarial``: one row per AE (pairing, Linf and SSIM against its source)
- ``classes``: one row per split x class (counts as params ask, real/AE and class balance)

Runs in an ephemeral context (nothing written but the Data Docs we ask for), with GX
analytics off and no network use; Data Docs pages reference CDN stylesheets, which a
browser fetches when it can and which the text does not need.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from advhybrid.data.hybrid import HYBRID_KEYS, SPLITS

os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before any import of great_expectations

IMAGE_SHAPE = "32x32x3"
# linf is stored as float32 of an integer/255; a full grey level of slack absorbs any rounding
LINF_TOLERANCE = 1 / 255 + 1e-6
DTYPES = {
    "images": "uint8", "labels": "int64", "is_adv": "uint8", "source_id": "int64",
    "target_model": "int8", "k": "float32", "linf": "float32", "ssim": "float32",
}
REQUIRED = (*HYBRID_KEYS, "linf", "ssim")
# columns GE reports beside each failing row, so a failure names its split, class or source
INDEX_COLUMNS = {"arrays": ["split", "key"], "images": ["split", "source_id"], "sources": ["split"],
                 "adversarial": ["split", "source_id"], "classes": ["split", "class_name"]}


class ValidationFailed(ValueError):
    """The Hybrid CIFAR-10 splits break at least one expectation."""


@dataclass(frozen=True)
class Expectations:
    """What the splits must satisfy, from the `hybrid` params."""

    class_names: Sequence[str]
    n_targets: int
    val_per_class: int
    test_per_class: int
    train_cap: Sequence[int | None]  # per class; None = no cap
    max_linf: float
    min_ssim: float
    ssim_tolerance: float
    balance_tolerance: float

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class ValidationReport:
    checks: list[dict] = field(default_factory=list)  # name, success, observed, table, expectation

    @property
    def success(self) -> bool:
        return all(c["success"] for c in self.checks)

    def failures(self) -> list[dict]:
        return [c for c in self.checks if not c["success"]]

    def to_json(self) -> dict:
        """Keyed by check name, so `dvc metrics diff` lines up checks across revisions."""
        return {"success": self.success, "n_checks": len(self.checks), "n_failed": len(self.failures()),
                "checks": {c["name"]: {k: v for k, v in c.items() if k != "name"} for c in self.checks}}

    def raise_for_failures(self) -> None:
        bad = self.failures()
        if bad:
            lines = [f"  - {c['name']} ({c['table']}: {c['expectation']}): observed {c['observed']}"
                     for c in bad]
            raise ValidationFailed(
                f"Hybrid CIFAR-10 validation failed {len(bad)} of {len(self.checks)} checks:\n"
                + "\n".join(lines)
            )


# --- tables ---------------------------------------------------------------------------------


def _column(a: Mapping[str, np.ndarray], key: str, n: int) -> np.ndarray:
    """a[key] cut/padded to n rows; NaN where the array is missing (the schema check names it)."""
    if key not in a or np.ndim(a[key]) < 1:
        return np.full(n, np.nan)
    v = np.asarray(a[key])[:n]
    return v if len(v) == n else np.concatenate([v, np.full(n - len(v), np.nan)])


def _image_hashes(images: np.ndarray) -> list[str]:
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=12).hexdigest() for row in flat]


def build_tables(
    splits: Mapping[str, Mapping[str, np.ndarray]], expect: Expectations
) -> dict[str, pd.DataFrame]:
    """The five tables the suite checks (see the module docstring)."""
    arrays, images, adversarial = [], [], []
    for s, a in splits.items():
        imgs = np.asarray(a.get("images", np.zeros((0, 32, 32, 3), np.uint8)))
        n = len(imgs) if imgs.ndim else 0
        arrays += [{"split": s, "key": key, "present": key in a,
                    "dtype": str(np.asarray(a[key]).dtype) if key in a else "missing",
                    "length": int(len(a[key])) if key in a and np.ndim(a[key]) else -1,
                    "n_images": n} for key in REQUIRED]
        if n == 0:
            continue
        cols = {key: _column(a, key, n) for key in ("labels", "is_adv", "source_id", "target_model",
                                                      "k", "linf", "ssim")}
        images.append(pd.DataFrame({
            "split": s, **{key: cols[key] for key in ("labels", "is_adv", "source_id", "target_model")},
            "image_shape": "x".join(map(str, imgs.shape[1:])),
            "image_dtype": str(imgs.dtype),
            "image_hash": _image_hashes(imgs),
        }))
        adversarial.append(_adversarial_rows(s, imgs, cols))
    img_df = pd.concat(images, ignore_index=True) if images else pd.DataFrame(
        columns=["split", "labels", "is_adv", "source_id", "target_model", "image_shape",
                 "image_dtype", "image_hash"])
    return {
        "arrays": pd.DataFrame(arrays),
        "images": img_df,
        "sources": img_df[["source_id", "split"]].drop_duplicates().reset_index(drop=True),
        "adversarial": pd.concat(adversarial, ignore_index=True) if adversarial else pd.DataFrame(
            columns=["split", "source_id", "has_real", "linf", "linf_recomputed", "linf_gap",
                     "ssim", "ssim_recomputed", "ssim_gap", "k"]),
        "classes": _class_rows(img_df, expect),
    }


def _adversarial_rows(split: str, imgs: np.ndarray, cols: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per AE: its real partner (same source, is_adv 0) and the Linf recomputed to it."""
    is_adv, sid = cols["is_adv"], cols["source_id"]
    adv, real = np.flatnonzero(is_adv == 1), np.flatnonzero(is_adv == 0)
    order = real[np.argsort(sid[real], kind="stable")]
    pos = np.clip(np.searchsorted(sid[order], sid[adv]), 0, max(len(order) - 1, 0))
    has_real = np.zeros(len(adv), bool) if len(order) == 0 else sid[order][pos] == sid[adv]
    linf, ssim = np.full(len(adv), np.nan), np.full(len(adv), np.nan)
    if has_real.any():
        a_img, r_img = imgs[adv[has_real]], imgs[order[pos[has_real]]]
        diff = a_img.reshape(len(a_img), -1).astype(np.int16) - r_img.reshape(len(r_img), -1)
        linf[has_real] = np.abs(diff).max(axis=1) / 255.0
        if imgs.shape[1:] == (32, 32, 3) and imgs.dtype == np.uint8:  # else the shape check fails
            # the very SSIM generate_adversarial records, on CPU in float32 (no TF32 on CPU)
            from advhybrid.attacks.quality import image_quality

            chunks = range(0, len(a_img), 4096)
            ssim[has_real] = np.concatenate([
                image_quality(a_img[i:i + 4096], r_img[i:i + 4096], "cpu")["ssim"]
                for i in tqdm(chunks, desc=f"recompute SSIM [{split}]", unit="chunk", leave=False)])
    return pd.DataFrame({
        "split": split, "source_id": sid[adv], "has_real": has_real,
        "linf": cols["linf"][adv].astype(np.float64), "linf_recomputed": linf,
        "linf_gap": np.abs(linf - cols["linf"][adv]),
        "ssim": cols["ssim"][adv].astype(np.float64), "ssim_recomputed": ssim,
        "ssim_gap": np.abs(ssim - cols["ssim"][adv]), "k": cols["k"][adv].astype(np.float64),
    })


def _class_rows(img_df: pd.DataFrame, expect: Expectations) -> pd.DataFrame:
    """Counts per split x class (every class listed, zeros too) and what params ask of them."""
    labels = pd.to_numeric(img_df["labels"], errors="coerce")
    asked = {"val": expect.val_per_class, "test": expect.test_per_class}
    rows = []
    for s in SPLITS:
        in_split = img_df["split"] == s
        n_pairs = int((in_split & (img_df["is_adv"] == 1)).sum())
        for c in range(expect.num_classes):  # out-of-range labels fail labels_in_range instead
            sel = in_split & (labels == c)
            n_real = int((sel & (img_df["is_adv"] == 0)).sum())
            n_adv = int((sel & (img_df["is_adv"] == 1)).sum())
            cap = expect.train_cap[c] if s == "train" else None
            rows.append({
                "split": s, "class": c, "n_real": n_real, "n_adv": n_adv,
                "class_name": expect.class_names[c],
                "asked": float(asked[s]) if s in asked else np.nan,
                "cap": float(cap) if cap is not None else np.nan,
                # share of this class relative to a uniform split: 0 = exactly 1/num_classes
                "share_dev": n_adv * expect.num_classes / n_pairs - 1 if n_pairs else -1.0,
            })
    return pd.DataFrame(rows)


# --- the suite --------------------------------------------------------------------------------


def _check(name: str, why: str, expectation: Any) -> Any:
    """Tag an expectation with our check name (results, errors) and why (shown in Data Docs)."""
    expectation.meta = {"check": name}
    expectation.description = f"{name}: {why}"
    return expectation


def expectations(expect: Expectations) -> dict[str, list[Any]]:
    """The suite, as GE expectations per table."""
    import great_expectations.expectations as gxe

    tol = expect.balance_tolerance
    return {
        "arrays": [
            _check("schema_arrays_present", f"every split holds {', '.join(REQUIRED)}",
                   gxe.ExpectColumnValuesToBeInSet(column="present", value_set=[True])),
            _check("schema_dtypes", "each array has its contract dtype",
                   gxe.ExpectColumnPairValuesToBeInSet(
                       column_A="key", column_B="dtype", value_pairs_set=list(DTYPES.items()))),
            _check("schema_lengths_match_images", "one entry per image in every array",
                   gxe.ExpectColumnPairValuesToBeEqual(column_A="length", column_B="n_images")),
        ],
        "images": [
            _check("labels_in_range", f"labels are class indices 0..{expect.num_classes - 1}",
                   gxe.ExpectColumnValuesToBeInSet(
                       column="labels", value_set=list(range(expect.num_classes)))),
            _check("is_adv_binary", "is_adv is 0 (real) or 1 (adversarial)",
                   gxe.ExpectColumnValuesToBeInSet(column="is_adv", value_set=[0, 1])),
            _check("image_shape_32x32x3", "images are 32 x 32 x 3",
                   gxe.ExpectColumnValuesToBeInSet(column="image_shape", value_set=[IMAGE_SHAPE])),
            _check("image_dtype_uint8", "images are uint8",
                   gxe.ExpectColumnValuesToBeInSet(column="image_dtype", value_set=["uint8"])),
            _check("target_model_matches_kind", "real images have target -1, AEs a valid target index",
                   gxe.ExpectColumnPairValuesToBeInSet(
                       column_A="is_adv", column_B="target_model",
                       value_pairs_set=[(0, -1)] + [(1, t) for t in range(expect.n_targets)])),
            _check("one_real_one_adv_per_source", "each source gives at most one real and one AE",
                   gxe.ExpectCompoundColumnsToBeUnique(column_list=["source_id", "is_adv"])),
            _check("no_duplicate_image_in_split", "no two images of a split have the same bytes",
                   gxe.ExpectCompoundColumnsToBeUnique(column_list=["split", "image_hash"])),
        ],
        "sources": [
            _check("no_source_in_two_splits",
                   "a source and the AE made from it share one split (no leakage)",
                   gxe.ExpectColumnValuesToBeUnique(column="source_id")),
        ],
        "adversarial": [
            _check("adv_paired_with_real", "every AE has its real source in the same split",
                   gxe.ExpectColumnValuesToBeInSet(column="has_real", value_set=[True])),
            _check("adv_linf_within_bound",
                   f"recorded Linf is in (0, max_linf = {expect.max_linf:.5f}]",
                   gxe.ExpectColumnValuesToBeBetween(
                       column="linf", min_value=0, max_value=expect.max_linf, strict_min=True)),
            _check("adv_differs_from_source", "an AE is never byte-identical to its source",
                   gxe.ExpectColumnValuesToBeBetween(
                       column="linf_recomputed", min_value=0, strict_min=True)),
            _check("adv_linf_matches_recomputed", "Linf recomputed against the paired real image "
                   "matches the recorded one within 1/255",
                   gxe.ExpectColumnValuesToBeBetween(
                       column="linf_gap", min_value=0, max_value=LINF_TOLERANCE)),
            _check("adv_ssim_in_range", f"recorded SSIM is in [min_ssim = {expect.min_ssim}, 1]",
                   gxe.ExpectColumnValuesToBeBetween(
                       column="ssim", min_value=expect.min_ssim, max_value=1.0)),
            _check("adv_ssim_recorded", "every AE has a recorded SSIM",
                   gxe.ExpectColumnValuesToNotBeNull(column="ssim")),
            _check("adv_ssim_matches_recomputed", f"SSIM recomputed (CPU, float32) against the "
                   f"paired real image matches the recorded one within {expect.ssim_tolerance:g}",
                   gxe.ExpectColumnValuesToBeBetween(
                       column="ssim_gap", min_value=0, max_value=expect.ssim_tolerance)),
            _check("adv_k_positive", "the perturbation scale k of every AE is > 0",
                   gxe.ExpectColumnValuesToBeBetween(column="k", min_value=0, strict_min=True)),
        ],
        "classes": [
            _check("real_adv_balanced_per_class", "as many real images as AEs per split and class",
                   gxe.ExpectColumnPairValuesToBeEqual(column_A="n_real", column_B="n_adv")),
            _check("val_test_counts_as_asked", f"val has {expect.val_per_class} and test "
                   f"{expect.test_per_class} pairs per class",
                   gxe.ExpectColumnPairValuesToBeEqual(
                       column_A="n_adv", column_B="asked", ignore_row_if="either_value_is_missing")),
            _check("train_counts_within_cap", "train pairs per class do not exceed train_cap_per_class",
                   gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                       column_A="cap", column_B="n_adv", or_equal=True,
                       ignore_row_if="either_value_is_missing")),
            _check("every_class_in_every_split", "every class has at least one pair in every split",
                   gxe.ExpectColumnValuesToBeBetween(column="n_adv", min_value=1)),
            _check("class_balance_within_tolerance", f"each class's share of a split is within "
                   f"+-{tol:g} (relative) of 1/{expect.num_classes}",
                   gxe.ExpectColumnValuesToBeBetween(
                       column="share_dev", min_value=-tol, max_value=tol)),
        ],
    }


def validate_hybrid(
    splits: Mapping[str, Mapping[str, np.ndarray]],
    expect: Expectations,
    docs_dir: str | os.PathLike | None = None,
    run_name: str = "build_hybrid_splits",
) -> ValidationReport:
    """Run the suite on the splits; build Data Docs into `docs_dir` (absolute or relative) if given."""
    tables = build_tables(splits, expect)
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig,
    )

    # In-memory stores and only the docs site we ask for (GE's default ephemeral config
    # otherwise adds a site under /tmp); analytics off in the config as well as the environment.
    sites = {} if docs_dir is None else {"hybrid": {
        "class_name": "SiteBuilder", "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(Path(docs_dir).resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }}
    context = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites, analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    ))
    source = context.data_sources.add_pandas("hybrid_cifar10")
    report = ValidationReport()
    run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(timezone.utc))
    for table, checks in expectations(expect).items():
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
        suite = context.suites.add(gx.ExpectationSuite(name=f"hybrid_{table}"))
        for exp in checks:
            suite.add_expectation(exp)
        vd = context.validation_definitions.add(
            gx.ValidationDefinition(name=table, data=batch, suite=suite))
        result = vd.run(batch_parameters={"dataframe": tables[table]}, run_id=run_id, result_format={
            "result_format": "SUMMARY", "unexpected_index_column_names": INDEX_COLUMNS[table]})
        for r in result.results:
            report.checks.append({
                "name": r.expectation_config.meta["check"], "table": table,
                "expectation": r.expectation_config.type, "success": bool(r.success),
                "observed": _observed(r),
            })
    if docs_dir is not None:
        context.build_data_docs(site_names=["hybrid"])
    return report


def _observed(r: Any) -> Any:
    """What GE saw: the observed value, or how many rows broke the expectation and examples."""
    errors = _exception_messages(r.exception_info or {})
    if errors:
        return {"exception": "; ".join(sorted(set(errors)))}
    res = r.result or {}
    if "observed_value" in res:
        return _plain(res["observed_value"])
    examples = res.get("partial_unexpected_index_list") or res.get("partial_unexpected_list") or []
    return {"unexpected_count": _plain(res.get("unexpected_count", 0)),
            "element_count": _plain(res.get("element_count")),
            "examples": _plain(list(examples)[:5])}


def _exception_messages(info: dict) -> list[str]:
    """GE nests exception info per metric when a metric fails to compute (e.g. a missing column)."""
    if info.get("raised_exception"):
        return [str(info.get("exception_message"))]
    return [m for v in info.values() if isinstance(v, dict) for m in _exception_messages(v)]


def _plain(v: Any) -> Any:
    """JSON-safe copy of GE's observed values (numpy scalars, tuples, dicts)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
