"""CoCa: a dual encoder whose causal text tower also feeds a captioning decoder over the image tokens.

    image -> image tower tokens (B, N, F) -> pooled -> projection: the contrastive image feature
                                         -> linear to the decoder width: the decoder's memory (B, N, W)
    caption -> causal text tower states (B, L, W) -> pooled at end of text: the contrastive text feature
                                                  -> multimodal decoder layers (causal self-attention,
                                                     cross-attention to the image memory) -> next-token logits

As in the CoCa paper, the text tower is the decoder's unimodal half, so one text pass serves
both losses, and `torch.nn.TransformerDecoder` layers form the multimodal half. Position i of
the decoder predicts token i+1 from tokens ≤ i and the image; padding is ignored by the
attention mask, not by a token id (a pad id may also be a real token).
"""

import torch
import torch.nn.functional as F
from torch import nn

from clip_train.model.dual_encoder import DualEncoder
from clip_train.model.outputs import TrainingOutputs
from clip_train.model.text_tower import CausalTextTower, last_token


class CoCa(DualEncoder):
    """A `DualEncoder` plus a captioning decoder; the extra arguments:

    decoder_layers, decoder_heads, decoder_mlp_ratio: the multimodal decoder, as wide as the text tower.

    Its training forward adds `caption_nll`, each caption's NLL as the mean over its tokens, so every
    caption weighs the same; the objective weighs it against the contrastive loss (`loss=coca`).
    """

    output_fields = DualEncoder.output_fields | {"caption_nll"}

    def __init__(
        self,
        image_tower: nn.Module,
        text_tower: nn.Module,
        embed_dim: int,
        image_size: int,
        context_length: int,
        decoder_layers: int,
        decoder_heads: int,
        decoder_mlp_ratio: float = 4.0,
        **dual_encoder_options,
    ):
        if not isinstance(text_tower, CausalTextTower):
            raise ValueError(
                f"CoCa decodes from causal text states: model.text_tower must be a CausalTextTower "
                f"(model/text_tower=causal_*), not {type(text_tower).__name__}, whose tokens see the future"
            )
        super().__init__(image_tower, text_tower, embed_dim, image_size, context_length, **dual_encoder_options)
        width = text_tower.transformer.config.hidden_size
        self.vocab_size = text_tower.transformer.config.vocab_size
        self.image_to_decoder = nn.Linear(image_tower.token_width, width)
        layer = nn.TransformerDecoderLayer(
            width, decoder_heads, int(width * decoder_mlp_ratio), dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )  # fmt: skip
        self.decoder = nn.TransformerDecoder(layer, decoder_layers, norm=nn.LayerNorm(width))
        self.lm_head = nn.Linear(width, self.vocab_size)

    def encode_image_and_memory(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (unit-norm features (B, D), decoder memory (B, N, W))."""
        features, tokens = self.image_tower.forward_tokens(images)
        return F.normalize(features, dim=-1), self.image_to_decoder(tokens)

    def text_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, W) causal text states (the text transformer's last hidden states)."""
        return self.text_tower.transformer(input_ids=input_ids).last_hidden_state

    def next_token_logits(self, text_states: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """(B, L, W) causal text states, (B, N, W) memory -> (B, L, vocab) next-token logits."""
        length = text_states.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=text_states.device, dtype=text_states.dtype)
        return self.lm_head(self.decoder(text_states, memory, tgt_mask=causal, tgt_is_causal=True))

    def training_forward(self, batch: dict[str, torch.Tensor]) -> TrainingOutputs:
        """The dual encoder's outputs plus `caption_nll` (B,): one pass of each tower serves both."""
        image_features, memory = self.encode_image_and_memory(batch["image"])
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        states = self.text_states(input_ids)
        text_features = F.normalize(self.text_tower.projection(last_token(states, attention_mask)), dim=-1)
        logits = self.next_token_logits(states[:, :-1], memory)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 logits: CE in float32
        targets, mask = input_ids[:, 1:], attention_mask[:, 1:].to(logits.dtype)
        token_nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, L-1)
        caption_nll = (token_nll * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return TrainingOutputs(
            image_features, text_features, caption_nll, **self.encode_negatives(batch), scalars=self.temperature()
        )

    @torch.no_grad()
    def generate(
        self, images: torch.Tensor, bos_id: int, eos_id: int, max_length: int | None = None, beams: int = 1
    ) -> list[list[int]]:
        """Caption token ids for (B, 3, H, W) images, without the start token and cut before the end token.

        Greedy when `beams` is 1, else beam search keeping `beams` hypotheses per image and
        returning the one with the best mean token log-probability. At most `max_length` tokens
        including the start and end tokens (default: the context length). No key-value cache: each
        step re-reads the prefix, which is cheap at caption lengths.
        """
        max_length = min(max_length or self.context_length, self.context_length)
        if max_length < 2:
            raise ValueError(f"max_length={max_length}: a caption needs room for the start token and one more")
        if beams < 1:
            raise ValueError(f"beams={beams} must be at least 1")
        _, memory = self.encode_image_and_memory(images)
        batch = images.shape[0]
        memory = memory.repeat_interleave(beams, dim=0)
        ids = torch.full((batch * beams, 1), bos_id, dtype=torch.long, device=images.device)
        scores = torch.zeros(batch, beams, device=images.device)
        scores[:, 1:] = float("-inf")  # all beams start identical: expand from the first only
        lengths = torch.zeros(batch * beams, device=images.device)
        finished = torch.zeros(batch * beams, dtype=torch.bool, device=images.device)
        for _ in range(max_length - 1):
            log_probs = self.next_token_logits(self.text_states(ids), memory)[:, -1].float().log_softmax(dim=-1)
            log_probs[finished] = float("-inf")
            log_probs[finished, eos_id] = 0.0  # a finished hypothesis only repeats its end token, at no cost
            candidates = (scores.view(-1, 1) + log_probs).view(batch, beams * self.vocab_size)
            scores, index = candidates.topk(beams, dim=1)
            source = (index // self.vocab_size + torch.arange(batch, device=ids.device)[:, None] * beams).view(-1)
            tokens = (index % self.vocab_size).view(-1)
            ids = torch.cat([ids[source], tokens[:, None]], dim=1)
            lengths = lengths[source] + (~finished[source]).float()
            finished = finished[source] | (tokens == eos_id)
            if finished.all():
                break
        best = (scores / lengths.view(batch, beams).clamp(min=1)).argmax(dim=1)
        chosen = ids.view(batch, beams, -1)[torch.arange(batch, device=ids.device), best, 1:]
        captions = []
        for row in chosen.tolist():
            captions.append(row[: row.index(eos_id)] if eos_id in row else row)
        return captions
