"""Generate text from a trained or converted model: ``hedgehog-generate``.

    hedgehog-generate outputs/gpt2_wt103/runs/hedgehog-s0 --prompt "The jury said"
    hedgehog-generate outputs/gpt2_wt103/pretrained/embedded/softmax-s0 --prompt "..." --temperature 0.8 --top-p 0.9
    hedgehog-generate outputs/llama_samsum/converted/hedgehog-s0 --chat --prompt "Summarize the following text. ..."

The model is one of:

- a run folder of ``python -m hedgehog.train`` (``outputs/<experiment>/runs/<run>/``): its
  ``record.json`` holds the resolved config the model and tokenizer are rebuilt from, and its
  ``checkpoints/`` the weights (``--checkpoint last`` or ``best``);
- a saved converted model (what ``task.save_converted`` or ``hedgehog.models.saving.save_converted``
  writes: ``hedgehog_config.json`` and ``trained.safetensors``): its base model is loaded by name,
  converted with the saved attention, given its LoRA adapters and trained tensors
  (``load_converted``); the tokenizer is the base model's;
- a Hugging Face model folder with its tokenizer (what ``task.save_pretrained`` writes): loaded with
  softmax attention as saved.

``--chat`` wraps the prompt in the tokenizer's chat template as a user turn and opens the assistant's
(instruct models, and the summarisation runs that trained with ``data.chat_template``).

A model whose converted layers decode from their own state (linear attention, H3, Hyena; Hybrid H3's
softmax layers keep their keys beside them) uses ``LinearAttentionCache``, chosen by the converted model
itself, so with linear attention or H3 each new token costs the same at any context; softmax models use
transformers' key cache. Greedy by default; ``--temperature`` turns sampling on, with ``--top-k``
and ``--top-p``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn


def load_run(run: Path, checkpoint: str = "last") -> tuple[nn.Module, Any]:
    """The model (weights from the run's checkpoint) and tokenizer of a training run folder."""
    record_file = run / "record.json"
    if not record_file.exists():
        raise FileNotFoundError(
            f"{run} holds no record.json: pass a finished run's folder (outputs/<experiment>/runs/<run>/) "
            "or a saved model folder"
        )
    cfg = OmegaConf.create(json.loads(record_file.read_text())["config"])
    data = instantiate(cfg.data)
    data.setup()
    model = instantiate(cfg.model)
    if not isinstance(model, nn.Module):  # a constructor (the conversion recipe builds the model itself)
        model = model()
    ckpt_file = run / "checkpoints" / f"{checkpoint}.ckpt"
    if not ckpt_file.exists():
        raise FileNotFoundError(
            f"{ckpt_file} not found: this run kept no {checkpoint!r} checkpoint ({sorted(p.name for p in (run / 'checkpoints').glob('*.ckpt')) if (run / 'checkpoints').exists() else 'no checkpoints/ folder'}); "
            "runs with callbacks=no_checkpoints save their model otherwise"
        )
    state = torch.load(ckpt_file, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return model, data.tokenizer


def load_saved_model(folder: Path) -> tuple[nn.Module, Any]:
    """A Hugging Face model folder with its tokenizer, with the attention it was saved with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def load_converted_model(folder: Path) -> tuple[nn.Module, Any]:
    """A saved converted model (``save_converted``) and its base model's tokenizer."""
    from hedgehog.models.pretrained import load_tokenizer
    from hedgehog.models.saving import CONFIG_FILE, load_converted

    base = json.loads((folder / CONFIG_FILE).read_text())["base_model"]["name"]
    return load_converted(folder), load_tokenizer(base)


def load(path: str | Path, checkpoint: str = "last") -> tuple[nn.Module, Any]:
    """A run folder, a saved converted model or a saved model folder -> (model in eval mode, tokenizer)."""
    from hedgehog.models.saving import CONFIG_FILE

    path = Path(path)
    if (path / "record.json").exists():
        model, tokenizer = load_run(path, checkpoint)
    elif (path / CONFIG_FILE).exists():
        model, tokenizer = load_converted_model(path)
    elif (path / "config.json").exists():
        model, tokenizer = load_saved_model(path)
    else:
        raise FileNotFoundError(
            f"{path} is neither a run folder (with record.json and checkpoints/), a saved converted model (with "
            f"{CONFIG_FILE}) nor a saved model folder (with config.json and a tokenizer)"
        )
    return model.eval(), tokenizer


def _ids(tokenizer: Any, text: str, chat: bool = False) -> list[int]:
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("--chat needs a tokenizer with a chat template; this one has none")
        return list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": text}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
        )
    encoded = tokenizer.encode(text)
    return encoded.ids if hasattr(encoded, "ids") else list(encoded)


def generate(
    model: nn.Module,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int = 50,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    chat: bool = False,
) -> str:
    """The continuation of ``prompt`` (greedy when temperature is 0, else sampled); ``chat``: as a chat turn."""
    ids = _ids(tokenizer, prompt, chat)
    if not ids:
        raise ValueError("the prompt encodes to no tokens; give some text")
    torch.manual_seed(seed)
    sampling = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_k": top_k or 0, "top_p": top_p or 1.0}
    eos = model.config.eos_token_id
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            pad_token_id=eos if eos is not None else 0,
            use_cache=True,
            **sampling,
        )
    return tokenizer.decode(out[0, len(ids) :].tolist(), **({"skip_special_tokens": True} if chat else {}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hedgehog-generate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "model",
        help="a run folder (outputs/<experiment>/runs/<run>), a saved converted model or a saved model folder",
    )
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the default)")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default="last", help="a run's checkpoint: last or best")
    parser.add_argument(
        "--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template"
    )
    args = parser.parse_args(argv)
    if args.temperature < 0:
        parser.error("--temperature must be >= 0")
    model, tokenizer = load(args.model, args.checkpoint)
    text = generate(
        model,
        tokenizer,
        args.prompt,
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.top_p,
        args.seed,
        args.chat,
    )
    print(text if args.chat else args.prompt + text)


if __name__ == "__main__":
    main()
