"""Moves every tensor of a safetensors folder to a given offset from 64-byte boundaries, in place.

    python3 benchmarks/peer/shift_safetensors.py DIR [OFFSET]     # OFFSET: 8 (default), even, 0-63

bigmodel's own writer starts the data section on a 64-byte boundary; the Hugging Face writer pads the header to 8
bytes only, so a downloaded checkpoint's tensors usually start 8, 16, ... bytes into a cache line. The side-by-side
runs put the 6B checkpoints there too (benchmarks/side-by-side.sh), so that the kernels are timed on what users
load. Each shard's header gets trailing spaces (valid JSON whitespace) and its data moves up by as many bytes,
rewritten from the end backwards so the file never needs a second copy. Standard library only.
"""

import json
import os
import struct
import sys
from pathlib import Path

CHUNK = 64 << 20


def shift_file(path: Path, offset: int) -> int:
    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = f.read(n)
        json.loads(header)  # refuse anything that is not a safetensors header
        pad = (offset - (8 + n)) % 64
        if pad == 0:
            return 0
        size = os.fstat(f.fileno()).st_size
        start = 8 + n
        end = size
        while end > start:  # move [start, size) up by pad, last chunk first
            lo = max(start, end - CHUNK)
            f.seek(lo)
            block = f.read(end - lo)
            f.seek(lo + pad)
            f.write(block)
            end = lo
        f.seek(0)
        f.write(struct.pack("<Q", n + pad))
        f.write(header + b" " * pad)
    return pad


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    folder = Path(sys.argv[1])
    offset = int(sys.argv[2]) if len(sys.argv) == 3 else 8
    if offset % 2 or not 0 <= offset < 64:
        sys.exit(f"OFFSET must be even and in 0-63, got {offset}")
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        sys.exit(f"no .safetensors files in {folder}")
    for p in shards:
        pad = shift_file(p, offset)
        print(f"{p.name}: data {'moved up by ' + str(pad) + ' bytes' if pad else 'already there'}", flush=True)


if __name__ == "__main__":
    main()
