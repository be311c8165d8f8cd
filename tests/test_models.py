"""ktg.models: the ABN-ResNet family, the registry and pretrained backbone weights."""

from __future__ import annotations

import logging
import os

import pytest
import torch
import torchvision

import ktg.models
from ktg.errors import KTGError
from ktg.losses import attention_peaks
from ktg.models import ABNOutput, create_model, list_models, load_backbone_weights, model_record

IMAGENET_STYLE = ["abn_resnet18", "abn_resnet34", "abn_resnet50", "abn_resnet101", "abn_resnet152"]
CIFAR_STYLE = ["abn_resnet20", "abn_resnet32", "abn_resnet56", "abn_resnet110"]
# Tiny widths keep the deep models fast on a laptop CPU.
TINY = 4


def test_registry_lists_both_families():
    assert list_models() == sorted(IMAGENET_STYLE + CIFAR_STYLE)
    assert [name for name in list_models() if model_record(name).imagenet_weights] == sorted(IMAGENET_STYLE)


def test_a_model_registered_with_the_decorator_is_built_by_name(monkeypatch):
    monkeypatch.setattr(ktg.models, "_MODELS", dict(ktg.models._MODELS))  # registered for this test only

    @ktg.models.register_model("abn_tiny")
    def abn_tiny(num_classes, **options):
        return create_model("abn_resnet20", num_classes, **options)

    assert "abn_tiny" in list_models()
    assert create_model("abn_tiny", 3, base_width=TINY)(torch.randn(1, 3, 16, 16)).logits.shape == (1, 3)
    with pytest.raises(KTGError, match="model 'abn_tiny' takes no pretrained weights"):
        create_model("abn_tiny", 3, pretrained="imagenet")


@pytest.mark.parametrize(
    "name, size, map_size",
    [(name, 64, 4) for name in IMAGENET_STYLE] + [(name, 32, 16) for name in CIFAR_STYLE],
)
def test_every_model_returns_the_abn_outputs(name, size, map_size):
    torch.manual_seed(0)
    model = create_model(name, 5, base_width=TINY)
    x = torch.randn(2, 3, size, size).to(memory_format=torch.channels_last)
    out = model(x)
    assert isinstance(out, ABNOutput)
    assert out.att_logits.shape == (2, 5)
    assert out.logits.shape == (2, 5)
    assert out.attention.shape == (2, 1, map_size, map_size)
    assert out.attention.min() >= 0 and out.attention.max() <= 1


def test_imagenet_style_keeps_torchvision_names_and_a_14x14_map():
    model = create_model("abn_resnet18", 3, base_width=TINY)
    names = {name for name, _ in model.named_children()}
    assert {"conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc"} <= names
    assert {"att_layer4", "bn_att", "att_conv", "bn_att2", "att_conv2", "att_conv3", "bn_att3"} <= names
    assert model(torch.randn(1, 3, 224, 224)).attention.shape == (1, 1, 14, 14)


@pytest.mark.parametrize("name, size, trunk_end", [("abn_resnet18", 64, "layer3"), ("abn_resnet20", 32, "layer2")])
@pytest.mark.parametrize("residual", [True, False])
def test_perception_branch_sees_the_attention_weighted_features(name, size, trunk_end, residual):
    torch.manual_seed(0)
    model = create_model(name, 4, base_width=TINY, attention_residual=residual)
    seen = {}
    model.get_submodule(trunk_end).register_forward_hook(lambda module, args, output: seen.update(g=output))
    model.get_submodule(model.perception_stage).register_forward_pre_hook(
        lambda module, args: seen.update(g_in=args[0]))
    out = model(torch.randn(2, 3, size, size))
    weight = 1 + out.attention if residual else out.attention
    torch.testing.assert_close(seen["g_in"], weight * seen["g"])


@pytest.mark.parametrize("block, stage_blocks, stem", [("BasicBlock", (3, 3, 3), "cifar"),
                                                      ("Bottleneck", (1, 1, 1, 1), "imagenet")])
def test_the_residual_blocks_are_torchvisions_to_the_bit(block, stage_blocks, stem):
    # ktg writes its own blocks so that building a model does not import torchvision: the same keys, the same
    # weights from the same seed, the same outputs and gradients, so torchvision's weights and earlier runs hold.
    from torchvision.models import resnet

    from ktg.models import ABNResNet, abn_resnet

    models = []
    for source in (abn_resnet, resnet):
        torch.manual_seed(0)
        models.append(ABNResNet(getattr(source, block), stage_blocks, 5, stem=stem, base_width=TINY))
    ours, theirs = models
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    x = torch.randn(2, 3, 48, 48)
    outputs = [model(x) for model in models]
    assert all(torch.equal(a, b) for a, b in zip(*outputs))
    for output in outputs:
        (output.logits.sum() + output.att_logits.sum() + output.attention.sum()).backward()
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours.parameters(), theirs.parameters()))


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    model = create_model("abn_resnet20", 3, base_width=TINY)
    out = model(torch.randn(4, 3, 32, 32))
    (out.att_logits.sum() + out.logits.sum()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_attention_map_is_float32_under_bf16_autocast_and_centres_the_crops_as_fp32_does():
    torch.manual_seed(0)
    model = create_model("abn_resnet20", 5, base_width=TINY)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 32, 32))
    assert out.logits.dtype == torch.bfloat16  # the trunk does run in bf16
    assert out.attention.dtype == torch.float32

    # The head's input as the bf16 trunk hands it over; BN shifts the map to sigmoid values near 1, where bf16
    # ties most positions at 1.0: a plateau whose first position would become every sample's peak.
    head_input = torch.randn(8, 5, 16, 16).bfloat16()
    torch.nn.init.constant_(model.bn_att3.bias, 7.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.attention_map(head_input)
    fp32 = model.attention_map(head_input.float())
    assert mixed.dtype == torch.float32
    assert (attention_peaks(fp32.bfloat16()) != attention_peaks(fp32)).any()  # the plateaus bf16 would make
    assert torch.equal(attention_peaks(mixed), attention_peaks(fp32))
    torch.nn.init.zeros_(model.att_conv3.weight)  # a map that is one plateau in fp32 as well
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.attention_map(head_input)
    assert torch.equal(attention_peaks(mixed), attention_peaks(model.attention_map(head_input.float())))


def test_compiles_without_graph_breaks():
    model = create_model("abn_resnet20", 3, base_width=TINY)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(compiled(x).logits, model(x).logits)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(KTGError, match="abn_resnet18.*abn_resnet56"):
        create_model("nope", 10)


def test_cifar_style_takes_no_pretrained_weights():
    with pytest.raises(KTGError, match="no pretrained"):
        create_model("abn_resnet20", 10, pretrained="imagenet")


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=1000).state_dict()


def _assert_backbone_loaded(model, state):
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer3.1.bn2.weight",
                "layer4.0.downsample.0.weight"):
        torch.testing.assert_close(model.state_dict()[key], state[key], rtol=0, atol=0)
    own = model.state_dict()
    for key, value in own.items():
        if key.startswith("att_layer4."):
            torch.testing.assert_close(value, own[key.removeprefix("att_")], rtol=0, atol=0)


def test_local_state_dict_file_loads_backbone_and_attention_stage(tmp_path, resnet18_state, caplog):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_state, path)
    with caplog.at_level(logging.WARNING, logger="ktg"):
        model = create_model("abn_resnet18", 7, pretrained=str(path))
    _assert_backbone_loaded(model, resnet18_state)
    assert model.fc.weight.shape == (7, 512)
    assert "fc.weight" in caplog.text and "att_conv.weight" in caplog.text

    report = load_backbone_weights(model, resnet18_state)
    assert report.skipped_shape == ["fc.weight", "fc.bias"]
    assert "att_layer4.0.conv1.weight" in report.loaded
    assert "bn_att3.weight" in report.missing and report.unexpected == []


def test_checkpoint_dict_with_a_model_key_is_unwrapped(tmp_path, resnet18_state):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": resnet18_state, "epoch": 3}, path)
    _assert_backbone_loaded(create_model("abn_resnet18", 7, pretrained=str(path)), resnet18_state)


def test_missing_or_unreadable_file_is_a_user_error(tmp_path):
    with pytest.raises(KTGError, match="not found.*absent.pth"):
        create_model("abn_resnet18", 7, base_width=TINY, pretrained=str(tmp_path / "absent.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(KTGError, match="garbage.pth"):
        create_model("abn_resnet18", 7, base_width=TINY, pretrained=str(garbage))


def test_weights_of_another_width_fit_nowhere(tmp_path, resnet18_state):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_state, path)
    with pytest.raises(KTGError, match="no parameter"):
        create_model("abn_resnet18", 7, base_width=TINY, pretrained=str(path))


def test_imagenet_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch, resnet18_state):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(resnet18_state, checkpoints / os.path.basename(url))
    _assert_backbone_loaded(create_model("abn_resnet18", 7, pretrained="imagenet"), resnet18_state)


def test_unknown_model_option_is_a_user_error_naming_it():
    with pytest.raises(KTGError, match="takes no option .colour"):
        create_model("abn_resnet20", 3, colour="red")
