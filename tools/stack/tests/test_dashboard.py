"""compose/grafana/dashboards/shop.json: valid JSON, on the provisioned data source, and every
metric it charts is one the services export (named in the Rust sources), so a renamed metric
cannot leave an empty panel behind."""

import json
import re
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "compose" / "grafana" / "dashboards" / "shop.json"
PROMQL_FUNCTIONS = {"sum", "by", "rate", "max", "histogram_quantile", "le", "status", "service", "route",
                    "group", "topic", "outcome", "downstream"}


def rust_sources() -> str:
    return "\n".join(p.read_text() for p in REPO.glob("**/src/**/*.rs") if "target" not in p.parts)


class DashboardTest(unittest.TestCase):
    def test_every_charted_metric_is_exported(self):
        dashboard = json.loads(DASHBOARD.read_text())
        sources = rust_sources()
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        self.assertGreaterEqual(len(exprs), 8)
        for expr in exprs:
            without_labels = re.sub(r"\{[^}]*\}", "", expr)
            names = set(re.findall(r"[a-z_][a-z0-9_]*", without_labels)) - PROMQL_FUNCTIONS
            for name in names:
                if re.fullmatch(r"\d+[smh]", name) or name in ("m",):
                    continue
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                self.assertTrue(f"\"{base}\"" in sources, f"{name} in {expr!r} is not exported by any service")

    def test_panels_use_the_provisioned_data_source(self):
        dashboard = json.loads(DASHBOARD.read_text())
        provisioned = (REPO / "compose" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
        for panel in dashboard["panels"]:
            uid = panel["datasource"]["uid"]
            self.assertIn(f"uid: {uid}", provisioned, panel["title"])


if __name__ == "__main__":
    unittest.main()
