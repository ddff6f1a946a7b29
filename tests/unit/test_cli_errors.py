"""Bad input to every command gives one line naming the problem and a non-zero exit, never a
traceback: missing file, wrong columns, empty file, non-UTF-8, unknown contract, and the
registry-specific cases (no champion, a model of another contract)."""

from __future__ import annotations

from pathlib import Path

import pytest

from churnops.cli import main
from churnops.contract import TELCO
from churnops.synthetic import generate, write_csv


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bad-input")
    good = base / "customers.csv"
    write_csv(generate(1500, seed=9), good)
    wrong = base / "wrong_columns.csv"
    wrong.write_text("id,colour,size\n1,red,3\n")
    empty = base / "empty.csv"
    empty.write_bytes(b"")
    latin1 = base / "latin1.csv"
    latin1.write_bytes(good.read_bytes().replace(b"Male", "M\xe4le".encode("latin-1"), 1))
    header_only = base / "header_only.csv"
    header_only.write_text(",".join(TELCO.column_names) + "\n")
    all_bad = base / "all_bad.csv"
    lines = good.read_text().splitlines()
    all_bad.write_text(
        lines[0]
        + "\n"
        + lines[1].replace(",Male,", ",Robot,").replace(",Female,", ",Robot,")
        + "\n"
    )
    return {
        "good": good,
        "wrong": wrong,
        "empty": empty,
        "latin1": latin1,
        "header_only": header_only,
        "missing": base / "no_such_file.csv",
        "all_bad": all_bad,
        "base": base,
    }


@pytest.fixture(scope="module")
def trained_registry(files: dict[str, Path]) -> Path:
    registry = files["base"] / "registry"
    code = main(
        [
            "train",
            "--data",
            str(files["good"]),
            "--registry",
            str(registry),
            "--families",
            "logistic",
        ]
    )
    assert code == 0
    return registry


FILE_CASES = [
    ("missing", "no such file"),
    ("wrong", "missing column"),
    ("empty", "empty"),
    ("latin1", "not utf-8"),
    ("header_only", "no rows"),
]


@pytest.mark.parametrize(("case", "message"), FILE_CASES)
def test_train_rejects_bad_files(capsys, tmp_path, files, case, message) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(
        capsys, "train", "--data", str(files[case]), "--registry", str(tmp_path / "r")
    )
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "r" / "versions").exists()  # nothing registered


@pytest.mark.parametrize(("case", "message"), FILE_CASES)
def test_predict_rejects_bad_files(
    capsys, tmp_path, files, trained_registry, case, message
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "scores.csv"
    code, _, err = run(
        capsys,
        "predict",
        "--registry",
        str(trained_registry),
        "--input",
        str(files[case]),
        "--output",
        str(out),
    )
    assert_one_line_error(code, err, message)
    assert not out.exists()


def test_every_command_rejects_an_unknown_contract(
    capsys, tmp_path, files, trained_registry
) -> None:  # type: ignore[no-untyped-def]
    commands = [
        ["data", "generate", "--rows", "10", "--out", str(tmp_path / "x.csv")],
        ["train", "--data", str(files["good"]), "--registry", str(tmp_path / "r")],
        [
            "predict",
            "--registry",
            str(trained_registry),
            "--input",
            str(files["good"]),
            "--output",
            str(tmp_path / "o.csv"),
        ],
        ["registry", "list", "--registry", str(trained_registry)],
        ["registry", "show", "--registry", str(trained_registry)],
        ["registry", "rollback", "--registry", str(trained_registry)],
    ]
    for command in commands:
        code, _, err = run(capsys, *command, "--contract", "nonsense")
        assert_one_line_error(code, err, "unknown contract 'nonsense'")


def test_predict_without_champion(capsys, tmp_path, files) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(
        capsys,
        "predict",
        "--registry",
        str(tmp_path / "empty-registry"),
        "--input",
        str(files["good"]),
        "--output",
        str(tmp_path / "o.csv"),
    )
    assert_one_line_error(code, err, "no champion")


def test_predict_refuses_a_model_of_another_contract(
    capsys, tmp_path, trained_registry, insurance_csv
) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(
        capsys,
        "predict",
        "--registry",
        str(trained_registry),
        "--input",
        str(insurance_csv),
        "--output",
        str(tmp_path / "o.csv"),
        "--contract",
        "insurance",
    )
    assert_one_line_error(code, err, "telco", "insurance")


def test_predict_keeps_rejected_rows_beside_the_output(
    capsys, tmp_path, files, trained_registry
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "scores.csv"
    code, _, err = run(
        capsys,
        "predict",
        "--registry",
        str(trained_registry),
        "--input",
        str(files["all_bad"]),
        "--output",
        str(out),
    )
    assert code != 0 and "Traceback" not in err
    assert "no valid rows" in err
    rejected = out.with_name(out.name + ".rejected.csv").read_text()
    assert "gender has value 'Robot'" in rejected


def test_train_with_all_rows_invalid(capsys, tmp_path, files) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(
        capsys, "train", "--data", str(files["all_bad"]), "--registry", str(tmp_path / "r")
    )
    assert_one_line_error(code, err, "no valid rows", "Robot")


def test_data_generate_bad_arguments(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (["--rows", "0", "--out", str(tmp_path / "a.csv")], "--rows"),
        (["--rows", "5", "--out", str(tmp_path / "no" / "dir" / "a.csv")], "no such directory"),
        (["--rows", "5", "--out", str(tmp_path)], "is a directory"),
        (["--rows", "5", "--out", str(tmp_path / "a.csv"), "--shift", "meteor"], "unknown shift"),
        (["--rows", "5", "--out", str(tmp_path / "a.csv"), "--contract", "insurance"], "telco"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, "data", "generate", *argv)
        assert_one_line_error(code, err, message)


def test_registry_commands_bad_input(capsys, tmp_path, trained_registry) -> None:  # type: ignore[no-untyped-def]
    empty = str(tmp_path / "nothing-here")
    cases = [
        (["show", "--registry", empty], "no champion"),
        (["rollback", "--registry", empty], "no champion"),
        (["promote", "20260101T000000Z-abcdef", "--registry", str(trained_registry)], "no version"),
        (["promote", "not-a-version", "--registry", str(trained_registry)], "not a version id"),
        (["show", "../../etc", "--registry", str(trained_registry)], "not a version id"),
        (["rollback", "--registry", str(trained_registry)], "no previous version"),
        (["list", "--registry", "gs://bucket/x"], "unsupported"),
        (["list", "--registry", str(trained_registry / "champion.json")], "not a directory"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, "registry", *argv)
        assert_one_line_error(code, err, message)


def test_train_bad_options(capsys, tmp_path, files) -> None:  # type: ignore[no-untyped-def]
    base = ["train", "--data", str(files["good"]), "--registry", str(tmp_path / "r")]
    cases = [
        (["--offer-cost", "5"], "--churn-cost"),
        (["--families", "forest"], "unknown model families"),
        (["--holdout-share", "0.9"], "--holdout-share"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *base, *argv)
        assert_one_line_error(code, err, message)


def test_an_aws_failure_is_one_line(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """AWS errors other than "not found" pass through the S3 adapter unchanged (so Step Functions
    can retry them by name); the command line still reports them in one line."""
    import socket

    from churnops import aws

    with socket.socket() as sock:  # a port nothing listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws.reset_clients()
    try:
        code, _, err = run(capsys, "registry", "list", "--registry", "s3://churn-models/models")
    finally:
        aws.reset_clients()
    assert_one_line_error(code, err, "EndpointConnectionError", f"127.0.0.1:{port}")
