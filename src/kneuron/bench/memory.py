"""Peak memory and time per fact against the prompt's length (`kneuron bench memory`).

Each point runs in a fresh interpreter, so its peak resident memory is its own: the model is loaded,
its resident size noted, the high-water mark reset (``/proc/self/clear_refs``), then one no-grad
forward pass of the whole prompt is timed (what the prompt itself costs; its high-water mark is
``forward_peak_rss_mb``), the mark is reset again, then one fact is attributed (after a short warm-up
fact, so allocator and kernels are warm) and timed; ``peak_rss_mb`` is the process's high-water mark
(``VmHWM``, the model included) over the attribution; ``load_peak_rss_mb`` that of the loading.

Prompts: a filler text of plain sentences cut to the wanted number of tokens, ending with
"The capital of France is", answer " Paris" (one token on smollm2's tokenizer).

Sides: ``kneuron`` (``attribute``, default settings plus ``max_memory`` where given) and ``peer``
(knowledge-neurons 0.0.2's ``get_scores(batch_size=20, steps=...)``; it knows GPT-2 / GPT-Neo / BERT
only, so it runs on the ``gpt2-base`` model: a base-size GPT-2 built from its config with random
weights and the GPT-2 tokenizer's stand-in below, 2,048 positions).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from kneuron.errors import KneuronError

FILLER = ("The river runs past the old mill and the village church. People in the valley grow apples, pears "
          "and barley, and the market is held on Tuesdays in the square. In winter the roads close and the "
          "school teacher walks to work. A long history of trade links the town with the cities of the coast. ")
TAIL = " The capital of France is"
ANSWER = " Paris"
LENGTHS = (8, 32, 128, 512, 1024, 2048)


def parse_lengths(text: str) -> list[int]:
    """"8,32,128" -> [8, 32, 128]; a ConfigError (one line) on anything else."""
    from kneuron.errors import ConfigError
    try:
        xs = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        xs = []
    if not xs or min(xs) < 1:
        raise ConfigError(f"lengths must be positive integers separated by commas, not {text!r}")
    return xs


def peak_rss_bytes() -> int:
    from kneuron.bench.speed import peak_rss_bytes as peak
    return peak()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> bool:
    """Start the high-water mark afresh at the current resident size (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def make_prompt(tokenizer, n_tokens: int) -> str:
    """A prompt of about ``n_tokens`` tokens ending with TAIL."""
    tail = tokenizer(TAIL, add_special_tokens=False)["input_ids"]
    text = FILLER * (1 + n_tokens // 40)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max(0, n_tokens - len(tail))]
    return (tokenizer.decode(ids).strip() + TAIL) if ids else TAIL.strip()


def _gpt2_base(max_len: int = 2048):
    """GPT-2 base from its config, random weights (seed 0), and a word-level tokenizer over the filler's words."""
    from kneuron.bench.speed import VOCAB, BASE, word_tokenizer
    import torch
    import transformers as T
    torch.manual_seed(0)
    cfg = T.GPT2Config(vocab_size=VOCAB["causal"], n_embd=BASE["hidden"], n_layer=BASE["n_layers"],
                       n_head=BASE["heads"], n_inner=BASE["neurons"], n_positions=max_len, eos_token_id=5,
                       bos_token_id=5)
    words = (FILLER + TAIL + ANSWER).replace(".", " . ").replace(",", " , ").split()
    return T.GPT2LMHeadModel(cfg).eval(), word_tokenizer(words, "causal")


def run_point(side: str, model: str, tokens: int, method: str = "ig", steps: int = 20,
              max_memory: str | None = None, warmup: bool = True) -> dict:
    """One point, in this process: load, forward pass of the prompt, one attributed fact."""
    import torch
    t0 = time.perf_counter()
    if model == "gpt2-base":
        net, tok = _gpt2_base()
        handle = None
        if side == "kneuron":
            from kneuron.models.load import from_model
            handle = from_model(net, tok, kind="causal", name="gpt2-base")
    else:
        if side != "kneuron":
            raise KneuronError(f"the peer cannot run {model}: it knows GPT-2, GPT-Neo and BERT only")
        from kneuron.models.load import load_model
        handle = load_model(model)
        net, tok = handle.model, handle.tokenizer
    load_s = time.perf_counter() - t0
    load_peak = peak_rss_bytes()
    prompt = make_prompt(tok, tokens)
    n = len(tok(prompt)["input_ids"])
    after_load = rss_bytes()
    reset_peak()
    ids = torch.tensor([tok(prompt)["input_ids"]])
    with torch.no_grad():
        net(input_ids=ids)                                  # warm-up
        t0 = time.perf_counter()
        net(input_ids=ids)
        forward_s = time.perf_counter() - t0
    forward_peak = peak_rss_bytes()
    reset_peak()
    if side == "peer":
        from knowledge_neurons import KnowledgeNeurons
        kn = KnowledgeNeurons(net, tok, model_type="gpt2", device="cpu")

        def one(p):
            return kn.get_scores(p, ANSWER.strip(), batch_size=20, steps=steps, pbar=False)
    else:
        from kneuron.attribution import attribute
        from kneuron.attribution.execution import Execution
        ex = Execution(max_memory=max_memory) if max_memory else Execution()

        def one(p):
            return attribute(handle, p, ANSWER, method=method, steps=steps, execution=ex)
    if warmup:
        one(make_prompt(tok, 8))
    t0 = time.perf_counter()
    one(prompt)
    attr_s = time.perf_counter() - t0
    return {"side": side, "model": model, "tokens": n, "method": method, "steps": steps, "max_memory": max_memory,
            "load_s": load_s, "forward_s": forward_s, "s_per_fact": attr_s,
            "rss_after_load_mb": after_load / 2**20, "load_peak_rss_mb": load_peak / 2**20,
            "forward_peak_rss_mb": forward_peak / 2**20, "peak_rss_mb": peak_rss_bytes() / 2**20,
            "threads": torch.get_num_threads()}


def _subprocess(job: dict, extra_path: str | None = None, timeout: float | None = None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    try:
        r = subprocess.run([sys.executable, "-m", "kneuron.bench.memory", json.dumps(job)], capture_output=True,
                           text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**job, "error": f"timed out after {timeout:g} s"}
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        if r.returncode < 0:
            last = f"killed by signal {-r.returncode} ({last})"
        return {**job, "error": last}
    return json.loads(r.stdout.strip().splitlines()[-1])


def memory_bench(model: str = "smollm2-135m", lengths=LENGTHS, method: str = "ig", steps: int = 20,
                 max_memory: str | None = None, peer: bool = False, peer_path: str | None = None,
                 peer_lengths=None, timeout: float | None = None, log=lambda s: None) -> dict:
    """One fresh process per (side, length); a point that fails (killed, out of memory, timed out)
    is recorded with its error and the next one runs."""
    import torch
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
           "date": time.strftime("%Y-%m-%d"), "model": model, "method": method, "steps": steps,
           "max_memory": max_memory, "points": []}
    sides = [("kneuron", lengths)] + ([("peer", peer_lengths or lengths)] if peer else [])
    for side, lens in sides:
        for n in lens:
            log(f"{side}, {model}, {n} tokens ...")
            job = {"side": side, "model": model, "tokens": n, "method": method, "steps": steps,
                   "max_memory": max_memory if side == "kneuron" else None}
            r = _subprocess(job, peer_path if side == "peer" else None, timeout)
            log("  " + (r["error"] if "error" in r else f"{r['tokens']} tokens: {r['s_per_fact']:.2f} s/fact, "
                        f"forward {r['forward_s']:.3f} s, peak {r['peak_rss_mb']:.0f} MB"))
            out["points"].append(r)
    return out


if __name__ == "__main__":                      # one point in its own process: python -m kneuron.bench.memory JOB
    import warnings
    warnings.filterwarnings("ignore")
    from kneuron.models.verbosity import quiet_dependencies
    quiet_dependencies()
    print(json.dumps(run_point(**json.loads(sys.argv[1]))))
