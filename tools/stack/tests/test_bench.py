"""The benchmark's warm-up rule: repeat while the JVMs still compile (tools/stack/bench.py)."""

import unittest

from tools.stack import bench


def run(**jvms: tuple[float, float | None]) -> dict:
    """A run's `processes` with components NAME=(cpu_ms, jit_cpu_ms)."""
    return {"processes": {"components": {name: {"cpu_ms": cpu, "jit_cpu_ms": jit}
                                         for name, (cpu, jit) in jvms.items()}}}


class JitShareTest(unittest.TestCase):
    def test_the_share_is_over_the_jvms_cpu_only(self):
        r = run(kafka=(4000.0, 1000.0), zipkin=(1000.0, 0.0), postgres=(9000.0, None))
        self.assertAlmostEqual(bench.jit_share(r), 0.2)

    def test_no_jvm_measured_says_nothing(self):
        self.assertIsNone(bench.jit_share(run(postgres=(9000.0, None))))
        self.assertIsNone(bench.jit_share({}))
        self.assertIsNone(bench.jit_share(run(kafka=(0.0, 0.0))))


class WarmEnoughTest(unittest.TestCase):
    def test_rounds_go_on_while_the_jvms_compile(self):
        self.assertFalse(bench.warm_enough([0.25]))
        self.assertFalse(bench.warm_enough([0.25, 0.12]))
        self.assertTrue(bench.warm_enough([0.25, 0.12, bench.JIT_QUIET]))

    def test_rounds_are_bounded(self):
        self.assertTrue(bench.warm_enough([0.3] * bench.WARMUP_ROUNDS))
        self.assertFalse(bench.warm_enough([0.3] * (bench.WARMUP_ROUNDS - 1)))

    def test_without_a_jvm_one_round_is_enough(self):
        self.assertTrue(bench.warm_enough([None]))


if __name__ == "__main__":
    unittest.main()
