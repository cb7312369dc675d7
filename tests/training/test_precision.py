"""runtime.precision: auto resolves by the device's native bf16 support (the CPU probe mocked both ways);
an explicit bf16 request on a CPU without it warns, once."""

from __future__ import annotations

import warnings

import pytest

from recsys.config import load_config
from recsys.training import precision

AVX512_BF16_CPU = frozenset({"fpu", "avx2", "avx512f", "avx512_bf16"})
AMX_CPU = frozenset({"avx2", "avx512f", "amx_tile", "amx_bf16"})
AVX2_CPU = frozenset({"fpu", "sse4_2", "avx2", "fma"})


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The CPU side of the probe is replaced per test; the warning latch starts cleared."""
    monkeypatch.setattr(precision, "_warned", set())
    return monkeypatch


def _runtime(value: str = "auto"):  # type: ignore[no-untyped-def]
    return load_config(None, ["runtime.accelerator=cpu", f"runtime.precision={value}"]).runtime


@pytest.mark.parametrize(("flags", "expected"), [(AVX512_BF16_CPU, "bf16-mixed"), (AMX_CPU, "bf16-mixed")])
def test_auto_is_bf16_on_a_cpu_with_native_bf16(
    cpu: pytest.MonkeyPatch, flags: frozenset[str], expected: str
) -> None:
    cpu.setattr(precision, "cpu_flags", lambda: flags)
    assert precision.resolve_precision(_runtime()) == expected


def test_auto_is_fp32_on_a_cpu_without_native_bf16(cpu: pytest.MonkeyPatch) -> None:
    cpu.setattr(precision, "cpu_flags", lambda: AVX2_CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns: it just picks what is fast
        assert precision.resolve_precision(_runtime()) == "32"


def test_auto_on_a_cuda_device_follows_the_gpu(cpu: pytest.MonkeyPatch) -> None:
    cpu.setattr(precision, "cpu_flags", lambda: AVX512_BF16_CPU)
    cpu.setattr(precision.torch.cuda, "is_available", lambda: True)
    gpu = load_config(None, ["runtime.accelerator=gpu"]).runtime
    cpu.setattr(precision.torch.cuda, "is_bf16_supported", lambda: False)
    assert precision.resolve_precision(gpu) == "32"  # an old GPU: fp32 even on a bf16 CPU
    cpu.setattr(precision.torch.cuda, "is_bf16_supported", lambda: True)
    assert precision.resolve_precision(gpu) == "bf16-mixed"


def test_explicit_bf16_on_a_cpu_without_it_warns_once(cpu: pytest.MonkeyPatch) -> None:
    cpu.setattr(precision, "cpu_flags", lambda: AVX2_CPU)
    with pytest.warns(UserWarning, match=r"without native bf16.*100x slower"):
        assert precision.resolve_precision(_runtime("bf16-mixed")) == "bf16-mixed"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve_precision(_runtime("bf16-mixed")) == "bf16-mixed"  # not twice


def test_explicit_values_pass_through_silently_where_they_are_native(cpu: pytest.MonkeyPatch) -> None:
    cpu.setattr(precision, "cpu_flags", lambda: AVX512_BF16_CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve_precision(_runtime("bf16-mixed")) == "bf16-mixed"
        assert precision.resolve_precision(_runtime("32")) == "32"


def test_the_real_probe_reads_this_machine() -> None:
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    assert precision.native_bf16("cpu") == bool(precision.BF16_CPU_FLAGS & flags)
    assert precision.native_bf16("mps") is False
