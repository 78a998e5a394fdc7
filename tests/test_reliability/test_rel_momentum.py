"""Class 12 of issue 9 (optimiser part): SGD's momentum in PyTorch's form by default (v ← μv + ∇C, w ← w - ηv),
the book's (v ← μv - η∇C, w ← w + v) on request. The two agree at constant η and part when η changes; at
η = 0 PyTorch's form stops the weights, the book's keeps moving them."""
import numpy as np
import pytest

from deepscope import nn, optim

torch = pytest.importorskip("torch")


def twin_models(seed=0):
    rng = np.random.default_rng(seed)
    w, b = rng.standard_normal((3, 5)), rng.standard_normal(3)
    ours = nn.Linear(5, 3)
    ours.to(np.float64)
    ours.weight.data[...] = w
    ours.bias.data[...] = b
    theirs = torch.nn.Linear(5, 3).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(w))
        theirs.bias.copy_(torch.from_numpy(b))
    return ours, theirs


def train_both(lrs, momentum=0.9, weight_decay=0.0, form="pytorch"):
    """Steps of SGD on the same batches, η taking the values ``lrs`` (a schedule), in both libraries."""
    ours, theirs = twin_models()
    opt = optim.SGD(ours.parameters(), lr=lrs[0], momentum=momentum, weight_decay=weight_decay, momentum_form=form)
    # PyTorch decays biases too; give it weight decay on the weight only, as the book (and we) do
    topt = torch.optim.SGD([{"params": [theirs.weight], "weight_decay": weight_decay},
                            {"params": [theirs.bias], "weight_decay": 0.0}], lr=lrs[0], momentum=momentum)
    rng = np.random.default_rng(1)
    for lr in lrs:  # the same gradients, given to both optimisers: only their updates are compared
        gw, gb = rng.standard_normal((3, 5)), rng.standard_normal(3)
        opt.lr = lr
        for group in topt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        ours.weight.grad[...], ours.bias.grad[...] = gw, gb
        opt.step()
        theirs.weight.grad, theirs.bias.grad = torch.from_numpy(gw.copy()), torch.from_numpy(gb.copy())
        topt.step()
    return ours, theirs


SCHEDULE = [0.1] * 3 + [0.05] * 3 + [0.0] * 2 + [0.2] * 2


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_default_form_matches_torch_sgd_when_a_schedule_changes_eta(weight_decay):
    ours, theirs = train_both(SCHEDULE, weight_decay=weight_decay)
    np.testing.assert_allclose(ours.weight.data, theirs.weight.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.bias.data, theirs.bias.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_book_form_parts_from_torch_when_eta_changes_but_not_before():
    ours, theirs = train_both([0.1] * 4, form="book")
    np.testing.assert_allclose(ours.weight.data, theirs.weight.detach().numpy(), rtol=1e-10)  # constant η: same
    ours, theirs = train_both(SCHEDULE, form="book")
    assert np.abs(ours.weight.data - theirs.weight.detach().numpy()).max() > 1e-3


@pytest.mark.parametrize("form, moves", [("pytorch", False), ("book", True)])
def test_at_eta_zero_only_the_book_form_still_moves_the_weights(form, moves):
    model = nn.Linear(5, 3)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, momentum_form=form)
    x = np.ones((2, 5), np.float32)
    for lr in (0.1, 0.0):
        opt.lr = lr
        before = model.weight.data.copy()
        opt.zero_grad()
        model(x)
        model.backward(np.ones((2, 3), np.float32))
        opt.step()
    assert (not np.array_equal(before, model.weight.data)) == moves


def test_velocity_state_converts_between_forms_and_resumes_identically():
    """A checkpoint written in the book's form (every checkpoint before this change) resumes in PyTorch's
    form taking exactly the same steps at the same η."""
    def run(form_first, form_then):
        model = nn.Linear(5, 3)
        model.to(np.float64)
        model.weight.data[...] = 0.5
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, momentum_form=form_first)
        rng = np.random.default_rng(4)
        for step in range(6):
            if step == 3:
                state = opt.state_dict()
                if form_first == "book":
                    state.pop("momentum_form")  # as old checkpoints were written
                opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, momentum_form=form_then)
                opt.load_state_dict(state)
            opt.zero_grad()
            model(rng.standard_normal((2, 5)))
            model.backward(rng.standard_normal((2, 3)))
            opt.step()
        return model.weight.data.copy()
    reference = run("book", "book")
    np.testing.assert_allclose(run("book", "pytorch"), reference, rtol=1e-12)
    np.testing.assert_allclose(run("pytorch", "book"), reference, rtol=1e-12)
