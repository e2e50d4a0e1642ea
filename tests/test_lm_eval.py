"""lm-evaluation-harness on a converted model, offline: custom task YAMLs over local jsonl files."""

import json
from functools import partial

import pytest
import torch
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from transformers import LlamaConfig, LlamaForCausalLM

from hedgehog.attention import HedgehogFeatureMap, LinearAttention
from hedgehog.models.cache import LinearAttentionCache
from hedgehog.models.conversion import convert
from tests.test_summarization_data import word_tokenizer

QUESTIONS = [
    ("is the sky blue ?", ["yes", "no"], 0),
    ("which animal barks ?", ["cat", "dog", "fish"], 1),
    ("two plus two is", ["three", "four", "five", "six"], 1),
    ("the sun rises in the", ["east", "west"], 0),
    ("which one is a fruit ?", ["apple", "stone", "car"], 0),
    ("water freezes when it is", ["hot", "cold"], 1),
    ("a week has how many days ?", ["five", "six", "seven"], 2),
    ("the opposite of up is", ["down", "left", "right"], 0),
]
MULTIPLE_CHOICE = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
GENERATION = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs:
  until: ["?"]
  max_gen_toks: 5
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def tokenizer():
    return word_tokenizer([f"{q} {' '.join(c)}" for q, c, _ in QUESTIONS])


def linear_llama(vocab_size: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    model = LlamaForCausalLM(config).eval()
    convert(model, partial(LinearAttention, feature_map=HedgehogFeatureMap))
    return model


def write_task(folder, template: str) -> TaskManager:
    """The 8 questions as local jsonl and a task YAML reading them; a task manager that sees only it."""
    data = folder / "questions.jsonl"
    data.write_text(
        "".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS)
    )
    (folder / "task.yaml").write_text(template.format(data=data))
    return TaskManager(include_path=str(folder), include_defaults=False)


def direct_loglikelihood(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context) from one forward of the tokens of context + " " + continuation."""
    whole = tok(f"{context} {continuation}")["input_ids"]
    start = len(tok(context)["input_ids"])
    with torch.no_grad():
        logprobs = model(input_ids=torch.tensor([whole]), use_cache=False).logits[0].log_softmax(-1)
    return sum(float(logprobs[j - 1, whole[j]]) for j in range(start, len(whole)))


def test_multiple_choice_through_hflm_equals_the_direct_loglikelihood_choice(tmp_path):
    """The documented call, no glue: HFLM(pretrained=converted model, tokenizer=tokenizer)."""
    tok = tokenizer()
    model = linear_llama(len(tok))
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=3)  # batches of unequal lengths, right-padded
    out = simple_evaluate(model=lm, tasks=["tiny_mc"], task_manager=write_task(tmp_path, MULTIPLE_CHOICE))
    samples = sorted(out["samples"]["tiny_mc"], key=lambda s: s["doc_id"])
    correct = 0
    for sample, (question, choices, answer) in zip(samples, QUESTIONS, strict=True):
        direct = [direct_loglikelihood(model, tok, question, c) for c in choices]
        harness = [loglikelihood for loglikelihood, _ in sample["filtered_resps"]]
        assert harness == pytest.approx(direct, abs=1e-4)
        correct += int(max(range(len(choices)), key=direct.__getitem__) == answer)
    assert out["results"]["tiny_mc"]["acc,none"] == pytest.approx(correct / len(QUESTIONS))


def test_generation_decodes_from_the_state_through_the_plain_wrapper(tmp_path):
    """Generative tasks too need no glue: a converted linear model's generate() brings its own state cache."""
    tok = tokenizer()
    model = linear_llama(len(tok))
    manager = write_task(tmp_path, GENERATION)
    out = simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tok, batch_size=4), tasks=["tiny_gen"], task_manager=manager
    )
    samples = sorted(out["samples"]["tiny_gen"], key=lambda s: s["doc_id"])
    for sample, (question, _, _) in zip(samples, QUESTIONS, strict=True):
        ids = torch.tensor([tok(question)["input_ids"]])
        with torch.no_grad():
            greedy = model.generate(ids, max_new_tokens=5, do_sample=False, cache=LinearAttentionCache(model))
        text = tok.decode(greedy[0, ids.shape[1] :], skip_special_tokens=True).split("?")[0]
        assert sample["filtered_resps"][0] == text
