"""Stub so THUDM's tokenization_chatglm.py imports; the generator never loads a SentencePiece model."""


class SentencePieceProcessor:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("sentencepiece is stubbed in the reference-tree generator")
