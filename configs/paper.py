"""The paper's twelve tasks, one config each: `paper.py:TASK`, the paper's setup on a TPU v4-32,
and `paper.py:TASK,cpu`, the same task, data and evaluator on the embedded tribe.

    python -m sparta_jax.main --config=configs/paper.py:gsm8k --workdir=gs://BUCKET/gsm8k \
        --config.tribe.base=/path/Qwen2.5-7B-Instruct "--config.tribe.adapters=('/experts/a', '/experts/b', ...)"
    python -m sparta_jax.main --config=configs/paper.py:normad_country --config.data.root=/path/sparta/data ...
    python -m sparta_jax.main --config=configs/paper.py:medqa --config.method=spin ...  # a baseline, same evaluation
    python -m sparta_jax.main --config=configs/paper.py:gsm8k,cpu --workdir=/tmp/gsm8k  # 2-core CPU
    python -m sparta_jax.aot --config=configs/paper.py:gsm8k --topology=v4:2x2x4 --model_shape=qwen2.5-7b

TASK: gsm8k, math_easy, math_medium, math_hard, medqa, normad_country, normad_value,
normad_rule_of_thumb, kcross, com2, truthfulqa, alpaca (sparta_jax/paper_tasks.py: the files,
prompts and evaluator of each).

TPU form: ten Qwen2.5-7B-Instruct LoRA experts on a v4-32 with the paper's loop settings
(`tpu_settings`, the settings configs/tpu_v4.py held; configs/tpu_v4.py is now paper.py:gsm8k).

Data. The authors' released files (kind "paper"; `data.root` is their data/ folder, /data/sparta
a placeholder) where they hold the task with the reference answers a dev split needs, else the
public dataset by name (kind "hf": fetched by `datasets`, or a local copy with
--config.data.name=/path/folder); the prompts are the released ones either way:
- gsm8k: hf. The released train questions have no answers, so no dev split held out of them can
  be scored; openai/gsm8k's train holds the same questions with answers (given the released
  instruction line) and its test is the released test.json.
- math_*: the released train by difficulty; test from the public MATH test by level
  ("public_splits"; the released copy holds training problems only).
- medqa: hf (not in the released copy; GBaker/MedQA-USMLE-4-options, which has no dev split).
- normad_*: the released train / test / valid files.  kcross, com2: released only (no public
  dataset).  alpaca: the released instructions.
- truthfulqa: the released training prompts; dev (100) and test (717) from the public MC questions.

Evaluation: greedy decoding (temperature 0, as configs/base.py); prompts of up to 1024 tokens
(NormAd's country backgrounds and MATH problems run past 512, and a prompt is cut from its
end, which would drop the question). Per task, the TPU form's dev items (the best member is
picked on them), test items (the whole test split; "all" = every item) and answer budget:

| task | dev | test | new tokens | where dev and test come from |
|---|---:|---:|---:|---|
| gsm8k | 200 | 1319 | 512 | dev held out of train; test the public one |
| math_easy, _medium, _hard | 200 | 1331, 1131, 2538 | 512 | dev held out of train; test the public levels 1-2, 3, 4-5 |
| medqa | 200 | 1273 | 256 | dev held out of train; test the public one |
| normad_country | 53 | 263 | 128 | the released valid and test splits, whole |
| normad_value, normad_rule_of_thumb | all | all | 128 | the released valid and test splits, whole |
| kcross | 100 | 100 | 256 | both held out of the released 1000 (a tenth each) |
| com2 | 200 | all | 128 | the released rows' datasplit; held out of train (200 / 200) when it names none |
| truthfulqa | 100 | 717 | - | dev and test the public MC questions (MC1 / MC2 by log-likelihood): see below |
| alpaca | 100 | 200 | 512 | both held out of the released instructions; judged 1-10 by `evaluation.judge` |

Answer budgets: 512 (the paper's answer length) where the answer ends a chain of reasoning (GSM8K,
MATH) or is open-ended (Alpaca); 256 for an option letter (MedQA, Knowledge Crosswords): chat
models give a short rationale first and the extractor reads the last "the answer is X", so a cut
rationale loses the letter; 128 for NormAd (a verdict and a few sentences of justification:
the authors' keyword rule reads the whole text, so more text only adds stray keywords) and COM2
(the evaluator reads the first 64 words, about 85 tokens). TruthfulQA generates nothing.

Alpaca's answers are judged by a model outside the tribe, `evaluation.judge` (a placeholder
folder to point at a judge model): the members cannot be the judges of their own final
evaluation. The `cpu` form judges them with the embedded SmolLM2-135M-Instruct base.

TruthfulQA's only labelled questions are the 817 of the public MC set (the released training
prompts carry no MC targets), so its dev split is a seeded 100 of them and its test the other
717 (sparta_jax/paper_tasks.py): the only task whose dev comes out of its test, and the paper's
figure is on all 817.

`cpu` form: configs/base.py's tribe (four SmolLM2-135M-Instruct LoRA members, `logits`
judges, the `fixed` mode and its CPU DPO settings: its docstring says why) on the TPU form's data
source and evaluator, with the same answer budgets, sized to finish in about 15 minutes on a
2-core CPU (`CPU_SIZES`; each task's time is in BENCHMARKS.md, "The paper's tasks, `cpu` forms":
4.4 to 13.9 min with other jobs beside them, Alpaca 11.4 alone (17.8 at a load of 7); the evaluations take
most of it, as the untrained members' answers run to the budget). It reads the task's real data,
not tests/data/paper_formats: those files hold three rows each, and GSM8K's have no answers for a
dev split (benchmarks/paper_cpu_runs.py repeats them to size to time the runs).
"""
import dataclasses

import ml_collections

from sparta_jax.config_files import sibling_config

ROOT = "/data/sparta"  # placeholder: the authors' released data/ folder (--config.data.root=...)
JUDGE = "/data/models/judge"  # placeholder: a judge model folder for Alpaca (--config.evaluation.judge=...)
ALL = 1_000_000  # evaluation.dev / test: every item of the split (evaluation takes the first n)
EVAL_PROMPT_TOKENS = 1024


@dataclasses.dataclass(frozen=True)
class TaskSetup:
    kind: str  # "paper" (the released files under data.root) or "hf" (the public dataset)
    dev: int  # evaluation.dev on the TPU form
    test: int  # evaluation.test on the TPU form: the whole test split
    max_new_tokens: int  # the evaluation's answer budget (the module docstring says why)
    data: dict = dataclasses.field(default_factory=dict)  # more keys of the data source


def _math(test: int) -> TaskSetup:
    return TaskSetup("paper", 200, test, 512, dict(public_splits=("test",), dev=200))


TASKS = {
    "gsm8k": TaskSetup("hf", 200, 1319, 512, dict(dev=200)),
    "math_easy": _math(1331),
    "math_medium": _math(1131),
    "math_hard": _math(2538),
    "medqa": TaskSetup("hf", 200, 1273, 256, dict(dev=200)),
    "normad_country": TaskSetup("paper", 53, 263, 128),
    "normad_value": TaskSetup("paper", ALL, ALL, 128),
    "normad_rule_of_thumb": TaskSetup("paper", ALL, ALL, 128),
    "kcross": TaskSetup("paper", 100, 100, 256, dict(dev=100, test=100)),
    "com2": TaskSetup("paper", 200, ALL, 128, dict(dev=200, test=200)),
    # 512 is never used: every option is scored by its log-likelihood, nothing is generated.
    "truthfulqa": TaskSetup("paper", 100, 717, 512, dict(public_splits=("test",), dev=100)),
    "alpaca": TaskSetup("paper", 100, 200, 512, dict(dev=100, test=200)),
}
TASK_NAMES = tuple(TASKS)

# The cpu form: (iterations, duels per iteration, dev items, test items), all tasks alike.
CPU_SIZES = dict(iterations=1, instructions_per_iteration=8, dev=8, test=24)


def data_source(task: str) -> ml_collections.ConfigDict:
    """The task's data source. "root" and "name" are there for every kind so that either can be
    overridden: "root" is read by kind "paper", "name" ("" = the task's own public dataset) by
    "hf" and by a paper source's public splits."""
    setup = TASKS[task]
    return ml_collections.ConfigDict(dict(kind=setup.kind, task=task, root=ROOT, name="", seed=0, **setup.data))


def tpu_settings(c: ml_collections.ConfigDict) -> None:
    """The paper's loop on a v4-32 (docs/algorithm.md §2): 8 iterations x 1000 duels, alpha 0.6, k 5, sampling
    T .7 / top-k 50 / top-p .95, 512 new tokens (answers) and 256 (judges), prompts cut at 512
    tokens, DPO beta 0.1, lr 1e-6 cosine with 10% warmup, weight decay 1e-5, 1 epoch, max length
    512 / prompt 256, the released code's `faithful` mode. One deliberate difference: a DPO step
    takes 16 pairs (4 micro-batches of 4, every member at once) where the released code takes 1:
    ~1000 sequential steps of 10 tiny sequences would leave a 16-chip slice almost idle. For the
    released schedule: --config.dpo.pairs_per_step=1 --config.dpo.grad_accum=1."""
    c.iterations = 8
    c.instructions_per_iteration = 1000
    c.tribe.base = "/data/models/Qwen2.5-7B-Instruct"
    c.tribe.adapters = ()  # ten PEFT expert folders (code_alpaca, cot, flan_v2, ...)
    c.tribe.members = 10
    c.tribe.lora_rank = 64
    c.tribe.lora_alpha = 128.0
    c.tribe.dtype = "bfloat16"
    c.tribe.param_dtype = "bfloat16"
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 4  # v4-32 (16 chips): fsdp 4 x tensor 4
    c.generation.max_new_tokens = 512
    c.generation.batch_size = 256
    c.judge.mode = "sampled"
    c.judge.max_new_tokens = 256
    c.judge.batch_size = 512
    c.mode = "faithful"  # the released code (configs/base.py repairs it on CPU)
    c.dpo.learning_rate = 1e-6
    c.dpo.epochs = 1
    c.dpo.warmup_ratio = 0.1
    c.dpo.pairs_per_step = 16  # released: 1 (see above)
    c.dpo.grad_accum = 4  # 4 pairs x 10 members per micro-step (see the AOT table in docs/results.md, "TPU and GPU readiness")
    c.dpo.max_length = 512
    c.dpo.max_prompt_length = 256
    c.dpo.logps_chunk = 128
    # Keep every projection's output, recompute the rest (norms, RoPE, activations, attention):
    # `aot --roofline --remat_modes=full,dots` on v4:2x2x4 puts the DPO step at 18.7 GiB a chip and
    # a 93.8% MFU ceiling, against 7.5 GiB and 70.8% recomputing each layer ("full").
    c.dpo.remat = "dots"
    c.sampler.cache_dtype = "bfloat16"
    c.sampler.candidates = 64
    # Rows refilled as answers end, 32 prefilled together: `aot --iteration` with the measured
    # GSM8K / MATH answer lengths prices the answers 16.6 -> 11.5 s on v4-32 (BENCHMARKS.md).
    c.sampler.refill_rows = 32
    # Layer weights sliced once per generate call (configs/base.py): on v4-32 the copy is a
    # sixteenth of the weights per chip, and `aot` puts generate at 3.79 GiB a chip this way
    # against 4.25 GiB with "per_step" (BENCHMARKS.md, "Generate without a copy of the layers").
    c.sampler.slice_layers = "per_call"
    # The partitioned decode step's attention and MLP as Pallas kernels on TPU (XLA's ops elsewhere):
    # `aot --roofline` on v4:2x2x4 puts the step at 1.24x its ideal bytes, against 1.37x with XLA's
    # fusions (BENCHMARKS.md, "Where the decode step's bytes go"). Compiled by Mosaic and checked
    # interpreted on CPU; not yet run on a TPU: "xla" is the fallback.
    c.sampler.decode_kernels = "pallas"
    c.checkpoint.max_to_keep = 3
    c.distributed.initialize = True  # TPU pods discover their peers
    c.evaluation.batch_size = c.generation.batch_size  # the answers' batch shape


def evaluation_settings(c: ml_collections.ConfigDict, task: str, dev: int, test: int) -> None:
    setup = TASKS[task]
    c.evaluation.dev, c.evaluation.test = dev, test
    c.evaluation.max_new_tokens = setup.max_new_tokens
    c.evaluation.max_prompt_tokens = EVAL_PROMPT_TOKENS
    c.evaluation.temperature, c.evaluation.top_k, c.evaluation.top_p = 0.0, 0, 1.0  # greedy
    c.data = data_source(task)


def get_config(arg: str = "gsm8k"):
    task, _, form = arg.partition(",")
    if task not in TASKS or form not in ("", "cpu"):
        raise ValueError(f"paper.py:{arg}: write TASK or TASK,cpu with TASK one of {', '.join(TASK_NAMES)}")
    c = sibling_config(__file__, "base")
    if form == "cpu":
        c.iterations = CPU_SIZES["iterations"]
        c.instructions_per_iteration = CPU_SIZES["instructions_per_iteration"]
        evaluation_settings(c, task, CPU_SIZES["dev"], CPU_SIZES["test"])
        if task == "alpaca":
            c.evaluation.judge = "embedded"  # the base SmolLM2-135M-Instruct, no member's adapter
        return c
    tpu_settings(c)
    evaluation_settings(c, task, TASKS[task].dev, TASKS[task].test)
    if task == "alpaca":
        c.evaluation.judge = JUDGE
    return c
