"""The GPU check's Qwen2-VL part: rag.models.qwen2vl on the device (dtype, attention, max_pixels, generate kwargs),
the 96-token describe time against RAG_GPU_DURATION, peak memory, the precision a T4 gets (float32, never
float16) and what it costs, fp16-vs-fp32 logits with the T4's attention kernels, and the NaN guard.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from benchmarks.gpu_check_base import CONTEXT, Skip, check, gib, report, space_processor, test_images
from benchmarks.gpu_check_native import check_guard, like_a_t4

T4_USABLE = 14.5 * 2**30  # a T4's 16 GB less the CUDA context


def generate_spy(captioner: Any, seen: list, force_tokens: int | None) -> None:
    """Wrap model.generate: record what the Space passes, optionally force the full QWEN_MAX_NEW_TOKENS."""
    original = captioner.model.generate

    def generate(**kwargs: Any) -> Any:
        seen.append({k: (str(v.device), str(v.dtype), tuple(v.shape)) if hasattr(v, "device") else v
                     for k, v in kwargs.items()})
        if force_tokens:
            kwargs["min_new_tokens"] = force_tokens
        output = original(**kwargs)
        seen[-1]["new_tokens"] = int(output.shape[1] - kwargs["input_ids"].shape[1])
        return output

    captioner.model.generate = generate


def prefill_logits(captioner: Any, image: Any, question: str = "Describe this image.") -> Any:
    """Last-position logits of the chat prompt as Qwen2VLCaptioner._chat builds it (float32, on the CPU)."""
    import torch
    from rag.images.decode import pad_to_aspect
    from rag.models.qwen2vl import QWEN_MAX_ASPECT, QWEN_SYSTEM

    messages = [
        {"role": "system", "content": [{"type": "text", "text": QWEN_SYSTEM}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
    ]
    prompt = captioner.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = captioner.processor(text=[prompt], images=[pad_to_aspect(image, QWEN_MAX_ASPECT)], return_tensors="pt")
    inputs = {k: v.to(captioner.model.device) for k, v in inputs.items()}
    with torch.inference_mode():
        return captioner.model(**inputs).logits[0, -1].float().cpu()


def t4_kernels() -> Any:
    """SDPA limited to what a T4 (sm_75) has: memory-efficient and math kernels, no flash attention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def check_qwen(qwen_dir: str, device: str) -> dict:
    """Everything on the Space's Qwen2-VL path; returns what later checks compare against."""
    import torch
    from rag.models import devices
    from rag.models.qwen2vl import Qwen2VLCaptioner

    found: dict = {}
    captioner = None
    with check("qwen.load_native"):
        with space_processor():
            captioner = Qwen2VLCaptioner(qwen_dir, device=device)
        expected = devices.captioner_dtype(device, "qwen2-vl")
        places = {p.device.type for p in captioner.model.parameters()}
        assert captioner.dtype == expected and captioner.model.dtype == expected, (captioner.dtype, captioner.model.dtype)
        assert places == {torch.device(device).type}, places
        assert captioner._run == captioner._generate, "wrapped in @spaces.GPU off ZeroGPU"
        attn = captioner.model.config._attn_implementation
        vision_attn = captioner.model.config.vision_config._attn_implementation
        report("PASS", "qwen.load_native", f"{device} {expected}, text attention {attn}, vision attention {vision_attn}")
    check_max_pixels(qwen_dir)
    if captioner is None:
        return found
    describe_native(captioner, device, found)
    with check("qwen.native_logits_finite"):
        logits = prefill_logits(captioner, test_images()[0])
        assert torch.isfinite(logits).all()
        report("PASS", "qwen.native_logits_finite", f"{captioner.dtype} prefill logits finite")
    check_guard(captioner, "qwen")
    del captioner
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        check_t4(qwen_dir, device)
    else:
        report("SKIP", "qwen.t4_*", "needs CUDA")
    return found


def check_max_pixels(qwen_dir: str) -> None:
    """A 4032x3024 photo (the repo allows 12.8 M pixels) reaches the model as at most 448*448 pixels."""
    import transformers.utils as tu
    from rag.models.qwen2vl import QWEN_MAX_PIXELS, load_qwen2vl_processor

    with check("qwen.max_pixels"):
        real = tu.is_torchvision_available
        tu.is_torchvision_available = lambda: False
        try:
            processor = load_qwen2vl_processor(qwen_dir, max_pixels=QWEN_MAX_PIXELS)
        finally:
            tu.is_torchvision_available = real
        out = processor(text=["<|vision_start|><|image_pad|><|vision_end|>x"], images=[test_images()[-1]],
                        return_tensors="pt")
        tokens = int(out["image_grid_thw"].prod()) // 4
        assert tokens <= QWEN_MAX_PIXELS // (28 * 28), tokens
        report("PASS", "qwen.max_pixels", f"4032x3024 photo -> {tokens} image tokens (no-torchvision processor, "
               f"as on the Space), pixel_values {out['pixel_values'].dtype}")


def random_text(captioner: Any, image: Any) -> str:
    """A describe of ``image`` with CONTEXT; random weights may write a degenerate string, which the guard turns
    into CaptionerError("no usable text"): the generation ran all the same, so its timing stands."""
    from rag.errors import CaptionerError

    try:
        return captioner.write_description(image, CONTEXT, "what shape is it?").text
    except CaptionerError as exc:
        if "no usable text" not in str(exc):
            raise
        return "(degenerate text from random weights, refused by the guard)"


def describe_native(captioner: Any, device: str, found: dict) -> None:
    """A warm 96-token describe: kwargs on the device, greedy, its time against the ZeroGPU duration, peak memory."""
    import torch
    from rag.models.qwen2vl import QWEN_MAX_NEW_TOKENS
    from rag.models.zerogpu import DEFAULT_GPU_DURATION

    cuda = device.startswith("cuda")
    images = test_images()
    with check("qwen.describe_native"):
        seen: list = []
        generate_spy(captioner, seen, force_tokens=QWEN_MAX_NEW_TOKENS)
        random_text(captioner, images[0])  # warm-up (cuBLAS, kernels)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        text = random_text(captioner, images[-1])
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        last = seen[-1]
        assert last["pixel_values"][0].startswith(device.split(":")[0]), last
        assert last["do_sample"] is False and last["max_new_tokens"] == QWEN_MAX_NEW_TOKENS, last
        peak = torch.cuda.max_memory_allocated() if cuda else 0
        found.update(native_seconds=seconds, native_tokens=last["new_tokens"], native_text=text)
        report("PASS", "qwen.describe_native",
               f"{last['new_tokens']} new tokens in {seconds:.2f} s ({1e3 * seconds / max(1, last['new_tokens']):.1f} "
               f"ms/token incl. prefill), pixel_values {last['pixel_values'][1]} {last['pixel_values'][2]} on "
               f"{last['pixel_values'][0]}, peak {gib(peak) if cuda else 'not measured on a CPU'}")
        if cuda:
            budget = DEFAULT_GPU_DURATION / 3
            report("PASS" if seconds <= budget else "WARN", "qwen.duration_budget",
                   f"warm describe {seconds:.2f} s for {QWEN_MAX_NEW_TOKENS} tokens vs DEFAULT_GPU_DURATION "
                   f"{DEFAULT_GPU_DURATION} s / 3 = {budget:.1f} s (a ZeroGPU first call adds fork, CUDA init and the "
                   "weight move: see zerogpu.first_call)")


def check_t4(qwen_dir: str, device: str) -> None:
    """What a T4 gets: Qwen2-VL in float32 (its memory and time with T4 kernels), and fp16 logits against it."""
    import torch
    from rag.models.qwen2vl import QWEN_MAX_NEW_TOKENS, Qwen2VLCaptioner

    reference = None
    with check("qwen.t4_fp32"):
        with like_a_t4(), space_processor():
            fp32 = Qwen2VLCaptioner(qwen_dir, device=device)
        assert fp32.dtype == torch.float32 and fp32.model.dtype == torch.float32, fp32.dtype
        torch.cuda.reset_peak_memory_stats()
        with t4_kernels():
            reference = prefill_logits(fp32, test_images()[0])
            generate_spy(fp32, [], force_tokens=QWEN_MAX_NEW_TOKENS)
            start = time.perf_counter()
            random_text(fp32, test_images()[-1])
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated()
        report("PASS" if peak < T4_USABLE else "FAIL", "qwen.t4_fp32",
               f"a T4-like GPU loads Qwen2-VL in float32: {QWEN_MAX_NEW_TOKENS}-token describe peak {gib(peak)} "
               f"(T4: {gib(T4_USABLE)} usable), {seconds:.2f} s here with T4 kernels (a T4 has ~1/10 of this GPU's "
               "bandwidth)")
        del fp32
        gc.collect()
        torch.cuda.empty_cache()
    with check("qwen.fp16_vs_fp32_logits"):
        with space_processor():
            half = Qwen2VLCaptioner(qwen_dir, device="cpu")
        half.model.to(device=device, dtype=torch.float16)
        with t4_kernels():
            logits = prefill_logits(half, test_images()[0])
        finite = bool(torch.isfinite(logits).all())
        cos = float(torch.nn.functional.cosine_similarity(logits, reference, dim=0)) if reference is not None else 0.0
        report("PASS" if finite and cos > 0.99 else "WARN", "qwen.fp16_vs_fp32_logits",
               f"float16 with T4 SDPA kernels: logits finite={finite}, cosine to fp32 {cos:.4f} (random weights cannot "
               "show Qwen2's fp16 activation overflow; --real-qwen DIR does; the Space never runs it in fp16)")
        del half
        gc.collect()
        torch.cuda.empty_cache()


def check_real_qwen_fp16(real_qwen: str | None, device: str) -> None:
    """Real weights: max |hidden state| per decoder layer in fp16 vs fp32, and that the guard catches fp16 garbage."""
    import torch
    from rag.errors import CaptionerError
    from rag.models.qwen2vl import Qwen2VLCaptioner

    with check("qwen.real_weights_fp16"):
        if not real_qwen:
            raise Skip("no --real-qwen DIR (a local snapshot of Qwen/Qwen2-VL-2B-Instruct)")
        if not device.startswith("cuda"):
            raise Skip("needs CUDA")
        rows = {}
        for dtype in (torch.float32, torch.float16):
            with space_processor():
                captioner = Qwen2VLCaptioner(real_qwen, device="cpu")
            captioner.model.to(device=device, dtype=dtype)
            captioner.device, captioner.dtype = device, dtype
            peaks: list[float] = []
            hooks = [layer.register_forward_hook(
                lambda m, i, o: peaks.append(float((o[0] if isinstance(o, tuple) else o).abs().max())))
                for layer in captioner.model.model.language_model.layers]
            with t4_kernels():
                finite = bool(torch.isfinite(prefill_logits(captioner, test_images()[0])).all())
            for hook in hooks:
                hook.remove()
            texts = []
            with t4_kernels():
                for image in test_images():
                    try:
                        texts.append(captioner.write_description(image, CONTEXT, None).text[:30])
                    except CaptionerError as exc:
                        texts.append(f"CaptionerError({str(exc)[:40]})")
            rows[str(dtype)] = (max(peaks), finite, texts)
            del captioner
            gc.collect()
            torch.cuda.empty_cache()
        (peak32, _, texts32), (peak16, finite16, texts16) = rows["torch.float32"], rows["torch.float16"]
        garbage = [t for t in texts16 if not t.startswith("CaptionerError") and not any(c.isalnum() for c in t)]
        report("PASS" if not garbage else "FAIL", "qwen.real_weights_fp16",
               f"max |hidden| fp32 {peak32:.3g} / fp16 {peak16:.3g} (fp16 max 65504), fp16 logits finite={finite16}; "
               f"fp16 answers {texts16} (garbage must be a CaptionerError) vs fp32 {texts32}")
