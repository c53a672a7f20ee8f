"""The pieces of the public app's limits on their own: declared ranges and work, the turns' order, chat
templates in a child process, and models whose own forward fails."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch

from anatomy import work
from anatomy.chat import render
from anatomy.errors import AnatomyError
from anatomy.experiment import Experiment, registry
from anatomy.generate import prompt_inputs
from anatomy.layers import LayerAdapter
from anatomy.load import load_model
from anatomy.options import build_config, params
from anatomy.texts import EvalTextOptions
from space.limits import Deadline, OverTime, local_command
from space.turns import Limits, Turns, Visitor
from tests.conftest import make_tiny_model
from tests.families import make_family_model

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_every_experiment_declares_its_work_and_every_number_its_range():
    default_work = next(f for f in dataclasses.fields(Experiment) if f.name == "work").default
    for name, experiment in registry().items():
        assert experiment.work is not default_work, f"{name} does not declare its work"
        for param in params(experiment.config):
            numeric = isinstance(param.default, (int, float)) and not param.is_switch or (
                isinstance(param.default, tuple) and param.default and isinstance(param.default[0], (int, float)))
            if numeric:
                assert param.option.maximum is not None, f"{name}.{param.name} has no maximum"
                values = param.default if isinstance(param.default, tuple) else (param.default,)
                assert all(param.option.minimum is None or v >= param.option.minimum for v in values)
                assert all(v <= param.ceiling(public=True) for v in values), f"{name}.{param.name}: default over"


def test_the_public_ceiling_is_tighter_than_the_declared_range():
    recovery = registry()["recovery"].config
    assert build_config(recovery, {"steps": "5000"}).steps == 5000
    with pytest.raises(AnatomyError, match=r"--steps must be <= 1000 on this public app"):
        build_config(recovery, {"steps": "5000"}, public=True)
    with pytest.raises(AnatomyError, match=r"--steps must be <= 100000, got"):
        build_config(recovery, {"steps": "100001"})
    with pytest.raises(AnatomyError, match=r"Max tokens per text must be <= 256 on this public app"):
        EvalTextOptions.checked(True, max_length=257)
    with pytest.raises(AnatomyError, match=r"Characters of your own text must be <= 50000"):
        EvalTextOptions.checked(True, characters=50_001)


def test_the_work_of_a_recovery_grows_with_its_steps_and_weight_work_with_the_matrices(tiny_eval_set):
    model = make_tiny_model("llama", layers=4)
    shape = work.shape_of(model, tiny_eval_set)
    recovery, spectral = registry()["recovery"], registry()["spectral"]
    small = recovery.work(recovery.config(layers="1", steps=10), shape)
    assert recovery.work(recovery.config(layers="1", steps=1000), shape) > 50 * small
    wide = work.shape_of(make_tiny_model("llama", layers=8), tiny_eval_set)
    assert spectral.work(spectral.config(), wide) > spectral.work(spectral.config(), shape)
    assert work.seconds_per_token(model) > 0 and work.memory_bytes(shape, 64, train_tokens=128) > 0


def test_the_local_command_names_every_changed_field():
    recovery = registry()["recovery"].config
    config = build_config(recovery, {"layers": "1,2", "steps": "500"})
    assert local_command("recovery", "alice/open", config) == \
        "python -m anatomy recovery --model alice/open --layers 1,2 --steps 500"


def test_a_waiting_job_on_a_busy_model_does_not_hold_the_turn_of_a_free_one():
    turns, busy, free = Turns(Limits(slots=1)), threading.Lock(), threading.Lock()
    busy.acquire()  # a job of another server thread holds the busy model
    order: list[str] = []

    def job(name: str, lock: threading.Lock, address: str) -> None:
        with turns.admitted(Visitor(name, address=address)) as ticket:
            turns.wait(ticket, lock)
            order.append(name)

    first = threading.Thread(target=job, args=("on-busy", busy, "a"))
    first.start()
    time.sleep(0.3)
    second = threading.Thread(target=job, args=("on-free", free, "b"))
    second.start()
    second.join(timeout=5)
    assert order == ["on-free"] and first.is_alive()  # the later job ran; the earlier one still waits
    busy.release()
    first.join(timeout=5)
    assert order == ["on-free", "on-busy"]


def test_a_deadline_ends_forwards_between_layers_and_only_in_its_own_thread():
    model = make_tiny_model("llama", layers=4)
    cancel = threading.Event()
    deadline = Deadline(0.0, cancel, "python -m anatomy importance")
    loaded = type("Loaded", (), {"model": model})()
    with deadline.on_layers(loaded):
        with pytest.raises(OverTime, match="limit of 0 s"):
            model(input_ids=torch.tensor([[1, 2, 3]]))
        other: list[object] = []
        thread = threading.Thread(target=lambda: other.append(model(input_ids=torch.tensor([[1, 2]])).logits))
        thread.start()
        thread.join()
        assert len(other) == 1  # another visitor's forward on the same model is not this job's to end
    model(input_ids=torch.tensor([[1, 2, 3]]))  # the hooks are gone with the job
    assert len(LayerAdapter(model).layers) == 4


def test_a_chat_template_renders_in_a_child_as_transformers_renders_it(tiny_tokenizer):
    tiny_tokenizer.chat_template = TEMPLATE
    try:
        ids, templated = prompt_inputs(tiny_tokenizer, "hello there")
        expected = tiny_tokenizer.apply_chat_template([{"role": "user", "content": "hello there"}],
                                                      add_generation_prompt=True, return_dict=True)
        assert templated and ids["input_ids"][0].tolist() == list(expected["input_ids"])
        tiny_tokenizer.chat_template = "{% set ns = namespace(s='x') %}{% for i in range(60) %}" \
                                       "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
        start = time.monotonic()
        with pytest.raises(AnatomyError, match="failed to render"):  # 2^60 characters: out of the child's memory
            render(tiny_tokenizer, [{"role": "user", "content": "hi"}])
        assert time.monotonic() - start < 20
    finally:
        tiny_tokenizer.chat_template = None


def test_a_model_whose_own_forward_fails_gets_one_line(tmp_path, tiny_tokenizer):
    make_family_model("deepseek_v2").save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(AnatomyError, match=r"The transformers forward of .* itself fails \(RuntimeError: The size") \
            as caught:
        load_model(str(tmp_path))
    assert "\n" not in str(caught.value)
