"""One settings source: every stage field reaches the command line and experiment files alike,
defaults live once, and every user error is one plain `error:` line with exit status 2."""

from __future__ import annotations

import dataclasses
import errno
import inspect
import re
import socket
import subprocess
import typing
from pathlib import Path

import pytest

from probe import cli
from probe.analysis.spec import AnalyzeSpec
from probe.capture.spec import CaptureSpec
from probe.compress.spec import CompressSpec
from probe.config import ModelSpec
from probe.costs import CostSpec
from probe.errors import ProbeError
from probe.evaluation.run import EvalSpec
from probe.experiment.dashboard import DashboardSpec
from probe.experiment.spec import (
    ALIASES,
    SET_BY_EXPERIMENT,
    STAGES,
    documented_keys,
    load_experiment,
    table_keys,
)
from probe.recover.spec import RecoverSpec
from probe.settings import KEY, Option, build, options, strip_optional
from tests.cli_helpers import run_cli

ROOT = Path(__file__).parents[2]
COMMANDS = {"eval": EvalSpec, "compress": CompressSpec, "recover": RecoverSpec, "costs": CostSpec,
            "capture": CaptureSpec, "analyze": AnalyzeSpec, "dashboard": DashboardSpec}
NOT_SETTINGS = {(CompressSpec, "name")}  # set by build_spec from the preset, never by a user


def _declared(cls: type) -> list[tuple[type, str]]:
    """Every leaf field of ``cls`` and its nested specs."""
    out = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        out += _declared(tp) if dataclasses.is_dataclass(tp) else [(cls, f.name)]
    return out


@pytest.mark.parametrize("cls", sorted({*COMMANDS.values(), ModelSpec}, key=lambda c: c.__name__))
def test_every_stage_field_declares_its_setting(cls):
    for owner, name in _declared(cls):
        field = {f.name: f for f in dataclasses.fields(owner)}[name]
        assert (owner, name) in NOT_SETTINGS or KEY in field.metadata, f"{owner.__name__}.{name} has no setting()"
        if KEY in field.metadata:
            assert field.metadata[KEY].help, f"{owner.__name__}.{name} has no help"


def _cli_default(option: Option):
    default = option.cli_default
    text = option.item_type is not None or option.setting.parse is not None
    return option.text(default) if text and default is not None else default


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_field_is_an_option_of_its_command_with_the_fields_default(command):
    click_command = cli.stage_command(command)
    params = {p.name: p for p in click_command.params}
    for option in options(COMMANDS[command]):
        param = params.get(option.name)
        assert param is not None, f"probe {command} has no option for {option.path}"
        assert option.flags[0].split("/")[0] in param.opts, (command, option.name, param.opts)
        assert param.default == _cli_default(option), (command, option.name, param.default)
        assert option.describe.split(".")[0] in (param.help or "")


def test_commands_that_load_a_model_take_the_model_options():
    for command in ("eval", "capture"):
        names = {p.name for p in cli.stage_command(command).params}
        assert {"model", "model_path", "device", "device_map", "attn_implementation"} <= names
    assert {"model_dtype", "dtype"} <= {p.name for p in cli.stage_command("capture").params}
    assert {p.name: p.default for p in cli.stage_command("compress").params}["dtype"] == cli.COMPRESS_DTYPE


def test_compress_dtype_default_is_the_compress_functions():
    from probe.compress.run import compress

    assert inspect.signature(compress).parameters["dtype"].default == cli.COMPRESS_DTYPE


# ---- experiment files ----------------------------------------------------------------------------
def _sample(option: Option):
    """A valid value other than the default where the type allows one (TOML form)."""
    s, default = option.setting, option.cli_default
    if option.name == "split":
        return "eval"  # an experiment captures all (its default) or eval
    item = option.item_type
    if item is not None:
        if s.choices:
            return [s.choices[-1]]
        return [1] if item is int else [0.5] if item is float else ["re:q_proj" if option.name == "targets" else "x"]
    base = strip_optional(option.type)
    if s.choices:
        other = [c for c in s.choices if c != default]
        return other[0] if other else default
    if base is bool:
        return not default
    if base is int:
        return (default or 1) + 1
    if base is float:
        return default * 2 if default else 0.25
    return {"pattern": "2:4", "device": "cpu"}.get(option.name, "x")


def _stage_spec(spec, table: str):
    return {"model": lambda: spec.model_spec, "dashboard": lambda: spec.dashboard,
            "compress": lambda: spec.compress_spec(spec.compressions[0]),
            "recover": lambda: spec.recover_spec(spec.recoveries[0]),
            "capture": lambda: spec.capture_spec("original"), "costs": spec.costs_spec,
            "analyze": spec.analyze_spec}[table]()


def _toml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


CASES = [(table, o) for table, cls in STAGES.items()
         for o in options(cls, skip=tuple(SET_BY_EXPERIMENT.get(table, {})))]


@pytest.mark.parametrize(("table", "option"), CASES, ids=[f"{t}.{o.name}" for t, o in CASES])
def test_every_experiment_key_lands_in_its_stage_spec(tmp_path, table, option):
    value = _sample(option)
    compress = "mag50" if option.name in ("sparsity", "pattern") else "gptq3"
    recover = "idp" if option.name.startswith("idp_") else "prompt"
    tables = {"model": {"name": "'tiny-llama'"}, "compress": {"methods": f"['{compress}']"},
              "recover": {"methods": f"['{recover}']"}}
    tables.setdefault(table, {})[option.name] = _toml(value)
    path = tmp_path / "exp.toml"
    path.write_text("".join(f"[{t}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) for t, kv in tables.items()))
    stage = _stage_spec(load_experiment(path), table)
    landed = stage
    for part in option.path:
        landed = getattr(landed, part)
    expected = tuple(value) if isinstance(value, list) else value
    assert landed == expected, (table, option.name, landed, expected)


def test_every_stage_field_is_an_experiment_key_or_set_by_the_experiment():
    keys = table_keys()
    for table, cls in STAGES.items():
        for option in options(cls):
            assert option.name in keys[table] or option.name in SET_BY_EXPERIMENT.get(table, {}), (table, option.name)


@pytest.mark.parametrize(("text", "message"), [
    ("[model]\nname = 'tiny-llama'\n[recover]\nstepz = 3\n", r"unknown key \[recover\] stepz; .*did you mean steps\?"),
    ("[model]\nname = 'tiny-llama'\n[compress]\nmethods = 'mag50'\n", r"\[compress\] methods = 'mag50' has the wrong"),
    ("[model]\nname = 'tiny-llama'\n[recover]\nlr = 'fast'\n", r"\[recover\] lr = 'fast' has the wrong type"),
    ("[model]\nname = 'tiny-llama'\n[capture]\ndtype = 'bfloat16'\n", r"\[capture\] unknown --dtype 'bfloat16'"),
    ("[model]\nname = 'tiny-llama'\n[capturre]\ndtype = 'float16'\n",
     r"unknown key \[capturre\];.*did you mean \[capture\]\?"),
])
def test_experiment_values_are_checked_against_the_fields(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProbeError, match=message):
        load_experiment(path)


def test_experiment_files_show_only_real_keys():
    keys = table_keys()
    for path in sorted((ROOT / "experiments").glob("*.toml")):
        for table, key in documented_keys(path.read_text()):
            assert key in keys.get(table, {}) or (table, key) in ALIASES, f"{path.name}: [{table}] {key}"


def test_file_settings_reach_the_stage_and_the_command_line_agrees(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text("[model]\nname = 'tiny-llama'\n[recover]\nn_tokens = 7\ntargets = ['q_proj']\n"
                    "[capture]\nlayers = [0, 2]\nhooks = ['resid_post']\n")
    spec = load_experiment(path)
    rspec = spec.recover_spec("prompt")
    assert (rspec.n_tokens, rspec.targets, rspec.lr) == (7, ("q_proj",), RecoverSpec(method="prompt").lr)
    cspec = spec.capture_spec("original")
    assert (cspec.layers, cspec.hooks, cspec.split, cspec.dtype) == ((0, 2), ("resid_post",), "all", "float16")
    values = {o.name: o.from_text(t) for o, t in
              ((o, {"layers": "0,2", "hooks": "resid_post"}.get(o.name)) for o in options(CaptureSpec)) if t}
    assert build(CaptureSpec, values).layers == cspec.layers


# ---- a default lives once ------------------------------------------------------------------------
@pytest.mark.parametrize(("pattern", "where"), [
    (r"\b1e-2\b", "probe/recover/spec.py"),  # prompt/prefix/idp learning rate
    (r"\b2e-3\b", "probe/recover/spec.py"),  # LoRA learning rate
    (r"batch_size\s*[:=][^,]*\b16\b", "probe/capture/spec.py"),  # capture batch size
    (r"full_attention\s*[:=][^,]*\b64\b", "probe/capture/spec.py"),
    (r"n_boot_cka\s*[:=][^,]*\b200\b", "probe/analysis/spec.py"),
])
def test_a_default_is_written_once(pattern, where):
    found = subprocess.run(["git", "grep", "-nE", pattern, "--", "probe/cli.py", "probe/experiment", "probe/recover",
                            "probe/capture", "probe/analysis", "dashboards"], cwd=ROOT,
                           capture_output=True, text=True).stdout.splitlines()
    assert [line.split(":")[0] for line in found] == [where], found


# ---- the one error path --------------------------------------------------------------------------
def test_a_usage_error_is_one_line_exit_2():
    code, out, err = run_cli("capture", "--batch-size", "0")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: ") and "--batch-size" in err and "Usage" not in err


def test_user_text_prints_literally():
    code, _, err = run_cli("eval", "--model", "[/bold]no-such-model")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "[/bold]no-such-model" in err


def test_an_experiment_error_keeps_its_brackets(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nname = 'tiny-llama'\n[recover]\nstepz = 3\n")
    code, _, err = run_cli("run", str(path), "--no-serve")
    assert code == 2 and err.count("\n") == 1 and "[recover] stepz" in err and "did you mean steps?" in err


@pytest.mark.parametrize(("exc", "needle"), [
    (PermissionError(errno.EACCES, "Permission denied", "/srv/artifacts"), "/srv/artifacts: Permission denied"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/artifacts"), "set PROBE_ARTIFACTS to a writable folder"),
    (OSError(errno.ENOSPC, "No space left on device", "/full/x.zarr"), "/full/x.zarr: No space left on device"),
])
def test_expected_os_errors_are_one_line_naming_the_path_and_fix(monkeypatch, exc, needle):
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(cli, "_run_file", fail)
    code, _, err = run_cli("run", "any.toml", "--no-serve")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and needle in err


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(cli, "_run_file", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run_cli("run", "any.toml", "--no-serve")


def test_a_busy_port_is_one_line_naming_it(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code, _, err = run_cli("dashboard", "--artifacts", str(tmp_path), "--port", str(port))
    assert code == 2 and err.count("\n") == 1 and re.search(rf"port {port} on 127\.0\.0\.1 is in use", err)
