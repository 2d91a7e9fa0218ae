"""Write the malformed-spec corpus that tests/search/test_spec_fuzz.py feeds to ``edgetune check``
and to the service's spec check. The files are committed; rerun this only to change the corpus:

    PYTHONPATH=. .venv/bin/python tests/search/data/spec_corpus/generate.py

Deterministic (seeded). Every file it keeps is refused: most by spec validation
(``load_spec`` raises a SpecError), a few by the target or model they name (an unknown target,
an unknown built-in model with a shipped target, so ``check`` never calibrates the host).
"""

from __future__ import annotations

import base64
import copy
import json
import random
from pathlib import Path
from typing import Any

import yaml

from search.errors import SpecError
from search.spec import load_spec

HERE = Path(__file__).resolve().parent
SEED = 20261201
TARGET = "cortex-m4"  # a shipped target: cheap, never calibrates this machine
BASE: dict[str, Any] = {
    "name": "fuzz",
    "model": {"name": "resnet8", "input_shape": [1, 28, 28], "num_classes": 10},
    "data": {
        "name": "fashion-mnist",
        "finetune_size": 512,
        "val_size": 256,
        "calibration_size": 64,
        "batch_size": 64,
    },
    "target": TARGET,
    "constraints": {"latency_ms": "60%", "size_kb": 12.5},
    "objectives": ["accuracy"],
    "space": {
        "quantization": {"weight_bits": [4, 8, 32], "activation_bits": [8, 32]},
        "pruning": {"max_ratio": 0.5, "step": 0.25, "round_to": 4},
        "distillation": {"temperature": [2.0, 6.0], "alpha": 0.5, "lr": [5e-4, 5e-3], "steps": 8},
    },
    "search": {"sampler": "tpe", "trials": 4, "workers": 1, "executor": "process", "seed": 0},
}
UNICODE = [
    "名字",
    "😀" * 30,
    "a\u202eb",
    "\u200d",
    "Ωmega",
    "ß",
    "\ufeffname",
    "e\u0301",
    "\u2028x",
]
BAD_VALUES: list[Any] = [
    [],
    {},
    [[1]],
    [{}],
    {"a": 1},
    "",
    "x",
    True,
    None,
    -1,
    0,
    3.5,
    -1e308,
    1e308,
    float("inf"),
    10**30,
    -(10**25),
    "1e999",
    "60%%",
    "-5%",
    "nan%",
    [1, 2, 3],
    ["accuracy", "accuracy"],
    [None],
    "a" * 3000,
    *UNICODE,
]


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path] if path else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _leaves(v, (*path, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def _deep(depth: int, leaf: Any = 1) -> Any:
    out = leaf
    for i in range(depth):
        out = [out] if i % 2 else {"k": out}
    return out


def mutation(rng: random.Random) -> str:
    """The base spec with one to three values replaced, keys renamed, added or removed."""
    spec = copy.deepcopy(BASE)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_leaves(spec))
        kind = rng.random()
        if kind < 0.6:
            _set(spec, path, copy.deepcopy(rng.choice(BAD_VALUES)))
        elif kind < 0.7:
            _set(spec, path, _deep(rng.randint(5, 40)))
        elif kind < 0.8:
            parent: Any = spec
            for p in path[:-1]:
                parent = parent[p]
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
                parent[rng.choice([*UNICODE, "measurer", "token", "url", "wieghts", "x" * 500])] = 1
        elif kind < 0.9:
            spec[rng.choice(["measurer", "measurer_url", "token", "ray", "extra"])] = {
                "url": "http://10.0.0.1:9000",
                "token": "secret",
            }
        else:
            spec.pop(rng.choice(["name", "model"]), None)
    return yaml.safe_dump(spec, allow_unicode=rng.random() < 0.5, sort_keys=rng.random() < 0.5)


def _valid_text() -> str:
    return yaml.safe_dump(BASE, sort_keys=False)


def tagged(rng: random.Random) -> str:
    """A YAML tag the loader refuses, placed on a random value."""
    payload = rng.choice(["this:x", "os:system", "tests.search:x", "resnet8", "host"])
    b64 = base64.b64encode(payload.encode()).decode()
    tag = rng.choice(
        [
            f"!!binary {b64}",
            "!!timestamp 2001-12-14t21:59:43.10-05:00",
            "!!timestamp 2024-01-01",
            "!!set {a: null, b: null}",
            "!!omap [{a: 1}, {b: 2}]",
            "!!pairs [{a: 1}]",
            "!!python/object/apply:os.system ['true']",
            "!!python/name:os.system ''",
            "!!python/tuple [1, 2]",
            "!!python/bytes dGhpcw==",
            "!custom value",
            "!<tag:example.com,2000:x> 1",
        ]
    )
    where = rng.choice(["model: {name: %s}", "data: {name: %s}", "target: %s", "name: %s"])
    lines = ["name: fuzz", "model: {name: resnet8}", f"target: {TARGET}"]
    key = where.split(":")[0]
    lines = [ln for ln in lines if not ln.startswith(key + ":")]
    return "\n".join([*lines, where % tag]) + "\n"


def alias_bomb(rng: random.Random) -> str:
    width, levels = rng.randint(3, 10), rng.randint(4, 9)
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    lines.append(rng.choice([f"name: *a{levels - 1}", f"model: {{name: *a{levels - 1}}}"]))
    if not lines[-1].startswith("model"):
        lines.append("model: {name: resnet8}")
    return "\n".join(lines) + "\n"


def many_aliases(rng: random.Random) -> str:
    n = rng.randint(101, 400)
    return "x: &x 1\nname: fuzz\nmodel: {name: resnet8}\ny: [" + ", ".join(["*x"] * n) + "]\n"


def deep(rng: random.Random) -> str:
    n = rng.randint(21, 3000)
    style = rng.random()
    if style < 0.4:
        body = "[" * n + "]" * n
    elif style < 0.7:
        body = "{a: " * n + "1" + "}" * n
    else:
        return "name: fuzz\n" + "".join(" " * i + f"k{i}:\n" for i in range(min(n, 120)))
    return f"name: fuzz\nmodel: {{name: resnet8}}\nspace: {body}\n"


def many_values(rng: random.Random) -> str:
    n = rng.randint(10_001, 12_000)
    return "name: fuzz\nmodel: {name: resnet8}\nobjectives: [" + ",".join(["1"] * n) + "]\n"


def raw_junk(rng: random.Random) -> str:
    pieces = [
        "name: fuzz\nmodel: {name: resnet8\n",
        "---\nname: a\n---\nname: b\n",
        "",
        "~\n",
        "42\n",
        "- name: fuzz\n",
        "name:\tfuzz\n",
        'name: "a\\0b"\nmodel: {name: resnet8}\n',
        'name: "\\x01"\nmodel: {name: resnet8}\n',
        "name: fuzz\nname: again\nmodel: {name: resnet8}\n",
        "name: fuzz\nmodel: {name: resnet8}\n1: one\n",
        "name: fuzz\nmodel: {name: resnet8}\n[a]: b\n",
        "name: fuzz\nmodel: {name: resnet8}\n? {a: 1}\n: b\n",
        "x: &r [*r]\nname: fuzz\nmodel: {name: resnet8}\n",
        "name: fuzz\nmodel: {name: resnet8}\nsearch: {trials: " + "9" * 5000 + "}\n",
        "name: fuzz\nmodel: {name: resnet8}\nsearch: {seed: " + "9" * 40 + "}\n",
        "name: fuzz\nmodel: {name: resnet8}\nconstraints: {latency_ms: .nan}\n",
        "name: fuzz\nmodel: {name: resnet8, weights: ~nosuchuser-fuzz/a.pt}\n",
        "name: fuzz\nmodel: {name: resnet8}\nobjectives: [[1]]\n",
        "name: fuzz\nmodel: {name: resnet8}\nobjectives: [{a: 1}]\n",
        "name: fuzz\nmodel: {name: 'this:x:y'}\n",
        "name: fuzz\nmodel: {name: ':x'}\n",
        "name: fuzz\nmodel: {name: resnet8}\nspace: {distillation: {alpha: [[1], [2]]}}\n",
        "name: fuzz\nmodel: {name: resnet8}\nsearch: {storage: 1}\n",
        "name: fuzz\nmodel: {name: resnet8}\nmeasurer: {url: 'http://x:1', token: t}\n",
        "name: fuzz\nmodel: {name: resnet8}\ntarget: {url: 'http://x:1'}\n",
        "x: &a {name: resnet8}\nname: fuzz\nmodel: {<<: *a, bad: 1}\n",
        "name: fuzz\nmodel: {<<: [1, 2]}\n",
        "&a a: b\n*a : c\n",
        "%YAML 1.1\n%TAG ! tag:evil.com,2000:\n---\nname: !x y\n",
        "name: fuzz\nmodel: {name: resnet8}\nsearch: {sampler: " + "ü" * 4000 + "}\n",
        "name: " + "x" * 20000 + "\nmodel: {name: resnet8}\n",
        "name: fuzz\nmodel: {name: resnet8}\n" + "k" * 20000 + ": 1\n",
    ]
    if rng.random() < 0.5:
        return rng.choice(pieces)
    alphabet = "{}[]:,-&*!|>'\"%@`#? \n\tab01.~😀é\\"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400)))


def json_case(rng: random.Random) -> str:
    n = rng.randint(30, 5000)
    return rng.choice(
        [
            '{"name": "fuzz", "model": {"name": "resnet8"}, "x": ' + "[" * n + "]" * n + "}",
            '{"name": "fuzz", "model": {"name": "resnet8"}, "constraints": {"size_kb": NaN}}',
            '{"name": "fuzz", "model": {"name": "resnet8"}, "search": {"trials": Infinity}}',
            '{"name": "fuzz", "model": {"name": "resnet8"}, "search": {"trials": '
            + "7" * 5000
            + "}}",
            '{"name": "fuzz", "model": {"name": "resnet8"}, "objectives": [[1]]}',
            '{"name": "fuzz", "model": {"name": "a\\u0000b"}}',
            '{"name": "fuzz", "model": {"name": "resnet8"}',
            "[1, 2, 3]",
            '"just text"',
            json.dumps({**BASE, "measurer": {"url": "http://x", "token": "t"}}),
            json.dumps({**BASE, "name": "😀" * rng.randint(1, 200)}),
            '{"name": "fuzz", "name": "dup", "model": {"name": "resnet8"}}',
        ]
    )


def semantic(rng: random.Random) -> str:
    """Valid as a spec, refused by what it names: an unknown target or built-in model."""
    spec = copy.deepcopy(BASE)
    if rng.random() < 0.6:
        spec["target"] = rng.choice(["no-such-target", "Makefile-fuzz", *UNICODE[:5]]) + "-x"
    else:
        spec["model"]["name"] = rng.choice(["resnet9", "RESNET8", "mobilenet", *UNICODE[:5]])
    return yaml.safe_dump(spec, allow_unicode=True)


MAKERS = {
    "mutation": (mutation, 110),
    "tagged": (tagged, 30),
    "bomb": (alias_bomb, 10),
    "aliases": (many_aliases, 4),
    "deep": (deep, 12),
    "values": (many_values, 2),
    "junk": (raw_junk, 60),
    "json": (json_case, 20),
    "semantic": (semantic, 12),
}


def refused_by_validation(path: Path) -> bool:
    try:
        load_spec(path)
    except SpecError:
        return True
    return False


def main() -> None:
    rng = random.Random(SEED)
    for old in HERE.glob("case-*"):
        old.unlink()
    n = 0
    for kind, (make, count) in MAKERS.items():
        kept = 0
        while kept < count:
            text = make(rng)
            suffix = ".json" if kind == "json" else ".yaml"
            path = HERE / f"case-{n:03d}-{kind}{suffix}"
            path.write_text(text, encoding="utf-8")
            if kind == "semantic" or refused_by_validation(path):
                kept, n = kept + 1, n + 1
            else:
                path.unlink()
    total = sum(p.stat().st_size for p in HERE.glob("case-*"))
    print(f"{n} cases, {total} bytes in {HERE}")


if __name__ == "__main__":
    main()
