"""`connector=qformer` and `lm_config=gpt2_tiny` on the command line, for the VLM's config groups.

The VLM's groups live under `configs/vlm/` (`vlm/connector`, `vlm/lm_config`) and fill the config's `connector`
and `lm_config` nodes, so Hydra's own spelling of a choice is `vlm/connector@connector=qformer`. Hydra reads
`connector=qformer` as a value: the node would become the string "qformer" and the run would fail far from the
cause. So the short form is rewritten to the group override before Hydra parses it; `connector.width=64` and the
long form pass unchanged, and an option that does not exist is refused by Hydra with the options there are.
"""

GROUPS = {"connector": "vlm/connector@connector", "lm_config": "vlm/lm_config@lm_config"}


def expand_group_shorthands(overrides: list[str]) -> list[str]:
    """`connector=NAME` -> `vlm/connector@connector=NAME` (and `lm_config=NAME` alike); every other argument as it is."""
    expanded = []
    for override in overrides:
        key, sep, value = override.partition("=")
        expanded.append(f"{GROUPS[key]}={value}" if sep and key in GROUPS else override)
    return expanded
