"""The typed schema of params.yaml: every section, every key, checked before any stage runs.

`validate_params` is what the `check_params` stage runs first in the DAG (see dvc.yaml): DVC
removes a stage's outputs right before it runs that stage, so a bad `-S train.lr=abc` used to
cost the defended model it was meant to retrain. Every stage now depends on check_params, which
fails on the bad value before DVC reaches any of them, leaving every output as it was.

Why pydantic (v2) rather than dataclasses: strict typing (no "1" -> 1, no 1 -> True), unknown
keys rejected (`extra="forbid"`: a typo'd `label_smothing` in a scale file fails instead of
being ignored), Literal choices named in the error, and all problems reported at once with the
path of each, which we turn into the dotted keys of params.yaml. Dataclasses would need all of
that written by hand.

The stages keep reading their own section through `advhybrid.params.load_section` (DVC
tracks params per section), with their own checks, so a stage run by hand still fails clearly.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from advhybrid.attacks.advgan import GAN_LOSSES, OBJECTIVES, OUTPUTS, SCHEDULES
from advhybrid.attacks.whitebox import AutoAttackSettings
from advhybrid.data.cifar import CLASSES, SOURCE_ENV, source_path
from advhybrid.evaluation.goals import COUNT_GOALS, GOALS
from advhybrid.models import MODEL_NAMES
from advhybrid.params import ParamsError

ModelName = Literal[MODEL_NAMES]  # type: ignore[valid-type]  # the model registry, in one place
ClassName = Literal[tuple(CLASSES)]  # type: ignore[valid-type]
Count = Field(ge=1)
ModelNames = Annotated[list[ModelName], Field(min_length=1)]  # distinct: checked where the section is
Seed = Annotated[int, Field(ge=0)]


def one_or_mapping(scalar: Any, mapping: Any) -> Any:
    """`scalar` or a mapping, told apart by the value's shape, so an error names only the
    reading that was meant (a plain union reports every member's complaint)."""
    return Annotated[Union[Annotated[scalar, Tag("one")], Annotated[mapping, Tag("mapping")]],
                     Discriminator(lambda v: "mapping" if isinstance(v, dict) else "one")]


class _Section(BaseModel):
    # strict: YAML already gives typed values; a string where a number belongs is a mistake
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    section: ClassVar[str] = ""  # the params.yaml section, where a shared model's checks name it

    def __init_subclass__(cls, section: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if section:
            cls.section = section


def _distinct(key: str, names: list) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"'{key}' must not repeat a name, got {names}")


def _covers(key: str, value: Any, models: list[str]) -> None:
    """A {model: value} mapping must name every model the section trains."""
    if isinstance(value, dict):
        missing = [m for m in models if m not in value]
        if missing:
            raise ValueError(f"'{key}' is a per-model mapping without {missing} (it has {sorted(value)})")


class DataParams(_Section):
    source: str = Field(min_length=1)
    download_dir: str = Field(min_length=1)

    @model_validator(mode="after")
    def _source_exists(self) -> "DataParams":
        # $ADVHYBRID_CIFAR_SOURCE replaces data.source (download_cifar.resolve_source); relative
        # paths are relative to the repository root, where DVC runs every stage.
        if self.source != "official" and not os.environ.get(SOURCE_ENV) and not source_path(self.source).exists():
            raise ValueError(
                f"'data.source'={self.source!r} does not exist (relative paths are read from the repository "
                "root); expected 'official' or the path of the official archive, an image-folder archive or "
                f"a directory. To fix it: run with `-S data.source=official` (downloads the official "
                f"archive, as `make smoke`/`make reference` do where no local copy is found), or point "
                f"${SOURCE_ENV} (or `-S data.source=PATH`) at a local CIFAR-10 copy")
        return self


class Recipe(_Section):
    """The training recipe targets and train share (TrainConfig)."""

    models: ModelNames
    width: one_or_mapping(float, dict[ModelName, float])
    batch_size: int = Count
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    restart_epochs: int = Count
    restart_mult: int = Count
    label_smoothing: float = Field(ge=0, lt=1)
    augment: bool
    seed: Seed
    compile: bool

    @model_validator(mode="after")
    def _per_model(self) -> "Recipe":
        name = type(self).section
        _distinct(f"{name}.models", self.models)
        widths = self.width.values() if isinstance(self.width, dict) else [self.width]
        if not all(w > 0 and math.isfinite(w) for w in widths):
            raise ValueError(f"'{name}.width' must be > 0, got {self.width}")
        _covers(f"{name}.width", self.width, self.models)
        return self


class TargetsParams(Recipe, section="targets"):
    train_images: int = Count
    test_images: int = Count
    epochs: int = Count
    jobs: int = Field(default=1, ge=1)  # networks at once (advhybrid.workers); absent in older params files


class TrainParams(Recipe, section="train"):
    epochs: one_or_mapping(int, dict[ModelName, int])

    @model_validator(mode="after")
    def _epochs(self) -> "TrainParams":
        if not isinstance(self.epochs, dict):  # dvc.yaml: train@<model> depends on train.epochs.<model>
            raise ValueError(f"'train.epochs' must be a {{model: epochs}} mapping (each train@<model> stage "
                             f"depends on its own entry), got {self.epochs!r}")
        if not all(e >= 1 for e in self.epochs.values()):
            raise ValueError(f"'train.epochs' must be >= 1, got {self.epochs}")
        _covers("train.epochs", self.epochs, self.models)
        return self


class GanParams(_Section):
    targets: ModelNames
    train_images: int = Count
    eval_images: int = Count
    k_default: float = Field(gt=0)
    eps_255: float = Field(gt=0, le=255)
    conditional: bool
    output: Literal[OUTPUTS]  # type: ignore[valid-type]
    gen_width: int = Count
    gen_res_blocks: int = Field(ge=0)
    disc_width: int = Count
    gan_loss: Literal[GAN_LOSSES]  # type: ignore[valid-type]
    epochs: int = Count
    batch_size: int = Count
    lr_g: float = Field(gt=0)
    lr_d: float = Field(gt=0)
    schedule: Literal[SCHEDULES]  # type: ignore[valid-type]
    beta1: float = Field(ge=0, lt=1)
    beta2: float = Field(ge=0, lt=1)
    objective: Literal[OBJECTIVES]  # type: ignore[valid-type]
    w_gan: float = Field(ge=0)
    d_every: int = Count
    w_adv: float = Field(ge=0)
    w_hinge: float = Field(ge=0)
    kappa: float = Field(ge=0)
    hinge_bound: float = Field(ge=0)
    log_every: int = Count
    seed: Seed
    jobs: int = Field(default=1, ge=1)  # as targets.jobs


class KGrid(_Section):
    """Eq. 1's k grid, k_min..k_max in steps of k_step (attacks.ksearch.k_grid)."""

    k_min: float
    k_max: float
    k_step: float

    @model_validator(mode="after")
    def _grid(self) -> "KGrid":
        k_min, k_max, k_step = self.k_min, self.k_max, self.k_step
        if not (k_min > 0 and k_step > 0 and k_max >= k_min and all(map(math.isfinite, (k_min, k_max, k_step)))):
            raise ValueError(f"'{self.section}.k_min'={k_min}, 'k_max'={k_max}, 'k_step'={k_step}: expected "
                             "0 < k_min <= k_max and k_step > 0")
        return self


class AdversarialParams(KGrid, section="adversarial"):
    """generate_adversarial: each target attacks its own slice of train_images + test_images."""

    targets: ModelNames
    train_images: int = Count
    test_images: int = Count
    batch_size: int = Count
    seed: Seed
    jobs: int = Field(default=1, ge=1)  # as targets.jobs


class AdaptiveParams(KGrid, section="adaptive"):
    """adaptive_attack: the gan recipe retrained against each of `models` and its control."""

    models: ModelNames
    train_images: int = Count
    eval_images: int = Count
    seed: Seed
    jobs: int = Field(default=1, ge=1)  # as targets.jobs


class HybridParams(_Section):
    targets: ModelNames
    val_per_class: int = Count
    test_per_class: int = Count
    # null: every remaining pair; one cap; or Table 1's cap per class (every class named)
    train_cap_per_class: one_or_mapping(Optional[int], dict[ClassName, Optional[int]])
    seed: Seed
    balance_tolerance: float = Field(ge=0)
    max_linf: float = Field(ge=0, le=1)
    min_ssim: float = Field(ge=-1, le=1)
    ssim_tolerance: float = Field(ge=0)

    @model_validator(mode="after")
    def _caps(self) -> "HybridParams":
        cap = self.train_cap_per_class
        caps = cap.values() if isinstance(cap, dict) else [cap]
        if any(c is not None and c < 1 for c in caps):
            raise ValueError(f"'hybrid.train_cap_per_class' caps must be >= 1 or null, got {cap}")
        if isinstance(cap, dict) and set(cap) != set(CLASSES):
            raise ValueError(f"'hybrid.train_cap_per_class' must name every class; missing "
                             f"{[c for c in CLASSES if c not in cap]}")
        return self


class EvalMixedParams(_Section):
    models: ModelNames
    adv_fractions: list[float] = Field(min_length=1)
    n_images: int = Count
    draws: int = Count
    seed: Seed

    @model_validator(mode="after")
    def _fractions(self) -> "EvalMixedParams":
        if not all(0 <= f <= 1 for f in self.adv_fractions):
            raise ValueError(f"'eval_mixed.adv_fractions' must be fractions in [0, 1], got {self.adv_fractions}")
        return self


class FastAtParams(_Section):
    model: ModelName
    eps_255: float = Field(gt=0, le=255)
    alpha_255: float = Field(gt=0, le=255)
    pgd_batch: int = Count  # the held-out validation images whose PGD accuracy picks the saved epoch
    pgd_steps: int = Count
    pgd_alpha_255: float = Field(gt=0, le=255)


class SeedsParams(_Section):
    model: ModelName
    extra: list[int] = Field(default_factory=list)
    jobs: int = Field(default=1, ge=1)  # as targets.jobs

    @model_validator(mode="after")
    def _seeds(self) -> "SeedsParams":
        _distinct("seeds.extra", self.extra)
        if any(s < 0 for s in self.extra):
            raise ValueError(f"'seeds.extra' must be seeds >= 0, got {self.extra}")
        return self


class RobustnessParams(_Section):
    models: ModelNames
    fast_at_model: ModelName
    n_images: int = Count
    eps_255: list[float] = Field(min_length=1)
    pgd_steps: int = Count          # step 2.5 * eps / steps at each budget (Madry et al.)
    pgd_restarts: int = Count
    pgd_check_steps: int = Count
    noise_eps_255: float = Field(ge=0, le=255)
    masking_ratio: float = Field(ge=0, le=1)
    autoattack: AutoAttackSettings   # its fields and bounds live with the attack (attacks.whitebox)
    batch_size: int = Count
    seed: Seed

    @model_validator(mode="after")
    def _budgets(self) -> "RobustnessParams":
        e = self.eps_255
        if e[0] <= 0 or any(b <= a for a, b in zip(e, e[1:])):
            raise ValueError(f"'robustness.eps_255' must be increasing budgets > 0, got {e}")
        if self.autoattack.eps_255 not in e:
            raise ValueError(f"'robustness.autoattack.eps_255'={self.autoattack.eps_255:g} must be one of "
                             f"'robustness.eps_255' {e} (AutoAttack runs on that budget's PGD survivors)")
        return self


class ReportParams(_Section):
    goals: dict[Literal[tuple(GOALS)], float]  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _fractions(self) -> "ReportParams":
        bad = {g: v for g, v in self.goals.items() if not (v >= 0 if g in COUNT_GOALS else 0 <= v <= 1)}
        if bad:
            raise ValueError(f"'report.goals' {bad}: fractions must be in [0, 1] and counts >= 0 "
                             f"(counts: {sorted(COUNT_GOALS)})")
        return self


class DistParams(_Section):
    """torchrun's processes per machine for the training and GAN stages (docs/gpu.md)."""

    nproc_per_node: int = Count


class ScaleInfo(_Section):
    name: str
    description: str


class Params(_Section):
    """params.yaml as composed from conf/: one field per section."""

    data: DataParams
    targets: TargetsParams
    gan: GanParams
    adversarial: AdversarialParams
    hybrid: HybridParams
    train: TrainParams
    eval_mixed: EvalMixedParams
    fast_at: FastAtParams
    seeds: SeedsParams
    robustness: RobustnessParams
    adaptive: AdaptiveParams
    report: ReportParams
    dist: DistParams
    scale_info: ScaleInfo


def cross_check(p: Params) -> list[str]:
    """What no single section can check: every name a stage looks up was produced upstream."""
    problems = []

    def subset(key: str, names: list[str], of_key: str, of: list[str]) -> None:
        extra = [n for n in names if n not in of]
        if extra:
            problems.append(f"'{key}' names {extra}, which '{of_key}' {of} does not train")

    subset("gan.targets", p.gan.targets, "targets.models", p.targets.models)
    subset("adversarial.targets", p.adversarial.targets, "gan.targets", p.gan.targets)
    subset("hybrid.targets", p.hybrid.targets, "adversarial.targets", p.adversarial.targets)
    for key, names in (("eval_mixed.models", p.eval_mixed.models), ("robustness.models", p.robustness.models),
                       ("adaptive.models", p.adaptive.models), ("fast_at.model", [p.fast_at.model]),
                       ("seeds.model", [p.seeds.model])):
        subset(key, names, "train.models", p.train.models)
    # advhybrid.workers; seed@ runs under torchrun too (adversarial and adaptive never do)
    for key, jobs in (("targets.jobs", p.targets.jobs), ("gan.jobs", p.gan.jobs), ("seeds.jobs", p.seeds.jobs)):
        if jobs > 1 and p.dist.nproc_per_node > 1:
            problems.append(f"'{key}'={jobs} with 'dist.nproc_per_node'={p.dist.nproc_per_node}: under torchrun "
                            f"every process already trains each network; set one of them to 1")
    if p.robustness.fast_at_model != p.fast_at.model:
        problems.append(f"'robustness.fast_at_model'={p.robustness.fast_at_model!r} must be "
                        f"'fast_at.model'={p.fast_at.model!r} (the one train_fast_at trains)")
    for key, names in (("gan.targets", p.gan.targets), ("adversarial.targets", p.adversarial.targets),
                       ("hybrid.targets", p.hybrid.targets), ("eval_mixed.models", p.eval_mixed.models),
                       ("robustness.models", p.robustness.models), ("adaptive.models", p.adaptive.models)):
        if len(set(names)) != len(names):
            problems.append(f"'{key}' must not repeat a name, got {names}")
    return problems


def validate_params(doc: Any, source: str = "params.yaml") -> Params:
    """The whole params document, typed; ParamsError naming every bad key and what was expected."""
    if not isinstance(doc, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(doc).__name__}")
    try:
        params = Params.model_validate(doc)
    except ValidationError as e:
        raise ParamsError(f"{source}: invalid params\n" + "\n".join(
            f"  - {_describe(err, doc)}" for err in e.errors(include_url=False))) from None
    problems = cross_check(params)
    if problems:
        raise ParamsError(f"{source}: invalid params\n" + "\n".join(f"  - {m}" for m in problems))
    return params


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no params file (compose it with `dvc exp run -S scale=...`)")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({e})") from e
    return validate_params(doc, str(path))


# --- errors as params.yaml keys -----------------------------------------------------------


def _describe(err: dict, doc: Any) -> str:
    key, bad_key = _dotted(err["loc"], doc, err["type"] == "missing")
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(key.split(".")[:-1])
        return f"unknown key '{key}' (allowed: {', '.join(allowed)})"
    if err["type"] == "missing":
        return f"missing key '{key}'"
    if err.get("input") == "???":  # Hydra's mandatory value: conf/config.yaml leaves the size to the scale
        return f"'{key}' is not set: conf/config.yaml leaves it (???) to each conf/scale/*.yaml"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and msg.startswith("'"):
        return msg  # our own checks name their keys
    what = f"key {err['input']!r} of '{key}'" if bad_key else f"'{key}'={err['input']!r}"
    return f"{what}: {msg}"


def _dotted(loc: tuple, doc: Any, missing: bool) -> tuple[str, bool]:
    """pydantic's location as a dotted params key. Union members add their tag to the
    location; only the parts that index into the document are keys. '[key]' marks a bad key."""
    parts, node, bad_key = [], doc, False
    for i, item in enumerate(loc):
        if item == "[key]":
            bad_key = True
            parts.pop()  # the bad key itself; the error names it beside its mapping
        elif isinstance(node, dict) and item in node:
            parts.append(str(item))
            node = node[item]
        elif isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            parts.append(str(item))
            node = node[item]
        elif missing and i == len(loc) - 1:
            parts.append(str(item))  # a missing key: it names itself
            node = None
    return ".".join(parts), bad_key


def _allowed_keys(path: list[str]) -> list[str]:
    model: Any = Params
    for part in path:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return []
        model = _model_of(fields[part].annotation)
    return sorted(getattr(model, "model_fields", {}))


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is Union:
        return next((a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return None
