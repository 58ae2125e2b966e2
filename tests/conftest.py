"""Fixtures: a tiny random Llama with a locally trained tokenizer; the hub is switched off."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

REVIEWS = [
    ("Loved every minute, the staff were wonderful and kind.", "positive"),
    ("Terrible service and the food arrived cold.", "negative"),
    ("A delightful book that I could not put down.", "positive"),
    ("The app crashes every time I open it.", "negative"),
    ("Great value, works exactly as described.", "positive"),
    ("Broke after two days, a complete waste of money.", "negative"),
    ("Friendly hosts and a spotless, quiet room.", "positive"),
    ("Boring plot and wooden acting throughout.", "negative"),
    ("Fast delivery and the quality is excellent.", "positive"),
    ("Rude staff, dirty tables, never again.", "negative"),
    ("Not bad at all, I would happily buy it again.", "positive"),
    ("Oh great, another update that deletes my notes.", "negative"),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_tokenizer(directory: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [text for text, _ in REVIEWS] * 3 + ["positive negative Review: Is this review positive or negative?",
                                                  "system user assistant You classify sentiment."]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>",
                                   pad_token="<pad>")
    fast.chat_template = CHATML
    fast.save_pretrained(directory)
    return fast


def build_tiny_llama(directory: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path_factory.getbasetemp() / "harness-cache"))


def make_suite(directory: Path, model_dir: Path, backends: str | None = None, extra: str = "") -> Path:
    """A tiny classification suite on REVIEWS: train = the first 8 reviews, test = the last 4 plus the first 2."""
    rows = [{"id": f"r{i}", "text": t, "label": y} for i, (t, y) in enumerate(REVIEWS)]
    write_jsonl(directory / "data" / "train.jsonl", rows[:8])
    write_jsonl(directory / "data" / "test.jsonl", rows[8:] + rows[:2])
    backends = backends or (
        "  zero-shot: {type: prompt, shots: 0}\n"
        "  few-shot: {type: prompt, shots: 2}\n"
        "  full: {type: full, max_steps: 2, batch_size: 4, learning_rate: 1e-3}\n"
        "  lora: {type: lora, max_steps: 2, batch_size: 4, learning_rate: 1e-2}\n"
        "  qlora: {type: qlora, max_steps: 2, batch_size: 4, learning_rate: 1e-2}\n")
    path = directory / "suite.yaml"
    path.write_text(
        "name: tiny\n"
        f"model: {model_dir}\n"
        "task:\n  kind: classification\n  system: You classify sentiment.\n"
        "  prompt: \"Review: {text}\\nIs this review positive or negative?\"\n"
        "  labels: [negative, positive]\n"
        "data: {train: data/train.jsonl, test: data/test.jsonl}\n"
        "metrics: [accuracy, macro_f1, exact_match, perplexity]\n"
        f"backends:\n{backends}{extra}", encoding="utf-8")
    return path


GENERAL_MC = [
    ("Which is a colour?", ["red", "table", "seven", "run"], 0),
    ("Which animal barks?", ["cat", "dog", "fish", "bird"], 1),
    ("What is two plus two?", ["three", "five", "four", "six"], 2),
    ("Which is a fruit?", ["car", "stone", "chair", "apple"], 3),
    ("Which one is hot?", ["fire", "snow", "ice", "rain"], 0),
    ("Which is a day of the week?", ["June", "Monday", "winter", "noon"], 1),
    ("Which word means big?", ["small", "thin", "large", "quiet"], 2),
    ("Which is a planet?", ["Moon", "Sun", "comet", "Mars"], 3),
]
GENERAL_SA = [("What colour is the sky?", "blue"), ("How many legs has a cat?", "4"),
              ("What is the opposite of hot?", "cold"), ("What do bees make?", "honey"),
              ("What is one plus one?", "2"), ("What colour is grass?", "green"),
              ("What is frozen water called?", "ice"), ("What do cows drink?", "water")]
GENERAL_TEXT = ["The staff were kind and the room was quiet.", "The food arrived cold and the plot was boring.",
                "Fast delivery and the quality is excellent, works exactly as described.",
                "A delightful book: friendly hosts, great value and a spotless room."]


def write_general_set(directory: Path) -> Path:
    """A small general set (8 multiple-choice, 2+6 short-answer, 4 paragraphs) in `directory`."""
    write_jsonl(directory / "mc.jsonl", [{"id": f"mc{i}", "question": q, "choices": c, "answer": a}
                                         for i, (q, c, a) in enumerate(GENERAL_MC)])
    write_jsonl(directory / "sa.jsonl", [{"id": f"sa{i}", "question": q, "answer": a, "aliases": []}
                                         for i, (q, a) in enumerate(GENERAL_SA)])
    write_jsonl(directory / "text.jsonl", [{"id": f"t{i}", "text": t} for i, t in enumerate(GENERAL_TEXT)])
    path = directory / "general.yaml"
    path.write_text("tasks:\n  mc: {kind: multiple_choice, data: mc.jsonl}\n"
                    "  sa: {kind: short_answer, data: sa.jsonl, shots: 2, max_new_tokens: 4}\n"
                    "  text: {kind: perplexity, data: text.jsonl}\n", encoding="utf-8")
    return path
