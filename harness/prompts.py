"""Turn Examples into token ids, the same way for training and evaluation.

With a chat template: [system] + (user, assistant) per few-shot exemplar + user, then the
generation prompt; the target is the assistant's reply followed by the template's end-of-turn
token, so training teaches the model to stop and scoring counts that token too.
Without a chat template: plain text, "prompt\n" then "target", ended by the EOS token.
"""

from __future__ import annotations

from functools import lru_cache

from harness.backend import Example, TaskFormat

PLAIN_SEPARATOR = "\n\n"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, task: TaskFormat, shots: tuple[Example, ...], example: Example) -> str:
    """The full prompt text, up to where the model's answer starts."""
    if not has_chat_template(tokenizer):
        parts = [task.system] if task.system else []
        parts += [f"{s.prompt}\n{s.target}" for s in shots]
        parts.append(f"{example.prompt}\n")
        return PLAIN_SEPARATOR.join(parts)
    messages = [{"role": "system", "content": task.system}] if task.system else []
    for shot in shots:
        messages += [{"role": "user", "content": shot.prompt},
                     {"role": "assistant", "content": shot.target}]
    messages.append({"role": "user", "content": example.prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def end_of_turn_id(tokenizer) -> int:
    """The token that ends an assistant reply: found by rendering one, not guessed from names."""
    return _end_of_turn_id(tokenizer)


@lru_cache(maxsize=8)
def _end_of_turn_id(tokenizer) -> int:
    if has_chat_template(tokenizer):
        marker = "harness-end-probe"
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}], tokenize=False)
        after = text.split(marker, 1)[1]
        ids = tokenizer(after, add_special_tokens=False)["input_ids"]
        if ids and ids[0] in tokenizer.all_special_ids:
            return ids[0]
    return tokenizer.eos_token_id


def encode_prompt(tokenizer, text: str) -> list[int]:
    # The chat template already wrote any BOS it wants; plain prompts get the tokenizer's own.
    return tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"]


def encode_target(tokenizer, target: str) -> list[int]:
    return tokenizer(target, add_special_tokens=False)["input_ids"] + [end_of_turn_id(tokenizer)]


def encode_pair(tokenizer, task: TaskFormat, shots, example: Example) -> tuple[list[int], list[int]]:
    prompt = encode_prompt(tokenizer, render_prompt(tokenizer, task, shots, example))
    return prompt, encode_target(tokenizer, example.target)
