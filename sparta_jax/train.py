"""The Sparta loop (docs/algorithm.md §2): instructions -> match-making -> answers -> judgments -> reputations
-> preferences -> reference log-probs -> DPO for all members -> checkpoint -> metrics.

Resumable at any point: each phase of an iteration leaves one file in the iteration's folder,
written atomically, and the end of training leaves an Orbax checkpoint. A restarted run
restores the last checkpoint and redoes only what has no file yet. Every random draw comes
from (seed, iteration, phase), so a resumed run computes exactly what an uninterrupted one
would have.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time

import jax
import numpy as np

from sparta_jax import checkpoints, combat, data as data_lib, dpo, selection, sharding
from sparta_jax.config_check import validate_config
from sparta_jax.errors import ConfigError
from sparta_jax.metrics import MetricsWriter, Progress
from sparta_jax.sparta import (DuelRecord, ReputationConstants, TribeRater, TribeReputation, duel_from_json,
                               duel_to_json, make_matchups, separated)
from sparta_jax.trainer import TribeTrainer, make_trainer, train_phase
from sparta_jax.tribe import (MixedTribe, Tribe, actor_config, build_judge, build_tribe, check_sparta_tribe,
                              context_length)
from sparta_jax.workdir import iteration_dir, read_jsonl, write_json, write_jsonl

PHASE_KEYS = {"answers": 1, "judges": 2, "train": 3, "evaluation": 4}


def phase_key(seed: int, t: int, phase: str):
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), t), PHASE_KEYS[phase])


@dataclasses.dataclass
class RunState:
    """What carries from one iteration to the next."""

    rater: TribeRater | None  # None for the baselines (no reputations)
    trainable: object  # nnx.State: the LoRA stack, or the stacked full parameter sets
    next_iteration: int


def reputation_constants(cfg) -> ReputationConstants:
    fields = {f.name for f in dataclasses.fields(ReputationConstants)}
    return ReputationConstants(**{k: v for k, v in cfg.reputation.items() if k in fields})


def restore_or_start(config, tribe: Tribe, ckpt: checkpoints.RunCheckpointer, trainer: TribeTrainer) -> RunState:
    trainable = trainer.trainable_of(tribe)
    step = ckpt.latest_step()
    constants = reputation_constants(config)
    sparta = method_of(config) == "sparta"
    if step is None:
        rater = TribeRater(tribe.names, scheme=config.reputation.scheme, mode=config.mode,
                           constants=constants) if sparta else None
        return RunState(rater, trainable, 1)
    restored, _, host = ckpt.restore(step, trainable_target=checkpoints.targets_like(trainable),
                                     opt_state_target=checkpoints.targets_like(trainer.init_opt_state(trainable)))
    if tuple(host["names"]) != tribe.names:
        raise ValueError(f"the checkpoint in {ckpt.directory} was written for members {host['names']}, "
                         f"this config has {list(tribe.names)}")
    rater = None
    if sparta:
        start = TribeReputation.from_dict(host["reputations"], tribe.names)
        ends = {int(t): r for t, r in host["end_reputations"].items()}
        rater = TribeRater(tribe.names, scheme=config.reputation.scheme, mode=config.mode, constants=constants,
                           start=start, first_iteration=step + 1, end_reputations=ends)
    log(f"resumed from the checkpoint after iteration {step}")
    return RunState(rater, restored, step + 1)


def log(message: str) -> None:
    if jax.process_index() == 0:
        print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ phases
def duel_phase(config, tribe: Tribe, t: int, instructions, rater: TribeRater, folder: str) -> list[dict]:
    """Match-making with the frozen start-of-iteration reputations, then both answers per duel."""
    path = os.path.join(folder, "answers.jsonl")
    if os.path.exists(path):
        return read_jsonl(path)
    frozen = rater.state.reputations()
    matchups = make_matchups(list(tribe.names), len(instructions), [frozen[n] for n in tribe.names],
                             alpha=config.matchmaking.alpha, k=config.matchmaking.k,
                             seed=[config.seed, t])
    texts = [r["instruction"] for r in instructions]
    progress = Progress(f"iteration {t} answers", 2 * len(texts), "answers")
    answers = combat.answer_duels(tribe, matchups, texts, gen_cfg=config.generation,
                                  rng=phase_key(config.seed, t, "answers"), progress=progress)
    rows = [{"index": m.index, "instruction": text, "id": r.get("id"), "models": list(m.models),
             "responses": list(pair)} for m, text, r, pair in zip(matchups, texts, instructions, answers)]
    write_jsonl(path, rows)
    return rows


def judge_phase(config, tribe: Tribe, t: int, duels: list[dict], instructions, folder: str) -> list[DuelRecord]:
    path = os.path.join(folder, "duels.jsonl")
    if os.path.exists(path):
        return [duel_from_json(r, tribe.names) for r in read_jsonl(path)]
    from sparta_jax.sparta import Matchup

    matchups = [Matchup(d["index"], *d["models"]) for d in duels]
    jobs = len(duels) * (len(tribe.names) - 2) * 2
    progress = Progress(f"iteration {t} judging", jobs, "verdicts")
    records = combat.judge_duels(tribe, t, matchups, [d["instruction"] for d in duels],
                                 [tuple(d["responses"]) for d in duels], judge_cfg=config.judge, mode=config.mode,
                                 rng=phase_key(config.seed, t, "judges"), progress=progress,
                                 references=instructions)
    write_jsonl(path, [duel_to_json(r) for r in records])
    return records


def judge_signal_phase(instructions, records, rated, folder: str) -> dict:
    """On a verifiable task, how often the judges and the preferences side with the right answer;
    returns the headline figures for metrics.jsonl (empty when the task has no answers)."""
    from sparta_jax.sparta.judge_signal import judge_signal

    references = {r["instruction"]: r for r in instructions}
    signal = judge_signal([duel_to_json(r) for r in records], references, [p.to_json() for p in rated.preferences])
    if signal is None:
        return {}
    write_json(os.path.join(folder, "judge_signal.json"), {"iteration": rated.iteration, **signal})
    return {key: value for key, value in (("judge_signal/matched_accuracy", signal["matched"]["accuracy"]),
                                          ("judge_signal/pooled_auc", signal["pooled_auc"]),
                                          ("judge_signal/preference_accuracy", signal["preference"]["accuracy"]))
            if value is not None}


def rate_phase(rater: TribeRater, t: int, records, folder: str):
    result = rater.rate(records, iteration=t)
    write_json(os.path.join(folder, "reputations.json"), {
        "iteration": t, "weights": result.weights, "c": result.c, "start": result.start.to_dict(),
        "end": result.end.to_dict(), "history": result.history})
    write_jsonl(os.path.join(folder, "preferences.jsonl"), [p.to_json() for p in result.preferences])
    return result


def check_context(config, context: int) -> None:
    """Prompts are cut at max_prompt_tokens (docs/algorithm.md §2.2); prompt plus answer must fit the model."""
    for section in ("generation", "judge"):
        cfg = config[section]
        total = cfg.max_prompt_tokens + cfg.max_new_tokens
        if total > context:
            raise ConfigError(f"{section}.max_prompt_tokens + {section}.max_new_tokens = {total} exceeds the "
                              f"model's context of {context} tokens")


def writes_report(config) -> bool:
    """False when report_every < 0: no report (`python -m sparta_jax.report WORKDIR` writes it later)."""
    return int(config.get("report_every", 1)) >= 0


def report_due(config, t: int) -> bool:
    """Whether iteration t rewrites the report: every `report_every` iterations, and the last
    (never without `writes_report`)."""
    every = int(config.get("report_every", 1))
    return writes_report(config) and (t == config.iterations or (every > 0 and t % every == 0))


def evaluation_phase(config, tribe: Tribe, t: int, data: dict, workdir: str, metrics, judges) -> None:
    """Every member on the dev items, the best one on test; iteration 0 is the initial tribe.
    judges: None (open-ended answers judged by the tribe's other members) or a member_eval.Panel."""
    from sparta_jax import member_eval

    cfg = config.evaluation
    folder = iteration_dir(workdir, t)
    path = os.path.join(folder, "evaluation.json")
    if not cfg.enabled or os.path.exists(path):
        return
    dev, test = (data.get(split, [])[: cfg[split]] for split in ("dev", "test"))
    if member_eval.split_kind(dev) is None or member_eval.split_kind(test) is None:
        log("evaluation skipped: the dev and test splits need items that all have an answer and a text evaluator, "
            "or all the evaluator 'judged'")
        return
    os.makedirs(folder, exist_ok=True)
    m = len(tribe.names)
    progress = Progress(f"iteration {t} evaluation", m * len(dev) + len(test) * (m if cfg.test_all_members else 1),
                        "answers")
    key = phase_key(config.seed, t, "evaluation")
    scorer = member_eval.TribeScorer(tribe, judges=judges, judge_cfg=config.judge, mode=config.mode,
                                     rng=jax.random.fold_in(key, 1), label=f"iteration {t} evaluation judging")
    started = time.perf_counter()
    result = {"iteration": t, **member_eval.evaluate_tribe(tribe, dev, test, cfg, key, progress, scorer)}
    result["seconds"] = time.perf_counter() - started
    write_json(path, result)
    best = result["best_test"]
    metrics.write(t, "evaluation", {"best_test_accuracy": best["accuracy"], "best_member": result["best_member"],
                                    **{f"dev_accuracy/{m}": v["accuracy"] for m, v in result["dev"].items()}})
    log(f"evaluation after iteration {t}: best member {result['best_member']} (dev "
        f"{result['dev'][result['best_member']]['accuracy']:.3f}), test {best['accuracy']:.3f} "
        f"[{best['ci95'][0]:.3f}, {best['ci95'][1]:.3f}] on {best['n']} items")


def keep_best_dev(config, workdir: str, t: int, trainable, trainer) -> None:
    """evaluation.select = "best_dev": when iteration t holds the best dev score so far, keep its
    weights in the workdir's best_dev/ (the rolling checkpoints may drop them); `export
    --member=best` reads them there. Done after each evaluation, and again on a resume."""
    if not config.evaluation.enabled or config.evaluation.get("select", "last") != "best_dev":
        return
    evals = selection.read_evaluations(workdir)
    if not evals or selection.pick(evals, "best_dev").iteration != t:
        return
    with checkpoints.RunCheckpointer(os.path.join(workdir, selection.BEST_DEV_DIR), max_to_keep=1,
                                     async_save=False) as best:
        latest = best.latest_step()
        if latest is None or latest < t:
            best.save(t, trainable=trainable, opt_state=trainer.init_opt_state(trainable),
                      host_state={"iteration": t})
            log(f"  best dev so far: iteration {t}, its weights kept in {selection.BEST_DEV_DIR}/")


def evaluates_judged_split(config, data: dict) -> bool:
    from sparta_jax import member_eval

    cfg = config.evaluation
    return bool(cfg.enabled and any(
        member_eval.split_kind(data.get(s, [])[: cfg[s]]) == member_eval.JUDGED for s in ("dev", "test")))


def needs_judge_model(config, data: dict) -> bool:
    return config.evaluation.judge != "tribe" and evaluates_judged_split(config, data)


# ------------------------------------------------------------------------------------- loop
def method_of(config) -> str:
    return config.get("method", "sparta")  # runs from before `method` were Sparta runs


def run(config, workdir: str) -> dict:
    """Runs (or resumes) the configured iterations; returns the final reputations (Sparta) or {}."""
    validate_config(config)
    method = method_of(config)
    sharding.initialize_from_config(config.distributed)
    if config.judge.mode == "verifier":
        log("judge.mode='verifier': a CONTROL, not Sparta. Every judge's score is the task's answer check "
            "(10 right, 1 wrong), so this run shows what the training half does with perfect judgments.")
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh(dict(config.mesh))
    data = data_lib.load_instructions(config.data)
    train_split = data.get("train") or []
    if not train_split:
        raise data_lib.DataError("the data source has no 'train' instructions")
    from sparta_jax.eval_check import check_evaluation

    check_evaluation(config, data, log=log)  # a run that cannot evaluate stops here, before anything is built
    if method == "spin":  # nor does a SPIN run whose instructions have no reference answers
        from sparta_jax.methods import spin

        spin.check_train_split(train_split, config.methods.spin.reference_template, data_lib.describe_source(config.data))
    from sparta_jax.experts import tribe_source

    # config.tribe, or diverse starting experts (trained once and cached, copied when asked)
    tribe_cfg, adapters = tribe_source(config, mesh, log=log)
    from sparta_jax.member_eval import Panel

    judges = Panel(build_judge(config.evaluation.judge, config.tribe, config.sampler, mesh)) if needs_judge_model(
        config, data) else None  # a named model judges open-ended evaluation answers
    oracle = None
    if method != "sparta":  # a baseline trains one model: the initial tribe's best, picked at iteration 0
        initial = functools.cache(lambda: build_initial_tribe(config, tribe_cfg, adapters, mesh))
        actor, names = choose_actor(config, initial, data, workdir, judges)
        if judges is None and evaluates_judged_split(config, data):
            # One model cannot judge itself: the rest of the initial tribe judges it, held frozen
            # (kept in memory beside the actor), as it judged the actor at iteration 0.
            judges = Panel(initial(), tuple(i for i, n in enumerate(names) if n != actor))
        tribe_cfg, adapters = actor_config(tribe_cfg, names, actor, adapters)
        oracle = method_oracle(config, mesh)
        log(f"method {method}: training {actor}, the initial tribe's best member by dev accuracy"
            if not config.methods.member else f"method {method}: training {actor} (methods.member)")
    tribe = build_tribe(tribe_cfg, config.sampler, mesh, adapters=adapters)
    check_context(config, context_length(tribe))
    if method == "sparta":
        check_sparta_tribe(tribe.names)
    write_json(os.path.join(workdir, "config.json"), config.to_dict())
    write_json(os.path.join(workdir, "tribe.json"), {  # what the run started from (export rebuilds it)
        "base": tribe.base_path, "names": list(tribe.names), "tribe": tribe_cfg.to_dict(), "bases": tribe.bases(),
        "adapters": list(adapters if adapters is not None else [a for a in config.tribe.adapters if a])})
    dpo_cfg = dpo.dpo_config(config)
    with checkpoints.RunCheckpointer(os.path.join(workdir, "checkpoints"),
                                     max_to_keep=config.checkpoint.max_to_keep,
                                     async_save=config.checkpoint.async_save) as ckpt:
        trainer = make_trainer(tribe, dpo_cfg)
        state = restore_or_start(config, tribe, ckpt, trainer)
        metrics = MetricsWriter(workdir, first_step=state.next_iteration)
        trainer.install(tribe, state.trainable)
        # e.g. the initial tribe
        evaluation_phase(config, tribe, state.next_iteration - 1, data, workdir, metrics, judges)
        keep_best_dev(config, workdir, state.next_iteration - 1, state.trainable, trainer)
        for t in range(state.next_iteration, config.iterations + 1):
            started = time.perf_counter()
            folder = iteration_dir(workdir, t)
            os.makedirs(folder, exist_ok=True)
            trainer.install(tribe, state.trainable)  # this iteration's members
            instructions = data_lib.sample_instructions(train_split, config.instructions_per_iteration,
                                                        iteration=t, seed=config.seed, mode=config.mode)
            clock = PhaseClock(f"iteration {t}")
            if method == "sparta":
                records, summary, signal = sparta_preferences(config, tribe, t, instructions, state.rater, folder,
                                                              clock)
            else:
                records, summary = clock("pairs", baseline_phase, config, tribe, t, instructions, folder, oracle)
                signal = {}
            replayed = replayed_pairs(config, workdir, t)
            lr_scales = member_lr_scales(config, workdir, t)
            trainable, opt_state, train_info = clock("dpo", train_phase, config, tribe, t, replayed + records,
                                                     state.trainable, trainer, lr_scales)
            if opt_state is None:  # no pairs this iteration: nothing trained
                opt_state = trainer.init_opt_state(trainable)
            rater = state.rater
            host = {"iteration": t, "phase": "trained", "names": list(tribe.names), "method": method,
                    "reputations": rater.state.to_dict() if rater else {},
                    "end_reputations": {str(k): v for k, v in rater.end_reputations.items()} if rater else {},
                    "seed": config.seed}
            # Records first, then the checkpoint: a kill in between redoes the iteration, and the
            # redo drops the stale metrics lines (MetricsWriter first_step) and rewrites the summary.
            summary = {**summary, **dpo_summary(train_info), "pairs_replayed": len(replayed),
                       "lr_scales": lr_scales or {}, "seconds": time.perf_counter() - started}
            summary["phase_seconds"] = clock.seconds  # a phase found done on disk (a resume) shows ~0
            metrics.write(t, "iteration", {**{k: v for k, v in summary.items() if not isinstance(v, (list, dict))},
                                           **{f"seconds/{k}": v for k, v in clock.seconds.items()}, **signal})
            write_json(os.path.join(folder, "summary.json"), {**summary, "train": train_info})
            saving = time.perf_counter()
            ckpt.save(t, trainable=trainable, opt_state=opt_state, host_state=host)
            log(f"  checkpoint {t}: {time.perf_counter() - saving:.1f}s to hand over (written in the background)")
            state = RunState(state.rater, trainable, t + 1)
            log(one_line(summary))
            trainer.install(tribe, trainable)
            evaluation_phase(config, tribe, t, data, workdir, metrics, judges)
            keep_best_dev(config, workdir, t, trainable, trainer)
            if jax.process_index() == 0 and report_due(config, t):
                from sparta_jax.report import write_report

                log(f"report: {write_report(workdir)}")
        if (jax.process_index() == 0 and writes_report(config)
                and not os.path.exists(os.path.join(workdir, "report", "report.html"))):
            from sparta_jax.report import write_report  # a run killed between its last checkpoint and report

            log(f"report: {write_report(workdir)}")
        ckpt.wait()
        metrics.close()
        if jax.process_index() == 0:
            from sparta_jax.run_summary import closing_summary

            step = ckpt.latest_step()
            log(closing_summary(workdir, config.iterations,
                                None if step is None else os.path.join(ckpt.directory, str(step))))
    return state.rater.state.to_dict() if state.rater else {}


def replayed_pairs(config, workdir: str, t: int) -> list[dict]:
    """The pairs iterations t - dpo.replay_iterations .. t - 1 trained on (Sparta's: those at or above
    dpo.min_margin), trained again in iteration t beside its own. Not in the released code, where
    each iteration trains on its own pairs only (replay_iterations=0): with a few dozen pairs an
    iteration, a skill solved earlier drops out of the pairs (both answers right: a tie) and DPO on
    what is left can unlearn it."""
    out = []
    for u in range(max(1, t - config.dpo.replay_iterations), t):
        rows = read_jsonl(os.path.join(iteration_dir(workdir, u), "preferences.jsonl"))
        if method_of(config) == "sparta":
            rows = separated(rows, config.dpo.min_margin)
        out += [{**r, "replayed_from": u} for r in rows]  # counted apart from the iteration's own pairs
    return out


def member_lr_scales(config, workdir: str, t: int) -> dict | None:
    """{member: learning-rate factor} for iteration t's DPO, or None (every member at
    dpo.learning_rate). `dpo.best_member_lr_scale` != 1 gives it to the best member by dev at the
    latest evaluation before t (the member the run would report then), so that training to teach
    the others does not move the best one as fast. Not in the paper or the released code."""
    scale = float(config.dpo.get("best_member_lr_scale", 1.0))
    if scale == 1.0:
        return None
    evals = {u: ev for u, ev in selection.read_evaluations(workdir).items() if u < t}
    if not evals:
        log(f"iteration {t} DPO: no evaluation before it, so no best member: every member at dpo.learning_rate")
        return None
    best = evals[max(evals)]["best_member"]
    log(f"iteration {t} DPO: {best} (best by dev after iteration {max(evals)}) at {scale:g}x dpo.learning_rate")
    return {best: scale}


def sparta_preferences(config, tribe: Tribe, t: int, instructions, rater: TribeRater, folder: str, clock):
    """Sparta's half of an iteration (docs/algorithm.md §2): duels, judgments, reputations, preferences;
    returns (preference records, summary figures, judge-signal metrics)."""
    duels = clock("answers", duel_phase, config, tribe, t, instructions, rater, folder)
    records = clock("judging", judge_phase, config, tribe, t, duels, instructions, folder)
    rated = clock("rating", rate_phase, rater, t, records, folder)
    signal = judge_signal_phase(instructions, records, rated, folder)
    # preferences.jsonl keeps every pair; DPO trains on those the judges separated by dpo.min_margin.
    kept = separated([p.to_json() for p in rated.preferences], config.dpo.min_margin)
    summary = {**sparta_summary(t, records, rated), "pairs": len(kept),
               "pairs_below_min_margin": len(rated.preferences) - len(kept)}
    return kept, summary, signal


# ---------------------------------------------------------------------------------- baselines
def build_initial_tribe(config, tribe_cfg, adapters, mesh) -> Tribe | MixedTribe:
    tribe = build_tribe(tribe_cfg, config.sampler, mesh, adapters=adapters)
    check_context(config, context_length(tribe))
    return tribe


def choose_actor(config, initial, data: dict, workdir: str, judges):
    """(member, the whole tribe's names): the member a baseline trains, methods.member or else the
    initial tribe's best by dev accuracy (the iteration-0 evaluation, run here on the whole tribe,
    `initial()`, built only when needed). Kept in method.json, so a resumed run trains the same
    member without building the whole tribe again."""
    path = os.path.join(workdir, "method.json")
    if os.path.exists(path):
        with open(path) as f:
            chosen = json.load(f)
        return chosen["member"], tuple(chosen["tribe"])
    tribe = initial()
    actor = config.methods.member
    if not actor:
        if not config.evaluation.enabled:
            raise ConfigError(f"method {method_of(config)!r} trains one member: name it in methods.member, or "
                              "enable evaluation to pick the initial tribe's best by dev accuracy")
        with MetricsWriter(workdir, first_step=1) as metrics:
            evaluation_phase(config, tribe, 0, data, workdir, metrics, judges)
        evaluated = os.path.join(iteration_dir(workdir, 0), "evaluation.json")
        if not os.path.exists(evaluated):
            raise ConfigError(f"method {method_of(config)!r}: the dev split cannot be evaluated, so no best member "
                              "can be picked; name one in methods.member")
        with open(evaluated) as f:
            actor = json.load(f)["best_member"]
    if actor not in tribe.names:
        raise ConfigError(f"methods.member {actor!r} is not a member of the tribe {list(tribe.names)}")
    write_json(path, {"method": method_of(config), "member": actor, "tribe": list(tribe.names)})
    return actor, tribe.names


def method_oracle(config, mesh) -> Tribe | None:
    """SPPO's preference oracle when it is a named model (methods.sppo.oracle), else None (the
    model judges itself)."""
    if method_of(config) != "sppo" or config.methods.sppo.oracle in ("", "self"):
        return None
    return build_judge(config.methods.sppo.oracle, config.tribe, config.sampler, mesh)


def baseline_phase(config, tribe: Tribe, t: int, instructions, folder: str, oracle: Tribe | None):
    """A baseline's half of an iteration: its preference records (preferences.jsonl, with every
    sampled answer and score in candidates.jsonl) and summary figures."""
    from sparta_jax import methods

    method = method_of(config)
    path, info_path = os.path.join(folder, "preferences.jsonl"), os.path.join(folder, "pairs.json")
    if os.path.exists(path) and os.path.exists(info_path):
        records = read_jsonl(path)
        with open(info_path) as f:
            info = json.load(f)
    else:
        k = methods.samples_per_instruction(method, config)
        progress = Progress(f"iteration {t} {method}", methods.jobs_per_instruction(method, config) * len(instructions),
                            "jobs")
        records, rows, info = methods.make_pairs(method, config, tribe, instructions, rng=phase_key(config.seed, t, "answers"),
                                                 judge=oracle, progress=progress)
        info = {"method": method, "instructions": len(instructions), "answers": k * len(instructions),
                "pairs": len(records), "answer_pairs": sum(r.get("kind") == "answer" for r in records), **info}
        write_jsonl(os.path.join(folder, "candidates.jsonl"), rows)
        write_jsonl(path, records)
        write_json(info_path, info)
    return records, {"iteration": t, **info}


class PhaseClock:
    """Times each phase of an iteration: clock(name, fn, *args) runs fn, records its seconds and
    logs them as the phase ends (so a run stopped mid-iteration still shows what it took)."""

    def __init__(self, label: str = ""):
        self.label = label
        self.seconds: dict[str, float] = {}

    def __call__(self, name, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        self.seconds[name] = time.perf_counter() - start
        log(f"{self.label} {name}: {self.seconds[name]:.1f} s".strip())
        return out


def sparta_summary(t, records, rated) -> dict:
    judged = [j for r in records for j in r.judges.values()]
    unparseable = sum(1 for j in judged for s in (j.scores or (None, None)) if s is None)
    R = [v["R"] for v in rated.end.to_dict().values()]
    return {
        "iteration": t, "duels": len(records), "pairs": len(rated.preferences),
        "ties_dropped": len(records) - len(rated.preferences), "judge_scores": 2 * len(judged),
        "unparseable_scores": unparseable, "reputation_spread": max(R) - min(R),
        "reputation_min": min(R), "reputation_max": max(R),
    }


def dpo_summary(train_info) -> dict:
    per_member = train_info.get("dpo_per_member", {})
    after = train_info.get("dpo_after", {})
    return {
        "dpo_loss": float(np.mean(per_member["loss"])) if per_member else None,
        "dpo_margin": float(np.mean(per_member["rewards/margins"])) if per_member else None,
        "dpo_reward_accuracy": float(np.mean(per_member["rewards/accuracies"])) if per_member else None,
        "dpo_loss_after": float(np.mean(after["loss"])) if after else None,
        "dpo_reward_accuracy_after": float(np.mean(after["rewards/accuracies"])) if after else None,
        "dpo_nll_chosen_after": float(np.mean(after["nll/chosen"])) if after else None,
        "pairs_trained": train_info["pairs_trained"],  # own + replayed: the DPO work done
        "pairs_trained_own": train_info["pairs_trained"] - train_info.get("pairs_trained_replayed", 0),
        "pairs_trained_replayed": train_info.get("pairs_trained_replayed", 0),
    }


def one_line(s: dict) -> str:
    dpo_part = (f"DPO loss {s['dpo_loss']:.4f} margin {s['dpo_margin']:+.4f} over the steps, after training "
                f"loss {s['dpo_loss_after']:.4f} reward accuracy {s['dpo_reward_accuracy_after']:.2f}"
                if s["dpo_loss"] is not None else "no DPO (no pairs)")
    if s.get("pairs_trained_replayed"):
        dpo_part += f" (trained on {s['pairs_trained_own']} own + {s['pairs_trained_replayed']} replayed pairs)"
    if "method" in s:  # a baseline
        return (f"iteration {s['iteration']} ({s['method']}): {s['pairs']} pairs from {s['instructions']} instructions "
                f"and {s['answers']} answers, {dpo_part}, {s['seconds']:.0f}s")
    below = f", {s['pairs_below_min_margin']} under dpo.min_margin" if s.get("pairs_below_min_margin") else ""
    return (f"iteration {s['iteration']}: {s['pairs']} pairs from {s['duels']} duels ({s['ties_dropped']} dropped{below}), "
            f"{s['unparseable_scores']}/{s['judge_scores']} judge scores unparseable, reputation spread "
            f"{s['reputation_spread']:.3f} [{s['reputation_min']:.3f}, {s['reputation_max']:.3f}], {dpo_part}, "
            f"{s['seconds']:.0f}s")
