"""Data from files (tricklab.data.files): arrays (npz, npy, HDF5), tables (CSV, Parquet), splits, targets, spec.

Every test writes its own files into tmp_path. References: the arrays the test wrote (loaded data must equal
them, float32-cast), NumPy's mean/std (ddof 0) over the training rows for every fitted statistic,
scikit-learn's ``compute_class_weight("balanced")`` for class weights, and the counts of each label for the
stratified split. Error tests check the DataError/ConfigError message names the file and the row or item.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tricklab.data import DATASETS, load_dataset
from tricklab.data.files import format_options, load_files, parse_spec
from tricklab.data.files.splits import stratified_take
from tricklab.errors import ConfigError, DataError, UserError

pd = pytest.importorskip("pandas", reason="the tables extra (pandas) is not installed")


def rows_of(ds, split: str) -> np.ndarray:
    return np.asarray(ds.meta["split"]["rows"][split])


def check_json_meta(ds) -> None:
    json.dumps(ds.meta)  # the run records meta: it must be plain JSON


# ------------------------------------------------------------------------------------------------ arrays
def test_npz_loaded_arrays_equal_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2, 3))
    y = rng.integers(0, 3, size=60)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_files({"format": "npz", "path": str(tmp_path / "d.npz"), "val_fraction": 0.2, "seed": 3})
    assert ds.input_shape == (2, 3) and ds.num_classes == 3
    for split in ("train", "val", "test"):
        r = rows_of(ds, split)
        np.testing.assert_array_equal(getattr(ds, f"x_{split}").numpy(), x[r].astype(np.float32))
        np.testing.assert_array_equal(getattr(ds, f"y_{split}").numpy(), y[r])  # labels 0..2 map to themselves
    all_rows = np.concatenate([rows_of(ds, s) for s in ("train", "val", "test")])
    assert sorted(all_rows.tolist()) == list(range(60))  # a partition of the file's rows
    assert ds.meta["target_kind"] == "multiclass" and ds.meta["split"]["method"] == "stratified"
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    check_json_meta(ds)


def test_npz_with_its_own_splits_and_named_string_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    xtr, xte = rng.normal(size=(20, 4)), rng.normal(size=(6, 4))
    ytr = np.array(["cat", "dog"] * 10)
    yte = np.array(["dog", "cat", "cat", "dog", "dog", "cat"])
    np.savez(tmp_path / "s.npz", feats_train=xtr, labels_train=ytr, feats_test=xte, labels_test=yte)
    ds = load_dataset("files", format="npz", path=str(tmp_path / "s.npz"), x="feats", y="labels")
    assert ds.meta["split"]["method"] == "files"
    np.testing.assert_array_equal(ds.x_train.numpy(), xtr.astype(np.float32))
    np.testing.assert_array_equal(ds.x_test.numpy(), xte.astype(np.float32))
    assert ds.class_names == ["cat", "dog"] and ds.meta["label_map"] == {"cat": 0, "dog": 1}
    np.testing.assert_array_equal(ds.y_test.numpy(), (yte == "dog").astype(np.int64))


def test_npy_pair_files_as_user_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    arrays = {}
    for split, n in (("train", 12), ("test", 5)):
        arrays[split] = (rng.normal(size=(n, 3)), np.array([5, 9, 7] * 4)[:n])
        np.save(tmp_path / f"x_{split}.npy", arrays[split][0])
        np.save(tmp_path / f"y_{split}.npy", arrays[split][1])
    ds = load_files(format="npy", train={"x": "x_train.npy", "y": "y_train.npy"},
                    test=["x_test.npy", "y_test.npy"], data_dir=tmp_path)
    np.testing.assert_array_equal(ds.x_test.numpy(), arrays["test"][0].astype(np.float32))
    # label values 5 < 7 < 9 become ids 0, 1, 2 (numeric order), recorded in label_map
    assert ds.meta["label_map"] == {"5": 0, "7": 1, "9": 2}
    np.testing.assert_array_equal(ds.y_test.numpy(), np.searchsorted([5, 7, 9], arrays["test"][1]))


def test_hdf5_nested_keys(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py", reason="the hdf5 extra (h5py) is not installed")
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 5)).astype(np.float32), rng.integers(0, 2, 30)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("data/features", data=x)
        f.create_dataset("data/target", data=y)
    ds = load_files(path=str(tmp_path / "d.h5"), x="data/features", y="data/target")  # format from the suffix
    assert ds.meta["format"] == "hdf5"
    r = rows_of(ds, "train")
    np.testing.assert_array_equal(ds.x_train.numpy(), x[r])
    with pytest.raises(DataError) as e:
        load_files(path=str(tmp_path / "d.h5"), x="features", y="data/target")
    assert "d.h5" in str(e.value) and "data/features" in str(e.value) and "'features'" in str(e.value)


def test_array_standardize_uses_training_rows_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(3.0, 2.0, size=(80, 4))
    y = rng.integers(0, 2, 80)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_files(format="npz", path=str(tmp_path / "d.npz"), standardize=True, test_fraction=0.25)
    tr, te = rows_of(ds, "train"), rows_of(ds, "test")
    mean, std = x[tr].mean(axis=0), x[tr].std(axis=0)  # reference: NumPy over the training rows only
    np.testing.assert_allclose(ds.meta["standardize"]["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(ds.meta["standardize"]["std"], std, rtol=1e-12)
    np.testing.assert_allclose(ds.x_test.numpy(), (x[te] - mean) / std, rtol=1e-5, atol=1e-6)
    assert not np.allclose(mean, x.mean(axis=0))  # the test rows would have moved it


def test_column_targets_and_unsplittable_classes(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", x=np.zeros((12, 2)), y=(np.arange(12) % 3)[:, None])
    ds = load_files(path=str(tmp_path / "c.npz"))
    assert ds.meta["target_kind"] == "multiclass" and ds.y_train.shape == (ds.num_train,)
    np.savez(tmp_path / "u.npz", x=np.zeros((4, 2)), y=np.arange(4))  # four classes of one item each
    with pytest.raises(DataError, match="stratify: false"):
        load_files(path=str(tmp_path / "u.npz"))


def test_array_token_ids(tmp_path: Path) -> None:
    x = np.arange(40).reshape(10, 4) % 7
    np.savez(tmp_path / "t.npz", x=x, y=np.arange(10) % 2)
    ds = load_files(format="npz", path=str(tmp_path / "t.npz"), x_dtype="int64")
    assert ds.x_train.dtype == torch.int64
    np.testing.assert_array_equal(ds.x_train.numpy(), x[rows_of(ds, "train")])


@pytest.mark.parametrize("case", ["wrong_key", "lengths", "nan", "pickle", "not_zip", "float_as_int"])
def test_bad_array_files(tmp_path: Path, case: str) -> None:
    p = tmp_path / "bad.npz"
    x = np.zeros((10, 3))
    y = np.arange(10) % 2
    spec = {"format": "npz", "path": str(p)}
    if case == "wrong_key":
        np.savez(p, inputs=x, y=y)
        want = ["bad.npz", "'x'", "['inputs', 'y']"]
    elif case == "lengths":
        np.savez(p, x=x, y=y[:9])
        want = ["bad.npz", "10 items", "9"]
    elif case == "nan":
        x[6, 2] = np.nan
        np.savez(p, x=x, y=y)
        want = ["bad.npz", "index 6", "column 2", "NaN"]
    elif case == "pickle":
        np.savez(p, x=x, y=np.array([{"a": 1}] * 10, dtype=object))
        want = ["bad.npz", "'y'", "Python objects"]
    elif case == "not_zip":
        p.write_bytes(b"this is not a zip archive")
        want = ["bad.npz", "not a readable .npz"]
    else:
        x[3, 1] = 0.5
        np.savez(p, x=x, y=y)
        spec["x_dtype"] = "int64"
        want = ["bad.npz", "index 3", "whole numbers"]
    with pytest.raises(DataError) as e:
        load_files(spec)
    for w in want:
        assert w in str(e.value), (w, str(e.value))
    assert isinstance(e.value, UserError)  # the CLI exits 2 on every UserError


# ------------------------------------------------------------------------------------------------ tables
def write_tables(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(5)
    n_tr, n_te = 40, 12
    train = pd.DataFrame({
        "age": rng.normal(40, 10, n_tr).round(1),
        "income": rng.normal(1000, 300, n_tr).round(2),
        "city": rng.choice(["paris", "rome", "oslo"], n_tr),
        "note": ["x"] * n_tr,
        "label": rng.choice(["no", "yes"], n_tr),
    })
    test = pd.DataFrame({
        "age": rng.normal(40, 10, n_te).round(1),
        "income": rng.normal(1000, 300, n_te).round(2),
        "city": ["paris", "lima", "rome", "lima"] + ["oslo"] * (n_te - 4),  # lima never in train
        "note": ["x"] * n_te,
        "label": rng.choice(["no", "yes"], n_te),
    })
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    return train, test


def test_csv_encoding_and_standardisation_fitted_on_train(tmp_path: Path) -> None:
    train, test = write_tables(tmp_path)
    with pytest.warns(UserWarning, match="lima"):
        ds = load_files(format="csv", train="train.csv", test="test.csv", target="label", drop=["note"],
                        data_dir=tmp_path)
    assert ds.meta["feature_names"] == ["age", "income", "city=oslo", "city=paris", "city=rome"]
    mean = train[["age", "income"]].to_numpy().mean(axis=0)  # reference: NumPy on the training file only
    std = train[["age", "income"]].to_numpy().std(axis=0)
    np.testing.assert_allclose(ds.meta["standardize"]["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(ds.meta["standardize"]["std"], std, rtol=1e-12)
    np.testing.assert_allclose(ds.x_test.numpy()[:, :2], (test[["age", "income"]].to_numpy() - mean) / std,
                               rtol=1e-5, atol=1e-6)
    onehot = ds.x_test.numpy()[:, 2:]
    cats = ["oslo", "paris", "rome"]
    expect = np.array([[float(c == k) for k in cats] for c in test["city"]])
    np.testing.assert_array_equal(onehot, expect)  # "lima" rows are all zeros
    assert ds.meta["unseen_categories"] == {"test": {"city": {"lima": 2}}}
    np.testing.assert_array_equal(ds.y_test.numpy(), (test["label"] == "yes").to_numpy().astype(np.int64))
    check_json_meta(ds)


def test_csv_ordinal_encoding_and_unseen_error(tmp_path: Path) -> None:
    train, test = write_tables(tmp_path)
    with pytest.warns(UserWarning):
        ds = load_files(format="csv", train="train.csv", test="test.csv", target="label", drop=["note"],
                        categorical_encoding="ordinal", standardize=False, data_dir=tmp_path)
    codes = {"oslo": 0, "paris": 1, "rome": 2}
    np.testing.assert_array_equal(ds.x_test.numpy()[:, 2], [codes.get(c, -1) for c in test["city"]])
    np.testing.assert_array_equal(ds.x_train.numpy()[:, :2], train[["age", "income"]].to_numpy(np.float32))
    with pytest.raises(DataError) as e:
        load_files(format="csv", train="train.csv", test="test.csv", target="label", drop=["note"],
                   on_unseen="error", data_dir=tmp_path)
    assert "test.csv: row 1" in str(e.value) and "'lima'" in str(e.value) and "city" in str(e.value)


def test_parquet_reads_like_csv(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="the tables extra (pyarrow) is not installed")
    train, test = write_tables(tmp_path)
    train.to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    kw = {"target": "label", "drop": ["note"], "data_dir": tmp_path}
    with pytest.warns(UserWarning):
        a = load_files(train="train.csv", test="test.csv", **kw)
        b = load_files(train="train.parquet", test="test.parquet", **kw)
    assert b.meta["format"] == "parquet"
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(a, f"x_{split}").numpy(), getattr(b, f"x_{split}").numpy())
        np.testing.assert_array_equal(getattr(a, f"y_{split}").numpy(), getattr(b, f"y_{split}").numpy())


def test_regression_target_and_target_standardisation(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    df = pd.DataFrame({"a": rng.normal(size=50), "b": rng.normal(size=50), "price": rng.normal(200, 50, 50)})
    df.to_csv(tmp_path / "h.csv", index=False)
    ds = load_files(path=str(tmp_path / "h.csv"), target="price", standardize_target=True, seed=1)
    assert ds.meta["target_kind"] == "regression" and ds.meta["target_kind_inferred"]
    assert ds.y_train.dtype == torch.float32 and ds.num_classes == 1 and ds.class_names is None
    assert ds.meta["split"]["method"] == "random"  # regression targets are not stratified
    tr, te = rows_of(ds, "train"), rows_of(ds, "test")
    y = df["price"].to_numpy()
    m, s = y[tr].mean(), y[tr].std()
    np.testing.assert_allclose(ds.meta["target_mean"], [m], rtol=1e-12)
    np.testing.assert_allclose(ds.meta["target_std"], [s], rtol=1e-12)
    np.testing.assert_allclose(ds.y_test.numpy(), (y[te] - m) / s, rtol=1e-5, atol=1e-6)
    # two target columns: a (N, 2) float target, num_classes = 2 outputs
    ds2 = load_files(path=str(tmp_path / "h.csv"), target=["a", "price"], target_kind="regression")
    assert tuple(ds2.y_train.shape[1:]) == (2,) and ds2.num_classes == 2 and ds2.input_shape == (1,)


def test_multilabel_from_separator_and_from_indicator_columns(tmp_path: Path) -> None:
    tags = ["a;b", "b", "", "c;a", "a", "b;c", "c", "a;b;c"] * 4
    df = pd.DataFrame({"f": np.arange(len(tags), dtype=float), "tags": tags})
    df.to_csv(tmp_path / "m.csv", index=False)
    ds = load_files(path=str(tmp_path / "m.csv"), target="tags", label_sep=";", seed=0)
    assert ds.meta["target_kind"] == "multilabel" and ds.class_names == ["a", "b", "c"]
    tr = rows_of(ds, "train")
    expect = np.array([[float(k in t.split(";")) for k in "abc"] for t in np.array(tags)[tr]], dtype=np.float32)
    np.testing.assert_array_equal(ds.y_train.numpy(), expect)
    pos = expect.sum(axis=0)
    np.testing.assert_allclose(ds.meta["pos_weight"], (len(tr) - pos) / pos)
    ind = pd.DataFrame({"f": np.arange(12.0), "x1": [0, 1] * 6, "x2": [1, 1, 0] * 4})
    ind.to_csv(tmp_path / "i.csv", index=False)
    ds2 = load_files(path=str(tmp_path / "i.csv"), target=["x1", "x2"])
    assert ds2.meta["target_kind"] == "multilabel" and ds2.class_names == ["x1", "x2"]
    np.testing.assert_array_equal(ds2.y_test.numpy(), ind[["x1", "x2"]].to_numpy()[rows_of(ds2, "test")])


def test_binary_positive_label_and_class_weights(tmp_path: Path) -> None:
    sklearn_utils = pytest.importorskip("sklearn.utils", reason="scikit-learn is the class-weight reference")
    y = np.array(["spam"] * 10 + ["ham"] * 30)
    df = pd.DataFrame({"f": np.arange(40.0), "y": y})
    df.to_csv(tmp_path / "b.csv", index=False)
    ds = load_files(path=str(tmp_path / "b.csv"), target="y", target_kind="binary", positive_label="spam")
    assert ds.class_names == ["ham", "spam"] and ds.meta["positive_class"] == "spam"
    ytr = y[rows_of(ds, "train")]
    np.testing.assert_array_equal(ds.y_train.numpy(), (ytr == "spam").astype(np.int64))
    assert ds.meta["pos_weight"] == pytest.approx((ytr == "ham").sum() / (ytr == "spam").sum())
    ref = sklearn_utils.class_weight.compute_class_weight("balanced", classes=np.array(["ham", "spam"]), y=ytr)
    np.testing.assert_allclose(ds.meta["class_weights"], ref, rtol=1e-12)
    ds2 = load_files(path=str(tmp_path / "b.csv"), target="y", target_kind="binary", positive_label="ham")
    assert ds2.class_names == ["spam", "ham"] and ds2.meta["positive_class"] == "ham"
    with pytest.raises(ConfigError, match="positive_label"):
        load_files(path=str(tmp_path / "b.csv"), target="y", target_kind="binary", positive_label="eggs")


@pytest.mark.parametrize("case", ["target", "nan", "only_test", "text_in_numeric", "missing_label", "empty",
                                  "test_columns"])
def test_bad_tables(tmp_path: Path, case: str) -> None:
    train, test = write_tables(tmp_path)
    kw = {"format": "csv", "train": "train.csv", "test": "test.csv", "target": "label", "drop": ["note"],
          "data_dir": tmp_path}
    if case == "target":
        kw["target"] = "labels"
        want = ["train.csv", "'labels'", "['age', 'income', 'city', 'note', 'label']"]
    elif case == "nan":
        train.loc[7, "income"] = np.nan
        train.to_csv(tmp_path / "train.csv", index=False)
        want = ["train.csv: row 7", "'income'", "NaN"]
    elif case == "only_test":
        test.loc[3, "label"] = "maybe"
        test.to_csv(tmp_path / "test.csv", index=False)
        want = ["test.csv: row 3", "'maybe'", "never in the training split"]
    elif case == "text_in_numeric":
        test["age"] = test["age"].astype(object)
        test.loc[5, "age"] = "forty"
        test.to_csv(tmp_path / "test.csv", index=False)
        want = ["test.csv: row 5", "'age'", "'forty'", "not a number"]
    elif case == "missing_label":
        train.loc[2, "label"] = None
        train.to_csv(tmp_path / "train.csv", index=False)
        want = ["train.csv: row 2", "target is missing"]
    elif case == "empty":
        train.iloc[:0].to_csv(tmp_path / "train.csv", index=False)
        want = ["train.csv", "no rows"]
    else:
        test.drop(columns=["income"]).to_csv(tmp_path / "test.csv", index=False)
        want = ["test.csv", "'income'", "columns are"]
    with pytest.raises(DataError) as e:
        load_files(**kw)
    for w in want:
        assert w in str(e.value), (w, str(e.value))


# ------------------------------------------------------------------------------------------------ splits
def test_stratified_split_keeps_class_shares() -> None:
    codes = np.array([0] * 50 + [1] * 30 + [2] * 20)
    rng = np.random.default_rng(0)
    taken = stratified_take(codes, 20, rng)
    counts = np.bincount(codes[taken], minlength=3)
    assert counts.sum() == 20
    np.testing.assert_array_equal(counts, [10, 6, 4])  # reference: 20% of each class (50, 30, 20)
    # largest remainder: 7 of (5, 3, 2) items -> exact shares 3.5, 2.1, 1.4 -> floors 3, 2, 1 and the one item
    # still owed goes to class 0 (remainder .5)
    small = np.array([0] * 5 + [1] * 3 + [2] * 2)
    np.testing.assert_array_equal(np.bincount(small[stratified_take(small, 7, rng)], minlength=3), [4, 2, 1])
    # a class with one item is never moved out of the training side
    lone = np.array([0] * 9 + [1])
    assert 9 not in stratified_take(lone, 5, rng)


def test_file_split_is_seeded_stratified_and_recorded(tmp_path: Path) -> None:
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    np.savez(tmp_path / "d.npz", x=np.arange(100.0)[:, None], y=y)
    spec = {"format": "npz", "path": str(tmp_path / "d.npz"), "test_fraction": 0.2, "val_fraction": 0.1}
    a, b = load_files(spec, seed=7), load_files(spec, seed=7)
    c = load_files(spec, seed=8)
    assert a.fingerprint() == b.fingerprint() and a.fingerprint() != c.fingerprint()
    split = a.meta["split"]
    assert split["seed"] == 7 and split["test_fraction"] == 0.2 and split["val_fraction"] == 0.1
    assert split["sizes"] == {"train": 70, "val": 10, "test": 20}
    np.testing.assert_array_equal(np.bincount(a.y_test.numpy()), [12, 6, 2])  # 20% of 60, 30, 10
    np.testing.assert_array_equal(np.bincount(a.y_val.numpy()), [6, 3, 1])
    # the recorded rows are the items: x holds the row number
    np.testing.assert_array_equal(a.x_val.numpy()[:, 0], rows_of(a, "val"))
    random = load_files(spec, seed=7, stratify=False)
    assert random.meta["split"]["method"] == "random"


def test_split_option_errors(tmp_path: Path) -> None:
    write_tables(tmp_path)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_files(train="train.csv", test="test.csv", test_fraction=0.3, target="label", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="not both"):
        load_files(path="train.csv", train="train.csv", target="label", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="needs a test split"):
        load_files(path="train.csv", test_fraction=0.0, target="label", data_dir=tmp_path)


# -------------------------------------------------------------------------------------- label problems
def test_single_class_and_declared_classes(tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", x=np.zeros((10, 2)), y=np.zeros(10, dtype=int))
    with pytest.raises(DataError, match="single class"):
        load_files(path=str(tmp_path / "one.npz"))
    np.savez(tmp_path / "d.npz", x=np.zeros((12, 2)), y=np.array(["lo", "hi", "mid"] * 4))
    ds = load_files(path=str(tmp_path / "d.npz"), classes=["lo", "mid", "hi"])
    assert ds.class_names == ["lo", "mid", "hi"] and ds.meta["label_map"] == {"lo": 0, "mid": 1, "hi": 2}
    with pytest.raises(DataError, match="'mid' is not one of the declared classes"):
        load_files(path=str(tmp_path / "d.npz"), classes=["lo", "hi"])


# ------------------------------------------------------------------------------------------ fingerprint
def test_fingerprint_follows_file_bytes_not_location(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    df = pd.DataFrame({"a": rng.normal(size=30).round(3), "unused": ["k"] * 30, "label": [0, 1, 2] * 10})
    df.to_csv(tmp_path / "d.csv", index=False)
    spec = {"path": str(tmp_path / "d.csv"), "target": "label", "drop": ["unused"]}
    base = load_files(spec)
    assert base.fingerprint() == load_files(spec).fingerprint()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(tmp_path / "d.csv", moved / "d.csv")
    assert load_files(spec, path=str(moved / "d.csv")).fingerprint() == base.fingerprint()
    # one byte of a dropped column: no array changes, the fingerprint must
    raw = bytearray((tmp_path / "d.csv").read_bytes())
    raw[raw.index(b",k,") + 1] = ord("j")
    (tmp_path / "d.csv").write_bytes(bytes(raw))
    changed = load_files(spec)
    assert torch.equal(changed.x_train, base.x_train) and changed.fingerprint() != base.fingerprint()
    # an option that changes how the file is read changes it too
    assert load_files(spec, standardize=False).fingerprint() != changed.fingerprint()


def test_array_dataset_source_digest_and_target_dtypes() -> None:
    from tricklab.data import ArrayDataset

    ds = ArrayDataset("t", torch.zeros(2, 1), torch.zeros(2, dtype=torch.int64), torch.zeros(1, 1),
                      torch.zeros(1, dtype=torch.int64), 2, (1,))
    fp = ds.fingerprint()
    ds.source_digest = "abc"
    assert ds.fingerprint() != fp
    # float targets only where meta says regression or multilabel; class ids stay int64
    ArrayDataset("r", torch.zeros(2, 1), torch.zeros(2), torch.zeros(1, 1), torch.zeros(1), 1, (1,),
                 meta={"target_kind": "regression"})
    with pytest.raises(ValueError, match="must be float32 for regression"):
        ArrayDataset("r", torch.zeros(2, 1), torch.zeros(2, dtype=torch.int64), torch.zeros(1, 1),
                     torch.zeros(1, dtype=torch.int64), 1, (1,), meta={"target_kind": "regression"})
    with pytest.raises(ValueError, match="must be int64 for multiclass"):
        ArrayDataset("c", torch.zeros(2, 1), torch.zeros(2), torch.zeros(1, 1), torch.zeros(1), 2, (1,))
    with pytest.raises(ValueError, match="target_kind"):
        ArrayDataset("c", torch.zeros(2, 1), torch.zeros(2), torch.zeros(1, 1), torch.zeros(1), 2, (1,),
                     meta={"target_kind": "ranking"})


# ---------------------------------------------------------------------------------------- spec and registry
def test_spec_checks_and_registration(tmp_path: Path) -> None:
    assert "files" in DATASETS
    write_tables(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_dataset("files", data_dir=str(tmp_path), path="train.csv", target="label", standardise=True)
    assert "'standardise'" in str(e.value) and "did you mean 'standardize'" in str(e.value)
    with pytest.raises(ConfigError, match="did you mean 'parquet'"):
        load_files(format="parquett", path=str(tmp_path / "train.csv"))
    with pytest.raises(DataError) as e:  # a text column left out of an explicit categorical list
        load_files(path=str(tmp_path / "train.csv"), target="label", categorical=["city"])
    assert "train.csv: row 0" in str(e.value) and "'note'" in str(e.value) and "categorical" in str(e.value)
    with pytest.raises(ConfigError, match="must be true or false"):
        load_files(path=str(tmp_path / "train.csv"), target="label", standardize="yes")
    with pytest.raises(DataError, match="does not exist"):
        load_files(path="nope.csv", data_dir=tmp_path)
    spec = parse_spec({"path": "train.csv"}, tmp_path)
    assert spec.format == "csv" and spec.sources["all"]["path"] == tmp_path / "train.csv"
    assert set(format_options("csv")) >= {"target", "features", "categorical", "standardize", "seed"}


def test_missing_extra_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    write_tables(tmp_path)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(DataError, match=r"tricklab\[tables\]"):
        load_files(path=str(tmp_path / "train.csv"), target="label")
