"""Tiny, offline stand-ins for the Hub models the Space uses, built on the spot for tests and benchmarks.

Every builder writes a folder that loads through the same code path as the real Hub id:

* ``make_tiny_clip`` / ``make_random_clip_vit_b32`` -> ``SentenceTransformer(dir)``
  (like ``sentence-transformers/clip-ViT-B-32``)
* ``make_tiny_git`` -> ``AutoProcessor`` + ``AutoModelForCausalLM`` (like ``microsoft/git-base-coco``)
* ``make_tiny_qwen2vl`` -> ``AutoProcessor`` + ``Qwen2VLForConditionalGeneration`` (like ``Qwen/Qwen2-VL-2B-Instruct``;
  without torchvision transformers 5 cannot build *any* Qwen2-VL processor, see ``load_qwen2vl_processor``)

Nothing here touches the Hugging Face Hub: tokenizers are trained with ``tokenizers`` over a small
caption vocabulary, and weights are random or trained for a few seconds on generated shape images.
Training runs single-threaded with fixed seeds and stops on held-out quality, not on the clock alone,
so a busy machine trains longer rather than worse. Trained folders also hold ``training_stats.json``.
"""

from __future__ import annotations

import json
import os
import random
import string
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 50),
    "blue": (35, 70, 215),
    "yellow": (235, 205, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
LABELS: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)

_CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {label}",
    "a photo of a {label}",
    "a {size} {label}",
    "an image of a {label}",
    "a {label} on a white background",
    "{label}",
)

# Extra words so that ordinary queries/prompts tokenize into real sub-words rather than raw bytes.
_EXTRA_WORDS = (
    "the of and with in on at to is are this that there picture photo image images shape shapes colour color "
    "small large big tiny white light background one two some object objects show me find describe what "
    "dog cat car tree house person people man woman sky water red green blue yellow black orange purple"
)

QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The chat template shipped with Qwen/Qwen2-VL-2B-Instruct (chat_template.json)."""

QWEN2VL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def make_shape_images(n: int, seed: int = 0, size: int = 64) -> list[tuple[Image.Image, str, str]]:
    """Generate ``n`` (image, caption, label) triples: one coloured shape on a noisy light background, seeded."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    out: list[tuple[Image.Image, str, str]] = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        colour, shape = label.split()
        base = np.array([rng.randint(228, 250) for _ in range(3)], dtype=np.float32)
        noise = nrng.normal(0.0, 6.0, size=(size, size, 3)).astype(np.float32)
        background = np.clip(base + noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(background, "RGB")
        draw = ImageDraw.Draw(img)

        extent = rng.uniform(0.45, 0.8)
        side = max(6, int(extent * size))
        x0 = rng.randint(1, size - side - 1)
        y0 = rng.randint(1, size - side - 1)
        fill = tuple(int(np.clip(c + rng.randint(-20, 20), 0, 255)) for c in COLOURS[colour])
        box = (x0, y0, x0 + side, y0 + side)
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x0 + side / 2, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=fill)

        template = rng.choice(_CAPTION_TEMPLATES)
        caption = template.format(label=label, size="small" if extent < 0.6 else "large")
        out.append((img, caption, label))
    return out


def _caption_corpus() -> list[str]:
    """All caption variants plus some everyday words: the text the on-the-spot tokenizers are trained on."""
    texts = [t.format(label=label, size=s) for label in LABELS for t in _CAPTION_TEMPLATES for s in ("small", "large")]
    return [*texts, "describe the image.", "Describe", "what is in this picture?", _EXTRA_WORDS]


def precision_at_k(image_emb: torch.Tensor, text_emb: torch.Tensor, image_labels: Sequence[str], k: int) -> float:
    """Mean precision@k of text->image ranking; query i is about LABELS[i] (12 queries, chance 1/12)."""
    image_emb = F.normalize(image_emb.float(), dim=-1)
    text_emb = F.normalize(text_emb.float(), dim=-1)
    top = (text_emb @ image_emb.T).topk(k, dim=-1).indices
    hits = [sum(image_labels[j] == LABELS[q] for j in top[q].tolist()) / k for q in range(len(LABELS))]
    return float(np.mean(hits))


# --------------------------------------------------------------------------------------------------
# Tokenizers trained on the spot
# --------------------------------------------------------------------------------------------------


# transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX, which Qwen2Tokenizer applies before BPE.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)


def _learn_bpe_merges(words: Counter[tuple[str, ...]]) -> list[tuple[str, str]]:
    """Plain BPE: merge the most frequent adjacent pair (ties broken alphabetically) until every word is one token.

    Written out because the ``tokenizers`` trainers break frequency ties differently from run to run.
    """
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, freq in words.items():
            for pair in pairwise(word):
                pairs[pair] += freq
        if not pairs:
            return merges
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, freq in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if word[i : i + 2] == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += freq
        words = merged


def _byte_level_words(texts: Iterable[str], normalizer, pre_tokenizer) -> Counter[str]:
    """Count the byte-level pre-tokenized words of ``texts``, as a tokenizer with these components would see them."""
    counts: Counter[str] = Counter()
    for text in texts:
        normalized = normalizer.normalize_str(text) if normalizer is not None else text
        counts.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(normalized))
    return counts


def _train_clip_bpe(texts: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn a CLIP-style byte-level BPE (``</w>`` ends words) and return (vocab, merges) for ``CLIPTokenizer``."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    # The normalizer and pre-tokenizer CLIPTokenizer itself installs.
    normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(
                    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
                ),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    words = _byte_level_words(texts, normalizer, pre_tokenizer)
    merges = _learn_bpe_merges(Counter({(*w[:-1], w[-1] + "</w>"): n for w, n in words.items()}))
    # Like the real CLIP vocab: every byte, every byte + "</w>", the merges, then the two specials.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [
        *alphabet,
        *(a + "</w>" for a in alphabet),
        *(a + b for a, b in merges),
        "<|startoftext|>",
        "<|endoftext|>",
    ]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}, merges


def _train_qwen_bpe(texts: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn a Qwen2-style byte-level BPE and return (vocab, merges), special tokens not included."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    # The normalizer and pre-tokenizer Qwen2Tokenizer itself installs.
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    words = _byte_level_words(texts, normalizers.NFC(), pre_tokenizer)
    merges = _learn_bpe_merges(Counter({tuple(w): n for w, n in words.items()}))
    tokens = [*sorted(pre_tokenizers.ByteLevel.alphabet()), *(a + b for a, b in merges)]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}, merges


def _train_wordpiece(texts: Iterable[str]) -> dict[str, int]:
    """Build a BERT-style WordPiece vocabulary: specials first ([PAD]=0), every ASCII character, then whole words.

    Each character alone and as a "##" continuation means any ASCII text tokenizes without [UNK].
    """
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = string.ascii_lowercase + string.digits + string.punctuation
    words = sorted(counts, key=lambda word: (-counts[word], word))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *words]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


# --------------------------------------------------------------------------------------------------
# Training helpers
# --------------------------------------------------------------------------------------------------


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch on one thread: identical results whatever the core count, and no thrashing on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _warmup_adamw(params: Iterable[torch.nn.Parameter], lr: float, warmup: int = 30, total: int | None = None):
    """AdamW with a linear warm-up, then a constant rate, or a cosine decay to 0 over ``total`` steps."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=True)  # fused: 5x cheaper steps here

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if total is None:
            return 1.0
        return float(0.5 * (1 + np.cos(np.pi * min(1.0, (step - warmup) / max(1, total - warmup)))))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _hflip(pixel_values: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of a batch left-right (free augmentation: every shape class is mirror-symmetric)."""
    flip = torch.rand(len(pixel_values), generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], pixel_values.flip(-1), pixel_values)


def _write_stats(out_dir: str | os.PathLike, stats: dict[str, float]) -> None:
    """Record how a trained tiny model's training went, next to its weights."""
    Path(out_dir, "training_stats.json").write_text(json.dumps(stats, indent=2))


# --------------------------------------------------------------------------------------------------
# CLIP (sentence-transformers, like sentence-transformers/clip-ViT-B-32)
# --------------------------------------------------------------------------------------------------


def _clip_processor(image_size: int):
    """Build a CLIPProcessor whose tokenizer is trained on the spot and whose image processor outputs ``image_size``."""
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    vocab, merges = _train_clip_bpe(_caption_corpus())
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _clip_config(tokenizer, *, vision: dict, text: dict, projection_dim: int):
    """CLIPConfig wired to the on-the-spot tokenizer's vocabulary and special ids (the text tower pools at EOS)."""
    from transformers import CLIPConfig

    text_config = dict(
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=projection_dim,
        **text,
    )
    vision_config = dict(projection_dim=projection_dim, **vision)
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=projection_dim)


def _save_sentence_transformer(hf_model, processor, out_dir: str | os.PathLike, legacy_layout: bool) -> str:
    """Save a transformers CLIPModel + CLIPProcessor as a sentence-transformers folder (modern or legacy layout)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if legacy_layout:
        # The layout of sentence-transformers/clip-ViT-B-32: one legacy CLIPModel module in 0_CLIPModel/,
        # holding a plain transformers CLIP folder with preprocessor_config.json and the tokenizer files.
        hf_model.save_pretrained(out / "0_CLIPModel")
        processor.image_processor.save_pretrained(out / "0_CLIPModel")
        processor.tokenizer.save_pretrained(out / "0_CLIPModel")
        modules = [{"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"}]
        (out / "modules.json").write_text(json.dumps(modules, indent=2))
        return str(out)

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer

    # Let sentence-transformers itself write its files: modules.json, sentence_bert_config.json (the
    # modality_config mapping text -> get_text_features, image -> get_image_features), etc.
    with tempfile.TemporaryDirectory(prefix="tiny_clip_") as staging:
        hf_model.save_pretrained(staging)
        processor.save_pretrained(staging)
        SentenceTransformer(modules=[Transformer(staging)], device="cpu").save(str(out))
    return str(out)


def make_tiny_clip(
    out_dir: str | os.PathLike, seed: int = 0, train_seconds: float = 8.0, legacy_layout: bool = False
) -> str:
    """Build a tiny CLIP, train it contrastively on shape images and save it as a SentenceTransformer folder.

    ``legacy_layout=True`` writes the layout of the real ``sentence-transformers/clip-ViT-B-32`` repo
    (a deprecated ``sentence_transformers.models.CLIPModel`` module in ``0_CLIPModel/``) instead of the
    modern ``Transformer`` module at the root. Returns ``str(out_dir)``.
    """
    from transformers import CLIPModel

    with _single_thread():
        torch.manual_seed(seed)
        image_size = 32
        processor = _clip_processor(image_size)
        config = _clip_config(
            processor.tokenizer,
            vision={
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "image_size": image_size,
                "patch_size": 8,
            },
            text={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2},
            projection_dim=32,
        )
        model = CLIPModel(config)
        stats = _train_clip(model, processor, seed=seed, train_seconds=train_seconds)
        model.eval()
        path = _save_sentence_transformer(model, processor, out_dir, legacy_layout)
    _write_stats(path, stats)
    return path


def _train_clip(
    model,
    processor,
    seed: int,
    train_seconds: float,
    check_every: int = 50,
    max_steps: int = 2000,
    good: float = 0.9,
    great: float = 0.97,
) -> dict[str, float]:
    """CLIP loss with label-aware soft targets (same class = positive) on shape images; returns training stats.

    Stops at a check once held-out text->image precision@5 (worst of "red circle" / "a red circle"
    queries) reaches ``great``, or reaches ``good`` after ``train_seconds``.
    """
    data = make_shape_images(1200, seed=seed + 1000)
    val = make_shape_images(120, seed=seed + 3000)
    pixel_values = processor.image_processor([d[0] for d in data], return_tensors="pt")["pixel_values"]
    val_pixels = processor.image_processor([d[0] for d in val], return_tensors="pt")["pixel_values"]
    captions = sorted({d[1] for d in data})
    text_inputs = processor.tokenizer(captions, padding=True, return_tensors="pt")
    queries = [
        processor.tokenizer([t.format(label) for label in LABELS], padding=True, return_tensors="pt")
        for t in ("{}", "a {}")
    ]
    labels = torch.tensor([LABELS.index(d[2]) for d in data])
    caption_of = torch.tensor([captions.index(d[1]) for d in data])

    def val_precision() -> float:
        model.eval()
        with torch.no_grad():
            img = model.get_image_features(pixel_values=val_pixels).pooler_output
            scores = [
                precision_at_k(img, model.get_text_features(**q).pooler_output, [d[2] for d in val], 5) for q in queries
            ]
        model.train()
        return min(scores)

    gen = torch.Generator().manual_seed(seed)
    optimizer, scheduler = _warmup_adamw(model.parameters(), lr=3e-3)
    model.train()
    start = time.perf_counter()
    step, precision = 0, 0.0
    while step < max_steps:
        idx = torch.randperm(len(data), generator=gen)[:64]
        ids = caption_of[idx]
        img = model.get_image_features(pixel_values=_hflip(pixel_values[idx], gen)).pooler_output
        txt = model.get_text_features(
            input_ids=text_inputs["input_ids"][ids], attention_mask=text_inputs["attention_mask"][ids]
        ).pooler_output
        logits = model.logit_scale.exp().clamp(max=100) * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
        same = (labels[idx][:, None] == labels[idx][None, :]).float()
        target = same / same.sum(-1, keepdim=True)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        if step % check_every == 0:
            precision = val_precision()
            if precision >= great or (precision >= good and time.perf_counter() - start >= train_seconds):
                break
    return {"steps": step, "val_precision_at_5": precision, "train_seconds": round(time.perf_counter() - start, 2)}


def to_legacy_clip_layout(model_dir: str | os.PathLike, out_dir: str | os.PathLike) -> str:
    """Re-save a CLIP SentenceTransformer folder in the legacy layout of the real clip-ViT-B-32 repo."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(str(model_dir)).eval()
    processor = CLIPProcessor.from_pretrained(str(model_dir))
    path = _save_sentence_transformer(model, processor, out_dir, legacy_layout=True)
    if Path(model_dir, "training_stats.json").exists():
        _write_stats(path, json.loads(Path(model_dir, "training_stats.json").read_text()))
    return path


def make_random_clip_vit_b32(out_dir: str | os.PathLike, legacy_layout: bool = True) -> str:
    """Save an untrained CLIP with the real ViT-B/32 sizes as a SentenceTransformer folder, for speed benchmarks.

    By default in the real repo's legacy layout, which is also twice as quick to write (one save, no reload).
    Only the text vocabulary is small (the tokenizer is trained on the spot), which costs nothing in speed.
    """
    from transformers import CLIPModel

    torch.manual_seed(0)
    processor = _clip_processor(224)
    config = _clip_config(
        processor.tokenizer,
        vision={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 32,
        },
        text={"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
        projection_dim=512,
    )
    model = CLIPModel(config).eval()
    return _save_sentence_transformer(model, processor, out_dir, legacy_layout)


def clip_precision_at_k(
    model_dir: str | os.PathLike, n_images: int = 240, k: int = 5, seed: int = 12345, template: str = "{label}"
) -> float:
    """Load a saved CLIP via SentenceTransformer; mean text->image precision@k over the 12 classes (chance: 1/12)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    data = make_shape_images(n_images, seed=seed)
    image_emb = model.encode([d[0] for d in data], convert_to_tensor=True)
    text_emb = model.encode([template.format(label=label) for label in LABELS], convert_to_tensor=True)
    return precision_at_k(image_emb, text_emb, [d[2] for d in data], k)


# --------------------------------------------------------------------------------------------------
# GIT (captioner, like microsoft/git-base-coco)
# --------------------------------------------------------------------------------------------------


def make_tiny_git(out_dir: str | os.PathLike, seed: int = 0, train_seconds: float = 10.0) -> str:
    """Build a tiny GitForCausalLM + GitProcessor, train it briefly to caption shapes, save it; returns the path."""
    from transformers import (
        BertTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        GitConfig,
        GitForCausalLM,
        GitProcessor,
    )

    with _single_thread():
        torch.manual_seed(seed)
        image_size = 32
        tokenizer = BertTokenizer(vocab=_train_wordpiece(_caption_corpus()), model_max_length=512)
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
        processor = GitProcessor(image_processor=image_processor, tokenizer=tokenizer)
        vision = {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 8,
        }
        config = GitConfig(
            vision_config=vision,
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=512,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )
        model = GitForCausalLM(config)
        # Like the real GIT, whose image encoder starts from CLIP's: CLIP's initialisation also trains far faster.
        model.git.image_encoder.vision_model.load_state_dict(CLIPVisionModel(CLIPVisionConfig(**vision)).state_dict())
        stats = _train_git(model, processor, seed=seed, train_seconds=train_seconds)
        model.eval()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        processor.save_pretrained(out)
    _write_stats(out, stats)
    return str(out)


def _caption_hits(captions: Sequence[str], labels: Sequence[str]) -> tuple[float, float]:
    """Fractions of captions naming the right colour and the right shape."""
    colour = np.mean([label.split()[0] in c.split() for c, label in zip(captions, labels, strict=True)])
    shape = np.mean([label.split()[1] in c.split() for c, label in zip(captions, labels, strict=True)])
    return float(colour), float(shape)


def _train_git(
    model,
    processor,
    seed: int,
    train_seconds: float,
    pretrain_steps: int = 500,
    check_every: int = 50,
    max_steps: int = 1000,
    good: float = 0.6,
    great: float = 0.9,
) -> dict[str, float]:
    """Teach GIT to caption shapes: classify the 12 labels with the image encoder, then freeze it and teacher-force.

    Learning shapes through the caption loss alone takes a tiny ViT minutes; the label warm-up takes
    seconds. Captioning stops at a check once greedy captions of held-out images get both colour and
    shape right ``great`` of the time, or ``good`` of the time after ``train_seconds``. Returns stats.
    """
    data = make_shape_images(2000, seed=seed + 2000)
    val = make_shape_images(48, seed=seed + 4000)
    pixel_values = processor.image_processor([d[0] for d in data], return_tensors="pt")["pixel_values"]
    val_pixels = processor.image_processor([d[0] for d in val], return_tensors="pt")["pixel_values"]
    enc = processor.tokenizer([d[1] for d in data], padding=True, return_tensors="pt")
    input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
    targets = input_ids.masked_fill(attention_mask == 0, -100)
    labels = torch.tensor([LABELS.index(d[2]) for d in data])
    encoder = model.git.image_encoder
    head = torch.nn.Linear(model.config.vision_config.hidden_size, len(LABELS))
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()

    optimizer, scheduler = _warmup_adamw([*encoder.parameters(), *head.parameters()], lr=3e-3, total=pretrain_steps)
    for _ in range(pretrain_steps):
        idx = torch.randperm(len(data), generator=gen)[:64]
        logits = head(encoder(_hflip(pixel_values[idx], gen)).last_hidden_state[:, 0])
        loss = F.cross_entropy(logits, labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()

    encoder.requires_grad_(False)
    optimizer, scheduler = _warmup_adamw([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    step, colour, shape = 0, 0.0, 0.0
    while step < max_steps:
        idx = torch.randperm(len(data), generator=gen)[:32]
        loss = model(
            input_ids=input_ids[idx],
            attention_mask=attention_mask[idx],
            pixel_values=_hflip(pixel_values[idx], gen),
            labels=targets[idx],
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        if step % check_every == 0:
            model.eval()
            with torch.no_grad():
                ids = model.generate(pixel_values=val_pixels, max_new_tokens=12)
            model.train()
            colour, shape = _caption_hits(processor.batch_decode(ids, skip_special_tokens=True), [d[2] for d in val])
            score = min(colour, shape)
            if score >= great or (score >= good and time.perf_counter() - start >= train_seconds):
                break
    encoder.requires_grad_(True)
    return {
        "steps": pretrain_steps + step,
        "val_colour": colour,
        "val_shape": shape,
        "train_seconds": round(time.perf_counter() - start, 2),
    }


def git_caption_accuracy(model_dir: str | os.PathLike, n_images: int = 48, seed: int = 54321) -> tuple[float, float]:
    """Caption fresh shape images with a saved GIT (greedy): fractions naming the right colour and the right shape."""
    from transformers import AutoModelForCausalLM, AutoProcessor

    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    data = make_shape_images(n_images, seed=seed)
    pixel_values = processor(images=[d[0] for d in data], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ids = model.generate(pixel_values=pixel_values, max_new_tokens=12)
    return _caption_hits(processor.batch_decode(ids, skip_special_tokens=True), [d[2] for d in data])


# --------------------------------------------------------------------------------------------------
# Qwen2-VL (captioner, like Qwen/Qwen2-VL-2B-Instruct)
# --------------------------------------------------------------------------------------------------


def make_tiny_qwen2vl(out_dir: str | os.PathLike, seed: int = 0) -> str:
    """Build a tiny random Qwen2-VL (model, tokenizer, image processor, real chat template), save it; returns the path.

    The folder mirrors Qwen/Qwen2-VL-2B-Instruct (config, generation_config, tokenizer files with the chat
    template, preprocessor_config.json, chat_template.json), so it loads exactly like the real repo.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    torch.manual_seed(seed)
    vocab, merges = _train_qwen_bpe([*_caption_corpus(), QWEN2VL_CHAT_TEMPLATE, "You are a helpful assistant."])
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in QWEN2VL_SPECIAL_TOKENS]}
    )
    tokenizer.chat_template = QWEN2VL_CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2VL_SPECIAL_TOKENS}
    # Pixels come in 28x28 units (patch 14 x merge 2): 4..16 units, i.e. 4..16 image tokens per image.
    image_processor = Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28)

    hidden, heads = 64, 4
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            # mrope_section splits the rotary half-dim (head_dim / 2 = 8) into temporal/height/width parts.
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": hidden,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": image_processor.patch_size,
            "spatial_merge_size": image_processor.merge_size,
            "temporal_patch_size": image_processor.temporal_patch_size,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # Qwen2VLProcessor.save_pretrained needs a video processor, which transformers 5 only builds with
    # torchvision; write the image processor and chat template the way the real repo stores them instead.
    image_processor.save_pretrained(out)
    _patch_json(
        out / "preprocessor_config.json",
        image_processor_type="Qwen2VLImageProcessor",
        processor_class="Qwen2VLProcessor",
    )
    _patch_json(out / "tokenizer_config.json", processor_class="Qwen2VLProcessor")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2VL_CHAT_TEMPLATE}, indent=2))
    return str(out)


def _patch_json(path: Path, **updates: object) -> None:
    """Update keys of a JSON file in place."""
    data = json.loads(path.read_text())
    data.update(updates)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False))


def load_qwen2vl_processor(model_dir: str | os.PathLike, **kwargs: object):
    """The library's own Qwen2-VL processor loader (works with or without torchvision)."""
    from rag.models.captioner import load_qwen2vl_processor as load

    return load(str(model_dir), **kwargs)
