"""The tiny stand-in models load through the real models' code paths and behave like them where it matters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from testkit.tiny_models import LABELS, git_caption_accuracy, load_qwen2vl_processor, make_shape_images, precision_at_k

CHANCE = 1 / len(LABELS)  # 12 colour-shape classes: a random ranking finds the right class 1/12 of the time


def test_shape_images_are_deterministic_and_cover_every_class() -> None:
    """Same seed, same pixels and captions; all 12 classes appear; captions name their label."""
    first, again, other = make_shape_images(24, seed=7), make_shape_images(24, seed=7), make_shape_images(24, seed=8)
    assert [np.asarray(i).tobytes() for i, _, _ in first] == [np.asarray(i).tobytes() for i, _, _ in again]
    assert [c for _, c, _ in first] == [c for _, c, _ in again]
    assert [np.asarray(i).tobytes() for i, _, _ in first] != [np.asarray(i).tobytes() for i, _, _ in other]
    assert {label for _, _, label in first} == set(LABELS)
    for image, caption, label in first:
        assert image.mode == "RGB" and image.size == (64, 64)
        assert label in caption


def test_tiny_clip_loads_as_sentence_transformer_and_embeds_text_and_images_alike(tiny_clip_dir: str) -> None:
    """SentenceTransformer(dir) encodes PIL images and strings into vectors of one dimension."""
    model = SentenceTransformer(tiny_clip_dir, device="cpu")
    images = [image for image, _, _ in make_shape_images(3, seed=1)]
    image_emb = model.encode(images)
    text_emb = model.encode(["red circle", "a photo of a blue square"])
    assert image_emb.shape == (3, 32) and text_emb.shape == (2, 32)
    assert model.encode(images[0]).shape == (32,)
    assert np.isfinite(image_emb).all() and np.isfinite(text_emb).all()


@pytest.fixture(scope="module")
def clip_and_shapes(tiny_clip_dir: str) -> tuple[SentenceTransformer, list[str], torch.Tensor]:
    """The tiny CLIP loaded from disk, with the labels and embeddings of 240 fresh shape images."""
    model = SentenceTransformer(tiny_clip_dir, device="cpu")
    data = make_shape_images(240, seed=12345)
    image_emb = model.encode([image for image, _, _ in data], convert_to_tensor=True, normalize_embeddings=True)
    return model, [label for _, _, label in data], image_emb


@pytest.mark.parametrize("template", ["{label}", "a {label}"])
def test_tiny_clip_ranks_the_named_class_first(clip_and_shapes, template: str) -> None:
    """Text -> image precision@5 over fresh shape images is far above chance (1/12), averaged over the 12 classes."""
    model, labels, image_emb = clip_and_shapes
    text_emb = model.encode([template.format(label=label) for label in LABELS], convert_to_tensor=True)
    assert precision_at_k(image_emb, text_emb, labels, k=5) >= 0.8 > 8 * CHANCE


def test_red_circle_query_finds_red_circles(clip_and_shapes) -> None:
    """The literal query "red circle" puts red circles on top of a fresh collection."""
    model, labels, image_emb = clip_and_shapes
    query = model.encode("red circle", convert_to_tensor=True, normalize_embeddings=True)
    top5 = torch.topk(image_emb @ query, 5).indices.tolist()
    assert sum(labels[i] == "red circle" for i in top5) >= 4


def test_tiny_clip_training_reached_its_quality_gate(tiny_clip_dir: str) -> None:
    """The build records held-out precision@5, which its stopping rule keeps at 0.9 or more."""
    stats = json.loads(Path(tiny_clip_dir, "training_stats.json").read_text())
    assert stats["val_precision_at_5"] >= 0.9 and stats["steps"] > 0


def test_legacy_clip_layout_loads_like_the_real_clip_repo(tiny_clip_dir: str, tiny_clip_legacy_dir: str) -> None:
    """The 0_CLIPModel/ layout of sentence-transformers/clip-ViT-B-32 loads and gives the same vectors."""
    modules = json.loads(Path(tiny_clip_legacy_dir, "modules.json").read_text())
    assert modules == [{"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"}]
    legacy = SentenceTransformer(tiny_clip_legacy_dir, device="cpu")
    modern = SentenceTransformer(tiny_clip_dir, device="cpu")
    images = [image for image, _, _ in make_shape_images(4, seed=5)]
    np.testing.assert_allclose(legacy.encode(images), modern.encode(images), atol=1e-5)
    np.testing.assert_allclose(legacy.encode(["green triangle"]), modern.encode(["green triangle"]), atol=1e-5)


def test_tiny_git_loads_like_git_base_coco_and_beam_search_gives_captions(tiny_git_dir: str) -> None:
    """AutoProcessor + AutoModelForCausalLM load it; 4-beam generation returns 4 non-empty captions per image."""
    from transformers import AutoModelForCausalLM, AutoProcessor, GitForCausalLM, GitProcessor

    processor = AutoProcessor.from_pretrained(tiny_git_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_git_dir).eval()
    assert isinstance(processor, GitProcessor) and isinstance(model, GitForCausalLM)
    images = [image for image, _, _ in make_shape_images(2, seed=11)]
    pixel_values = processor(images=images, return_tensors="pt").pixel_values
    with torch.no_grad():
        ids = model.generate(pixel_values=pixel_values, num_beams=4, num_return_sequences=4, max_new_tokens=20)
    captions = processor.batch_decode(ids, skip_special_tokens=True)
    assert len(captions) == 8
    assert all(isinstance(c, str) and c.strip() for c in captions)
    assert all(any(colour in c for colour in ("red", "green", "blue", "yellow")) for c in captions)


def test_tiny_git_names_colour_and_shape_well_above_chance(tiny_git_dir: str) -> None:
    """Greedy captions of fresh images name the right colour (chance 1/4) and shape (chance 1/3) most of the time."""
    colour, shape = git_caption_accuracy(tiny_git_dir, n_images=48, seed=54321)
    assert colour >= 0.8
    assert shape >= 0.5


def test_tiny_qwen2vl_generates_through_the_chat_template(tiny_qwen2vl_dir: str) -> None:
    """The standard Qwen2-VL recipe: chat template with an image, processor, generate, decode the new tokens."""
    from transformers import AutoModelForImageTextToText, Qwen2VLForConditionalGeneration

    processor = load_qwen2vl_processor(tiny_qwen2vl_dir)
    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_qwen2vl_dir).eval()
    assert type(AutoModelForImageTextToText.from_pretrained(tiny_qwen2vl_dir)) is Qwen2VLForConditionalGeneration

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>Describe<|im_end|>" in text

    image = make_shape_images(1, seed=2)[0][0]
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    n_image_tokens = int(inputs["image_grid_thw"].prod()) // processor.image_processor.merge_size**2
    assert 1 <= n_image_tokens <= 16  # small min/max_pixels keep images to a few patches
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == n_image_tokens

    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    assert 1 <= new_tokens.shape[1] <= 8
    assert isinstance(processor.batch_decode(new_tokens, skip_special_tokens=True)[0], str)


def test_tiny_qwen2vl_folder_mirrors_the_real_repo(tiny_qwen2vl_dir: str) -> None:
    """Config, tokenizer and chat template carry the ids and special tokens Qwen2-VL relies on."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_qwen2vl_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2vl_dir)
    expected = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    for name, token in expected.items():
        assert getattr(config, name) == tokenizer.convert_tokens_to_ids(token)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.chat_template and Path(tiny_qwen2vl_dir, "chat_template.json").exists()
    assert (
        json.loads(Path(tiny_qwen2vl_dir, "preprocessor_config.json").read_text())["processor_class"]
        == "Qwen2VLProcessor"
    )


@pytest.mark.slow
def test_random_clip_vit_b32_has_the_real_sizes(tmp_path: Path) -> None:
    """The benchmark stand-in loads via SentenceTransformer with ViT-B/32's 224px input and 512-d output."""
    from testkit.tiny_models import make_random_clip_vit_b32

    model = SentenceTransformer(make_random_clip_vit_b32(tmp_path / "b32"), device="cpu")
    config = model.transformers_model.config
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (768, 12)
    assert (config.vision_config.patch_size, config.vision_config.image_size) == (32, 224)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (512, 12)
    assert model.encode([make_shape_images(1)[0][0]]).shape == model.encode(["a red circle"]).shape == (1, 512)
