from stream_rec.evaluation.ablation import (
    VARIANTS,
    AblationOptions,
    generated_sessions,
    run_ablation,
)


def test_every_variant_is_scored_on_the_same_targets():
    sessions = generated_sessions(3000, users=100, items=200, seed=1)
    rows = run_ablation(sessions, AblationOptions(epochs=1, dim=16, threads=1))
    assert [r["variant"] for r in rows] == list(VARIANTS)
    assert len({r["cases"] for r in rows}) == 1 and rows[0]["cases"] > 50
    assert rows[0]["cold_cases"] >= rows[1]["cold_cases"] == rows[2]["cold_cases"] == 0
    assert all(0 <= r["hr@20"] <= 100 and 0 <= r["mrr@20"] <= r["hr@20"] for r in rows)
