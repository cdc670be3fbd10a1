"""The schemathesis step's command line, offline."""

import unittest
from pathlib import Path

from tools.stack import apifuzz
from tools.stack.components.base import Context


class ApiFuzzCommandTest(unittest.TestCase):
    def test_runs_the_gateways_spec_with_a_token_and_bounds(self):
        ctx = Context(repo=Path("/repo"), data=Path("/data"), cache=Path("/cache"))
        argv = apifuzz.command(ctx, "http://127.0.0.1:8080", "TOKEN", Path("/data/schemathesis"),
                               Path("/data/schemathesis.toml"))
        self.assertEqual(argv[:5], ["/cache/schemathesis-venv/bin/schemathesis", "--config-file",
                                    "/data/schemathesis.toml", "run", "http://127.0.0.1:8080/api/openapi.json"])
        self.assertIn("Authorization: Bearer TOKEN", argv)
        checks = argv[argv.index("--checks") + 1].split(",")
        self.assertIn("not_a_server_error", checks)
        self.assertIn("response_schema_conformance", checks)
        self.assertEqual(argv[argv.index("--max-examples") + 1], str(apifuzz.MAX_EXAMPLES))
        self.assertEqual(argv[argv.index("--max-time") + 1], str(apifuzz.MAX_SECONDS))


    def test_a_shedding_503_is_expected_and_other_server_errors_are_not(self):
        self.assertIn('"503"', apifuzz.CONFIG)
        self.assertNotIn('"5xx"', apifuzz.CONFIG)


if __name__ == "__main__":
    unittest.main()
