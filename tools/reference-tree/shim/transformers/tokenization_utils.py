class PreTrainedTokenizer:
    """Only a base class to subclass: the generator calls the ChatGLM tokenizers' `_pad` on a plain object."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)
