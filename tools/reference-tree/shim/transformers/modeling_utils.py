import torch


class PreTrainedModel(torch.nn.Module):
    """nn.Module plus the config attribute and the one generation helper the ChatGLM files call."""

    def __init__(self, config, *inputs, **kwargs):
        super().__init__()
        self.config = config

    def _extract_past_from_model_output(self, outputs, standardize_cache_format=False):
        return outputs.past_key_values
