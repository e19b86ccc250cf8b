"""The GPU check's in-process part (a dedicated GPU: T4 / A10G / L4 paths, run on whatever GPU is here): device and
dtype choice, the CLIP encoder and its fp16 towers, GIT, the guard on what captioners write. Qwen2-VL is in
benchmarks/gpu_check_qwen.py, ZeroGPU in benchmarks/gpu_check_zerogpu.py.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any

from benchmarks.gpu_check_base import CONTEXT, Skip, check, report, test_images


@contextlib.contextmanager
def like_a_t4() -> Iterator[None]:
    """torch.cuda answering as a T4 (sm_75) does: no native bfloat16."""
    import torch

    real = torch.cuda.is_bf16_supported
    torch.cuda.is_bf16_supported = lambda including_emulation=True: False
    try:
        yield
    finally:
        torch.cuda.is_bf16_supported = real


def check_devices(dry_run: bool) -> None:
    """rag.models.devices on the real GPU, and the T4 choice (GIT fp16, Qwen2-VL never fp16)."""
    import torch
    from rag.models import devices

    with check("devices.dedicated_gpu"):
        if dry_run:
            raise Skip("no GPU")
        major = torch.cuda.get_device_properties(0).major
        expected = torch.bfloat16 if major >= 8 else torch.float16
        got = (devices.main_device(), devices.generator_device(), devices.captioner_dtype("cuda", "git"),
               devices.resolve_captioner("auto"))
        assert got == ("cuda", "cuda", expected, "qwen2-vl"), got
        report("PASS", "devices.dedicated_gpu", f"encoder/GIT/Qwen2-VL on cuda, GIT in {expected}, auto -> qwen2-vl")
    with check("devices.t4_dtype"):
        with like_a_t4():
            got = (devices.captioner_dtype("cuda", "git"), devices.captioner_dtype("cuda", "qwen2-vl"))
        assert got == (torch.float16, torch.float32), got
        report("PASS", "devices.t4_dtype", "a GPU without native bf16 (T4) gets GIT in float16 and Qwen2-VL in "
               "float32 (Qwen2 LMs are bf16-trained and overflow in fp16)")
    with check("devices.describe_concurrency"):
        got = devices.describe_concurrency("auto")
        assert got == 1, got
        report("PASS", "devices.describe_concurrency", "1 describe at a time off ZeroGPU (one CUDA stream / 2 vCPUs)")


def check_clip(clip_dir: str, device: str) -> Any:
    """The CLIP encoder on the device (unit-norm float32 vectors); returns it, or None."""
    import numpy as np
    import torch
    from rag.models.encoder import Encoder
    from rag.models.quantize import probe_images

    encoder = None
    with check("clip.encode_on_device"):
        encoder = Encoder(clip_dir, device=device)
        on = {p.device.type for p in encoder.model.parameters()}
        texts = encoder.encode_texts(["a photo of a dog", "a red circle"])
        images = encoder.encode_images(probe_images(4))
        for name, v in (("text", texts), ("image", images)):
            assert v.dtype == np.float32 and np.isfinite(v).all(), name
            assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4), name
        assert on == {torch.device(device).type}, on
        report("PASS", "clip.encode_on_device", f"{encoder.device}, dim {encoder.dim}, unit-norm float32 vectors")
    if encoder is not None:
        check_clip_fp16_text(encoder, device)
        check_clip_fp16_build(clip_dir, device)
    return encoder


def check_clip_fp16_text(encoder: Any, device: str) -> None:
    """RAG_QUANTIZE=auto on the text tower (fp16 on CUDA, int8 on CPU): its scores against fp32 image vectors."""
    import numpy as np
    from rag.models.quantize import probe_images, quantize_encoder
    from testkit.tiny_models import make_shape_images

    with check("clip.fp16_text_tower_scores"):
        queries = [f"a {c} {s} on a plain background" for c in ("red", "green", "blue", "yellow", "black")
                   for s in ("circle", "square", "triangle", "star")] + ["a dog", "two people riding bicycles"]
        pictures = [item[0] for item in make_shape_images(96, seed=9)] + probe_images(32)
        index = encoder.encode_images(pictures)  # fp32 image tower, as in a collection built with --quantize none
        before = encoder.encode_texts(queries)
        result = quantize_encoder(encoder, "auto", towers=("text",))
        after = encoder.encode_texts(queries)
        cuda = device.startswith("cuda")
        if result.mode != ("fp16" if cuda else "int8"):
            raise AssertionError(f"RAG_QUANTIZE=auto on {device} gave {result.mode} ({result.reason})")
        s0, s1 = before @ index.T, after @ index.T
        delta = float(np.abs(s0 - s1).max())
        k = 10
        top0, top1 = np.argsort(-s0, axis=1)[:, :k], np.argsort(-s1, axis=1)[:, :k]
        overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top0, top1)]))
        detail = (f"{result.mode} via {result.engine}, min cosine to fp32 {result.min_cosine:.5f}; scores against fp32 "
                  f"image vectors: max |delta| {delta:.2e}, top-{k} overlap {overlap:.3f}")
        if cuda:
            report("PASS" if delta < 5e-3 else "FAIL", "clip.fp16_text_tower_scores", detail)
        else:
            report("INFO", "clip.fp16_text_tower_scores", "CPU dry run (int8, not fp16): " + detail)


def check_clip_fp16_build(clip_dir: str, device: str) -> None:
    """index_build.py on CUDA without --quantize: both towers fp16, float32 pixels cast by the pre-hook."""
    import numpy as np
    from rag.models.encoder import Encoder
    from rag.models.quantize import probe_images, quantize_for_build

    with check("clip.fp16_build_towers"):
        if not device.startswith("cuda"):
            raise Skip("fp16 towers are CUDA-only")
        fresh = Encoder(clip_dir, device=device)
        reference = fresh.encode_images(probe_images(8))
        mode = quantize_for_build(fresh, None)
        assert mode == "fp16", mode
        half = fresh.encode_images(probe_images(8))
        cos = float(np.min(np.sum(reference * half, axis=1)))
        assert np.isfinite(half).all() and cos > 0.999, cos
        report("PASS", "clip.fp16_build_towers", f"both towers fp16 (index_build on CUDA), image min cosine {cos:.5f}")


def check_git(git_dir: str, encoder: Any, device: str) -> None:
    """GitCaptioner on the device in its dtype (captions, context rerank, a question), then in float16 (T4)."""
    import torch
    from rag.models.captioner import GitCaptioner
    from rag.models.devices import captioner_dtype

    if encoder is None:
        report("SKIP", "git.*", "no encoder")
        return
    images = test_images()[:2]
    captioner = None
    with check("git.describe_on_device"):
        captioner = GitCaptioner(git_dir, encoder, device=device)
        assert captioner.model.dtype == captioner_dtype(device, "git"), captioner.model.dtype
        kinds = [type(c) for c in captioner.caption(images)]
        result = captioner.write_description(images[0], CONTEXT, question="what shape is")
        assert kinds == [str, str] and isinstance(result.text, str)
        report("PASS", "git.describe_on_device", f"{captioner.device} {captioner.model.dtype}: captions, context "
               "rerank, question")
    with check("git.t4_fp16"):
        if captioner is None or not device.startswith("cuda"):
            raise Skip("needs CUDA")
        captioner.model.half()
        inputs = captioner.processor(images=images[:1], return_tensors="pt")
        ids = torch.tensor([[captioner.processor.tokenizer.cls_token_id]], device=device)
        with torch.inference_mode():
            logits = captioner.model(pixel_values=inputs["pixel_values"].to(device, torch.float16), input_ids=ids).logits
        assert torch.isfinite(logits).all()
        text = captioner.write_description(images[0], CONTEXT, question="what shape is").text
        report("PASS", "git.t4_fp16", f"float16 forward finite, describe ok ({text[:40]!r})")
    del captioner
    gc.collect()


def check_guard(captioner: Any, name: str) -> None:
    """A captioner forced to emit NaN logits (what Qwen2 in fp16 computes) raises CaptionerError, not '!!!!'."""
    from rag.errors import CaptionerError

    with check(f"{name}.nan_guard"):
        handle = captioner.model.get_output_embeddings().register_forward_hook(lambda m, a, out: out * float("nan"))
        try:
            captioner.write_description(test_images()[0], [])
        except CaptionerError as exc:
            report("PASS", f"{name}.nan_guard", f"NaN logits on {captioner.device} -> CaptionerError: {str(exc)[:80]}")
        else:
            report("FAIL", f"{name}.nan_guard", "NaN logits produced text instead of a CaptionerError")
        finally:
            handle.remove()
