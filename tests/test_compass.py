"""The matched pair early/late (attnrl_mini/worlds/compass/): answers, gold solutions, split, and that
the two generators differ only in where the restatements sit."""
import os
import random

import pytest
import torch

from attnrl_mini.worlds import get_world
from attnrl_mini.worlds.compass import problems as c
from attnrl_mini.worlds.reward import Grader


def independent_answer(text: str) -> int:
    """Read the problem like a person: x, y = the larger of each pair, then add the three lines."""
    lines = text.split("\n")
    x = max(int(lines[0].rstrip(".").split()[-3]), int(lines[0].rstrip(".").split()[-1]))
    y = max(int(lines[1].rstrip(".").split()[-3]), int(lines[1].rstrip(".").split()[-1]))
    total = x + y                                                           # "(c) Add x and y."
    for line, v in zip(lines[2:4], (x, y)):
        w = line.rstrip(".").split()
        total += v + int(w[2]) if w[1] == "Add" else v * int(w[-1])         # "Add 5 to x" / "Multiply y by 2"
    return total


def test_hand_checked_problem_in_both_layouts():
    text = c.problem_text(((7, 4), (3, 8)), [("Add", 5), ("Multiply", 2)])
    assert text == ("Let x be the larger of 7 and 4.\nLet y be the larger of 3 and 8.\n(a) Add 5 to x.\n"
                    "(b) Multiply y by 2.\n(c) Add x and y.\nWhat is the sum of the results?")
    assert c.answer_for(7, 8, c.parse_problem(text)[1]) == 12 + 16 + 15 == independent_answer(text)
    common = "x is 7.\n\n(a) 7+5=12\n\ny is 8.\n\n(b) 8*2=16\n\n(c) 7+8=15"
    restate = "Compare 7 and 4.\n\nCompare 3 and 8."
    total = "12+16=28\n\n28+15=43\n\n\\boxed{43}"
    assert c.gold_solution(text, "early") == f"Solve.\n\n{restate}\n\n{common}\n\n{total}"
    assert c.gold_solution(text, "late") == f"Solve.\n\n{common}\n\n{restate}\n\n{total}"


def test_answers_match_an_independent_computation_and_levels_match_gaps():
    rng = random.Random(1)
    for level in c.LEVELS:
        for _ in range(200):
            p = c.make_problem(rng, level, "late")
            assert int(p.answer) == independent_answer(p.problem)
            pairs, _ = c.parse_problem(p.problem)
            assert all(abs(a - b) in c.GAPS[level] for a, b in pairs)


def test_every_wrong_decision_gives_a_wrong_answer():
    for p in c.train_problems(300, seed=3):
        (ab, cd), ops = c.parse_problem(p.problem)
        for x, y in ((min(ab), max(cd)), (max(ab), min(cd)), (min(ab), min(cd))):
            assert c.answer_for(x, y, ops) != int(p.answer)


def test_the_two_generators_differ_only_in_placement():
    early_train, late_train = (c.train_problems(400, seed=7, placement=pl) for pl in c.PLACEMENTS)
    early_test, late_test = (c.test_problems(200, placement=pl) for pl in c.PLACEMENTS)
    for e, l in zip(early_train + early_test, late_train + late_test):
        assert (e.id, e.problem, e.answer, e.level) == (l.id, l.problem, l.answer, l.level)
        assert (e.source, l.source) == ("early", "late")
    for i, p in enumerate(early_train[:200]):
        se = c.sft_solution(p, "early", random.Random(i)).split("\n\n")
        sl = c.sft_solution(p, "late", random.Random(i)).split("\n\n")
        # same steps (same decisions, same arithmetic, same restatement wordings), only reordered
        assert [se[c.LAYOUT["early"].index(name)] for name in c.LAYOUT["late"]] == sl
        assert [se[k] for k in c.DECISION_STEPS["early"]] == [sl[k] for k in c.DECISION_STEPS["late"]]
        assert [se[k] for k in c.RESTATEMENT_STEPS["early"]] == [sl[k] for k in c.RESTATEMENT_STEPS["late"]]
    # placement moves only the restatements: every other step keeps its neighbours in order
    rest = [n for n in c.LAYOUT["early"] if n not in ("R1", "R2")]
    assert rest == [n for n in c.LAYOUT["late"] if n not in ("R1", "R2")]
    assert c.LAYOUT["early"].index("R2") < c.LAYOUT["early"].index("D1")          # before every decision
    assert c.LAYOUT["late"].index("R1") > max(c.LAYOUT["late"].index(n) for n in ("D1", "D2", "A", "B", "C"))


def test_sft_decision_errors_follow_the_declared_rates():
    rng = random.Random(0)
    for level in c.LEVELS:
        probs = c.train_problems(2000, seed=level, levels=(level,))
        wrong = 0
        for p in probs:
            steps = c.sft_solution(p, "early", rng).split("\n\n")
            pairs, _ = c.parse_problem(p.problem)
            picks = [int(steps[k].rstrip(".").split()[-1]) for k in c.DECISION_STEPS["early"]]
            wrong += sum(v != max(pair) for v, pair in zip(picks, pairs))
            assert int(steps[-1][len("\\boxed{"):-1]) == c.answer_for(*picks, c.parse_problem(p.problem)[1])
        rate = wrong / (2 * len(probs))
        assert abs(rate - c.DECISION_ERROR[level]) < 4 * (c.DECISION_ERROR[level] * (1 - c.DECISION_ERROR[level]) / 4000) ** 0.5 + 1e-9


def test_gold_solutions_grade_correct_and_wrong_decisions_grade_wrong():
    probs = c.test_problems(40) + c.train_problems(40, seed=5)
    rng = random.Random(0)
    texts, wrong, answers = [], [], []
    for pl in c.PLACEMENTS:
        texts += [c.gold_solution(p, pl, rng) for p in probs]                 # every wording variant
        wrong += ["\n\n".join(c.solution_steps(p, pl, rng, (k % 3 != 1, k % 3 != 0))) for k, p in enumerate(probs)]
        answers += [p.answer for p in probs]
    with Grader(workers=1, timeout=5.0) as grader:
        assert grader.grade(texts, answers) == [1.0] * len(texts)
        assert grader.grade(wrong, answers) == [0.0] * len(wrong)


def test_test_split_is_disjoint_from_training_by_construction():
    test = c.test_problems(500)
    assert len({p.problem for p in test}) == 500 and all(c.is_test_problem(p.problem) for p in test)
    assert [p.level for p in test[:8]] == [1, 2, 3, 4, 1, 2, 3, 4]
    train = c.train_problems(3000, seed=0)
    assert not any(c.is_test_problem(p.problem) for p in train)
    assert not {p.problem for p in train} & {p.problem for p in test}


def test_bad_placement_and_problem_text_fail_clearly():
    with pytest.raises(ValueError, match="placement must be one of"):
        c.test_problems(1, placement="middle")
    with pytest.raises(ValueError, match="not an early/late problem"):
        c.parse_problem("Let x be the larger of 7 and 4.")


def test_world_registry_and_prompt_template():
    from attnrl_mini.worlds import data
    for pl in c.PLACEMENTS:
        w = get_world(pl)
        assert w.test_problems(3) == c.test_problems(3, placement=pl) and w.model_dir.endswith(f"compass/model_{pl}")
        assert w.train_problems(5, seed=2) == c.train_problems(5, seed=2, placement=pl)
        assert pl in data.TOY_SOURCES


def test_two_short_pretrain_runs_give_identical_weights():
    from attnrl_mini.worlds.compass.pretrain import compass_batch
    from attnrl_mini.worlds.compass.tokenizer import build_compass_tokenizer
    from attnrl_mini.worlds.toy.pretrain import PretrainConfig, train
    from attnrl_mini.worlds.toy_plan.pretrain import PLAN_LAYERS
    cfg = PretrainConfig(steps=2, batch_size=4, num_layers=PLAN_LAYERS)
    torch.set_num_threads(cfg.threads)
    runs = [train(cfg, log=lambda s: None, tokenizer=build_compass_tokenizer(), make_batch=compass_batch("late"))[0]
            for _ in range(2)]
    a, b = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_exhausted_test_split_is_a_clear_error_and_the_pair_holds_2000(monkeypatch):
    from attnrl_mini.worlds.problem import Problem
    from attnrl_mini.worlds.toy import problems as toy
    monkeypatch.setattr(toy, "MAX_MISSES", 500)
    tiny = lambda rng, level: Problem(f"p{rng.randrange(3)}", f"text {rng.randrange(3)}", "0", "t", level)  # noqa: E731
    with pytest.raises(ValueError, match="test split of level 1 seems exhausted at 3 distinct problems"):
        toy.draw_test_split(tiny, lambda text: True, (1,), "seed", 4)
    assert len({p.problem for p in c.test_problems(2000)}) == 2000           # binomial SE <= 1.1 points


@pytest.mark.parametrize("placement", c.PLACEMENTS)
@pytest.mark.skipif(not all(os.path.exists(os.path.join(get_world(pl).model_dir, "model.safetensors")) for pl in c.PLACEMENTS),
                    reason="the pair's models are not built yet: python -m attnrl_mini.worlds.compass.pretrain --placement early|late")
def test_shipped_model_and_tokenizer(placement):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from attnrl_mini.worlds.compass.tokenizer import build_compass_tokenizer
    from attnrl_mini.worlds.toy.tokenizer import toy_prompt_ids
    path = get_world(placement).model_dir
    tok = AutoTokenizer.from_pretrained(path)
    assert type(tok).__name__ == "Qwen2Tokenizer" and tok.get_vocab() == build_compass_tokenizer().get_vocab()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    cfg = model.config
    assert type(model).__name__ == "Qwen2ForCausalLM" and cfg.hidden_size // cfg.num_attention_heads >= 32
    assert sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) < 20 * 2**20
    # greedy decoding of level-1 problems (decisions nearly certain) follows the world's layout and is right
    problems = [p for p in c.test_problems(24, placement=placement) if p.level == 1][:6]
    prompts = [toy_prompt_ids(tok, p) for p in problems]
    T = max(map(len, prompts))
    input_ids = torch.tensor([[tok.pad_token_id] * (T - len(x)) + x for x in prompts])
    mask = (torch.arange(T)[None, :] >= torch.tensor([T - len(x) for x in prompts])[:, None]).long()
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=96, do_sample=False)
    texts = [tok.decode(row[T:], skip_special_tokens=True) for row in out]
    for text, p in zip(texts, problems):
        steps = text.split("\n\n")
        assert steps[0] == c.FIRST_STEP and len(steps) == len(c.LAYOUT[placement])
        assert all(steps[k][:4] in ("x is", "y is") for k in c.DECISION_STEPS[placement])
        assert all(steps[k].split()[0] in ("Compare", "We", "Look") for k in c.RESTATEMENT_STEPS[placement])
    from attnrl_mini.worlds.reward import is_correct
    assert sum(is_correct(t, p.answer) for t, p in zip(texts, problems)) >= 5


def test_an_unbuilt_world_model_is_a_clear_error(monkeypatch, tmp_path):
    import dataclasses
    from attnrl_mini import worlds
    from attnrl_mini.models.policy import ModelNotFoundError, resolve_model
    unbuilt = dataclasses.replace(get_world("late"), model_dir=str(tmp_path / "model_late"))
    monkeypatch.setattr(worlds, "get_world", lambda name: unbuilt)
    with pytest.raises(ModelNotFoundError, match="model is not built yet: run `python -m attnrl_mini.worlds.compass.pretrain --placement late`"):
        resolve_model("late")
