#!/usr/bin/env bash
# Converts one of our ChatGLM3 checkpoints (e.g. the bf16 one benchmarks/run-6b.sh's GenerateCheckpoint writes) into
# chatglm.cpp's GGML files with chatglm.cpp's own converter (chatglm_cpp/convert.py, through
# benchmarks/peer/chatglm_cpp_convert.py, which says why it does not run convert.py's main), and writes the prompt
# files the side-by-side run gives chatglm.cpp's main.
#
#   benchmarks/peer/convert-for-chatglm-cpp.sh CHECKPOINT_DIR OUT_DIR
#
# Writes OUT_DIR/chatglm-ggml-{f16,q8_0,q4_0}.bin (TYPES) and OUT_DIR/prompt-{16,512}.txt (PROMPTS); one tensor in
# memory at a time (a few hundred MB), about 12.5 + 6.6 + 3.5 GB of disk for chatglm3-6b shapes.
#
# Environment:
#   PEER_SRC   chatglm.cpp checkout (see build-chatglm-cpp.sh), required
#   THUDM_DIR  folder with THUDM's chatglm3-6b configuration_chatglm.py, modeling_chatglm.py, quantization.py and
#              tokenization_chatglm.py (the Hugging Face repo THUDM/chatglm3-6b, or its mirror
#              github.com/czk1997/chatglm3-copy at 456aa87 as test-resources/reference records), required
#   TOKENIZER  a ChatGLM3 SentencePiece model (default: the stand-in test-resources/reference/tokenizer/tokenizer.model;
#              random weights make the real one pointless, and the text is only timed)
#   PYTHON     a python with torch, transformers, sentencepiece, safetensors, tabulate and tqdm (default: python3),
#              e.g. python3 -m venv V && V/bin/pip install torch transformers sentencepiece safetensors tabulate tqdm
#   TYPES (f16,q8_0,q4_0), PROMPTS (16,512)
set -euo pipefail

if [[ $# -ne 2 ]]; then
  sed -n '2,22p' "$0"
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
: "${PEER_SRC:?set PEER_SRC to a chatglm.cpp checkout}"
: "${THUDM_DIR:?set THUDM_DIR to a folder with THUDM chatglm3-6b *_chatglm.py files}"
TOKENIZER=${TOKENIZER:-$ROOT/test-resources/reference/tokenizer/tokenizer.model}
PYTHON=${PYTHON:-python3}
TYPES=${TYPES:-f16,q8_0,q4_0}
PROMPTS=${PROMPTS:-16,512}

exec nice -n "${NICE:-10}" "$PYTHON" "$ROOT/benchmarks/peer/chatglm_cpp_convert.py" --chatglm-cpp "$PEER_SRC" \
  --thudm "$THUDM_DIR" --tokenizer "$TOKENIZER" --checkpoint "$1" --out "$2" --types "$TYPES" --prompts "$PROMPTS"
