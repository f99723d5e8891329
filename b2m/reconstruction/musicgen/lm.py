"""MusicGen language model with a preallocated KV cache, and its sampling loop.

The model predicts 4 EnCodec codebooks (2048 entries each, 50 Hz frames) with the delay
pattern: codebook k lags k steps behind codebook 0, so at step t the model sees one token
per codebook and predicts the next one. Each layer: self-attention over the past tokens,
cross-attention to the conditioning `[B, L, D]`, feed-forward (pre-norm, GELU).

Speed comes from what the loop does not do: the KV cache is allocated once for the whole
generation, the cross-attention keys/values are computed once, q/k/v and the four
codebook heads are single matrix products, and in reduced precision the weights are cast
once (not per step as `torch.autocast` would do) while the residual stream, layer norms,
logits and sampling stay in fp32. On CUDA the whole step (model, guidance, sampling) is
captured once in a CUDA graph and replayed.

Classifier-free guidance runs the conditional rows and the null rows in one batch. The
null conditioning is what transformers uses for unconditional inputs (zero encoder states
with a zero attention mask): its cross-attention output is exactly zero, so the null rows
skip cross-attention.

Sampling draws Gumbel noise from a counter-based hash of (item seed, step, codebook,
token id): an item's draws do not depend on its batch, and the step needs no host-side
random generator (so it can be graph-captured).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class LMConfig:
    dim: int = 1024  # decoder width
    n_layers: int = 24
    n_heads: int = 16
    ffn_dim: int = 4096
    n_codebooks: int = 4
    card: int = 2048  # entries per codebook; token id `card` is the pad / start token
    cond_dim: int = 768  # conditioning width (the text encoder's last_hidden_state)
    cond_proj: bool = True  # project the conditioning to `dim` (transformers' enc_to_dec_proj)
    max_positions: int = 2048  # length of the sinusoidal position table, in steps

    @property
    def pad_token(self) -> int:
        return self.card


@dataclass
class SamplingConfig:
    """How a token is drawn from the guided logits. `greedy` ignores the other fields."""

    greedy: bool = False
    top_k: int = 250  # 0 disables
    top_p: float = 0.0  # 0 disables; else keep the smallest set of tokens with mass >= top_p
    temperature: float = 1.0


ATTENTION_KERNELS = ("sdpa", "matmul", "fused")


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
           kernel: str) -> torch.Tensor:
    """One query per row: q [R, H, 1, d], keys/values [R, H, T, d], mask [R|1, 1, 1, T] (True = attend).

    - `sdpa`: torch's fused kernel (flash / memory-efficient on CUDA).
    - `matmul`: scores as a broadcast product summed over d (with one query, a [1, d] x [d, T]
      matrix product per head ran 2x slower in bf16), an fp32 softmax, then one batched product
      with the values. At decode shapes on CPU it beat CPU SDPA in bf16 (batch 32: 229 vs 286
      ms/step) but not always in fp32.
    - `fused`: the same attention in fp32 arithmetic, compiled by torch.compile into loops that
      read the keys and values once and materialise no [R, H, T, d] product. On a 2-core CPU
      in bf16 it is 2-4x faster than `matmul` (batch 32, 750 cached steps, 24 layers: 232 vs
      1007 ms), but each call costs ~0.1 ms more, so short caches may not gain. Compiled once per
      process (seconds, cached on disk by inductor); it needs a C++ compiler, and the probe
      drops it where compiling fails.

    Which is fastest depends on the device, dtype and shape, so the precision probe
    (`b2m.reconstruction.musicgen.probe`) picks.
    """
    if kernel == "sdpa":
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    if kernel == "fused":
        return _compiled_attention()(q, keys, values, mask)
    scores = (q * keys).sum(-1).unsqueeze(2).float() * q.shape[-1] ** -0.5  # [R, H, 1, T]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1).to(values.dtype) @ values


def _attention_fp32(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                    mask: torch.Tensor | None) -> torch.Tensor:
    """`attend`'s arithmetic with element-wise products only, so that the compiler fuses each
    reduction with the loads it reads."""
    scores = (q.float() * keys.float()).sum(-1).unsqueeze(2) * q.shape[-1] ** -0.5  # [R, H, 1, T]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-1).transpose(-1, -2)  # [R, H, T, 1]
    return (weights * values.float()).sum(-2, keepdim=True).to(values.dtype)


def attention_kernels(device: torch.device) -> tuple[str, ...]:
    """The kernels the probe tries on `device`. `fused` only on CPU: on CUDA the step runs as a
    captured graph, and a compiled region inside that capture has never run here (no GPU)."""
    return tuple(k for k in ATTENTION_KERNELS if device.type == "cpu" or k != "fused")


@functools.cache
def _compiled_attention():
    """The `fused` kernel: compiled on first use, with symbolic sizes (the cache length grows every step).

    One graph is compiled per dtype, mask or none, and call site (self- and cross-attention
    views have other strides), plus one for a single cached step: more than dynamo's default
    recompile limit (8), past which it would silently run the formula uncompiled.
    """
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(_attention_fp32, dynamic=True)


def sinusoids(n_positions: int, dim: int) -> torch.Tensor:
    """[n_positions, dim] table: cos then sin halves, as MusicGen (transformers and audiocraft) use."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    phase = torch.arange(n_positions, dtype=torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)


class SelfAttention(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.kernel = "sdpa"  # see `attend`; MusicGenLM.set_attention sets every layer's
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor, t: torch.Tensor,
                kv_len: int | None, causal_mask: torch.Tensor | None) -> torch.Tensor:
        """x [R, D] at step t; cache_k/v [R, H, T, D/H] receive this step's keys/values at t.

        Attends to cache positions [0, kv_len) (eager), or to all of them under `causal_mask`
        [1, 1, 1, T] (graph capture, where shapes must not change between steps).
        """
        rows, dim = x.shape
        q, k, v = self.qkv(x).view(rows, 3, self.n_heads, dim // self.n_heads).unbind(1)
        cache_k.index_copy_(2, t.view(1), k.unsqueeze(2))
        cache_v.index_copy_(2, t.view(1), v.unsqueeze(2))
        keys, values = (cache_k, cache_v) if kv_len is None else (cache_k[:, :, :kv_len], cache_v[:, :, :kv_len])
        y = attend(q.unsqueeze(2), keys, values, causal_mask, self.kernel)
        return self.out(y.reshape(rows, dim))


class CrossAttention(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.kernel = "sdpa"
        self.q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.kv = nn.Linear(cfg.dim, 2 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory [B, L, D] -> keys, values [B, H, L, D/H], computed once per generation (contiguous:
        every step rereads them)."""
        b, length, dim = memory.shape
        k, v = self.kv(memory).view(b, length, 2, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        return k.contiguous(), v.contiguous()

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, D]; keys/values [B, H, L, D/H]; mask [B, 1, 1, L] (True = attend) or None."""
        rows, dim = x.shape
        q = self.q(x).view(rows, self.n_heads, 1, dim // self.n_heads)
        y = attend(q, keys, values, mask, self.kernel)
        return self.out(y.reshape(rows, dim))


class Block(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.ln_self = nn.LayerNorm(cfg.dim)
        self.self_attn = SelfAttention(cfg)
        self.ln_cross = nn.LayerNorm(cfg.dim)
        self.cross_attn = CrossAttention(cfg)
        self.ln_ffn = nn.LayerNorm(cfg.dim)
        self.fc1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, state: "DecodeState", layer: int, kv_len: int | None,
                causal_mask: torch.Tensor | None) -> torch.Tensor:
        """x [R, D] fp32 residual stream; rows [0, n_cond) are conditional, the rest null."""
        dt = state.self_k[layer].dtype  # the compute dtype (weights may be int8)
        x = x + self.self_attn(self.ln_self(x).to(dt), state.self_k[layer], state.self_v[layer], state.t,
                               kv_len, causal_mask)
        n = state.n_cond  # x is a fresh tensor here, so the in-place update touches no cache
        x[:n] += self.cross_attn(self.ln_cross(x[:n]).to(dt), state.cross_k[layer], state.cross_v[layer],
                                 state.cross_mask)
        return x + self.fc2(F.gelu(self.fc1(self.ln_ffn(x).to(dt))))


@dataclass
class DecodeState:
    """Everything one generation reads and writes; allocated once, updated in place.

    seq [B, K, S+1]: position 0 is the start token, position t+1 the token drawn at step t
    (pad where the delay pattern has no token). self_k/self_v: per layer [R, H, S, D/H] with
    R = 2B under guidance (conditional rows first), else B. cross_k/cross_v: per layer
    [B, H, L, D/H]. t: the current step, a 0-dim tensor so a captured graph can advance it.
    """

    seq: torch.Tensor
    valid: torch.Tensor  # [K, S+1] bool: positions where the delay pattern holds a token
    self_k: list[torch.Tensor]
    self_v: list[torch.Tensor]
    cross_k: list[torch.Tensor]
    cross_v: list[torch.Tensor]
    cross_mask: torch.Tensor | None
    seeds: torch.Tensor  # [B] int64
    t: torch.Tensor
    n_cond: int
    guidance_scale: float
    sampling: SamplingConfig

    @property
    def n_steps(self) -> int:
        return self.seq.shape[-1] - 1


def delay_pattern_valid(n_codebooks: int, length: int) -> torch.Tensor:
    """[K, length] bool: where codebook k holds a token; elsewhere the pad token is fed.

    Codebook k starts after k+1 pads and ends with K-1-k pads (transformers'
    build_delay_pattern_mask with max_length = length).
    """
    j = torch.arange(length)[None]
    k = torch.arange(n_codebooks)[:, None]
    return (j > k) & (j < length - n_codebooks + 1 + k)


class MusicGenLM(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.emb = nn.ModuleList(nn.Embedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_codebooks))
        self.register_buffer("positions", sinusoids(cfg.max_positions, cfg.dim), persistent=False)
        self.cond_proj = nn.Linear(cfg.cond_dim, cfg.dim) if cfg.cond_proj else nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_out = nn.LayerNorm(cfg.dim)
        self.heads = nn.Linear(cfg.dim, cfg.n_codebooks * cfg.card, bias=False)  # the K heads, stacked

    @property
    def compute_dtype(self) -> torch.dtype:
        """The activations' dtype: the embeddings' (matrix weights may be stored as int8)."""
        return self.emb[0].weight.dtype

    def set_precision(self, dtype: torch.dtype) -> "MusicGenLM":
        """Cast matrix weights and embeddings to `dtype` (once); layer norms stay fp32."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.to(dtype)
        return self

    def set_attention(self, kernel: str) -> "MusicGenLM":
        """Use attention kernel `kernel` (one of ATTENTION_KERNELS, see `attend`) in every layer."""
        if kernel not in ATTENTION_KERNELS:
            raise ValueError(f"attention kernel {kernel!r} is not one of {', '.join(ATTENTION_KERNELS)}")
        for block in self.blocks:
            block.self_attn.kernel = block.cross_attn.kernel = kernel
        return self

    # ----------------------------------------------------------------- one step
    def forward_step(self, state: DecodeState, tokens: torch.Tensor, kv_len: int | None) -> torch.Tensor:
        """tokens [R, K] at step state.t -> logits [R, K, card] in fp32. Writes the KV cache at t."""
        x = sum(emb(tokens[:, k]).float() for k, emb in enumerate(self.emb))
        x = x + self.positions.index_select(0, state.t.view(1))
        causal_mask = None
        if kv_len is None:  # fixed shapes for graph capture: mask the cache positions after t
            causal_mask = (torch.arange(state.self_k[0].shape[2], device=x.device) <= state.t).view(1, 1, 1, -1)
        for layer, block in enumerate(self.blocks):
            x = block(x, state, layer, kv_len, causal_mask)
        logits = self.heads(self.ln_out(x).to(self.compute_dtype)).float()
        return logits.view(x.shape[0], self.cfg.n_codebooks, self.cfg.card)

    def advance(self, state: DecodeState, kv_len: int | None) -> None:
        """One generation step: feed seq[:, :, t], draw the tokens at t+1, t += 1."""
        tokens = state.seq.index_select(2, state.t.view(1)).squeeze(2)
        rows = tokens if state.self_k[0].shape[0] == state.n_cond else torch.cat([tokens, tokens])
        logits = self.forward_step(state, rows, kv_len)
        if rows.shape[0] > state.n_cond:  # same formula as transformers' and audiocraft's CFG
            cond, null = logits.split(state.n_cond)
            logits = null + (cond - null) * state.guidance_scale
        drawn = sample(logits, state.seeds, state.t, state.sampling)
        nxt = state.t + 1
        valid = state.valid.index_select(1, nxt.view(1)).squeeze(1)
        state.seq.index_copy_(2, nxt.view(1), torch.where(valid, drawn, self.cfg.pad_token).unsqueeze(2))
        state.t += 1

    # ----------------------------------------------------------------- generation
    def new_state(self, cond: torch.Tensor, n_frames: int, *, cond_mask: torch.Tensor | None = None,
                  guidance_scale: float = 3.0, sampling: SamplingConfig | None = None,
                  seeds: torch.Tensor | None = None) -> DecodeState:
        """Allocate the caches and compute the cross-attention keys/values for one generation.

        cond [B, L, cond_dim]: the text encoder's last_hidden_state (before projection);
        cond_mask [B, L] (1 = token, 0 = padding) or None; n_frames: output frames (50 Hz);
        guidance_scale > 1 adds the null rows; seeds [B] int64, one per item.
        """
        cfg, dev, dt = self.cfg, self.heads.weight.device, self.compute_dtype
        b = cond.shape[0]
        n_steps = n_frames + cfg.n_codebooks - 1
        if n_steps > cfg.max_positions:
            raise ValueError(f"{n_frames} frames need {n_steps} steps, more than the {cfg.max_positions} positions")
        rows = 2 * b if guidance_scale > 1 else b
        head_dim = cfg.dim // cfg.n_heads
        memory = self.cond_proj(cond.to(dev, dt))
        mask = None
        if cond_mask is not None:  # as transformers: zero the padded states and mask them out
            cond_mask = cond_mask.to(dev)
            memory = memory * cond_mask[..., None].to(dt)
            mask = cond_mask.bool().view(b, 1, 1, -1)
        cross = [block.cross_attn.keys_values(memory) for block in self.blocks]
        cache_shape = (rows, cfg.n_heads, n_steps, head_dim)
        return DecodeState(
            seq=torch.full((b, cfg.n_codebooks, n_steps + 1), cfg.pad_token, dtype=torch.long, device=dev),
            valid=delay_pattern_valid(cfg.n_codebooks, n_steps + 1).to(dev),
            self_k=[torch.zeros(cache_shape, dtype=dt, device=dev) for _ in self.blocks],
            self_v=[torch.zeros(cache_shape, dtype=dt, device=dev) for _ in self.blocks],
            cross_k=[k for k, _ in cross], cross_v=[v for _, v in cross], cross_mask=mask,
            seeds=(seeds if seeds is not None else torch.zeros(b, dtype=torch.long)).to(dev, torch.long),
            t=torch.zeros((), dtype=torch.long, device=dev), n_cond=b,
            guidance_scale=guidance_scale, sampling=sampling or SamplingConfig(),
        )

    @torch.no_grad()
    def generate(self, cond: torch.Tensor, n_frames: int, *, cond_mask: torch.Tensor | None = None,
                 guidance_scale: float = 3.0, sampling: SamplingConfig | None = None,
                 seeds: torch.Tensor | None = None, cuda_graph: bool = True) -> torch.Tensor:
        """Generate EnCodec codes [B, K, n_frames] (int64) conditioned on cond [B, L, cond_dim].

        Arguments as in `new_state`. On CUDA with `cuda_graph`, the step is captured once and
        replayed; elsewhere it runs eagerly, attending only to the filled part of the cache.
        """
        state = self.new_state(cond, n_frames, cond_mask=cond_mask, guidance_scale=guidance_scale,
                               sampling=sampling, seeds=seeds)
        if cuda_graph and state.seq.is_cuda:
            self._run_graphed(state)
        else:
            for step in range(state.n_steps):
                self.advance(state, kv_len=step + 1)
        k = torch.arange(self.cfg.n_codebooks, device=state.seq.device)[:, None]
        frames = torch.arange(n_frames, device=state.seq.device)[None] + k + 1
        return state.seq.gather(2, frames.expand(state.seq.shape[0], -1, -1))

    def _run_graphed(self, state: DecodeState) -> None:
        """Capture `advance` (fixed shapes: full cache under a causal mask) once; replay it per step.

        Untested here (no GPU on the development machine). Warm-up steps run on a side stream
        as CUDA graphs require; they write cache entries and tokens that the real steps
        overwrite, so only t and seq are reset before the capture.
        """
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.advance(state, kv_len=None)
        torch.cuda.current_stream().wait_stream(side)
        state.t.zero_()
        state.seq.fill_(self.cfg.pad_token)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.advance(state, kv_len=None)
        for _ in range(state.n_steps):
            graph.replay()
        torch.cuda.synchronize()


# --------------------------------------------------------------------- sampling
_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """Integer hash of 32-bit values held in int64 (no overflow: products stay below 2^59)."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def keyed_uniform(seeds: torch.Tensor, step: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1), [B, K, N], a pure function of (seeds[b], step, codebook k, tokens[b, k, n])."""
    b, k, _ = tokens.shape
    h = _mix32(_mix32((seeds >> 32) & _M32) ^ (seeds & _M32))
    h = _mix32(h ^ (step & _M32)).view(b, 1, 1)
    codebook = torch.arange(k, device=tokens.device).view(1, k, 1)
    h = _mix32((h + codebook * 0x9E3779B1) & _M32)
    h = _mix32(_mix32(h ^ tokens))
    return ((h >> 8).float() + 0.5) / 2.0**24


def sample(logits: torch.Tensor, seeds: torch.Tensor, step: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Draw one token per (item, codebook) from logits [B, K, V] (fp32) -> [B, K] int64.

    Temperature, then top-k, then top-p (transformers' order and semantics), then the
    Gumbel-max trick with noise keyed by token id, so the draw depends only on the
    filtered logits and (seed, step).
    """
    if cfg.greedy:
        return logits.argmax(-1)
    logits = logits / cfg.temperature
    if 0 < cfg.top_k < logits.shape[-1]:
        values, tokens = logits.topk(cfg.top_k, dim=-1)
    else:
        values, tokens = logits.sort(dim=-1, descending=True)
    if 0 < cfg.top_p < 1:
        probs = values.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # probability of the tokens ranked above
        values = values.masked_fill(mass_before >= cfg.top_p, float("-inf"))
    gumbel = -torch.log(-torch.log(keyed_uniform(seeds, step, tokens)))
    choice = (values + gumbel).argmax(-1, keepdim=True)
    return tokens.gather(-1, choice).squeeze(-1)
