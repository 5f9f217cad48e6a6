"""Local generator engines side by side on CPU: time to first token, tokens/s, memory, and how
often they say what the float32 model says.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_generators_cpu.py \
        --out /tmp/generation-cpu.json [--onnx-genai-python /tmp/ogenai/bin/python]

The bundled SmolLM2-135M-Instruct, greedy, ``max_tokens`` 128 (the embedded default's), on
real RAG prompts: each question from ``benchmarks.common.QUESTIONS`` gets the paragraphs of
the project's README and docs that share the most words with it, as many as keep the
prompt under ~450 and under ~1,500 tokens (the generator's own plan: ``plan_prompt`` with the
chat template's overheads, counted with the model's tokenizer).

Engines, each in its own process (peak RSS is that process's, model loaded from the cache):

- ``transformers``: ``TransformersGenerator``, float32 (today's default engine);
- ``ctranslate2``: ``CTranslate2Generator``, int8 (``compute_type`` auto on CPU);
- ``llamacpp``: ``LlamaCppGenerator`` (needs llama-cpp-python), the GGUF requantized to its
  default ``gguf_weights``; ``llamacpp:Q4_0`` / ``llamacpp:file`` name another weight type;
- ``onnxruntime-genai`` (with ``--onnx-genai-python``, a Python that has onnxruntime-genai
  and onnx-ir besides this project's packages): the same prompts' token ids, int4 ONNX from
  its model builder, a plain ``generate_next_token`` loop. Not a ragserve backend.

The ragserve engines are measured through ``stream`` (what ``/v1/query`` streaming uses):
TTFT is the first *delta* (the detokenizer holds a word until it is whole, so it can lag the
first token by a token or two); decode tokens/s is ``(completion_tokens - 1) / (end - first
delta)``. "At 4 concurrent" sends four answers at once: each engine decodes one at a time, so
the later ones queue. Agreement is against the transformers float32 engine: the share of
identical token ids at the same position among the first 64, and the share of answers whose
whole text is identical. Model preparation (GGUF → safetensors → CTranslate2; for llama.cpp
its first start, which reads the GGUF's tokenizer) is timed once in a fresh cache before the
engines run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import QUESTIONS, pct  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = (450, 1500)
MAX_TOKENS = 128
AGREE_TOKENS = 64


# ---------------------------------------------------------------------------- prompts


def paragraphs() -> list[str]:
    """The project's own documentation, in paragraphs of 40–160 words."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "docs" / "benchmarks").glob("*.md"))]
    out: list[str] = []
    for path in files:
        buf: list[str] = []
        for block in re.split(r"\n\s*\n", path.read_text()):
            block = block.strip()
            if not block or block.startswith("```"):
                continue
            buf.append(block)
            if sum(len(b.split()) for b in buf) >= 40:
                text = "\n".join(buf)
                out.append(" ".join(text.split()[:160]))
                buf = []
    return out


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2}


def requests_for(gen, size: int, n: int):
    """One request per question, with as many best-matching paragraphs as fit ``size``."""
    from ragserve.schemas import GenerationRequest, ScoredChunk

    paras = paragraphs()
    out = []
    for qi, query in enumerate(QUESTIONS[:n]):
        q = _words(query)
        ranked = sorted(range(len(paras)), key=lambda i: -len(q & _words(paras[i])))
        chosen: list = []
        for rank, i in enumerate(ranked):
            chunk = ScoredChunk(chunk_id=f"p{i}", doc_id="docs", chunk_index=i, text=paras[i],
                                score=1.0 - rank / len(ranked))
            req = GenerationRequest(query=query, passages=[*chosen, chunk], max_tokens=MAX_TOKENS)
            plan = gen.plan(req)
            if plan.prompt_tokens > size or plan.passages_dropped:
                break
            chosen.append(chunk)
        out.append(GenerationRequest(query=query, passages=chosen, max_tokens=MAX_TOKENS))
    return out


# ---------------------------------------------------------------------------- one engine


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process, MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text()
                  .splitlines() if ":" in line)
    kib = lambda k: float(fields[k].split()[0])  # noqa: E731
    return round(kib("VmRSS") / 1024, 1), round(kib("VmHWM") / 1024, 1)


async def _one(gen, req, ids_out: list, t0: float | None = None) -> dict:
    t0 = time.perf_counter() if t0 is None else t0
    first = None
    result = None
    async for item in gen.stream(req):
        if "delta" in item and first is None and item["delta"].strip():
            first = time.perf_counter()
        if "result" in item:
            result = item["result"]
    end = time.perf_counter()
    first = end if first is None else first
    n = result.usage.completion_tokens
    return {"query": req.query, "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": n, "ttft_s": round(first - t0, 3),
            "total_s": round(end - t0, 3),
            "decode_tok_s": round((n - 1) / (end - first), 2) if n > 1 and end > first else None,
            "finish": result.finish_reason, "text": result.text, "ids": ids_out[-1]}


def engine_config(engine: str) -> dict:
    """``llamacpp:Q4_0`` → engine llamacpp with ``gguf_weights`` Q4_0; other names as they are."""
    name, _, weights = engine.partition(":")
    return {"engine": name, **({"gguf_weights": weights} if weights else {})}


async def run_engine(engine: str, cache_dir: str, n: int, threads: int, penalty: float) -> dict:
    from ragserve.config import GeneratorConfig, LocalGeneratorConfig
    from ragserve.generation import build_generator

    gen = build_generator(GeneratorConfig(
        backend=LocalGeneratorConfig(**engine_config(engine), cache_dir=cache_dir,
                                     torch_threads=threads, repetition_penalty=penalty),
        default_max_tokens=MAX_TOKENS, max_tokens_cap=512))
    start = time.perf_counter()
    gen.warm_up()
    load_s = time.perf_counter() - start
    rss_loaded = rss_mib()[0]
    ids: list[list[int]] = []
    prompts: list[list[int]] = []
    decode = gen._decode

    def recording(prompt_ids, *args):  # the exact token ids, for the agreement figures
        out = decode(prompt_ids, *args)
        prompts.append(list(prompt_ids))
        ids.append(list(out))
        return out

    gen._decode = recording
    await _one(gen, requests_for(gen, SIZES[0], 1)[0], ids)  # warm the kernels; not counted
    out: dict = {"engine": engine, "health": gen.health(), "load_s": round(load_s, 2),
                 "rss_loaded_mib": rss_loaded, "sizes": {}}
    for size in SIZES:
        reqs = requests_for(gen, size, n)
        seq = []
        for req in reqs:
            seq.append(await _one(gen, req, ids))
            seq[-1]["prompt_ids"] = prompts[-1]
        t0 = time.perf_counter()
        conc = await asyncio.gather(*(_one(gen, r, ids, t0) for r in reqs[:4]))
        wall = time.perf_counter() - t0
        out["sizes"][str(size)] = {
            "sequential": seq,
            "concurrent4": {"answers": [{k: v for k, v in c.items() if k != "ids"} for c in conc],
                            "wall_s": round(wall, 2),
                            "tok_s": round(sum(c["completion_tokens"] for c in conc) / wall, 2)},
        }
    out["rss_mib"], out["peak_rss_mib"] = rss_mib()
    return out


def run_onnx_genai(model_dir: str, prompts_file: str, penalty: float) -> dict:
    """The transformers run's prompt ids through onnxruntime-genai (one at a time)."""
    import onnxruntime_genai as og

    start = time.perf_counter()
    config = og.Config(model_dir)
    config.clear_providers()
    model = og.Model(config)
    load_s = time.perf_counter() - start
    rss_loaded = rss_mib()[0]
    src = json.loads(Path(prompts_file).read_text())

    def answer(prompt_ids: list[int]) -> tuple[list[int], float, float]:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(prompt_ids) + MAX_TOKENS,
                                  repetition_penalty=penalty)
        g = og.Generator(model, params)
        t0 = time.perf_counter()
        g.append_tokens(prompt_ids)
        out, first = [], None
        while not g.is_done() and len(out) < MAX_TOKENS:
            g.generate_next_token()
            out.append(int(g.get_next_tokens()[0]))
            first = first or time.perf_counter()
        return out, first - t0, time.perf_counter() - t0

    answer(src[str(SIZES[0])][0])  # warm-up
    res: dict = {"engine": "onnxruntime-genai", "load_s": round(load_s, 2),
                 "rss_loaded_mib": rss_loaded, "sizes": {}}
    for size in SIZES:
        seq = []
        for p in src[str(size)]:
            ids, ttft, total = answer(p)
            n = len(ids)
            seq.append({"prompt_tokens": len(p), "completion_tokens": n, "ttft_s": round(ttft, 3),
                        "total_s": round(total, 3), "ids": ids,
                        "decode_tok_s": round((n - 1) / (total - ttft), 2) if n > 1 else None})
        # four at once on one model, one decode at a time: the k-th waits for k-1 answers
        t0 = time.perf_counter()
        waits, conc = 0.0, []
        for p in src[str(size)][:4]:
            ids, ttft, total = answer(p)
            conc.append({"ttft_s": round(waits + ttft, 3), "total_s": round(waits + total, 3),
                         "completion_tokens": len(ids)})
            waits += total
        wall = time.perf_counter() - t0
        res["sizes"][str(size)] = {"sequential": seq, "concurrent4": {
            "answers": conc, "wall_s": round(wall, 2),
            "tok_s": round(sum(c["completion_tokens"] for c in conc) / wall, 2)}}
    res["rss_mib"], res["peak_rss_mib"] = rss_mib()
    return res


# ---------------------------------------------------------------------------- driver


def prepare(cache_dir: str, threads: int, engines: list[str]) -> dict:
    """The first start of each engine in a fresh cache: what a new user waits for once."""
    from ragserve.config import LocalGeneratorConfig
    from ragserve.generation import (
        CTranslate2Generator,
        LlamaCppGenerator,
        TransformersGenerator,
    )

    times = {}
    steps = [("gguf_to_safetensors_s", TransformersGenerator, "transformers"),
             ("safetensors_to_ctranslate2_s", CTranslate2Generator, "ctranslate2")]
    steps += [(f"{e}_first_start_s", LlamaCppGenerator, e) for e in engines
              if e.startswith("llamacpp")]
    for key, cls, engine in steps:
        start = time.perf_counter()
        gen = cls(LocalGeneratorConfig(**engine_config(engine), cache_dir=cache_dir,
                                       torch_threads=threads))
        gen.warm_up()
        times[key] = round(time.perf_counter() - start, 2)
        times[f"{engine}_converted_path"] = gen.health()["converted_path"]
    return times


def agreement(ref: list[dict], other: list[dict]) -> dict:
    same_tok, total_tok, exact = 0, 0, 0
    for a, b in zip(ref, other):
        x, y = a["ids"][:AGREE_TOKENS], b["ids"][:AGREE_TOKENS]
        same_tok += sum(1 for i, j in zip(x, y) if i == j)
        total_tok += max(len(x), len(y))
        exact += a["ids"] == b["ids"]
    return {"token_agreement_64": round(same_tok / max(total_tok, 1), 3),
            "exact_answers": f"{exact}/{len(ref)}"}


def summarise(run: dict, ref: dict | None) -> list[str]:
    lines = []
    for size, data in run["sizes"].items():
        seq, conc = data["sequential"], data["concurrent4"]
        ttft = [s["ttft_s"] for s in seq]
        total = [s["total_s"] for s in seq]
        tps = [s["decode_tok_s"] for s in seq if s["decode_tok_s"]]
        cttft = [c["ttft_s"] for c in conc["answers"]]
        ctot = [c["total_s"] for c in conc["answers"]]
        agree = agreement(ref["sizes"][size]["sequential"], seq) if ref else {}
        prompt = round(sum(s["prompt_tokens"] for s in seq) / len(seq))
        lines.append(
            f"| {run['engine']} | ~{size} ({prompt}) | {pct(ttft, 50):.2f} / {pct(ttft, 95):.2f} "
            f"| {pct(total, 50):.2f} / {pct(total, 95):.2f} "
            f"| {sum(tps) / max(len(tps), 1):.1f} "
            f"| {pct(cttft, 50):.2f} / {pct(cttft, 95):.2f} | {pct(ctot, 95):.2f} "
            f"| {conc['tok_s']:.1f} | {run['peak_rss_mib']:.0f} "
            f"| {agree.get('token_agreement_64', '—')} | {agree.get('exact_answers', '—')} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/generation-cpu.json", help="all figures, as JSON")
    ap.add_argument("--n", type=int, default=5, help="questions per prompt size")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per engine")
    ap.add_argument("--engines", default="transformers,ctranslate2")
    ap.add_argument("--repetition-penalty", type=float, default=1.1,
                    help="1.1 is the config default; 1.0 compares the engines token for token "
                    "(transformers penalises the prompt's tokens too, CTranslate2 only the answer's)")
    ap.add_argument("--onnx-genai-python", help="a Python with onnxruntime-genai (optional)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)
    ap.add_argument("--prompts", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker == "onnxruntime-genai":
        result = run_onnx_genai(args.cache_dir, args.prompts, args.repetition_penalty)
        Path(args.out).write_text(json.dumps(result))
        return 0
    if args.worker:
        result = asyncio.run(run_engine(args.worker, args.cache_dir, args.n, args.threads,
                                        args.repetition_penalty))
        Path(args.out).write_text(json.dumps(result))
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-gen-cpu-"))
    cache = str(work / "models")
    prep = prepare(cache, args.threads, args.engines.split(","))
    print(f"first start, fresh cache: GGUF -> safetensors {prep['gguf_to_safetensors_s']} s, "
          f"-> CTranslate2 int8 {prep['safetensors_to_ctranslate2_s']} s"
          + "".join(f"; {k.removesuffix('_first_start_s')} first start {v} s"
                    for k, v in prep.items() if k.startswith("llamacpp")
                    and k.endswith("_first_start_s")), flush=True)
    runs: dict[str, dict] = {}
    for engine in args.engines.split(","):
        out = work / f"{engine}.json"
        subprocess.run([sys.executable, __file__, "--worker", engine, "--cache-dir", cache,
                        "--n", str(args.n), "--threads", str(args.threads), "--out", str(out),
                        "--repetition-penalty", str(args.repetition_penalty)],
                       check=True)
        runs[engine] = json.loads(out.read_text())
        print(f"{engine}: loaded from cache in {runs[engine]['load_s']} s", flush=True)
    if args.onnx_genai_python and "transformers" in runs:
        prompts = {size: [s["prompt_ids"] for s in data["sequential"]]
                   for size, data in runs["transformers"]["sizes"].items()}
        (work / "prompts.json").write_text(json.dumps(prompts))
        og_dir = work / "onnx-genai-int4"
        start = time.perf_counter()
        built = subprocess.run(
            [args.onnx_genai_python, "-m", "onnxruntime_genai.models.builder",
             "-i", prep["transformers_converted_path"], "-o", str(og_dir), "-p", "int4",
             "-e", "cpu", "-c", str(work / "og-cache")], check=False, timeout=600)
        build_s = time.perf_counter() - start
        if built.returncode == 0:
            out = work / "onnxruntime-genai.json"
            ran = subprocess.run(
                [args.onnx_genai_python, __file__, "--worker", "onnxruntime-genai",
                 "--cache-dir", str(og_dir), "--prompts", str(work / "prompts.json"),
                 "--repetition-penalty", str(args.repetition_penalty), "--out", str(out)],
                check=False)
            if ran.returncode == 0:
                runs["onnxruntime-genai"] = json.loads(out.read_text())
                runs["onnxruntime-genai"]["build_s"] = round(build_s, 1)
        print(f"onnxruntime-genai: builder {build_s:.1f} s, exit {built.returncode}", flush=True)
    ref = runs.get("transformers")
    print("\n| engine | prompt tokens | TTFT p50 / p95 s | answer p50 / p95 s | decode tok/s "
          "| 4 concurrent: TTFT p50 / p95 s | answer p95 s | tok/s | peak RSS MiB "
          "| tokens = float32 (first 64) | identical answers |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for engine, run in runs.items():
        for line in summarise(run, ref if engine != "transformers" else None):
            print(line)
    Path(args.out).write_text(json.dumps({"prepare": prep, "runs": runs}, indent=1))
    print(f"\nall figures: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
