"""A row's slots as players: an id repeated in one bag is ONE entry.

Global ids of different fields never coincide, so two slots of a row holding the same id
are two values of one bag. The first such slot *leads*: it is the player (its pooling
coefficient becomes the sum of the copies', the pooled vector is unchanged); the later
copies *follow*: they are no player of their own (null), and whenever their leader is
removed they take the placeholder with it, as the deployed table would (one table entry,
read twice). The rows themselves are never rewritten: the model pools them as it was
trained to (a bag that is not weighted ignores weights, so merging by weights is not an
option).
"""

from __future__ import annotations

import torch


def slot_leaders(x: torch.Tensor) -> torch.Tensor:
    """x (B, slots) global ids (-1: pad) -> LongTensor (B, slots): the slot leading each slot
    (the first slot of the row holding its id; a pad and a first copy lead themselves)."""
    order = torch.argsort(x, dim=1, stable=True)  # equal ids: earliest slot first
    ids = x.gather(1, order)
    index = torch.arange(x.shape[1], device=x.device).expand_as(x)
    first = torch.ones_like(ids, dtype=torch.bool)
    first[:, 1:] = ids[:, 1:] != ids[:, :-1]
    head = torch.where(first, index, torch.zeros_like(index)).cummax(1).values
    leaders = torch.empty_like(order).scatter_(1, order, order.gather(1, head))
    return torch.where(x < 0, index, leaders)


def followers(x: torch.Tensor) -> torch.Tensor:
    """bool (B, slots): slots holding a copy of an id an earlier slot of the row holds."""
    index = torch.arange(x.shape[1], device=x.device)
    return slot_leaders(x) != index


def merge_coefficients(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """coef (B, slots) -> the players' coefficients: each leader holds the sum of its copies',
    a follower 0 (the pooled vector sum_s coef[s] E[x[s]] is unchanged)."""
    return torch.zeros_like(coef).scatter_add_(1, slot_leaders(x), coef)


def tie(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """values (B, slots*d, ...) per player -> the same with each follower's values replaced
    by its leader's (a follower is removed when its leader is)."""
    b, slots = x.shape
    d = values.shape[1] // slots
    lead = slot_leaders(x)
    index = (lead.unsqueeze(2) * d + torch.arange(d, device=x.device)).reshape(b, -1)
    index = index.view(b, -1, *([1] * (values.dim() - 2))).expand_as(values)
    return values.gather(1, index)
