"""BERT models in tf_keras that TFMOT can see into."""

from tfspeed.models.bert import (
                                 INPUT_NAMES,
                                 bert_outputs,
                                 build_classifier,
                                 build_encoder,
                                 config_of,
                                 copy_weights,
                                 encoder_inputs,
                                 encoder_of,
                                 is_bert,
                                 layer_by_name,
                                 num_classes_of,
)
from tfspeed.models.config import BertConfig

__all__ = ["BertConfig", "INPUT_NAMES", "bert_outputs", "build_classifier", "build_encoder", "config_of",
           "copy_weights", "encoder_inputs", "encoder_of", "is_bert", "layer_by_name", "num_classes_of"]
