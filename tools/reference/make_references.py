#!/usr/bin/env python3
"""Reference outputs of the real Python libraries for KeyValueLab's interoperability tests.

Run from the repository root (on a machine with PyTorch, transformers and PEFT; bitsandbytes and a CUDA GPU
for the NF4 parts):

    python3 tools/reference/make_references.py --out OUT [--parts versions,hf,peft,bnb,qlora]

Inputs (made by KeyValueLab: `dotnet run tools/reference/MakeInputs.cs -- DIR`) are read from --inputs, else from
tools/reference/inputs/, else from tests/KeyValueLab.Tests/Fixtures/reference/ours/.

Everything written goes to a staging folder (--stage, default /tmp/kvlab_reference) and is packed after every
part into OUT/results.tar (folder `python/`); OUT also gets versions.json, summary.json and errors.txt. Each part
runs in its own try/except: a failure is appended to errors.txt and the other parts still run. Running the script
twice with different --parts (e.g. before and after building bitsandbytes) adds to the same staging folder.

Parts:
  versions  library versions and the device
  hf        transformers' LlamaForCausalLM on our tiny Llamas (CPU, fp32, eager attention): logits
  peft      PEFT with our adapter (logits, merge_and_unload logits); adapters made by PEFT itself
            (init_lora_weights=False so B != 0): saved with save_pretrained, and their logits
  bnb       bitsandbytes.functional.quantize_4bit(nf4, blocksize 64, compress_statistics=True) of fixed tensors
            (CUDA), all quantisation state and dequantize_4bit; bitsandbytes' CPU (pure PyTorch) backend compared
  qlora     transformers' load_in_4bit (NF4, double quantisation, fp32 compute) of our tiny Llama, with and
            without our adapter: logits; one quantised weight's packed bytes and state
"""
import argparse
import datetime
import importlib
import importlib.util
import io
import json
import os
import platform
import re
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # bitsandbytes' CPU backend would torch.compile its dequantisation
NF4_CODE = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]
SYNTHETIC_SHAPE = (512, 1024)


class Run:
    def __init__(self, out: Path, stage: Path):
        self.out = out
        self.stage = stage
        self.py = stage / "python"
        self.py.mkdir(parents=True, exist_ok=True)
        self.summary_path = out / "summary.json"
        self.summary = json.loads(self.summary_path.read_text()) if self.summary_path.exists() else {}

    def note(self, key, value):
        self.summary[key] = value
        self.summary_path.write_text(json.dumps(self.summary, indent=1, default=str))

    def error(self, part, exc_text):
        with open(self.out / "errors.txt", "a") as f:
            f.write(f"=== part {part} failed at {datetime.datetime.utcnow().isoformat()}Z\n{exc_text}\n")

    def pack(self):
        tmp = self.out / "results.tar.tmp"
        with tarfile.open(tmp, "w") as tar:
            tar.add(str(self.py), arcname="python")
        os.replace(tmp, self.out / "results.tar")


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


def find_inputs(arg):
    for cand in ([Path(arg)] if arg else []) + [ROOT / "tools/reference/inputs", ROOT / "tests/KeyValueLab.Tests/Fixtures/reference/ours"]:
        if (cand / "tiny_llama" / "config.json").exists():
            return cand.resolve()
    raise FileNotFoundError("no inputs folder with tiny_llama/config.json (tried --inputs, tools/reference/inputs, tests/KeyValueLab.Tests/Fixtures/reference/ours)")


def fake_bnb_dist_info():
    """transformers asks importlib.metadata whether bitsandbytes is installed; a source checkout on PYTHONPATH has
    no dist-info, so give it a minimal one (name, version and top-level package only)."""
    spec = importlib.util.find_spec("bitsandbytes")
    if spec is None or spec.origin is None:
        return None
    try:
        import importlib.metadata as md
        return "installed " + md.version("bitsandbytes")
    except Exception:
        pass
    text = Path(spec.origin).read_text()
    m = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    version = m.group(1) if m else "0.0.0"
    d = Path(tempfile.mkdtemp(prefix="kvlab_dist_")) / f"bitsandbytes-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: bitsandbytes\nVersion: {version}\n")
    (d / "top_level.txt").write_text("bitsandbytes\n")
    (d / "RECORD").write_text("")
    sys.path.append(str(d.parent))
    return f"source checkout {Path(spec.origin).parent} (dist-info {version} added for transformers)"


# ---------------------------------------------------------------------------------------------------------- parts

def part_versions(run: Run, inputs: Path):
    info = {"date_utc": datetime.datetime.utcnow().isoformat() + "Z", "python": sys.version.split()[0], "platform": platform.platform()}
    for name in ["torch", "transformers", "peft", "safetensors", "numpy", "accelerate", "bitsandbytes"]:
        try:
            mod = importlib.import_module(name)
            info[name] = getattr(mod, "__version__", "?")
        except Exception as e:  # noqa: BLE001
            info[name] = f"not importable: {type(e).__name__}: {e}"[:400]
    try:
        import torch
        info["cuda_available"] = torch.cuda.is_available()
        info["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
    except Exception as e:  # noqa: BLE001
        info["cuda_error"] = str(e)
    try:
        import bitsandbytes.cextension as ce
        info["bitsandbytes_native_library"] = type(ce.lib).__name__ + " " + str(getattr(ce.lib, "_lib", ""))[:200]
        info["bitsandbytes_location"] = str(Path(ce.__file__).parent)
    except Exception as e:  # noqa: BLE001
        info["bitsandbytes_native_library"] = f"{type(e).__name__}: {e}"[:300]
    info["inputs"] = str(inputs)
    path = run.out / "versions.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.setdefault("runs", []).append(info)
    path.write_text(json.dumps(old, indent=1))
    log("versions:", json.dumps(info))


def _ids(inputs):
    import torch
    return torch.tensor(json.loads((inputs / "ids.json").read_text())["input_ids"], dtype=torch.long)


def _ours(inputs):
    from safetensors.torch import load_file
    return load_file(str(inputs / "ours_logits.safetensors"))


def _load_llama(folder, **kwargs):
    import torch
    from transformers import LlamaForCausalLM
    try:
        result = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager", output_loading_info=True, **kwargs)
    except TypeError:  # transformers < 4.56 calls it torch_dtype
        result = LlamaForCausalLM.from_pretrained(str(folder), torch_dtype=torch.float32, attn_implementation="eager", output_loading_info=True, **kwargs)
    model, info = result
    model.eval()
    return model, {k: sorted(map(str, v)) if isinstance(v, (list, set, tuple)) else str(v) for k, v in info.items()}


def _logits(model, ids):
    import torch
    with torch.no_grad():
        dev = next(model.parameters()).device
        return model(input_ids=ids.to(dev)).logits.float().cpu().contiguous()


def _diff(a, b):
    return float((a - b).abs().max())


def _save(path, tensors, metadata=None):
    from safetensors.torch import save_file
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata or {"format": "pt"})


def part_hf(run: Run, inputs: Path):
    import torch
    ids, ours = _ids(inputs), _ours(inputs)
    out, notes = {}, {}
    for key, folder in [("base", "tiny_llama"), ("tied_base", "tiny_llama_tied")]:
        model, info = _load_llama(inputs / folder)
        out[key] = _logits(model, ids)
        notes[key] = {"loading_info": info, "max_abs_diff_vs_ours": _diff(out[key], ours[key]), "max_abs_logit": float(out[key].abs().max()),
                      "lm_head_tied": bool(model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr())}
        log(f"hf {key}: max |ours - transformers| = {notes[key]['max_abs_diff_vs_ours']:.3g}")
    _save(run.py / "hf_logits.safetensors", out)
    run.note("hf", notes)


def part_peft(run: Run, inputs: Path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    ids, ours = _ids(inputs), _ours(inputs)
    out, notes = {}, {}

    # (b) our adapter, loaded by PEFT
    try:
        base, _ = _load_llama(inputs / "tiny_llama")
        pm = PeftModel.from_pretrained(base, str(inputs / "adapter_ours"))
        pm.eval()
        out["peft_ours"] = _logits(pm, ids)
        adapted = sorted(n[: -len(".lora_A.default")] for n, _ in pm.named_modules() if n.endswith(".lora_A.default"))
        q = pm.base_model.model.model.layers[0].self_attn.q_proj
        notes["peft_ours"] = {"adapted_modules": adapted, "scaling_q0": q.scaling.get("default") if hasattr(q, "scaling") else None,
                              "max_abs_diff_vs_ours": _diff(out["peft_ours"], ours["adapter"])}
        merged = pm.merge_and_unload()
        out["peft_ours_merged"] = _logits(merged, ids)
        notes["peft_ours"]["merged_max_abs_diff_vs_ours"] = _diff(out["peft_ours_merged"], ours["adapter"])
        log(f"peft with our adapter: max |ours - peft| = {notes['peft_ours']['max_abs_diff_vs_ours']:.3g}, merged {notes['peft_ours']['merged_max_abs_diff_vs_ours']:.3g}")
    except Exception:  # noqa: BLE001
        run.error("peft/ours-adapter", traceback.format_exc())

    # (c) adapters made by PEFT, B != 0
    variants = [
        ("peft_made", 1234, dict(target_modules=["q_proj", "v_proj", "up_proj", "down_proj"])),
        ("peft_made_rslora", 4321, dict(target_modules=r".*\.layers\.1\.mlp\.(up|down)_proj|.*\.self_attn\.(q|k)_proj", use_rslora=True)),
    ]
    for key, seed, extra in variants:
        try:
            base, _ = _load_llama(inputs / "tiny_llama")
            torch.manual_seed(seed)
            cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", init_lora_weights=False, **extra)
            pm = get_peft_model(base, cfg)
            pm.eval()
            out[key] = _logits(pm, ids)
            folder = run.py / ("adapter_" + key)
            pm.save_pretrained(str(folder), safe_serialization=True)
            trainable, total = pm.get_nb_trainable_parameters()
            b_norm = float(sum(p.detach().abs().sum() for n, p in pm.named_parameters() if "lora_B" in n))
            notes[key] = {"seed": seed, "files": sorted(os.listdir(folder)), "trainable": int(trainable), "all": int(total),
                          "sum_abs_lora_B": b_norm, "max_abs_diff_vs_base": _diff(out[key], ours["base"])}
            log(f"{key}: trainable {trainable} / {total}, |logits - base| max {notes[key]['max_abs_diff_vs_base']:.3g}")
        except Exception:  # noqa: BLE001
            run.error(f"peft/{key}", traceback.format_exc())
    if out:
        _save(run.py / "peft_logits.safetensors", out)
    run.note("peft", notes)


# ----------------------------------------------------------------------------------------------------------- NF4

def synthetic_tensor():
    """A 512 x 1024 float32 tensor from an integer hash, exactly reproducible anywhere (see PythonReferenceTests):
    u = splitmix64-style mix of the flat index, top 24 bits -> (v - 2^23) / 2^23 in [-1, 1), times 2^(row % 7 - 3)."""
    import numpy as np
    n = SYNTHETIC_SHAPE[0] * SYNTHETIC_SHAPE[1]
    with np.errstate(over="ignore"):
        h = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    v = (h >> np.uint64(40)).astype(np.int64) - (1 << 23)
    x = v.astype(np.float32) / np.float32(1 << 23)
    rows = np.arange(n) // SYNTHETIC_SHAPE[1]
    scale = np.ldexp(np.float32(1), (rows % 7 - 3)).astype(np.float32)
    return (x * scale).reshape(SYNTHETIC_SHAPE)


def adversarial_tensor():
    """Blocks of 64 whose first value is the block's absmax a and whose other values lie next to a NF4 decision
    boundary t, chosen so that x / a and x * (1 / a) (both float32) fall on different sides of t."""
    import numpy as np
    code = np.array(NF4_CODE, dtype=np.float32)
    mids = (code[:-1] + code[1:]) / np.float32(2)
    rng = np.random.default_rng(2024)
    blocks = []
    while len(blocks) < 16:
        a = np.float32(rng.uniform(0.3, 5.0))
        inv = np.float32(1) / a
        found = []
        for t in mids:
            c = np.float32(t * a)
            for k in range(-4, 5):
                x = c
                for _ in range(abs(k)):
                    x = np.nextafter(x, np.float32(np.inf if k > 0 else -np.inf), dtype=np.float32)
                d = np.searchsorted(mids, np.float32(x / a), side="left")
                r = np.searchsorted(mids, np.float32(x * inv), side="left")
                if d != r and abs(x) <= a:
                    found.append(x)
        if not found:
            continue
        vals = [a] + found[:63]
        while len(vals) < 64:  # fill with points on the boundaries themselves (ties)
            vals.append(np.float32(mids[len(vals) % 15] * a))
        blocks.append(np.array(vals, dtype=np.float32))
    return np.stack(blocks)  # [16, 64]


def nf4_cases():
    import numpy as np
    import torch
    cases = {}
    g = torch.Generator().manual_seed(0)
    cases["randn_128x64"] = torch.randn(128, 64, generator=g)
    g = torch.Generator().manual_seed(1)
    cases["randn_64x200"] = torch.randn(64, 200, generator=g)          # 200 blocks: one short nested block
    g = torch.Generator().manual_seed(2)
    cases["odd_37x51"] = torch.randn(37, 51, generator=g) * 3          # 1887 values: odd count, short last block
    g = torch.Generator().manual_seed(3)
    z = torch.randn(8, 64, generator=g)
    z[2] = 0
    z[5] = 0
    z[6, :32] = 0
    cases["zero_blocks_8x64"] = z                                      # blocks 2 and 5 all zero
    cases["constant_4x64"] = torch.full((4, 64), 0.5)                  # equal absmax everywhere: centred scales all 0
    g = torch.Generator().manual_seed(5)
    scales = torch.logspace(-4, 2, 16).unsqueeze(1)
    cases["wide_range_16x256"] = torch.randn(16, 256, generator=g) * scales  # scales over 6 decades
    code = torch.tensor(NF4_CODE, dtype=torch.float32)
    mids = (code[:-1] + code[1:]) / 2
    up = torch.nextafter(mids, torch.full_like(mids, 2.0))
    down = torch.nextafter(mids, torch.full_like(mids, -2.0))
    row = torch.cat([torch.tensor([1.0, -1.0]), mids, up, down, -mids, torch.zeros(2)])  # 64 values, absmax 1
    cases["nf4_boundaries_1x64"] = row.unsqueeze(0)
    cases["adversarial_16x64"] = torch.from_numpy(adversarial_tensor())
    cases["synthetic_512x1024"] = torch.from_numpy(synthetic_tensor())
    return cases


def _emulate(x, absmax, mode):
    """NF4 indices (ties to the lower code) of flat x with per-64-block absmax, dividing or multiplying by 1/absmax."""
    import torch
    code = torch.tensor(NF4_CODE, dtype=torch.float32)
    mids = (code[:-1] + code[1:]) / 2
    n = x.numel()
    pad = (-n) % 64
    xx = torch.cat([x.flatten().float(), torch.zeros(pad)]).view(-1, 64)
    a = absmax.float().view(-1, 1)
    safe = torch.where(a > 0, a, torch.ones_like(a))
    scaled = xx / safe if mode == "div" else xx * (1.0 / safe)
    return torch.searchsorted(mids, scaled.clamp(-1, 1).flatten().contiguous()).view(-1)[:n]


def _nibbles(packed, n):
    import torch
    p = packed.flatten().to(torch.int64)
    return torch.stack([p >> 4, p & 15], 1).flatten()[:n]


def _fast_reciprocal(absmax_cuda):
    """1.0f / absmax as bitsandbytes' kernels compute it (nvcc --use_fast_math: approximate reciprocal), via CuPy."""
    import cupy as cp
    import torch
    kernel = cp.RawKernel(r'''
    extern "C" __global__ void rcp(const float* a, float* out, int n) {
        int i = blockDim.x * blockIdx.x + threadIdx.x;
        if (i < n) out[i] = 1.0f / a[i];
    }''', "rcp", options=("--use_fast_math",))
    a = cp.asarray(absmax_cuda.float().contiguous())
    out = cp.empty_like(a)
    n = a.size
    kernel(((n + 255) // 256,), (256,), (a, out, cp.int32(n)))
    return torch.as_tensor(out, device="cuda").cpu()


def part_bnb(run: Run, inputs: Path):
    import torch
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    tensors, meta = {}, {"bitsandbytes": getattr(bnb, "__version__", "?"), "quant_type": "nf4", "blocksize": 64,
                         "compress_statistics": True, "cases": {}}
    cuda = torch.cuda.is_available()
    if cuda:
        try:  # the CUDA kernels need bitsandbytes' native library; without it only the pure-PyTorch backend runs
            F.quantize_4bit(torch.ones(64, device="cuda"), blocksize=64, compress_statistics=True, quant_type="nf4")
            torch.cuda.synchronize()
        except Exception:  # noqa: BLE001
            run.error("bnb/cuda-probe", traceback.format_exc())
            cuda = False
    meta["device"] = "cuda" if cuda else "cpu (pure-PyTorch backend)"
    dev = "cuda" if cuda else "cpu"
    cases = nf4_cases()
    for name, x in cases.items():
        try:
            x = x.float().contiguous()
            xd = x.to(dev)
            packed, state = F.quantize_4bit(xd, blocksize=64, compress_statistics=True, quant_type="nf4")
            packed_plain, state_plain = F.quantize_4bit(xd, blocksize=64, compress_statistics=False, quant_type="nf4")
            try:
                deq = F.dequantize_4bit(packed, state)
            except Exception:  # noqa: BLE001
                run.error(f"bnb/{name}/dequantize", traceback.format_exc())
                deq = torch.full_like(xd, float("nan"))
            if cuda:
                torch.cuda.synchronize()
            n = x.numel()
            info = {"shape": list(x.shape), "numel": n, "packed_shape": list(packed.shape), "packed_dtype": str(packed.dtype),
                    "absmax_dtype": str(state.absmax.dtype), "nested": bool(state.nested), "offset": float(state.offset),
                    "state2_blocksize": int(state.state2.blocksize), "state_blocksize": int(state.blocksize),
                    "plain_packed_equal": bool(torch.equal(packed.cpu(), packed_plain.cpu())),
                    "dequant_max_abs_err": float((deq.float().cpu() - x).abs().max())}
            big = name.startswith("synthetic")
            if not big:
                tensors[f"{name}.input"] = x
                tensors[f"{name}.dequant"] = deq.float().cpu()
            else:
                dq = deq.float().cpu().flatten()
                tensors[f"{name}.dequant_head"] = dq[:16384].clone()
                info["dequant_sum"] = float(dq.double().sum())
                info["dequant_abs_sum"] = float(dq.double().abs().sum())
                info["input_sum"] = float(x.double().sum())
            tensors[f"{name}.packed"] = packed.flatten().cpu()
            tensors[f"{name}.qabsmax"] = state.absmax.flatten().cpu()
            tensors[f"{name}.nested_absmax"] = state.state2.absmax.float().flatten().cpu()
            tensors[f"{name}.offset"] = state.offset.float().reshape(1).cpu()
            tensors[f"{name}.absmax_fp32"] = state_plain.absmax.float().flatten().cpu()
            if "dynamic_code" not in tensors:
                tensors["dynamic_code"] = state.state2.code.float().cpu()
                tensors["nf4_code"] = state.code.float().cpu()
            # Which quantisation rule reproduces bitsandbytes' nibbles?
            bnb_idx = _nibbles(packed.cpu(), n)
            amax = state_plain.absmax.float().cpu()
            for mode in ("div", "rcp"):
                diff = (bnb_idx != _emulate(x, amax, mode)).nonzero().flatten()
                info[f"nibble_mismatch_{mode}"] = int(diff.numel())
                info[f"nibble_mismatch_{mode}_first"] = [
                    {"i": int(i), "x": float(x.flatten()[i]), "bnb": int(bnb_idx[i]), "emul": int(_emulate(x, amax, mode)[i])} for i in diff[:8]]
            if n % 2:
                info["last_low_nibble"] = int(packed.flatten()[-1].item() & 15)
            if cuda:
                try:
                    fast = _fast_reciprocal(state_plain.absmax)
                    ieee = (1.0 / amax)
                    info["fast_rcp_differs_from_ieee"] = int(((fast != ieee) & (amax > 0)).sum())
                    tensors[f"{name}.rcp_fast"] = fast
                except Exception as e:  # noqa: BLE001
                    info["fast_rcp_error"] = f"{type(e).__name__}: {e}"[:300]
            # bitsandbytes' own pure-PyTorch CPU backend, for comparison.
            if cuda:
                try:
                    pc, sc = F.quantize_4bit(x, blocksize=64, compress_statistics=True, quant_type="nf4")
                    info["cpu_backend_packed_mismatch_bytes"] = int((pc.flatten() != packed.flatten().cpu()).sum())
                    info["cpu_backend_qabsmax_mismatch"] = int((sc.absmax.flatten().cpu() != state.absmax.flatten().cpu()).sum())
                    info["cpu_backend_offset"] = float(sc.offset)
                    if not big:
                        tensors[f"{name}.cpu_packed"] = pc.flatten().cpu()
                except Exception as e:  # noqa: BLE001
                    info["cpu_backend_error"] = f"{type(e).__name__}: {e}"[:300]
            meta["cases"][name] = info
            log(f"nf4 {name}: div mismatches {info['nibble_mismatch_div']}, rcp mismatches {info['nibble_mismatch_rcp']}, "
                f"offset {info['offset']!r}, max |deq - x| {info['dequant_max_abs_err']:.3g}")
        except Exception:  # noqa: BLE001
            run.error(f"bnb/{name}", traceback.format_exc())
    _save(run.py / "nf4_bnb.safetensors", tensors)
    (run.py / "nf4_bnb.json").write_text(json.dumps(meta, indent=1))
    run.note("bnb", {k: {kk: vv for kk, vv in v.items() if not kk.endswith("_first")} for k, v in meta["cases"].items()})


def part_qlora(run: Run, inputs: Path):
    import torch
    from transformers import BitsAndBytesConfig
    from peft import PeftModel
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    except Exception:  # noqa: BLE001
        pass
    ids = _ids(inputs)
    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
    model, info = _load_llama(inputs / "tiny_llama", quantization_config=cfg, device_map={"": 0})
    out, notes = {}, {"loading_info": info}
    out["qlora_base"] = _logits(model, ids)
    w = model.model.layers[0].mlp.down_proj.weight
    notes["down0_class"] = type(w).__name__
    qs = w.quant_state
    t = {"down0.packed": w.data.flatten().cpu(), "down0.qabsmax": qs.absmax.flatten().cpu(),
         "down0.nested_absmax": qs.state2.absmax.float().flatten().cpu(), "down0.offset": qs.offset.float().reshape(1).cpu()}
    notes["down0"] = {"shape": list(qs.shape), "blocksize": qs.blocksize, "nested": qs.nested, "quant_type": qs.quant_type}
    notes["quantised_modules"] = sorted(n for n, m in model.named_modules() if type(m).__name__ == "Linear4bit")
    pm = PeftModel.from_pretrained(model, str(inputs / "adapter_ours"))
    pm.eval()
    out["qlora_adapter"] = _logits(pm, ids)
    _save(run.py / "qlora_logits.safetensors", out)
    _save(run.py / "qlora_down0.safetensors", t)
    ours = _ours(inputs)
    notes["base_max_abs_diff_vs_ours_fp32"] = _diff(out["qlora_base"], ours["base"])
    notes["adapter_max_abs_diff_vs_ours_fp32"] = _diff(out["qlora_adapter"], ours["adapter"])
    run.note("qlora", notes)
    log(f"qlora: 4-bit base vs our fp32 logits max |diff| {notes['base_max_abs_diff_vs_ours_fp32']:.3g}")


PARTS = {"versions": part_versions, "hf": part_hf, "peft": part_peft, "bnb": part_bnb, "qlora": part_qlora}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--inputs")
    ap.add_argument("--stage", default="/tmp/kvlab_reference")
    ap.add_argument("--parts", default="versions,hf,peft,bnb,qlora")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out, Path(args.stage))
    try:
        dist = fake_bnb_dist_info()
        if dist:
            log("bitsandbytes:", dist)
    except Exception:  # noqa: BLE001
        run.error("fake-dist-info", traceback.format_exc())
    try:
        inputs = find_inputs(args.inputs)
    except Exception:  # noqa: BLE001
        run.error("inputs", traceback.format_exc())
        return 1
    failed = []
    for part in [p.strip() for p in args.parts.split(",") if p.strip()]:
        started = time.time()
        log(f"--- {part}")
        try:
            PARTS[part](run, inputs)
        except Exception:  # noqa: BLE001
            failed.append(part)
            text = traceback.format_exc()
            run.error(part, text)
            log(f"part {part} FAILED:\n{text}")
        run.note(f"seconds_{part}", round(time.time() - started, 1))
        try:
            run.pack()
        except Exception:  # noqa: BLE001
            run.error("pack", traceback.format_exc())
    log("done; failed parts:", failed or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
