"""The serving stack catbert replaces, for scripts/bench-serve.sh: FastAPI + uvicorn in front of
a transformers text-classification pipeline, speaking TEI's /predict contract (a text, or a
batch [["a"], ["b"]]; every label with its score, best first).

Usage: python scripts/fastapi_serve.py MODEL_DIR PORT THREADS
"""

import sys

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

model_dir, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
classify = pipeline("text-classification", model=model_dir, top_k=None, device="cpu")
app = FastAPI()


class PredictRequest(BaseModel):
    inputs: str | list[list[str]]


def ranked(result):
    return [{"score": r["score"], "label": r["label"]} for r in result]


@app.post("/predict")
def predict(req: PredictRequest):
    with torch.inference_mode():
        if isinstance(req.inputs, str):
            return ranked(classify(req.inputs, truncation=True, max_length=128)[0])
        texts = [item[0] for item in req.inputs]
        out = classify(texts, batch_size=len(texts), truncation=True, max_length=128)
        return [ranked(r) for r in out]


@app.get("/health")
def health():
    return {}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", workers=1)
