"""Shared fixtures. Tests run on small random-weight BERTs; real-weight tests read the pinned MiniLM wheel."""

import harness  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tfspeed.compat import tf  # first: the one place that selects Keras 2 before TensorFlow loads

# Two logical CPU devices, so tf.distribute.MirroredStrategy runs with two real replicas on this machine.
# Must happen before TensorFlow initialises its devices, hence at import time of the test session.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


def pytest_addoption(parser):
    parser.addoption("--run-large", action="store_true", help="also run tests marked `large` (minutes each)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-large"):
        return
    skip = pytest.mark.skip(reason="large: pass --run-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_config():
    """The suite's tiny BERT config (`harness.tiny_config()`): non-default everywhere, so serialization mismatches
    show."""
    return harness.tiny_config()


@pytest.fixture(scope="session")
def tiny_inputs(tiny_config):
    from tfspeed.hub import sample_inputs

    return sample_inputs(tiny_config, batch=3, seq_length=12)


@pytest.fixture(scope="session")
def vocab_file(tmp_path_factory):
    """A small WordPiece vocabulary: specials, a few words and pieces (no download)."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "bad", "awful", "movie", "film", "the",
             "a", "was", "is", "plot", "acting", "un", "##able", "##s", ".", ",", "!", "very", "not"]
    words += [f"w{i}" for i in range(120 - len(words))]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(words) + "\n")
    return path


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory):
    """A learnable toy sentiment set: 'good'/'great' texts are positive, 'bad'/'awful' negative."""
    rng = np.random.default_rng(0)
    rows = ["text,label"]
    fillers = ["the movie", "a film", "the plot", "the acting", "very", "not"]
    for i in range(400):
        positive = i % 2 == 0
        word = rng.choice(["good", "great"] if positive else ["bad", "awful"])
        rest = " ".join(rng.choice(fillers, size=3))
        rows.append(f"\"{rest} was {word} w{i % 90} w{90 + i // 90}\",{'pos' if positive else 'neg'}")
    path = tmp_path_factory.mktemp("data") / "toy.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def mirrored_strategy():
    """A MirroredStrategy over the two logical CPUs: a real two-replica run."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    return strategy


@pytest.fixture(scope="session")
def tiny_teacher_dir(tiny_config, vocab_file, tmp_path_factory):
    """A tiny random-weight classifier saved as a model directory (seq_length 16, labels neg / pos)."""
    from tfspeed import artifacts
    from tfspeed.models import build_classifier

    path = tmp_path_factory.mktemp("teacher") / "teacher"
    model = build_classifier(tiny_config.replace(max_positions=16))
    info = artifacts.ModelInfo(seq_length=16, label_names=["neg", "pos"], base="tiny", stage="finetune",
                               vocab_path=str(vocab_file))
    artifacts.save_model_dir(model, path, info, {"accuracy": 0.5})
    return path
