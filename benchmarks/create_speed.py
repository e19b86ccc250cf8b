"""Create on a CPU: one image's time with random weights of the real model sizes, the safety check's cost, peak
memory, and other visitors' text-search latency while a creation runs vs idle. GPU: estimated from FLOPs.

The generator is LCM_Dreamshaper_v7's architecture with random weights: the SD-1.5 UNet (860 M parameters, with
the latent-consistency guidance embedding), the CLIP ViT-L/14 text encoder, and either TAESD (AutoencoderTiny's
default configuration, the CPU default) or the SD autoencoder; the SD safety checker is a CLIP ViT-L/14 vision
tower. Each creation goes through ``rag.create.Creator`` (search, fusion prompt, image to image from the best
reference at strength 0.55, safety check), over a 2 000-row synthetic collection searched with a random ViT-B/32.
Weights are random, so the images are noise: only time and memory are measured. Times are wall seconds and this
process's CPU seconds (on a machine other jobs load, CPU seconds with one thread approximate the unloaded wall
time of one core: the load average is recorded with the result). The GPU figures are estimates: counted FLOPs
of a 512 px creation divided by a stated fraction of an A10G's tensor-core peak, not measurements.
Usage: python -m benchmarks.create_speed [--size 256] [--calls 3] [--steps 4] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from benchmarks.common import add_threads_option, apply_threads, clip_dim, clustered_vectors, report, smoke, speed_clip
from benchmarks.synthetic import write_synthetic_collection

from rag.config import Settings
from rag.create import CreateOptions, Creator, Generator
from rag.create import creator as creator_module
from rag.startup import open_pipeline

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
                 block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, time_cond_proj_dim=256,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
TEXT_L14 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                vocab_size=49408, max_position_embeddings=77, projection_dim=768)
VISION_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=224, patch_size=14)
A10G_TENSOR_TFLOPS = 125.0  # NVIDIA A10 datasheet, dense FP16/BF16 tensor cores (the A10G is the AWS variant)
GPU_UTILISATION = 0.3  # assumed share of that peak a diffusers UNet reaches: an assumption, stated with the result


def random_module(factory, *args, scale: float = 0.02, **kwargs):
    """A module built on the meta device, then given random normal weights on the CPU (much faster than init)."""
    with torch.device("meta"):
        module = factory(*args, **kwargs)
    module = module.to_empty(device="cpu")
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, scale)
        for buffer_name, buffer in module.named_buffers():
            if "position_ids" in buffer_name:
                buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))
    return module.eval()


def random_pipeline(vae: str, quick: bool):
    """A LatentConsistencyModelPipeline of LCM_Dreamshaper_v7's sizes (quick: the tiny test sizes) with random
    weights; ``vae`` is "taesd" or "sd"."""
    from diffusers import AutoencoderKL, AutoencoderTiny, LatentConsistencyModelPipeline, LCMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    from testkit.tiny_diffusion import _tokenizer

    tokenizer = _tokenizer()
    unet_config = SD15_UNET if not quick else dict(SD15_UNET, block_out_channels=(32, 64, 64, 64), attention_head_dim=2,
                                                   cross_attention_dim=64, time_cond_proj_dim=32, norm_num_groups=8)
    text = TEXT_L14 if not quick else dict(TEXT_L14, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                           num_attention_heads=2)
    vision = VISION_L14 if not quick else dict(VISION_L14, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                               num_attention_heads=2)
    text_encoder = random_module(CLIPTextModel, CLIPTextConfig(**text, bos_token_id=tokenizer.bos_token_id,
                                                               eos_token_id=tokenizer.eos_token_id))
    unet = random_module(UNet2DConditionModel, **unet_config)
    autoencoder = random_module(AutoencoderTiny) if vae == "taesd" else random_module(AutoencoderKL, **SD_VAE)
    checker = random_module(StableDiffusionSafetyChecker, CLIPConfig(text_config=dict(text), vision_config=vision,
                                                                      projection_dim=text["projection_dim"]))
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(2.0)  # never flags: a cosine is at most 1
        checker.special_care_embeds_weights.fill_(2.0)
    extractor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return LatentConsistencyModelPipeline(vae=autoencoder, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                          scheduler=LCMScheduler(), safety_checker=checker, feature_extractor=extractor,
                                          requires_safety_checker=True)


def creator_for(pipe, size: int) -> Creator:
    options = CreateOptions(model="random weights (LCM_Dreamshaper_v7 sizes)", size=size)
    generator = Generator(options)
    generator.adopt(pipe)
    return Creator(options, ["split"], generator=generator)


def cpu_seconds() -> float:
    """CPU time of every thread of this process (the niced creation thread included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_creations(creator: Creator, pipeline, calls: int, steps: int, name: str, text_only: bool = False) -> dict:
    """p50 wall / CPU seconds of ``calls`` creations after one untimed warm-up, and the safety check's share."""
    walls, cpus, safety = [], [], []
    for call in range(calls + 1):
        wall, cpu = time.perf_counter(), cpu_seconds()
        creation = creator.create(pipeline, f"synthetic image {call}", k=3, steps=steps, seed=call,
                                  use_context=not text_only)
        if call:
            walls.append(time.perf_counter() - wall)
            cpus.append(cpu_seconds() - cpu)
            safety.append(creation.safety.seconds)
    return {"variant": name, "calls": calls, "p50_wall_s": float(np.median(walls)), "p50_cpu_s": float(np.median(cpus)),
            "safety_p50_s": float(np.median(safety)), "init": creation.init or "none (text to image)"}


def search_contention(creator: Creator, pipeline, steps: int, queries: int, nice: int) -> dict:
    """Text-search p50 idle, then while one creation runs (its thread at ``nice``), distinct queries each time."""
    def search_times(prefix: str, until=None) -> list[float]:
        out = []
        for i in range(10_000):
            if (until is None and i >= queries) or (until is not None and not until.is_alive()):
                break
            started = time.perf_counter()
            pipeline.search_text(f"{prefix} query number {i}", k=10)
            out.append(time.perf_counter() - started)
        return out

    idle = search_times(f"idle {nice}")
    stepping = threading.Event()
    saved, creator_module.CREATE_NICE = creator_module.CREATE_NICE, nice
    try:
        worker = threading.Thread(target=creator.create, args=(pipeline, "synthetic image 1"),
                                  kwargs={"steps": steps, "on_step": lambda done, total: stepping.set()})
        started = time.perf_counter()
        worker.start()
        stepping.wait(timeout=600)  # measure while the UNet steps run (the creation's heavy part)
        during = search_times(f"during {nice}", until=worker)
        worker.join()
        creation = time.perf_counter() - started
    finally:
        creator_module.CREATE_NICE = saved
    row = {"variant": f"text search, creation thread at nice {nice}", "idle_p50_ms": 1e3 * float(np.median(idle)),
           "searches_during": len(during), "creation_wall_s": creation}
    if during:
        row.update(during_p50_ms=1e3 * float(np.median(during)), ratio=float(np.median(during) / np.median(idle)))
    return row


def concept_check_cost(pipeline, size: int, calls: int) -> dict:
    """The fallback safety check (CLIP concepts with the collection's encoder) on one image, p50."""
    from PIL import Image

    from rag.create.safety import ClipConceptCheck

    check = ClipConceptCheck(pipeline.encoder)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))
    seconds = [check.check(image).seconds for _ in range(calls + 1)][1:]
    return {"variant": "safety fallback: CLIP concept check, collection's ViT-B/32", "safety_p50_s": float(np.median(seconds))}


def gpu_estimate(quick: bool) -> dict:
    """FLOPs of one 512 px creation (4 LCM steps, SD autoencoder encode + decode, text encoder), counted on the
    meta device, over an assumed share of an A10G's tensor-core peak: an estimate, not a measurement."""
    from torch.utils.flop_counter import FlopCounterMode
    from diffusers import AutoencoderKL, UNet2DConditionModel

    side = 64 if quick else 512
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD_VAE)
        latents = torch.empty(1, 4, side // 8, side // 8)
        with FlopCounterMode(display=False) as counter:
            unet(latents, torch.tensor([500]), torch.empty(1, 77, 768), timestep_cond=torch.empty(1, 256))
        unet_flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            vae.decode(latents)
            vae.encode(torch.empty(1, 3, side, side))
        vae_flops = counter.get_total_flops()
    total = 4 * unet_flops + vae_flops
    seconds = total / (A10G_TENSOR_TFLOPS * 1e12 * GPU_UTILISATION)
    return {"variant": f"A10G estimate, {side} px, 4 steps, SD autoencoder (FLOPs / {GPU_UTILISATION:.0%} of "
                       f"{A10G_TENSOR_TFLOPS:g} TFLOPS)", "unet_gflop_per_step": unet_flops / 1e9,
            "vae_gflop": vae_flops / 1e9, "estimated_s": seconds}


def measure(args: argparse.Namespace, work: Path) -> tuple[list[dict], dict]:
    """Every row of the table (CPU creations, search during a creation, the GPU estimate) and the extras."""
    clip = speed_clip(work / "vit-b32")
    collection = write_synthetic_collection(work / "synthetic", clustered_vectors(2000, clip_dim(clip)), clip)
    pipeline = open_pipeline(Settings(cache_dir=work / "cache", quantize="none"), collection_dir=collection,
                             with_captioner=False)
    size = 64 if args.quick else args.size
    pipe = random_pipeline("taesd", args.quick)
    creator = creator_for(pipe, size)
    rows = [time_creations(creator, pipeline, args.calls, args.steps,
                           f"LCM UNet + TAESD, {size} px, {args.steps} steps, image to image (CPU default)"),
            time_creations(creator, pipeline, 1, args.steps,
                           f"LCM UNet + TAESD, {size} px, {args.steps} steps, text to image (base)", text_only=True)]
    rows += [search_contention(creator, pipeline, args.steps, args.queries, nice) for nice in (10, 0)]
    if not args.skip_sd_vae:
        from diffusers import AutoencoderKL

        sd_vae = random_module(AutoencoderKL, **SD_VAE)
        creator.generator.text2img.vae = creator.generator.img2img.vae = sd_vae
        rows.append(time_creations(creator, pipeline, 1, args.steps,
                                   f"LCM UNet + SD autoencoder, {size} px, {args.steps} steps, image to image"))
    rows.append(concept_check_cost(pipeline, size, args.calls))
    rows.append(gpu_estimate(args.quick))
    extra = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "size": size,
             "steps": args.steps, "strength": 0.55, "threads": torch.get_num_threads(),
             "unet_parameters_m": sum(p.numel() for p in pipe.unet.parameters()) / 1e6,
             "gpu_assumptions": {"a10g_tensor_tflops": A10G_TENSOR_TFLOPS, "utilisation": GPU_UTILISATION}}
    return rows, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256, the CPU default)")
    parser.add_argument("--calls", type=int, default=3, help="timed creations of the default path (after a warm-up)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    parser.add_argument("--queries", type=int, default=20, help="idle searches timed for the contention rows")
    parser.add_argument("--skip-sd-vae", action="store_true", help="do not time the SD autoencoder variant")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs (smoke run)")
    add_threads_option(parser)
    args = parser.parse_args()
    args.quick = args.quick or smoke()
    apply_threads(args)
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory(prefix="create-speed-") as tmp:
        rows, extra = measure(args, Path(tmp))
    columns = ["variant", "p50_wall_s", "p50_cpu_s", "safety_p50_s", "idle_p50_ms", "during_p50_ms", "ratio",
               "estimated_s"]
    report("create_speed", "Create: one image on the CPU, searches during a creation, GPU estimate", rows, columns,
           extra)


if __name__ == "__main__":
    main()
