"""The preflight names, or installs through apt, what the build and the local CA need."""

from __future__ import annotations

import subprocess
import unittest
from unittest import mock

from tools.stack import preflight


def need(program: str) -> preflight.Need:
    return next(n for n in preflight.TOOLCHAINS if n.program == program)


class TlsNeedsTest(unittest.TestCase):
    def test_openssl_headers_and_program_come_from_debian(self):
        self.assertEqual(need("libssl-dev").debian, ("libssl-dev", "pkg-config"))
        self.assertEqual(need("openssl").debian, ("openssl",))

    def test_openssl_headers_are_found_through_pkg_config(self):
        headers = need("libssl-dev")
        with mock.patch.object(preflight.shutil, "which", return_value=None):
            self.assertFalse(preflight.found(headers), "no pkg-config: nothing can be found")
        with mock.patch.object(preflight.shutil, "which", return_value="/usr/bin/pkg-config"), \
                mock.patch.object(preflight.subprocess, "run",
                                  return_value=subprocess.CompletedProcess([], 1)) as run:
            self.assertFalse(preflight.found(headers))
            self.assertEqual(run.call_args.args[0], ["pkg-config", "--exists", "openssl"])
        with mock.patch.object(preflight.shutil, "which", return_value="/usr/bin/pkg-config"), \
                mock.patch.object(preflight.subprocess, "run", return_value=subprocess.CompletedProcess([], 0)):
            self.assertTrue(preflight.found(headers))


if __name__ == "__main__":
    unittest.main()
