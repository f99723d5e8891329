"""Weights into `MusicGenLM`: from transformers' MusicGen and from audiocraft checkpoints.

Each format has an explicit name table (our parameter -> the source tensors, concatenated
along rows where we fuse q/k/v or the codebook heads); every tensor is shape-checked.
"""

from __future__ import annotations

import math
import re
import typing
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch

from b2m.core.errors import B2MError
from b2m.reconstruction.musicgen.lm import LMConfig, MusicGenLM
from b2m.targets.pretrained import check_weights, from_pretrained

# A source entry: (source name, row slice or None for all rows).
Source = tuple[str, slice | None]


def _load_table(lm: MusicGenLM, table: dict[str, list[Source]], tensors: dict[str, torch.Tensor],
                origin: str) -> None:
    """Copy `tensors` into `lm` following `table`; every parameter must be covered and shapes must match."""
    ours = lm.state_dict()
    if set(table) != set(ours):
        raise AssertionError(f"name table mismatch: {sorted(set(table) ^ set(ours))}")
    check_weights(origin, "the MusicGen LM", {src for sources in table.values() for src, _ in sources} - tensors.keys())
    with torch.no_grad():
        for name, sources in table.items():
            parts = [tensors[src] if rows is None else tensors[src][rows] for src, rows in sources]
            value = torch.cat(parts) if len(parts) > 1 else parts[0]
            if value.shape != ours[name].shape:
                raise B2MError(f"{origin}: {sources[0][0]!r} has shape {tuple(value.shape)}, "
                               f"expected {tuple(ours[name].shape)} for {name}")
            ours[name].copy_(value)


# ----------------------------------------------------------------- transformers format
def transformers_table(cfg: LMConfig) -> dict[str, list[Source]]:
    """Our names -> `MusicgenForConditionalGeneration.state_dict()` names."""
    d = "decoder.model.decoder."
    table: dict[str, list[Source]] = {f"emb.{k}.weight": [(f"{d}embed_tokens.{k}.weight", None)]
                                      for k in range(cfg.n_codebooks)}
    for i in range(cfg.n_layers):
        src, dst = f"{d}layers.{i}.", f"blocks.{i}."
        for ours, theirs in [("ln_self", "self_attn_layer_norm"), ("ln_cross", "encoder_attn_layer_norm"),
                             ("ln_ffn", "final_layer_norm")]:
            table[f"{dst}{ours}.weight"] = [(f"{src}{theirs}.weight", None)]
            table[f"{dst}{ours}.bias"] = [(f"{src}{theirs}.bias", None)]
        table[f"{dst}self_attn.qkv.weight"] = [(f"{src}self_attn.{p}_proj.weight", None) for p in "qkv"]
        table[f"{dst}self_attn.out.weight"] = [(f"{src}self_attn.out_proj.weight", None)]
        table[f"{dst}cross_attn.q.weight"] = [(f"{src}encoder_attn.q_proj.weight", None)]
        table[f"{dst}cross_attn.kv.weight"] = [(f"{src}encoder_attn.{p}_proj.weight", None) for p in "kv"]
        table[f"{dst}cross_attn.out.weight"] = [(f"{src}encoder_attn.out_proj.weight", None)]
        table[f"{dst}fc1.weight"] = [(f"{src}fc1.weight", None)]
        table[f"{dst}fc2.weight"] = [(f"{src}fc2.weight", None)]
    table["ln_out.weight"] = [(f"{d}layer_norm.weight", None)]
    table["ln_out.bias"] = [(f"{d}layer_norm.bias", None)]
    table["heads.weight"] = [(f"decoder.lm_heads.{k}.weight", None) for k in range(cfg.n_codebooks)]
    if cfg.cond_proj:
        table["cond_proj.weight"] = [("enc_to_dec_proj.weight", None)]
        table["cond_proj.bias"] = [("enc_to_dec_proj.bias", None)]
    return table


def lm_config_from_transformers(config: Any, origin: str) -> LMConfig:
    """LMConfig from a transformers `MusicgenConfig`; refuses variants the engine does not implement."""
    dec = config.decoder
    if dec.audio_channels != 1:
        raise B2MError(f"{origin}: stereo MusicGen (audio_channels={dec.audio_channels}) is not supported")
    if dec.activation_function != "gelu" or dec.scale_embedding:
        raise B2MError(f"{origin}: decoder activation {dec.activation_function!r} / scale_embedding "
                       f"{dec.scale_embedding} differ from MusicGen's (gelu, False)")
    text_width = config.text_encoder.hidden_size
    return LMConfig(dim=dec.hidden_size, n_layers=dec.num_hidden_layers, n_heads=dec.num_attention_heads,
                    ffn_dim=dec.ffn_dim, n_codebooks=dec.num_codebooks, card=dec.vocab_size,
                    cond_dim=text_width,
                    cond_proj=text_width != dec.hidden_size and dec.cross_attention_hidden_size is None,
                    max_positions=dec.max_position_embeddings)


def lm_from_transformers(model: Any, origin: str = "transformers model") -> MusicGenLM:
    """A `MusicGenLM` (fp32) with the weights of a `MusicgenForConditionalGeneration`."""
    cfg = lm_config_from_transformers(model.config, origin)
    lm = MusicGenLM(cfg)
    _load_table(lm, transformers_table(cfg), model.state_dict(), origin)
    return lm.eval()


def load_transformers(path: str | Path) -> Any:
    """`MusicgenForConditionalGeneration` from a local folder (no download), in eval mode, through the
    shared loader: a folder it cannot load, or whose weights miss tensors, is a B2MError naming it."""
    from transformers import MusicgenForConditionalGeneration

    return from_pretrained(MusicgenForConditionalGeneration, Path(path))


# ----------------------------------------------------------------- audiocraft format
def audiocraft_table(cfg: LMConfig) -> dict[str, list[Source]]:
    """Our names -> audiocraft `LMModel.state_dict()` names (fused in_proj as in audiocraft)."""
    table: dict[str, list[Source]] = {f"emb.{k}.weight": [(f"emb.{k}.weight", None)] for k in range(cfg.n_codebooks)}
    d = cfg.dim
    for i in range(cfg.n_layers):
        src, dst = f"transformer.layers.{i}.", f"blocks.{i}."
        for ours, theirs in [("ln_self", "norm1"), ("ln_cross", "norm_cross"), ("ln_ffn", "norm2")]:
            table[f"{dst}{ours}.weight"] = [(f"{src}{theirs}.weight", None)]
            table[f"{dst}{ours}.bias"] = [(f"{src}{theirs}.bias", None)]
        table[f"{dst}self_attn.qkv.weight"] = [(f"{src}self_attn.in_proj_weight", None)]
        table[f"{dst}self_attn.out.weight"] = [(f"{src}self_attn.out_proj.weight", None)]
        table[f"{dst}cross_attn.q.weight"] = [(f"{src}cross_attention.in_proj_weight", slice(0, d))]
        table[f"{dst}cross_attn.kv.weight"] = [(f"{src}cross_attention.in_proj_weight", slice(d, 3 * d))]
        table[f"{dst}cross_attn.out.weight"] = [(f"{src}cross_attention.out_proj.weight", None)]
        table[f"{dst}fc1.weight"] = [(f"{src}linear1.weight", None)]
        table[f"{dst}fc2.weight"] = [(f"{src}linear2.weight", None)]
    table["ln_out.weight"] = [("out_norm.weight", None)]
    table["ln_out.bias"] = [("out_norm.bias", None)]
    table["heads.weight"] = [(f"linears.{k}.weight", None) for k in range(cfg.n_codebooks)]
    proj = "condition_provider.conditioners.description.output_proj"
    table["cond_proj.weight"] = [(f"{proj}.weight", None)]
    table["cond_proj.bias"] = [(f"{proj}.bias", None)]
    return table


def _omegaconf_safe_globals() -> list[Any]:
    """The classes a pickled OmegaConf config needs; nothing else is allowed to unpickle."""
    import omegaconf
    from omegaconf import base, nodes

    return [omegaconf.DictConfig, omegaconf.ListConfig, base.ContainerMetadata, base.Metadata,
            nodes.AnyNode, nodes.StringNode, nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode,
            typing.Any, dict, list, defaultdict, int, float, str, bool, type(None)]


def load_audiocraft_package(path: str | Path) -> dict[str, Any]:
    """Load an audiocraft `state_dict.bin` / `compression_state_dict.bin` with weights_only=True.

    Returns {'best_state': tensors, 'xp.cfg': plain dict}. Only tensors, containers and the
    OmegaConf classes of an allow-list are unpickled.
    """
    from omegaconf import DictConfig, OmegaConf

    path = Path(path)
    if not path.is_file():
        raise B2MError(f"generator.weights: {path} does not exist")
    try:
        with torch.serialization.safe_globals(_omegaconf_safe_globals()):
            pkg = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a file that needs more than the allow-list is not loaded at all
        message = " ".join(str(err).split())[:300]  # some errors (a truncated pickle) have no message
        raise B2MError(f"{path}: not a loadable audiocraft checkpoint ({type(err).__name__}: {message})") from None
    if not isinstance(pkg, dict) or not isinstance(pkg.get("best_state"), dict) or "xp.cfg" not in pkg:
        raise B2MError(f"{path}: expected an audiocraft package with 'best_state' (tensors) and 'xp.cfg'")
    cfg = pkg["xp.cfg"]
    try:
        if isinstance(cfg, str):
            cfg = OmegaConf.create(cfg)
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # OmegaConf's YAML and interpolation errors
        raise B2MError(f"{path}: unreadable xp.cfg ({' '.join(str(err).split())[:300]})") from None
    if not isinstance(cfg, dict):
        raise B2MError(f"{path}: xp.cfg is a {type(cfg).__name__}, not a config mapping")
    return {"best_state": pkg["best_state"], "xp.cfg": cfg}


def lm_config_from_audiocraft(state: dict[str, torch.Tensor], xp_cfg: dict, origin: str) -> LMConfig:
    """LMConfig from an audiocraft LM state dict (sizes) and its config (heads, variant checks)."""
    lm_tensors = ("emb.0.weight", "transformer.layers.0.linear1.weight")
    if any(name not in state for name in lm_tensors):
        raise B2MError(f"{origin}: not an audiocraft MusicGen LM (no {' or '.join(lm_tensors)}; "
                       f"state_dict.bin holds the LM, compression_state_dict.bin the codec)")
    lm_cfg = xp_cfg.get("transformer_lm", {})
    checks: dict[str, Callable[[Any], bool]] = {
        "activation": lambda v: v == "gelu", "norm_first": lambda v: v is True,
        "bias_ff": lambda v: not v, "bias_attn": lambda v: not v, "positional_embedding": lambda v: v == "sin",
        "cross_attention": lambda v: v is True,
    }
    for key, ok in checks.items():
        if key in lm_cfg and not ok(lm_cfg[key]):
            raise B2MError(f"{origin}: transformer_lm.{key}={lm_cfg[key]!r} is not supported")
    delays = xp_cfg.get("codebooks_pattern", {}).get("delay", {}).get("delays")
    n_codebooks = sum(1 for name in state if name.startswith("emb."))
    if delays is not None and list(delays) != list(range(n_codebooks)):
        raise B2MError(f"{origin}: codebooks_pattern delays {list(delays)} are not [0..{n_codebooks - 1}]")
    if "num_heads" not in lm_cfg:
        raise B2MError(f"{origin}: xp.cfg has no transformer_lm.num_heads")
    emb = state["emb.0.weight"]
    proj = state.get("condition_provider.conditioners.description.output_proj.weight")
    if proj is None:
        raise B2MError(f"{origin}: no 'description' text conditioner output_proj (only text-conditioned "
                       "MusicGen is supported)")
    return LMConfig(dim=emb.shape[1], n_layers=sum(1 for n in state if n.endswith(".linear1.weight")),
                    n_heads=int(lm_cfg["num_heads"]), ffn_dim=state["transformer.layers.0.linear1.weight"].shape[0],
                    n_codebooks=n_codebooks, card=emb.shape[0] - 1, cond_dim=proj.shape[1], cond_proj=True)


def lm_from_audiocraft(path: str | Path) -> MusicGenLM:
    """A `MusicGenLM` (fp32) from an audiocraft `state_dict.bin`."""
    pkg = load_audiocraft_package(path)
    cfg = lm_config_from_audiocraft(pkg["best_state"], pkg["xp.cfg"], str(path))
    lm = MusicGenLM(cfg)
    _load_table(lm, audiocraft_table(cfg), pkg["best_state"], str(path))
    return lm.eval()


# ----------------------------------------------------------------- caption conditioning
@torch.no_grad()
def caption_conditioning(model: Any, tokenizer: Any, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions through a transformers MusicGen's own text encoder (T5): the sanity path.

    Returns cond [B, L, D_text] (last_hidden_state, before enc_to_dec_proj) and its
    attention mask [B, L], to pass to `MusicGenLM.generate(cond, ..., cond_mask=mask)`.
    `tokenizer` is the folder's tokenizer (`AutoTokenizer.from_pretrained(path)`).
    """
    inputs = tokenizer(captions, padding=True, return_tensors="pt")
    device = next(model.text_encoder.parameters()).device
    ids, mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
    cond = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return cond, mask


# ----------------------------------------------------------------- audiocraft EnCodec
# audiocraft's SEANet/RVQ names -> transformers' EncodecModel names. The layer indices are the
# same in both (transformers mirrors SEANet's nn.Sequential); weight-norm factors get their
# parametrization names.
_CODEC_RULES = [
    (re.compile(r"^(encoder|decoder)\.model\.(\d+)\.(?:conv\.conv|convtr\.convtr)\.(.+)$"), r"\1.layers.\2.conv.\3"),
    (re.compile(r"^(encoder|decoder)\.model\.(\d+)\.(block\.\d+|shortcut)\.conv\.conv\.(.+)$"),
     r"\1.layers.\2.\3.conv.\4"),
    (re.compile(r"^(encoder|decoder)\.model\.(\d+)\.lstm\.(.+)$"), r"\1.layers.\2.lstm.\3"),
    (re.compile(r"^quantizer\.vq\.layers\.(\d+)\._codebook\.(.+)$"), r"quantizer.layers.\1.codebook.\2"),
]
_CODEBOOK_TRAINING_STATE = ("codebook.inited", "codebook.cluster_size", "codebook.embed_avg")  # unused to decode
_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


def codec_name_from_audiocraft(name: str) -> str | None:
    """The transformers EncodecModel name of an audiocraft compression-model tensor (None: not mapped)."""
    for pattern, target in _CODEC_RULES:
        if pattern.match(name):
            mapped = pattern.sub(target, name)
            stem, _, last = mapped.rpartition(".")
            return f"{stem}.{_WEIGHT_NORM[last]}" if last in _WEIGHT_NORM else mapped
    return None


def codec_config_from_audiocraft(xp_cfg: dict, origin: str) -> Any:
    """A transformers `EncodecConfig` equal to an audiocraft EnCodec (SEANet + RVQ) config."""
    from transformers import EncodecConfig

    try:
        seanet, rvq, encodec = xp_cfg["seanet"], xp_cfg["rvq"], xp_cfg["encodec"]
        decoder = {**seanet, **(seanet.get("decoder") or {})}
        unsupported = {"activation": decoder.get("activation", "ELU") != "ELU",
                       "activation_params": (decoder.get("activation_params") or {}).get("alpha", 1.0) != 1.0,
                       "norm": decoder.get("norm") != "weight_norm",
                       "disable_norm_outer_blocks": decoder.get("disable_norm_outer_blocks", 0) != 0,
                       "final_activation": decoder.get("final_activation") is not None,
                       "quantizer": encodec.get("quantizer", "rvq") != "rvq"}
        bad = [key for key, is_bad in unsupported.items() if is_bad]
        if bad:
            raise B2MError(f"{origin}: EnCodec variant not supported (seanet/encodec keys {bad})")
        ratios = list(decoder["ratios"])
        sample_rate = int(encodec["sample_rate"])
        frame_rate = math.ceil(sample_rate / math.prod(ratios))
        n_q, bins = int(rvq["n_q"]), int(rvq["bins"])
        return EncodecConfig(
            sampling_rate=sample_rate, audio_channels=int(encodec["channels"]),
            normalize=bool(encodec["renormalize"]),
            hidden_size=int(decoder["dimension"]), num_filters=int(decoder["n_filters"]),
            num_residual_layers=int(decoder["n_residual_layers"]), upsampling_ratios=ratios,
            norm_type="weight_norm", kernel_size=int(decoder["kernel_size"]),
            last_kernel_size=int(decoder["last_kernel_size"]),
            residual_kernel_size=int(decoder["residual_kernel_size"]),
            dilation_growth_rate=int(decoder["dilation_base"]), use_causal_conv=bool(decoder["causal"]),
            pad_mode=str(decoder["pad_mode"]), compress=int(decoder["compress"]), num_lstm_layers=int(decoder["lstm"]),
            trim_right_ratio=float(decoder.get("trim_right_ratio", 1.0)), codebook_size=bins,
            use_conv_shortcut=not bool(decoder["true_skip"]),
            # transformers derives the number of quantizers from the bandwidth (n_q codes of log2(bins) bits)
            target_bandwidths=[n_q * math.log2(bins) * frame_rate / 1000])
    except KeyError as err:
        raise B2MError(f"{origin}: xp.cfg lacks EnCodec key {err}") from None
    except (AttributeError, TypeError, ValueError) as err:  # a section that is no mapping, a value of another type
        raise B2MError(f"{origin}: xp.cfg holds an unusable EnCodec config ({err})") from None


def codec_from_audiocraft(path: str | Path) -> Any:
    """transformers `EncodecModel` with the weights of an audiocraft `compression_state_dict.bin`."""
    from transformers import EncodecModel

    pkg = load_audiocraft_package(path)
    config = codec_config_from_audiocraft(pkg["xp.cfg"], str(path))
    codec = EncodecModel(config).eval()
    ours = codec.state_dict()
    filled, unmapped = set(), []
    with torch.no_grad():
        for name, value in pkg["best_state"].items():
            target = codec_name_from_audiocraft(name)
            if target is None:
                unmapped.append(name)
                continue
            if target not in ours and target.endswith(_CODEBOOK_TRAINING_STATE):
                continue
            if target not in ours or ours[target].shape != value.shape:
                got = "missing" if target not in ours else f"shape {tuple(ours[target].shape)}"
                raise B2MError(f"{path}: {name!r} {tuple(value.shape)} does not fit {target!r} ({got})")
            ours[target].copy_(value)
            filled.add(target)
    # Buffers that transformers recomputes itself (conv geometry) need not come from the file.
    missing = [n for n in ours if n not in filled
               and not n.endswith(("stride", "kernel_size", "padding_total") + _CODEBOOK_TRAINING_STATE)]
    check_weights(path, "EncodecModel", missing, unmapped)
    return codec
