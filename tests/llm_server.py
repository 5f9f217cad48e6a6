"""A small OpenAI-compatible chat server for fault-injection tests and benchmarks.

Run it as a real process (``python -m tests.llm_server --port P``) and steer it over HTTP:

    POST /admin/mode {"mode": "ok" | "hang" | "error" | "rate_limit", "status": 500,
                      "retry_after": "1", "delay_s": 0.0}
    GET  /admin/stats  → {"requests": n, "by_mode": {...}}

"die" is killing the process. Answers quote the first passage of the prompt and cite it, so
results are checkable; usage is counted in words.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

app = FastAPI()
STATE: dict = {"mode": "ok", "status": 500, "retry_after": "1", "delay_s": 0.0,
               "requests": 0, "by_mode": {}}


@app.post("/admin/mode")
async def set_mode(request: Request) -> dict:
    body = await request.json()
    STATE.update({k: v for k, v in body.items() if k in ("mode", "status", "retry_after", "delay_s")})
    return {k: STATE[k] for k in ("mode", "status", "retry_after", "delay_s")}


@app.get("/admin/stats")
async def stats() -> dict:
    return {"requests": STATE["requests"], "by_mode": STATE["by_mode"]}


def _answer(messages: list[dict]) -> str:
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    match = re.search(r"\[1\]\s*(.+)", user)
    first = match.group(1).strip().split(". ")[0][:200] if match else "nothing relevant"
    return f"{first} [1]"


@app.post("/v1/chat/completions")
async def chat(request: Request):
    body = await request.json()
    mode = STATE["mode"]
    STATE["requests"] += 1
    STATE["by_mode"][mode] = STATE["by_mode"].get(mode, 0) + 1
    if mode == "hang":
        await asyncio.sleep(3600)
    if mode == "error":
        return JSONResponse({"error": {"message": "injected failure"}}, status_code=STATE["status"])
    if mode == "rate_limit":
        return JSONResponse({"error": {"message": "slow down"}}, status_code=429,
                            headers={"Retry-After": str(STATE["retry_after"])})
    if STATE["delay_s"]:
        await asyncio.sleep(float(STATE["delay_s"]))
    text = _answer(body.get("messages", []))
    words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    usage = {"prompt_tokens": words, "completion_tokens": len(text.split()),
             "total_tokens": words + len(text.split())}
    if not body.get("stream"):
        return {"id": "cmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"), "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}]}

    async def events():
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == len(words) - 1 else word + " "
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            yield f"data: {json.dumps(chunk)}\n\n"
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
