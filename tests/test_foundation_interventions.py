"""Interventions change the model while active and restore it bit-identically on exit, error and interrupt."""

import pytest
import torch

from anatomy import interventions as iv
from anatomy.errors import AnatomyError
from anatomy.layers import LayerAdapter
from conftest import make_tiny_model

IDS = torch.randint(3, 300, (2, 9), generator=torch.Generator().manual_seed(0))


def _contexts(adapter):
    return {
        "zero": lambda: iv.zero(adapter, [2]),
        "scale": lambda: iv.scale(adapter, [1, 2], 0.5),
        "noise": lambda: iv.add_noise(adapter, [2], sigma=0.5, seed=1),
        "neighbour-mean": lambda: iv.neighbour_mean(adapter, 2),
        "skip": lambda: iv.skip(adapter, [2]),
        "assign": lambda: iv.assign({adapter.component(2, "self_attn.v_proj"):
                                     torch.ones_like(adapter.component(2, "self_attn.v_proj").matrix())}),
        "stacked": lambda: iv.intervention(adapter, "neighbour-mean", [1, 3]),
    }


@pytest.mark.parametrize("name", ["zero", "scale", "noise", "neighbour-mean", "skip", "assign", "stacked"])
def test_intervention_alters_then_restores(arch, name):
    model = make_tiny_model(arch)
    adapter = LayerAdapter(model)
    before = iv.fingerprint(model)
    with torch.no_grad():
        clean = model(IDS).logits
        with _contexts(adapter)[name]():
            altered = model(IDS).logits
        after = model(IDS).logits
    assert not torch.allclose(altered, clean)
    assert torch.equal(after, clean)
    assert iv.fingerprint(model) == before


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("name", ["zero", "noise", "neighbour-mean", "skip", "stacked"])
def test_restores_on_exception_and_interrupt(name, error):
    model = make_tiny_model("gpt2")
    adapter = LayerAdapter(model)
    before = iv.fingerprint(model)
    modules = list(adapter.layers)
    with pytest.raises(error):
        with _contexts(adapter)[name]():
            assert iv.fingerprint(model) != before or name == "skip"
            raise error()
    assert iv.fingerprint(model) == before
    assert list(adapter.layers) == modules


def test_neighbour_mean_values_and_boundaries():
    model = make_tiny_model("llama")
    adapter = LayerAdapter(model)
    w = lambda layer: adapter.component(layer, "mlp.up_proj").weight.clone()  # noqa: E731
    with iv.neighbour_mean(adapter, 2):
        assert torch.allclose(w(2), (w(1) + w(3)) / 2)
    with iv.neighbour_mean(adapter, 0, boundary="one-neighbour"):
        assert torch.equal(w(0), w(1))
    original = w(5)
    with iv.neighbour_mean(adapter, 5, boundary="untouched"):
        assert torch.equal(w(5), original)
    with pytest.raises(AnatomyError, match="boundary"):
        with iv.neighbour_mean(adapter, 1, boundary="nope"):
            pass


def test_noise_statistics_and_seed():
    model = make_tiny_model("llama", layers=3)
    adapter = LayerAdapter(model)
    ref = adapter.component(1, "mlp.down_proj")
    original = ref.weight.clone()
    with iv.add_noise(adapter, [1], sigma=0.5, seed=3):
        first = ref.weight - original
    with iv.add_noise(adapter, [1], sigma=0.5, seed=3):
        again = ref.weight - original
    assert torch.equal(first, again)
    assert abs(first.std().item() / (0.5 * original.std().item()) - 1) < 0.1
    assert abs(first.mean().item()) < 0.05 * original.std().item()


def test_skip_makes_layer_identity():
    model = make_tiny_model("llama", layers=2)
    adapter = LayerAdapter(model)
    with iv.skip(adapter, [0, 1]), torch.no_grad():
        logits = model(IDS).logits
        expected = adapter.logits(model.model.embed_tokens(IDS))
    torch.testing.assert_close(logits, expected)


def test_unknown_intervention_and_bad_sigma():
    adapter = LayerAdapter(make_tiny_model("llama"))
    with pytest.raises(AnatomyError, match="Unknown intervention"):
        with iv.intervention(adapter, "melt", [0]):
            pass
    with pytest.raises(AnatomyError, match="sigma"):
        with iv.add_noise(adapter, [0], sigma=-1):
            pass
    with pytest.raises(AnatomyError, match="No layers"):
        with iv.zero(adapter, []):
            pass


def test_body_of_an_intervention_can_train():
    """The edit itself runs without autograd, but the caller's code inside the context keeps gradients."""
    model = make_tiny_model("llama", layers=3)
    adapter = LayerAdapter(model)
    for context in (iv.add_noise(adapter, [1]), iv.zero(adapter, [1]), iv.scale(adapter, [1], 0.5),
                    iv.neighbour_mean(adapter, 1)):
        with context:
            assert torch.is_grad_enabled()
            loss = model(IDS, labels=IDS).loss
            loss.backward()
        assert model.model.layers[1].mlp.up_proj.weight.grad is not None
        model.zero_grad(set_to_none=True)
