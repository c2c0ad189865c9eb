"""bigmodel and chatglm.cpp side by side on one checkpoint, in one run (docs/benchmarks.md, "Side by side with
chatglm.cpp"). Called by benchmarks/side-by-side.sh, which documents the layout of the data folder; standard library
only, so it runs on the machine's python3.

For each precision pair (half: bigmodel bf16 in place, an fp16 checkpoint in place and fp16 converted from the bf16
one while loading vs chatglm.cpp f16; int8:
bigmodel int8 from a `bigmodel convert` folder and quantized while loading vs q8_0; int4 likewise vs q4_0) it runs
every setting on the same prompt length and number of greedy tokens, alternating systems, several times; before
each run it syncs, evicts every other setting's files from the page cache (posix_fadvise DONTNEED per file, so no
other process's cache is touched) and reads the setting's own files in ("warm"). Each process is sampled every
10 ms from /proc for its peak anonymous memory. Memory read bandwidth is measured at the start and at the end
(DecodeProgram --memory-only: libtorch summing 1 GiB with the same thread count) and, with --pace, right before
and right after every decode run too: a host whose memory pace changes by the minute then still gets each run
compared with its own floor (the "at each run's own pace" table). Each of our runs is also set against the peer's
run of the same round (the "round by round" table). With --resident every setting's files are read in once and
nothing is evicted, so a round's runs are seconds apart rather than minutes (for settings whose files fit in the
page cache together, e.g. a model cut to fewer layers). Then one long prompt per setting for prompt throughput.
Prints markdown tables (medians [min-max]) and writes every raw run as a JSON line.

bigmodel runs are DecodeProgram children (--child: one row, its result as a JSON line); chatglm.cpp runs are its
`main` in generate mode with --temp 0 (greedy) and -v (its own prompt/output timers).
"""

import argparse
import json
import mmap
import os
import platform
import re
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

GGML_BYTES = {0: (4, 1), 1: (2, 1), 2: (18, 32), 3: (20, 32), 6: (22, 32), 7: (24, 32), 8: (34, 32)}


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------------------- files
def checkpoint_files(folder: Path):
    return sorted(p for p in folder.iterdir() if p.name.endswith(".safetensors"))


def evict(paths):
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths, mode="hugepage"):
    """Reads the files into the page cache; returns (bytes, seconds). mode "hugepage" first drops them and faults
    them in through a mapping advised MADV_HUGEPAGE, so the kernel caches them in 2 MiB folios where it can (what a
    process that maps a cold file with that advice gets, bigmodel included); "read" reads them with read(2), which
    caches readahead-sized folios. Either way both systems' files get the same treatment."""
    total = 0
    started = time.time()
    if mode == "hugepage":
        evict(paths)
        for p in paths:
            with open(p, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    continue
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                    try:
                        m.madvise(14)  # MADV_HUGEPAGE
                    except (OSError, AttributeError):
                        pass
                    for off in range(0, size, 8 << 20):
                        total += len(m[off:off + (8 << 20)])
        return total, time.time() - started
    buf = bytearray(8 << 20)
    view = memoryview(buf)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while True:
                n = f.readinto(view)
                if not n:
                    break
                total += n
    return total, time.time() - started


def ggml_weight_bytes_per_token(path: Path):
    """Bytes of every tensor of a chatglm.cpp GGML file a decode step reads: all of them, the word embedding one
    row. Parsed from the file's tensor headers (the layout chatglm_cpp/convert.py writes)."""
    with open(path, "rb") as f:
        data = f.read(1 << 20)
        if data[:4] != b"ggml":
            raise ValueError(f"{path} is not a chatglm.cpp GGML file")
        pos = 8  # magic, model type
        (version,) = struct.unpack_from("i", data, pos)
        pos += 4
        if version != 2:
            raise ValueError(f"{path}: config version {version}, expected 2")
        pos += 14 * 4 - 4  # the config values after the version (struct 'iiiiiiiififiii')
        (proto_len,) = struct.unpack_from("i", data, pos)
        pos += 4 + proto_len
        size = path.stat().st_size
        total = 0
        while pos < size:
            f.seek(pos)
            head = f.read(4096)
            (name_len,) = struct.unpack_from("i", head, 0)
            name = head[4:4 + name_len].decode()
            q = 4 + name_len
            (ndim,) = struct.unpack_from("i", head, q)
            shape = struct.unpack_from("i" * ndim, head, q + 4)
            (gtype,) = struct.unpack_from("i", head, q + 4 + 4 * ndim)
            q += 8 + 4 * ndim
            elems = 1
            for d in shape:
                elems *= d
            unit, block = GGML_BYTES[gtype]
            nbytes = elems // block * unit
            data_at = (pos + q + 15) // 16 * 16
            total += nbytes // shape[0] if name.endswith("word_embeddings.weight") else nbytes
            pos = data_at + nbytes
        return total


# ------------------------------------------------------------------------------------------------------ processes
class AnonSampler:
    """Peak RssAnon and VmRSS of a process, sampled from /proc every 10 ms until it exits."""

    def __init__(self, pid):
        self.pid = pid
        self.peak_anon = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        path = f"/proc/{self.pid}/status"
        while not self._stop.is_set():
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            self.peak_anon = max(self.peak_anon, int(line.split()[1]) * 1024)
                        elif line.startswith("VmRSS:"):
                            self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
            self._stop.wait(0.01)

    def stop(self):
        self._stop.set()
        self._t.join()


def run_sampled(cmd, env=None, log_file=None):
    launched = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    sampler = AnonSampler(p.pid)
    out, _ = p.communicate()
    ended = time.time()
    sampler.stop()
    if log_file:
        with open(log_file, "a") as f:
            f.write(f"$ {' '.join(map(str, cmd))}\n{out}\n")
    if p.returncode != 0:
        raise RuntimeError(f"exit code {p.returncode}: {' '.join(map(str, cmd))}\n{out[-3000:]}")
    return out, launched, ended, sampler


def run_bigmodel(a, setting, prompt, tokens):
    cmd = ["java"] + a.java_opts.split() + ["-cp", str(a.jar), "io.github.bigmodel.benchmarks.decode.DecodeProgram",
                                            "--child", "--model", str(setting["model"]), "--row", setting["row"],
                                            "--prompt", str(prompt), "--tokens", str(tokens),
                                            "--threads", str(a.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    out, launched, ended, s = run_sampled(cmd, env, a.log)
    line = next((l for l in out.splitlines() if l.startswith("DECODE-RESULT ")), None)
    if line is None:
        raise RuntimeError("no DECODE-RESULT line:\n" + out[-3000:])
    r = json.loads(line[len("DECODE-RESULT "):])
    return {
        "ms_per_token": r["msPerToken"],
        "ttft_start_ms": r["firstTokenEpochMs"] - launched * 1e3,
        "prompt_ms": r["ttftMs"],
        "load_s": r["loadMs"] / 1e3,
        "peak_anon": s.peak_anon,
        "peak_rss": s.peak_rss,
        "bytes_per_token": r["ramBytesPerToken"],
        "prompt_tokens": prompt,
        "output_tokens": r["measuredTokens"],
        "wall_s": ended - launched,
        # how much of the mapped weights the decode read through 2 MiB entries (0 for weights made in memory)
        "file_pmd_mapped": r.get("filePmdMappedBytes", 0),
    }


PEER_LOAD = re.compile(r"within: ([\d.]+) ms")
PEER_PROMPT = re.compile(r"prompt time: ([\d.]+) ms / (\d+) tokens")
PEER_OUTPUT = re.compile(r"output time: ([\d.]+) ms / (\d+) tokens")


def run_peer(a, setting, prompt, tokens):
    prompt_file = a.ggml / f"prompt-{prompt}.txt"
    cmd = [str(a.peer_bin), "-m", str(setting["file"]), "--mode", "generate", "--pp", str(prompt_file),
           "--temp", "0", "--max_new_tokens", str(tokens + 1), "-l", str(prompt + tokens + 16),
           "-c", str(prompt + 16), "-v"]
    out, launched, ended, s = run_sampled(cmd, None, a.log)
    load = PEER_LOAD.search(out)
    pm = PEER_PROMPT.search(out)
    om = PEER_OUTPUT.search(out)
    if not (load and pm and om):
        raise RuntimeError("chatglm.cpp printed no timings:\n" + out[-3000:])
    prompt_ms, n_prompt = float(pm.group(1)), int(pm.group(2))
    output_ms, n_out = float(om.group(1)), int(om.group(2))
    if n_prompt != prompt:
        log(f"WARNING: chatglm.cpp's prompt had {n_prompt} tokens, not {prompt}")
    steps = n_out - 1  # its output timer starts at the first new token: n_out - 1 steps
    return {
        "ms_per_token": output_ms / steps if steps > 0 else float("nan"),
        # From launch to exit minus its decode time: the first token plus the exit (an upper bound).
        "ttft_start_ms": (ended - launched) * 1e3 - output_ms,
        "prompt_ms": prompt_ms,
        "load_s": float(load.group(1)) / 1e3,
        "peak_anon": s.peak_anon,
        "peak_rss": s.peak_rss,
        "bytes_per_token": setting["bytes_per_token"],
        "prompt_tokens": n_prompt,
        "output_tokens": steps,
        "wall_s": ended - launched,
    }


def memory_bandwidth(a):
    cmd = ["java", "-Xmx1g", "-cp", str(a.jar), "io.github.bigmodel.benchmarks.decode.DecodeProgram",
           "--model", str(a.checkpoint), "--memory-only", "--threads", str(a.threads)]
    out, _, _, _ = run_sampled(cmd, dict(os.environ, OMP_NUM_THREADS=str(a.threads)), a.log)
    line = next(l for l in out.splitlines() if l.startswith("MEMORY-BANDWIDTH "))
    return json.loads(line[len("MEMORY-BANDWIDTH "):])


# ---------------------------------------------------------------------------------------------------------- plan
def settings(a):
    ckpt_files = checkpoint_files(a.checkpoint)
    out = []

    def ours(pair, key, label, row, model, repeats, while_loading=False):
        if model is None or not (model / "config.json").exists():
            log(f"skipping {label}: no folder {model}")
            return
        out.append({"pair": pair, "system": "bigmodel", "key": key, "label": label, "row": row, "model": model,
                    "files": checkpoint_files(model), "repeats": repeats, "while_loading": while_loading})

    def peer(pair, key, label, name):
        f = a.ggml / name
        if not f.exists():
            log(f"skipping {label}: no file {f}")
            return
        out.append({"pair": pair, "system": "chatglm.cpp", "key": key, "label": label, "file": f, "files": [f],
                    "repeats": a.repeats, "bytes_per_token": ggml_weight_bytes_per_token(f)})

    pairs = a.pairs.split(",")
    if "half" in pairs:
        ours("half", "bf16", "bigmodel bf16, in place (mapped)", "a", a.checkpoint, a.repeats)
        ours("half", "fp16-ckpt", "bigmodel fp16 checkpoint, in place (mapped)", "fp16", a.fp16, a.repeats)
        ours("half", "fp16", "bigmodel fp16, converted while loading", "fp16", a.checkpoint, a.load_repeats, True)
        peer("half", "f16", "chatglm.cpp f16", "chatglm-ggml-f16.bin")
    if "int8" in pairs:
        ours("int8", "int8", "bigmodel int8, `bigmodel convert` folder", "c", a.int8, a.repeats)
        ours("int8", "int8-load", "bigmodel int8, quantized while loading", "c", a.checkpoint, a.load_repeats, True)
        peer("int8", "q8_0", "chatglm.cpp q8_0", "chatglm-ggml-q8_0.bin")
    if "int4" in pairs:
        ours("int4", "int4", "bigmodel int4, `bigmodel convert` folder", "d", a.int4, a.repeats)
        ours("int4", "int4-load", "bigmodel int4, quantized while loading", "d", a.checkpoint, a.load_repeats, True)
        peer("int4", "q4_0", "chatglm.cpp q4_0", "chatglm-ggml-q4_0.bin")
    every_file = {p for s in out for p in s["files"]} | set(ckpt_files)
    if a.settings:
        keys = a.settings.split(",")
        unknown = sorted(set(keys) - {s["key"] for s in out})
        if unknown:
            raise SystemExit(f"--settings: no setting {', '.join(unknown)} in the pairs {a.pairs} "
                             f"(there are: {', '.join(s['key'] for s in out)})")
        out = [s for s in out if s["key"] in keys]
    for s in out:
        s["others"] = sorted(every_file - set(s["files"]))
    return out


def one_run(a, s, prompt, tokens, kind, rnd=None):
    if a.resident:
        warmed, warm_s = 0, 0.0  # every setting's files stay in the page cache (read in once: resident_start)
    else:
        os.sync()
        evict(s["others"])
        warmed, warm_s = warm(s["files"], a.warm)
    fn = run_bigmodel if s["system"] == "bigmodel" else run_peer
    pace = kind == "decode" and a.pace
    pace_before = memory_bandwidth(a)["torch"] if pace else None
    r = fn(a, s, prompt, tokens)
    if pace:
        r.update({"pace_before": pace_before, "pace_after": memory_bandwidth(a)["torch"]})
    r.update({"key": s["key"], "pair": s["pair"], "system": s["system"], "kind": kind, "round": rnd,
              "warm_bytes": warmed, "warm_s": warm_s, "loadavg": os.getloadavg()[0], "time": time.time()})
    with open(a.jsonl, "a") as f:
        f.write(json.dumps(r) + "\n")
    log(f"  {kind} {s['key']:<10} {r['ms_per_token']:8.1f} ms/token  TTFT from start {r['ttft_start_ms']:8.0f} ms"
        f"  prompt {r['prompt_ms']:8.0f} ms  load {r['load_s']:7.2f} s  peak anon {r['peak_anon'] / 2**30:6.2f} GiB"
        f"  (warmed {warmed / 1e9:.1f} GB in {warm_s:.1f} s, load avg {r['loadavg']:.1f}"
        + (f", {r['file_pmd_mapped'] / 1e9:.1f} GB mapped in 2 MiB entries" if r.get("file_pmd_mapped") else "")
        + (f", memory {r['pace_before'] / 1e9:.1f} / {r['pace_after'] / 1e9:.1f} GB/s" if pace else "")
        + ")")
    return r


def resident_start(a, plan):
    """--resident: every setting's files read into the page cache once, all others evicted; refused unless they fit
    with room for the processes (a converting-while-loading run's copies, chatglm.cpp's buffers) beside them."""
    files = sorted({p for s in plan for p in s["files"]})
    total = sum(p.stat().st_size for p in files)
    room = 3 << 30
    if any(s.get("while_loading") for s in plan):
        room += sum(p.stat().st_size for p in checkpoint_files(a.checkpoint))
    available = mem_available()
    if total + room > available:
        raise SystemExit(f"--resident: the settings' files ({total / 2**30:.1f} GiB) and room for the runs "
                         f"({room / 2**30:.1f} GiB) exceed the memory available ({available / 2**30:.1f} GiB); "
                         f"choose fewer settings (--settings) or a smaller model (GEN_ARGS=\"--set num_layers=N\")")
    os.sync()
    evict(sorted({p for s in plan for p in s["others"]} - set(files)))
    warmed, secs = warm(files, a.warm)
    log(f"resident: {warmed / 1e9:.1f} GB of the settings' files read in once ({secs:.1f} s); no eviction between runs")


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


# -------------------------------------------------------------------------------------------------------- report
def run_pace(r):
    """A decode run's memory bandwidth: the mean of the reads right before and right after it (bytes/s)."""
    return (r["pace_before"] + r["pace_after"]) / 2


def run_ratio_to_floor(r):
    """A decode run's ms/token over its own floor: its weight bytes at its own pace."""
    return r["ms_per_token"] / (r["bytes_per_token"] / run_pace(r) * 1e3)


def paired_rows(plan, results):
    """For each of our settings with a peer in its pair: the peer's ms/token over ours round by round, and the
    peer's fastest run over our fastest, both over the rounds the setting ran in (one for converting while loading)."""
    out = []
    decode = [r for r in results if r["kind"] == "decode" and r.get("round") is not None]
    for pair in ("half", "int8", "int4"):
        peer = next((s for s in plan if s["pair"] == pair and s["system"] == "chatglm.cpp"), None)
        if peer is None:
            continue
        peer_by_round = {r["round"]: r["ms_per_token"] for r in decode if r["key"] == peer["key"]}
        for s in plan:
            if s["pair"] != pair or s is peer:
                continue
            ours = {r["round"]: r["ms_per_token"] for r in decode if r["key"] == s["key"]}
            rounds = sorted(set(ours) & set(peer_by_round))
            if not rounds:
                continue
            ratios = [peer_by_round[n] / ours[n] for n in rounds]
            out.append((pair, s, ratios, min(peer_by_round[n] for n in rounds) / min(ours[n] for n in rounds)))
    return out


def mmm(values, fmt="{:.0f}"):
    v = [x for x in values if x == x]
    if not v:
        return "-"
    med = statistics.median(v)
    if len(v) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} [{fmt.format(min(v))}-{fmt.format(max(v))}]"


def report(a, plan, results, bw_before, bw_after, started):
    bw = statistics.median([bw_before["torch"], bw_after["torch"]])
    lines = []
    w = lines.append
    w(f"Side by side, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {platform.node()}: "
      f"{os.cpu_count()} CPUs, {a.threads} threads each, prompt {a.prompt} tokens, {a.tokens} greedy tokens, "
      f"{a.repeats} runs per setting ({a.load_repeats} for converting while loading), page cache: "
      + ("every setting's files resident, read in once at the start" if a.resident else
         "other settings' files evicted and own files read in before each run") +
      f" ({'dropped, then faulted in through a MADV_HUGEPAGE mapping' if a.warm == 'hugepage' else 'read(2)'}); "
      f"{(time.time() - started) / 60:.1f} min in all.")
    w("")
    w(f"Memory read (libtorch, {a.threads} threads): {bw_before['torch'] / 1e9:.1f} GB/s before, "
      f"{bw_after['torch'] / 1e9:.1f} GB/s after; floors use {bw / 1e9:.1f} GB/s.")
    w(f"Load average at the start {a.loadavg_start:.1f}, at the end {os.getloadavg()[0]:.1f}.")
    w(f"Peer: {a.peer_commits}")
    w("")
    w("| pair | setting | ms/token, median [min-max] | speed vs chatglm.cpp (its ms / ours) | weights/token | "
      "floor (ms) | ratio to floor | TTFT from start (ms) | load (s) | peak anon (GiB) | runs |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for pair in ("half", "int8", "int4"):
        members = [s for s in plan if s["pair"] == pair]
        if not members:
            continue
        peer = next((s for s in members if s["system"] == "chatglm.cpp"), None)
        peer_ms = None
        if peer:
            pr = [r["ms_per_token"] for r in results if r["key"] == peer["key"] and r["kind"] == "decode"]
            peer_ms = statistics.median(pr) if pr else None
        for s in members:
            rs = [r for r in results if r["key"] == s["key"] and r["kind"] == "decode"]
            if not rs:
                continue
            ms = [r["ms_per_token"] for r in rs]
            med = statistics.median(ms)
            bpt = rs[0]["bytes_per_token"]
            floor = bpt / bw * 1e3
            speed = "-" if s["system"] == "chatglm.cpp" or not peer_ms else f"{peer_ms / med:.2f}x"
            w(f"| {pair} | {s['label']} | {mmm(ms)} | {speed} | {bpt / 1e9:.2f} GB | {floor:.0f} | "
              f"{med / floor:.2f}x | {mmm([r['ttft_start_ms'] for r in rs])} | "
              f"{mmm([r['load_s'] for r in rs], '{:.2f}')} | {mmm([r['peak_anon'] / 2**30 for r in rs], '{:.2f}')} | "
              f"{len(rs)} |")
    paced = [r for r in results if r["kind"] == "decode" and r.get("pace_before")]
    if paced:
        w("")
        w("At each run's own pace (memory read right before and right after the run, their mean as the run's "
          "bandwidth; a run's floor is its weight bytes at that bandwidth; speed vs chatglm.cpp is the peer's "
          "median ratio to its floors over ours):")
        w("")
        w("| pair | setting | memory, GB/s | ratio to its own floor | speed vs chatglm.cpp at equal pace | runs |")
        w("|---|---|---|---|---|---|")
        by_key = {}
        for r in paced:
            by_key.setdefault(r["key"], []).append(r)
        for pair in ("half", "int8", "int4"):
            members = [s for s in plan if s["pair"] == pair and s["key"] in by_key]
            peer = next((s for s in members if s["system"] == "chatglm.cpp"), None)
            peer_ratio = statistics.median(map(run_ratio_to_floor, by_key[peer["key"]])) if peer else None
            for s in members:
                rs = by_key[s["key"]]
                ratios = [run_ratio_to_floor(r) for r in rs]
                vs = "-" if s is peer or peer is None else f"{peer_ratio / statistics.median(ratios):.2f}x"
                w(f"| {pair} | {s['label']} | {mmm([run_pace(r) / 1e9 for r in rs], '{:.1f}')} | "
                  f"{mmm(ratios, '{:.2f}')} | {vs} | {len(rs)} |")
    paired = paired_rows(plan, results)
    if paired:
        w("")
        w("Round by round (each of our runs against the peer's run of the same round: minutes apart, or seconds with "
          "--resident, closer in time than the runs behind the medians; speed = its ms/token over ours; the fastest "
          "runs over the same rounds):")
        w("")
        w("| pair | setting | speed vs chatglm.cpp per round, median [min-max] | rounds at >= 1.1x | "
          "fastest run vs its fastest | rounds |")
        w("|---|---|---|---|---|---|")
        for pair, s, ratios, fastest in paired:
            w(f"| {pair} | {s['label']} | {mmm(ratios, '{:.2f}x')} | {sum(x >= 1.1 for x in ratios)} of "
              f"{len(ratios)} | {fastest:.2f}x | {len(ratios)} |")
    long = [r for r in results if r["kind"] == "prompt"]
    if long:
        w("")
        w(f"Prompt throughput, one {a.long_prompt}-token prompt per setting (page cache warm as above):")
        w("")
        w("| pair | setting | prompt tokens | prompt time (ms) | tokens/s | vs chatglm.cpp (ours / its tokens/s) |")
        w("|---|---|---|---|---|---|")
        by_key = {r["key"]: r for r in long}
        for s in plan:
            r = by_key.get(s["key"])
            if r is None:
                continue
            tps = r["prompt_tokens"] / (r["prompt_ms"] / 1e3)
            peer = next((p for p in plan if p["pair"] == s["pair"] and p["system"] == "chatglm.cpp"), None)
            vs = "-"
            if s["system"] == "bigmodel" and peer and peer["key"] in by_key:
                pr = by_key[peer["key"]]
                vs = f"{tps / (pr['prompt_tokens'] / (pr['prompt_ms'] / 1e3)):.2f}x"
            w(f"| {s['pair']} | {s['label']} | {r['prompt_tokens']} | {r['prompt_ms']:.0f} | {tps:.1f} | {vs} |")
    w("")
    w("ms/token: mean of the steps after the first token (bigmodel: DecodeProgram; chatglm.cpp: its output timer "
      "over n-1 steps). TTFT from start: bigmodel from launching the JVM to the first token chosen; chatglm.cpp "
      "the process's wall time minus its decode time (includes its exit: an upper bound). Floor: weight bytes one "
      "token reads (the word embedding one row) / the memory bandwidth. Peak anon: largest RssAnon sampled every "
      "10 ms. Load: bigmodel loadCheckpointAndDispatch; chatglm.cpp its own load timer.")
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    with open(a.out, "w") as f:
        f.write(text + "\n")


# ---------------------------------------------------------------------------------------------------------- main
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--fp16", type=Path, help="a float16 checkpoint of the same shapes (GenerateCheckpoint --dtype "
                   "fp16; its tensors 8-byte aligned, as Hugging Face writes them)")
    p.add_argument("--int8", type=Path)
    p.add_argument("--int4", type=Path)
    p.add_argument("--ggml", type=Path, required=True, help="chatglm-ggml-{f16,q8_0,q4_0}.bin, prompt-N.txt")
    p.add_argument("--peer-bin", type=Path, required=True)
    p.add_argument("--peer-commits", default="")
    p.add_argument("--jar", type=Path, required=True)
    p.add_argument("--java-opts", default="-Xmx1g")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--load-repeats", type=int, default=1)
    p.add_argument("--long-prompt", type=int, default=512, help="0: no prompt-throughput runs")
    p.add_argument("--pairs", default="half,int8,int4")
    p.add_argument("--pace", action="store_true", help="measure the memory read right before and after every decode "
                   "run (about 3 s each) and report each run against its own floor")
    p.add_argument("--warm", choices=["hugepage", "read"], default="hugepage",
                   help="how each run's own files are put in the page cache (see warm())")
    p.add_argument("--settings", default="", help="only these settings of the pairs, by key (bf16, fp16-ckpt, fp16, "
                   "f16, int8, int8-load, q8_0, int4, int4-load, q4_0); default all")
    p.add_argument("--resident", action="store_true", help="read every setting's files into the page cache once and "
                   "evict nothing between runs, so a round's runs are seconds apart; refused unless they all fit")
    p.add_argument("--out", type=Path, required=True, help="markdown report; raw runs go to OUT.jsonl, logs OUT.log")
    a = p.parse_args()
    a.jsonl = a.out.with_suffix(".jsonl")
    a.log = a.out.with_suffix(".log")
    for f in (a.jsonl, a.log):
        if f.exists():
            f.unlink()
    a.loadavg_start = os.getloadavg()[0]
    started = time.time()

    plan = settings(a)
    if not plan:
        raise SystemExit("nothing to run")
    if a.resident:
        resident_start(a, plan)
    log(f"memory bandwidth ({a.threads} threads)")
    bw_before = memory_bandwidth(a)
    log(f"  {bw_before['torch'] / 1e9:.1f} GB/s")
    results = []
    rounds = max(s["repeats"] for s in plan)
    for rnd in range(rounds):
        for pair in ("half", "int8", "int4"):
            members = [s for s in plan if s["pair"] == pair and s["repeats"] > rnd]
            # Alternate which system goes first from round to round.
            members.sort(key=lambda s: (s["system"] == "chatglm.cpp") == (rnd % 2 == 0))
            for s in members:
                results.append(one_run(a, s, a.prompt, a.tokens, "decode", rnd))
    if a.long_prompt > 0:
        log(f"prompt throughput, {a.long_prompt}-token prompt")
        for s in plan:
            if not s.get("while_loading"):
                results.append(one_run(a, s, a.long_prompt, 1, "prompt"))
    log("memory bandwidth again")
    bw_after = memory_bandwidth(a)
    log(f"  {bw_after['torch'] / 1e9:.1f} GB/s")
    report(a, plan, results, bw_before, bw_after, started)


if __name__ == "__main__":
    sys.exit(main())
