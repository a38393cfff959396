"""The compose checker finds what would break deploy/compose.yaml, and nothing in it as it is.

Each case spoils one thing in a copy of the real file and expects the checker to name it.
Run: python3 tests/container/check_compose_test.py
"""

import copy
import importlib.util
import unittest
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("check_compose", ROOT / "scripts/check-compose.py")
check_compose = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_compose)

COMPOSE = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
SETTINGS = check_compose.load_settings()
PORT = check_compose.image_listen_port()


def problems_after(spoil):
    compose = copy.deepcopy(COMPOSE)
    # The collectors share their settings through a YAML anchor, so that they are one
    # object after parsing; a copy per service lets a case spoil one collector alone.
    compose["services"] = {name: copy.deepcopy(s) for name, s in compose["services"].items()}
    spoil(compose)
    return check_compose.problems(compose, SETTINGS, PORT)


def collectors(compose):
    return [s for s in compose["services"].values() if "ebb-collector" in s["image"]]


class CheckComposeTest(unittest.TestCase):
    def assert_named(self, spoil, expected):
        found = problems_after(spoil)
        self.assertTrue(
            any(expected in problem for problem in found),
            f"expected a problem naming {expected!r}, got {found}",
        )

    def test_the_real_file_is_coherent(self):
        self.assertEqual(check_compose.problems(COMPOSE, SETTINGS, PORT), [])

    def test_settings_come_from_the_collectors_source(self):
        for setting in ("EBB_LISTEN", "EBB_DATABASE_URL", "EBB_ADMIN_TOKEN", "EBB_LOG"):
            self.assertIn(setting, SETTINGS)
        self.assertEqual(PORT, 8080)

    def test_an_unknown_setting_is_named(self):
        def spoil(compose):
            collectors(compose)[0]["environment"]["EBB_DATABASE"] = "postgres://x"

        self.assert_named(spoil, "EBB_DATABASE is not a setting")

    def test_a_database_host_that_is_no_service_is_named(self):
        def spoil(compose):
            for collector in collectors(compose):
                collector["environment"]["EBB_DATABASE_URL"] = "postgres://ebb:ebb@db/ebb"

        self.assert_named(spoil, "names host 'db'")

    def test_a_password_that_differs_from_the_databases_is_named(self):
        def spoil(compose):
            for collector in collectors(compose):
                collector["environment"]["EBB_DATABASE_URL"] = (
                    "postgres://ebb:other@postgres:5432/ebb"
                )

        self.assert_named(spoil, "password is not POSTGRES_PASSWORD")

    def test_collectors_on_sqlite_are_refused(self):
        def spoil(compose):
            for collector in collectors(compose):
                collector["environment"].pop("EBB_DATABASE_URL")

        self.assert_named(spoil, "no EBB_DATABASE_URL")

    def test_collectors_with_different_admin_tokens_are_named(self):
        self.assert_named(
            lambda c: collectors(c)[1]["environment"].update(EBB_ADMIN_TOKEN="another"),
            "do not share one EBB_ADMIN_TOKEN",
        )

    def test_a_dependency_on_a_missing_service_is_named(self):
        def spoil(compose):
            collectors(compose)[0]["depends_on"] = {"postgress": {"condition": "service_healthy"}}

        self.assert_named(spoil, "'postgress', which is no service")

    def test_not_waiting_for_a_healthy_database_is_named(self):
        self.assert_named(
            lambda c: collectors(c)[0].update(depends_on=["postgres"]),
            "service_healthy",
        )

    def test_a_dependency_cycle_is_named(self):
        self.assert_named(
            lambda c: c["services"]["postgres"].update(depends_on=["collector-1"]),
            "cycle",
        )

    def test_a_host_port_published_twice_is_named(self):
        self.assert_named(
            lambda c: collectors(c)[1].update(ports=collectors(c)[0]["ports"]),
            "already published",
        )

    def test_publishing_a_port_the_collector_does_not_listen_on_is_named(self):
        self.assert_named(
            lambda c: collectors(c)[0].update(ports=["127.0.0.1:8081:9090"]),
            "listens on 8080",
        )

    def test_listening_on_loopback_inside_the_container_is_named(self):
        self.assert_named(
            lambda c: collectors(c)[0]["environment"].update(EBB_LISTEN="127.0.0.1:8080"),
            "cannot be reached from outside",
        )

    def test_an_undeclared_volume_is_named(self):
        self.assert_named(lambda c: c.pop("volumes"), "is not declared")

    def test_a_database_without_healthcheck_or_volume_is_named(self):
        self.assert_named(lambda c: c["services"]["postgres"].pop("healthcheck"), "healthcheck")
        self.assert_named(lambda c: c["services"]["postgres"].pop("volumes"), "no volume")

    def test_a_service_without_image_is_named(self):
        self.assert_named(lambda c: collectors(c)[0].pop("image"), "no image")

    def test_a_misspelt_key_is_named(self):
        self.assert_named(
            lambda c: c["services"]["postgres"].update(enviroment={}), "unknown key"
        )

    def test_a_malformed_variable_reference_is_named(self):
        self.assert_named(
            lambda c: collectors(c)[0]["environment"].update(EBB_WRITE_KEY="${EBB_WRITE_KEY"),
            "malformed variable reference",
        )


if __name__ == "__main__":
    unittest.main(verbosity=1)
