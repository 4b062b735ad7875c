"""Tiny randomly initialised checkpoints, saved like real ones.

With no model hub at hand (tests, CI, a first run on a laptop), these build
a byte-level BPE tokenizer with a chat template, a small causal LM and a small
Whisper, and ``save_pretrained`` them to a directory, so that they are loaded
back through exactly the ``from_pretrained`` path real checkpoints take.
"""

from typing import Iterable, Optional

import torch

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = [
    "<unk>",
    "<pad>",
    "<s>",
    "</s>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
]
DEFAULT_CORPUS = (
    "transcribe the audio . translate the speech into german . describe the sound .",
    "what emotion does the speaker express ? neutral happy angry sad",
    "the quick brown fox jumps over the lazy dog . der schnelle braune fuchs springt .",
    "a bird chirps while a dog barks in the distance and a car passes by",
    "one two three four five six seven eight nine ten",
)


def make_tiny_tokenizer(
    save_dir: str, corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 300
):
    """Trains a byte-level BPE tokenizer with a chat template and saves it.

    Any text round-trips through it (bytes are in the base alphabet).

    Arguments
    ---------
    save_dir : str
        Output directory.
    corpus : iterable of str
        Training text for the merges.
    vocab_size : int
        Vocabulary size.

    Returns
    -------
    transformers.PreTrainedTokenizerFast

    Example
    -------
    >>> import tempfile
    >>> tok = make_tiny_tokenizer(tempfile.mkdtemp())
    >>> tok.decode(tok("Grüße, 東京!")["input_ids"])
    'Grüße, 東京!'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(save_dir)
    return tokenizer


def make_tiny_llm(
    save_dir: str,
    family: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    corpus: Iterable[str] = DEFAULT_CORPUS,
    vocab_size: int = 300,
    init_std: float = 0.2,
    seed: int = 0,
) -> str:
    """Saves a tiny random causal LM (``llama`` or ``qwen2``) and its tokenizer.

    ``init_std`` is ten times transformers' default: with the default, a
    frozen random output layer cannot express a peaked distribution, so
    LoRA and the projector could not teach it any answer.

    Example
    -------
    >>> import tempfile
    >>> from transformers import AutoModelForCausalLM
    >>> path = make_tiny_llm(tempfile.mkdtemp(), family="qwen2")
    >>> AutoModelForCausalLM.from_pretrained(path).config.model_type
    'qwen2'
    """
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    families = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    if family not in families:
        raise ValueError(f"family must be one of {sorted(families)}, got '{family}'")
    tokenizer = make_tiny_tokenizer(save_dir, corpus, vocab_size)
    config_class, model_class = families[family]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=init_std,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model_class(config).save_pretrained(save_dir)
    return str(save_dir)


def make_tiny_whisper(
    save_dir: str,
    d_model: int = 64,
    num_layers: int = 2,
    max_seconds: int = 30,
    seed: int = 0,
    heads: int = 4,
    ffn_dim: Optional[int] = None,
    n_mels: int = 80,
) -> str:
    """Saves a tiny random Whisper (encoder and decoder) with its feature extractor.

    Arguments
    ---------
    save_dir : str
        Output directory.
    d_model : int
        Width.
    num_layers : int
        Encoder layers (the decoder has one).
    max_seconds : int
        Encoder window in seconds (30 as in Whisper); shorter windows make long-input
        tests cheap.
    seed : int
        Initialisation seed.
    heads, ffn_dim, n_mels : int
        Attention heads, feed-forward width (default ``2 * d_model``) and mel
        bands; with :data:`WHISPER_SHAPES`, a random model of a real one's shape.
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    positions = max_seconds * 50
    config = WhisperConfig(
        vocab_size=64,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=num_layers,
        decoder_layers=1,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn_dim or 2 * d_model,
        decoder_ffn_dim=ffn_dim or 2 * d_model,
        max_source_positions=positions,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        WhisperModel(config).save_pretrained(save_dir)
    WhisperFeatureExtractor(feature_size=n_mels, chunk_length=max_seconds).save_pretrained(save_dir)
    return str(save_dir)


#: Keyword arguments of :func:`make_tiny_whisper` for the shapes of real Whispers.
WHISPER_SHAPES = {
    "tiny": {"d_model": 384, "num_layers": 4, "heads": 6, "ffn_dim": 1536},
    "small": {"d_model": 768, "num_layers": 12, "heads": 12, "ffn_dim": 3072},
    "large-v3": {"d_model": 1280, "num_layers": 32, "heads": 20, "ffn_dim": 5120, "n_mels": 128},
}

#: Keyword arguments of :func:`make_tiny_ssl` for HuBERT-base's shape.
HUBERT_BASE_SHAPE = {"hidden_size": 768, "num_layers": 12, "heads": 12, "ffn_dim": 3072,
                     "conv_channels": 512}  # fmt: skip


def ssl_config(
    family: str, hidden_size: int, num_layers: int, heads: int, ffn_dim: int, conv_channels: int
):
    """The transformers config of a wav2vec 2.0-family model (``Hubert``,
    ``WavLM``, ``Wav2Vec2``) with the real models' 7-layer convolutional front
    end (320x downsampling, 50 frames/s), layer-normalised.

    Example
    -------
    >>> ssl_config("Hubert", **HUBERT_BASE_SHAPE).conv_dim[0]
    512
    """
    import transformers

    return getattr(transformers, f"{family}Config")(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=ffn_dim,
        conv_dim=(conv_channels,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=8 if hidden_size < 256 else 128,
        num_conv_pos_embedding_groups=2 if hidden_size < 256 else 16,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )


def make_tiny_ssl(
    save_dir: str,
    family: str = "Hubert",
    hidden_size: int = 32,
    num_layers: int = 2,
    heads: int = 2,
    ffn_dim: int = 64,
    conv_channels: int = 16,
    seed: int = 0,
) -> str:
    """Saves a random wav2vec 2.0-family model (``Hubert``, ``WavLM``,
    ``Wav2Vec2``) with its feature extractor: the real models' 7-layer
    convolutional front end (320x downsampling, 50 frames/s), layer-normalised.

    Arguments
    ---------
    save_dir : str
        Output directory.
    family : str
        The transformers model family.
    hidden_size, num_layers, heads, ffn_dim, conv_channels : int
        The transformer's and front end's sizes (:data:`HUBERT_BASE_SHAPE`).
    seed : int
        Initialisation seed.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mowe.lobes import HuBERTEncoder
    >>> encoder = HuBERTEncoder(make_tiny_ssl(tempfile.mkdtemp()))
    >>> encoder(torch.randn(1, 16000))[0].shape
    torch.Size([1, 49, 32])
    """
    import transformers

    config = ssl_config(family, hidden_size, num_layers, heads, ffn_dim, conv_channels)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        getattr(transformers, f"{family}Model")(config).save_pretrained(save_dir)
    transformers.Wav2Vec2FeatureExtractor(
        do_normalize=True, return_attention_mask=True
    ).save_pretrained(save_dir)
    return str(save_dir)


#: Settings of the tiny BEATs made by :func:`make_tiny_beats`.
TINY_BEATS_CONFIG = {
    "encoder_layers": 1,
    "encoder_embed_dim": 32,
    "encoder_ffn_embed_dim": 64,
    "encoder_attention_heads": 2,
    "embed_dim": 16,
    "conv_pos": 9,
    "conv_pos_groups": 1,
    "num_buckets": 16,
    "max_distance": 32,
}


def make_tiny_beats(path, seed: int = 0) -> str:
    """Saves a tiny random BEATs as a checkpoint file, shaped like released ones.

    Example
    -------
    >>> import tempfile, os
    >>> from speechbrain_mowe.lobes import BEATsEncoder
    >>> path = make_tiny_beats(os.path.join(tempfile.mkdtemp(), "beats.pt"))
    >>> BEATsEncoder(path).output_dim
    32
    """
    import speechbrain.lobes.models.beats as beats

    # SpeechBrain's BEATs builds its default configuration; use ours while it does.
    default_config = beats.BEATsConfig
    beats.BEATsConfig = lambda given=None: default_config(given or TINY_BEATS_CONFIG)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            weights = beats.BEATs(freeze=False).state_dict()
    finally:
        beats.BEATsConfig = default_config
    torch.save({"cfg": TINY_BEATS_CONFIG, "model": weights}, path)
    return str(path)


def make_tiny_gguf(path, seed: int = 0) -> str:
    """Writes a tiny random Llama with its BPE tokenizer and chat template as
    a GGUF file, as llama.cpp lays it out (its q/k rows permuted for its
    rotary embedding), to test GGUF conversion without a real checkpoint.

    Returns the file's path; the model it was written from is ``make_tiny_llm``'s
    with the same ``seed``, saved next to it in ``<path>.source/``.

    Example
    -------
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = make_tiny_gguf(Path(tempfile.mkdtemp()) / "tiny.gguf")
    >>> open(path, "rb").read(4)
    b'GGUF'
    """
    import json
    from pathlib import Path

    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    source = make_tiny_llm(f"{path}.source", family="llama", seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    config = model.config
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens = [token for token, _ in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_token_merges([" ".join(merge) for merge in spec["model"]["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)

    def rotary_rows(weight, heads):  # llama.cpp's layout of q and k
        rows = weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        return rows.swapaxes(1, 2).reshape(weight.shape)

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    parts = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for layer in range(config.num_hidden_layers):
        for ours, theirs in parts.items():
            names[f"model.layers.{layer}.{ours}.weight"] = f"blk.{layer}.{theirs}.weight"
    for name, value in model.state_dict().items():
        weight = value.float().numpy()
        if name.endswith("q_proj.weight"):
            weight = rotary_rows(weight, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            weight = rotary_rows(weight, config.num_key_value_heads)
        writer.add_tensor(names[name], weight.copy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)
