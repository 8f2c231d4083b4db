"""params.Section helpers shared by the stages, and the device module's precision choices."""
from __future__ import annotations

import contextlib

import pytest
import torch

from advhybrid import device
from advhybrid.params import ParamsError, Section


def section(**data) -> Section:
    return Section(data, "targets", "params.yaml")


def test_per_model_value_is_shared_or_looked_up_by_model_name():
    s = section(width={"resnet56": 1.0, "vgg19bn": 0.5}, epochs=3)
    assert s.per_model("width", "vgg19bn", float) == 0.5
    assert s.per_model("epochs", "resnet56", int) == 3
    assert s.per_model("epochs", "any-model", int) == 3


def test_per_model_mapping_without_the_model_names_the_missing_key():
    s = section(width={"resnet56": 1.0})
    with pytest.raises(ParamsError, match=r"params.yaml: missing key 'targets.width.mobilenetv2'"):
        s.per_model("width", "mobilenetv2", float)


def test_per_model_rejects_a_value_of_the_wrong_type_naming_the_key():
    with pytest.raises(ParamsError, match=r"'targets.width.vgg19bn' must be float, got 'wide'"):
        section(width={"vgg19bn": "wide"}).per_model("width", "vgg19bn", float)


@pytest.mark.parametrize("value", [[], "resnet56", ["a", "a"], ["a", 3], None])
def test_names_must_be_a_non_empty_list_of_distinct_strings(value):
    with pytest.raises(ParamsError, match=r"'targets.models' must be a non-empty list of distinct names"):
        section(models=value).names("models")


def test_names_returns_the_list_in_order():
    assert section(models=["b", "a"]).names("models") == ["b", "a"]


@pytest.mark.parametrize("env, expected", [("0", False), ("off", False), ("1", True), ("yes", True)])
def test_cpu_bf16_follows_the_environment_override(monkeypatch, env, expected):
    monkeypatch.setenv("ADVHYBRID_CPU_BF16", env)
    assert device.cpu_bf16() is expected
    ctx = device.autocast(torch.device("cpu"))
    assert isinstance(ctx, torch.autocast) is expected
    if not expected:
        assert isinstance(ctx, contextlib.nullcontext)


def test_cpu_autocast_computes_in_bf16_when_enabled(monkeypatch):
    monkeypatch.setenv("ADVHYBRID_CPU_BF16", "1")
    conv = torch.nn.Conv2d(3, 4, 3)
    with device.autocast(torch.device("cpu")):
        out = conv(torch.rand(1, 3, 8, 8))
    assert out.dtype == torch.bfloat16


def test_cpu_bf16_default_matches_the_cpus_native_support(monkeypatch):
    monkeypatch.delenv("ADVHYBRID_CPU_BF16", raising=False)
    assert device.cpu_bf16() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
