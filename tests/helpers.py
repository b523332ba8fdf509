"""Helpers that several test files share: import them from here, never from another test file.

Shared pytest fixtures live in tests/conftest.py instead. Sections, in order:

- samples and shards: the colour squares, shards with planted bad data, tar members by hand
- sources of every kind: the same samples as a CSV, JSONL or parquet table, an image folder, a saved HF dataset
- tiny models: small dual encoders, a small CoCa, a tower outside timm, a `ClipModel` with a tokenizer
- the tower contract: `check_tower`, the member-by-member check every `Tower` must pass
- batches and gradients: hand-made float64 batches (with hard negatives), accumulated gradients,
  and the linear float64 problem of the gloo tests
- data modules and configs: a small `ShardDataModule`, one rank's loader, the options of a config group
- naive reference losses: per-pair loops the vectorised objectives must equal

Beside it, five single-purpose modules: gloo.py (a function on several gloo processes), readme_code.py
(the README's code blocks), hf_clip_models.py (small transformers CLIP folders), faults.py (callbacks
that runs load from the command line by their `faults.` target) and tiny_vlm.py (a tiny VLM).
"""

import copy
import io
import json
import os
import random
import tarfile
from contextlib import nullcontext

import torch
from hydra.utils import instantiate
from PIL import Image
from torch import nn

from clip_train.data import ShardDataModule
from clip_train.data.shard_writer import Sample, encode_image, write_shards
from clip_train.data.tokenizer import train_caption_tokenizer
from clip_train.data.transforms import CLIP_MEAN, CLIP_STD
from clip_train.inference import ClipModel
from clip_train.model import CausalTextTower, CoCa, DualEncoder, ImageTower
from clip_train.model.locking import NORM_TYPES
from clip_train.model.tower import Tower, missing_members
from clip_train.objectives import InfoNCE
from clip_train.paths import CONFIG_DIR
from clip_train.recipe import Recipe
from clip_train.training.accumulation import contrastive_backward

# ---------------------------------------------------------------------------------------------- samples and shards

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 230, 30)}


def colour_samples(count: int, start: int = 0, size: int = 32) -> list[Sample]:
    """`count` plain-colour RGB squares of size × size px, captioned "a <colour> square"; keys are the sample
    indices (9 digits, from `start`), metadata {"i": index}."""
    names = list(COLORS)
    rng = random.Random(start)
    samples = []
    for index in range(start, start + count):
        name = names[rng.randrange(len(names))]
        image = Image.new("RGB", (size, size), COLORS[name])
        samples.append(Sample(key=f"{index:09d}", image=image, caption=f"a {name} square", metadata={"i": index}))
    return samples


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A whole tar archive holding `members`, a list of (name, payload), in that order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def good_members(index: int) -> list[tuple[str, bytes]]:
    """The two tar members of colour sample `index`: [(key.jpg, JPEG bytes), (key.txt, caption bytes)]."""
    sample = colour_samples(1, start=index)[0]
    return [(f"{sample.key}.jpg", encode_image(sample.image, "jpg")), (f"{sample.key}.txt", sample.caption.encode())]


def _member_end(data: bytes, name: str) -> int:
    """Byte offset just past the (block-padded) data of member `name` in tar `data`."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        info = tar.getmember(name)
    return info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def write_bad_shards(folder: str) -> tuple[list[str], dict[str, int], list[int]]:
    """Writes `bad-0000{0..5}.tar` under `folder`; returns (their paths, {kind: planted count}, good keys).

    bad-00000: good samples 0-5 with one sample of each sample-level kind between them
    bad-00001: a tar without members; bad-00002: a zero-byte file (both empty shards)
    bad-00003: good samples 10-13, then cut inside sample 14's image
    bad-00004: good samples 20-22, then sample 23's image, then cut on a block boundary (no end marker)
    bad-00005: bytes that are no tar
    """
    os.makedirs(folder, exist_ok=True)
    jpeg = good_members(100)[0][1]
    mixed = good_members(0) + [("000000101.jpg", jpeg[: len(jpeg) // 2]), ("000000101.txt", b"a truncated jpeg")]
    mixed += good_members(1) + [("000000102.jpg", b"<html>404 Not Found</html>"), ("000000102.txt", b"an error page")]
    mixed += good_members(2) + [("000000103.jpg", b""), ("000000103.txt", b"a zero-byte image")]
    mixed += [("000000104.txt", b"a caption alone"), ("000000104.json", b"{}")]
    mixed += good_members(3) + [("000000105.jpg", jpeg)]
    mixed += [("000000106.jpg", jpeg), ("000000106.txt", b"  \n ")]
    mixed += good_members(4) + [("000000107.jpg", jpeg), ("000000107.txt", b"caf\xe9 latin-1")]
    mixed += good_members(5)
    cut_inside = tar_bytes([m for i in range(10, 15) for m in good_members(i)])
    cut_inside = cut_inside[: _member_end(cut_inside, "000000013.txt") + 512 + 100]
    cut_between = tar_bytes([m for i in range(20, 24) for m in good_members(i)])
    cut_between = cut_between[: _member_end(cut_between, "000000023.jpg")]
    contents = [tar_bytes(mixed), tar_bytes([]), b"", cut_inside, cut_between, b"this is no tar archive\n" * 50]
    paths = []
    for index, data in enumerate(contents):
        paths.append(os.path.join(folder, f"bad-{index:05d}.tar"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    planted = {
        "corrupt_image": 1,
        "not_image": 1,
        "empty_file": 1,
        "missing_image": 1,
        "missing_caption": 1,
        "empty_caption": 1,
        "caption_not_utf8": 1,
        "unreadable_row": 0,  # tars have no rows
        "empty_shard": 2,
        "truncated_tar": 2,
        "corrupt_tar": 1,
        "unreadable_shard": 0,
    }
    return paths, planted, [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 20, 21, 22]


def _append_raw(tar_path: str, members: dict[str, bytes]) -> None:
    """Appends {name: payload} members to the tar at `tar_path` as they are (no sample checks)."""
    with tarfile.open(tar_path, "a") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def write_mixed_shards(tmp_path) -> list[str]:
    """Two shards holding the 12 colour samples plus 3 bad ones in the first; returns their two paths.

    mixed-00000.tar: samples 0-5, an undecodable image (100), a caption without an image (101), a truncated PNG (102)
    clean-00000.tar: samples 6-11
    """
    good = colour_samples(12)
    path = str(tmp_path / "mixed-00000.tar")
    write_shards(str(tmp_path), "mixed", good[:6], samples_per_shard=100)
    _append_raw(path, {
        "000000100.jpg": b"not an image at all",   # undecodable image
        "000000100.txt": b"a broken picture",
        "000000101.txt": b"a caption without an image",  # incomplete
    })  # fmt: skip
    bad_image = io.BytesIO()
    good[0].image.save(bad_image, format="PNG")
    _append_raw(path, {"000000102.png": bad_image.getvalue()[:40], "000000102.txt": b"truncated png"})
    write_shards(str(tmp_path), "clean", good[6:], samples_per_shard=100)
    return [path, str(tmp_path / "clean-00000.tar")]


# ---------------------------------------------------------------------------------------------- sources of every kind

SOURCE_FORMATS = ("csv", "parquet", "jsonl", "folder", "hf")  # a table of paths, of bytes, JSON lines, a folder, HF


def png_bytes(image: Image.Image) -> bytes:
    data = io.BytesIO()
    image.save(data, format="PNG")
    return data.getvalue()


def write_source(form: str, folder, samples: list[Sample], rows: list[dict] | None = None) -> str:
    """`samples` as a source of `form` (one of SOURCE_FORMATS) under `folder`; returns its path.

    csv: images/KEY.png + pairs.csv (tab-separated `filepath`, `title`, paths relative to the table); jsonl: the same
    rows as JSON lines; parquet: the PNG bytes in `filepath` and `title`; folder: photos/KEY.png + photos/KEY.txt;
    hf: a `datasets` Dataset (`image`, `text`) saved with save_to_disk in 3 Arrow files. `rows`: extra raw rows
    appended to a table after the samples' ({"filepath": ..., "title": ...}, or a str: a raw JSONL line)."""
    os.makedirs(folder, exist_ok=True)
    if form in ("csv", "jsonl"):
        os.makedirs(os.path.join(folder, "images"), exist_ok=True)
        for s in samples:
            s.image.save(os.path.join(folder, "images", f"{s.key}.png"))
        table = [{"filepath": f"images/{s.key}.png", "title": s.caption} for s in samples] + list(rows or [])
        path = os.path.join(folder, f"pairs.{form}")
        with open(path, "w") as f:
            if form == "csv":
                f.write("filepath\ttitle\n" + "".join(f"{r['filepath']}\t{r['title']}\n" for r in table))
            else:
                f.write("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in table))
        return path
    if form == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = [{"filepath": png_bytes(s.image), "title": s.caption} for s in samples] + list(rows or [])
        path = os.path.join(folder, "pairs.parquet")
        pq.write_table(pa.table({"filepath": [r["filepath"] for r in table], "title": [r["title"] for r in table]}), path)
        return path
    if form == "folder":
        path = os.path.join(folder, "photos")
        os.makedirs(path, exist_ok=True)
        for s in samples:
            s.image.save(os.path.join(path, f"{s.key}.png"))
            with open(os.path.join(path, f"{s.key}.txt"), "w") as f:
                f.write(s.caption)
        return path
    import datasets

    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    columns = {"image": [s.image for s in samples], "text": [s.caption for s in samples]}
    path = os.path.join(folder, "hf")
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(path, num_shards=3)
    return path


# ---------------------------------------------------------------------------------------------- tiny models


def small_encoder(embed_dim: int = 16, **image_options) -> DualEncoder:
    """timm test_vit at 32 px + a 2-layer, 32-wide causal text tower over 50 tokens of context 12."""
    return DualEncoder(
        ImageTower("test_vit", embed_dim=embed_dim, image_size=32, **image_options),
        CausalTextTower(embed_dim, vocab_size=50, width=32, layers=2, heads=2, context_length=12),
        embed_dim=embed_dim,
        image_size=32,
        context_length=12,
    )


def float64_encoder(objective: str) -> DualEncoder:
    """`small_encoder()` seeded and in float64, with a `logit_bias` parameter (-2) when `objective` is "siglip"."""
    torch.manual_seed(0)
    model = small_encoder().double()
    if objective == "siglip":
        model.register_parameter("logit_bias", torch.nn.Parameter(torch.full((1,), -2.0, dtype=torch.float64)))
    return model


def small_coca(vocab_size: int = 50) -> CoCa:
    """`small_encoder`'s towers (16-d space, context 12) with a 1-layer, 2-head caption decoder; seeded."""
    torch.manual_seed(0)
    return CoCa(
        ImageTower("test_vit", embed_dim=16, image_size=32),
        CausalTextTower(16, vocab_size=vocab_size, width=32, layers=2, heads=2, context_length=12),
        embed_dim=16, image_size=32, context_length=12, decoder_layers=1, decoder_heads=2,
    )  # fmt: skip


class PatchMeanImageTower(nn.Module):
    """A `Tower` outside timm, for the tests: patches embedded linearly, normalised, averaged, projected.

    (B, 3, H, W) -> patch tokens (B, H/patch · W/patch, width) -> mean (B, width) -> projection (B, embed_dim).
    """

    def __init__(self, embed_dim: int, width: int = 16, patch: int = 8):
        super().__init__()
        self.embed_dim, self.token_width = embed_dim, width
        self.patches = nn.Conv2d(3, width, patch, stride=patch)
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)

    def forward_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.norm(self.patches(images).flatten(2).transpose(1, 2))
        return self.projection(tokens.mean(dim=1)), tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(images)[0]

    def no_weight_decay(self) -> set[str]:
        return set()

    def lock(self, unlocked_groups: int = 0, freeze_norm: bool = True) -> None:
        if unlocked_groups == 0:
            self.patches.requires_grad_(False)
            self.norm.requires_grad_(not freeze_norm)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Nothing to recompute: one layer."""


def tiny_clip_model() -> ClipModel:
    """A random-init test_vit + 2-layer text tower, the same on every process (seeded), with a BPE tokenizer."""
    tokenizer = train_caption_tokenizer([f"a {c} square" for c in COLORS] * 4, vocab_size=300)
    torch.manual_seed(0)
    model = DualEncoder(
        ImageTower("test_vit", embed_dim=16, image_size=32),
        CausalTextTower(16, vocab_size=len(tokenizer), width=32, layers=2, heads=2, context_length=12),
        embed_dim=16,
        image_size=32,
        context_length=12,
    )
    return ClipModel(model, tokenizer, Recipe(model={}, image_mean=CLIP_MEAN, image_std=CLIP_STD))


# ---------------------------------------------------------------------------------------------- the tower contract


def trainable(module: nn.Module) -> set[str]:
    """Names of the parameters of `module` that require gradients."""
    return {name for name, p in module.named_parameters() if p.requires_grad}


def _norm_parameters(tower: nn.Module) -> set[str]:
    """Names of the parameters of the normalisation layers (`NORM_TYPES`) of `tower`."""
    return {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in tower.named_modules()
        if isinstance(module, NORM_TYPES)
        for name, _ in module.named_parameters(recurse=False)
    }


def _outputs_and_gradients(tower: nn.Module, inputs: tuple) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The tower's (B, D) output on `inputs` and {name: gradient} of its squared sum, with seeded dropout."""
    tower.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout masks in both runs
    output = tower(*inputs)
    output.square().sum().backward()
    return output.detach(), {name: p.grad.clone() for name, p in tower.named_parameters() if p.grad is not None}


def check_tower(tower: nn.Module, inputs: tuple, embed_dim: int) -> None:
    """Asserts that `tower` meets the `Tower` contract on `inputs` (a batch of B, e.g. ((B, 3, H, W) images,)
    or ((B, L) ids, (B, L) mask)): features (B, embed_dim), tokens (B, N, token_width), `no_weight_decay`
    names, gradient checkpointing changing nothing, and what `lock` freezes."""
    assert missing_members(tower) == [] and isinstance(tower, Tower)
    batch = inputs[0].shape[0]
    tower.eval()
    with torch.no_grad():
        features = tower(*inputs)
        same_features, tokens = tower.forward_tokens(*inputs)
    assert features.shape == (batch, embed_dim) == (batch, tower.embed_dim)
    torch.testing.assert_close(same_features, features)
    assert tokens.ndim == 3 and tokens.shape[0] == batch and tokens.shape[2] == tower.token_width

    names = dict(tower.named_parameters())
    assert tower.no_weight_decay() <= set(names), tower.no_weight_decay() - set(names)

    tower.train()
    expected_output, expected_gradients = _outputs_and_gradients(tower, inputs)
    tower.set_grad_checkpointing(True)
    output, gradients = _outputs_and_gradients(tower, inputs)
    torch.testing.assert_close(output, expected_output)
    assert gradients.keys() == expected_gradients.keys()
    for name in gradients:
        torch.testing.assert_close(gradients[name], expected_gradients[name], msg=name)

    locked, one_unlocked, norms_free = (copy.deepcopy(tower) for _ in range(3))
    locked.lock(0)
    one_unlocked.lock(1)
    norms_free.lock(0, freeze_norm=False)
    if any(name.startswith("projection.") for name in names):  # an unprojected tower (SigLIP's image side) locks whole
        assert trainable(locked), "lock must leave the projection into the shared space training"
    assert trainable(locked) < trainable(one_unlocked) <= set(names)
    norms = _norm_parameters(tower)
    assert not norms & trainable(locked)  # freeze_norm=True, the default, freezes them
    assert trainable(norms_free) == trainable(locked) | norms
    frozen = set(names) - trainable(locked)
    if frozen != set(names):  # a backward through a wholly frozen tower has nothing to reach
        locked.zero_grad(set_to_none=True)
        locked(*inputs).square().sum().backward()
        assert all(p.grad is None for name, p in locked.named_parameters() if name in frozen)


# ---------------------------------------------------------------------------------------------- batches and gradients

K = 3  # hard negative captions per caption in `batch_with_negatives`


def make_batch(size: int = 8, seed: int = 0) -> dict:
    """A batch for `small_encoder`: image (size, 3, 32, 32) float64, input_ids (size, 12) in 1..49,
    attention_mask (size, 12) keeping the first 4 + row % 8 tokens of each row, bad_samples 0."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(size, 12, dtype=torch.long)
    for row in range(size):
        mask[row, 4 + row % 8 :] = 0
    return {
        "image": torch.randn(size, 3, 32, 32, generator=generator, dtype=torch.float64),
        "input_ids": torch.randint(1, 50, (size, 12), generator=generator),
        "attention_mask": mask,
        "bad_samples": torch.tensor(0),
    }


def negative_valid(rows: int) -> torch.Tensor:
    """(rows, K) bool: row r keeps K - r % K slots, so some rows have empty slots and one has none."""
    return torch.tensor([[slot < K - row % K for slot in range(K)] for row in range(rows)])


def batch_with_negatives(size: int = 8, seed: int = 0) -> dict:
    """`make_batch` plus K negative captions per caption, some slots empty: negative_input_ids and
    negative_attention_mask (size, K, 12) (6 tokens each), negative_valid (size, K)."""
    batch = make_batch(size, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    mask = torch.ones(size, K, 12, dtype=torch.long)
    mask[:, :, 6:] = 0
    ids = torch.randint(1, 50, (size, K, 12), generator=generator)
    return batch | {"negative_input_ids": ids, "negative_attention_mask": mask, "negative_valid": negative_valid(size)}


def gradients(model: nn.Module, batch: dict, micro_batches: int) -> dict[str, torch.Tensor]:
    """{parameter name: gradient} of `model`'s InfoNCE loss on `batch`, accumulated over `micro_batches`."""
    model.zero_grad(set_to_none=True)
    contrastive_backward(model, InfoNCE(), batch, micro_batches, backward=lambda loss: loss.backward(), no_sync=nullcontext)
    return {name: p.grad.clone() for name, p in model.named_parameters()}


PROBLEM_BATCH = 6  # rows of `make_problem`; 3 per rank under 2 processes


def make_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear 'towers' on fixed inputs: enough to check every gradient path through the loss.

    float64 images (PROBLEM_BATCH, 5), texts (PROBLEM_BATCH, 7), image weight (5, 4), text weight (7, 4).
    """
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(PROBLEM_BATCH, 5, generator=generator, dtype=torch.float64)
    texts = torch.randn(PROBLEM_BATCH, 7, generator=generator, dtype=torch.float64)
    image_weight = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    text_weight = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    return images, texts, image_weight, text_weight


# ---------------------------------------------------------------------------------------------- data modules and configs


def make_datamodule(train_shards, val_shards=None, **overrides) -> ShardDataModule:
    """A `ShardDataModule` for tests: batches of 4 at 24 px, context 8, no workers, a 300-token learnt
    tokenizer in the session's cache; `overrides` replace any of these settings."""
    settings = dict(
        batch_size=4,
        num_workers=0,
        image_size=24,
        context_length=8,
        cache_dir=os.environ["CLIP_TRAIN_CACHE"],
        shuffle_buffer=8,
        tokenizer_vocab_size=300,
    )
    return ShardDataModule(train_shards, val_shards, **(settings | overrides))


def keys(batches) -> list[int]:
    """The sample keys of `batches`, as ints, in the order they came."""
    return [int(key) for batch in batches for key in batch["key"]]


def rank_loader(datamodule: ShardDataModule, rank: int, world: int, training: bool):
    """The loader rank `rank` of `world` would get (the trainer normally sets these in `setup`)."""
    datamodule.rank, datamodule.world = rank, world
    datamodule.setup("fit")
    return datamodule.train_dataloader() if training else datamodule.val_dataloader()


def options(group: str) -> list[str]:
    """The option names of config group `group` (e.g. "model" or "model/text_tower"), sorted."""
    folder = os.path.join(CONFIG_DIR, group)
    return sorted(name.removesuffix(".yaml") for name in os.listdir(folder) if name.endswith(".yaml"))


# ---------------------------------------------------------------------------------------------- naive reference losses


def naive_negclip(image, text, negatives, valid, logit_scale):
    """Loop over pairs: image i against every caption and its own valid negatives; captions against images.

    image, text (B, D) and negatives (B, K, D) unit rows, valid (B, K) bool, logit_scale () or (1,) -> loss ().
    """
    scale, n = logit_scale.reshape(()).exp(), image.shape[0]
    total = 0.0
    for i in range(n):
        own = [scale * torch.dot(image[i], negatives[i, s]) for s in range(K) if valid[i, s]]
        image_scores = torch.stack([scale * torch.dot(image[i], text[j]) for j in range(n)] + own)
        text_scores = torch.stack([scale * torch.dot(text[i], image[j]) for j in range(n)])
        total = total - (image_scores[i] - torch.logsumexp(image_scores, 0))
        total = total - (text_scores[i] - torch.logsumexp(text_scores, 0))
    return total / (2 * n)


def naive_siglip_with_negatives(image, text, negatives, valid, logit_scale, logit_bias):
    """Every pair -log σ(±z), and every valid negative of image i one more pair with label -1; over the images.

    image, text (B, D) and negatives (B, K, D) unit rows, valid (B, K) bool, logit_scale and logit_bias () or (1,) -> loss ().
    """
    logit_scale, logit_bias = logit_scale.reshape(()), logit_bias.reshape(())
    total = 0.0
    for i in range(image.shape[0]):
        for j in range(text.shape[0]):
            z = logit_scale.exp() * torch.dot(image[i], text[j]) + logit_bias
            total = total - torch.nn.functional.logsigmoid(z if i == j else -z)
        for s in range(K):
            if valid[i, s]:
                z = logit_scale.exp() * torch.dot(image[i], negatives[i, s]) + logit_bias
                total = total - torch.nn.functional.logsigmoid(-z)
    return total / image.shape[0]


def naive_align_uniform(image, text, alpha=2.0, t=2.0, weight=1.0) -> dict:
    """Loops: alignment over the pairs, uniformity over every ordered pair i ≠ j of each modality.

    image, text (B, D) unit rows -> {"loss", "alignment", "uniformity"}, each ().
    """
    n = image.shape[0]
    alignment = sum(torch.dist(image[i], text[i]) ** alpha for i in range(n)) / n

    def uniformity(u):
        close = [torch.exp(-t * torch.dist(u[i], u[j]) ** 2) for i in range(n) for j in range(n) if i != j]
        return torch.log(sum(close) / len(close))

    spread = (uniformity(image) + uniformity(text)) / 2
    return {"loss": alignment + weight * spread, "alignment": alignment, "uniformity": spread}


# --------------------------------------------------------------------------- small models with a recipe (interop)

CAPTIONS = [f"a {size} {colour} {shape}" for size in ("small", "big") for colour in ("red", "green", "blue")
            for shape in ("square", "circle", "photo")]  # fmt: skip


def caption_tokenizer():
    return train_caption_tokenizer(CAPTIONS * 5, vocab_size=300)


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Noise on every weight, so unit LayerNorm scales and zero biases cannot hide a mis-mapped tensor."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def clip_model(image_tower: dict, activation: str, image_size: int, **model_options) -> ClipModel:
    """A random small ClipModel with a learnt BPE tokenizer (end of text its highest id) and the given image tower."""
    tokenizer = caption_tokenizer()
    config = {
        "_target_": "clip_train.model.DualEncoder", "embed_dim": 24, "image_size": image_size, "context_length": 12,
        "image_tower": {"_target_": "clip_train.model.ImageTower", "embed_dim": 24, "image_size": image_size,
                        "pool": "token", "pretrained": False, **image_tower},
        "text_tower": {"_target_": "clip_train.model.CausalTextTower", "embed_dim": 24, "vocab_size": len(tokenizer),
                       "width": 32, "layers": 2, "heads": 2, "context_length": 12,
                       "eos_token_id": tokenizer.eos_token_id, "activation": activation},
        **model_options,
    }  # fmt: skip
    model = instantiate(config)
    perturb_(model, seed=4)
    return ClipModel(model, tokenizer, Recipe(model=config, image_mean=CLIP_MEAN, image_std=CLIP_STD))
