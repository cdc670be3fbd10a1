"""The benchmark's CPU profile: samples put to components and kinds of code (tools/stack/profile.py)."""

import os
import shutil
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from tools.stack import profile

# `perf script -F comm,pid,tid,time,ip,sym,dso` lines as perf prints them.
LINES = [
    "  tokio-rt-worker  1337/1340  100.10:  558f51a4d025 _int_malloc (/usr/lib/x86_64-linux-gnu/libc.so.6)",
    "  tokio-rt-worker  1337/1341  100.20:  558f51a4d025 saga_orchestrator::Orchestrator::handle_many "
    "(/srv/target/release/saga-orchestrator)",
    "  tokio-rt-worker  1337/1341  100.30:  ffffffff8100 finish_task_switch.isra.0 ([kernel.kallsyms])",
    "  tokio-rt-worker  1409/1410  100.40:  7f00000000 _mi_page_malloc_zero (/srv/target/release/projectors)",
    "  tokio-rt-worker  1409/1410  100.50:  7f00000001 bson::ser::write_cstring "
    "(/srv/target/release/projectors)",
    "         postgres  1605/1605  100.60:  55d0000000 hash_search_with_hash_value "
    "(/usr/lib/postgresql/15/bin/postgres)",
    "  data-plane-kafk   811/1170  100.70:  7f5c1d11ab85 [unknown] (/tmp/perf-811.map)",
    "  C2 CompilerThre   811/821   100.80:  7f5c3309acb6 PhaseLive::compute (/usr/lib/jvm/lib/server/libjvm.so)",
    "          swapper     0/0     100.90:  ffffffff8200 pv_native_safe_halt ([kernel.kallsyms])",
    "          python3  3849/3849  101.00:  7f0000000000 _PyEval_EvalFrameDefault (/usr/lib/libpython3.11.so.1.0)",
    "  tokio-rt-worker  1337/1340  250.00:  558f51a4d025 malloc (/usr/lib/x86_64-linux-gnu/libc.so.6)",
    "not a sample line",
]
COMPONENTS = {1337: "saga-orchestrator", 1409: "projectors", 865: "postgres", 811: "kafka"}
# Backend 1605 is a child of the postmaster 865.
PARENTS = {1605: 865, 865: 1, 1337: 1, 1409: 1, 811: 1, 3849: 1}


class KindTest(unittest.TestCase):
    def test_kinds_of_code(self):
        self.assertEqual(profile.kind_of("finish_task_switch.isra.0", "[kernel.kallsyms]"), "kernel")
        self.assertEqual(profile.kind_of("_int_malloc", "/usr/lib/x86_64-linux-gnu/libc.so.6"), "allocator")
        self.assertEqual(profile.kind_of("cfree@GLIBC_2.2.5", "/usr/lib/x86_64-linux-gnu/libc.so.6"), "allocator")
        self.assertEqual(profile.kind_of("mi_free", "/srv/target/release/projectors"), "allocator")
        self.assertEqual(profile.kind_of("unlink_chunk.constprop.0", "/lib/libc.so.6"), "allocator")
        self.assertEqual(profile.kind_of("__memmove_avx_unaligned_erms", "/lib/libc.so.6"), "libc")
        self.assertEqual(profile.kind_of("freeaddrinfo", "/lib/libc.so.6"), "libc", "not free()")
        self.assertEqual(profile.kind_of("[unknown]", "/tmp/perf-811.map"), "JIT")
        self.assertEqual(profile.kind_of("PhaseLive::compute", "/usr/lib/jvm/lib/server/libjvm.so"), "JVM")
        self.assertEqual(profile.kind_of("handle_many", "/srv/target/release/saga-orchestrator"),
                         "saga-orchestrator")
        # A program's own function named like an allocator's is still its own code.
        self.assertEqual(profile.kind_of("malloc_trim_thread", "/srv/target/release/gateway"), "gateway")


class ComponentTest(unittest.TestCase):
    def test_a_process_belongs_to_the_component_of_its_nearest_ancestor(self):
        self.assertEqual(profile.component_of(1605, COMPONENTS, PARENTS), "postgres")
        self.assertEqual(profile.component_of(1337, COMPONENTS, PARENTS), "saga-orchestrator")
        self.assertIsNone(profile.component_of(3849, COMPONENTS, PARENTS))
        self.assertIsNone(profile.component_of(4242, COMPONENTS, PARENTS), "a process gone before the look")
        self.assertIsNone(profile.component_of(7, COMPONENTS, {7: 8, 8: 7}), "a loop ends")


class SummaryTest(unittest.TestCase):
    def test_samples_are_counted_by_component_and_kind_within_the_window(self):
        p = profile.summarize(LINES, COMPONENTS, PARENTS, window=(100.0, 200.0))
        self.assertEqual(p["samples"], 10, "the line after the window and the non-sample are left out")
        c = p["components"]
        self.assertEqual(c["saga-orchestrator"]["share"], 0.3)
        self.assertEqual(c["saga-orchestrator"]["by_kind"],
                         {"allocator": 0.3333, "saga-orchestrator": 0.3333, "kernel": 0.3333})
        self.assertEqual(c["projectors"]["by_kind"], {"allocator": 0.5, "projectors": 0.5})
        self.assertEqual(c["postgres"]["top"], [["hash_search_with_hash_value", 1.0]])
        self.assertEqual(c["kafka"]["by_kind"], {"JIT": 0.5, "JVM": 0.5})
        self.assertEqual(c["idle"]["share"], 0.1)
        self.assertEqual(c["other: python3"]["share"], 0.1)
        self.assertEqual(list(c)[0], "saga-orchestrator", "the busiest first")

    def test_without_a_window_every_sample_counts(self):
        p = profile.summarize(LINES, COMPONENTS, PARENTS)
        self.assertEqual(p["samples"], 11)
        self.assertEqual(p["components"]["saga-orchestrator"]["top"][0], ["_int_malloc", 0.25])

    def test_the_console_lines_name_each_component_or_why_there_is_no_profile(self):
        lines = profile.summary_lines(profile.summarize(LINES, COMPONENTS, PARENTS))
        self.assertIn("11 samples", lines[0])
        self.assertTrue(any("saga-orchestrator" in line and "allocator" in line for line in lines[1:]))
        self.assertEqual(profile.summary_lines({"note": "perf not found"}), ["profile: perf not found"])


# A Java program that runs one method hot until it is killed.
SPIN = """public class Spin {
    public static void main(String[] args) { long x = 0; while (true) { x = step(x); } }
    static long step(long v) { return (v * 31 + 7) ^ (v >>> 3); }
}
"""


class JitMapTest(unittest.TestCase):
    def test_a_process_that_is_no_jvm_writes_no_map(self):
        self.assertIsNone(profile.jcmd_of(os.getpid()))
        self.assertIsNone(profile.write_jit_map(os.getpid()))
        self.assertIsNone(profile.write_jit_map(2 ** 22 + 1))  # above any pid Linux hands out

    @unittest.skipIf(shutil.which("java") is None or profile.jcmd_beside(Path(shutil.which("java")).resolve()) is None,
                     "no java, or a runtime without jcmd")
    def test_a_jvm_writes_the_map_of_its_compiled_code_where_perf_looks(self):
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "Spin.java"
            source.write_text(SPIN)
            jvm = subprocess.Popen(["java", "-Xmx32m", "-XX:+UseSerialGC", str(source)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                self.assertIsNotNone(profile.jcmd_of(jvm.pid))
                # The source launcher compiles first; `step` is compiled once it has run hot.
                deadline, written = time.monotonic() + 60, None
                while time.monotonic() < deadline:
                    written = profile.write_jit_map(jvm.pid)
                    if written is not None and "Spin.step(long)" in written.read_text():
                        break
                    time.sleep(1)
                self.assertEqual(written, Path(f"/tmp/perf-{jvm.pid}.map"))
                self.assertIn("Spin.step(long)", written.read_text())
            finally:
                jvm.kill()
                jvm.wait()
                Path(f"/tmp/perf-{jvm.pid}.map").unlink(missing_ok=True)


if __name__ == "__main__":
    unittest.main()
