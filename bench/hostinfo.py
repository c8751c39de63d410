"""The host facts every bench prints beside its figures: CPU model and the flags that pick our
kernels (AVX-512, VNNI, BF16, AMX), from /proc/cpuinfo."""

CPU_FLAGS = ["avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile"]


def cpu_info():
    model, flags = "unknown", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return {"model": model, "flags": {k: k in flags for k in CPU_FLAGS},
            "avx512": "avx512f" in flags}


def cpu_line(cpu):
    """'CPU: <model>, AVX-512 (avx2+ avx512f+ ... amx_tile-)'."""
    flags = " ".join(f"{k}{'+' if v else '-'}" for k, v in cpu["flags"].items())
    return f"CPU: {cpu['model']}, {'AVX-512' if cpu['avx512'] else 'no AVX-512'} ({flags})"
