"""Hostile spec text: only plain YAML types, bounded size, nesting, aliases and values, short
one-line errors; and the service's checks on the validated spec (allowlist, files, targets,
bounds), each attack refused with nothing imported, read or started."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from pydantic import BaseModel

from search.errors import SpecError
from search.service.config import (
    ServiceConfig,
    check_spec_allowed,
    network_spec,
    network_spec_text,
)
from search.spec import (
    BUILTIN_MODEL_NAMES,
    ENTRY_POINT_FIELD,
    entry_points,
    load_spec,
    parse_spec,
    parse_spec_text,
    spec_to_json,
)
from search.spec_text import MAX_ALIASES, MAX_DEPTH, MAX_NODES, MAX_TEXT_BYTES, load_spec_data

BASE = "name: s\nmodel: {name: resnet8}\n"
TOKEN = "test-token-" + "x" * 24
# 415 bytes, 9**7 strings once expanded: the bomb of the security report
BOMB = (
    "".join(
        f"{k}: &{k} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
        for p, k in zip(["", "a", "b", "c", "d", "e", "f"], "abcdefg", strict=True)
    )
    + "name: *g\nmodel: {name: resnet8}\n"
)
SNEAKY = "sneaky_spec_module"  # a module that leaves a mark when imported


def one_line(exc: pytest.ExceptionInfo[SpecError], limit: int = 600) -> str:
    text = str(exc.value)
    assert "\n" not in text and len(text) <= limit, text[:2000]
    return text


@pytest.fixture
def sneaky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable module that writes a marker file when imported; yields the marker."""
    marker = tmp_path / "imported"
    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / f"{SNEAKY}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n"
        "def build(**kw):\n    return None\n"
    )
    monkeypatch.syspath_prepend(str(mod))
    sys.modules.pop(SNEAKY, None)
    yield marker
    assert not marker.exists() and SNEAKY not in sys.modules, "the spec's module was imported"


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServiceConfig:
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))
    root = tmp_path / "root"
    root.mkdir()
    (root / "teacher.pt").write_bytes(b"")
    (root / "device.json").write_text("{}")
    (tmp_path / "Makefile").write_text("all:\n")
    return ServiceConfig(
        storage=f"sqlite:///{tmp_path}/studies.db",
        home=tmp_path / "home",
        token=TOKEN,
        allow_modules=("tests.search",),
        data_root=root,
        max_workers=2,
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- the loader: plain types only ------------------------------------------------------------


@pytest.mark.parametrize("field", ["model", "data"])
def test_binary_names_are_refused_before_anything_is_imported(
    field: str, sneaky: Path, cfg: ServiceConfig
) -> None:
    binary = f"{{name: !!binary {b64(SNEAKY + ':build')}}}"  # the name is SNEAKY:build
    text = f"name: s\nmodel: {binary}\n" if field == "model" else f"{BASE}data: {binary}\n"
    line = 2 if field == "model" else 3
    for parse in (lambda: parse_spec_text(text), lambda: network_spec_text(text, cfg)):
        with pytest.raises(SpecError) as err:
            parse()
        assert f"spec: line {line}: '!!binary' values are not allowed" in one_line(err)
    # the parser the service used before (yaml.safe_load gives bytes): refused after it too
    with pytest.raises(SpecError) as err:
        network_spec(yaml.safe_load(text), cfg)
    assert f"{field}.name: binary data" in one_line(err)


@pytest.mark.parametrize(
    "value",
    [
        "!!timestamp 2001-12-14",
        "!!set {a: null}",
        "!!omap [{a: 1}]",
        "!!pairs [{a: 1}]",
        "!!python/object/apply:os.system ['true']",
        "!!python/name:os.system ''",
        "!custom x",
    ],
)
def test_tags_beyond_plain_types_are_refused_with_the_line(value: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec_text(f"{BASE}target: {value}\n")
    assert "spec: line 3: " in one_line(err) and "values are not allowed" in str(err.value)


def test_unquoted_dates_stay_text() -> None:
    assert parse_spec_text("name: 2024-01-01\nmodel: {name: resnet8}\n").name == "2024-01-01"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "name: t\n", "line 3: key 'name' appears twice"),
        (BASE + "1: x\n", "line 3: a key must be text, got '1'"),
        (BASE + "x: &a [*a]\n", "recursive structure"),
        (BASE + "search: {trials: " + "9" * 5000 + "}\n", "is too long; numbers in a spec fit"),
        (BASE + "search: {trials: " + "9" * 30 + "}\n", "search.trials: the number"),
        (BASE + "constraints: {latency_ms: .nan}\n", "constraints.latency_ms: NaN is not"),
        ('name: "a\\0b"\nmodel: {name: resnet8}\n', "name: contains a NUL character"),
        ("name: s\x01\n", "character #x0001 is not allowed"),
    ],
)
def test_odd_values_are_refused_on_one_line(text: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec_text(text)
    assert message in one_line(err)


# --- the limits ------------------------------------------------------------------------------


def test_the_alias_bomb_costs_milliseconds_and_a_short_error(cfg: ServiceConfig) -> None:
    assert len(BOMB) < 500
    for parse in (
        lambda: parse_spec_text(BOMB),
        lambda: network_spec_text(BOMB, cfg),
        lambda: network_spec(yaml.safe_load(BOMB), cfg),  # shared lists, counted once per use
    ):
        start = time.perf_counter()
        with pytest.raises(SpecError) as err:
            parse()
        assert time.perf_counter() - start < 0.5
        assert f"more than {MAX_NODES} values" in one_line(err, limit=300)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "x: " + "[" * 3000 + "]" * 3000 + "\n", f"more than {MAX_DEPTH} levels"),
        (BASE + "x: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", f"more than {MAX_DEPTH} levels"),
        (
            BASE + "a: &a " + "[" * 15 + "]" * 15 + "\nb: &b [[[*a]]]\nc: [[[*b]]]\n",
            "levels of nesting (aliases included)",
        ),
        (BASE + "x: &x 1\ny: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n", "aliases"),
        (BASE + "y: [" + ",".join(["1"] * MAX_NODES) + "]\n", f"more than {MAX_NODES} values"),
        (BASE + "#" * MAX_TEXT_BYTES, f"longer than the limit of {MAX_TEXT_BYTES} bytes"),
    ],
)
def test_limits_refuse_before_objects_are_made(text: str, message: str) -> None:
    start = time.perf_counter()
    with pytest.raises(SpecError) as err:
        load_spec_data(text)
    assert time.perf_counter() - start < 2.0
    assert message in one_line(err)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"x": ' + "[" * 30 + "]" * 30 + "}", f"more than {MAX_DEPTH} levels"),
        ('{"name": "s", "search": {"trials": NaN}}', "NaN is not a number a spec can hold"),
        ('{"name": "s", "search": {"trials": ' + "7" * 5000 + "}}", "not a valid spec"),
        ('{"name": "s"', "not valid JSON"),
    ],
)
def test_json_bodies_have_the_same_limits(body: str, message: str, cfg: ServiceConfig) -> None:
    with pytest.raises(SpecError) as err:
        network_spec_text(body, cfg, as_json=True)
    assert message in one_line(err)


def test_errors_quote_at_most_a_couple_hundred_characters() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec_text("name: " + "x" * 100_000 + "\nmodel: {name: resnet8}\n")
    assert "name: must be 1-100 letters" in one_line(err, limit=500)
    many = BASE + "space: {quantization: {weight_bits: [" + ",".join(["a"] * 3000) + "]}}\n"
    with pytest.raises(SpecError) as err:
        parse_spec_text(many)
    assert "and 2990 more errors" in one_line(err, limit=3000)
    with pytest.raises(SpecError) as err:
        parse_spec_text(BASE + '? "' + "k\\n" * 5000 + '"\n: 1\n')  # a long explicit key
    assert "unknown key" in one_line(err)


def test_objectives_of_the_wrong_type_name_the_field() -> None:
    for bad in ([[1]], [{"a": 1}], [None]):
        with pytest.raises(SpecError) as err:
            parse_spec({"name": "s", "model": {"name": "resnet8"}, "objectives": bad})
        assert one_line(err).startswith("objectives: must be a list of objective names")


def test_a_section_built_inside_a_validator_reports_on_one_line() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec_text(BASE + "space: {distillation: {alpha: [[1], [2]]}}\n")
    assert "space.distillation.alpha.low: input should be a valid number" in one_line(err)


def test_entry_points_must_look_like_module_function() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec_text("name: s\nmodel: {name: 'this:x:y'}\n")
    assert "model.name: must be a built-in name" in one_line(err)


def test_json_spec_files_are_read_as_json(tmp_path: Path) -> None:
    spec = parse_spec({"name": "s", "model": {"name": "resnet8"}, "data": {"path": "/d/😀"}})
    path = tmp_path / "s.json"
    path.write_text(json.dumps(spec_to_json(spec)))  # ASCII, with surrogate-pair escapes
    assert load_spec(path) == spec


# --- entry points and the service's checks ---------------------------------------------------


class _Later(BaseModel):
    """A section added later: its marked field is listed without changing the check."""

    plugin: Annotated[str, ENTRY_POINT_FIELD] = "pkg.mod:fn"
    other: str = "not listed"


def test_entry_points_lists_every_marked_field() -> None:
    spec = parse_spec({"name": "s", "model": {"name": "resnet8"}})
    assert entry_points(spec) == {"model.name": "resnet8", "data.name": "fashion-mnist"}
    assert entry_points(_Later()) == {"plugin": "pkg.mod:fn"}


def refused(text: str, cfg: ServiceConfig, **kw: object) -> str:
    with pytest.raises(SpecError) as err:
        network_spec_text(text, cfg, **kw)  # type: ignore[arg-type]
    return one_line(err)


def ok_spec(**parts: str) -> str:
    sections = {
        "name": "s",
        "model": "{name: resnet8, weights: teacher.pt}",
        "search": "{workers: 1, trials: 4}",
        **parts,
    }
    return "".join(f"{k}: {v}\n" for k, v in sections.items())


def test_a_plain_spec_passes_and_names_resolve_inside_the_root(cfg: ServiceConfig) -> None:
    assert cfg.data_root is not None
    spec = network_spec_text(ok_spec(target="device.json"), cfg)
    assert spec.model.weights == (cfg.data_root / "teacher.pt").resolve()
    assert spec.target == str((cfg.data_root / "device.json").resolve())
    assert network_spec_text(ok_spec(target="host"), cfg).target == "host"
    allowed = ok_spec(model="{name: 'tests.search.x:build'}")
    assert network_spec_text(allowed, cfg).model.name == "tests.search.x:build"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("Makefile", "target: unknown target 'Makefile'; use a registered target (cortex-m4"),
        ("../Makefile", "target: unknown target '../Makefile'"),
        ("../../etc/x.json", "is outside the service's data folder"),
        ("nope.yaml", "target: no target file 'nope.yaml' in the service's data folder"),
        ("/etc/passwd", "target: unknown target '/etc/passwd'"),
    ],
)
def test_targets_are_registered_names_or_target_files_in_the_root(
    target: str, message: str, cfg: ServiceConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import targets.registry

    def no_read(*args: object) -> None:
        raise AssertionError("a target file was read")

    monkeypatch.setattr(targets.registry, "load_target_file", no_read)
    assert message in refused(ok_spec(target=target), cfg)


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ({"model": "{name: resnet9}"}, "model.name: unknown model 'resnet9'; use a built-in"),
        ({"data": "{name: mnist}"}, "data.name: unknown data set 'mnist'; use a built-in data"),
        ({"model": "{name: 'os:system'}"}, "model.name: module 'os' is not on this service's"),
        ({"data": "{name: 'this:x'}"}, "data.name: module 'this' is not on this service's"),
        ({"model": "{name: 'tests.searchx:f'}"}, "module 'tests.searchx' is not on"),
        ({"search": "{workers: 3}"}, "search.workers: must be <= 2 on this service, got 3"),
        ({"search": "{trials: 501}"}, "search.trials: must be <= 500 on this service, got 501"),
        (
            {"space": "{distillation: {steps: 20001}}"},
            "space.distillation.steps: must be <= 20000 on this service",
        ),
        (
            {"model": "{name: resnet8, input_shape: [3, 225, 224]}"},
            "model.input_shape: 3x225x224 is 151200 values per input, over this service's limit",
        ),
        ({"model": "{name: resnet8, num_classes: 1001}"}, "model.num_classes: must be <= 1000"),
        ({"search": "{ray_address: 'h:6379'}"}, "search.ray_address: the operator sets"),
        ({"search": "{storage: 'sqlite:///x.db'}"}, "search.storage: the service keeps"),
        ({"measurer": "{url: 'http://10.0.0.1:9', token: t}"}, "measurer: unknown key"),
        ({"target": "{url: 'http://10.0.0.1:9'}"}, "target: input should be a valid string"),
        ({"search": "{measurer_url: 'http://x'}"}, "search.measurer_url: unknown key"),
    ],
)
def test_the_service_refuses_what_a_spec_may_not_do(
    parts: dict[str, str], message: str, cfg: ServiceConfig, sneaky: Path
) -> None:
    assert message in refused(ok_spec(**parts), cfg)


def test_bounds_are_the_operators_settings(cfg: ServiceConfig) -> None:
    default = ServiceConfig(storage="sqlite://", home=Path("."), token=TOKEN)
    assert default.max_trials == 500 and default.max_steps == 20_000
    assert default.max_input_elems == 3 * 224 * 224 and default.max_workers >= 1
    from search.workloads.models import BUILTIN_MODELS

    assert set(BUILTIN_MODEL_NAMES) == set(BUILTIN_MODELS)  # the service's list needs no torch
    assert "search.trials: must be <= 500 on this service, got 900" in refused(
        ok_spec(), cfg, trials=900
    )
    big = ServiceConfig(**{**cfg.__dict__, "max_trials": 1000, "max_workers": 8})
    assert network_spec_text(ok_spec(search="{workers: 8}"), big, trials=900).search.trials == 900


def test_resume_checks_the_stored_spec(cfg: ServiceConfig) -> None:
    """A study made on the command line may name anything: resuming it through the service
    must pass the same checks (app.py's resume calls check_spec_allowed)."""

    def why(raw: dict[str, Any], trials: int | None = None) -> str:
        with pytest.raises(SpecError) as err:
            check_spec_allowed(parse_spec(raw), cfg, trials=trials)
        return one_line(err)

    model = {"name": "resnet8"}
    assert "model.name: module 'os' is not on" in why({"name": "s", "model": {"name": "os:x"}})
    weights = {"name": "resnet8", "weights": "/etc/passwd"}
    assert "model.weights: '/etc/passwd' is outside" in why({"name": "s", "model": weights})
    fine = {"name": "s", "model": model, "search": {"workers": 1}}
    check_spec_allowed(parse_spec(fine), cfg)
    assert "trials: must be <= 500 on this service, got 600" in why(fine, trials=600)
    cluster = {"name": "s", "model": model, "search": {"workers": 1, "ray_address": "h:1"}}
    assert "search.ray_address: the operator sets" in why(cluster)


# --- the same attacks over HTTP: 422, one line, nothing written or started --------------------


def test_attacks_over_http_get_422_and_change_nothing(
    cfg: ServiceConfig, sneaky: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna
    from fastapi.testclient import TestClient

    import targets.registry
    from search.service.app import create_app

    monkeypatch.setattr(targets.registry, "load_target_file", lambda *a: 1 / 0)
    app = create_app(cfg)
    client = TestClient(
        app, base_url="http://127.0.0.1:8080", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    attacks = {
        "binary": f"name: s\nmodel: {{name: !!binary {b64(SNEAKY + ':build')}}}\n",
        "bomb": BOMB,
        "objectives": BASE + "objectives: [[1]]\n",
        "target": ok_spec(target="Makefile"),
        "model": ok_spec(model="{name: resnet9}"),
        "workers": ok_spec(search="{workers: 64}"),
        "measurer": ok_spec(measurer="{url: 'http://10.0.0.1:9', token: t}"),
    }
    deep_json = '{"name": "s", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    for what, body in [*attacks.items(), ("deep json", deep_json)]:
        start = time.perf_counter()
        kind = "application/json" if what.endswith("json") else "application/yaml"
        res = client.post("/api/studies", content=body, headers={"Content-Type": kind})
        assert res.status_code == 422, (what, res.status_code, res.text[:300])
        assert len(res.content) < 800 and time.perf_counter() - start < 1.0, what
        assert "\n" not in res.json()["detail"], what
    assert optuna.study.get_all_study_names(storage=cfg.storage) == []
    assert not any(app.state.runs.specs.iterdir())
