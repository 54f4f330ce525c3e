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
from attnrl_mini.config import Config, make_config

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


# ---- export verl --check: the overrides applied to verl 0.9.1's and the recipe's composed config files ---------

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


def test_pinned_verl_config_is_the_wheels_generated_config():
    """The pinned file is verl 0.9.1's _generated_ppo_trainer.yaml (the sha256 in
    attnrl_mini/tools/verl_config/README.md) with exactly the keys of tests/data/verl_config_keys.txt; the
    recipe's file is self-contained too; both read `1e-6` as a float."""
    import hashlib
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(DATA), "..", "scripts"))
    from config_keys import dotted_keys
    _, path = export_check.TARGETS["run_verl_grpo.sh"]
    with open(os.path.join(export_check.HERE, "README.md")) as f:
        assert hashlib.sha256(open(path, "rb").read()).hexdigest() in f.read()
    assert set(dotted_keys(export_check.load_config(path))) == valid_keys("verl_config_keys.txt")
    assert export_check.load_config(path)["actor_rollout_ref"]["actor"]["optim"]["lr"] == 1e-6   # `1.0e-06`
    recipe = export_check.load_config(export_check.TARGETS["run_attnrl_recipe.sh"][1])   # raises on a defaults list
    assert recipe["actor_rollout_ref"]["actor"]["optim"]["lr"] == 1e-6   # written `1e-6`: a float, as in OmegaConf


# What Hydra 1.3.8's own parser (OverridesParser.parse_override("k=" + text).value()) returned for each text,
# recorded before hydra-core left the requirements (it pins antlr4 4.9; Math-Verify needs 4.13).
HYDRA_READS = [
    ("1", 1), ("-1", -1), ("+3", 3), ("017", "017"), ("1_000", 1000), ("1.0", 1.0), ("1.", 1.0), (".5", 0.5),
    ("1e-06", 1e-06), ("1E5", 100000.0), ("1.5e+3", 1500.0), ("-INF", float("-inf")),
    ("true", True), ("True", True), ("FALSE", False), ("null", None), ("Null", None),
    ("yes", "yes"), ("off", "off"), ("1:30", "1:30"), ("0x1F", "0x1F"), ("2025-10-17", "2025-10-17"),
    ("token-mean", "token-mean"), ("/tmp/a/b.parquet", "/tmp/a/b.parquet"), ("1.0.0", "1.0.0"), ("a@b", "a@b"),
    ("'quoted'", "quoted"), ('"dq"', "dq"), ("''", ""), ("'a b'", "a b"),
    ("[a,b]", ["a", "b"]), ("[1, 2]", [1, 2]), ("[]", []), ("[1.5,true,null,'x']", [1.5, True, None, "x"]),
]


@pytest.mark.parametrize("text, want", HYDRA_READS)
def test_parse_value_reads_as_hydra(text, want):
    got = export_check.parse_value(text)
    assert got == want and type(got) is type(want)
    if isinstance(want, list):
        assert [type(v) for v in got] == [type(v) for v in want]


@pytest.mark.parametrize("override, why", [
    ("k=${a.b}", "k: value '${a.b}' is an interpolation"),
    ("k=a,b", "k: value 'a,b' is outside"),               # a sweep
    ("k={a:1}", "k: value '{a:1}' is outside"),           # a mapping
    ("k=choice(1,2)", "k: value 'choice(1,2)' is outside"),
    ("k=[[1],2]", "k: value '[[1],2]' is a nested list"),
    ("k=", "k: value '' is outside"),
    ("~k=1", "~k: not a `key=value`"), ("++k=1", "++k: not a `key=value`"), ("k@pkg=1", "k@pkg: not a `key=value`"),
    ("model_engine/dp=1", "model_engine/dp: not a `key=value`"), ("k", "k: not a `key=value`"),
])
def test_parse_override_refuses_what_it_does_not_read(override, why):
    with pytest.raises(export_check.ExportCheckError) as e:
        export_check.parse_override(override)
    assert str(e.value).startswith(why), str(e.value)


def test_check_overrides_sets_adds_and_refuses_on_a_small_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("a:\n  n: 1\n  s: x\n  opt: null\nb: 2\n")
    composed = export_check.check_overrides(["a.n=3", "a.opt=[1,2]", "+a.new=1e-06", "+c.d.e=true"], str(config), "c")
    assert composed == {"a": {"n": 3, "s": "x", "opt": [1, 2], "new": 1e-06}, "b": 2, "c": {"d": {"e": True}}}
    with pytest.raises(export_check.ExportCheckError) as e:
        export_check.check_overrides(["a.n=3", "a.n=4", "+b.x=1", "+a.s=y", "a.m=1", "b=[1]"], str(config), "c")
    assert str(e.value) == ("a.n: set twice; b.x: b is 2 in the config, not a mapping; a.s: already in c; set it "
                            "without '+'; a.m: no such key in c; b: is int in the config (2), got [1]")
