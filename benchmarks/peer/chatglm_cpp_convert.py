"""Writes chatglm.cpp's GGML files (f16, q8_0, q4_0, ...) from one of our ChatGLM3 checkpoints with chatglm.cpp's
own converter (chatglm_cpp/convert.py), loading the model once for all the requested types.

    python chatglm_cpp_convert.py --chatglm-cpp SRC --thudm DIR --tokenizer FILE --checkpoint CKPT --out OUT \
        --types f16,q8_0,q4_0

Why not run convert.py itself: its convert() loads the whole model through transformers' AutoModel in float32
(25 GB for chatglm3-6b shapes, more than a 24 GiB machine has), once per type, and THUDM's 2023 modeling code no
longer loads with transformers 5 (the only transformers this machine's package index has for torch 2.13). The
converter itself needs only the model's config and state dict: this script hands chatglm.cpp's ChatGLM3Converter
(the class convert() picks for a ChatGLM3 tokenizer) THUDM's config (AutoConfig with THUDM's
configuration_chatglm.py), THUDM's tokenizer (AutoTokenizer with tokenization_chatglm.py) and a state dict that
reads each tensor from its safetensors shard when the converter asks for it. The converter widens every tensor to
float32 itself before converting, so the bytes written equal what convert.py would write; memory stays at one tensor.

transformers reads the config and tokenizer from a view folder OUT/.hf-view: the checkpoint's config.json with
THUDM's auto_map added, THUDM's *_chatglm.py files and quantization.py (from --thudm) and the SentencePiece model
(--tokenizer).
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

AUTO_MAP = {
    "AutoConfig": "configuration_chatglm.ChatGLMConfig",
    "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
}
TOKENIZER_CONFIG = {
    "tokenizer_class": "ChatGLMTokenizer",
    "remove_space": False,
    "do_lower_case": False,
    "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
}


class LazyStateDict(dict):
    """The checkpoint's tensors by name, each read from its shard when the converter asks for it (and not kept)."""

    def __init__(self, checkpoint: Path):
        super().__init__()
        from safetensors import safe_open

        index = checkpoint / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
        else:
            weight_map = {}
            with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as f:
                weight_map = {k: "model.safetensors" for k in f.keys()}
        self._files = {name: checkpoint / shard for name, shard in weight_map.items()}
        self._open = {}

    def __getitem__(self, name):
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        from safetensors import safe_open

        path = self._files[name]
        if path not in self._open:
            self._open = {path: safe_open(str(path), framework="pt")}  # one shard open at a time
        return self._open[path].get_tensor(name)

    def __contains__(self, name):
        return dict.__contains__(self, name) or name in self._files


WORDS = ("time river paper garden window music table yellow mountain orange silver forest bridge candle winter "
         "summer pocket market number letter rabbit button planet signal copper island engine castle shadow pencil "
         "basket doctor farmer guitar jacket kitten ladder marble needle parrot pillow rocket saddle ticket tunnel "
         "violin wallet anchor barrel cabin dragon feather harbor jungle lemon meadow nickel oyster puzzle quarry").split()


def write_prompt(tokenizer_model: Path, ids: int, target: Path) -> int:
    """A plain-text prompt that chatglm.cpp's generate mode turns into exactly ``ids`` ids: [gMASK] sop + the
    SentencePiece pieces of the text (ChatGLM3Tokenizer::encode). Returns the count reached."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_model))
    want = ids - 2
    words = []
    i = 0
    while len(sp.encode(" ".join(words))) < want and i < 100 * want:
        candidate = words + [WORDS[i % len(WORDS)]]
        if len(sp.encode(" ".join(candidate))) <= want:
            words = candidate
        i += 1
    text = " ".join(words)
    got = len(sp.encode(text)) + 2
    target.write_text(text)
    return got


CHATGLM3_SPECIAL_TOKENS = 9  # [MASK] [gMASK] [sMASK] sop eop <|system|> <|user|> <|assistant|> <|observation|>


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pad_tokenizer(src: Path, dst: Path, vocab: int) -> int:
    """Copies a SentencePiece model, appending UNUSED pieces until the ChatGLM3 special tokens (numbered after the
    pieces, by THUDM's tokenizer and chatglm.cpp alike) end at ``vocab``: with random weights any id below the model's
    vocabulary can come out, and chatglm.cpp crashes decoding an id its tokenizer does not have (the real tokenizer
    has 64,798 of 65,024). UNUSED pieces never come out of encoding, so prompts encode as before. Returns the pieces.
    """
    import sentencepiece

    have = sentencepiece.SentencePieceProcessor(model_file=str(src)).get_piece_size()
    want = vocab - CHATGLM3_SPECIAL_TOKENS
    data = bytearray(src.read_bytes())
    for i in range(have, want):
        # ModelProto.pieces (field 1) += SentencePiece{piece (1): "<unused-i>", score (2): 0.0, type (3): UNUSED=5}
        name = f"<unused-{i}>".encode()
        piece = b"\x0a" + _varint(len(name)) + name + b"\x15\x00\x00\x00\x00" + b"\x18\x05"
        data += b"\x0a" + _varint(len(piece)) + piece
    dst.write_bytes(bytes(data))
    got = sentencepiece.SentencePieceProcessor(model_file=str(dst)).get_piece_size()
    if got != max(have, want):
        raise SystemExit(f"padding the tokenizer gave {got} pieces, expected {max(have, want)}")
    return got


def make_view(checkpoint: Path, thudm: Path, tokenizer: Path, view: Path) -> None:
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(parents=True)
    config = json.loads((checkpoint / "config.json").read_text())
    config["auto_map"] = AUTO_MAP
    config["architectures"] = ["ChatGLMModel"]
    (view / "config.json").write_text(json.dumps(config, indent=1))
    for name in ("configuration_chatglm.py", "modeling_chatglm.py", "quantization.py", "tokenization_chatglm.py"):
        shutil.copy(thudm / name, view / name)
    pieces = pad_tokenizer(tokenizer, view / "tokenizer.model", int(config["padded_vocab_size"]))
    print(f"tokenizer: {pieces} pieces + {CHATGLM3_SPECIAL_TOKENS} special tokens", flush=True)
    (view / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    p.add_argument("--chatglm-cpp", required=True, type=Path, help="chatglm.cpp checkout (has chatglm_cpp/convert.py)")
    p.add_argument("--thudm", required=True, type=Path, help="folder with THUDM's chatglm3 *_chatglm.py files")
    p.add_argument("--tokenizer", required=True, type=Path, help="a ChatGLM3 SentencePiece tokenizer.model")
    p.add_argument("--checkpoint", required=True, type=Path, help="our checkpoint folder (config.json + shards)")
    p.add_argument("--out", required=True, type=Path, help="folder for chatglm-ggml-<type>.bin")
    p.add_argument("--types", default="f16,q8_0,q4_0", help="comma-separated GGML types")
    p.add_argument("--prompts", default="16,512", help="also write prompt-N.txt of N ids for chatglm.cpp's main")
    a = p.parse_args()

    # Import the converter module without running its optional package __init__ (which needs the built _C extension).
    sys.path.insert(0, str((a.chatglm_cpp / "chatglm_cpp").resolve()))
    import torch  # noqa: E402
    import convert as cc  # noqa: E402  chatglm.cpp's chatglm_cpp/convert.py
    from transformers import AutoConfig, AutoTokenizer  # noqa: E402

    a.out.mkdir(parents=True, exist_ok=True)
    view = a.out / ".hf-view"
    make_view(a.checkpoint, a.thudm, a.tokenizer, view)
    for n in [int(x) for x in a.prompts.split(",") if x.strip()]:
        got = write_prompt(view / "tokenizer.model", n, a.out / f"prompt-{n}.txt")
        print(f"wrote {a.out / f'prompt-{n}.txt'}: {got} ids with [gMASK] sop", flush=True)
        if got != n:
            raise SystemExit(f"could not make a prompt of exactly {n} ids (got {got})")

    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(str(view), trust_remote_code=True)
    config = AutoConfig.from_pretrained(str(view), trust_remote_code=True)
    model = SimpleNamespace(config=config, state_dict=lambda: LazyStateDict(a.checkpoint))
    print(f"loaded {a.checkpoint} in {time.time() - started:.1f} s", flush=True)
    if "<|system|>" not in tokenizer.tokenizer.special_tokens:
        raise SystemExit("the tokenizer is not a ChatGLM3 one (no <|system|> token): convert.py would not pick "
                         "ChatGLM3Converter either")
    for t in [t.strip() for t in a.types.split(",") if t.strip()]:
        target = a.out / f"chatglm-ggml-{t}.bin"
        tmp = target.with_suffix(".bin.part")
        started = time.time()
        with open(tmp, "wb") as f, torch.no_grad():
            cc.ChatGLM3Converter.convert(f, model, tokenizer, cc.GGMLType[t.upper()])
        os.replace(tmp, target)
        print(f"wrote {target} ({target.stat().st_size / 1e9:.2f} GB) in {time.time() - started:.1f} s", flush=True)
    shutil.rmtree(view)


if __name__ == "__main__":
    main()
