class ModelOutput:
    """Named fields; integer indexing and slicing skip the fields that are None, as transformers does."""

    _fields = ()

    def __init__(self, **kwargs):
        for name in self._fields:
            setattr(self, name, kwargs.pop(name, None))
        if kwargs:
            raise TypeError("unexpected fields " + ", ".join(kwargs))

    def to_tuple(self):
        return tuple(getattr(self, n) for n in self._fields if getattr(self, n) is not None)

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]


class LogitsProcessorList(list):
    pass


class StoppingCriteriaList(list):
    pass


class GenerationConfig:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)
