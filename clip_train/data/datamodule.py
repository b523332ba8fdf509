"""The Lightning data module: tar shards in, per-rank batches of images and tokens out.

Construction does everything that can fail fast (expanding and checking shard paths,
writing the synthetic set, loading or learning the tokenizer), so a bad path stops the run
before a model is built. The split across ranks happens in `setup`, once the trainer knows the
world size.

Batches leave the DataLoader workers with (B, 3, H, W) uint8 images; `on_after_batch_transfer`,
which Lightning calls on the data module once a batch is on the device, for training and
validation alike, normalises them to float32 there (`clip_train.data.device_normalize`).
"""

import functools
import itertools
import logging
import math
import multiprocessing
import os
from collections.abc import Mapping, Sequence

import lightning as L
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader

from clip_train.data.augmentation import train_transform
from clip_train.data.bad_data import BadDataPolicy, BadSampleCounter
from clip_train.data.caption_negatives import KINDS
from clip_train.data.device_normalize import normalize_batch
from clip_train.data.image_decode import decode_rgb
from clip_train.data.negative_batch import NegativeCaptions
from clip_train.data.pipeline import PairStream
from clip_train.data.position import ResumePoint, StreamLayout, StreamPosition
from clip_train.data.reader_shares import coverage_problem
from clip_train.data.row_source import RowSource
from clip_train.data.shards import expand_shards, refuse_empty_shards, shard_sizes
from clip_train.data.source_kinds import ColumnKeys, unit_samples
from clip_train.data.sources import parse_sources, shard_weights
from clip_train.data.tokenizer import Tokenize, cached_caption_tokenizer, load_tokenizer
from clip_train.data.transforms import CLIP_MEAN, CLIP_STD, eval_crop, min_decoded_side
from clip_train.data.world.synthetic import SyntheticShards
from clip_train.distributed import broadcast_from_rank_0, launcher_rank

# Tokenizers are used in this process before DataLoader workers fork; their Rust thread pool
# must be off or the forked workers can deadlock.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger(__name__)


def _captions(urls: Sequence[str]):
    """The captions of the training units in order (unreadable ones skipped, as training skips them)."""
    for sample in unit_samples(({"url": url} for url in urls), BadSampleCounter(BadDataPolicy(max_rate=1.0))):
        if "txt" in sample:
            yield sample["txt"].decode("utf-8", errors="replace")


def learnt_tokenizer_folder(train_urls: Sequence[str], cache_dir: str, vocab_size: int, max_captions: int) -> str:
    """The BPE tokenizer learnt from (and cached for) these training shards' first captions."""
    return cached_caption_tokenizer(_captions(train_urls), "|".join(train_urls), cache_dir, vocab_size, max_captions)


def _one_of(value, alias, name: str, alias_name: str) -> tuple:
    """(`data.train` or its older name `data.train_shards`, whichever is set, and the name it was given by; likewise
    val): one of them, not both."""
    if value is not None and alias is not None:
        raise ValueError(f"{name} and {alias_name} are both set: {alias_name} is the older name of {name}, give one")
    return (value, name) if value is not None else (alias, alias_name)


class ShardDataModule(StreamPosition, L.LightningDataModule):
    """Image-text shards (img2dataset layout) for training and validation.

    train, val: the training and validation data: a shard pattern or list (see `clip_train.data.shards`), a table
        (.csv, .tsv, .jsonl, .parquet), an image folder with KEY.txt captions, or a Hugging Face dataset saved
        to disk, or a list mixing them (`clip_train.data.source_kinds`). `train_shards` and `val_shards` are
        their older names. When neither train nor sources is set and `synthetic` is given, the embedded
        scene dataset fills in training and (unless val is given) validation. Your own training data
        without val runs without validation: the drawn set never stands in for your data.
    kind: the kind of every source instead of the one inferred from its path: shards, table, folder, hf, classes, the dotted
        path of a `RowSource` class, or a `RowSource` (`data/kind=NAME`, built by Hydra from its config).
    img_key, caption_key, csv_separator: a table's or Hugging Face dataset's image and caption columns (default
        OpenCLIP's `filepath` and `title` for tables, `image` and `text` for Hugging Face) and a CSV's separator
        (default a tab, as OpenCLIP's `--csv-separator`).
    rows_per_unit: a non-tar source is read in units of this many rows, as tar shards are read whole.
    batch_size: per device. num_workers: DataLoader workers per device.
    samples_per_epoch: the global number of training samples in one epoch (with resampling, a
        "virtual epoch" of the endless stream); by default the size of the training shards from
        `sizes.json`/`*_stats.json`, else counted from the headers of local tars (`clip_train.data.tar_count`;
        by rank 0 alone, which shares the counts in `setup`; only remote shards need it set). Without
        resampling an epoch reads each sample exactly once when this is the data size and a multiple of
        batch_size × ranks; otherwise setup warns how many samples repeat or are skipped
        (`clip_train.data.reader_shares`).
    resampled: draw training shards with replacement (an endless stream, best at scale).
    image_mean, image_std: the normalisation (RGB, 0-1 scale); None: OpenAI CLIP's. image_resize: evaluation
        resizing (`clip_train.data.transforms.RESIZE_MODES`); None: `shortest`. `model.init_from` fills in its
        source's for whichever is None (`clip_train.interop.warm_start`).
    sources: instead of `train_shards`, several sets `[{shards, weight, name}, ...]` mixed by
        weight in the resampled stream (`clip_train.data.sources`).
    tokenizer: a transformers tokenizer name or folder; unset means a BPE vocabulary of
        `tokenizer_vocab_size` learnt from the first `tokenizer_max_captions` training captions.
    max_bad_sample_rate, bad_sample_rate_min_items: a data worker stops the run when more than this
        share of the items it met were bad, judged once it met that many (`clip_train.data.bad_data`).
    text_hard_negatives, hard_negative_kinds: k false captions per training caption, by the rules of these
        kinds (`clip_train.data.caption_negatives`), for the loss's extra columns; 0 for none.
    neighbour_share, neighbour_pool: fill this share of each training batch with couples of caption-word
        neighbours found among `neighbour_pool` waiting pairs (`clip_train.data.neighbour_batches`).
    augment: training augmentation after the crop (colour jitter, grayscale, RandAugment; OpenCLIP's --aug-cfg),
        all off by default (`clip_train.data.augmentation`).
    """

    def __init__(
        self,
        train_shards: str | Sequence[str] | None,
        val_shards: str | Sequence[str] | None,
        batch_size: int,
        num_workers: int,
        image_size: int,
        context_length: int,
        cache_dir: str,
        samples_per_epoch: int | None = None,
        resampled: bool = False,
        shuffle_buffer: int = 2000,
        seed: int = 0,
        tokenizer: str | None = None,
        tokenizer_vocab_size: int = 16384,
        tokenizer_max_captions: int = 200_000,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        image_resize: str | None = None,
        crop_scale: Sequence[float] = (0.9, 1.0),
        synthetic: SyntheticShards | None = None,
        max_bad_sample_rate: float = 0.2,
        bad_sample_rate_min_items: int = 1000,
        sources: Sequence[Mapping] | None = None,
        text_hard_negatives: int = 0,
        hard_negative_kinds: Sequence[str] = KINDS,
        neighbour_share: float = 0.0,
        neighbour_pool: int = 1000,
        train: str | Sequence[str] | None = None,
        val: str | Sequence[str] | None = None,
        kind: str | RowSource | None = None,
        img_key: str | None = None,
        caption_key: str | None = None,
        csv_separator: str = "\t",
        rows_per_unit: int = 10_000,
        augment: Mapping | None = None,
    ):
        super().__init__()
        train_shards, self._train_option = _one_of(train, train_shards, "data.train", "data.train_shards")
        val_shards, val_option = _one_of(val, val_shards, "data.val", "data.val_shards")
        self._expand = functools.partial(
            expand_shards, kind=kind, columns=ColumnKeys(img_key, caption_key, csv_separator), rows_per_unit=rows_per_unit
        )
        if train_shards is not None and sources:
            raise ValueError(f"{self._train_option} and data.sources are both set: use one (sources for several weighted sets)")
        if synthetic is not None and train_shards is None and not sources:  # the embedded set, only when no data is given
            train_shards, synthetic_val = synthetic.write(cache_dir)
            val_shards = val_shards or synthetic_val
        if train_shards is None and not sources:
            raise ValueError(
                "data.train is not set: give your training data, a shard pattern such as '/data/{00000..00099}.tar', a table "
                "(.csv, .tsv, .jsonl, .parquet), an image folder with KEY.txt captions, or a saved Hugging Face dataset "
                "(or data.sources)"
            )
        self.sources = parse_sources(sources, resampled, cache_dir, self._expand) if sources else []
        self._sizes_from_rank_0, self._cache_dir = False, cache_dir
        if self.sources:
            self.train_urls = [url for source in self.sources for url in source.urls]
            self.train_shard_weights = shard_weights(self.sources)
            sizes = [source.shard_sizes for source in self.sources]
            self.train_shard_sizes = [n for each in sizes for n in each] if all(e is not None for e in sizes) else None
        else:
            self.train_urls, self.train_shard_weights = self._expand(train_shards, self._train_option), None
            sizes_needed = not (resampled and samples_per_epoch)  # only a resampled stream of a set length needs none
            self._sizes_from_rank_0 = sizes_needed and launcher_rank() != 0  # see `_share_sizes`
            counts_here = sizes_needed and not self._sizes_from_rank_0
            self.train_shard_sizes = shard_sizes(self.train_urls, cache_dir) if counts_here else None
        if not self._sizes_from_rank_0:  # rank 0 refuses bad shards for every rank
            option = "data.sources" if self.sources else self._train_option
            refuse_empty_shards(self.train_urls, self.train_shard_sizes, option)
        self.val_urls = self._expand(val_shards, val_option) if val_shards else []
        if self.val_urls:
            log.info("validating on %d shard(s)", len(self.val_urls))
        else:
            log.info("no validation: data.val_shards is not set (give held-out shards to validate)")
        self.data_samples = self._data_samples()
        if samples_per_epoch is None and not self._sizes_from_rank_0:
            if self.data_samples is None:
                raise ValueError(
                    "data.samples_per_epoch is not set and the size of remote training shards cannot be read without "
                    "downloading them: set data.samples_per_epoch=N (with data.sources, `samples: N` in each remote source)"
                )
            samples_per_epoch = self.data_samples
        self.samples_per_epoch = samples_per_epoch  # on a rank waiting for rank 0's sizes, None until `setup`
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.resampled, self.shuffle_buffer = resampled, shuffle_buffer
        self.context_length = context_length
        self.tokenizer_source = tokenizer or learnt_tokenizer_folder(
            self.tokenizer_urls(), cache_dir, tokenizer_vocab_size, tokenizer_max_captions
        )
        self.tokenizer = load_tokenizer(self.tokenizer_source)
        self.image_resize = image_resize or "shortest"
        self.train_image_transform = train_transform(image_size, crop_scale, augment)
        self.eval_image_transform = eval_crop(image_size, self.image_resize)
        self.train_decode = functools.partial(decode_rgb, min_short_side=min_decoded_side(image_size, crop_scale))
        self.eval_decode = functools.partial(decode_rgb, min_short_side=min_decoded_side(image_size, None))
        self.image_mean = CLIP_MEAN if image_mean is None else tuple(image_mean)
        self.image_std = CLIP_STD if image_std is None else tuple(image_std)
        self.bad_data = BadDataPolicy(max_bad_sample_rate, bad_sample_rate_min_items)
        tokenize = Tokenize(self.tokenizer, self.context_length)
        self.negatives = NegativeCaptions(text_hard_negatives, tokenize, hard_negative_kinds) if text_hard_negatives else None
        if not 0 <= neighbour_share <= 1:
            raise ValueError(f"data.neighbour_share={neighbour_share} is not a share of the batch (0 to 1)")
        self.neighbour_share, self.neighbour_pool = neighbour_share, neighbour_pool
        self._epoch = multiprocessing.Value("i", 0)
        self._resume_point = ResumePoint()
        self.rank, self.world = 0, 1

    def _data_samples(self) -> int | None:
        """Samples in the training shards (with data.sources, as given by their `samples:`), or None if unknown."""
        if self.sources:
            sizes = [source.samples for source in self.sources]
            return sum(sizes) if all(size is not None for size in sizes) else None
        return self._sized_samples

    def tokenizer_urls(self) -> list[str]:
        """Training shards in the order the tokenizer reads captions: with several sources, one shard of each in turn,
        so a vocabulary learnt from the first captions covers every source."""
        if not self.sources:
            return self.train_urls
        turns = itertools.zip_longest(*(source.urls for source in self.sources))
        return [url for turn in turns for url in turn if url is not None]

    def _share_sizes(self) -> None:
        """Rank 0's training shard sizes and epoch length, on every rank.

        Counting shards without a sizes sidecar reads every tar header (`clip_train.data.counted_sizes`), slow on
        a network file system when every rank does it. So only a process whose launcher named it rank 0 (or that
        was named no rank) counts, while being built; the process group does not exist yet then (Lightning makes
        it inside `Trainer.fit`, and its own DDP launcher starts the other ranks only then), so the others wait
        for the counts here, in `setup`, which Lightning runs on every rank once the group exists. Every rank
        takes rank 0's, so all agree even where several processes counted. A process that counted nothing and
        is alone after all counts now.
        """
        if self.world > 1:
            self.train_shard_sizes, self.samples_per_epoch = broadcast_from_rank_0(
                (self.train_shard_sizes, self.samples_per_epoch)
            )
        elif self._sizes_from_rank_0:
            self.train_shard_sizes = shard_sizes(self.train_urls, self._cache_dir)
            refuse_empty_shards(self.train_urls, self.train_shard_sizes, self._train_option)
            self.samples_per_epoch = self.samples_per_epoch or self._sized_samples
        self._sizes_from_rank_0 = False

    def setup(self, stage: str) -> None:
        if self.trainer is not None:
            self.rank, self.world = self.trainer.global_rank, self.trainer.world_size
        self._share_sizes()
        readers = self.world * max(1, self.num_workers)
        if self.resampled:
            return
        if self.train_shard_sizes is None and len(self.train_urls) < readers:
            raise ValueError(
                f"{len(self.train_urls)} training shards of unknown size cannot feed {self.world} ranks × "
                f"{max(1, self.num_workers)} workers without resampling: a reader with no shard would hang the others. "
                f"Set data.resampled=true, lower data.num_workers, or split the data into at least {readers} shards"
            )
        problem = coverage_problem(self._sized_samples, self.batches_per_epoch, self.world, self.batch_size)
        if problem is not None and stage == "fit" and self.rank == 0:
            log.warning(problem)

    @property
    def batches_per_epoch(self) -> int:
        """Training batches each rank yields per epoch: the same on every rank, enough for `samples_per_epoch`."""
        return math.ceil(self.samples_per_epoch / (self.batch_size * self.world))

    @property
    def layout(self) -> StreamLayout:
        return StreamLayout(
            self.world, max(1, self.num_workers), self.batch_size, self.batches_per_epoch, self.resampled, self.seed,
            len(self.train_urls), self._sized_samples,
        )  # fmt: skip

    @property
    def _sized_samples(self) -> int | None:
        """Samples in the training shards by their sizes, which place the readers' ranges (None: unknown)."""
        return sum(self.train_shard_sizes) if self.train_shard_sizes is not None else None

    def _loader(self, urls: list[str], training: bool) -> DataLoader:
        stream = PairStream(
            urls,
            rank=self.rank,
            world=self.world,
            batch_size=self.batch_size,
            image_transform=self.train_image_transform if training else self.eval_image_transform,
            tokenize=Tokenize(self.tokenizer, self.context_length),
            seed=self.seed,
            resampled=self.resampled and training,
            shuffle_buffer=self.shuffle_buffer,
            batches_per_rank=self.batches_per_epoch if training else None,
            epoch=self._epoch,
            shard_sizes=self.train_shard_sizes if training else None,
            bad_data=self.bad_data,
            shard_weights=self.train_shard_weights if training else None,
            resume_point=self._resume_point if training else None,
            negatives=self.negatives if training else None,
            neighbour_share=self.neighbour_share if training else 0.0,
            neighbour_pool=self.neighbour_pool,
            decode_image=self.train_decode if training else self.eval_decode,
        )
        return DataLoader(
            stream,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=training and self.num_workers > 0,
            # pinned batches let Lightning's copy to a CUDA device run asynchronously: its move_data_to_device
            # (lightning.fabric.utilities.apply_func) passes non_blocking=True for every device but CPU and MPS
            pin_memory=self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator),
            prefetch_factor=4 if self.num_workers > 0 else None,
        )

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """The batch on its device with `image` (B, 3, H, W) uint8 normalised to float32 by data.image_mean/image_std."""
        return normalize_batch(batch, self.image_mean, self.image_std)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_urls, training=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_urls, training=False) if self.val_urls else []
