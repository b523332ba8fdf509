"""The vision-language model: image tokens spliced into a causal language model at the `<image>` placeholder.

Every sequence holds the `<image>` id exactly once (LLaVA's single-image layout), so splicing N image tokens
lengthens every row by N - 1 and right (or left) padding stays where it was: no re-padding. The blind baseline
is the same class without `vision` and `connector`: its sequences hold no `<image>` and the language model
answers from the question alone.
"""

import torch
from torch import nn

from clip_train.vlm.text import IGNORE


class VisionLanguageModel(nn.Module):
    """`language_model` (a transformers causal LM) reading image tokens `connector(vision(pixels))` at `image_token_id`.

    vision: pixels (B, 3, H, W) -> (B, N, image_width); connector: -> (B, N, lm_width). Both None: blind.
    """

    def __init__(self, language_model: nn.Module, image_token_id: int, vision: nn.Module | None, connector: nn.Module | None):
        super().__init__()
        if (vision is None) != (connector is None):
            raise ValueError("a VLM has both vision and connector, or neither (the blind baseline)")
        self.language_model, self.vision, self.connector = language_model, vision, connector
        self.image_token_id = image_token_id

    @property
    def blind(self) -> bool:
        return self.vision is None

    def splice(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixels: torch.Tensor | None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, L) ids -> (inputs_embeds (B, L', D), attention_mask (B, L'), labels (B, L') or None), L' = L + N - 1
        with image tokens (whose mask is 1 and label IGNORE) in place of `<image>`; L' = L when blind."""
        embeds = self.language_model.get_input_embeddings()(input_ids)
        places = input_ids == self.image_token_id
        if self.blind:
            if places.any():
                raise ValueError("the blind model was given <image> tokens")
            return embeds, attention_mask, labels
        if not (places.sum(dim=1) == 1).all():
            raise ValueError(f"every sequence must hold the <image> token once; counts {places.sum(dim=1).tolist()}")
        image = self.connector(self.vision(pixels)).to(embeds.dtype)
        at = places.int().argmax(dim=1).tolist()
        count = image.shape[1]
        ones = attention_mask.new_ones(count)
        rows, masks, targets = [], [], []
        for row, place in enumerate(at):
            rows.append(torch.cat([embeds[row, :place], image[row], embeds[row, place + 1 :]]))
            masks.append(torch.cat([attention_mask[row, :place], ones, attention_mask[row, place + 1 :]]))
            if labels is not None:
                ignored = labels.new_full((count,), IGNORE)
                targets.append(torch.cat([labels[row, :place], ignored, labels[row, place + 1 :]]))
        return torch.stack(rows), torch.stack(masks), torch.stack(targets) if labels is not None else None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, pixels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The mean cross-entropy of the next token over the positions whose label is not IGNORE (the answers)."""
        embeds, mask, targets = self.splice(input_ids, attention_mask, pixels, labels)
        return self.language_model(inputs_embeds=embeds, attention_mask=mask, labels=targets).loss

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixels: torch.Tensor | None,
        eos_id: int,
        max_new_tokens: int,
    ) -> list[list[int]]:
        """Greedy answers to LEFT-padded prompts (B, L): each row's new ids, up to and without its `eos_id`."""
        embeds, mask, _ = self.splice(input_ids, attention_mask, pixels)
        table = self.language_model.get_input_embeddings()
        new = torch.zeros(len(input_ids), 0, dtype=torch.long, device=input_ids.device)
        done = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
            logits = self.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits[:, -1]
            token = logits.argmax(dim=-1).masked_fill(done, eos_id)
            new = torch.cat([new, token[:, None]], dim=1)
            done |= token == eos_id
            if done.all():
                break
            embeds = torch.cat([embeds, table(token)[:, None].to(embeds.dtype)], dim=1)
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
        return [row[: row.index(eos_id)] if eos_id in row else row for row in new.tolist()]
