"""PruneConfig validation and the per-tower value forms (torch-free)."""

from __future__ import annotations

import pytest

from mmdeploy_kit.errors import UserInputError
from mmdeploy_kit.passes.prune.config import PruneConfig, tower_values


@pytest.mark.parametrize("value,towers,expected", [
    ({"vision": 0.4, "text": 0.3}, (), (("vision", 0.4), ("text", 0.3))),
    ("vision=0.4,text=0.3", (), (("vision", 0.4), ("text", 0.3))),
    (["vision=0.4", "text=0.3"], (), (("vision", 0.4), ("text", 0.3))),
    (["0.4", "0.3"], ("vision", "text"), (("vision", 0.4), ("text", 0.3))),   # --tower a --ratio x --tower b --ratio y
    (0.4, ("vision",), (("vision", 0.4),)),
    (0.25, (), (("vision", 0.25), ("text", 0.25))),                           # one value: every tower
])
def test_tower_values_forms(value, towers, expected):
    assert tower_values(value, towers, ["vision", "text"], "ratio") == expected


def test_tower_values_mismatch_and_mix_are_errors():
    with pytest.raises(UserInputError, match="2 --ratio values for 3 --tower"):
        tower_values(["0.1", "0.2"], ("a", "b", "c"), None, "ratio")
    with pytest.raises(UserInputError, match="mixes"):
        tower_values(["vision=0.1", "0.2"], (), None, "ratio")
    with pytest.raises(UserInputError, match="not a number"):
        tower_values("vision=lots", (), None, "ratio")


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_ratio_outside_open_unit_interval_is_one_line_error(ratio):
    with pytest.raises(UserInputError, match="strictly between 0 and 1"):
        PruneConfig(ratio={"vision": ratio})


def test_config_checks():
    cfg = PruneConfig(ratio={"vision": 0.4}, target_params={"text": 1000}, scope="heads,mlp")
    assert cfg.towers == ("vision", "text") and cfg.scope == ("heads", "mlp")
    assert PruneConfig(ratio={"vision": 0.4}).importance == "magnitude"
    with pytest.raises(UserInputError, match="both a ratio and a target"):
        PruneConfig(ratio={"vision": 0.4}, target_params={"vision": 10})
    with pytest.raises(UserInputError, match="nothing to prune"):
        PruneConfig()
    with pytest.raises(UserInputError, match="unknown pruning scope 'layers'"):
        PruneConfig(ratio={"vision": 0.4}, scope="heads,layers")
    with pytest.raises(UserInputError, match="needs data"):
        PruneConfig(ratio={"vision": 0.4}, importance="taylor")
    with pytest.raises(UserInputError, match="round-to"):
        PruneConfig(ratio={"vision": 0.4}, round_to=0)
    # hashable + serialisable (the pipeline cache key)
    cfg = PruneConfig(ratio={"vision": 0.4}, importance="hessian", calib_data="x.jsonl")
    assert PruneConfig(**cfg.model_dump()) == cfg and len(cfg.digest()) == 16


def test_registry_declares_the_prune_pass():
    from mmdeploy_kit.passes.registry import PASS_REGISTRY, get_pass

    assert PASS_REGISTRY["prune"].extra == "prune"
    cls = get_pass("prune")
    assert (cls.accepts, cls.produces, cls.forbidden_after, cls.data_fields) == (("torch",), "torch", (), ("calib_data",))
    assert "prune" in get_pass("quantize").forbidden_after


def test_recipe_forms_and_every_tower():
    """Recipes write ``prune: {ratio: 0.3}`` or ``ratio: "vision=0.4,text=0.3"``; one number means every tower."""
    cfg = PruneConfig(ratio=0.3, target_params={"text": 500})
    assert cfg.ratio == (("*", 0.3),) and cfg.towers == ("text",)
    ratios, counts = cfg.tower_targets(["vision", "text", "audio"])
    assert ratios == {"vision": 0.3, "audio": 0.3} and counts == {"text": 500}   # a named tower wins over "*"
    assert PruneConfig(ratio="vision=0.4,text=0.3").ratio == (("vision", 0.4), ("text", 0.3))
    assert PruneConfig(ratio=[["vision", 0.4]]).tower_targets(["vision", "text"]) == ({"vision": 0.4}, {})
