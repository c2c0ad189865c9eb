from typing import List

EncodedInput = List[int]


class BatchEncoding(dict):
    pass
