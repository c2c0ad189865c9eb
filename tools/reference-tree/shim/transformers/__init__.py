"""A minimal stand-in for the few `transformers` names THUDM's ChatGLM files import.

It carries no model math: configuration attributes, an nn.Module base class, output records, logging and
inert generation classes. The tree generator drives generation itself through the model's own hooks.
"""
from .configuration_utils import PretrainedConfig
from .modeling_utils import PreTrainedModel
from .tokenization_utils import PreTrainedTokenizer
