"""What every part of benchmarks/gpu_check.py shares: its report lines, and the models it builds.

Each check prints one line, ``PASS | FAIL | WARN | SKIP | INFO <name>: <detail>``; an exception inside a
``check`` block is a FAIL with its first line. Models are built on the spot from configs (nothing downloaded):
random weights with the real architectures and sizes (clip-ViT-B-32, git-base-coco, Qwen2-VL-2B-Instruct), or
tiny ones for ``--dry-run``. Tokenizers are testkit's (trained on the spot, the real special-token layout); the
real vocabulary size is kept for Qwen2-VL so its embedding and output layers have their real memory footprint.
"""

from __future__ import annotations

import contextlib
import gc
import json
import shutil
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

STATUS: list[tuple[str, str]] = []
OUTPUTS: list[TextIO] = []  # besides stdout: the --out file


def report(status: str, name: str, detail: str = "") -> None:
    """Print one check line (and keep its status for the summary)."""
    line = f"{status} {name}" + (f": {detail}" if detail else "")
    for stream in [sys.stdout, *OUTPUTS]:
        print(line, file=stream, flush=True)
    STATUS.append((status, name))


class Skip(Exception):
    """Raised inside a ``check`` block: the check does not apply here (reported as SKIP with the reason)."""


@contextlib.contextmanager
def check(name: str) -> Iterator[None]:
    """A check block: an exception inside is a FAIL with its first line (traceback to stderr)."""
    try:
        yield
    except Skip as exc:
        report("SKIP", name, str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure is one report line
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        report("FAIL", name, f"{type(exc).__name__}: {first}")
        traceback.print_exc(limit=6, file=sys.stderr)


def gib(n: float) -> str:
    """Bytes as GiB with two decimals (MiB below one GiB)."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


@contextlib.contextmanager
def space_processor() -> Iterator[None]:
    """The Space installs no torchvision: build the Qwen2-VL processor the way it is built there."""
    import transformers.utils as tu

    real = tu.is_torchvision_available
    tu.is_torchvision_available = lambda: False
    try:
        yield
    finally:
        tu.is_torchvision_available = real

QWEN_REAL_VOCAB = 151936
GIT_REAL = (  # microsoft/git-base-coco: ViT-B/16 at 224 px, 6-layer decoder
    {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
     "image_size": 224, "patch_size": 16},
    {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 6, "num_attention_heads": 12,
     "max_position_embeddings": 1024},
)
GIT_TINY = (
    {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
     "image_size": 32, "patch_size": 8},
    {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
     "max_position_embeddings": 512},
)


def make_clip(out: Path, real: bool) -> str:
    """A sentence-transformers folder in the real clip-ViT-B-32 repo's legacy layout (random weights)."""
    import torch
    from testkit import tiny_models as tk
    from transformers import CLIPModel

    if real:
        return tk.make_random_clip_vit_b32(out, legacy_layout=True)
    torch.manual_seed(0)
    processor = tk._clip_processor(32)
    config = tk._clip_config(
        processor.tokenizer,
        vision={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
                "image_size": 32, "patch_size": 8},
        text={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=32,
    )
    return tk._save_sentence_transformer(CLIPModel(config).eval(), processor, out, legacy_layout=True)


def make_git(out: Path, real: bool) -> str:
    """GitForCausalLM + GitProcessor with git-base-coco's sizes (or tiny ones), random weights."""
    import torch
    from testkit import tiny_models as tk
    from transformers import BertTokenizer, CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    torch.manual_seed(0)
    vision, text = GIT_REAL if real else GIT_TINY
    size = vision["image_size"]
    tokenizer = BertTokenizer(vocab=tk._train_wordpiece(tk._caption_corpus()), model_max_length=512)
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    processor = GitProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = GitConfig(
        vision_config=vision, vocab_size=len(tokenizer), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        **text,
    )
    out.mkdir(parents=True, exist_ok=True)
    GitForCausalLM(config).eval().save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


def _real_qwen_config(base: Path) -> Any:
    """Qwen2-VL-2B-Instruct's config (28 layers, hidden 1536, GQA 12/2, 32-block 1280-wide vision tower)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base)
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = 1536, 8960, 28
    text.num_attention_heads, text.num_key_value_heads, text.vocab_size = 12, 2, QWEN_REAL_VOCAB
    text.rms_norm_eps, text.max_window_layers = 1e-6, 28
    text.layer_types = ["full_attention"] * 28
    text.rope_parameters = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
    vision = config.vision_config
    vision.depth, vision.embed_dim, vision.hidden_size, vision.num_heads, vision.mlp_ratio = 32, 1280, 1536, 16, 4
    config.tie_word_embeddings = True
    return config


def make_qwen(out: Path, real: bool, device: str) -> tuple[str, str]:
    """Qwen2-VL-2B-Instruct's architecture (2.21 B parameters, bf16 checkpoint, tied embeddings, real vocabulary
    size) with testkit's tokenizer/processor/chat template; tiny for a dry run. Returns (folder, description)."""
    import torch
    from testkit.tiny_models import make_tiny_qwen2vl
    from transformers import AutoTokenizer, GenerationConfig, Qwen2VLForConditionalGeneration

    base = Path(str(out) + "-tokenizer")
    make_tiny_qwen2vl(base)
    pre = base / "preprocessor_config.json"  # as in the real repo: min/max_pixels keys, up to 12.8 M pixels
    data = json.loads(pre.read_text())
    data.pop("size", None)
    data.update(min_pixels=3136, max_pixels=12845056)
    pre.write_text(json.dumps(data, indent=2))
    if not real:
        shutil.copytree(base, out, dirs_exist_ok=True)
        return str(out), "tiny random Qwen2-VL (testkit)"
    n_tokens = len(AutoTokenizer.from_pretrained(base))
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration(_real_qwen_config(base))
    model = model.to(torch.bfloat16).eval()
    with torch.no_grad():  # ids the test tokenizer cannot decode never win the argmax (their logits are 0)
        model.get_input_embeddings().weight[n_tokens:].zero_()
        model.get_output_embeddings().weight[n_tokens:].zero_()
    params = sum(p.numel() for p in model.parameters())
    model.generation_config = GenerationConfig.from_pretrained(base)
    # what the real repo's generation_config.json asks for (sampling); the Space overrides with do_sample=False
    model.generation_config.update(do_sample=True, top_k=1, top_p=0.001, temperature=0.1, repetition_penalty=1.05)
    model.save_pretrained(out)
    for f in base.iterdir():
        if f.name not in {"config.json", "generation_config.json"} and not f.name.startswith("model"):
            shutil.copy(f, out / f.name)
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return str(out), f"random Qwen2-VL-2B architecture, {params / 1e9:.2f} B parameters, bf16"


def test_images() -> list[Any]:
    """Two shape pictures and a 4032x3024 phone-sized photo (which must be shrunk to <= 448*448 pixels)."""
    from PIL import Image, ImageDraw
    from testkit.tiny_models import make_shape_images

    shapes = [item[0].resize((448, 336)) for item in make_shape_images(2, seed=5)]
    photo = Image.new("RGB", (4032, 3024), (90, 140, 200))
    ImageDraw.Draw(photo).ellipse((1000, 800, 3000, 2400), fill=(230, 60, 40))
    return shapes + [photo]


class Hit:
    """A retrieved neighbour as the captioners read it (rag.models.caption_types.Neighbour)."""

    def __init__(self, captions: list[str], label: str | None = None, score: float = 0.9) -> None:
        self.captions, self.label, self.score = captions, label, score


CONTEXT = [Hit(["a red circle on a white background", "a round red shape"], "red circle"), Hit(["a blue square"], None)]
