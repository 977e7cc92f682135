import torch

from flowtts.cli.demo import check_cache_contract


def test_cache_contract_report_reflects_the_two_paths():
    grad_before = torch.is_grad_enabled()
    report = check_cache_contract(steps=3)
    assert torch.is_grad_enabled() == grad_before
    assert report["cache=True output has grad_fn"] is False
    assert report["cache=True leaves model in eval mode"] is True
    assert report["grad mode restored after cache=False"] is True
    assert report["cache=False keeps train mode"] is True
    assert report["max |cache=True - cache=False|"] < 1e-5
    reached, total = map(int, report["parameters reached by the gradient"].split("/"))
    assert reached > 0.9 * total
