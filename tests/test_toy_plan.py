"""The second toy world (attnrl_mini/worlds/toy_plan/): answers, gold solutions, split, rebuild."""
import random

import torch

from attnrl_mini.worlds.reward import Grader
from attnrl_mini.worlds.toy_plan import problems as plan
from attnrl_mini.worlds import get_world


def independent_answer(text: str) -> int:
    """Read the problem like a person: x = the larger of the two numbers, then sum the two lines."""
    lines = text.split("\n")
    words = lines[0].rstrip(".").split()
    x = max(int(words[-3]), int(words[-1]))               # "... the larger of A and B"
    total = 0
    for line in lines[1:3]:
        w = line.rstrip(".").split()
        total += x + int(w[2]) if w[1] == "Add" else x * int(w[-1])   # "(a) Add 5 to x" / "(a) Multiply x by 3"
    return total


def test_hand_checked_problem():
    text = plan.problem_text(7, 4, [("Add", 5), ("Multiply", 2)])
    assert text == ("Let x be the larger of 7 and 4.\n(a) Add 5 to x.\n(b) Multiply x by 2.\n"
                    "What is the sum of the results?")
    assert plan.answer_for(7, plan.parse_problem(text)[2]) == 12 + 14
    assert plan.gold_solution(text) == "Compare 7 and 4.\n\nx is 7.\n\n(a) 7+5=12\n\n(b) 7*2=14\n\n12+14=26\n\n\\boxed{26}"


def test_answers_match_an_independent_computation_and_levels_match_gaps():
    rng = random.Random(1)
    for level in plan.LEVELS:
        for _ in range(200):
            p = plan.make_problem(rng, level)
            assert int(p.answer) == independent_answer(p.problem)
            a, b, _ = plan.parse_problem(p.problem)
            assert abs(a - b) in plan.GAPS[level] and a != b


def test_a_wrong_decision_always_gives_a_wrong_answer():
    for p in plan.train_problems(300, seed=3):
        a, b, ops = plan.parse_problem(p.problem)
        assert plan.answer_for(min(a, b), ops) != int(p.answer)


def test_gold_solutions_grade_correct_and_wrong_decisions_grade_wrong():
    probs = plan.test_problems(60) + plan.train_problems(60, seed=5)
    rng = random.Random(0)
    texts = [plan.gold_solution(p, rng) for p in probs]                      # every wording variant
    wrong = ["\n\n".join(plan.solution_steps(p, rng, wrong_choice=True)) for p in probs]
    with Grader(workers=1, timeout=5.0) as grader:
        assert grader.grade(texts, [p.answer for p in probs]) == [1.0] * len(probs)
        assert grader.grade(wrong, [p.answer for p in probs]) == [0.0] * len(probs)


def test_decision_is_step_two_and_steps_split_at_blank_lines():
    steps = plan.solution_steps(plan.test_problems(1)[0], random.Random(2))
    assert "x is" in steps[plan.DECISION_STEP] and len(steps) == 6


def test_test_split_is_disjoint_from_training_by_construction():
    test = plan.test_problems(500)
    assert len({p.problem for p in test}) == 500 and all(plan.is_test_problem(p.problem) for p in test)
    assert [p.level for p in test[:8]] == [1, 2, 3, 4, 1, 2, 3, 4]
    train = plan.train_problems(3000, seed=0)
    assert not any(plan.is_test_problem(p.problem) for p in train)
    assert not {p.problem for p in train} & {p.problem for p in test}


def test_world_registry():
    w = get_world("toy-plan")
    assert w.test_problems(3) == plan.test_problems(3) and w.model_dir.endswith("toy_plan/model")


def test_two_short_pretrain_runs_give_identical_weights():
    from attnrl_mini.worlds.toy.pretrain import PretrainConfig, train
    from attnrl_mini.worlds.toy_plan.pretrain import PLAN_LAYERS, plan_batch
    from attnrl_mini.worlds.toy_plan.tokenizer import build_plan_tokenizer
    cfg = PretrainConfig(steps=2, batch_size=4, num_layers=PLAN_LAYERS)
    torch.set_num_threads(cfg.threads)
    runs = [train(cfg, log=lambda s: None, tokenizer=build_plan_tokenizer(), make_batch=plan_batch)[0] for _ in range(2)]
    a, b = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_every_built_in_world_gets_its_own_prompt_template():
    from attnrl_mini.worlds import data
    from attnrl_mini import worlds
    from attnrl_mini.models.policy import load_tokenizer
    from attnrl_mini.worlds.toy import toy_prompt_ids
    assert set(data.TOY_SOURCES) == set(worlds.WORLD_NAMES)
    world = worlds.get_world("toy-plan")
    problem, tok = world.test_problems(1)[0], load_tokenizer(world.model_dir)
    assert data.encode_prompt(tok, problem) == list(toy_prompt_ids(tok, problem))
