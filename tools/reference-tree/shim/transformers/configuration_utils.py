import torch


class PretrainedConfig:
    """Holds every keyword as an attribute, with the defaults of transformers 4.30 the ChatGLM files read."""

    def __init__(self, **kwargs):
        self.output_hidden_states = kwargs.pop("output_hidden_states", False)
        self.output_attentions = kwargs.pop("output_attentions", False)
        self.use_return_dict = kwargs.pop("return_dict", True)
        self.max_length = kwargs.pop("max_length", 20)
        dtype = kwargs.pop("torch_dtype", None)
        self.torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            setattr(self, key, kwargs.pop(key, None))
        for key, value in kwargs.items():
            setattr(self, key, value)
