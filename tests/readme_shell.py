"""The shell blocks of README.md and of every docs page, run through a real bash as a user pastes them, with every
launcher made a dry run.

Shims first on PATH stand in for the programs a block would start (`shim_folder`):
- `python -m clip_train`, `python -m clip_train.evaluate`, `python -m clip_train.curate` and `python -m clip_train.vlm`
  (ENTRY_POINTS) run for real, with $CLIP_TRAIN_COMPOSE_ONLY set: the entry point checks the command line, composes
  each job's config into a JSON-lines file and exits (clip_train/compose_only.py); any other `python` command
  (pytest, benchmarks, export) only succeeds;
- `sbatch [options] SCRIPT ARGS` runs SCRIPT with bash, as SLURM would, with the SLURM variables it reads set;
- `srun CMD` runs CMD; `torchrun [options] -m MODULE ARGS` runs `python -m MODULE ARGS`;
- `pip` and `img2dataset` only succeed.
So bash itself does the brace expansion, quoting and line continuation a pasted command gets.
"""

import json
import os
import re
import shlex
import subprocess
import sys

from readme_code import documents, read_document

ENTRY_POINTS = ("clip_train", "clip_train.evaluate", "clip_train.curate", "clip_train.vlm")
SHIMS = {
    "python": f"""#!/bin/bash
if [ "$1" = "-m" ]; then
    case "$2" in {" | ".join(ENTRY_POINTS)}) exec "$REAL_PYTHON" "$@" ;; esac
fi
""",
    "sbatch": """#!/bin/bash
while [[ "$1" == -* ]]; do shift; done
SLURM_NTASKS_PER_NODE=8 SLURM_NNODES=4 SLURM_JOB_NAME=clip_train SLURM_JOB_ID=1 exec bash "$@"
""",
    "srun": '#!/bin/bash\nexec "$@"\n',
    "torchrun": """#!/bin/bash
while [ "$1" != "-m" ]; do shift; done
exec python "$@"
""",
    "pip": "#!/bin/bash\n",
    "img2dataset": "#!/bin/bash\n",
}
SHARD_KEYS = re.compile(r"^\+*((?:data\.)?\w*shards|eval\.tasks\.[\w.]*shards)=(.*)$")


def bash_blocks() -> list[tuple[str, str]]:
    """("FILE:LINE" of its first command, text) of every ```bash block of README.md and the docs pages, in that order."""
    blocks = []
    for path in documents():
        text = read_document(path)
        for m in re.finditer(r"```bash\n(.*?)```", text, flags=re.S):
            blocks.append((f"{path}:{text[: m.start()].count(chr(10)) + 2}", m.group(1)))
    return blocks


def fill_placeholders(block: str) -> str:
    """The block with `<time>`, `<hash>` ... filled in as a user would (bash reads a bare `<` as a redirection)."""
    return re.sub(r"<(\w+)>", r"\1", block)


def shard_patterns(block: str) -> dict[str, str]:
    """{key: value} of every shard pattern a training or evaluation command of `block` sets, as bash will pass it
    once the quotes are removed (shlex splits like bash, without its brace expansion)."""
    patterns = {}
    for command in re.sub(r"\\\n", " ", block).splitlines():
        words = shlex.split(command, comments=True)
        if not (set(ENTRY_POINTS) & set(words) or any(w.endswith(".sbatch") for w in words)):
            continue
        for word in words:
            match = SHARD_KEYS.match(word)
            if match and ("{" in match.group(2) or "*" in match.group(2)):
                patterns[match.group(1)] = match.group(2)
    return patterns


def shim_folder(folder) -> str:
    """Writes the shims into `folder`; returns it."""
    os.makedirs(folder, exist_ok=True)
    for name, script in SHIMS.items():
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write(script)
        os.chmod(path, 0o755)
    return str(folder)


def run_block(block: str, folder, repo: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run `block` with `bash -e` in `folder` (which gets the repo's scripts/) behind the shims; returns the
    finished bash and the config of every job its clip_train commands composed."""
    composed = os.path.join(folder, "composed.jsonl")
    open(composed, "w").close()
    if not os.path.exists(os.path.join(folder, "scripts")):
        os.symlink(os.path.join(repo, "scripts"), os.path.join(folder, "scripts"))
    env = dict(os.environ, PATH=f"{shim_folder(os.path.join(folder, 'bin'))}:{os.environ['PATH']}",
               REAL_PYTHON=sys.executable, CLIP_TRAIN_COMPOSE_ONLY=composed, PYTHONPATH=repo)  # fmt: skip
    done = subprocess.run(["bash", "-e", "-c", fill_placeholders(block)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    with open(composed) as f:
        return done, [json.loads(line) for line in f]


def config_value(config: dict, key: str):
    """The value at the dotted `key` of a composed config, or None where it has none."""
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config
