"""Seeded sampling on vLLM's CPU backend.

When vLLM discards the token sampled for a partially prefilled request, it
rewinds that request's generator with `set_offset(get_offset() - 4)`: CUDA's
Philox generator counts draws, CPU's Mersenne Twister has no offset, and the
call killed the engine. Here CPU generators get the same "undo this step's
draws" through a state snapshot taken before each step samples.
"""

import torch


class RewindableCPUGenerator(torch.Generator):
    """A CPU generator whose offset rewind restores the state at the step start."""

    _STEP_OFFSET = 4  # any value: vLLM only ever rewinds relative to it

    @classmethod
    def replacing(cls, generator: torch.Generator) -> "RewindableCPUGenerator":
        new = cls(device="cpu")
        new.set_state(generator.get_state())
        new.mark_step()
        return new

    def mark_step(self) -> None:
        self._step_state = self.get_state()

    def get_offset(self) -> int:
        return self._STEP_OFFSET

    def set_offset(self, offset: int) -> None:
        self.set_state(self._step_state)


def patch_cpu_model_runner() -> None:
    """Wrap the CPU runner's per-step state update; idempotent."""
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    original = CPUModelRunner._update_states
    if getattr(original, "_rewindable_generators", False):
        return

    def _update_states(self, scheduler_output):
        result = original(self, scheduler_output)
        generators = self.input_batch.generators
        for request in self.requests.values():
            old = request.generator
            if old is not None and not isinstance(old, RewindableCPUGenerator):
                request.generator = RewindableCPUGenerator.replacing(old)
                for index, generator in generators.items():
                    if generator is old:
                        generators[index] = request.generator
        for generator in generators.values():
            if isinstance(generator, RewindableCPUGenerator):
                generator.mark_step()
        return result

    _update_states._rewindable_generators = True
    CPUModelRunner._update_states = _update_states
