"""The evaluation-data layer: digest-pinned CSV, typed feeds per signature, clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

from mlops_ci import data
from mlops_ci.digest import sha256_file
from mlops_ci.errors import CheckFailed


@dataclass(frozen=True)
class Spec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Sig:
    inputs: tuple[Spec, ...]


def write_csv(path: Path, text: str) -> tuple[Path, str]:
    path.write_text(text, encoding="utf-8")
    return path, sha256_file(path)


@pytest.fixture
def iris_csv(tmp_path: Path) -> tuple[Path, str]:
    iris = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    lines = [",".join([*names, "species"])]
    lines += [
        ",".join([*map(repr, map(float, row)), str(t)])
        for row, t in zip(iris.data, iris.target, strict=True)
    ]
    return write_csv(tmp_path / "iris.csv", "\n".join(lines) + "\n")


def test_csv_with_the_pinned_digest_loads_every_row_as_text(iris_csv: tuple[Path, str]) -> None:
    table = data.load_csv(*iris_csv)
    assert table.n_rows == 150
    assert list(table.columns) == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
        "species",
    ]
    assert table.columns["species"].dtype.kind == "U"


def test_digest_mismatch_names_file_expected_and_actual(iris_csv: tuple[Path, str]) -> None:
    path, digest = iris_csv
    with pytest.raises(CheckFailed) as info:
        data.load_csv(path, "0" * 64)
    message = str(info.value)
    assert str(path) in message and "0" * 64 in message and digest in message


def test_digest_is_checked_before_the_file_is_parsed(tmp_path: Path) -> None:
    path, _ = write_csv(tmp_path / "bad.csv", "a,b\n1\n")
    with pytest.raises(CheckFailed, match="digest mismatch"):
        data.load_csv(path, "f" * 64)


def test_ragged_row_is_reported_with_its_line_number(tmp_path: Path) -> None:
    path, digest = write_csv(tmp_path / "ragged.csv", "a,b\n1,2\n\n3,4\n5\n")
    with pytest.raises(CheckFailed) as info:
        data.load_csv(path, digest)
    assert f"{path}:5:" in str(info.value)
    assert "1 fields, the header has 2" in str(info.value)


def test_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("city,y\nOslo,1\nK\u00f8ge,0\n".encode("latin-1"))
    with pytest.raises(CheckFailed, match=r"latin1\.csv:3: not UTF-8"):
        data.load_csv(path, sha256_file(path))


def test_duplicate_header_column_is_refused(tmp_path: Path) -> None:
    path, digest = write_csv(tmp_path / "dup.csv", "a,a\n1,2\n")
    with pytest.raises(CheckFailed, match="column 'a' twice"):
        data.load_csv(path, digest)


def test_one_input_gets_every_non_target_column_by_default(iris_csv: tuple[Path, str]) -> None:
    table = data.load_csv(*iris_csv)
    feeds = data.feeds(table, Sig((Spec("input", "float32", (-1, 4)),)), target="species")
    assert feeds["input"].shape == (150, 4)
    assert feeds["input"].dtype == np.float32
    np.testing.assert_allclose(feeds["input"], load_iris().data.astype(np.float32))


def test_per_column_inputs_default_to_their_own_column(tmp_path: Path) -> None:
    path, digest = write_csv(tmp_path / "mixed.csv", "age,city,y\n31,Oslo,1\n,Bergen,0\n")
    table = data.load_csv(path, digest)
    sig = Sig((Spec("age", "float32", (-1, 1)), Spec("city", "string", (-1, 1))))
    feeds = data.feeds(table, sig, target="y")
    assert feeds["age"].shape == (2, 1) and np.isnan(feeds["age"][1, 0])
    assert feeds["city"].dtype == object and feeds["city"][:, 0].tolist() == ["Oslo", "Bergen"]


def test_fixed_inner_dimensions_reshape_the_columns(tmp_path: Path) -> None:
    header = ",".join(f"p{i}" for i in range(4))
    path, digest = write_csv(tmp_path / "img.csv", f"{header}\n0,1,2,3\n")
    feeds = data.feeds(data.load_csv(path, digest), Sig((Spec("x", "float32", (-1, 1, 2, 2)),)))
    assert feeds["x"].shape == (1, 1, 2, 2) and feeds["x"][0, 0, 1, 0] == 2


def test_value_that_cannot_be_cast_names_column_input_and_line(tmp_path: Path) -> None:
    path, digest = write_csv(tmp_path / "bad.csv", "a,b\n1,2\n3,oops\n")
    table = data.load_csv(path, digest)
    with pytest.raises(CheckFailed) as info:
        data.feeds(table, Sig((Spec("input", "float32", (-1, 2)),)))
    assert str(info.value) == (
        f"{path}:3: column 'b' (input 'input'): value 'oops' cannot be read as float32"
    )


def test_fractional_value_is_not_silently_truncated_to_int(tmp_path: Path) -> None:
    path, digest = write_csv(tmp_path / "i.csv", "n\n1\n2.5\n")
    with pytest.raises(CheckFailed, match=r"'2\.5' cannot be read as int64"):
        data.feeds(data.load_csv(path, digest), Sig((Spec("n", "int64", (-1, 1)),)))


def test_int64_values_beyond_a_floats_precision_are_read_exactly(tmp_path: Path) -> None:
    # an ID or a hash above 2**53 has no exact float: read through one, it became its neighbour,
    # and the largest int64 was refused as out of range
    big = ["123456789012345678", "9007199254740993", "9223372036854775807", "-9223372036854775808"]
    assert int(float(big[0])) != int(big[0])  # what a float makes of the first
    path, digest = write_csv(tmp_path / "ids.csv", "n\n" + "\n".join([*big, "1e3", " 7 "]) + "\n")
    fed = data.feeds(data.load_csv(path, digest), Sig((Spec("n", "int64", (-1,)),)))["n"]
    assert fed.tolist() == [*map(int, big), 1000, 7]
    path, digest = write_csv(tmp_path / "over.csv", "n\n9223372036854775808\n")
    with pytest.raises(CheckFailed, match=r"'9223372036854775808' cannot be read as int64"):
        data.feeds(data.load_csv(path, digest), Sig((Spec("n", "int64", (-1,)),)))


def test_missing_column_names_the_input_and_the_columns_present(tmp_path: Path) -> None:
    path, digest = write_csv(tmp_path / "m.csv", "a,y\n1,0\n")
    with pytest.raises(CheckFailed, match=r"input 'b' needs column\(s\) 'b'.*it has: a, y"):
        data.feeds(data.load_csv(path, digest), Sig((Spec("b", "float32", (-1, 1)),)))


def test_column_count_must_match_the_signature_width(iris_csv: tuple[Path, str]) -> None:
    table = data.load_csv(*iris_csv)
    with pytest.raises(CheckFailed, match=r"shape \[-1, 3\] \(3 values per row\) but 4 columns"):
        data.feeds(table, Sig((Spec("input", "float32", (-1, 3)),)), target="species")


def test_test_case_rows_feed_like_csv_rows() -> None:
    table = data.rows_table([{"a": 1.5, "flag": True, "s": "x"}, {"a": 2, "flag": False, "s": "y"}])
    sig = Sig(
        (Spec("a", "float64", (-1, 1)), Spec("flag", "bool", (-1, 1)), Spec("s", "string", (-1, 1)))
    )
    feeds = data.feeds(table, sig)
    assert feeds["a"][:, 0].tolist() == [1.5, 2.0]
    assert feeds["flag"][:, 0].tolist() == [True, False]


def test_test_case_row_missing_a_column_is_refused() -> None:
    with pytest.raises(CheckFailed, match="row 2 lacks column"):
        data.rows_table([{"a": 1, "b": 2}, {"a": 3}])


def test_target_is_typed_from_its_values(tmp_path: Path) -> None:
    path, digest = write_csv(tmp_path / "t.csv", "i,f,s\n1,0.5,cat\n2,1.5,dog\n")
    table = data.load_csv(path, digest)
    assert data.target(table, "i").dtype == np.int64
    assert data.target(table, "f").dtype == np.float64
    assert data.target(table, "s").tolist() == ["cat", "dog"]
    with pytest.raises(CheckFailed, match="target column 'label' is not in"):
        data.target(table, "label")


def test_take_and_select_keep_line_numbers(iris_csv: tuple[Path, str]) -> None:
    table = data.load_csv(*iris_csv)
    assert table.take(5).n_rows == 5
    picked = table.select(data.target(table, "species") == 2)
    assert picked.n_rows == 50
    assert picked.where(0) == f"{iris_csv[0]}:102"


def padded_csv(path: Path, rows: int, longest: int) -> tuple[Path, str]:
    """`rows` short rows and, last, one row whose `text` value has `longest` characters."""
    return write_csv(path, "id,text\n" + "1,a\n" * rows + "2," + "x" * longest + "\n")


def test_control_numpy_pads_every_value_of_a_column_to_its_longest(tmp_path: Path) -> None:
    path, _ = padded_csv(tmp_path / "small.csv", 1_000, 5_000)
    column = np.array(["a"] * 1_000 + ["x" * 5_000], dtype=str)
    # 4 bytes a character for every row: a 9 kB file becomes a 20 MB column, and the ratio
    # grows with both the row count and the longest value
    assert column.itemsize == 4 * 5_000
    assert column.nbytes == 1_001 * 20_000 > 2_000 * path.stat().st_size


def test_csv_whose_one_long_value_would_pad_a_column_to_gigabytes_is_refused(
    tmp_path: Path,
) -> None:
    import tracemalloc

    # 130 kB of CSV that a fixed-width text column would turn into 4 GB
    path, sha = padded_csv(tmp_path / "eval.csv", 20_000, 50_000)
    assert path.stat().st_size < 140_000
    tracemalloc.start()
    try:
        with pytest.raises(CheckFailed) as info:
            data.load_csv(path, sha)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20  # refused before the column is built
    message = str(info.value)
    assert message.startswith(f"{path}:20002: column 'text' holds a value of 50,000 characters")
    assert "would take over 4,000,280,004 bytes in memory for 130,011 bytes of data" in message


def test_test_case_rows_whose_one_long_value_would_pad_to_gigabytes_are_refused() -> None:
    rows: list[dict[str, object]] = [{"id": 1, "text": "a"} for _ in range(20_000)]
    rows.append({"id": 2, "text": "x" * 50_000})
    with pytest.raises(CheckFailed, match=r"^test cases row 20001: column 'text' holds a value"):
        data.rows_table(rows)
    assert data.rows_table(rows[:3]).columns["text"].tolist() == ["a", "a", "a"]
