"""lightnets.registry on its own: names, cards, lookups and errors (fast; the per-model checks that build every
model are in test_models_common.py)."""

from __future__ import annotations

import json

import pytest
from torch import nn

import lightnets
from lightnets.registry import ModelCard, PaperRef, get_card, list_families, list_models, register_model

ALL = list_models()


def test_names_are_sorted_unique_and_filtered_by_glob_and_family() -> None:
    assert ALL == sorted(set(ALL)) and len(ALL) > len(list_families())
    for family in list_families():
        names = list_models(family=family)
        assert names and all(get_card(n).family == family for n in names)
        assert list_models("*", family=family) == names
    assert sum(len(list_models(family=f)) for f in list_families()) == len(ALL)
    assert list_models(family="no_such_family") == []
    assert list_models("mobilenet_v3_small*", family="shufflenet_v2") == []
    assert set(list_models("mobilenet_v3_small*")) <= set(list_models(family="mobilenet_v3"))


@pytest.mark.parametrize("name", ALL)
def test_every_card_is_complete_and_serialisable(name: str) -> None:
    card = get_card(name)
    assert isinstance(card, ModelCard) and card.name == name and card.input_size > 0
    assert card.refs and all(isinstance(r, PaperRef) and r.source for r in card.refs)
    # each reference holds at least one number the tests compare against
    assert all(any(v is not None for v in (r.macs, r.params, r.top1, r.exact_params)) for r in card.refs)
    info = lightnets.model_info(name)
    assert json.loads(json.dumps(info)) == info  # plain data: no builder, enums as strings
    assert info["name"] == name and len(info["refs"]) == len(card.refs)


def test_create_model_by_name_uses_the_card_and_accepts_overrides() -> None:
    name = "shufflenet_v2_x0_5"
    card = get_card(name)
    model = lightnets.create_model(name)
    assert isinstance(model, nn.Module) and type(model) is type(card.builder(**card.kwargs))
    assert model.num_classes == 1000
    small = lightnets.create_model(name, num_classes=7)
    assert small.num_classes == 7 and small.get_classifier().out_features == 7
    # the card itself is not changed by an override
    assert get_card(name).kwargs == card.kwargs


def test_unknown_names_fail_with_the_name_and_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'mobilenet_v3_sma'.*did you mean.*mobilenet_v3_small"):
        lightnets.create_model("mobilenet_v3_sma")
    with pytest.raises(ValueError, match=r"unknown model 'zzz'; see `lightnets models`"):
        get_card("zzz")
    with pytest.raises(ValueError, match="bad arguments for model 'mobilenet_v1'"):
        lightnets.create_model("mobilenet_v1", no_such_keyword=1)


def test_names_register_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model(ALL[0], get_card(ALL[0]).builder, family=get_card(ALL[0]).family)
    assert list_models() == ALL
