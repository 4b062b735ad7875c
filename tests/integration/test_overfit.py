"""A tiny MoWE audio LLM learns a handful of examples end to end."""

from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mowe.model import Decoding

HPARAMS = Path(__file__).parents[2] / "hparams" / "tiny_mowe.yaml"
ANSWERS = ["one two three", "a bird chirps", "der fuchs", "happy"]
INSTRUCTIONS = [
    "transcribe the audio .",
    "describe the sound .",
    "translate the speech into german .",
    "what emotion does the speaker express ?",
]


def test_tiny_mowe_audio_llm_overfits(whisper_dir, llama_dir):
    torch.manual_seed(0)
    with open(HPARAMS) as f:
        hparams = load_hyperpyyaml(f, {"whisper_source": whisper_dir, "llm_source": llama_dir})
    model = hparams["model"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)

    gen = torch.Generator().manual_seed(0)
    samples = torch.tensor([16000, 12000, 9000, 14000])
    wavs = torch.randn(4, 16000, generator=gen) * 0.1 * (torch.arange(16000) < samples[:, None])
    wav_lens, tasks = samples / 16000, torch.arange(4)
    prefix, suffix = model.llm.tokenize_prompts(INSTRUCTIONS)
    answer = model.llm.tokenize_answers(ANSWERS)

    model.train()
    first = model(wavs, wav_lens, prefix, suffix, answer, tasks).answer_loss
    for _ in range(150):
        optimizer.zero_grad()
        out = model(wavs, wav_lens, prefix, suffix, answer, tasks)
        out.loss.backward()
        optimizer.step()
    assert float(first) > 4.0
    assert float(out.answer_loss) < 0.3, (
        f"loss went from {float(first):.2f} to {float(out.answer_loss):.2f}"
    )

    model.eval()
    answers = model.answer(wavs, wav_lens, INSTRUCTIONS, tasks, Decoding(max_new_tokens=12))
    assert answers == ANSWERS
