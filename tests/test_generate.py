"""Side-by-side generation (`anatomy.generate`, the `generate` experiment): the altered side is the model
altered by hand, the original side the untouched model, and the chat template decides the input ids."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from anatomy.errors import AnatomyError
from anatomy.experiment import Result
from anatomy.experiments.generate import GenerateConfig, run_generate, side_by_side_of
from anatomy.generate import MODES, Alteration, generate, generate_side_by_side, prompt_inputs
from anatomy.interventions import fingerprint
from anatomy.options import build_config
from anatomy.surgery import build_layer_stack
from tests.conftest import make_tiny_model

PROMPT = "The river"
FRANCE = "The capital of France is"  # the embedded Instruct model runs on from it without the chat template
TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<s>assistant:{% endif %}")


@pytest.fixture
def chat_tokenizer(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def by_hand(model, tokenizer, prompt: str = PROMPT, chat_template: bool = True, **kwargs) -> dict[str, list[int]]:
    inputs, _ = prompt_inputs(tokenizer, prompt, chat_template)
    return {mode: generate(model, tokenizer, inputs, max_new_tokens=6, seed=3, mode=mode, **kwargs) for mode in MODES}


def unaltered(prompt: str = PROMPT, **kwargs) -> GenerateConfig:
    """Both sides the original model: what differs is only what the config's other fields change."""
    return GenerateConfig(prompt=prompt, intervention="none", new_tokens=4, **kwargs)


def test_an_intervention_equals_the_model_zeroed_by_hand(tiny_tokenizer):
    model = make_tiny_model("llama", layers=4)
    before = fingerprint(model)
    out = generate_side_by_side(model, tiny_tokenizer, PROMPT, Alteration("zero", "1"), max_new_tokens=6, seed=3)
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for module in zeroed.model.layers[1].modules():
            if isinstance(module, nn.Linear):
                module.weight.zero_()
    assert {mode: pair["original"] for mode, pair in out.ids.items()} == by_hand(model, tiny_tokenizer)
    assert {mode: pair["altered"] for mode, pair in out.ids.items()} == by_hand(zeroed, tiny_tokenizer)
    assert out.ids["greedy"]["original"] != out.ids["greedy"]["altered"]
    assert fingerprint(model) == before


def test_a_plan_equals_the_stack_built_by_hand(tiny_tokenizer):
    model = make_tiny_model("llama", layers=4)
    out = generate_side_by_side(model, tiny_tokenizer, PROMPT, Alteration(plan="0-1,2x2,3"), max_new_tokens=6, seed=3)
    stacked = build_layer_stack(model, [0, 1, 2, 2, 3])  # the repeat as a separate copy with its own cache slot
    assert {mode: pair["altered"] for mode, pair in out.ids.items()} == by_hand(stacked, tiny_tokenizer)
    identity = generate_side_by_side(model, tiny_tokenizer, PROMPT, Alteration(plan="0-3"), max_new_tokens=6, seed=3)
    assert all(pair["original"] == pair["altered"] for pair in identity.ids.values())


def test_the_chat_template_switch_changes_the_input_ids(tiny_tokenizer, chat_tokenizer):
    model = make_tiny_model("llama", layers=4)
    raw_ids = tiny_tokenizer(PROMPT)["input_ids"]
    templated = run_generate(model, config=unaltered(), tokenizer=chat_tokenizer)
    raw = run_generate(model, config=unaltered(chat_template=False), tokenizer=chat_tokenizer)
    assert templated["chat_template"] is True and raw["chat_template"] is False
    assert raw["input_ids"] == raw_ids
    assert templated["input_ids"] == chat_tokenizer(f"<s>user: {PROMPT}</s><s>assistant:")["input_ids"]
    no_template = run_generate(model, config=unaltered(), tokenizer=tiny_tokenizer)
    assert no_template["chat_template"] is False and no_template["input_ids"] == raw_ids  # none to use: raw
    assert list(templated.table["side"]) == ["original", "altered"] * 2
    assert list(templated["differences"]["mode"]) == list(MODES)


def test_bad_configs_are_refused_before_any_work():
    with pytest.raises(AnatomyError, match="prompt is empty"):
        build_config(GenerateConfig, {"prompt": "  "})
    with pytest.raises(AnatomyError, match="--new-tokens must be <= 512"):
        build_config(GenerateConfig, {"new_tokens": 513})
    with pytest.raises(AnatomyError, match="must be <= 128 on this public app"):
        build_config(GenerateConfig, {"new_tokens": 129}, public=True)
    assert build_config(GenerateConfig, {"new_tokens": 129}).new_tokens == 129  # locally the declared range
    with pytest.raises(AnatomyError, match="Bad plan"):
        build_config(GenerateConfig, {"plan": "0-3,["})
    assert build_config(GenerateConfig, {"plan": " "}).plan is None


def test_the_tab_reads_a_plan_from_the_layers_box_and_refuses_an_empty_one():
    from space.tab_generate import GenerateInputs

    def config_of(kind: str, layers: str, chat_template: bool = True) -> GenerateInputs:
        return build_config(GenerateInputs, {"prompt": "Hello", "intervention": kind, "layers": layers,
                                             "chat_template": chat_template}, where=lambda p: repr(p.label))

    plan = config_of("plan", "0-9,[10-13]x2,14-29", False)
    assert plan.plan == "0-9,[10-13]x2,14-29" and plan.intervention == "none" and not plan.chat_template
    zero = config_of("zero", "3")
    assert zero.plan is None and zero.intervention == "zero" and zero.layers == "3" and zero.chat_template
    with pytest.raises(AnatomyError, match="plan is empty"):
        config_of("plan", " ")
    with pytest.raises(AnatomyError, match="Layers \\(0-based\\), or a plan"):  # the field's label on screen
        config_of("zero", "three")
    with pytest.raises(AnatomyError, match="Bad plan"):
        config_of("plan", "0-3,[")


@pytest.mark.slow
@pytest.mark.embedded
def test_embedded_chat_template_and_a_plan_equal_the_model_altered_by_hand(embedded):
    model, tokenizer = embedded.model, embedded.tokenizer
    before = fingerprint(model)
    templated = side_by_side_of(model, tokenizer, unaltered(FRANCE, plan="0-12,15x4,17-29"))
    raw = side_by_side_of(model, tokenizer, unaltered(FRANCE, chat_template=False))
    assert templated.chat_template and not raw.chat_template
    assert raw.input_ids == tokenizer(FRANCE)["input_ids"]
    assert templated.input_ids[:len(raw.input_ids)] != raw.input_ids
    assert tokenizer.decode(templated.input_ids).rstrip().endswith("<|im_start|>assistant")
    assert all(pair["original"] == pair["altered"] for pair in raw.ids.values())  # no alteration: equal sides
    stacked = build_layer_stack(model, [*range(13), 15, 15, 15, 15, *range(17, 30)])
    inputs, _ = prompt_inputs(tokenizer, FRANCE)
    assert templated.ids["greedy"]["altered"] == generate(stacked, tokenizer, inputs, max_new_tokens=4, seed=0,
                                                          mode="greedy")
    assert fingerprint(model) == before


@pytest.mark.embedded
def test_cli_generates_under_a_plan_with_the_prompt_sent_raw(tmp_path):
    from anatomy.cli import main

    assert main(["generate", "--prompt", FRANCE, "--plan", "0-12,15x4,17-29", "--no-chat-template", "--new-tokens",
                 "5", "--out", str(tmp_path)]) == 0
    loaded = Result.load(tmp_path, "generate")
    assert loaded["chat_template"] is False and loaded["alteration"] == "layer plan 0-12,15x4,17-29"
    assert list(loaded.table["side"]) == ["original", "altered"] * 2 and (loaded.table["tokens"] == 5).all()
    assert list(loaded["differences"]["mode"]) == list(MODES)
    assert "Chat template: switched off" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.embedded
def test_the_default_alteration_changes_the_answer_and_no_special_token_is_shown(embedded):
    """What a first visitor gets from Generate's defaults: a visible difference, in words, not markers."""
    model, tokenizer = embedded.model, embedded.tokenizer
    before = fingerprint(model)
    out = side_by_side_of(model, tokenizer, GenerateConfig())
    assert any(pair["original"] != pair["altered"] for pair in out.ids.values())
    assert "Paris" in out.texts["greedy"]["original"]
    shown = [*(t for mode in out.texts.values() for t in mode.values()),
             *(token for mode in out.tokens.values() for side in mode.values() for token in side)]
    assert not any("<|im_end|>" in text or "<|im_start|>" in text for text in shown)
    assert any(tokenizer.convert_ids_to_tokens(i) == "<|im_end|>" for i in out.ids["greedy"]["original"])
    assert fingerprint(model) == before
