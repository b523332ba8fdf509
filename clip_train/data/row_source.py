"""The seam a source plugs into: a kind of data whose image-caption pairs are numbered rows of its parts.

A kind is a `RowSource`, a frozen dataclass whose fields are its options (columns, a file name inside it):

    claims(path) -> bool               is `path` of this kind? (inference, as OpenCLIP's `--dataset-type auto`)
    parts(path) -> [(part, rows)]      the files (or the one folder) the source is made of, in order, and the pairs
                                       in each; a missing column is refused here, at start-up, naming those present
    rows(part, start, stop) -> iter    rows start..stop-1 of a part: `Row(key, caption, image)`, or
                                       `Unreadable(key, why)` for a row that cannot be read (skipped and counted)

Everything else is done here, once for every kind: each part is cut into units of at most `rows_per_unit`
rows, named by self-describing strings `NAME:PART?OPTIONS#START:STOP`, and a unit's rows become the samples a
tar shard gives (`clip_train.data.row_samples`). NAME is the short name of a kind clip_train ships
(`configs/data/kind/NAME.yaml` names its class by `_target_`) or the dotted path of the kind's class; OPTIONS are
its fields. So any process (a DataLoader worker, a curate rerun, an evaluation) rebuilds the kind from the unit
alone, and a new kind is one file (its class, importable) plus one config (`data/kind=NAME` from a config
folder on `hydra.searchpath`), with nothing in clip_train to edit. Tar shards are the stream's own unit and
need no kind (`clip_train.data.shard_reader`).
"""

import dataclasses
import functools
import importlib
import inspect
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, NamedTuple
from urllib.parse import parse_qsl, urlencode

from omegaconf import OmegaConf

from clip_train.data.row_samples import row_sample, unreadable_sample
from clip_train.paths import CONFIG_DIR

KIND_CONFIGS = os.path.join(CONFIG_DIR, "data", "kind")
_DOTTED = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+")


class Row(NamedTuple):
    """One pair: `key` unique within the source; `image` a path (relative paths resolve against the part's folder),
    the image bytes, or Hugging Face's {bytes, path}; `caption` a string (None or blank: counted as empty)."""

    key: str
    caption: Any
    image: Any


class Unreadable(NamedTuple):
    """A row that cannot be read (a JSONL line that is no JSON object, a caption file gone): skipped, counted as
    `unreadable_row` with `why`."""

    key: str
    why: str


class RowSource:
    """A kind of source (see the module docstring). Subclasses are frozen dataclasses; `name` is set by the kinds
    clip_train ships (their units read `table:...`), others are named by their dotted class path."""

    name: ClassVar[str | None] = None

    def claims(self, path: str) -> bool:
        """Whether the local `path` is of this kind; False by default: such a kind is named, never inferred."""
        return False

    def parts(self, path: str) -> list[tuple[str, int]]:
        """[(part, rows)] of the source at `path`, in order; ValueError naming the columns present for a missing one."""
        raise NotImplementedError

    def rows(self, part: str, start: int, stop: int) -> Iterator["Row | Unreadable"]:
        """Rows start..stop-1 of `part`; OSError or ValueError for a part that cannot be read (the unit is counted)."""
        raise NotImplementedError

    @property
    def unit_name(self) -> str:
        return self.name or f"{type(self).__module__}.{type(self).__qualname__}"

    def options(self) -> dict[str, str]:
        """The fields a unit carries to rebuild this kind (None ones left out)."""
        return {f.name: str(v) for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}


@functools.cache
def shipped_kinds() -> tuple[str, ...]:
    """The short names of the kinds clip_train ships: its configs/data/kind/*.yaml."""
    return tuple(sorted(name.removesuffix(".yaml") for name in os.listdir(KIND_CONFIGS) if name.endswith(".yaml")))


@functools.cache
def kind_class(name: str) -> type[RowSource]:
    """The class of kind `name`: a shipped kind's short name, or a dotted `package.module.Class` path."""
    if _DOTTED.fullmatch(name):
        module, _, attribute = name.rpartition(".")
        try:
            found = getattr(importlib.import_module(module), attribute, None)
        except ImportError as error:
            raise ValueError(f"data.kind={name!r}: cannot import {module} ({error}); is its folder on PYTHONPATH?") from error
    elif name in shipped_kinds():
        return kind_class(OmegaConf.load(os.path.join(KIND_CONFIGS, f"{name}.yaml"))["_target_"])
    else:
        found = None
    if not (isinstance(found, type) and issubclass(found, RowSource)):
        raise ValueError(
            f"data.kind={name!r} is neither shards, one of {', '.join(shipped_kinds())} (configs/data/kind), nor the dotted "
            "path of a clip_train.data.row_source.RowSource class"
        )
    return found


def build_kind(kind: "str | RowSource", options: Mapping[str, Any] | None = None) -> RowSource:
    """The kind `kind` names (a `kind_class` name) built with those of `options` its class takes (None ones left to
    its defaults); a `RowSource` as it is."""
    if isinstance(kind, RowSource):
        return kind
    cls = kind_class(kind)
    accepted = inspect.signature(cls).parameters
    return cls(**{key: value for key, value in (options or {}).items() if key in accepted and value is not None})


def row_units(kind: RowSource, path: str, rows_per_unit: int) -> tuple[list[str], list[int]]:
    """(units, the rows in each) of the source at `path`: every part cut into runs of at most `rows_per_unit`."""
    query, units, sizes = urlencode(kind.options()), [], []
    for part, rows in kind.parts(path):
        for start in range(0, rows, rows_per_unit):
            stop = min(start + rows_per_unit, rows)
            units.append(f"{kind.unit_name}:{part}?{query}#{start}:{stop}")
            sizes.append(stop - start)
    return units, sizes


def parse_unit(unit: str) -> tuple[str, str, dict[str, str], int, int] | None:
    """(kind name, part, options, start, stop) of a row unit; None for anything else (a tar shard's URL)."""
    name, colon, rest = unit.partition(":")
    if not colon or "#" not in rest or not (_DOTTED.fullmatch(name) or name in shipped_kinds()):
        return None
    rest, span = rest.rsplit("#", 1)
    part, _, query = rest.rpartition("?")
    start, _, stop = span.partition(":")
    if not (start.isdigit() and stop.isdigit()):
        return None
    return name, part, dict(parse_qsl(query, keep_blank_values=True)), int(start), int(stop)


def unit_samples_of_rows(unit: str) -> Iterator[dict]:
    """The samples of a row unit, in the tar-sample shape (`clip_train.data.row_samples`); a unit that cannot be read
    raises OSError or ValueError."""
    name, part, options, start, stop = parse_unit(unit)
    folder = part if os.path.isdir(part) else os.path.dirname(part)
    for row in build_kind(name, options).rows(part, start, stop):
        if isinstance(row, Unreadable):
            yield unreadable_sample(unit, row.key, row.why)
        else:
            yield row_sample(unit, row.key, row.caption, row.image, folder)
