"""CSIM, FID, PSNR/SSIM, LMD and the audio-visual offset on the shared media."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from musetalk.errors import CheckpointError, MuseTalkError
from musetalk.eval.av_offset import MIN_CORRELATION, estimate_offset, speech_envelope
from musetalk.eval.csim import DlibFaceEmbedder, cosine_similarity, identity_scores
from musetalk.eval.fid import fid_from_features
from musetalk.eval.image_metrics import PSNR_CAP_DB, mouth_box, psnr, ssim
from musetalk.eval.inception import FIDInception, load_fid_inception
from musetalk.eval.lmd import frame_lmd
from musetalk.face import FaceAnalyzer
from musetalk.video.io import read_image


@pytest.fixture(scope="module")
def embedder():
    return DlibFaceEmbedder()


def _identity(embedder, image):
    rec = FaceAnalyzer(backend="dlib", smooth=False).analyze_all([image])[0]
    return embedder(image, rec.landmarks)


def test_csim_ranks_same_person_above_different_people(embedder, media, sun_frames, sun_records):
    same = cosine_similarity(embedder(sun_frames[0], sun_records[0].landmarks),
                             embedder(sun_frames[80], sun_records[80].landmarks))[0]
    musk, mona = (_identity(embedder, read_image(media / name)) for name in ("musk.png", "monalisa.png"))
    different = cosine_similarity(musk, mona)[0]
    itself = cosine_similarity(musk, _identity(embedder, read_image(media / "musk.png")))[0]
    assert itself == pytest.approx(1.0, abs=1e-6)
    assert same > 0.97 > different


def test_identity_verdict_uses_dlibs_distance_not_the_cosine(embedder, media, sun_frames, sun_records):
    """Two different people still score a cosine above 0.8 with dlib's descriptor: the verdict comes from the
    descriptor distance (0.6), which separates them."""
    musk, mona = (_identity(embedder, read_image(media / name)) for name in ("musk.png", "monalisa.png"))
    different = identity_scores(musk[None], mona[None])
    assert different.cosine > 0.75 and different.distance > 0.7 and not different.same_person
    sun = identity_scores(embedder(sun_frames[0], sun_records[0].landmarks)[None],
                          embedder(sun_frames[80], sun_records[80].landmarks)[None])
    assert sun.distance < 0.4 and sun.same_person


def _reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID written out directly: Tr(sqrt(S1 S2)) from the eigenvalues of S1 S2."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.abs(eig.real))))


def test_fid_matches_a_direct_numpy_scipy_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 16))
    b = rng.normal(size=(250, 16)) @ rng.normal(scale=0.5, size=(16, 16)) + 0.3
    assert fid_from_features(a, b) == pytest.approx(_reference_fid(a, b), rel=1e-6)
    direct = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(
        np.cov(a, rowvar=False) + np.cov(b, rowvar=False)
        - 2 * linalg.sqrtm(np.cov(a, rowvar=False) @ np.cov(b, rowvar=False)).real)
    assert fid_from_features(a, b) == pytest.approx(direct, rel=1e-9)
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(MuseTalkError, match="at least 2"):
        fid_from_features(a[:1], b)


def test_fid_inception_features_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = FIDInception()
    feats = net.features(np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8))
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    state = dict(net.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)  # pytorch-fid's file has it
    torch.save(state, tmp_path / "pt_inception.pth")
    loaded = load_fid_inception(tmp_path / "pt_inception.pth")
    assert torch.equal(loaded.Mixed_7c.branch_pool.conv.weight, net.Mixed_7c.branch_pool.conv.weight)
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="not the FID Inception"):
        load_fid_inception(tmp_path / "bad.pth")


def test_pixel_metrics_of_a_frame_against_itself_and_a_noisy_copy(sun_frames, sun_records):
    frame, rec = sun_frames[0], sun_records[0]
    box = mouth_box(rec.landmarks, frame.shape)
    assert psnr(frame, frame) == PSNR_CAP_DB and ssim(frame, frame) == pytest.approx(1.0)
    noisy = np.clip(frame + np.random.default_rng(0).normal(0, 8, frame.shape), 0, 255).astype(np.uint8)
    assert 25 < psnr(frame, noisy) < 35 and ssim(frame, noisy) < 0.95
    assert box[2] > box[0] and box[3] > box[1]
    assert frame_lmd(rec.landmarks, rec.landmarks, rec.crop_box) == 0.0
    assert frame_lmd(rec.landmarks, rec.landmarks + [0, 3], rec.crop_box) > 0


def test_av_offset_recovers_a_planted_delay():
    rng = np.random.default_rng(1)
    envelope = np.convolve(rng.normal(size=300), np.ones(4) / 4, mode="same")
    for delay in (-6, 0, 5):
        mouth = np.roll(envelope, -delay) + 0.2 * rng.normal(size=300)  # sound comes `delay` frames late
        assert estimate_offset(mouth, envelope).offset == pytest.approx(-delay, abs=0.5)


def test_av_offset_of_a_still_mouth_is_not_measurable(sun_audio):
    """A mouth that does not move (landmark jitter only) against real speech: low peak, no offset."""
    still = 0.05 + np.random.default_rng(0).normal(0, 1e-3, 100)
    av = estimate_offset(still, speech_envelope(sun_audio, 25.0, 100))
    assert av.correlation < MIN_CORRELATION and not av.measurable
    assert av.problem == f"peak correlation {av.correlation:.2f} < {MIN_CORRELATION}"


def test_av_offset_peak_at_the_search_edge_is_not_measurable():
    """A slow envelope and a mouth following it 20 frames late (beyond the +-15 search): the correlation
    is high but rises towards the edge, so the true offset is outside the search."""
    envelope = np.convolve(np.random.default_rng(2).normal(size=300), np.ones(30) / 30, mode="same")
    av = estimate_offset(np.roll(envelope, 20), envelope)
    assert av.correlation > MIN_CORRELATION and av.offset == 15.0 and not av.measurable
    assert av.problem == "peak at the edge of the +-15 frame search"
