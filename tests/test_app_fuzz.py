"""Hypothesis against every app endpoint through a real server: whatever the inputs (empty, huge, binary,
unicode, right-to-left, "nan" in number lists, negative or huge numbers), a call either succeeds or ends in
a one-line message, never a traceback, and the shared model's weights are the same afterwards. Costly sizes
(steps, repeats, positions) stay small so the search spends its time on the parsers and validators."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anatomy.experiments.budget import RANGES as RANGE_FIELDS, BudgetConfig
from anatomy.experiments.manipulate import STRATEGIES
from anatomy.experiments.prune import CRITERIA
from anatomy.interventions import ABLATION_MODES, BOUNDARY_CONVENTIONS, INTERVENTION_KINDS, fingerprint
from anatomy.layers import COMPONENTS
from anatomy.load import LoadedModel
from anatomy.options import params
from anatomy.plans import VARIANTS
from anatomy.public import REFUSED
from space.models import CACHE
from space.tabs import ManipulateInputs, PruneInputs
from tests.conftest import make_tiny_model
from tests.hub_fake import FakeHub

RANGES = {p.name: p.text(p.default) for p in params(BudgetConfig) if p.name in RANGE_FIELDS}  # as typed

SPEC = "fuzz-tiny"
FUZZ = settings(max_examples=8, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# texts as visitors (and attackers) type them: control and NUL bytes, right-to-left marks, emoji, long runs
hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "\u202eall\u202c", "مرحبا بالعالم", "1-\u0663", "0,,1", "-1", "1e309", "nan",
                     "inf", "0-99999999999999999999", "[0-1]x999999999999", "💥" * 50, "a" * 5000, "\n\n\n",
                     "0" * 400, "../../etc/passwd", "0-2,[1-2]x3,3", "all", "ALL", " 0 - 2 ", "3-0", "1e-320"]))
# near-valid layer lists and number lists, so the search reaches past the first check into the job
layerish = st.lists(st.one_of(st.integers(-3, 9).map(str),
                              st.tuples(st.integers(-3, 9), st.integers(-3, 9)).map(lambda t: f"{t[0]}-{t[1]}")),
                    max_size=4).map(",".join)
floatish = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-5, 5).map(str)),
                    min_size=1, max_size=4).map(",".join)
textish = st.one_of(hostile_text, layerish, floatish)
# gradio_client sends JSON, which has no NaN or infinity: every other number
numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**12, 10**12))
small = st.integers(-3, 4)  # sizes that cost time: small, negative and zero included
# JSON as an API client may send it for a table (budget's importance run): nested lists and objects of any values
jsonish = st.recursive(st.none() | st.booleans() | numbers | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                           st.sampled_from(["headers", "data", "layer", "class", "anti_layer_candidate"]), inner,
                           max_size=4), max_leaves=12).map(json.dumps)
EVAL = {"spec": SPEC, "n_sentences": 2, "custom_text": "", "max_length": 16}
HOSTILE_EVAL = {"n_sentences": numbers, "custom_text": hostile_text, "max_length": st.one_of(small, numbers)}


def choice(valid) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(list(valid)), st.text(max_size=12))


def mutated(valid: dict, hostile: dict[str, st.SearchStrategy], least: int = 0) -> st.SearchStrategy[list]:
    """The valid arguments, in order, with `least` to two of them replaced by hostile values (none: a normal run)."""
    def replace(keys: frozenset) -> st.SearchStrategy[list]:
        return st.tuples(*(hostile[k] if k in keys else st.just(v) for k, v in valid.items())).map(list)
    return st.frozensets(st.sampled_from(sorted(hostile)), min_size=least, max_size=2).flatmap(replace)


@pytest.fixture(scope="module")
def client(tiny_tokenizer, app_url):
    CACHE.put(SPEC, LoadedModel(make_tiny_model("llama", layers=4), tiny_tokenizer, "tiny", "test"))
    hub = FakeHub({})  # any Hub id the search makes up is answered "not found" at once
    with pytest.MonkeyPatch.context() as patch:
        hub.install(patch)
        yield Client(app_url, verbose=False)
        hub.uninstall()


def weights() -> str:
    with CACHE.use(SPEC) as loaded:
        return fingerprint(loaded.model)


def call(client: Client, api: str, *args) -> str | None:
    """None when the call succeeded; else its message, which must be one line and no traceback."""
    try:
        client.predict(*args, api_name=api)
        return None
    except Exception as err:  # noqa: BLE001 - the message is what is checked
        message = str(err)
    assert "Traceback" not in message and 'File "' not in message, message
    assert message.strip() and "\n" not in message.strip(), message
    return message


@pytest.fixture(scope="module")
def intact(client) -> str:
    return weights()


@FUZZ
@given(spec=hostile_text)
def test_model_box(client, spec):
    call(client, "/check_model", spec)
    call(client, "/load_model", spec)


@FUZZ
@given(spec=hostile_text)
def test_model_box_in_public_mode_opens_nothing_on_the_server(client, spec, monkeypatch):
    monkeypatch.setenv("ANATOMY_PUBLIC", "1")
    message = call(client, "/load_model", spec)
    stripped = spec.strip()
    if stripped != "embedded" and (stripped.startswith(("/", ".", "~")) or stripped.count("/") != 1):
        assert message is not None and message.endswith(REFUSED), (spec, message)


ENDPOINTS = {
    "/importance": ({**EVAL, "mode": "zero", "boundary": "one-neighbour", "layers": "0-1"},
                    {**HOSTILE_EVAL, "mode": choice(ABLATION_MODES), "boundary": choice(BOUNDARY_CONVENTIONS),
                     "layers": textish}),
    "/interventions": ({**EVAL, "kind": "scale", "layers": "1", "values": "0.5", "components": [], "seed": 0,
                        "boundary": "one-neighbour"},
                       {**HOSTILE_EVAL, "kind": choice(INTERVENTION_KINDS), "layers": textish, "values": textish,
                        "components": st.lists(choice(COMPONENTS), max_size=3), "seed": numbers}),
    "/generate": ({"spec": SPEC, "prompt": "The capital of France is", "kind": "zero", "layers": "1", "value": 0.5,
                   "seed": 0, "new_tokens": 4, "chat_template": True},
                  {"prompt": hostile_text, "kind": choice((*INTERVENTION_KINDS, "plan")), "layers": textish,
                   "value": numbers, "seed": numbers, "new_tokens": st.one_of(small, st.sampled_from([513, 10**9])),
                   "chat_template": st.booleans()}),
    "/manipulate": ({**EVAL, "layers": "1", "threshold": 10, "strategies": ["scale"], "alphas": "0.5", "rank": 0,
                     "tasks": "", "source": ManipulateInputs.GIVEN},
                    {**HOSTILE_EVAL, "source": choice(ManipulateInputs.SOURCES), "layers": textish,
                     "threshold": numbers, "strategies": st.lists(choice(STRATEGIES), max_size=3), "alphas": textish,
                     "rank": small}),
    "/prune": ({**EVAL, "ks": "1", "criteria": ["last"], "ablation": "skip", "tasks": "",
                "source": PruneInputs.COMPUTE},
               {**HOSTILE_EVAL, "ks": textish, "criteria": st.lists(choice(CRITERIA), max_size=3),
                "ablation": choice(ABLATION_MODES), "source": choice(PruneInputs.SOURCES)}),
    "/plans": ({**EVAL, "variants": ["repeat"], "sizes": "2", "plans": "", "loops": 2, "seed": 0, "repeats": 1,
                   "tokens": 2, "batched": False, "tasks": False},
                  {**HOSTILE_EVAL, "variants": st.lists(choice(VARIANTS), max_size=2), "sizes": textish,
                   "plans": textish, "loops": small, "seed": numbers, "repeats": small, "tokens": small}),
    "/structure": ({"spec": SPEC, "shuffles": 2, "seed": 0}, {"shuffles": small, "seed": numbers}),
    "/spectral": ({"spec": SPEC, "min_tail": 4}, {"min_tail": st.one_of(small, numbers)}),
    "/predictability": ({**EVAL, "positions": 50, "ridge": 1.0, "multi": 2},
                        {**HOSTILE_EVAL, "positions": st.integers(-5, 300), "ridge": numbers, "multi": small}),
    "/budget": ({"class_only": True, "b_max": 200, **{name: value for name, value in RANGES.items()}, "core": 1.0,
                 "at_once": 10, "rule": True, "anti": True, "importance": ""},
                {"b_max": numbers, **{name: textish for name in RANGES}, "core": numbers, "at_once": numbers,
                 "importance": st.one_of(hostile_text, jsonish)}),
}
SLOW = {"/structure": 3, "/spectral": 3, "/plans": 4}  # ~10 s a call on CI: fewer examples


@pytest.mark.slow  # the search: 8 examples through the server for each endpoint
@pytest.mark.parametrize("api", sorted(ENDPOINTS))
def test_endpoint(client, intact, api):
    valid, hostile = ENDPOINTS[api]
    assert set(hostile) <= set(valid)  # every hostile value replaces an argument
    if api == "/budget":  # it reads the session's importance run: make one first
        call(client, "/importance", *ENDPOINTS["/importance"][0].values())

    @settings(FUZZ, max_examples=SLOW.get(api, FUZZ.max_examples))
    @given(args=mutated(valid, hostile, least=int(api in SLOW)))
    def search(args):
        call(client, api, *args)
        assert weights() == intact

    if api not in SLOW:  # the valid arguments run (the slow ones are run in test_app_experiments)
        assert call(client, api, *valid.values()) is None
    search()


@settings(FUZZ, max_examples=2)
@given(args=mutated({**EVAL, "layers": "1", "steps": 2, "every": 2, "sigma": 0.5, "lr": 1e-4, "seed": 0},
                    {**HOSTILE_EVAL, "layers": textish, "steps": small, "every": small, "sigma": numbers,
                     "lr": numbers, "seed": numbers}, least=1))  # the valid run is test_app_experiments' own
def test_recovery(client, intact, args):
    call(client, "/recovery", *args)
    assert weights() == intact
