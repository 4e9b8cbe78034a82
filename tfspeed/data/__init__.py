"""Text in: datasets, WordPiece tokenization, `tf.data` pipelines."""

from tfspeed.data.config import DataConfig
from tfspeed.data.datasets import TextDataset, TextSplit, from_file, load_dataset, load_splits, rotten_tomatoes
from tfspeed.data.pipeline import EncodedDataset, EncodedSplit
from tfspeed.data.tokenizer import Tokenizer

__all__ = ["DataConfig", "EncodedDataset", "EncodedSplit", "TextDataset", "TextSplit", "Tokenizer", "from_file",
           "load_dataset", "load_splits", "rotten_tomatoes"]
