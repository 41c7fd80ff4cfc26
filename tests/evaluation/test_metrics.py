"""Metrics against hand-computed examples: confusion matrix, precision / recall / F1 (with zero division),
top-k clipping, batch-split invariance of the accumulator, worst-error ordering and the CSV round trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightnets.evaluation.metrics import (
    Accumulator,
    EvalResult,
    accuracy,
    confusion_matrix,
    confusion_matrix_csv,
    evaluate_logits,
    most_confused,
    parse_confusion_matrix_csv,
    parse_per_class_csv,
    per_class_csv,
    per_class_metrics,
    topk_correct,
)

# Four classes; "fish" (3) is never predicted.  Rows of the expected matrix are true classes.
NAMES = ["cat", "dog", "bird", "fish"]
TARGETS = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
PREDS = [0, 0, 1, 1, 2, 2, 2, 0, 1, 2]
EXPECTED_CM = np.array(
    [
        [2, 1, 0, 0],
        [0, 1, 1, 0],
        [1, 0, 2, 0],
        [0, 1, 1, 0],
    ]
)


def test_confusion_matrix_hand_computed():
    cm = confusion_matrix(PREDS, TARGETS, 4)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, EXPECTED_CM)
    # torch input gives the same
    np.testing.assert_array_equal(
        confusion_matrix(torch.tensor(PREDS), torch.tensor(TARGETS), 4), EXPECTED_CM
    )


def test_confusion_matrix_rejects_out_of_range_and_length_mismatch():
    with pytest.raises(ValueError, match="preds"):
        confusion_matrix([0, 4], [0, 1], 4)
    with pytest.raises(ValueError, match="targets"):
        confusion_matrix([0, 1], [0, -1], 4)
    with pytest.raises(ValueError, match="length"):
        confusion_matrix([0, 1, 2], [0, 1], 4)


def test_per_class_metrics_hand_computed():
    rows = per_class_metrics(EXPECTED_CM, NAMES)
    by_class = {r["class"]: r for r in rows if r["kind"] == "class"}
    # precision = TP / predicted, recall = TP / support, F1 = 2TP / (2TP + FP + FN)
    expected = {
        "cat": (2 / 3, 2 / 3, 4 / 6, 3),
        "dog": (1 / 3, 1 / 2, 2 / 5, 2),
        "bird": (2 / 4, 2 / 3, 4 / 7, 3),
        "fish": (0.0, 0.0, 0.0, 2),  # never predicted: precision 0/0 -> 0.0
    }
    assert list(by_class) == NAMES
    for name, (p, r, f1, support) in expected.items():
        row = by_class[name]
        assert row["precision"] == pytest.approx(p)
        assert row["recall"] == pytest.approx(r)
        assert row["f1"] == pytest.approx(f1)
        assert row["support"] == support
        assert row["index"] == NAMES.index(name)

    macro, weighted = rows[-2], rows[-1]
    assert (macro["kind"], weighted["kind"]) == ("macro", "weighted")
    assert macro["index"] is None and macro["support"] == weighted["support"] == 10
    assert macro["precision"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2 + 0) / 4)
    assert macro["recall"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3 + 0) / 4)
    assert macro["f1"] == pytest.approx((2 / 3 + 2 / 5 + 4 / 7 + 0) / 4)
    assert weighted["precision"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 3 + 3 * 1 / 2) / 10)
    assert weighted["recall"] == pytest.approx(0.5)  # support-weighted recall is the accuracy
    assert weighted["f1"] == pytest.approx((3 * 2 / 3 + 2 * 2 / 5 + 3 * 4 / 7) / 10)


def test_per_class_metrics_absent_class_and_empty_matrix():
    cm = np.zeros((5, 5), dtype=np.int64)
    cm[:4, :4] = EXPECTED_CM  # class 4 has no samples and is never predicted
    rows = per_class_metrics(cm, [*NAMES, "eel"])
    eel = rows[4]
    assert (eel["precision"], eel["recall"], eel["f1"], eel["support"]) == (0.0, 0.0, 0.0, 0)
    # the macro average counts the absent class (scikit-learn with an explicit label list does the same)
    assert rows[-2]["f1"] == pytest.approx((2 / 3 + 2 / 5 + 4 / 7) / 5)
    empty = per_class_metrics(np.zeros((3, 3)), None)
    assert [r["class"] for r in empty[:3]] == ["0", "1", "2"]
    assert all(r[k] == 0.0 for r in empty for k in ("precision", "recall", "f1"))
    with pytest.raises(ValueError, match="class names"):
        per_class_metrics(EXPECTED_CM, NAMES[:3])
    with pytest.raises(ValueError, match="square"):
        per_class_metrics(np.zeros((2, 3)), None)


def test_per_class_metrics_match_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 6, 200), rng.integers(0, 5, 200)  # class 5 never predicted
    rows = per_class_metrics(confusion_matrix(p, t, 7), None)  # class 6 absent entirely
    labels = list(range(7))
    prec, rec, f1, sup = sklearn_metrics.precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    np.testing.assert_allclose([r["precision"] for r in rows[:7]], prec)
    np.testing.assert_allclose([r["recall"] for r in rows[:7]], rec)
    np.testing.assert_allclose([r["f1"] for r in rows[:7]], f1)
    for kind in ("macro", "weighted"):
        ref = sklearn_metrics.precision_recall_fscore_support(
            t, p, labels=labels, average=kind, zero_division=0
        )
        row = next(r for r in rows if r["kind"] == kind)
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(ref[:3])


def test_topk_correct_hand_computed_and_clipped():
    logits = torch.tensor(
        [
            [3.0, 2.0, 1.0],  # target 0: top-1 hit
            [3.0, 2.0, 1.0],  # target 1: top-2 hit
            [3.0, 2.0, 1.0],  # target 2: top-3 hit
            [0.0, 5.0, 1.0],  # target 2: top-2 hit
        ]
    )
    targets = torch.tensor([0, 1, 2, 2])
    assert topk_correct(logits, targets, ks=(1, 2, 3)) == {1: 1, 2: 3, 3: 4}
    # k larger than the class count is clipped to it: every target is within the top 3 of 3 classes
    assert topk_correct(logits, targets, ks=(1, 5)) == {1: 1, 5: 4}
    assert topk_correct(logits.numpy(), targets.numpy(), ks=(5,)) == {5: 4}
    assert accuracy(logits, targets) == pytest.approx(0.25)
    assert accuracy(logits, targets, k=2) == pytest.approx(0.75)
    assert accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        topk_correct(logits, targets, ks=(0,))
    with pytest.raises(ValueError, match="targets"):
        topk_correct(logits, torch.tensor([0, 1, 2, 3]))


def _random_problem(n: int = 203, c: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, c, (n,), generator=g)
    logits = torch.randn(n, c, generator=g) * 2
    logits[torch.arange(n), targets] += 1.5  # better than chance, still many errors
    return logits, targets


def test_one_shot_result_values():
    logits, targets = _random_problem()
    r = evaluate_logits(logits, targets, worst_n=5)
    assert r.num_samples == 203 and r.num_classes == 7
    assert r.top1 == pytest.approx((logits.argmax(1) == targets).float().mean().item())
    assert r.top5 == pytest.approx(topk_correct(logits, targets, (5,))[5] / 203)
    assert r.loss == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    np.testing.assert_array_equal(r.confusion, confusion_matrix(logits.argmax(1), targets, 7))
    assert r.per_class == per_class_metrics(r.confusion, r.class_names)
    assert r.summary()["macro_f1"] == r.average("macro")["f1"]


@pytest.mark.parametrize("splits", [[203], [1, 202], [50, 50, 50, 53], [7] * 29])
def test_accumulator_equals_one_shot(splits):
    logits, targets = _random_problem()
    one_shot = evaluate_logits(logits, targets, worst_n=10)
    acc = Accumulator(7, worst_n=10)
    start = 0
    for i, size in enumerate(splits):
        sl = slice(start, start + size)
        if i % 2:  # mix torch and numpy batches
            acc.update(logits[sl].numpy(), targets[sl].numpy())
        else:
            acc.update(logits[sl], targets[sl])
        start += size
    assert len(acc) == 203
    r = acc.compute()
    np.testing.assert_array_equal(r.confusion, one_shot.confusion)
    assert (r.top1, r.top5, r.num_samples) == (one_shot.top1, one_shot.top5, one_shot.num_samples)
    assert r.loss == pytest.approx(one_shot.loss, rel=1e-9)
    assert [(m.index, m.true, m.pred) for m in r.worst] == [(m.index, m.true, m.pred) for m in one_shot.worst]
    assert [m.loss for m in r.worst] == pytest.approx([m.loss for m in one_shot.worst])
    acc.reset()
    assert len(acc) == 0 and acc.compute().num_samples == 0


def test_worst_misclassified_ordering():
    # sample: 0 correct, 1 wrong (mild), 2 wrong (severe), 3 correct, 4 wrong (same logits as 1 -> tie), 5 wrong
    logits = torch.tensor(
        [
            [4.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 6.0, 0.0],
            [0.0, 0.0, 2.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 3.0],
        ]
    )
    targets = torch.tensor([0, 0, 0, 2, 0, 1])
    ids = [10, 11, 12, 13, 14, 15]
    paths = [f"img_{i}.png" for i in ids]
    r = evaluate_logits(logits, targets, ["a", "b", "c"], ids=ids, paths=paths, worst_n=3)
    assert [m.index for m in r.worst] == [12, 15, 11]  # loss descending; the 11/14 tie goes to the lower id
    losses = F.cross_entropy(logits, targets, reduction="none")
    assert [m.loss for m in r.worst] == pytest.approx(losses[[2, 5, 1]].tolist())
    probs = logits.softmax(1)
    first = r.worst[0]
    assert (first.true, first.pred, first.path) == (0, 1, "img_12.png")
    assert first.confidence == pytest.approx(probs[2, 1].item())
    assert first.true_prob == pytest.approx(probs[2, 0].item())
    assert first.describe(r.class_names) == f"true: a, predicted: b ({100 * probs[2, 1].item():.1f}%)"
    # all errors when N is large; none when worst_n=0
    assert len(evaluate_logits(logits, targets, worst_n=100).worst) == 4
    assert evaluate_logits(logits, targets, worst_n=0).worst == []


def test_top5_with_fewer_than_five_classes_is_clipped():
    logits, targets = _random_problem(c=3)
    r = evaluate_logits(logits, targets)
    assert r.top5 == 1.0 and r.top1 < 1.0


def test_accumulator_validation():
    acc = Accumulator(3)
    with pytest.raises(ValueError, match="expected 3"):
        acc.update(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        acc.update(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="ids"):
        acc.update(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), ids=[1])
    with pytest.raises(ValueError, match="class names"):
        Accumulator(3, ["a", "b"])
    with pytest.raises(ValueError, match="num_classes"):
        Accumulator(0)


def test_eval_result_json_round_trip():
    logits, targets = _random_problem(n=40, c=4)
    names = ["<cat>", "dog & co", "café", 'say "hi"']
    r = evaluate_logits(logits, targets, names, paths=[f"p{i}.jpg" for i in range(40)], worst_n=4)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["class_names"] == names and d["num_samples"] == 40
    assert d["confusion"] == r.confusion.tolist()
    back = EvalResult.from_dict(d)
    np.testing.assert_array_equal(back.confusion, r.confusion)
    assert back.worst == r.worst and back.per_class == r.per_class
    assert (back.top1, back.top5, back.loss) == (r.top1, r.top5, r.loss)
    # non-finite numbers become null, so strict JSON still works
    r.loss = math.nan
    assert json.loads(json.dumps(r.to_dict(), allow_nan=False))["loss"] is None


def test_most_confused():
    pairs = most_confused(EXPECTED_CM, NAMES, n=3)
    # off-diagonal ones; ties in row-major order
    assert [(p["true_name"], p["pred_name"], p["count"]) for p in pairs] == [
        ("cat", "dog", 1),
        ("dog", "bird", 1),
        ("bird", "cat", 1),
    ]
    assert pairs[0]["fraction"] == pytest.approx(1 / 3)
    assert most_confused(np.eye(3, dtype=int) * 5) == []


TRICKY_NAMES = ["plain", "comma, inside", 'quote "x"', "new\nline", "<b>&amp;", "Ünïcödé 猫"]


def test_confusion_matrix_csv_round_trip():
    rng = np.random.default_rng(1)
    cm = rng.integers(0, 100, (6, 6))
    text = confusion_matrix_csv(cm, TRICKY_NAMES)
    assert text.splitlines()[0].startswith("true \\ predicted,plain,")
    cm_back, names_back = parse_confusion_matrix_csv(text)
    assert names_back == TRICKY_NAMES
    np.testing.assert_array_equal(cm_back, cm)
    with pytest.raises(ValueError, match="class names"):
        confusion_matrix_csv(cm, TRICKY_NAMES[:5])


def test_per_class_csv_round_trip():
    cm = np.random.default_rng(2).integers(0, 20, (6, 6))
    rows = per_class_metrics(cm, TRICKY_NAMES)
    text = per_class_csv(rows)
    assert text.splitlines()[0] == "kind,index,class,precision,recall,f1,support"
    assert parse_per_class_csv(text) == rows  # floats are written with repr, so they read back exactly


def test_paths_filled_in_by_id_at_compute():
    logits, targets = _random_problem(n=30, c=4)
    acc = Accumulator(4, worst_n=5)
    acc.update(logits[:10], targets[:10], ids=range(100, 110))
    acc.update(logits[10:], targets[10:], ids=range(110, 130), paths=[f"given_{i}" for i in range(20)])
    files = {i: f"file_{i}.png" for i in range(100, 130)}
    worst = acc.compute(paths_by_id=files).worst
    assert worst
    for m in worst:  # paths given with the batch win; the rest come from the mapping
        assert m.path == (f"file_{m.index}.png" if m.index < 110 else f"given_{m.index - 110}")
    assert all(m.path is None for m in acc.compute(paths_by_id=[]).worst if m.index < 110)
