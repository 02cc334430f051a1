"""The command line as a careless user meets it: wrong paths, unknown flags, `--debug` anywhere.

Each mistake gives one message from the command it concerns and exit 2, before any work.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_ci.cli import main

EXAMPLE = Path(__file__).parent.parent / "examples" / "model-repo"
MANIFEST = EXAMPLE / "models" / "tumor-classifier" / "model.yaml"


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """argparse's exit: code 2 and the message, with no traceback."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    return err


@pytest.mark.parametrize(
    "command",
    [
        ["convert", str(MANIFEST)],
        ["test", str(MANIFEST)],
        ["bench", str(MANIFEST)],
        ["run", str(EXAMPLE)],
        ["catalog", "--registry", "reg"],
        ["baseline", "--registry", "reg", "--matrix", "{}"],
    ],
)
def test_an_out_folder_that_is_a_file_is_a_usage_error(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    for out in (taken, taken / "sub"):  # the file itself, or a file where a parent would go
        assert main([*command, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        where = "" if out == taken else f"{out}: "
        assert f"mlops-ci {command[0]}: error: --out {where}{taken} is a file, not a folder" in err
        assert "internal error" not in err
    assert taken.read_text() == "mine"


def test_a_report_file_that_is_a_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "convert.json").write_text("{}")  # the report would be printed, then fail
    assert main(["report", "--dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert f"--out {tmp_path} is a folder, not a file" in err and "internal error" not in err
    assert out == ""


def test_a_manifest_folder_names_the_model_yaml_to_give(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = MANIFEST.parent
    assert main(["convert", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"manifest {folder} is a folder, not a model.yaml: give {MANIFEST}" in err
    assert not (tmp_path / "out").exists()


def test_unknown_flags_are_reported_by_their_command_with_its_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _usage_error(["validate", "--bogus"], capsys)
    assert "usage: mlops-ci validate" in err
    assert "mlops-ci validate: error: unrecognized arguments: --bogus" in err
    err = _usage_error(["audit", "show", "m", "--registry", "r", "--bogus"], capsys)
    assert "mlops-ci audit show: error: unrecognized arguments: --bogus" in err


def test_debug_is_accepted_after_a_commands_action_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # README: `--debug` shows tracebacks; `audit show NAME --debug` was "unrecognized"
    code = main(["audit", "show", "m", "--registry", str(tmp_path / "none"), "--debug"])
    assert code == 2
    assert "no registry there" in capsys.readouterr().err


def test_rollback_help_says_to_is_the_registry_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["rollback", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "the registry version n to serve" in out and "for the audit record" in out


@pytest.mark.parametrize("command", ["test", "bench"])
def test_a_missing_onnx_the_user_named_is_named_not_blamed_on_convert(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.onnx"
    out = tmp_path / "out"
    assert main([command, str(MANIFEST), "--onnx", str(missing), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--onnx {missing}: no such file" in err
    assert "convert" not in err and "internal error" not in err
    # without --onnx, the convert output is what is missing, and convert is the way to make it
    assert main([command, str(MANIFEST), "--out", str(out)]) == 2
    assert "run `mlops-ci convert` first" in capsys.readouterr().err


def test_a_missing_extra_is_named_with_its_pip_command_not_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    # As in an install without the serve extra: `import uvicorn` fails.
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve", "--registry", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "uvicorn is not installed: pip install 'mlops-ci[serve]'" in err
    assert "internal error" not in err
