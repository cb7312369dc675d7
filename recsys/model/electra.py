"""ELECTRA for item sequences: replaced-item detection next to masked-item prediction.

ELECTRA (Clark et al., ICLR 2020) trains a small generator with masked-language modelling and the main
encoder (the discriminator) to tell, at *every* position, whether the token is the original or one the
generator put there, so every position gives a training signal instead of the ~15-30% that are masked.
ELECRec (Chen et al., SIGIR 2022) carried it to next-item recommendation. Here:

* the **generator** is a narrow, shallow :class:`BERT4Rec` (``model.electra.generator_hidden`` wide,
  ``generator_layers`` deep) that shares the discriminator's item table (ALBERT-style factorised when its
  width differs) and is trained with the same masked-item loss;
* at the masked positions, items are **sampled** from the generator's distribution (no gradient flows
  through the sample, as in ELECTRA); the other positions keep their real item;
* the discriminator — the model that is shipped and ranks items — reads this corrupted sequence (no
  [MASK] anywhere) and a one-unit head on its last-block states predicts "replaced" at every real
  position (binary cross-entropy); a sampled item equal to the original counts as real.

The discriminator keeps its own masked-item loss as well, since ranking the next item is its job; the
replaced-item detection is an auxiliary objective weighted by ``model.electra.weight``. The generator
and the head are training-only: they live in the Lightning module's checkpoints, not in the bundle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.config import ElectraConfig
from recsys.model.bert4rec import PAD, BERT4Rec

__all__ = ["ReplacedItemDetection"]

_SAMPLE_BLOCK_BYTES = 32 * 2**20  # generator scores are sampled block by block: [rows, V] float32 each


class ReplacedItemDetection(nn.Module):
    """The generator and the detection head of ELECTRA for ``model`` (the discriminator).

    Args:
        model: the discriminator; its item table is shared with the generator.
        cfg: ``model.electra`` (generator width and depth, loss weight).
    """

    def __init__(self, model: BERT4Rec, cfg: ElectraConfig) -> None:
        super().__init__()
        self.cfg = cfg
        generator_cfg = model.cfg.model_copy(
            update={
                "hidden_size": cfg.generator_hidden,
                "n_layers": cfg.generator_layers,
                "embedding_size": model.output_size,  # the shared item table's width
                "share_layers": False,
                "drop_path": 0.0,
                "electra": ElectraConfig(),
            }
        )
        self.generator = BERT4Rec(model.n_items, generator_cfg)
        self.generator.item_embedding.weight = model.item_embedding.weight  # one item table for both
        self.head = nn.Linear(model.cfg.hidden_size, 1)

    @torch.no_grad()
    def sample(self, hidden: Tensor, generator: torch.Generator | None) -> Tensor:
        """One item per row of the generator's ``hidden: [M, e]``, drawn from its softmax over the
        catalogue (items 1..n_items), in row blocks so that no ``[M, V]`` tensor is materialised."""
        M = hidden.shape[0]
        V = self.generator.vocab_size
        rows = max(1, _SAMPLE_BLOCK_BYTES // (4 * V))
        draws = []
        for start in range(0, M, rows):
            scores = self.generator.score(hidden[start : start + rows]).float()  # [m, V], PAD/MASK -inf
            probs = scores.softmax(dim=-1).to(hidden.device if generator is None else generator.device)
            draws.append(torch.multinomial(probs, 1, generator=generator)[:, 0])
        return torch.cat(draws).to(hidden.device) if draws else hidden.new_zeros(0, dtype=torch.long)

    def forward(
        self,
        model: BERT4Rec,
        items: Tensor,
        inputs: Tensor,
        selected: Tensor,
        loss_fn: nn.Module,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The generator's masked-item loss, the discriminator's replaced-item loss, and the share of
        real positions the generator replaced.

        Args:
            model: the discriminator.
            items: ``Long[B, L]`` the original sequences; ``inputs`` the masked ones (``mask_items``).
            selected: ``Bool[B, L]``, the masked positions.
            loss_fn: the masked-item loss (a :class:`~recsys.model.losses.RecLoss`).
            generator: the step's random generator (negatives and the generator's samples).
        """
        targets = items[selected]  # [M]
        g_hidden = self.generator.hidden_at(inputs, selected)  # [M, e]
        g_loss = loss_fn(g_hidden, targets, self.generator, generator=generator)
        corrupted = items.clone()
        corrupted[selected] = self.sample(g_hidden.detach(), generator)
        real = items != PAD  # [B, L]
        replaced = (corrupted != items) & real  # a sampled original counts as real, as in ELECTRA
        states = model.states(corrupted)  # [B, L, d]
        logits = self.head(states[real]).squeeze(-1).float()  # [N]
        d_loss = F.binary_cross_entropy_with_logits(logits, replaced[real].float())
        return g_loss, d_loss, replaced.sum() / real.sum().clamp(min=1)
