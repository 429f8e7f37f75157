"""The epoch a catbert run would keep with `--near-tie Z`, re-derived from its metrics.json.

Training does not depend on the selection rule, so one run at the reference's strict rule
(`--near-tie 0`) shows both rules: this mirrors src/train/select.rs on the recorded
per-epoch metrics and `selection_se` (the paired-bootstrap standard error of each epoch's
difference from the best epoch before it). Exact for two-epoch runs; with more epochs the
recorded error is against the strict rule's best, which a near tie may have replaced.
Used by scripts/quality-options.sh and scripts/quality-seeds.sh.
"""


def selection(epoch):
    return epoch.get("holdout") or epoch.get("eval")


def kept(epochs, metric="f1_min", z=0.0):
    higher = metric != "loss"
    best = None
    for e in epochs:
        score = selection(e)[metric]
        if best is None:
            best, best_score = e, score
            continue
        se = e.get("selection_se")
        near = z > 0 and score != best_score and se is not None and abs(score - best_score) <= z * se
        if not near:
            if (score > best_score) if higher else (score < best_score):
                best, best_score = e, score
                continue
            if score != best_score:
                continue
        now, then = selection(e), selection(best)
        if metric != "f1_weighted" and now["f1_weighted"] != then["f1_weighted"]:
            won = now["f1_weighted"] > then["f1_weighted"]
        elif metric != "loss" and now.get("loss") is not None and then.get("loss") is not None:
            won = now["loss"] < then["loss"]
        else:
            won = False
        if won:
            best, best_score = e, score
    return best["epoch"]
