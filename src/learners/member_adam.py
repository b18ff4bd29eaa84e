"""Adam over stacked member parameters, with one step count per member.

With several seeds in one process every parameter has a leading member dimension ``K``. torch's
Adam keeps one ``step`` per parameter tensor, so all members would share one bias correction:
right while they train in lockstep, wrong as soon as their counts differ, e.g. after a group
resumes from members' checkpoints saved at different iterations (each member's separate run would
have corrected by its own count). Here ``step`` is a vector ``[K]`` and only the members that train
(``active``) advance: their moments, counts and weights change, the others' stay as they were.

The update is torch's (``torch.optim.Adam``, no weight decay, no amsgrad), element for element:
``m <- lerp(m, g, 1 - beta1)``, ``v <- beta2 v + (1 - beta2) g^2``,
``p <- p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``, with ``t`` the member's
count; an inactive member's rows are put back after the step (``inactive_rows_kept``, which
also serves other optimisers over stacked parameters). A member's slice of the state (``step[k]`` a 0-dim tensor, the moments' ``[k]`` rows) is
exactly a one-member Adam's state, so checkpoints are laid out as separate runs' are.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Optional, Tuple

import torch


class MemberAdam(torch.optim.Optimizer):
    def __init__(self, params: Iterable[torch.Tensor], members: int, lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if members < 1:
            raise ValueError(f"members must be a positive number of stacked members, got {members}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.members = members
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() == 0 or p.shape[0] != members:
                    raise ValueError(f"MemberAdam needs parameters with a leading member dimension of "
                                     f"{members}, got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None, active: Optional[torch.Tensor] = None):
        """One Adam step for the ``active`` members (bool ``[K]``, default all)."""
        if closure is not None:
            raise ValueError("MemberAdam.step does not take a closure")
        K = self.members
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and not self.state[p]:  # before the rows are kept: fresh
                    self.state[p]["step"] = torch.zeros(K, dtype=torch.float32)  # is 0 steps
                    self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    self.state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if active is not None and not bool(active.all()):
            with inactive_rows_kept(self, active):
                self._step_everyone()
        else:
            self._step_everyone()

    def _step_everyone(self) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            self._update_everyone(params, beta1, beta2, group["lr"], group["eps"])

    def _update_everyone(self, params, beta1, beta2, lr, eps) -> None:
        """Every member's step, in place and over all parameters at once."""
        if not params:
            return
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        step_sizes, bias_corrections2_sqrt = [], []
        corrections = {}  # the parameters of a group usually share their members' counts
        for p, state in zip(params, states):
            state["step"] += 1
            key = (tuple(state["step"].tolist()), p.dtype, p.device)
            if key not in corrections:
                t = state["step"].double()
                corrections[key] = ((lr / (1 - beta1 ** t)).to(p.dtype).to(p.device),
                                    ((1 - beta2 ** t) ** 0.5).to(p.dtype).to(p.device))
            step_size, bias_correction2_sqrt = corrections[key]
            view = (p.shape[0],) + (1,) * (p.dim() - 1)
            step_sizes.append(step_size.view(view))
            bias_corrections2_sqrt.append(bias_correction2_sqrt.view(view))
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_corrections2_sqrt)
        torch._foreach_add_(denom, eps)
        updates = torch._foreach_mul(exp_avgs, step_sizes)
        torch._foreach_div_(updates, denom)
        torch._foreach_sub_(params, updates)


@contextmanager
def inactive_rows_kept(optimiser: torch.optim.Optimizer, active: torch.Tensor):
    """Whatever ``optimiser`` steps inside, the members that are not ``active`` (bool ``[K]``)
    keep their rows: weights and every per-member state buffer (moments, MemberAdam's counts)."""
    inactive = torch.nonzero(~active.to(torch.bool)).flatten().cpu()
    members = int(active.numel())

    def rows(tensor):
        return tensor.detach()[inactive.to(tensor.device)].clone()

    saved = []
    for group in optimiser.param_groups:
        for p in group["params"]:
            state = {name: rows(value) for name, value in optimiser.state.get(p, {}).items()
                     if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == members}
            saved.append((p, rows(p), state))
    yield
    if inactive.numel() == 0:
        return
    with torch.no_grad():
        for p, weights, state in saved:
            p[inactive.to(p.device)] = weights
            for name, value in state.items():
                optimiser.state[p][name][inactive.to(value.device)] = value
