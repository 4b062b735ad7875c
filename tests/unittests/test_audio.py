"""Audio reading: formats, rates, channels, and every kind of unusable file."""

import logging

import numpy as np
import pytest
import torch
import torchaudio
from fixture_corpora import corrupt, tone
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_mowe.dataio import (
    AudioError,
    AudioInfo,
    EmptyBatch,
    SkippedClips,
    UnreadableAudio,
    audio_info,
    audio_pipeline,
    collate_audio,
    load_audio,
    save_audio,
)
from speechbrain_mowe.dataio import audio as audio_module


@pytest.fixture(autouse=True)
def fresh_conversion_log(monkeypatch):
    """Each test sees the first-conversion log line again."""
    monkeypatch.setattr(audio_module, "_announced_conversions", set())


def peak_frequency(wav: torch.Tensor, sample_rate: int) -> float:
    spectrum = torch.fft.rfft(wav).abs()
    return float(spectrum.argmax()) * sample_rate / len(wav)


@pytest.mark.parametrize(
    "suffix,kwargs", [(".wav", {}), (".flac", {}), (".mp3", {"format": "MP3"})]
)
def test_formats_read_as_mono_16k(tmp_path, suffix, kwargs):
    path = tmp_path / f"a{suffix}"
    save_audio(path, tone(1.0, 16000, 440), 16000, **kwargs)
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.dim() == 1
    assert len(wav) == 16000
    assert peak_frequency(wav, 16000) == pytest.approx(440, abs=2)
    if suffix != ".mp3":  # lossless formats round-trip to 16-bit precision
        assert torch.allclose(wav, tone(1.0, 16000, 440), atol=1e-4)


def test_8khz_is_upsampled_with_one_log_line(tmp_path, caplog):
    paths = [tmp_path / f"tel{i}.wav" for i in range(2)]
    for path in paths:
        save_audio(path, tone(0.5, 8000, 300), 8000)
    with caplog.at_level(logging.INFO, logger="speechbrain_mowe.dataio.audio"):
        wavs = [load_audio(path) for path in paths]
    assert [len(w) for w in wavs] == [8000, 8000]
    assert peak_frequency(wavs[0], 16000) == pytest.approx(300, abs=2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "Resampling 8000 Hz to 16000 Hz" in lines[0]
    assert str(paths[0]) in lines[0]


def test_stereo_44k_is_averaged_and_resampled(tmp_path, caplog):
    path = tmp_path / "scene.wav"
    stereo = tone(1.0, 44100, 500, channels=2)  # 500 Hz left, 1000 Hz right
    save_audio(path, stereo, 44100, subtype="FLOAT")
    assert audio_info(path) == AudioInfo(44100, 2, 44100)
    with caplog.at_level(logging.INFO, logger="speechbrain_mowe.dataio.audio"):
        wav = load_audio(path)
    expected = torchaudio.functional.resample(stereo.mean(0), 44100, 16000)
    assert wav.shape == (16000,)
    assert torch.allclose(wav, expected, atol=1e-6)
    assert "Averaging 2 channels to mono and resampling 44100 Hz to 16000 Hz" in caplog.text


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("garbage", "unreadable audio"),
        ("zero", "unreadable audio"),
        ("no_samples", "empty audio (no samples)"),
    ],
)
def test_unusable_files_raise_with_path_and_id(tmp_path, kind, reason):
    path = corrupt(tmp_path / "bad.wav", kind)
    for read in (load_audio, audio_info):
        with pytest.raises(AudioError) as err:
            read(path, utt_id="utt7")
        assert err.value.reason.startswith(reason)
        assert err.value.utt_id == "utt7" and err.value.path == str(path)
        assert str(path) in str(err.value) and "utt7" in str(err.value)


def test_missing_file_and_minimum_duration(tmp_path):
    with pytest.raises(AudioError, match="u1: file not found: '.*nowhere.wav'"):
        load_audio(tmp_path / "nowhere.wav", utt_id="u1")
    path = tmp_path / "blip.wav"
    save_audio(path, tone(0.05, 16000), 16000)
    with pytest.raises(AudioError, match=r"too short \(0.05 s < 0.10 s\)"):
        load_audio(path, min_duration=0.1)
    assert len(load_audio(path, min_duration=0.05)) == 800


def test_non_finite_samples_are_refused(tmp_path):
    path = tmp_path / "nan.wav"
    wav = tone(0.2, 16000)
    wav[100] = float("nan")
    save_audio(path, wav, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(path)


def test_training_skips_unusable_clips_and_counts_them(tmp_path, caplog):
    good = {}
    for i, seconds in enumerate([0.5, 0.75, 1.0]):
        good[f"g{i}"] = tmp_path / f"g{i}.wav"
        save_audio(good[f"g{i}"], tone(seconds, 16000), 16000)
    bad = {
        "corrupted": corrupt(tmp_path / "c.wav", "garbage"),
        "empty": corrupt(tmp_path / "e.wav", "no_samples"),
        "missing": tmp_path / "m.wav",
    }
    rows = {k: {"wav": str(v)} for k, v in {**good, **bad}.items()}
    order = ["g0", "corrupted", "g1", "empty", "missing", "g2"]
    data = DynamicItemDataset({k: rows[k] for k in order})
    data.add_dynamic_item(audio_pipeline())
    data.set_output_keys(["id", "sig"])
    loader = make_dataloader(data, batch_size=2, collate_fn=collate_audio, num_workers=0)
    with caplog.at_level(logging.WARNING):
        batches = list(loader)
    assert [b.batchsize for b in batches] == [1, 1, 1]
    assert [b.id for b in batches] == [["g0"], ["g1"], ["g2"]]
    skipped = [s for b in batches for s in b.skipped]
    assert [s.id for s in skipped] == ["corrupted", "empty", "missing"]
    assert [s.reason.split(" (")[0] for s in skipped] == [
        "unreadable audio",
        "empty audio",
        "file not found",
    ]
    for name, path in bad.items():
        assert f"{name}: " in caplog.text and str(path) in caplog.text
    tally = SkippedClips()
    for batch in batches:
        tally.add(batch)
    assert tally.summary() == (
        "3 clips skipped (1 x empty audio, 1 x file not found, 1 x unreadable audio)"
    )
    assert batches[2].sig.data.shape == (1, 16000)


def test_a_batch_with_no_usable_clip_is_empty_not_an_error():
    skipped = [UnreadableAudio("a", "a.wav", "file not found")]
    batch = collate_audio([{"id": "a", "sig": skipped[0]}])
    assert isinstance(batch, EmptyBatch)
    assert batch.batchsize == 0 and len(batch) == 0 and batch.skipped == skipped
    assert batch.to("cpu") is batch


def test_worker_processes_survive_unusable_clips(tmp_path):
    save_audio(tmp_path / "ok.wav", tone(0.3, 16000), 16000)
    corrupt(tmp_path / "bad.wav", "garbage")
    data = DynamicItemDataset(
        {"ok": {"wav": str(tmp_path / "ok.wav")}, "bad": {"wav": str(tmp_path / "bad.wav")}}
    )
    data.add_dynamic_item(audio_pipeline())
    data.set_output_keys(["id", "sig"])
    loader = make_dataloader(data, batch_size=1, collate_fn=collate_audio, num_workers=2)
    batches = list(loader)
    assert [b.batchsize for b in batches] == [1, 0]
    assert batches[1].skipped[0].id == "bad"
    assert np.isclose(float(batches[0].sig.lengths[0]), 1.0)
