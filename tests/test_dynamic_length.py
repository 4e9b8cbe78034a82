"""Variable-length .tflite files (`seq_length="dynamic"`): inputs [1, -1], each text run at its own length, the same
predictions as the padded file, in every mode; MediaPipe and `TextClassifier` run them; lengths past the positions are
cut in the graph, not a crash."""

import numpy as np
import pytest

from tfspeed.cli import main
from tfspeed.compat import keras
from tfspeed.export import TextClassifier, convert
from tfspeed.export.parity import TFLiteClassifier
from tfspeed.models import build_classifier

POSITIONS = 24


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_config, vocab_file):
    from tfspeed.artifacts import ModelInfo, save_model_dir

    keras.utils.set_random_seed(11)
    model = build_classifier(tiny_config.replace(max_positions=POSITIONS, dropout=0.0), num_classes=3)
    dense = model.layers[-1]
    dense.set_weights([w * 30.0 for w in dense.get_weights()])
    out = tmp_path_factory.mktemp("dyn") / "tiny"
    save_model_dir(model, out, ModelInfo(seq_length=16, label_names=["a", "b", "c"], base="random", stage="test",
                                         vocab_path=str(vocab_file)))
    return out


@pytest.fixture(scope="module")
def converted(model_dir):
    """`convert(model_dir, mode, seq_length, metadata=...)` once per argument set for the module: the tests only
    read the bytes."""
    cache = {}

    def get(mode, seq_length, metadata=True):
        key = (mode, seq_length, metadata)
        if key not in cache:
            cache[key] = convert(model_dir, mode, seq_length=seq_length, metadata=metadata)
        return cache[key]

    return get


def _rows(n=12, length=16, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 120, size=(n, length)).astype(np.int32)
    lengths = rng.integers(3, length + 1, size=n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids[:, 0] = 2
    return {"input_word_ids": ids * mask, "input_mask": mask, "input_type_ids": np.zeros_like(ids)}


CALIBRATION = _rows(16, 16, seed=1)


@pytest.mark.parametrize("mode", ["float32", pytest.param("float16", marks=pytest.mark.large), "dynamic",
                                  pytest.param("int8", marks=pytest.mark.large), "int8-mixed"])
def test_dynamic_file_gives_the_padded_files_predictions(model_dir, mode):
    padded = convert(model_dir, mode, seq_length=16, calibration=CALIBRATION, metadata=False)
    dynamic = convert(model_dir, mode, seq_length="dynamic", calibration=CALIBRATION, metadata=False)
    runner = TFLiteClassifier(dynamic)
    assert runner.dynamic and runner.seq_length is None
    rows = _rows()
    a, b = TFLiteClassifier(padded).logits(rows), runner.logits(rows)
    assert (a.argmax(-1) == b.argmax(-1)).all()
    # float modes: the padded positions are masked out, so only rounding differs; int8: ranges calibrated once
    atol = {"float32": 1e-4, "float16": 2e-2, "dynamic": 5e-2}.get(mode, 0.3)
    np.testing.assert_allclose(b, a, atol=atol)
    if mode.startswith("int8"):  # a dynamic sequence axis keeps the dense layers int8 (a dynamic batch does not)
        from tfspeed.export.ops import op_histogram

        assert op_histogram(dynamic)["int8"]["FULLY_CONNECTED"] == op_histogram(padded)["int8"]["FULLY_CONNECTED"]


def test_a_text_longer_than_the_positions_is_cut_not_a_crash(converted):
    data = converted("dynamic", "dynamic", metadata=False)
    runner = TFLiteClassifier(data)
    long_rows = _rows(2, POSITIONS + 10, seed=3)
    long_rows["input_mask"][:] = 1
    cut = {k: v[:, :POSITIONS] for k, v in long_rows.items()}
    np.testing.assert_allclose(runner.logits(long_rows), runner.logits(cut), atol=1e-6)


def test_mediapipe_and_text_classifier_run_the_dynamic_file(tmp_path, converted):
    text = pytest.importorskip("mediapipe.tasks.python.text")
    path = tmp_path / "dyn.tflite"
    path.write_bytes(converted("dynamic", "dynamic"))
    texts = ["good", "the movie was very good , not awful", "w1 w2 w3 " * 3]
    ours = TextClassifier(path, max_length=16).classify(texts)
    padded = TextClassifier(converted("dynamic", 16)).classify(texts)
    classifier = text.TextClassifier.create_from_model_path(str(path))
    try:
        for sentence, mine, fixed in zip(texts, ours, padded):
            theirs = {c.category_name: c.score for c in classifier.classify(sentence).classifications[0].categories}
            assert mine.label == fixed.label == max(theirs, key=theirs.get)
            for label, p in mine.probabilities.items():
                assert theirs[label] == pytest.approx(p, abs=1e-5)
    finally:
        classifier.close()


def test_cli_exports_a_dynamic_file_and_refuses_lengths_past_the_positions(model_dir, tmp_path, capsys):
    out = tmp_path / "d.tflite"
    assert main(["export", str(model_dir), "--seq-length", "dynamic", "--out", str(out), "--eval-split", "none"]) == 0
    assert TFLiteClassifier(out).dynamic
    assert main(["export", str(model_dir), "--seq-length", "64", "--out", str(tmp_path / "x.tflite"),
                 "--eval-split", "none"]) == 1
    err = capsys.readouterr().err
    assert f"the model has {POSITIONS} positions" in err and "Received: seq_length=64" in err
    with pytest.raises(SystemExit):
        main(["export", str(model_dir), "--seq-length", "long", "--out", str(tmp_path / "y.tflite")])
    assert "expected a positive integer or 'dynamic'" in capsys.readouterr().err


def _hf_named_file(model_dir, length):
    """A peer's naming: the same model behind `input_ids`, `attention_mask`, `token_type_ids`."""
    from tfspeed import artifacts
    from tfspeed.compat import tf

    model, _ = artifacts.load_model_dir(model_dir)
    specs = [tf.TensorSpec([1, length], tf.int32, name=n) for n in ("input_ids", "attention_mask", "token_type_ids")]

    @tf.function(input_signature=specs)
    def serving_default(input_ids, attention_mask, token_type_ids):
        return {"logits": model({"input_word_ids": input_ids, "input_mask": attention_mask,
                                 "input_type_ids": token_type_ids}, training=False)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serving_default.get_concrete_function()], model)
    return converter.convert()


def test_latency_on_real_texts_each_at_its_own_length(model_dir, vocab_file, tmp_path, capsys, converted):
    from tfspeed.export.latency import format_texts_report, profile_texts

    padded, dynamic, peer = tmp_path / "padded.tflite", tmp_path / "dynamic.tflite", tmp_path / "peer.tflite"
    padded.write_bytes(converted("dynamic", 16))
    dynamic.write_bytes(converted("dynamic", "dynamic"))
    peer.write_bytes(_hf_named_file(model_dir, 16))
    texts = ["good", "the movie was very good", "not great , not awful . the plot is unable", "w1 " * 30]
    result = profile_texts([padded, dynamic, peer], texts, vocab=vocab_file, max_length=16, warmup=2)
    by_name = {r["name"]: r for r in result["models"]}
    assert by_name["padded.tflite"]["length"] == 16 and by_name["dynamic.tflite"]["length"] == "dynamic"
    assert by_name["dynamic.tflite"]["mean_length_run"] < 16 and by_name["dynamic.tflite"]["truncated"] == 1
    assert result["token_lengths"]["max"] == 32 and result["token_lengths"]["p50"] < 16  # [CLS] + 30 + [SEP]
    assert result["argmax_agreement"] == [1.0, 1.0, 1.0]  # same predictions, whatever the length or the input names
    assert all(r["latency_ms"]["n"] == 4 and r["tokens_per_second"] > 0 for r in result["models"])
    bucketed = profile_texts([padded, dynamic], texts, vocab=vocab_file, max_length=16, warmup=1, buckets=(8,))
    assert bucketed["models"][1]["buckets"] == [8, 16] and bucketed["argmax_agreement"] == [1.0, 1.0]
    # a padded file costs the same on any text: on a sample of them, still interleaved; the dynamic file on all
    sampled = profile_texts([dynamic, padded], texts, vocab=vocab_file, max_length=16, warmup=1, padded_sample=2)
    assert [r["num_texts_run"] for r in sampled["models"]] == [4, 2] and sampled["argmax_agreement"] == [1.0, 1.0]
    assert sampled["models"][1]["latency_ms"]["n"] == 2 and sampled["models"][1]["tokens_per_second"] > 0
    assert "| dynamic.tflite | own (dynamic) |" in format_texts_report(result)

    listing = tmp_path / "texts.txt"
    listing.write_text("\n".join(texts) + "\n")
    out = tmp_path / "p.json"
    assert main(["profile", str(padded), str(dynamic), "--texts", str(listing), "--vocab", str(vocab_file),
                 "--max-length", "16", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "padded.tflite has a fixed length: every text was padded (or cut) to 16 tokens" in printed
    import json

    assert json.loads(out.read_text())["num_texts"] == 4
    assert main(["profile", str(padded), "--texts", str(listing), "--text", "x", "--vocab", str(vocab_file)]) == 1
    assert "does not combine" in capsys.readouterr().err


def test_padded_profile_runs_a_peer_file_with_other_input_names(model_dir, tmp_path, capsys, converted):
    """`tfspeed profile tfspeed.tflite peer.tflite --shape input_ids=1,16`: one shape and one set of token ids serve
    both namings (by role), so the two run side by side on the same tokens."""
    from tfspeed.profile import profile_models

    ours, peer = tmp_path / "ours.tflite", tmp_path / "peer.tflite"
    ours.write_bytes(converted("dynamic", "dynamic", metadata=False))
    peer.write_bytes(_hf_named_file(model_dir, 16))
    result = profile_models([str(ours), str(peer)], shapes={"input_ids": [1, 16]}, runs=3, warmup=1,
                            progress=False, isolate=False)
    assert [m["latency_ms"]["n"] for m in result.models] == [3, 3]
    assert main(["profile", str(peer), str(ours), "--shape", "input_word_ids=1,16", "--runs", "3",
                 "--no-progress"]) == 0
    assert "peer.tflite" in capsys.readouterr().out


def test_length_buckets_give_the_exact_length_results(tmp_path, converted):
    from tfspeed.export.buckets import BucketRunner

    data = converted("float32", "dynamic")
    exact, runner = TFLiteClassifier(data), BucketRunner(data, buckets=(4, 8, 16))
    rows = _rows(10, 16, seed=7)
    for i in range(10):
        row = {k: v[i:i + 1] for k, v in rows.items()}
        n = int(row["input_mask"].sum())
        np.testing.assert_allclose(runner(row), exact(row), atol=1e-5)  # padding is masked out: only rounding
        assert runner.bucket(n) == next(b for b in (4, 8, 16) if n <= b)
    path = tmp_path / "varlen.tflite"
    path.write_bytes(converted("float32", "dynamic"))
    texts = ["good", "the movie was very good , not awful", "w1 w2 " * 12]
    a = TextClassifier(path, max_length=16, buckets=(4, 8)).predict_proba(texts)
    b = TextClassifier(path, max_length=16, buckets=()).predict_proba(texts)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert TextClassifier(path, max_length=16)._buckets.buckets == (16,)  # the defaults below max_length, then it
    assert TextClassifier(path, max_length=40)._buckets.buckets == (16, 32, 40)


@pytest.mark.parametrize("buckets, match", [
    ((16, 8), "increasing"), ((0, 8), "increasing token lengths >= 3"), (("a",), "increasing positive"),
])
def test_bad_bucket_lists_are_refused(buckets, match, converted):
    from tfspeed.export.buckets import BucketRunner

    with pytest.raises(ValueError, match=match):
        BucketRunner(converted("dynamic", "dynamic", metadata=False), buckets=buckets)


def test_buckets_beyond_max_length_and_on_a_fixed_file_are_refused(model_dir, vocab_file, capsys, converted):
    from tfspeed.export.buckets import BucketRunner, check_buckets

    with pytest.raises(ValueError, match=r"at most 16 tokens.*Received: buckets=\[8, 32\]"):
        check_buckets((8, 32), max_length=16)
    with pytest.raises(ValueError, match="Expected a dynamic-length .tflite"):
        BucketRunner(converted("dynamic", 16), buckets=(8, 16))
    with pytest.raises(SystemExit):
        main(["predict", str(model_dir), "good", "--buckets", "32,16"])
    assert "increasing" in capsys.readouterr().err


def test_one_bucket_file_gives_the_dynamic_files_results_with_the_weights_once(model_dir, tmp_path, capsys,
                                                                                 converted):
    """`export_buckets` / `tfspeed export --buckets`: a fixed-length signature per bucket in one file; each text runs
    on its bucket as the dynamic file does on one interpreter per bucket; the weights are stored once; the longest
    bucket is the first subgraph; `tfspeed export --buckets` writes tfspeed's metadata into every signature."""
    from tfspeed.export.buckets import BucketRunner, bucket_signatures, export_buckets

    data = export_buckets(model_dir, (4, 8, 16), "float32")
    assert bucket_signatures(data) == (4, 8, 16) and bucket_signatures(converted("float32", "dynamic")) == ()
    one = BucketRunner(data)
    per_bucket = BucketRunner(converted("float32", "dynamic", metadata=False), buckets=(4, 8, 16))
    rows = _rows(10, 16, seed=3)
    for i in range(10):
        row = {k: v[i:i + 1] for k, v in rows.items()}
        np.testing.assert_allclose(one(row), per_bucket(row), atol=1e-5)
    fixed = len(converted("float32", 16, metadata=False))
    assert len(data) < fixed * 1.5  # three signatures, one copy of the weights (three would be ~3x)
    path = tmp_path / "buckets.tflite"
    path.write_bytes(data)
    texts = ["good", "the movie was very good , not awful", "w1 w2 " * 12]
    vocab = str(model_dir / "vocab.txt")
    got = TextClassifier(path, vocab=vocab, labels=["a", "b", "c"]).predict_proba(texts)
    np.testing.assert_allclose(got, TextClassifier(model_dir).predict_proba(texts), atol=1e-4)
    out = tmp_path / "cli.tflite"
    assert main(["export", str(model_dir), "--mode", "dynamic", "--buckets", "4,8,16", "--eval-split", "none",
                 "--out", str(out)]) == 0
    assert bucket_signatures(out) == (4, 8, 16) and "MediaPipe's TextClassifier refuses" in capsys.readouterr().out
    # metadata in every signature: raw text in without --vocab/--labels, probabilities out
    np.testing.assert_allclose(TextClassifier(out).predict_proba(texts), TextClassifier(model_dir).predict_proba(texts),
                               atol=0.05)  # dynamic range quantizes each activation with its own range
    from ai_edge_litert.interpreter import Interpreter

    first = Interpreter(model_path=str(out)).get_input_details()  # what a one-signature runtime runs: all 16 tokens
    assert all(list(d["shape"]) == [1, 16] for d in first)
    assert main(["export", str(model_dir), "--mode", "int8", "--buckets", "4,8", "--out",
                 str(tmp_path / "bad.tflite")]) == 1
    assert "buckets" in capsys.readouterr().err
    from ai_edge_litert.tools import flatbuffer_utils

    from tfspeed.export.metadata import MetadataError, add_metadata

    other = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    other.signatureDefs[0].signatureKey = b"serving_default"  # several subgraphs, not all buckets: refused, named
    with pytest.raises(MetadataError, match=r"one subgraph, or a bucket file.*3 subgraphs.*serving_default"):
        add_metadata(bytes(flatbuffer_utils.convert_object_to_bytearray(other)), vocab, ["a", "b", "c"])
    mp_text = pytest.importorskip("mediapipe.tasks.python.text")
    with pytest.raises(ValueError, match="single subgraph"):  # MediaPipe refuses several signatures: said in the log
        mp_text.TextClassifier.create_from_model_path(str(out))
