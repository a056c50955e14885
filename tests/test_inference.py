"""How two modalities' posteriors are combined before Sinkhorn."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from selavi_core.model.inference import equalise_confidence, joint_log_posterior, margin_sum


def posteriors(n: int, k: int, sharpness: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return log_softmax(sharpness * rng.standard_normal((n, k)), axis=1).astype(np.float32)


def test_equalised_modalities_keep_their_ranking_and_share_one_margin() -> None:
    lv, la = posteriors(500, 10, 8.0, 0), posteriors(500, 10, 0.5, 1)  # confident video, hesitant audio
    mv, ma = margin_sum(lv) / 500, margin_sum(la) / 500
    assert mv > 10 * ma
    tv, ta = equalise_confidence(lv, la, mv, ma)
    for before, after in ((lv, tv), (la, ta)):
        np.testing.assert_array_equal(after.argmax(1), before.argmax(1))
        np.testing.assert_array_equal(np.argsort(after, 1), np.argsort(before, 1))
        np.testing.assert_allclose(np.exp(after).sum(1), 1.0, atol=1e-5)
    target = 0.5 * (mv + ma)
    np.testing.assert_allclose([margin_sum(tv) / 500, margin_sum(ta) / 500], [target, target], rtol=1e-4)


def test_without_equalising_the_sharper_modality_decides_the_joint_label() -> None:
    lv, la = posteriors(2000, 10, 8.0, 2), posteriors(2000, 10, 0.5, 3)
    raw = joint_log_posterior(lv, la).argmax(1)
    tv, ta = equalise_confidence(lv, la, margin_sum(lv) / 2000, margin_sum(la) / 2000)
    fair = joint_log_posterior(tv, ta).argmax(1)
    follows_video_raw = np.mean(raw == lv.argmax(1))
    follows_audio_raw = np.mean(raw == la.argmax(1))
    assert follows_video_raw > 0.9 and follows_audio_raw < 0.2
    follows_video, follows_audio = np.mean(fair == lv.argmax(1)), np.mean(fair == la.argmax(1))
    assert follows_audio > follows_audio_raw + 0.2  # audio now has a say
    assert abs(follows_video - follows_audio) < 0.1  # as much as video


def test_equal_margins_change_nothing() -> None:
    lv, la = posteriors(100, 7, 2.0, 4), posteriors(100, 7, 2.0, 5)
    m = margin_sum(lv) / 100
    tv, ta = equalise_confidence(lv, la, m, m)
    np.testing.assert_allclose(tv, lv, atol=1e-5)
    np.testing.assert_allclose(ta, la, atol=1e-5)


def test_audio_weight_sets_each_modalitys_share_of_the_joint_label() -> None:
    lv, la = posteriors(2000, 10, 2.0, 4), posteriors(2000, 10, 2.0, 5)  # equally confident, unrelated
    np.testing.assert_array_equal(joint_log_posterior(lv, la, 0.5), 0.5 * (lv + la))
    np.testing.assert_allclose(joint_log_posterior(lv, la, 0.3), 0.7 * lv + 0.3 * la, rtol=1e-6)
    follows_audio = [np.mean(joint_log_posterior(lv, la, w).argmax(1) == la.argmax(1)) for w in (0.1, 0.3, 0.5, 0.9)]
    assert follows_audio == sorted(follows_audio)  # more weight, more say
    assert follows_audio[0] < 0.25 and follows_audio[-1] > 0.85
    assert abs(np.mean(joint_log_posterior(lv, la).argmax(1) == lv.argmax(1)) - follows_audio[2]) < 0.05
