"""export verl: parquet that our loader reads back unchanged, a merged model with the adapter's
logits, and launch scripts whose every key exists in verl's / the AttnRL recipe's real config files."""
from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest
import torch

from attnrl_mini.worlds import data

from attnrl_mini.tools import export, export_check

from attnrl_mini.models import policy
from attnrl_mini.run.config import Config, make_config

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PROBLEMS = [
    {"id": "mine-0", "problem": "What is $1+1$?", "answer": "2", "source": "mine"},
    {"id": "q7", "problem": "Name both roots of $x^2=1$.", "answer": ["1, -1", "-1, 1"], "source": "mine"},
]


def valid_keys(name: str) -> set[str]:
    with open(os.path.join(DATA, name)) as f:
        return {line.strip() for line in f if line.strip() and not line.startswith("#")}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A finished run's directory (config + latest checkpoint's adapter) exported for verl."""
    root = tmp_path_factory.mktemp("export")
    run, out = root / "run", root / "out"
    problems = root / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    cfg = make_config("toy", out=str(run), train_data=str(problems), eval_data=str(problems),
                      report_to="tensorboard", one_step_stale=False)
    adapter = run / "checkpoints" / "step_000003" / "adapter"
    model = policy.add_lora(policy.load_model(policy.resolve_model("toy")), cfg.lora_rank, cfg.lora_alpha,
                            cfg.lora_target_modules)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():   # a trained-looking adapter: B != 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(str(adapter))
    (adapter.parent / "trainer_state.pt").write_bytes(b"")
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    emitted = export.main(["verl", "--run", str(run), "--out", str(out), "--check"])   # fails here if verl refuses it
    return cfg, problems, adapter, out, emitted


def test_parquet_round_trips_through_our_loader(exported):
    _, problems, _, out, _ = exported
    want = data.load_problems(problems)
    got = data.load_problems(out / "data" / "train.parquet")
    # ids without the "<source>-" prefix get it (verl's extra_info.index is read back as source-index);
    # beside a list answer, a single answer becomes a one-element list (one parquet column type)
    assert got == [data.Problem("mine-0", want[0].problem, ["2"], "mine"),
                   data.Problem("mine-q7", want[1].problem, want[1].answer, "mine")]
    assert data.load_problems(out / "data" / "val.parquet") == got
    from attnrl_mini.worlds import toy   # toy rows carry the bare problem (the toy template has no instruction)
    toys = toy.test_problems(3)
    rows = [export.verl_row(p, "test") for p in toys]
    back = [data.problem_from_verl_row(r, f"row {i}", f"x-{i}") for i, r in enumerate(rows)]
    assert back == [data.Problem(p.id, p.problem, p.answer, p.source) for p in toys]


def test_merged_model_logits_equal_base_plus_adapter(exported):
    _, _, adapter, out, _ = exported
    toy = policy.resolve_model("toy")
    with_adapter = policy.load_adapter(policy.load_model(toy), str(adapter)).eval()
    merged = policy.load_model(str(out / "merged_model")).eval()
    base = policy.load_model(toy).eval()
    ids = torch.tensor([policy.load_tokenizer(str(out / "merged_model")).encode("Start with 7. Add 5.")])
    with torch.no_grad():
        want, got, plain = (m(input_ids=ids).logits for m in (with_adapter, merged, base))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (plain - want).abs().max() > 1e-2   # the adapter changes the logits: the check can fail
    assert sorted(os.listdir(out / "adapter")) == sorted(os.listdir(adapter))


def script_keys(path) -> list[str]:
    text = open(path).read()
    return re.findall(r"^\s+(\+?[A-Za-z_][A-Za-z0-9_.]*)=", text, flags=re.M)


@pytest.mark.parametrize("script, keys_file", [("run_verl_grpo.sh", "verl_config_keys.txt"),
                                               ("run_attnrl_recipe.sh", "attnrl_recipe_config_keys.txt")])
def test_every_emitted_key_exists_in_the_real_config(exported, script, keys_file):
    cfg, _, _, out, emitted = exported
    keys = script_keys(out / script)
    assert keys == [line.split("=", 1)[0] for line in emitted["verl" if script.startswith("run_verl") else "recipe"]]
    assert len(keys) == len(set(keys)) and len(keys) > 30
    unknown = [k for k in keys if k not in valid_keys(keys_file)]
    assert unknown == []
    text = open(out / script).read()
    assert f"actor_rollout_ref.rollout.n={cfg.n_initial} " in text and "trainer.logger='[console,tensorboard]'" in text


def test_key_lists_catch_a_wrong_key_and_every_field_is_accounted_for():
    assert "actor_rollout_ref.actor.clip_ratio_hihg" not in valid_keys("verl_config_keys.txt")
    assert "algorithm.split_criterion" not in valid_keys("attnrl_recipe_config_keys.txt")   # only as +key
    mapped = {m.field for m in export.KEY_MAP} | set(export.UNMAPPED)   # a new Config field must be placed here
    assert mapped == {f.name for f in dataclasses.fields(Config)}


# ---- export verl --check: Hydra composition against verl 0.9.1's and the recipe's config files ----------------

def _planted(out, tmp_path, script, old, new):
    """A copy of the export's two scripts with one override of `script` rewritten."""
    import shutil
    for name in export_check.TARGETS:
        shutil.copy(out / name, tmp_path / name)
    text = (tmp_path / script).read_text()
    assert old in text
    (tmp_path / script).write_text(text.replace(old, new))
    return tmp_path


def test_check_passes_on_our_export(exported, capsys):
    _, _, _, out, _ = exported
    export_check.main([str(out)])
    said = capsys.readouterr().out
    assert "run_verl_grpo.sh: " in said and "compose against verl 0.9.1 ppo_trainer.yaml" in said
    assert "run_attnrl_recipe.sh: " in said
    text = (out / "run_verl_grpo.sh").read_text()   # verl 0.9.x spellings, not the legacy ones
    assert "reward.custom_reward_function.path=" in text and "\n    custom_reward_function" not in text
    assert "actor_rollout_ref.actor.optim.clip_grad=1.0" in text and "actor.grad_clip" not in text


@pytest.mark.parametrize("script, old, new, key", [
    ("run_verl_grpo.sh", "actor_rollout_ref.actor.clip_ratio_high=", "actor_rollout_ref.actor.clip_ratio_hihg=",
     "actor_rollout_ref.actor.clip_ratio_hihg: no such key in verl 0.9.1"),
    ("run_verl_grpo.sh", "reward.custom_reward_function.name=", "reward.custom_reward_fn.name=",
     "reward.custom_reward_fn.name: no such key"),
    ("run_attnrl_recipe.sh", "+algorithm.split_criterion=", "algorithm.split_criterion=",
     "algorithm.split_criterion: no such key in AttnRL recipe"),
    ("run_attnrl_recipe.sh", "actor_rollout_ref.actor.clip_ratio_low=", "+actor_rollout_ref.actor.clip_ratio_low=",
     "actor_rollout_ref.actor.clip_ratio_low: already in AttnRL recipe"),
    ("run_verl_grpo.sh", "data.train_batch_size=16 ", "data.train_batch_size=sixteen ",
     "data.train_batch_size: is int in the config (1024), got 'sixteen'"),
    ("run_attnrl_recipe.sh", "actor_rollout_ref.actor.use_dynamic_bsz=True", "actor_rollout_ref.actor.use_dynamic_bsz=3",
     "actor_rollout_ref.actor.use_dynamic_bsz: is bool in the config (False), got 3"),
    ("run_verl_grpo.sh", "actor_rollout_ref.rollout.n=6 ", "actor_rollout_ref.rollout.n='[6]' ",
     "actor_rollout_ref.rollout.n: is int in the config (1), got [6]"),
])
def test_check_fails_on_a_planted_bad_override_naming_the_key(exported, tmp_path, script, old, new, key):
    _, _, _, out, _ = exported
    planted = _planted(out, tmp_path, script, old, new)
    with pytest.raises(export_check.ExportCheckError) as e:
        export_check.check_export(str(planted))
    assert str(e.value).startswith(f"{script}: ") and key in str(e.value), str(e.value)
    with pytest.raises(SystemExit, match=re.escape(key)):   # the command line: one line, the key named
        export_check.main([str(planted)])


def test_check_batch_divisibility(exported, tmp_path):
    """16 prompts × n 6 = 96 sequences: fine on 8 GPUs; on 7 the recipe asserts (whatever the batch mode),
    verl 0.9.1 only without dynamic batch size."""
    _, _, _, out, _ = exported
    export_check.check_export(str(out), gpus=8, log=lambda m: None)
    with pytest.raises(export_check.ExportCheckError,
                       match=r"^run_attnrl_recipe.sh: data.train_batch_size: 16 prompts × actor_rollout_ref.rollout.n 6 "
                             r"= 96 sequences do not divide by the 7 GPUs"):
        export_check.check_export(str(out), gpus=7, log=lambda m: None)
    static = _planted(out, tmp_path, "run_verl_grpo.sh", "actor_rollout_ref.actor.use_dynamic_bsz=True",
                      "actor_rollout_ref.actor.use_dynamic_bsz=False")
    (static / "run_attnrl_recipe.sh").write_text((static / "run_attnrl_recipe.sh").read_text().replace(
        'trainer.n_gpus_per_node="${NGPUS_PER_NODE:-8}"', "trainer.n_gpus_per_node=8"))   # the recipe passes
    with pytest.raises(export_check.ExportCheckError, match=r"^run_verl_grpo.sh: data.train_batch_size: .* the 7 GPUs"):
        export_check.check_export(str(static), gpus=7, log=lambda m: None)


def test_pinned_verl_files_compose_to_the_generated_config():
    """The 18 pinned YAML files compose to exactly verl 0.9.1's own _generated_ppo_trainer.yaml keys
    (tests/data/verl_config_keys.txt), so no file of the defaults list is missing."""
    import sys
    from omegaconf import OmegaConf
    sys.path.insert(0, os.path.join(os.path.dirname(DATA), "..", "scripts"))
    from config_keys import dotted_keys
    _, config_dir, name = export_check.TARGETS["run_verl_grpo.sh"]
    composed = OmegaConf.to_container(export_check.compose(config_dir, name, []), resolve=False)
    assert set(dotted_keys(composed)) - {"model_engine"} == valid_keys("verl_config_keys.txt")
