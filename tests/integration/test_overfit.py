"""A tiny MoWE audio LLM learns a handful of examples end to end."""

from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml

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
    mowe, projector, llm = hparams["mowe_encoder"], hparams["projector"], hparams["llm"]
    modules = torch.nn.ModuleList([mowe, projector, llm])
    trainable = [p for p in modules.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)

    gen = torch.Generator().manual_seed(0)
    samples = torch.tensor([16000, 12000, 9000, 14000])
    wavs = torch.randn(4, 16000, generator=gen) * 0.1 * (torch.arange(16000) < samples[:, None])
    wav_lens, tasks = samples / 16000, torch.arange(4)
    prefix, suffix = llm.tokenize_prompts(INSTRUCTIONS)
    answer = llm.tokenize_answers(ANSWERS)

    def step():
        out = mowe(wavs, wav_lens, tasks)
        audio, audio_lens = projector(out.feats, out.lens)
        ce = llm(audio, audio_lens, prefix, suffix, answer).loss
        return ce, ce + hparams["aux_weight"] * out.aux_loss

    modules.train()
    first, _ = step()
    for _ in range(150):
        optimizer.zero_grad()
        ce, loss = step()
        loss.backward()
        optimizer.step()
    assert float(first) > 4.0
    assert float(ce) < 0.3, f"loss went from {float(first):.2f} to {float(ce):.2f}"

    modules.eval()
    with torch.no_grad():
        out = mowe(wavs, wav_lens, tasks)
        audio, audio_lens = projector(out.feats, out.lens)
        hypotheses = llm.generate(audio, audio_lens, prefix, suffix, max_new_tokens=12)
    assert llm.decode(hypotheses) == ANSWERS
