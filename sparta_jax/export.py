"""Export a trained member of a run as a Hugging Face folder or a PEFT adapter folder.

    python -m sparta_jax.export --workdir DIR [--member NAME|best] --out PATH [--merged|--peft] \
        [--step N] [--dtype float32|bfloat16]

`best` is the member the run reports (its `evaluation.select`, sparta_jax/selection.py): with
"last", the best by dev accuracy after the last evaluated iteration, from the latest
checkpoint; with "best_dev", the member and iteration with the best dev accuracy, from the
weights the run kept in best_dev/. The line printed names the iteration taken. The folder
loads in transformers (merged) or peft (adapter) and gives the same logits. Members of a
full tribe (`tribe.kind = "full"`) are whole models: they export as HF folders only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m sparta_jax.export", description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--member", default="best", help="a member name, or 'best' (by dev accuracy)")
    p.add_argument("--out", required=True)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--merged", action="store_true", help="a full HF folder with the adapter merged (default)")
    kind.add_argument("--peft", action="store_true", help="a PEFT LoRA adapter folder")
    p.add_argument("--step", type=int, help="checkpoint step (iteration); default: the latest")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--verbose", action="store_true", help="also print third-party INFO lines (Orbax, absl)")
    return p.parse_args(argv)


def best_member(workdir: str) -> tuple[str, int | None, str]:
    """(member, checkpoint step or None for the latest, checkpoint folder) of the member the run
    reports under its evaluation.select."""
    from sparta_jax import selection

    evals = selection.read_evaluations(workdir) if os.path.isdir(workdir) else {}
    if not evals:
        raise FileNotFoundError(f"{workdir} has no evaluation.json: name a member with --member")
    with open(os.path.join(workdir, "config.json")) as f:
        how = json.load(f).get("evaluation", {}).get("select", "last")
    picked = selection.pick(evals, how)
    if how == "last":
        return picked.member, None, "checkpoints"
    return picked.member, picked.iteration, selection.BEST_DEV_DIR


def load_run_tribe(workdir: str, step: int | None = None, folder: str = "checkpoints"):
    """The run's tribe with the members' weights of checkpoint `step` (default: latest) of the
    checkpoint folder `folder` in the workdir."""
    import ml_collections

    from sparta_jax import checkpoints, dpo, sharding
    from sparta_jax.trainer import make_trainer
    from sparta_jax.tribe import build_tribe

    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{workdir} is not a run folder (no config.json)")
    with open(config_path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
    started = os.path.join(workdir, "tribe.json")  # the adapter folders it started from (e.g. experts)
    info = json.load(open(started)) if os.path.exists(started) else {}
    # A baseline's tribe is its one member (tribe.json "tribe"); a Sparta run's is config.tribe.
    tribe_cfg = ml_collections.ConfigDict(info["tribe"]) if info.get("tribe") else config.tribe
    tribe = build_tribe(tribe_cfg, config.sampler, mesh, adapters=info.get("adapters"))
    trainer = make_trainer(tribe, dpo.DPOConfig())  # only its split, merge and optimizer state shape
    trainable = trainer.trainable_of(tribe)
    with checkpoints.RunCheckpointer(os.path.join(workdir, folder), create=False) as ckpt:
        step = step if step is not None else ckpt.latest_step()
        if step is None or step not in ckpt.all_steps():
            raise FileNotFoundError(f"{workdir}/{folder} holds no checkpoint of iteration {step}"
                                    if step is not None else f"{workdir}/{folder} holds no checkpoint yet")
        restored, _, _ = ckpt.restore(step, trainable_target=checkpoints.targets_like(trainable),
                                      opt_state_target=checkpoints.targets_like(trainer.init_opt_state(trainable)))
    trainer.install(tribe, restored)
    return tribe, step


def main(argv=None) -> int:
    from sparta_jax.logs import quiet_third_party

    args = parse_args(argv)
    quiet_third_party(args.verbose)
    try:
        from sparta_jax.models.export import export_merged, export_peft
        from sparta_jax.models.stack import MemberStack

        member, step, folder = (best_member(args.workdir) if args.member == "best"
                                else (args.member, None, "checkpoints"))
        if args.step is not None:
            step, folder = args.step, "checkpoints"
        tribe, step = load_run_tribe(args.workdir, step, folder)
        if member not in tribe.names:
            raise ValueError(f"no member {member!r}; the tribe is {list(tribe.names)}")
        tribe = tribe.group(tribe.index(member))  # a mixed tribe's member exports from its own group
        if isinstance(tribe.model, MemberStack):
            if args.peft:
                raise ValueError("the members of a full tribe (tribe.kind='full') are whole models: "
                                 "export them without --peft")
            path = export_merged(tribe.model.member(tribe.index(member)), args.out, tokenizer=tribe.tokenizer,
                                 dtype=args.dtype)
        elif args.peft:
            path = export_peft(tribe.model, member, args.out, base_model_name_or_path=tribe.base_path, dtype=args.dtype)
        else:
            path = export_merged(tribe.model, args.out, member=member, tokenizer=tribe.tokenizer, dtype=args.dtype)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{member} (after iteration {step}) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
