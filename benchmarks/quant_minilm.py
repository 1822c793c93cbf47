"""Benchmark 2 (+3): real all-MiniLM-L6-v2 sentence encoder, mmdk INT8 under an accuracy budget.

    .venv/bin/python benchmarks/quant_minilm.py            # ~5 min on 2 busy cores

Targets (issue 4): mean cosine >= 0.995 of mean-pooled sentence embeddings vs torch FP32, same nearest
neighbour for >= 97% of >= 64 varied sentences, >= 3x faster than torch eager FP32 at batch 8. The same
FP32 graph also goes through Optimum's ORTQuantizer (avx512_vnni preset) in the same run.

Calibration / held-out budget data: CALIBRATION sentences below (never the evaluation sentences).
Evaluation: the 72 EVAL sentences, in batches of 8 padded to the longest.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quant_common import (bench_artifacts, embedding_accuracy, finish, optimum_json, optimum_line,  # noqa: E402
                          optimum_variants, timed_threads, timing_table)

BUDGET = "cosine>=0.997"
LOOSE_BUDGET = "cosine>=0.992"  # about Optimum's accuracy: shows the speed at equal accuracy
IO = {"inputs": [{"name": "input_ids", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"],
                  "range": [0, 30522]},
                 {"name": "attention_mask", "modality": "text", "dtype": "int64", "shape": ["batch", "seq"],
                  "range": [1, 2]}],
      "outputs": ["sentence_embedding"], "dims": {"batch": [1, 64], "seq": [1, 128]}}

EVAL = [
    "The cat sat on the warm windowsill all afternoon.", "A kitten was napping in the sunny window.",
    "My dog loves chasing tennis balls in the park.", "The puppy ran after the ball across the grass.",
    "Stock markets fell sharply after the interest rate announcement.", "Shares dropped when the central bank raised rates.",
    "The company reported record quarterly profits.", "Revenue grew twenty percent compared with last year.",
    "How do I reset my password?", "I forgot my login credentials and cannot sign in.",
    "The recipe calls for two cups of flour and three eggs.", "Whisk the eggs before folding in the flour.",
    "Heavy rain is expected throughout the weekend.", "The forecast says storms will hit on Saturday.",
    "It was a bright, cloudless summer morning.", "The football team won the championship final.",
    "The striker scored twice in the second half.", "She practices the violin every evening.",
    "He has been learning to play the piano for years.", "The new smartphone has a larger battery and a better camera.",
    "This laptop's screen is bright but the keyboard feels cheap.", "Quantum computers use qubits instead of classical bits.",
    "Neural networks learn representations from large datasets.", "The museum opens a new exhibition of impressionist paintings.",
    "Tourists queued for hours to see the famous sculpture.", "The train to Berlin was delayed by forty minutes.",
    "Our flight was cancelled because of fog at the airport.", "Drink plenty of water when exercising in hot weather.",
    "Regular exercise lowers the risk of heart disease.", "The doctor prescribed antibiotics for the infection.",
    "Climate change is causing glaciers to melt faster.", "Sea levels are rising as the polar ice sheets shrink.",
    "Volcanic eruptions can disrupt air travel for days.", "The senator proposed a bill to reform healthcare.",
    "Voters will elect a new mayor next month.", "The children built a sandcastle on the beach.",
    "Waves crashed against the rocky shore at dusk.", "Fresh bread smells wonderful in the morning.",
    "This coffee is too bitter for my taste.", "I prefer green tea with a slice of lemon.",
    "The library extended its opening hours during exams.", "Students are studying late for their final tests.",
    "The professor explained the theory of relativity.", "A black hole's gravity is so strong that light cannot escape.",
    "Astronomers discovered a planet orbiting a distant star.", "The garden is full of roses and tulips in spring.",
    "Autumn leaves turned red and gold along the river.", "He fixed the leaking kitchen faucet himself.",
    "The plumber replaced the broken pipe under the sink.", "Please remember to lock the door when you leave.",
    "The concert was sold out within minutes.", "The band played their greatest hits until midnight.",
    "A thriller novel kept me awake all night.", "The author signed copies of her latest book.",
    "Electric cars are becoming cheaper every year.", "The city is building more bike lanes downtown.",
    "Traffic jams are getting worse on the highway.", "The startup raised fifty million dollars in funding.",
    "Investors are worried about rising inflation.", "My grandmother knits warm scarves for the winter.",
    "Snow covered the mountains after the blizzard.", "Skiers enjoyed fresh powder on the slopes.",
    "The chef seasoned the soup with basil and garlic.", "Spicy food makes my eyes water.",
    "The software update fixed several security bugs.", "Hackers stole customer data from the online store.",
    "Bees pollinate flowers and help crops grow.", "The farmer harvested wheat before the rain.",
    "Is there a pharmacy open near the station?", "Where can I buy tickets for the museum?",
    "The baby laughed when the dog licked her hand.", "Whales migrate thousands of kilometres each year.",
]
TOPICS = ["the weather", "football", "cooking pasta", "the stock market", "learning languages", "space travel",
          "a birthday party", "the new phone", "gardening", "a job interview", "train delays", "the hospital",
          "a mountain hike", "jazz music", "the election", "online shopping", "a broken laptop", "summer holidays",
          "the city library", "climate policy", "a chess tournament", "painting classes", "the school exam",
          "coffee shops", "electric cars", "a wedding", "ocean fishing", "a rock concert", "cybersecurity",
          "the museum", "yoga", "a rainy day"]
FRAMES = ["I read an article about {t} this morning.", "Can you tell me more about {t}?",
          "My friend will not stop talking about {t}.", "Everyone at work was discussing {t} yesterday.",
          "There is a documentary on {t} tonight, do you want to watch it?",
          "Honestly, {t} is the most boring topic in the world.", "What do you think about {t}?",
          "We spent the whole evening arguing about {t}.", "The newspaper had three pages on {t}.",
          "I never expected {t} to be so complicated.", "Our teacher asked us to write an essay on {t}.",
          "A stranger on the bus told me all about {t}."]
CALIBRATION = [FRAMES[(k // len(TOPICS) + k) % len(FRAMES)].format(t=TOPICS[k % len(TOPICS)]) for k in range(192)]


def sentence_encoder():
    """Factory (mmdk loads it as benchmarks/quant_minilm.py:sentence_encoder): mean-pooled, L2-normalised."""
    import torch
    from transformers import AutoModel

    from mmdeploy_kit.demo_checkpoint import minilm_dir

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(minilm_dir()))

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(e, dim=-1)

    return SentenceEncoder().eval()


def nn_agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    """Share of sentences whose nearest other sentence (cosine) is the same under ``cand`` as under ``ref``."""
    from mmdeploy_kit.runtime.metrics import l2_normalize

    def nn(e: np.ndarray) -> np.ndarray:
        e = l2_normalize(e)
        s = e @ e.T
        np.fill_diagonal(s, -9)
        return s.argmax(1)

    return float((nn(ref) == nn(cand)).mean())


def main() -> None:
    import json

    import torch
    from transformers import AutoTokenizer

    import mmdeploy_kit as mmdk
    from mmdeploy_kit.demo_checkpoint import minilm_dir

    torch.set_num_threads(2)
    factory = f"{Path(__file__).resolve()}:sentence_encoder"
    tmp = Path(tempfile.mkdtemp(prefix="mmdk-bench-minilm-"))
    print(f"work dir {tmp}")
    mmdk.export(factory, tmp / "fp32", io=IO)
    (tmp / "calib.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in CALIBRATION))
    t0 = time.perf_counter()
    man = mmdk.quantize(tmp / "fp32", tmp / "int8", method="auto", accuracy_budget=BUDGET, calib_data=tmp / "calib.jsonl",
                        processor=minilm_dir(), progress=lambda m: print("  ·", m))
    q_seconds = time.perf_counter() - t0
    art = man.artifacts[0]
    kept = art.details["nodes"]["fp32_nodes"]
    print(f"mmdk quantize: {q_seconds:.0f}s, method {art.details['quantizer']['method']}, "
          f"{len(kept)}/{art.details['nodes']['candidate_nodes']} nodes kept FP32, held-out cosine "
          f"{art.verification['cosine']:.5f}")
    loose = mmdk.quantize(tmp / "fp32", tmp / "int8_loose", method="auto", accuracy_budget=LOOSE_BUDGET,
                          calib_data=tmp / "calib.jsonl", processor=minilm_dir())
    opt, opt_paths = optimum_variants(tmp / "fp32" / "model.onnx", tmp / "optimum")

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    batches = []
    for i in range(0, len(EVAL), 8):
        enc = tok(EVAL[i:i + 8], padding=True, return_tensors="np")
        batches.append({"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)})
    model = mmdk.load(factory, io=IO).towers["model"].module
    ref = np.concatenate([model.run_numpy(b)["sentence_embedding"] for b in batches])
    paths = {"mmdk_int8": tmp / "int8" / "model.onnx", "mmdk_int8_loose": tmp / "int8_loose" / "model.onnx",
             "ort_fp32": tmp / "fp32" / "model.onnx", **opt_paths}
    accuracy = embedding_accuracy(ref, paths, batches, digits=5,
                                  extra=lambda r, e: {"same_nearest_neighbour": round(nn_agreement(r, e), 4)})
    seq = max(b["input_ids"].shape[1] for b in batches)
    timing = {"warmup_runs": 3, "min_runs": 15, "min_time_s": 1.0, "min_rounds": 8, "max_time_s": 60.0}
    timings = timed_threads(bench_artifacts(paths), f"torch={factory}", 8, seq, io=IO, timing=timing)

    lines = [f"# all-MiniLM-L6-v2: mmdk INT8 (budget `{BUDGET}`) vs torch eager FP32 and Optimum", "",
             f"{len(EVAL)} evaluation sentences (not used for calibration); batch 8; seq {seq} for timing.", "",
             "| path | mean cosine vs torch FP32 | min cosine | same nearest neighbour |", "|---|---|---|---|"]
    for label, a in accuracy.items():
        lines.append(f"| {label} | {a['cosine_mean']:.5f} | {a['cosine_min']:.5f} | {a['same_nearest_neighbour']:.1%} |")
    lines += ["", *timing_table(timings, "torch eager FP32"), "",
              f"mmdk: method {art.details['quantizer']['method']}, {len(kept)} of "
              f"{art.details['nodes']['candidate_nodes']} MatMuls kept FP32 by the budget "
              f"({', '.join(n['name'] for n in kept)}); quantize took {q_seconds:.0f}s.",
              f"mmdk_int8_loose: budget `{LOOSE_BUDGET}` (about Optimum's accuracy): "
              f"{len(loose.artifacts[0].details['nodes']['fp32_nodes'])} MatMuls kept FP32.",
              optimum_line(opt)]
    finish("quant_minilm", {"budget": BUDGET, "accuracy": accuracy, "timing_batch8": timings,
                            "mmdk": {"quantize_seconds": round(q_seconds, 1), "fp32_nodes": kept,
                                     "verification": art.verification, "search": art.details.get("mixed_precision")},
                            "optimum": optimum_json(opt)}, lines)


if __name__ == "__main__":
    main()
