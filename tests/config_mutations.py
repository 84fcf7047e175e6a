"""Random mutations of the shipped experiment files, for the loader's property test (tests/test_config_mutations.py)
and for a longer run from the command line.

A case is one shipped config (config/*.yaml) with one to three mutations at key paths drawn at random from the
document: a key deleted, a value replaced by junk of another type, a number scaled (0.01x to 1000x), a value wrapped in
grid_search, a key renamed (a typo), a mapping replaced by a list or a list by a mapping. The loader (`marlkit.spec.load_experiments`, what
train.py runs before Ray starts) must either load the file or raise `ConfigError` with a one-line message; any other
exception, a message of several lines, or a loaded file whose first trial's config RLlib's own validation refuses, is
a defect, reported with the case's seed so that it can be replayed.

    python tests/config_mutations.py --cases 3000          # prints the counts, and every defect's seed and message
    python tests/config_mutations.py --replay 1234         # one case: its mutations and the loader's answer
    python tests/config_mutations.py --unity --cases 200   # the Unity files (each load starts the stand-in game)
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from envs.errors import ConfigError  # noqa: E402

# The Unity configs start their game to read its agents and spaces (seconds each); the others load in milliseconds.
CONFIGS = sorted(path for path in (REPO / "config").rglob("*.yaml") if "dodgeball" not in path.name)
UNITY_CONFIGS = sorted(path for path in (REPO / "config").rglob("*.yaml") if "dodgeball" in path.name)
JUNK = (None, 0, -1, 3, 2.5, -0.5, 1e12, True, False, "", "junk", "3", [], [1, 2], {}, {"junk": 1},
        {"grid_search": []}, {"grid_search": "x"})


def key_paths(node, prefix=()) -> list[tuple]:
    """Every path to a value in a YAML document (mapping keys and list indices)."""
    paths = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        path = (*prefix, key)
        paths.append(path)
        paths += key_paths(value, path)
    return paths


def typo(key: str, rng: random.Random) -> str:
    if len(key) < 2:
        return key + "x"
    position = rng.randrange(len(key) - 1)
    return key[:position] + key[position + 1] + key[position] + key[position + 2:] if rng.random() < 0.5 \
        else key[:position] + key[position + 1:]


def mutate(document: dict, rng: random.Random) -> str:
    """Applies one random mutation to `document` in place; returns what it did."""
    path = rng.choice(key_paths(document))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    key, value = path[-1], parent[path[-1]]
    kind = rng.choice(("delete", "junk", "junk", "grid_search", "rename", "shape", "scale"))
    if kind == "scale" and isinstance(value, (int, float)) and not isinstance(value, bool):
        # a plausible number of the right type that may not fit the others (minibatch_size above train_batch_size)
        factor = rng.choice((0.01, 0.5, 10, 1000))
        parent[key] = type(value)(value * factor) if isinstance(value, float) else max(1, int(value * factor))
    elif kind == "delete" or kind == "scale":
        kind = "delete"
        del parent[key]
    elif kind == "junk":
        parent[key] = copy.deepcopy(rng.choice(JUNK))
    elif kind == "grid_search":
        parent[key] = {"grid_search": [value, copy.deepcopy(rng.choice(JUNK))]}
    elif kind == "rename" and isinstance(parent, dict) and isinstance(key, str):
        parent[typo(key, rng)] = parent.pop(key)
    elif isinstance(value, dict):
        parent[key] = list(value.values()) if rng.random() < 0.5 else list(value)
    elif isinstance(value, list):
        parent[key] = {str(index): item for index, item in enumerate(value)}
    else:
        parent[key] = [value]
        kind = "shape"
    return f"{kind} {'.'.join(map(str, path))}"


def case(seed: int, folder: Path, configs: list[Path] = CONFIGS) -> tuple[Path, list[str]]:
    """The mutated file of case `seed` (one of `configs`, written under `folder`) and its mutations."""
    rng = random.Random(seed)
    source = rng.choice(configs)
    document = yaml.safe_load(source.read_text())
    mutations = [mutate(document, rng) for _ in range(rng.randint(1, 3)) if key_paths(document)]
    path = folder / f"case{seed}-{source.name}"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path, [f"{source.name}: {mutation}" for mutation in mutations]


def outcome(path: Path) -> tuple[str, str]:
    """("loaded", ""), ("error", the one-line message) or ("defect", what went wrong). A file that loads must also
    pass RLlib's own validation of its first trial's config, as Tune would pass it to the algorithm: one that RLlib
    refuses would fail inside the trial, after Ray started, so the loader should have refused it."""
    from marlkit.launch import first_trial_config
    from marlkit.algorithms import algorithm_class
    from marlkit.spec import load_experiments

    try:
        experiments = load_experiments(path)
    except ConfigError as error:
        message = str(error)
        if "\n" in message or not message.strip():
            return "defect", f"a ConfigError of {message.count(chr(10)) + 1} lines: {message!r}"
        return "error", message
    except Exception:  # noqa: BLE001: any other exception is what this test exists to find
        return "defect", traceback.format_exc(limit=-3)
    for experiment in experiments:
        try:
            algorithm_class(experiment.run).get_default_config().update_from_dict(
                first_trial_config(experiment)).validate()
        except Exception as error:  # noqa: BLE001
            return "defect", f"loaded, but RLlib refuses {experiment.name}: {type(error).__name__}: {error}"
    return "loaded", ""


def run(seeds, folder: Path, configs: list[Path] = CONFIGS) -> tuple[Counter, list[tuple[int, list[str], str]]]:
    """Counts of the outcomes of the cases `seeds`, and every defect (seed, mutations, what went wrong)."""
    counts, defects = Counter(), []
    for seed in seeds:
        path, mutations = case(seed, folder, configs)
        kind, detail = outcome(path)
        counts[kind] += 1
        if kind == "defect":
            defects.append((seed, mutations, detail))
        path.unlink()
    return counts, defects


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--replay", type=int, help="one case: its mutations and the loader's answer")
    parser.add_argument("--unity", action="store_true",
                        help="mutate the Unity experiment files instead (slower: a load starts the stand-in game)")
    args = parser.parse_args(argv)
    configs = UNITY_CONFIGS if args.unity else CONFIGS
    with tempfile.TemporaryDirectory() as folder:
        if args.replay is not None:
            path, mutations = case(args.replay, Path(folder), configs)
            print("\n".join(mutations), "\n", *outcome(path))
            return 0
        counts, defects = run(range(args.first_seed, args.first_seed + args.cases), Path(folder), configs)
    for seed, mutations, detail in defects:
        print(f"defect, seed {seed}: {'; '.join(mutations)}\n{detail}")
    print(f"{args.cases} cases: {counts['loaded']} loaded, {counts['error']} one-line errors, "
          f"{counts['defect']} defects (tracebacks or multi-line errors)")
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
