"""The engine against transformers' MusicGen on the tiny random architecture."""

import pytest
import torch

from b2m.reconstruction.musicgen.codec import decode_codes
from b2m.targets.pretrained import random_musicgen
from b2m.reconstruction.musicgen.lm import (ATTENTION_KERNELS, SamplingConfig, attend, delay_pattern_valid,
                                            keyed_uniform, sample)
from b2m.reconstruction.musicgen.loaders import lm_from_transformers

GREEDY = SamplingConfig(greedy=True)


@pytest.fixture(scope="module")
def reference():
    return random_musicgen("tiny", seed=0)


@pytest.fixture(scope="module")
def text(reference):
    """A batch of token ids (one padded) and the tiny T5's last_hidden_state for them."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 128, (3, 6), generator=gen)
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    ids[2, 4:] = 0
    with torch.no_grad():
        cond = reference.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return ids, mask, cond


def reference_codes(model, **kwargs) -> torch.Tensor:
    """Codes [B, K, F] that transformers' generate hands to its EnCodec decoder."""
    captured = {}
    decode = model.audio_encoder.decode

    def spy(codes, *args, **kw):
        captured["codes"] = codes.clone()
        return decode(codes, *args, **kw)

    model.audio_encoder.decode = spy
    try:
        with torch.no_grad():
            model.generate(do_sample=False, **kwargs)
    finally:
        model.audio_encoder.decode = decode
    return captured["codes"][0]


def test_delay_pattern_matches_transformers(reference):
    ids = torch.full((2 * 4, 1), 2048)
    _, mask = reference.decoder.build_delay_pattern_mask(ids, pad_token_id=2048, max_length=9)
    assert torch.equal(delay_pattern_valid(4, 9), (mask[:4] == -1))


def test_step_logits_match_transformers_fp32(reference, text):
    _, _, cond = text
    lm = lm_from_transformers(reference)
    tokens = torch.randint(0, 2048, (3, 4, 7), generator=torch.Generator().manual_seed(2))
    tokens[:, :, 0] = 2048
    with torch.no_grad():
        ref = reference(encoder_outputs=(cond,), decoder_input_ids=tokens.reshape(12, 7)).logits
        state = lm.new_state(cond, n_frames=4, guidance_scale=1.0)
        ours = []
        for t in range(7):
            ours.append(lm.forward_step(state, tokens[:, :, t], kv_len=t + 1))
            state.t += 1
    ours = torch.stack(ours, dim=2).reshape(12, 7, 2048)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ATTENTION_KERNELS)
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_greedy_codes_identical_to_transformers(reference, text, guidance, kernel):
    ids, mask, cond = text
    lm = lm_from_transformers(reference).set_attention(kernel)
    steps = 14
    if guidance > 1:  # the caption path: transformers adds the null rows itself (zero states, zero mask)
        ref = reference_codes(reference, input_ids=ids, attention_mask=mask, guidance_scale=guidance,
                              max_new_tokens=steps)
    else:
        ref = reference_codes(reference, encoder_outputs=(cond,), attention_mask=mask, guidance_scale=guidance,
                              max_new_tokens=steps)
    ours = lm.generate(cond, n_frames=steps - 3, cond_mask=mask, guidance_scale=guidance, sampling=GREEDY)
    assert ours.shape == ref.shape == (3, 4, steps - 3)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("kernel", ["matmul", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_kernels_match_sdpa_with_masks_and_cache_views(kernel, dtype):
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(3, 2, 1, 8, generator=gen).to(dtype)
    cache_k, cache_v = (torch.randn(3, 2, 9, 8, generator=gen).to(dtype) for _ in range(2))
    for length in (1, 5, 7):  # growing views of one cache, as the decode loop reads it
        k, v = cache_k[:, :, :length], cache_v[:, :, :length]
        masks = [None, (torch.arange(length) < max(1, length - 2)).view(1, 1, 1, length),  # one mask for all rows
                 torch.rand(3, 1, 1, length, generator=gen) < 0.6]
        masks[2][..., 0] = True  # every row attends somewhere
        for mask in masks:
            ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
            got = attend(q, k, v, mask, kernel)
            assert got.shape == ref.shape and got.dtype == dtype
            tol = 1e-6 if dtype == torch.float32 else 2e-2
            torch.testing.assert_close(got.float(), ref, rtol=tol, atol=tol)


def test_unknown_attention_kernel_is_refused(reference):
    with pytest.raises(ValueError, match="attention kernel 'flash' is not one of sdpa, matmul, fused"):
        lm_from_transformers(reference).set_attention("flash")


def test_guidance_and_conditioning_change_the_codes(reference, text):
    """Guards the parity test against a model whose output ignores the conditioning."""
    _, _, cond = text
    lm = lm_from_transformers(reference)
    plain = lm.generate(cond, 12, guidance_scale=1.0, sampling=GREEDY)
    guided = lm.generate(cond, 12, guidance_scale=3.0, sampling=GREEDY)
    assert not torch.equal(plain, guided)
    assert not torch.equal(guided[0], guided[1])


def test_bf16_logits_close_and_audio_finite(reference, text):
    _, _, cond = text
    tokens = torch.randint(0, 2048, (3, 4, 5), generator=torch.Generator().manual_seed(3))
    logits = {}
    for dtype in (torch.float32, torch.bfloat16):
        lm = lm_from_transformers(reference).set_precision(dtype)
        with torch.no_grad():
            state = lm.new_state(cond, n_frames=2, guidance_scale=1.0)
            for t in range(5):
                out = lm.forward_step(state, tokens[:, :, t], kv_len=t + 1)
                state.t += 1
        assert out.dtype == torch.float32
        logits[dtype] = out
    scale = logits[torch.float32].abs().max()
    torch.testing.assert_close(logits[torch.bfloat16], logits[torch.float32], rtol=0, atol=0.03 * scale)
    codes = lm.generate(cond, 10, seeds=torch.arange(3))
    audio = decode_codes(reference.audio_encoder, codes)
    assert audio.shape == (3, 10 * 640)
    assert torch.isfinite(audio).all() and audio.abs().max() > 0


def test_draws_do_not_depend_on_the_batch(reference, text):
    _, _, cond = text
    lm = lm_from_transformers(reference)
    seeds = torch.tensor([11, 22, 33])
    together = lm.generate(cond, 10, seeds=seeds)
    alone = torch.cat([lm.generate(cond[i:i + 1], 10, seeds=seeds[i:i + 1]) for i in (2, 0, 1)])
    assert torch.equal(together, alone[[1, 2, 0]])
    other_seed = lm.generate(cond[:1], 10, seeds=torch.tensor([12]))
    assert not torch.equal(other_seed, together[:1])


def test_keyed_uniform_is_uniform_and_keyed():
    tokens = torch.arange(4096).view(1, 1, -1).expand(2, 4, -1)
    u = keyed_uniform(torch.tensor([5, 2**40 + 5]), torch.tensor(7), tokens)
    assert ((u > 0) & (u < 1)).all()
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.01
    assert not torch.equal(u[0], u[1])  # high seed bits matter
    assert torch.equal(keyed_uniform(torch.tensor([5]), torch.tensor(7), tokens[:1]), u[:1])  # batch-free
    assert not torch.equal(keyed_uniform(torch.tensor([5]), torch.tensor(8), tokens[:1]), u[:1])  # step


def test_sampling_follows_softmax_frequencies():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0, -30.0]]])
    n = 20000
    draws = torch.stack([sample(logits, torch.tensor([s]), torch.tensor(0), SamplingConfig(top_k=0))
                         for s in range(n)]).flatten()
    freq = torch.bincount(draws, minlength=5).float() / n
    torch.testing.assert_close(freq, logits.softmax(-1).flatten(), atol=0.015, rtol=0)


@pytest.mark.parametrize("top_k,top_p,temperature", [(3, 0.0, 1.0), (0, 0.7, 1.0), (50, 0.9, 0.7)])
def test_filtered_support_matches_transformers_warpers(top_k, top_p, temperature):
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    logits = torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(4)) * 2
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p:
        warpers.append(TopPLogitsWarper(top_p))
    support = set(torch.isfinite(warpers(None, logits[0].clone())).nonzero()[:, 1].tolist())
    cfg = SamplingConfig(top_k=top_k, top_p=top_p, temperature=temperature)
    drawn = {int(sample(logits, torch.tensor([s]), torch.tensor(1), cfg)) for s in range(3000)}
    assert drawn <= support
    probs = warpers(None, logits[0].clone()).softmax(-1)[0]
    assert {t for t in support if probs[t] > 0.01} <= drawn
