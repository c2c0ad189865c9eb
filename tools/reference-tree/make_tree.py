#!/usr/bin/python3
"""Writes a reference tree in the layout of test-resources/reference, with other sizes, seeds and special ids.

The expected outputs are computed by THUDM's own modeling files (given by path, never shipped here), imported
unmodified against the small `transformers` stand-in in shim/. See README.md next to this file.

    /usr/bin/python3 tools/reference-tree/make_tree.py --official-glm3 DIR3 --official-glm1 DIR1 \
        --public test-resources/reference --out /tmp/tree1
"""
import argparse
import copy
import hashlib
import importlib
import json
import os
import random
import shutil
import struct
import sys
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))

# The files each family imports and the git blob ids of the commits the public tree was made from.
OFFICIAL = {
    "glm3": {
        "model": "THUDM/chatglm3-6b (ChatGLM3-6B; same modeling as ChatGLM2-6B)",
        "mirror_repo": "github:czk1997/chatglm3-copy",
        "mirror_commit": "456aa875cf1f46623006edaa23103774ea9c0eae",
        "blobs": {
            "configuration_chatglm.py": "35600185f5a26951081de0f3a41a913eaf06af99",
            "modeling_chatglm.py": "dc5c662b87ecce81078daf3a8a8b7c64d74b2d21",
            "tokenization_chatglm.py": "862e8f9a75bc874741cababc3b352cbbfe3611ad",
        },
    },
    "glm1": {
        "model": "THUDM/chatglm-6b (ChatGLM-6B, v1)",
        "mirror_repo": "github:greensheng/chatglm-6b",
        "mirror_commit": "8b7d33596d18c5e83e2da052d05ca4db02e60620",
        "blobs": {
            "configuration_chatglm.py": "78f3425d5f63ad43f31b092b8d62b44d28d52f15",
            "modeling_chatglm.py": "4bef958fb33db5f65827ad44b1370656bd8d2f1b",
            "tokenization_chatglm.py": "69ee85c80d1ea3402d8f4d5281a63643aecf71b2",
        },
    },
}

RUNTIME_PATCHES = [
    "transformers: a minimal stand-in package (tools/reference-tree/shim/transformers) supplies the names the "
    "THUDM files import; it adds no model math",
    "sentencepiece: a stub module so tokenization_chatglm.py imports; only the tokenizers' pure-Python _pad "
    "(left padding, attention mask, position ids) is called",
    "torch.baddbmm: with beta=0 it is called on a zeroed input and a zeroed output buffer, so uninitialised memory "
    "is ignored as documented (torch 1.13 CPU leaks NaN/inf from it for small products); bit-identical to a "
    "correct kernel",
]

GLM3_SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>",
                 "<|observation|>"]
GLM1_SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>"]


# ---------------------------------------------------------------------------------------------------------------
# Importing the official code
# ---------------------------------------------------------------------------------------------------------------

def git_blob_id(path):
    data = open(path, "rb").read()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def import_official(family, directory, work):
    """Copies the three official files into a package of their own (they import each other relatively)."""
    info = OFFICIAL[family]
    package = "official_" + family
    target = os.path.join(work, package)
    os.makedirs(target, exist_ok=True)
    open(os.path.join(target, "__init__.py"), "w").close()
    verified = True
    files = {}
    for name, blob in info["blobs"].items():
        source = os.path.join(directory, name)
        found = git_blob_id(source)
        files[name] = {"git_blob": found}
        if found != blob:
            verified = False
            print("warning: %s has git blob %s, the public tree used %s" % (source, found, blob), file=sys.stderr)
        shutil.copyfile(source, os.path.join(target, name))
    if work not in sys.path:
        sys.path.insert(0, work)
    modeling = importlib.import_module(package + ".modeling_chatglm")
    configuration = importlib.import_module(package + ".configuration_chatglm")
    tokenization = importlib.import_module(package + ".tokenization_chatglm")
    source = {"model": info["model"], "mirror_repo": info["mirror_repo"], "mirror_commit": info["mirror_commit"],
              "files": files, "files_verified_by_git_blob_id": verified}
    return modeling, configuration, tokenization, source


def patch_baddbmm():
    """torch 1.13's CPU kernel for small products reads its output buffer even when beta=0; hand it zeros."""
    original = torch.baddbmm

    def baddbmm(input, batch1, batch2, *, beta=1, alpha=1, out=None):
        if beta == 0 and out is None:
            shape = (batch1.shape[0], batch1.shape[1], batch2.shape[2])
            zeros = torch.zeros(shape, dtype=batch1.dtype, device=batch1.device)
            return original(zeros, batch1, batch2, beta=beta, alpha=alpha, out=torch.zeros_like(zeros))
        if out is None:
            return original(input, batch1, batch2, beta=beta, alpha=alpha)
        return original(input, batch1, batch2, beta=beta, alpha=alpha, out=out)

    torch.baddbmm = baddbmm


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------

ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}


def write_safetensors(path, tensors):
    """Header length, compact JSON padded with spaces to an 8-byte boundary, raw bytes in sorted name order."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        if t.dtype == torch.bool:
            t = t.to(torch.int64)
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        if t.dtype in (torch.bfloat16,):
            data = t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def tensor_bytes(t):
    return t.numel() * t.element_size()


def split_shards(names, weights, count):
    """Consecutive runs of the state_dict order, cut where the running size passes k/count of the total."""
    total = sum(tensor_bytes(weights[n]) for n in names)
    shards = [[] for _ in range(count)]
    running = 0
    for n in names:
        k = min(count - 1, int(running * count // total))
        shards[k].append(n)
        running += tensor_bytes(weights[n])
    return [s for s in shards if s]


def write_checkpoint(folder, names, weights, shard_count, with_shards):
    write_safetensors(os.path.join(folder, "model.safetensors"), weights)
    if not with_shards:
        return None
    shards = split_shards(names, weights, shard_count)
    n = len(shards)
    total = sum(tensor_bytes(t) for t in weights.values())
    st_map, bin_map, listing = {}, {}, {}
    for k, shard in enumerate(shards, 1):
        st = "model-%05d-of-%05d.safetensors" % (k, n)
        pt = "pytorch_model-%05d-of-%05d.bin" % (k, n)
        write_safetensors(os.path.join(folder, st), {name: weights[name] for name in shard})
        # Every tensor owns its storage, so a reader needs no view logic.
        torch.save({name: weights[name].clone() for name in shard}, os.path.join(folder, pt))
        for name in shard:
            st_map[name] = st
            bin_map[name] = pt
        listing[st] = shard
    for index, mapping in (("model.safetensors.index.json", st_map), ("pytorch_model.bin.index.json", bin_map)):
        with open(os.path.join(folder, index), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(mapping.items()))}, f, indent=2)
            f.write("\n")
    return listing


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------

def role_of(name):
    if name.endswith("inv_freq"):
        return "inv_freq"
    if name.endswith("word_embeddings.weight"):
        return "word_embeddings"
    if name == "lm_head.weight":
        return "tied"
    if name.endswith("output_layer.weight"):
        return "output_layer"
    if "layernorm" in name:
        return "norm_" + name.rsplit(".", 1)[1]
    if "query_key_value" in name:
        return "qkv_" + name.rsplit(".", 1)[1]
    if "mlp" in name:
        return "mlp_" + name.rsplit(".", 1)[1]
    if ".dense." in name:
        return "attn_dense_" + name.rsplit(".", 1)[1]
    raise ValueError("no init role for " + name)


def draw_weights(model, init, seed, round_to_half):
    """One generator, tensors drawn in state_dict order; buffers kept as the official constructor made them."""
    g = torch.Generator().manual_seed(seed)
    weights = {}
    state = model.state_dict()
    for name, t in state.items():
        role = role_of(name)
        if role == "inv_freq":
            weights[name] = t.detach().clone().float()
            continue
        if role == "tied":
            continue
        mean, std = init[role]
        w = torch.randn(tuple(t.shape), generator=g, dtype=torch.float32) * std + mean
        if round_to_half:
            w = w.half().float()
        weights[name] = w
    if "lm_head.weight" in state:
        weights["lm_head.weight"] = weights["transformer.word_embeddings.weight"].clone()
    return list(state.keys()), weights


# ---------------------------------------------------------------------------------------------------------------
# Running the official model
# ---------------------------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, family, modeling, configuration, tokenization, config_json, weights, dtype=torch.float32):
        self.family = family
        cfg = dict(config_json)
        cfg["torch_dtype"] = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float64: "float64",
                              torch.float16: "float16"}[dtype]
        self.config = configuration.ChatGLMConfig(**cfg)
        model = modeling.ChatGLMForConditionalGeneration(self.config, empty_init=True)
        # ChatGLM-6B allocates fp16 parameters whatever the config says; its CPU recipe is .float().
        model = model.to(dtype) if family == "glm1" else model
        model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True)
        self.model = model.eval()
        self.tokenization = tokenization
        self.recorded = []
        inner = model.transformer
        for method in ("get_masks", "get_position_ids"):
            original = getattr(inner, method)

            def recorder(*args, _original=original, _name=method, **kwargs):
                out = _original(*args, **kwargs)
                self.recorded.append((_name, out))
                return out

            setattr(inner, method, recorder)

    def __call__(self, **kwargs):
        self.recorded = []
        with torch.no_grad():
            return self.model(return_dict=True, **kwargs)

    def last_recorded(self, name):
        found = [out for n, out in self.recorded if n == name]
        return found[-1] if found else None

    def greedy(self, input_ids, steps, model_kwargs):
        """transformers 4.30 greedy search driven through the model's own generation hooks; EOS does not stop."""
        model_kwargs = dict(model_kwargs)
        model_kwargs["use_cache"] = True
        step_logits, step_positions = [], []
        with torch.no_grad():
            for _ in range(steps):
                inputs = self.model.prepare_inputs_for_generation(input_ids, **model_kwargs)
                step_positions.append(inputs.get("position_ids"))
                out = self.model(return_dict=True, **inputs)
                logits = out.logits[:, -1, :].float()
                step_logits.append(logits)
                nxt = torch.argmax(logits, dim=-1)
                input_ids = torch.cat([input_ids, nxt[:, None]], dim=-1)
                model_kwargs = self.model._update_model_kwargs_for_generation(out, model_kwargs,
                                                                              is_encoder_decoder=False)
        return input_ids, torch.stack(step_logits, dim=1), step_positions


def margin(step_logits):
    top = torch.topk(step_logits.double(), 2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


def pad_batch(family, tokenization, rows, special):
    """The official tokenizer's _pad, called on a plain object carrying the attributes it reads."""
    strategy = sys.modules["transformers.utils"].PaddingStrategy.MAX_LENGTH
    width = max(len(r) for r in rows)
    if family == "glm3":
        fake = types.SimpleNamespace(padding_side="left", model_input_names=["input_ids"],
                                     pad_token_id=special["<pad>"])
    else:
        fake = types.SimpleNamespace(padding_side="left", model_input_names=["input_ids"],
                                     pad_token_id=special["<pad>"], bos_token="<sop>", mask_token="[MASK]",
                                     gmask_token="[gMASK]", sp_tokenizer=special)
    padded = [tokenization.ChatGLMTokenizer._pad(fake, {"input_ids": list(r)}, max_length=width,
                                                 padding_strategy=strategy) for r in rows]
    ids = torch.tensor([p["input_ids"] for p in padded], dtype=torch.long)
    import numpy as np
    mask = torch.from_numpy(np.stack([np.asarray(p["attention_mask"]) for p in padded]))
    pos = torch.from_numpy(np.stack([np.asarray(p["position_ids"]) for p in padded])).long()
    if family == "glm1":
        mask = mask.bool()
    else:
        mask = mask.long()
    return ids, mask, pos


# ---------------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------------

def draw_prompts(family, special, first_text, last_text, rng, lengths):
    t = lambda n: [rng.randint(first_text, last_text) for _ in range(n)]
    if family == "glm3":
        prefix = [special["[gMASK]"], special["sop"]]
        chat = (prefix + [special["<|system|>"]] + t(lengths["system"]) + [special["<|user|>"]]
                + t(lengths["user"]) + [special["<|assistant|>"]])
        return {
            "prompt_short": prefix + t(lengths["short"]),
            "chat_prompt": chat,
            "long": prefix + t(lengths["long"]),
            "kv_step": t(1), "kv_chunk": t(3),
            "batch": [prefix + t(lengths["batch_a"]),
                      prefix + [special["<|user|>"]] + t(lengths["batch_b"]) + [special["<|assistant|>"]]],
        }
    suffix = [special["[gMASK]"], special["<sop>"]]
    half = lengths["short"] // 2
    return {
        "prompt_short": t(lengths["short"]) + suffix,
        "mask_token": t(half) + [special["[MASK]"]] + t(lengths["short"] - half) + suffix,
        "long": t(lengths["long"]) + suffix,
        "continuation": t(lengths["short"]) + suffix + t(4),
        "kv_steps": t(2),
        "batch": [t(lengths["batch_a"]) + suffix, t(lengths["batch_b"]) + suffix],
    }


def check_batch_padded(prompts):
    rows = prompts["batch"]
    if len(rows[0]) == len(rows[1]):
        raise SystemExit("the two batch prompts have the same length (%d): choose batch_a/batch_b lengths that "
                         "make one of them padded" % len(rows[0]))


def ids_tensor(ids):
    return torch.tensor([ids], dtype=torch.long)


def run_glm3_cases(runner, prompts, special, greedy_steps, batch_steps):
    tensors, cases, checks = {}, [], {"margins": [], "kv_diff": 0.0, "pad_diff": 0.0, "logits": []}

    def fwd(name, ids):
        out = runner(input_ids=ids_tensor(ids))
        tensors[name + "/input_ids"] = ids_tensor(ids)
        tensors[name + "/logits"] = out.logits.float()
        checks["logits"].append(name + "/logits")
        cases.append({"name": name, "kind": "forward", "input_ids": ids, "position_ids": list(range(len(ids))),
                      "attention_mask": None,
                      "tensors": {"input_ids": name + "/input_ids", "logits": name + "/logits"},
                      "logits_shape": list(out.logits.shape)})

    fwd("forward/prompt_short", prompts["prompt_short"])
    fwd("forward/chat_prompt", prompts["chat_prompt"])
    fwd("forward/long", prompts["long"])

    # kv: prefix with explicit positions and the cache, one token, then a three-token chunk.
    name = "kv/chat_prompt"
    prefix = prompts["chat_prompt"]
    p = len(prefix)
    out = runner(input_ids=ids_tensor(prefix), position_ids=torch.arange(p)[None], use_cache=True)
    tensors[name + "/prefix_logits"] = out.logits.float()
    tensors[name + "/prefix_layer0_key"] = out.past_key_values[0][0].float()
    tensors[name + "/prefix_layer0_value"] = out.past_key_values[0][1].float()
    step = runner(input_ids=ids_tensor(prompts["kv_step"]), position_ids=torch.tensor([[p]]),
                  past_key_values=out.past_key_values, use_cache=True)
    tensors[name + "/step_logits"] = step.logits.float()
    chunk_pos = [p + 1, p + 2, p + 3]
    chunk = runner(input_ids=ids_tensor(prompts["kv_chunk"]), position_ids=torch.tensor([chunk_pos]),
                   past_key_values=step.past_key_values, use_cache=True)
    tensors[name + "/chunk_logits"] = chunk.logits.float()
    full_ids = prefix + prompts["kv_step"] + prompts["kv_chunk"]
    full = runner(input_ids=ids_tensor(full_ids)).logits.float()
    tensors[name + "/full_logits"] = full
    cached = torch.cat([tensors[name + "/prefix_logits"], step.logits.float(), chunk.logits.float()], dim=1)
    kv_diff = float((cached - full).abs().max())
    checks["kv_diff"] = kv_diff
    checks["logits"] += [name + "/" + k for k in ("prefix_logits", "step_logits", "chunk_logits", "full_logits")]
    cases.append({"name": name, "kind": "kv_cache", "prefix_ids": prefix, "prefix_position_ids": list(range(p)),
                  "steps": [{"input_ids": prompts["kv_step"], "position_ids": [p], "attention_mask": None,
                             "logits": name + "/step_logits"},
                            {"input_ids": prompts["kv_chunk"], "position_ids": chunk_pos, "attention_mask": None,
                             "logits": name + "/chunk_logits",
                             "note": "several new tokens with a cache: the official model builds a mask that sees "
                                     "the whole cache and is causal inside the chunk (get_masks with past_length)"}],
                  "full_ids": full_ids,
                  "tensors": {k: name + "/" + k for k in ("prefix_logits", "full_logits", "prefix_layer0_key",
                                                         "prefix_layer0_value")},
                  "cache_layout": "per layer (key, value), each [seq, batch, multi_query_group_num, kv_channels]; "
                                  "keys stored after rotary",
                  "max_abs_diff_vs_full_forward": kv_diff})

    for case in ("prompt_short", "chat_prompt"):
        name = "greedy/" + case
        prompt = prompts[case]
        ids = ids_tensor(prompt)
        output, step_logits, _ = runner.greedy(ids, greedy_steps, {"attention_mask": torch.ones_like(ids)})
        m = margin(step_logits)
        checks["margins"].append(m)
        tensors[name + "/prompt_ids"] = ids
        tensors[name + "/output_ids"] = output
        tensors[name + "/step_logits"] = step_logits
        checks["logits"].append(name + "/step_logits")
        new = output[0, len(prompt):].tolist()
        eos = special["<eos>"]
        cases.append({"name": name, "kind": "greedy", "prompt_ids": prompt, "max_new_tokens": greedy_steps,
                      "new_ids": new, "output_ids": output[0].tolist(), "eos_token_id": eos,
                      "eos_in_new_ids": eos in new, "min_top1_top2_margin": m,
                      "tensors": {"output_ids": name + "/output_ids", "step_logits": name + "/step_logits"},
                      "step_logits_shape": list(step_logits.shape)})

    name = "batch/two_prompts"
    rows = prompts["batch"]
    ids, mask, pos = pad_batch("glm3", runner.tokenization, rows, special)
    out = runner(input_ids=ids, attention_mask=mask, position_ids=pos)
    full_mask = runner.last_recorded("get_masks")
    logits = out.logits.float()
    pad_diff = 0.0
    for r, row in enumerate(rows):
        alone = runner(input_ids=ids_tensor(row)).logits.float()[0]
        pad_diff = max(pad_diff, float((logits[r, ids.shape[1] - len(row):] - alone).abs().max()))
    checks["pad_diff"] = pad_diff
    output, step_logits, _ = runner.greedy(ids, batch_steps, {"attention_mask": mask, "position_ids": pos})
    m = margin(step_logits)
    checks["margins"].append(m)
    tensors.update({name + "/input_ids": ids, name + "/attention_mask": mask, name + "/position_ids": pos,
                    name + "/logits": logits, name + "/full_attention_mask": full_mask[:, :, :, :].long(),
                    name + "/greedy_output_ids": output, name + "/greedy_step_logits": step_logits})
    checks["logits"] += [name + "/logits", name + "/greedy_step_logits"]
    cases.append({"name": name, "kind": "batch", "unpadded_ids": rows, "input_ids": ids.tolist(),
                  "attention_mask": mask.tolist(), "position_ids": pos.tolist(), "pad_token_id": special["<pad>"],
                  "padding": "left; pads get attention_mask 0 and position id 0; real tokens 0..n-1",
                  "max_abs_diff_real_positions_vs_unpadded": pad_diff, "greedy_new_tokens": batch_steps,
                  "greedy_new_ids": output[:, ids.shape[1]:].tolist(), "greedy_min_top1_top2_margin": m,
                  "tensors": {k: name + "/" + k for k in ("input_ids", "attention_mask", "position_ids", "logits",
                                                         "full_attention_mask", "greedy_output_ids",
                                                         "greedy_step_logits")},
                  "note": "logits at pad positions are whatever the official code gives (pad query rows attend to "
                          "every key there); compare only real positions if your port masks pad rows differently. "
                          "full_attention_mask is the [B,1,L,L] mask handed to the layers, 1 = masked out."})
    return tensors, cases, checks


def run_glm1_cases(runner, prompts, special, greedy_steps, batch_steps):
    tensors, cases, checks = {}, [], {"margins": [], "kv_diff": 0.0, "pad_diff": 0.0, "logits": []}
    sop, mask_id, gmask_id = special["<sop>"], special["[MASK]"], special["[gMASK]"]

    def model_positions(ids):
        m = ids.index(gmask_id) if gmask_id in ids else ids.index(mask_id)
        return m, ids.index(sop)

    def fwd(name, ids):
        out = runner(input_ids=ids_tensor(ids))
        pos = runner.last_recorded("get_position_ids")
        att = runner.last_recorded("get_masks")
        tensors[name + "/input_ids"] = ids_tensor(ids)
        tensors[name + "/logits"] = out.logits.float()
        tensors[name + "/position_ids"] = pos
        tensors[name + "/attention_mask"] = att.long()
        checks["logits"].append(name + "/logits")
        cases.append({"name": name, "kind": "forward", "input_ids": ids, "position_ids": pos[0].tolist(),
                      "attention_mask_true_means_masked": att[0, 0].long().tolist(),
                      "tensors": {k: name + "/" + k for k in ("input_ids", "logits", "position_ids",
                                                             "attention_mask")},
                      "logits_shape": list(out.logits.shape),
                      "note": "position_ids and attention_mask were built by the official model from input_ids "
                              "(get_position_ids/get_masks); they are recorded, not inputs"})
        return out

    fwd("forward/prompt_short", prompts["prompt_short"])
    fwd("forward/mask_token", prompts["mask_token"])
    fwd("forward/long", prompts["long"])
    fwd("forward/continuation", prompts["continuation"])

    name = "kv/prompt_short"
    prefix = prompts["prompt_short"]
    out = runner(input_ids=ids_tensor(prefix), use_cache=True)
    tensors[name + "/prefix_logits"] = out.logits.float()
    tensors[name + "/prefix_layer0_key"] = out.past_key_values[0][0].float()
    tensors[name + "/prefix_layer0_value"] = out.past_key_values[0][1].float()
    m, c = model_positions(prefix)
    past = out.past_key_values
    so_far = list(prefix)
    steps, step_logits = [], []
    for k, tok in enumerate(prompts["kv_steps"]):
        so_far.append(tok)
        position = [[m], [len(so_far) - c]]
        s = runner(input_ids=ids_tensor([tok]), position_ids=torch.tensor([position]), past_key_values=past,
                   use_cache=True)
        past = s.past_key_values
        key = "%s/step%d_logits" % (name, k)
        tensors[key] = s.logits.float()
        step_logits.append(s.logits.float())
        steps.append({"input_ids": [tok], "position_ids": position, "attention_mask": None, "logits": key})
    full = runner(input_ids=ids_tensor(so_far)).logits.float()
    tensors[name + "/full_logits"] = full
    cached = torch.cat([tensors[name + "/prefix_logits"]] + step_logits, dim=1)
    kv_diff = float((cached - full).abs().max())
    checks["kv_diff"] = kv_diff
    checks["logits"] += [name + "/prefix_logits", name + "/full_logits"] + [s["logits"] for s in steps]
    cases.append({"name": name, "kind": "kv_cache", "prefix_ids": prefix, "steps": steps, "full_ids": so_far,
                  "tensors": {k: name + "/" + k for k in ("prefix_logits", "full_logits", "prefix_layer0_key",
                                                         "prefix_layer0_value")},
                  "cache_layout": "per layer (key, value), each [seq, batch, heads, head_dim]; keys stored after "
                                  "rotary",
                  "max_abs_diff_vs_full_forward": kv_diff,
                  "note": "step position_ids are [[mask_position], [len(ids_so_far) - index(<sop>)]] as "
                          "prepare_inputs_for_generation builds them; no attention mask is passed for a single "
                          "new token"})

    for case in ("prompt_short", "long"):
        name = "greedy/" + case
        prompt = prompts[case]
        output, step_logits, positions = runner.greedy(ids_tensor(prompt), greedy_steps, {})
        mg = margin(step_logits)
        checks["margins"].append(mg)
        tensors[name + "/prompt_ids"] = ids_tensor(prompt)
        tensors[name + "/output_ids"] = output
        tensors[name + "/step_logits"] = step_logits
        checks["logits"].append(name + "/step_logits")
        new = output[0, len(prompt):].tolist()
        eos = special["<eop>"]
        cases.append({"name": name, "kind": "greedy", "prompt_ids": prompt, "max_new_tokens": greedy_steps,
                      "new_ids": new, "output_ids": output[0].tolist(), "eos_token_id": eos,
                      "eos_in_new_ids": eos in new, "min_top1_top2_margin": mg,
                      "step_position_ids": [p[0].tolist() for p in positions],
                      "tensors": {"output_ids": name + "/output_ids", "step_logits": name + "/step_logits"},
                      "step_logits_shape": list(step_logits.shape)})

    name = "batch/two_prompts"
    rows = prompts["batch"]
    ids, mask, pos = pad_batch("glm1", runner.tokenization, rows, special)
    out = runner(input_ids=ids, attention_mask=mask, position_ids=pos)
    logits = out.logits.float()
    pad_diff = 0.0
    for r, row in enumerate(rows):
        alone = runner(input_ids=ids_tensor(row)).logits.float()[0]
        pad_diff = max(pad_diff, float((logits[r, ids.shape[1] - len(row):] - alone).abs().max()))
    checks["pad_diff"] = pad_diff
    output, step_logits, positions = runner.greedy(ids, batch_steps, {"attention_mask": mask, "position_ids": pos})
    mg = margin(step_logits)
    checks["margins"].append(mg)
    tensors.update({name + "/input_ids": ids, name + "/attention_mask": mask.long(), name + "/position_ids": pos,
                    name + "/logits": logits, name + "/greedy_output_ids": output,
                    name + "/greedy_step_logits": step_logits})
    checks["logits"] += [name + "/logits", name + "/greedy_step_logits"]
    cases.append({"name": name, "kind": "batch", "unpadded_ids": rows, "input_ids": ids.tolist(),
                  "attention_mask_true_means_masked": mask.long().tolist(), "position_ids": pos.tolist(),
                  "pad_token_id": special["<pad>"],
                  "padding": "left; the tokenizer builds each row's [1,L,L] bool mask and [2,L] position ids on the "
                             "unpadded sequence, then pads on the left: mask rows/columns with True (masked), "
                             "position ids with 0",
                  "max_abs_diff_real_positions_vs_unpadded": pad_diff, "greedy_new_tokens": batch_steps,
                  "greedy_new_ids": output[:, ids.shape[1]:].tolist(), "greedy_min_top1_top2_margin": mg,
                  "step_position_ids": [p.tolist() for p in positions],
                  "tensors": {k: name + "/" + k for k in ("input_ids", "attention_mask", "position_ids", "logits",
                                                         "greedy_output_ids", "greedy_step_logits")},
                  "note": "logits at pad positions are what the official code gives (fully masked rows: every score "
                          "is -10000*(layer_id+1), so attention is uniform over all keys); compare real positions "
                          "if your port treats pad rows differently"})
    return tensors, cases, checks


# ---------------------------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------------------------

def glm3_config(a, dtype_name, name):
    return {
        "_name_or_path": "bigmodel-fixtures/" + name,
        "model_type": "chatglm",
        "architectures": ["ChatGLMModel"],
        "auto_map": {
            "AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForSequenceClassification": "modeling_chatglm.ChatGLMForSequenceClassification"},
        "add_bias_linear": False, "add_qkv_bias": True, "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False, "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True, "bias_dropout_fusion": True,
        "ffn_hidden_size": a.glm3_ffn, "fp32_residual_connection": False, "hidden_dropout": 0.0,
        "hidden_size": a.glm3_hidden, "kv_channels": a.glm3_kv_channels, "layernorm_epsilon": 1e-05,
        "multi_query_attention": True, "multi_query_group_num": a.glm3_groups,
        "num_attention_heads": a.glm3_heads, "num_layers": a.glm3_layers, "original_rope": True,
        "padded_vocab_size": a.glm3_vocab, "post_layer_norm": True, "rmsnorm": True,
        "seq_length": a.glm3_seq_length, "use_cache": True, "torch_dtype": dtype_name,
        "transformers_version": "4.30.2", "tie_word_embeddings": False, "eos_token_id": 2, "pad_token_id": 0,
    }


def glm1_config(a, special):
    return {
        "_name_or_path": "bigmodel-fixtures/chatglm-6b-tiny",
        "architectures": ["ChatGLMModel"],
        "auto_map": {"AutoConfig": "configuration_chatglm.ChatGLMConfig",
                     "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
                     "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration"},
        "bos_token_id": special["<sop>"], "eos_token_id": special["<eop>"], "mask_token_id": special["[MASK]"],
        "gmask_token_id": special["[gMASK]"], "pad_token_id": special["<pad>"],
        "hidden_size": a.glm1_hidden, "inner_hidden_size": a.glm1_inner, "layernorm_epsilon": 1e-05,
        "max_sequence_length": a.glm1_max_seq, "model_type": "chatglm", "num_attention_heads": a.glm1_heads,
        "num_layers": a.glm1_layers, "position_encoding_2d": True, "torch_dtype": "float32",
        "transformers_version": "4.23.1", "use_cache": True, "vocab_size": a.glm1_vocab,
    }


def float64_spread(runner64, tensors, cases, family):
    """Max |logit difference| of the float64 run on the forward cases, and whether its greedy ids agree."""
    diff = 0.0
    same = True
    for case in cases:
        if case["kind"] == "forward":
            out = runner64(input_ids=ids_tensor(case["input_ids"])).logits
            diff = max(diff, float((out.float() - tensors[case["tensors"]["logits"]]).abs().max()))
        if case["kind"] == "greedy":
            output, _, _ = runner64.greedy(ids_tensor(case["prompt_ids"]), case["max_new_tokens"],
                                           {} if family == "glm1" else
                                           {"attention_mask": torch.ones(1, len(case["prompt_ids"]),
                                                                         dtype=torch.long)})
            same = same and output[0].tolist() == case["output_ids"]
    return diff, same


def init_table(init):
    return {role: "N(%s, %s)" % (mean, std) for role, (mean, std) in init.items()}


GLM3_INIT = {"word_embeddings": (0.0, 1.0), "norm_weight": (1.0, 0.1), "qkv_weight": (0.0, 0.2),
             "qkv_bias": (0.0, 0.1), "attn_dense_weight": (0.0, 0.1), "mlp_weight": (0.0, 0.1),
             "output_layer": (0.0, 0.2)}
GLM1_INIT = {"word_embeddings": (0.0, 1.0), "norm_weight": (1.0, 0.1), "norm_bias": (0.0, 0.1),
             "qkv_weight": (0.0, 0.2), "qkv_bias": (0.0, 0.1), "attn_dense_weight": (0.0, 0.3),
             "attn_dense_bias": (0.0, 0.05), "mlp_weight": (0.0, 0.6), "mlp_bias": (0.0, 0.05)}


def make_glm3(a, mods, source, out_root):
    modeling, configuration, tokenization = mods
    first = a.glm3_first_special
    special = {"<pad>": 0, "<bos>": 1, "<eos>": 2}
    special.update({tok: first + k for k, tok in enumerate(GLM3_SPECIALS)})
    if first + len(GLM3_SPECIALS) > a.glm3_vocab:
        raise SystemExit("glm3 special tokens do not fit the vocabulary")
    config = glm3_config(a, "float32", "chatglm3-6b-tiny")
    shell = modeling.ChatGLMForConditionalGeneration(configuration.ChatGLMConfig(**config), empty_init=True)
    names, weights = draw_weights(shell, GLM3_INIT, a.glm3_seed, round_to_half=False)
    del shell

    rng = random.Random(a.glm3_seed * 7 + 1)
    for attempt in range(100):
        prompts = draw_prompts("glm3", special, 3, first - 1, rng, a.glm3_lengths)
        check_batch_padded(prompts)
        runs = {}
        ok = True
        for folder, dtype in (("chatglm3-6b-tiny", None), ("chatglm3-6b-tiny-bf16", torch.bfloat16),
                              ("chatglm3-6b-tiny-fp16", torch.float16)):
            w = weights if dtype is None else {k: v.to(dtype) for k, v in weights.items()}
            runner = Runner("glm3", modeling, configuration, tokenization, config,
                            {k: v.float() for k, v in w.items()})
            tensors, cases, checks = run_glm3_cases(runner, prompts, special, a.greedy_steps, a.batch_steps)
            ok = ok and min(checks["margins"]) >= a.min_margin
            runs[folder] = (w, runner, tensors, cases, checks)
        if ok:
            break
        print("glm3: prompts draw %d has a greedy margin below %g, drawing again" % (attempt, a.min_margin))
    else:
        raise SystemExit("no glm3 prompts with a safe greedy margin")

    for folder, (w, runner, tensors, cases, checks) in runs.items():
        target = os.path.join(out_root, folder)
        os.makedirs(target, exist_ok=True)
        dtype = next(iter(w.values())).dtype
        dtype_name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
        write_json(os.path.join(target, "config.json"), glm3_config(a, dtype_name, folder))
        listing = write_checkpoint(target, names, w, a.glm3_shards, with_shards=(folder == "chatglm3-6b-tiny"))
        info = {"format_version": 1, "architecture": "chatglm2/chatglm3 (same modeling)",
                "official_source": source, "generator": "tools/reference-tree/make_tree.py",
                "runtime_patches": RUNTIME_PATCHES}
        if folder == "chatglm3-6b-tiny":
            info["computed_in"] = "float32 on CPU, torch %s, official modeling code" % torch.__version__
            info["weights"] = {"file_dtype": "F32", "seed": a.glm3_seed, "n_tensors": len(w),
                               "total_bytes": sum(tensor_bytes(t) for t in w.values()),
                               "init": dict(init_table(GLM3_INIT),
                                            inv_freq="buffer as the official constructor computes it (not random)",
                                            order="one torch.Generator seeded with weights.seed; tensors drawn in "
                                                  "state_dict order"),
                               "shards": listing}
            info["shapes"] = {n: list(w[n].shape) for n in names}
            r64 = Runner("glm3", modeling, configuration, tokenization, config, w, dtype=torch.float64)
            d64, same64 = float64_spread(r64, tensors, cases, "glm3")
            info["observed_float32_spread"] = {
                "float64_run_max_abs_logit_diff": d64, "float64_run_greedy_ids_identical": same64,
                "kv_cache_vs_full_forward_max_abs_diff": checks["kv_diff"],
                "padded_batch_vs_unpadded_real_positions_max_abs_diff": checks["pad_diff"],
                "max_abs_logit": max(float(tensors[k].abs().max()) for k in checks["logits"])}
        else:
            info["copy_of"] = "chatglm3-6b-tiny"
            info["computed_in"] = ("float32 on CPU from the %s-rounded weights (weights widened exactly to float32; "
                                   "config torch_dtype float32 for the computing model), official modeling code, "
                                   "torch %s" % (dtype_name, torch.__version__))
            info["weights"] = {"file_dtype": ST_DTYPES[dtype],
                               "rounding": "round-to-nearest-even of the float32 weights of chatglm3-6b-tiny"}
            info["native_low_precision_run"] = native_run(a, mods, config, w, dtype, tensors, cases, prompts,
                                                          special)
        info["special_tokens"] = special
        info["expected_file"] = "expected.safetensors"
        info["cases"] = cases
        write_json(os.path.join(target, "expected.json"), info)
        write_safetensors(os.path.join(target, "expected.safetensors"), tensors)
    return special


def native_run(a, mods, config, weights, dtype, tensors, cases, prompts, special):
    """The same cases with the model in the half dtype itself; logits stored under native_<dtype>/ when it runs."""
    modeling, configuration, tokenization = mods
    prefix = "native_%s/" % {torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    try:
        runner = Runner("glm3", modeling, configuration, tokenization, config, weights, dtype=dtype)
        native, _, _ = run_glm3_cases(runner, prompts, special, a.greedy_steps, a.batch_steps)
    except RuntimeError as e:
        return {"ran": False, "reason": "RuntimeError: " + str(e).splitlines()[0]}
    per_tensor = {}
    divergence = {}
    for case in cases:
        for key, value in case["tensors"].items():
            if not ("logits" in key) or key.endswith("_ids"):
                continue
            name = value
            if name in native and native[name].dtype.is_floating_point:
                per_tensor[name] = float((native[name].float() - tensors[name]).abs().max())
                tensors[prefix + name] = native[name].float()
        for key in ("output_ids", "greedy_output_ids"):
            name = case["tensors"].get(key)
            if name and not torch.equal(native[name], tensors[name]):
                divergence[case["name"]] = native[name].tolist()
    return {"ran": True, "max_abs_logit_diff_vs_float32_from_rounded": max(per_tensor.values()),
            "per_tensor_max_abs_diff": per_tensor, "greedy_ids_identical_to_float32_from_rounded": not divergence,
            "greedy_divergence": divergence, "tensor_prefix": prefix,
            "note": "greedy step logits after an id divergence are compared as computed"}


def make_glm1(a, mods, source, out_root):
    modeling, configuration, tokenization = mods
    first = a.glm1_first_special
    special = {"<pad>": 3}
    special.update({tok: first + k for k, tok in enumerate(GLM1_SPECIALS)})
    if first + len(GLM1_SPECIALS) > a.glm1_vocab:
        raise SystemExit("glm1 special tokens do not fit the vocabulary")
    config = glm1_config(a, special)
    shell = modeling.ChatGLMForConditionalGeneration(configuration.ChatGLMConfig(**config), empty_init=True).float()
    names, weights = draw_weights(shell, GLM1_INIT, a.glm1_seed, round_to_half=True)
    del shell
    rng = random.Random(a.glm1_seed * 7 + 1)
    for attempt in range(100):
        prompts = draw_prompts("glm1", special, 5, first - 1, rng, a.glm1_lengths)
        check_batch_padded(prompts)
        runner = Runner("glm1", modeling, configuration, tokenization, config, weights)
        tensors, cases, checks = run_glm1_cases(runner, prompts, special, a.greedy_steps, a.batch_steps)
        if min(checks["margins"]) >= a.min_margin:
            break
        print("glm1: prompts draw %d has a greedy margin below %g, drawing again" % (attempt, a.min_margin))
    else:
        raise SystemExit("no glm1 prompts with a safe greedy margin")
    target = os.path.join(out_root, "chatglm-6b-tiny")
    os.makedirs(target, exist_ok=True)
    write_json(os.path.join(target, "config.json"), config)
    listing = write_checkpoint(target, names, weights, a.glm1_shards, with_shards=True)
    r64 = Runner("glm1", modeling, configuration, tokenization, config, weights, dtype=torch.float64)
    d64, same64 = float64_spread(r64, tensors, cases, "glm1")
    info = {"format_version": 1, "architecture": "chatglm-6b (v1, GLM with 2D rotary)", "official_source": source,
            "generator": "tools/reference-tree/make_tree.py",
            "computed_in": "float32 on CPU, torch %s, official modeling code" % torch.__version__,
            "runtime_patches": RUNTIME_PATCHES,
            "weights": {"file_dtype": "F32", "seed": a.glm1_seed, "n_tensors": len(weights),
                        "total_bytes": sum(tensor_bytes(t) for t in weights.values()),
                        "init": dict(init_table(GLM1_INIT),
                                     inv_freq="buffer as the official constructor computes it (not random)",
                                     order="one torch.Generator seeded with weights.seed; tensors drawn in "
                                           "state_dict order",
                                     rounding="every drawn value is rounded to float16, then stored as float32",
                                     **{"lm_head.weight": "copy of transformer.word_embeddings.weight (tied, as in "
                                                          "ChatGLM-6B)"}),
                        "shards": listing},
            "shapes": {n: list(weights[n].shape) for n in names},
            "special_tokens": special, "expected_file": "expected.safetensors",
            "observed_float32_spread": {
                "float64_run_max_abs_logit_diff": d64, "float64_run_greedy_ids_identical": same64,
                "kv_cache_vs_full_forward_max_abs_diff": checks["kv_diff"],
                "padded_batch_vs_unpadded_real_positions_max_abs_diff": checks["pad_diff"],
                "max_abs_logit": max(float(tensors[k].abs().max()) for k in checks["logits"])},
            "cases": cases}
    write_json(os.path.join(target, "expected.json"), info)
    write_safetensors(os.path.join(target, "expected.safetensors"), tensors)
    return special


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        dtype = {v: k for k, v in ST_DTYPES.items()}[h["dtype"]]
        begin, end = h["data_offsets"]
        raw = bytearray(data[begin:end])
        t = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        out[name] = t.view(dtype).reshape(h["shape"]).clone()
    return out


def verify_public(a, glm3, glm1):
    """Runs the public tree's own weights and inputs through this pipeline: every expected tensor must match."""
    ok = True
    for family, mods, folders in (("glm3", glm3, ("chatglm3-6b-tiny", "chatglm3-6b-tiny-bf16",
                                                  "chatglm3-6b-tiny-fp16")),
                                  ("glm1", glm1, ("chatglm-6b-tiny",))):
        for folder in folders:
            root = os.path.join(a.public, "models", folder)
            info = json.load(open(os.path.join(root, "expected.json")))
            config = json.load(open(os.path.join(root, "config.json")))
            config["torch_dtype"] = "float32"
            weights = {k: v.float() for k, v in read_safetensors(os.path.join(root, "model.safetensors")).items()}
            expected = read_safetensors(os.path.join(root, "expected.safetensors"))
            cases = {c["name"]: c for c in info["cases"]}
            special = info["special_tokens"]
            if family == "glm3":
                kv = cases["kv/chat_prompt"]
                prompts = {"prompt_short": cases["forward/prompt_short"]["input_ids"],
                           "chat_prompt": cases["forward/chat_prompt"]["input_ids"],
                           "long": cases["forward/long"]["input_ids"],
                           "kv_step": kv["steps"][0]["input_ids"], "kv_chunk": kv["steps"][1]["input_ids"],
                           "batch": cases["batch/two_prompts"]["unpadded_ids"]}
                run = run_glm3_cases
            else:
                prompts = {k: cases["forward/" + k]["input_ids"]
                           for k in ("prompt_short", "mask_token", "long", "continuation")}
                prompts["kv_steps"] = [s["input_ids"][0] for s in cases["kv/prompt_short"]["steps"]]
                prompts["batch"] = cases["batch/two_prompts"]["unpadded_ids"]
                run = run_glm1_cases
            runner = Runner(family, *mods, config, weights)
            greedy = next(c for c in info["cases"] if c["kind"] == "greedy")["max_new_tokens"]
            batch = cases["batch/two_prompts"]["greedy_new_tokens"]
            tensors, _, _ = run(runner, prompts, special, greedy, batch)
            for name, want in expected.items():
                if name.startswith("native_"):
                    continue
                got = tensors[name]
                same = got.shape == want.shape and torch.equal(got.to(want.dtype), want)
                if not same:
                    ok = False
                    diff = (got.double() - want.double()).abs().max() if got.shape == want.shape else "shape"
                    print("public %s %s differs: %s" % (folder, name, diff))
            print("public %s: %d expected tensors checked" % (folder, len(expected)))
    if not ok:
        raise SystemExit("the pipeline does not reproduce the public tree")


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def write_models_readme(a, models):
    """models/README.md in the public README's format: a section per folder with its cases and tensor tables."""
    lines = ["# Tiny ChatGLM reference models (generated tree)", "",
             "Made by `tools/reference-tree/make_tree.py` of the bigmodel project: the layout, file formats, input "
             "conventions and tolerances are those of the project's public tree "
             "(`test-resources/reference/models/README.md`); sizes, seeds, special-token ids, shard counts and "
             "token counts differ. Expected outputs are THUDM's official modeling code run on CPU in float32 "
             "(torch %s; sources and runtime patches in each `expected.json`)." % torch.__version__, "",
             "Generator arguments: `%s`" % " ".join(sys.argv[1:]), "", "## Folders", ""]
    folders = sorted(os.listdir(models))
    for folder in folders:
        cfg = json.load(open(os.path.join(models, folder, "config.json")))
        keys = ("num_layers", "hidden_size", "num_attention_heads", "kv_channels", "multi_query_group_num",
                "ffn_hidden_size", "inner_hidden_size", "padded_vocab_size", "vocab_size", "seq_length",
                "max_sequence_length", "torch_dtype")
        lines.append("- `%s/`: " % folder + ", ".join("%s %s" % (k, cfg[k]) for k in keys if k in cfg))
    lines += ["", "## Special token ids", ""]
    for folder in folders:
        info = json.load(open(os.path.join(models, folder, "expected.json")))
        lines.append("- `%s`: " % folder + ", ".join("`%s`=%d" % kv for kv in info["special_tokens"].items()))
    lines += ["", "## Cases and expected tensors", ""]
    for folder in folders:
        root = os.path.join(models, folder)
        info = json.load(open(os.path.join(root, "expected.json")))
        lines += ["### `%s`" % folder, ""]
        for case in info["cases"]:
            ids = case.get("input_ids", case.get("prompt_ids", case.get("prefix_ids")))
            lines.append("- `%s` (%s): %s" % (case["name"], case["kind"], json.dumps(ids)))
        for title, file in (("expected.safetensors tensors", "expected.safetensors"),
                            ("model tensors", "model.safetensors")):
            header = safetensors_header(os.path.join(root, file))
            lines += ["", "<details><summary>%s</summary>" % title, "", "| tensor | dtype | shape |",
                      "| --- | --- | --- |"]
            for name in sorted(header):
                lines.append("| `%s` | %s | %s |" % (name, header[name]["dtype"], json.dumps(header[name]["shape"])))
            lines += ["", "</details>", ""]
    with open(os.path.join(models, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def parse_lengths(text):
    return {k: int(v) for k, v in (item.split("=") for item in text.split(","))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-glm3", required=True, help="folder with THUDM chatglm3-6b's three .py files")
    p.add_argument("--official-glm1", required=True, help="folder with THUDM chatglm-6b's three .py files")
    p.add_argument("--public", required=True, help="the public tree (tokenizer/ and device-maps/ are copied)")
    p.add_argument("--out", help="the tree to write (must not exist)")
    p.add_argument("--verify-public", action="store_true",
                   help="first recompute the public tree's expected tensors from its weights and compare")
    p.add_argument("--greedy-steps", type=int, default=12)
    p.add_argument("--batch-steps", type=int, default=6)
    p.add_argument("--min-margin", type=float, default=2e-3, help="smallest top1-top2 gap a greedy step may have")
    p.add_argument("--glm3-seed", type=int, default=9173)
    p.add_argument("--glm3-layers", type=int, default=3)
    p.add_argument("--glm3-hidden", type=int, default=96)
    p.add_argument("--glm3-heads", type=int, default=6)
    p.add_argument("--glm3-groups", type=int, default=2)
    p.add_argument("--glm3-kv-channels", type=int, default=16)
    p.add_argument("--glm3-ffn", type=int, default=160)
    p.add_argument("--glm3-vocab", type=int, default=352)
    p.add_argument("--glm3-first-special", type=int, default=317)
    p.add_argument("--glm3-seq-length", type=int, default=160)
    p.add_argument("--glm3-shards", type=int, default=4)
    p.add_argument("--glm3-lengths", type=parse_lengths,
                   default=parse_lengths("short=5,system=3,user=8,long=47,batch_a=3,batch_b=9"))
    p.add_argument("--glm1-seed", type=int, default=5821)
    p.add_argument("--glm1-layers", type=int, default=3)
    p.add_argument("--glm1-hidden", type=int, default=96)
    p.add_argument("--glm1-heads", type=int, default=4)
    p.add_argument("--glm1-inner", type=int, default=256)
    p.add_argument("--glm1-vocab", type=int, default=300)
    p.add_argument("--glm1-first-special", type=int, default=280)
    p.add_argument("--glm1-max-seq", type=int, default=160)
    p.add_argument("--glm1-shards", type=int, default=3)
    p.add_argument("--glm1-lengths", type=parse_lengths,
                   default=parse_lengths("short=7,long=45,batch_a=2,batch_b=9"))
    a = p.parse_args()
    if a.out and os.path.exists(a.out):
        raise SystemExit(a.out + " exists")
    import tempfile
    work = tempfile.mkdtemp(prefix="reference-tree-")
    sys.path.insert(0, os.path.join(HERE, "shim"))
    patch_baddbmm()
    torch.set_num_threads(1)
    m3, c3, t3, s3 = import_official("glm3", a.official_glm3, work)
    m1, c1, t1, s1 = import_official("glm1", a.official_glm1, work)
    if a.verify_public:
        verify_public(a, (m3, c3, t3), (m1, c1, t1))
    if not a.out:
        return
    models = os.path.join(a.out, "models")
    os.makedirs(models)
    make_glm3(a, (m3, c3, t3), s3, models)
    make_glm1(a, (m1, c1, t1), s1, models)
    write_models_readme(a, models)
    for part in ("tokenizer", "device-maps"):
        shutil.copytree(os.path.join(a.public, part), os.path.join(a.out, part))
    shutil.rmtree(work)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
