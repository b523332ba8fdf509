"""`model.init_from` by name: a Hugging Face hub id, or an OpenCLIP `ARCH/TAG`, found in the local hub cache.

Nothing is downloaded: `huggingface_hub.snapshot_download(..., local_files_only=True)` only looks in the cache
(`HF_HUB_CACHE`, `HF_HOME`; what `huggingface-cli download ID` fills), so an offline machine resolves what it
holds and a name it does not hold fails with the command that would fetch it. An OpenCLIP name such as
`ViT-B-32/laion2b_s34b_b79k` is mapped to the hub repository OpenCLIP's own registry gives for it
(`open_clip.get_pretrained_cfg`, when open_clip is installed), whose files are an OpenCLIP hub folder.
"""

import os
import re

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _open_clip_repo(name: str) -> str | None:
    """The hub repository OpenCLIP's registry names for `ARCH/TAG`, or None (no open_clip, or no such pair)."""
    try:
        import open_clip
    except ImportError:
        return None
    arch, _, tag = name.partition("/")
    repo = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub") or ""
    return repo.strip("/") or None


def resolve_source(name: str) -> str:
    """`name` itself when it is a path that exists (or no hub name); else the local snapshot folder of the hub id
    or OpenCLIP name it is. ValueError naming the download command when the cache does not hold it."""
    if os.path.exists(os.path.expanduser(name)) or not HUB_ID.fullmatch(name):
        return name
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo = _open_clip_repo(name) or name
    try:
        return snapshot_download(repo, local_files_only=True)
    except LocalEntryNotFoundError:
        via = f" (OpenCLIP's {name})" if repo != name else ""
        raise ValueError(
            f"model.init_from={name} is neither a path nor in the local Hugging Face cache as {repo}{via}: fetch it on a "
            f"machine with a network with `huggingface-cli download {repo}` (the cache is HF_HUB_CACHE or HF_HOME/hub)"
        ) from None
