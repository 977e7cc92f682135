import subprocess
import sys

import pytest
import torch
from torch import nn

from flowtts.sampling.checkpoint import checkpoint


def _net(seed=0, p=0.3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Dropout(p), nn.Linear(16, 6)).double().train()


def _grads(net, x, captured, use_checkpoint):
    def fn(a):
        return net(a * captured).tanh()

    torch.manual_seed(11)
    out = checkpoint(fn, x) if use_checkpoint else fn(x)
    out = (out * out.detach().flip(0)).sum()  # a loss whose gradient depends on every element
    tensors = [x, captured, *net.parameters()]
    return torch.autograd.grad(out, tensors), torch.get_rng_state()


def test_gradients_equal_plain_backprop_with_dropout_and_rng_left_as_without_checkpointing():
    net = _net()
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    base = torch.randn(6, dtype=torch.float64, requires_grad=True)
    captured = base * 2  # a non-leaf tensor the function closes over
    plain, rng_plain = _grads(net, x, captured, False)
    ckpt, rng_ckpt = _grads(net, x, captured, True)
    for a, b in zip(plain, ckpt):
        assert torch.equal(a, b)
    assert torch.equal(rng_plain, rng_ckpt)  # the recomputation's RNG replay does not leak
    assert plain[0].abs().sum() > 0 and plain[1].abs().sum() > 0


def test_nothing_is_saved_for_backward_but_the_arguments():
    net = _net(p=0.0)
    x = torch.randn(64, 6, dtype=torch.float64, requires_grad=True)
    seen = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: seen.append(t.shape) or t, lambda t: t):
        out = checkpoint(net, x)
    assert seen == []  # every tensor the network saves went to the checkpoint, which keeps none of them
    out.sum().backward()
    reference = x.grad.clone()
    x.grad = None
    net(x).sum().backward()
    assert torch.equal(reference, x.grad)


def test_backward_twice_with_retain_graph_recomputes_again():
    net = _net(p=0.0)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    out = checkpoint(net, x).pow(2).sum()
    (first,) = torch.autograd.grad(out, x, retain_graph=True)
    (second,) = torch.autograd.grad(out, x)
    assert torch.equal(first, second)


def test_autocast_state_is_replayed():
    net = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8))
    x = torch.randn(4, 8, requires_grad=True)
    grads = []
    for use in (False, True):
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = checkpoint(net, x) if use else net(x)
        out.float().pow(2).sum().backward()
        grads.append(x.grad.clone())
    assert torch.equal(*grads)


def test_a_function_that_changes_between_runs_is_reported():
    calls = []

    def fn(a):
        calls.append(1)
        return a.exp() if len(calls) == 1 else a.exp().exp()

    x = torch.randn(3, requires_grad=True)
    out = checkpoint(fn, x)
    with pytest.raises(RuntimeError, match="saved 1 tensors for backward when it ran and 2"):
        out.sum().backward()


def test_without_grad_mode_it_is_a_plain_call():
    x = torch.randn(3, requires_grad=True)
    with torch.no_grad():
        out = checkpoint(torch.exp, x)
    assert out.grad_fn is None and torch.equal(out, x.exp())


def test_checkpointing_does_not_import_dynamo():
    code = (
        "import sys, torch\n"
        "from flowtts.sampling.checkpoint import checkpoint\n"
        "x = torch.randn(3, requires_grad=True)\n"
        "checkpoint(lambda a: a.sin() * a, x).sum().backward()\n"
        "assert x.grad is not None\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
