"""How scripts/bench_memory.py measures a step's memory on CPU: resident set size, its peak since a reset, and the
bytes autograd saves for the backward pass."""

from __future__ import annotations

import os


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak RSS since :meth:`reset`: the kernel's VmHWM (reset via clear_refs), or a 1 ms sampler thread."""

    def __init__(self):
        self.sampled: list[int] | None = None
        self._stop = None

    def reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self._start_sampler()

    def _start_sampler(self) -> None:
        import threading

        self.sampled, self._stop = [rss_bytes()], threading.Event()

        def sample():
            while not self._stop.wait(0.001):
                self.sampled[0] = max(self.sampled[0], rss_bytes())

        threading.Thread(target=sample, daemon=True).start()

    def peak(self) -> int:
        if self.sampled is not None:
            self._stop.set()
            return max(self.sampled[0], rss_bytes())
        with open("/proc/self/status") as f:
            hwm = next(line for line in f if line.startswith("VmHWM:"))
        return int(hwm.split()[1]) * 1024


def release_free_memory() -> None:
    """Collect garbage and hand glibc's free heap back, so RSS is what is in use."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class SavedTensorMeter:
    """Peak bytes that autograd keeps for the backward pass (activations; parameters excluded)."""

    def __init__(self, params, vocab: int):
        self.param_storages = {p.untyped_storage().data_ptr() for p in params}
        self.vocab = vocab
        self.refs: dict[int, int] = {}
        self.live = self.live_logits = 0
        self.peak = self.peak_logits = 0

    def hooks(self):
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor):
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse, nested or other storage-less tensors
            return tensor
        ptr = storage.data_ptr()
        if ptr in self.param_storages or tensor.device.type == "meta" or storage.nbytes() == 0:
            return tensor
        is_logits = tensor.dim() > 0 and tensor.shape[-1] == self.vocab
        if self.refs.get(ptr, 0) == 0:
            self.live += storage.nbytes()
            self.live_logits += storage.nbytes() if is_logits else 0
            if self.live > self.peak:
                self.peak, self.peak_logits = self.live, self.live_logits
        self.refs[ptr] = self.refs.get(ptr, 0) + 1
        return _Saved(self, tensor, ptr, storage.nbytes(), is_logits)

    @staticmethod
    def _unpack(saved):
        return saved.tensor if isinstance(saved, _Saved) else saved

    def release(self, ptr: int, nbytes: int, is_logits: bool) -> None:
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            del self.refs[ptr]
            self.live -= nbytes
            self.live_logits -= nbytes if is_logits else 0


class _Saved:
    """A saved tensor; its meter forgets it when autograd frees the graph that held it."""

    __slots__ = ("meter", "tensor", "ptr", "nbytes", "is_logits")

    def __init__(self, meter, tensor, ptr, nbytes, is_logits):
        self.meter, self.tensor, self.ptr, self.nbytes, self.is_logits = meter, tensor, ptr, nbytes, is_logits

    def __del__(self):
        self.meter.release(self.ptr, self.nbytes, self.is_logits)
