"""TFLite metadata for MediaPipe Tasks' TextClassifier: written by tfspeed, read back, and run by MediaPipe itself on
raw strings (the real client), next to tfspeed's own `TextClassifier` on the same file."""

import io
import zipfile

import numpy as np
import pytest

from tfspeed.compat import keras
from tfspeed.export import MetadataError, TextClassifier, add_metadata, convert, read_metadata
from tfspeed.export.metadata import OUTPUT_NAME, metadata_buffer
from tfspeed.export.parity import TFLiteClassifier, softmax
from tfspeed.models import build_classifier

TEXTS = ["the movie was good !", "very bad plot , awful acting", "a film", "not great , not awful . the plot is unable"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_config, vocab_file):
    """A tiny random BERT whose classifier is scaled up, so its probabilities spread over (0, 1) instead of ~0.5."""
    from tfspeed.artifacts import ModelInfo, save_model_dir

    keras.utils.set_random_seed(3)
    model = build_classifier(tiny_config.replace(max_positions=16), num_classes=3)
    dense = model.get_layer("classifier") if any(l.name == "classifier" for l in model.layers) else model.layers[-1]
    dense.set_weights([w * 40.0 for w in dense.get_weights()])
    out = tmp_path_factory.mktemp("md") / "tiny"
    save_model_dir(model, out, ModelInfo(seq_length=16, label_names=["negative", "neutral", "positive"],
                                         base="random", stage="test", vocab_path=str(vocab_file)))
    return out


@pytest.fixture(scope="module")
def files(model_dir):
    """The dynamic-range file without and with metadata."""
    return convert(model_dir, "dynamic", metadata=False), convert(model_dir, "dynamic")


def test_metadata_round_trips_and_the_softmax_output_matches_the_logits(files, vocab_file):
    plain, packaged = files
    assert read_metadata(plain) is None
    meta = read_metadata(packaged)
    assert meta.labels == ("negative", "neutral", "positive")
    assert list(meta.vocab) == vocab_file.read_text().splitlines()
    assert meta.inputs == {"ids": "serving_default_input_word_ids:0", "mask": "serving_default_input_mask:0",
                           "segment_ids": "serving_default_input_type_ids:0"}
    assert meta.output == OUTPUT_NAME and meta.version.startswith("tfspeed ")
    names = zipfile.ZipFile(io.BytesIO(packaged)).namelist()
    assert sorted(names) == ["labels.txt", "vocab.txt"]

    rng = np.random.default_rng(0)
    ids = rng.integers(5, 120, size=(6, 16)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[:, 10:] = 0
    feats = {"input_word_ids": ids * mask, "input_mask": mask, "input_type_ids": np.zeros_like(ids)}
    logits = TFLiteClassifier(plain).outputs(feats)
    runner = TFLiteClassifier(packaged)
    assert runner.returns_probabilities
    probs = runner.probabilities(feats)
    np.testing.assert_allclose(probs, softmax(logits), atol=2e-6)  # float32 softmax vs float64 of the same logits
    assert (probs.argmax(-1) == logits.argmax(-1)).all() and probs.std() > 0.05  # spread, not all ~1/3
    assert (runner.logits(feats).argmax(-1) == logits.argmax(-1)).all()


def test_metadata_fields_are_the_ones_mediapipe_parses(files):
    """Our flatbuffer read with MediaPipe's own generated schema code: the fields its BERT text classifier needs."""
    schema = pytest.importorskip("mediapipe.tasks.metadata.metadata_schema_py_generated")
    meta = schema.ModelMetadataT.InitFromPackedBuf(metadata_buffer(files[1]), 0)
    assert meta.minParserVersion == b"1.1.0" and len(meta.subgraphMetadata) == 1
    graph = meta.subgraphMetadata[0]
    assert [t.name for t in graph.inputTensorMetadata] == [b"ids", b"segment_ids", b"mask"]  # the file's input order
    assert all(t.content.contentPropertiesType == schema.ContentProperties.FeatureProperties
               for t in graph.inputTensorMetadata)
    unit = graph.inputProcessUnits[0]
    assert unit.optionsType == schema.ProcessUnitOptions.BertTokenizerOptions
    assert unit.options.vocabFile[0].name == b"vocab.txt"
    assert unit.options.vocabFile[0].type == schema.AssociatedFileType.VOCABULARY
    out = graph.outputTensorMetadata[0]
    assert out.associatedFiles[0].name == b"labels.txt"
    assert out.associatedFiles[0].type == schema.AssociatedFileType.TENSOR_AXIS_LABELS
    assert list(out.stats.max) == [1.0] and list(out.stats.min) == [0.0]


@pytest.mark.parametrize("mode", [pytest.param("float32", marks=pytest.mark.large),
                                  pytest.param("float16", marks=pytest.mark.large), "dynamic", "int8-mixed",
                                  "int4", "16x8"])
def test_mediapipe_text_classifier_runs_the_file_on_raw_strings(model_dir, mode, tmp_path):
    """MediaPipe tokenizes, runs and labels the file itself; its scores are tfspeed's within float rounding."""
    text = pytest.importorskip("mediapipe.tasks.python.text")
    calibration = {k: np.random.default_rng(0).integers(1, 100, (8, 16)).astype(np.int32)
                   for k in ("input_word_ids",)}
    calibration["input_mask"] = np.ones((8, 16), np.int32)
    calibration["input_type_ids"] = np.zeros((8, 16), np.int32)
    if mode in ("int4", "16x8"):
        pytest.importorskip("litert_quantizer")
    extra = {"block_size": 0} if mode == "int4" else {}  # intermediate size 48: no block of 32
    data = convert(model_dir, mode, calibration=calibration if mode in ("int8-mixed", "16x8") else None, **extra)
    path = tmp_path / f"{mode}.tflite"
    path.write_bytes(data)
    ours = TextClassifier(path).classify(TEXTS)
    classifier = text.TextClassifier.create_from_model_path(str(path))
    try:
        for sentence, mine in zip(TEXTS, ours):
            result = classifier.classify(sentence).classifications[0].categories
            theirs = {c.category_name: c.score for c in result}
            assert set(theirs) == {"negative", "neutral", "positive"}
            assert max(theirs, key=theirs.get) == mine.label
            for label, p in mine.probabilities.items():
                assert theirs[label] == pytest.approx(p, abs=1e-5), (mode, sentence, label)
    finally:
        classifier.close()


def test_text_classifier_on_a_model_directory_agrees_with_its_file(model_dir, files):
    keras_probs = TextClassifier(model_dir).predict_proba(TEXTS)
    file_probs = TextClassifier(files[1]).predict_proba(TEXTS)
    assert (keras_probs.argmax(-1) == file_probs.argmax(-1)).all()
    np.testing.assert_allclose(file_probs, keras_probs, atol=0.05)  # dynamic range: int8 weights


def test_text_classifier_counts_truncated_texts(files):
    long_text = " ".join(["good"] * 40)
    short, long = TextClassifier(files[1]).classify(["good", long_text])
    assert (short.tokens, short.truncated) == (1, False)
    assert (long.tokens, long.truncated) == (40, True)


def test_a_file_without_metadata_needs_vocab_and_labels(files, vocab_file):
    plain = files[0]
    with pytest.raises(MetadataError, match="without metadata.*--vocab VOCAB.txt --labels"):
        TextClassifier(plain)
    probs = TextClassifier(plain, vocab=vocab_file, labels="a,b,c").predict_proba(TEXTS)
    np.testing.assert_allclose(probs, TextClassifier(files[1]).predict_proba(TEXTS), atol=2e-6)
    with pytest.raises(MetadataError, match="Expected 3 label names.*Received: 2"):
        TextClassifier(plain, vocab=vocab_file, labels="a,b")


@pytest.mark.parametrize("texts, error, match", [
    (["good", ""], ValueError, r"non-empty texts.*texts\[1\]=''"),
    (["good", "   "], ValueError, r"texts\[1\]"),
    ("good", TypeError, "single str"),
    (["good", 3], TypeError, r"texts\[1\] of type int"),
])
def test_text_classifier_refuses_bad_texts(files, texts, error, match):
    with pytest.raises(error, match=match):
        TextClassifier(files[1]).classify(texts)


def test_bad_labels_and_vocabularies_are_refused(files, vocab_file, tmp_path):
    plain = files[0]
    with pytest.raises(MetadataError, match=r"Expected 3 label names.*Received: 2: \['neg', 'pos'\]"):
        add_metadata(plain, vocab_file, ["neg", "pos"])
    with pytest.raises(MetadataError, match="distinct"):
        add_metadata(plain, vocab_file, ["a", "a", "b"])
    with pytest.raises(MetadataError, match="non-empty"):
        add_metadata(plain, vocab_file, ["a", "", "b"])
    broken = tmp_path / "vocab.txt"
    broken.write_text("\n".join(t for t in vocab_file.read_text().splitlines() if t != "[SEP]"))
    with pytest.raises(MetadataError, match=r"\[CLS\], \[SEP\], \[PAD\], \[UNK\].*without \[SEP\]"):
        add_metadata(plain, broken, ["a", "b", "c"])
    binary = tmp_path / "latin.txt"
    binary.write_bytes(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\ncaf\xe9\n")
    with pytest.raises(MetadataError, match="not UTF-8"):
        add_metadata(plain, binary, ["a", "b", "c"])


def test_metadata_on_a_file_that_has_some_replaces_it(files, vocab_file):
    again = add_metadata(files[1], vocab_file, ["x", "y", "z"], probabilities=False)
    meta = read_metadata(again)
    assert meta.labels == ("x", "y", "z")
    from ai_edge_litert import schema_py_generated as fb

    model = fb.Model.GetRootAs(again, 0)
    names = [model.Metadata(k).Name() for k in range(model.MetadataLength())]
    assert names.count(b"TFLITE_METADATA") == 1
    assert sorted(zipfile.ZipFile(io.BytesIO(again)).namelist()) == ["labels.txt", "vocab.txt"]
