"""The model zoo: the paper's architectures at width 1, the same structure when narrowed,
exact RepVGG re-parameterisation, and checkpoints that round-trip or fail naming the file."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from torch import nn

from advhybrid.io import ContractError
from advhybrid.models import (MODEL_NAMES, build_model, count_parameters, load_model, save_model)

SMALL = 0.25

# Exact counts at width 1, 10 classes (pinned so any architecture change shows up), and the
# published sizes they must stay within 2% of.
PARAMS = {
    "resnet50": (23_520_842, 23.5e6),
    "vgg19bn": (20_035_018, 20.0e6),
    "shufflenetv2": (5_365_486, 5.4e6),
    "repvgg_a2": (26_815_690, 26.8e6),
    "mobilenetv2": (2_236_682, 2.2e6),
    "resnet56": (853_018, 0.86e6),
}


@lru_cache(maxsize=None)
def full(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name).eval()


def small(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, width=SMALL).eval()


def images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def perturb_batchnorm(model: nn.Module, steps: int = 3) -> None:
    """Random BN affine parameters plus a few train-mode passes, so running stats are not 0/1.

    The passes average the batch statistics exactly (momentum None), as a trained network's
    would be, so eval-mode activations and logits keep a realistic scale."""
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for s in range(steps):
            model(images(8, seed=10 + s))
    for m in bns:
        m.momentum = 0.1
    model.eval()


def test_registry_lists_all_six_models():
    assert MODEL_NAMES == ("resnet50", "vgg19bn", "shufflenetv2", "repvgg_a2", "mobilenetv2", "resnet56")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_width_one_has_the_papers_parameter_count(name):
    exact, published = PARAMS[name]
    n = count_parameters(full(name))
    assert n == exact
    assert abs(n / published - 1) < 0.02


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_small_width_maps_a_cifar_batch_to_logits(name):
    with torch.no_grad():
        out = small(name)(images())
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_narrow_model_keeps_the_layer_structure(name):
    def layout(m: nn.Module) -> list[str]:
        return [type(x).__name__ for x in m.modules()]

    wide, narrow = full(name), small(name)
    assert layout(narrow) == layout(wide)
    convs = lambda m: sum(isinstance(x, nn.Conv2d) for x in m.modules())  # noqa: E731
    assert convs(narrow) == convs(wide) > 10
    assert count_parameters(narrow) < count_parameters(wide) / 5


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_first_conv_keeps_full_32x32_resolution(name):
    model = small(name)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen = []
    first.register_forward_hook(lambda mod, inp, out: seen.append(out.shape[-2:]))
    with torch.no_grad():
        model(images(1))
    assert first.kernel_size == (3, 3) and seen[0] == (32, 32)


def test_model_normalises_its_input_with_cifar_statistics():
    model = small("resnet56")
    seen = []
    model.body.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    mean_image = model.mean.expand(1, 3, 32, 32)
    with torch.no_grad():
        model(mean_image)
        model(mean_image + model.std)
    assert seen[0].abs().max() < 1e-6
    assert torch.allclose(seen[1], torch.ones_like(seen[1]), atol=1e-5)
    assert "mean" not in model.state_dict()


@pytest.mark.parametrize("width", [SMALL, 1.0])
def test_repvgg_reparameterisation_keeps_logits_and_leaves_single_3x3_convs(width):
    torch.manual_seed(0)
    model = build_model("repvgg_a2", width=width)
    perturb_batchnorm(model)
    x = images(2, seed=5)
    with torch.no_grad():
        before = model(x)
        assert not model.reparameterized
        model.reparameterize()
        after = model(x)
    assert 0.05 < before.abs().max() < 50  # a scale at which 1e-4 is a meaningful tolerance
    torch.testing.assert_close(after, before, atol=1e-4, rtol=0)
    assert model.reparameterized
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == sum((1, 2, 4, 14, 1))
    assert all(c.kernel_size == (3, 3) and c.bias is not None for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_reparameterize_is_refused_for_models_without_branches():
    with pytest.raises(TypeError, match="resnet56"):
        small("resnet56").reparameterize()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_checkpoint_round_trip_gives_identical_logits(name, tmp_path):
    model = small(name, seed=3)
    perturb_batchnorm(model)
    path = tmp_path / f"{name}.pt"
    save_model(path, model, name, 10, SMALL, epochs=2, acc=0.5)
    loaded, info = load_model(path)
    assert not loaded.training
    assert info["name"] == name and info["width"] == SMALL and info["meta"] == {"epochs": 2, "acc": 0.5}
    with torch.no_grad():
        assert torch.equal(loaded(images()), model(images()))


def test_reparameterised_repvgg_checkpoint_round_trips(tmp_path):
    model = small("repvgg_a2", seed=4)
    perturb_batchnorm(model)
    model.reparameterize()
    path = tmp_path / "repvgg.pt"
    save_model(path, model, "repvgg_a2", 10, SMALL)
    loaded, info = load_model(path)
    assert info["reparameterized"] and loaded.reparameterized
    with torch.no_grad():
        assert torch.equal(loaded(images()), model(images()))


def test_unknown_name_error_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_model("resnet18")
    assert "resnet18" in str(err.value)
    assert all(name in str(err.value) for name in MODEL_NAMES)


@pytest.mark.parametrize("width", [0, -0.5, float("nan"), "wide"])
def test_non_positive_width_is_rejected(width):
    with pytest.raises(ValueError, match="width"):
        build_model("resnet56", width=width)


def test_saving_under_other_build_arguments_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    with pytest.raises(ValueError, match="resnet56"):
        save_model(path, small("resnet56"), "resnet56", 10, 1.0)
    assert not path.exists()


def test_missing_checkpoint_error_names_the_path(tmp_path):
    path = tmp_path / "absent.pt"
    with pytest.raises(FileNotFoundError, match=str(path)):
        load_model(path)


@pytest.mark.parametrize("content", ["garbage", "no_keys", "wrong_weights"])
def test_bad_checkpoint_error_names_the_path(tmp_path, content):
    path = tmp_path / f"{content}.pt"
    if content == "garbage":
        path.write_bytes(b"not a torch file")
    elif content == "no_keys":
        torch.save({"weights": torch.zeros(3)}, path)
    else:  # a resnet56 state dict labelled as mobilenetv2
        model = small("resnet56")
        torch.save({"state_dict": model.state_dict(), "name": "mobilenetv2", "num_classes": 10,
                    "width": SMALL, "reparameterized": False, "meta": {}}, path)
    with pytest.raises(ContractError, match=str(path)):
        load_model(path)


@pytest.mark.parametrize("name, module", [("mobilenetv2", "mobilenet"), ("shufflenetv2", "shufflenet"), ("vgg19bn", "vgg")])
def test_our_conv_bn_block_builds_what_torchvision_s_built(name, module, monkeypatch):
    """models.common.ConvBNAct replaced torchvision's Conv2dNormActivation (an import of over a
    second in every stage): the same modules, state_dict keys, initial weights and logits, so
    the saved models and every number made with them stay as they were."""
    import importlib

    from torchvision.ops import Conv2dNormActivation

    ours = build_model(name, 10, 0.25, seed=0)
    monkeypatch.setattr(importlib.import_module(f"advhybrid.models.{module}"), "ConvBNAct", Conv2dNormActivation)
    theirs = build_model(name, 10, 0.25, seed=0)
    assert any(isinstance(m, Conv2dNormActivation) for m in theirs.modules())
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert str(ours).replace("ConvBNAct", "Conv2dNormActivation") == str(theirs)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours.eval(), theirs.eval()
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
