"""CompressSpec validation, presets, group-size resolution and CLI bad-input handling."""

from __future__ import annotations

import re

import pytest

from probe.compress.spec import PRESETS, CompressSpec, build_spec, check_against_model, default_group_size
from probe.errors import ProbeError
from probe.models.tiny import build_tiny_llama
from tests.cli_helpers import run_cli


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"method": "gptq", "bits": 5}, r"unsupported --bits 5: use one of 2, 3, 4, 8"),
    ({"method": "gptq"}, "unsupported --bits None"),
    ({"method": "sparsegpt", "sparsity": 1.0}, r"outside \(0, 1\)"),
    ({"method": "sparsegpt", "sparsity": 0.0}, r"outside \(0, 1\)"),
    ({"method": "magnitude", "pattern": "4:4"}, "N<M"),
    ({"method": "magnitude", "pattern": "5:4"}, "N<M"),
    ({"method": "magnitude", "pattern": "two:four"}, "is not N:M"),
    ({"method": "magnitude"}, "needs --sparsity"),
    ({"method": "zip"}, "unknown method 'zip'"),
    ({"method": "gptq+rtn", "bits": 4}, "two of a kind"),
    ({"method": "rtn", "bits": 4, "sparsity": 0.5}, "do not apply"),
    ({"method": "magnitude", "sparsity": 0.5, "bits": 4}, "--bits does not apply"),
])
def test_bad_specs_are_one_line_errors(kwargs, match):
    with pytest.raises(ProbeError, match=match) as err:
        CompressSpec(model="tiny-llama", **kwargs)
    assert "\n" not in str(err.value)


def test_presets_build_and_keep_their_name():
    assert set(PRESETS) >= {"gptq3", "gptq4", "gptq2", "sparsegpt50", "sparsegpt24", "awq4", "rtn3", "mag50",
                            "sparse50+gptq4"}
    for name in PRESETS:
        assert build_spec("tiny-llama", name).label == name
    assert build_spec("tiny-llama", "gptq3", n_calibration=8).label == "gptq3"  # calibration does not rename
    changed = build_spec("tiny-llama", "gptq3", bits=4)
    assert changed.label != "gptq3" and changed.label.startswith("gptq-")
    assert build_spec("tiny-llama", "sparsegpt24").target_sparsity == 0.5


def test_group_size_comes_from_the_model_and_is_checked():
    model, _ = build_tiny_llama()
    spec = check_against_model(build_spec("tiny-llama", "gptq3"), model, preferred_group=32)
    assert spec.group_size == 32
    assert default_group_size({576, 1536}, 128) == 64  # SmolLM2: 128 does not divide 576
    assert default_group_size({4096, 11008}, 128) == 128  # LLaMA-7B
    with pytest.raises(ProbeError, match=r"--group-size 48 does not divide.*use one of 8, 16, 32, 64"):
        check_against_model(build_spec("tiny-llama", "gptq3", group_size=48), model, 32)
    with pytest.raises(ProbeError, match="no linear layers match"):
        check_against_model(build_spec("tiny-llama", "gptq3", targets=("re:nothing_here",)), model, 32)


def test_effective_bits():
    assert build_spec("tiny-llama", "gptq3", group_size=64).effective_bits() == pytest.approx(3 + 19 / 64)
    assert build_spec("tiny-llama", "mag50").effective_bits() == pytest.approx(9.0)
    assert build_spec("tiny-llama", "sparsegpt24").effective_bits() == pytest.approx(9.0)


@pytest.mark.parametrize(("args", "match"), [
    (["--method", "gptq", "--bits", "7"], "unsupported --bits 7"),
    (["--method", "gptq3", "--group-size", "48"], "use one of 8, 16, 32, 64"),
    (["--method", "gptq3", "--calibration", "/no/such/file.txt"], "does not exist"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, args, match):
    res = run_cli("compress", "--model", "tiny-llama", *args, env={"PROBE_ARTIFACTS": str(tmp_path)})
    assert res.code == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert re.search(match, lines[0])
    assert not (tmp_path / "variants").exists()
