"""A tiny random-weight latent-consistency Stable Diffusion pipeline, built offline, for tests of Create.

Laid out like the default model (SimianLuo/LCM_Dreamshaper_v7: a ``LatentConsistencyModelPipeline`` with an
``LCMScheduler``, a UNet with a guidance embedding, a CLIP text encoder, an SD autoencoder, the SD safety checker
and its feature extractor), at the sizes diffusers' own unit tests use (UNet2DConditionModel block_out_channels
(32, 64), a 2-block AutoencoderKL, a 5-layer 32-wide CLIPTextModel). The tokenizer is a CLIP BPE trained on the
spot (testkit.tiny_models), so the fusion prompt is counted in real CLIP tokens. ``save_pretrained`` writes a
folder that ``RAG_CREATE_MODEL`` loads through the same ``AutoPipelineFor*`` calls as a Hub id.

Its images are noise (the weights are random); what the tests check is the plumbing: references, the prompt,
the init image, seeds, the safety check, the API. The safety checker never flags (its thresholds are far above
any cosine a random 32-d embedding reaches); ``force_flag`` lowers them so that it flags every image.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

TINY_SIDE = 32  # pixels the tiny pipeline is meant to make (latents of 16 x 16 with a 2-block autoencoder)


def _tokenizer():
    from transformers import CLIPTokenizer

    from testkit.tiny_models import _caption_corpus, _train_clip_bpe

    vocab, merges = _train_clip_bpe(_caption_corpus())
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_size=32, intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=5,
        vocab_size=len(tokenizer), max_position_embeddings=77,
    )
    return CLIPTextModel(config)


def _safety_checker():
    """A StableDiffusionSafetyChecker on a 2-layer CLIP vision tower, concept vectors random, thresholds 0.95."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                           image_size=TINY_SIDE, patch_size=4),
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
        checker.concept_embeds_weights.fill_(0.95)
        checker.special_care_embeds_weights.fill_(0.95)
    size = {"shortest_edge": TINY_SIDE}
    return checker, CLIPImageProcessor(size=size, crop_size={"height": TINY_SIDE, "width": TINY_SIDE})


def make_tiny_diffusion(out_dir: str | os.PathLike, seed: int = 0, safety_checker: bool = True) -> str:
    """Save a tiny LCM pipeline (with the SD safety checker unless ``safety_checker=False``) to ``out_dir``."""
    from diffusers import AutoencoderKL, LatentConsistencyModelPipeline, LCMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=TINY_SIDE // 2, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, time_cond_proj_dim=32, norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D"] * 2,
    )
    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                             set_alpha_to_one=False)
    checker, extractor = _safety_checker() if safety_checker else (None, None)
    pipe = LatentConsistencyModelPipeline(
        vae=vae, text_encoder=_text_encoder(tokenizer), tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=checker, feature_extractor=extractor, requires_safety_checker=safety_checker,
    )
    out = Path(out_dir)
    pipe.save_pretrained(out)
    return str(out)


def make_tiny_taesd(out_dir: str | os.PathLike, seed: int = 0) -> str:
    """A tiny random AutoencoderTiny (TAESD's class, 8 channels wide), for the RAG_CREATE_VAE path."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    vae = AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                          num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4)
    vae.save_pretrained(out_dir)
    return str(out_dir)


def force_flag(checker: torch.nn.Module) -> None:
    """Make a StableDiffusionSafetyChecker flag every image: thresholds below any cosine (-2 < -1)."""
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-2.0)


def unforce_flag(checker: torch.nn.Module) -> None:
    """Undo ``force_flag`` (thresholds back to the tiny checker's 0.95)."""
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(0.95)
