"""kneuron.attribution.passes: the fused objective (prob / logprob of the target) and its gradient."""
import pytest
import torch

from kneuron.attribution.passes import objective_values


@pytest.mark.parametrize("objective", ["prob", "logprob"])
def test_fused_objective_gradient(objective):
    logits = torch.randn(5, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: objective_values(z, 3, objective), (logits,))
    want = torch.log_softmax(logits, -1)[:, 3]
    want = want.exp() if objective == "prob" else want
    assert torch.allclose(objective_values(logits, 3, objective), want)
    with pytest.raises(ValueError, match="objective"):
        objective_values(logits, 3, "nope")

