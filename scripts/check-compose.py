#!/usr/bin/env python3
"""Checks deploy/compose.yaml without running it.

No image can be pulled on the machines that test Ebb, so the compose file is checked
statically: it parses; every EBB_* variable it sets is a setting the collector really reads
(taken from the collector's source, not from a list kept here); every service has an image;
the collectors reach the PostgreSQL service they wait for, share one database, write key
and admin token, and publish the port they listen on; no host port is published twice;
depends_on names services that exist, without cycles; named volumes are declared.

Usage: scripts/check-compose.py [COMPOSE_FILE]   (default: deploy/compose.yaml)
Exits 0 when the file is coherent, 1 with one line per problem otherwise.
"""

import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent

# Where the collector declares its settings: clap's `env = "EBB_…"` attributes, and the
# variables read directly (the log filter, read before the settings are parsed).
SETTINGS_SOURCES = [
    (ROOT / "collector/src/config.rs", re.compile(r'\benv\s*=\s*"(EBB_[A-Z0-9_]+)"')),
    (ROOT / "collector/src/main.rs", re.compile(r'_env\(\s*"(EBB_[A-Z0-9_]+)"\s*\)')),
]

TOP_LEVEL_KEYS = {"name", "services", "volumes", "networks", "configs", "secrets"}

# The service keys of the Compose specification that a deployment like this one may use;
# anything else is most likely a typo that Compose would reject or ignore.
SERVICE_KEYS = {
    "cap_add", "cap_drop", "command", "configs", "container_name", "cpus", "depends_on",
    "deploy", "entrypoint", "env_file", "environment", "expose", "extra_hosts",
    "healthcheck", "hostname", "image", "init", "labels", "logging", "mem_limit",
    "networks", "ports", "profiles", "pull_policy", "read_only", "restart", "secrets",
    "security_opt", "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "ulimits",
    "user", "volumes", "working_dir",
}

# `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`, `${NAME?error}`,
# `$NAME` and `$$` (a literal dollar sign).
REFERENCE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?])(?P<rest>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def load_settings():
    """Every EBB_* variable the collector reads, from its source."""
    settings = set()
    for path, pattern in SETTINGS_SOURCES:
        settings.update(pattern.findall(path.read_text()))
    if len(settings) < 5:
        raise SystemExit(f"check-compose: found only {sorted(settings)} in the collector's source")
    return settings


def image_listen_port():
    """The port the image's collector listens on, from the Containerfile's EBB_LISTEN."""
    text = (ROOT / "Containerfile").read_text()
    match = re.search(r"\bEBB_LISTEN=\S*:(\d+)\b", text)
    if not match:
        raise SystemExit("check-compose: the Containerfile sets no EBB_LISTEN")
    return int(match.group(1))


def image_repository(image):
    """`docker.io/library/postgres:17` → `postgres`; `ebb-collector:latest` → `ebb-collector`."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def environment_of(service):
    """A service's environment as a dict, from either the mapping or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        return {key: value for key, value in pairs}
    return {key: (None if value is None else str(value)) for key, value in env.items()}


def depends_on_of(service):
    """A service's depends_on as {name: condition}."""
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return {name: "service_started" for name in depends}
    return {
        name: (spec or {}).get("condition", "service_started") for name, spec in depends.items()
    }


def resolve_defaults(value):
    """A value as Compose would make it with every variable unset: `${NAME:-default}` and
    `${NAME-default}` become the default; `${NAME}` and `${NAME:?error}` a placeholder
    naming the variable; `$$` a dollar sign."""

    def replace(match):
        if match.group(0) == "$$":
            return "$"
        if match.group("operator") in (":-", "-"):
            return match.group("rest")
        return "<" + (match.group("name") or match.group("bare")) + ">"

    return REFERENCE.sub(replace, value)


def published_ports(service):
    """(host ip, host port, container port) for each published port of a service."""
    result = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            target = int(entry["target"])
            published = entry.get("published")
            host_ip = entry.get("host_ip", "0.0.0.0")
        else:
            parts = str(entry).split("/", 1)[0].split(":")
            target = int(parts[-1])
            published = parts[-2] if len(parts) >= 2 else None
            host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        result.append((host_ip, int(published) if published else None, target))
    return result


def find_cycle(graph):
    """A dependency cycle as a list of names, or None."""
    state = {}

    def visit(name, path):
        if state.get(name) == "done":
            return None
        if state.get(name) == "open":
            return path[path.index(name):] + [name]
        state[name] = "open"
        for child in graph.get(name, ()):
            cycle = visit(child, path + [name])
            if cycle:
                return cycle
        state[name] = "done"
        return None

    for name in graph:
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def strings_in(node):
    """Every string anywhere in a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def problems(compose, settings, listen_port):
    """Every incoherence of a parsed compose file, one line each; empty when it is fine."""
    found = []
    if not isinstance(compose, dict):
        return ["the file is not a mapping"]

    for key in compose:
        if key not in TOP_LEVEL_KEYS and not str(key).startswith("x-"):
            found.append(f"unknown top-level key {key!r}")

    for text in strings_in(compose):
        leftover = REFERENCE.sub("", text)
        if "$" in leftover:
            found.append(f"malformed variable reference in {text!r}")

    services = compose.get("services")
    if not isinstance(services, dict) or not services:
        return found + ["no services"]
    declared_volumes = set((compose.get("volumes") or {}).keys())
    used_volumes = set()

    for name, service in services.items():
        if not isinstance(service, dict):
            found.append(f"{name}: not a mapping")
            continue
        for key in service:
            if key not in SERVICE_KEYS and not str(key).startswith("x-"):
                found.append(f"{name}: unknown key {key!r}")
        if not service.get("image"):
            found.append(f"{name}: no image (the image is built by scripts/build-image.sh)")
        for variable in environment_of(service):
            if variable.startswith("EBB_") and variable not in settings:
                found.append(f"{name}: {variable} is not a setting of the collector")
        for other in depends_on_of(service):
            if other not in services:
                found.append(f"{name}: depends on {other!r}, which is no service")
            elif other == name:
                found.append(f"{name}: depends on itself")
        for mount in service.get("volumes") or []:
            source = mount.get("source") if isinstance(mount, dict) else str(mount).split(":")[0]
            if source and not source.startswith(("/", ".", "~", "$")):
                used_volumes.add(source)
                if source not in declared_volumes:
                    found.append(f"{name}: volume {source!r} is not declared under volumes")

    for unused in sorted(declared_volumes - used_volumes):
        found.append(f"volume {unused!r} is declared but no service mounts it")

    graph = {name: list(depends_on_of(s)) for name, s in services.items() if isinstance(s, dict)}
    cycle = find_cycle(graph)
    if cycle:
        found.append("depends_on forms a cycle: " + " → ".join(cycle))

    taken = {}
    for name, service in services.items():
        if not isinstance(service, dict):
            continue
        try:
            ports = published_ports(service)
        except (KeyError, ValueError) as error:
            found.append(f"{name}: unreadable ports ({error})")
            continue
        for host_ip, host_port, _ in ports:
            if host_port is None:
                continue
            for other_ip, owner in taken.get(host_port, []):
                if "0.0.0.0" in (host_ip, other_ip) or host_ip == other_ip:
                    found.append(f"{name}: host port {host_port} is already published by {owner}")
            taken.setdefault(host_port, []).append((host_ip, name))

    found += collector_problems(services, listen_port)
    return found


def by_image(services, repository):
    """The services whose image is `repository`, whatever its registry and tag."""
    return {
        name: service
        for name, service in services.items()
        if isinstance(service, dict)
        and image_repository(str(service.get("image", ""))) == repository
    }


def database_problems(name, database):
    """A PostgreSQL service: a password, a volume for its data, a healthcheck to wait on."""
    found = []
    if not (database.get("healthcheck") or {}).get("test"):
        found.append(f"{name}: no healthcheck, so nothing can wait for it to be ready")
    if not environment_of(database).get("POSTGRES_PASSWORD"):
        found.append(f"{name}: no POSTGRES_PASSWORD; the postgres image refuses to start")
    targets = [
        str(mount.get("target", "")) if isinstance(mount, dict) else str(mount).split(":")[1]
        for mount in database.get("volumes") or []
        if isinstance(mount, dict) or ":" in str(mount)
    ]
    if not any(target.startswith("/var/lib/postgresql") for target in targets):
        found.append(f"{name}: no volume for /var/lib/postgresql/data, so the data dies "
                     "with the container")
    return found


def database_url_problems(name, collector, databases):
    """A collector's EBB_DATABASE_URL: the PostgreSQL service, its user, database and
    password, and a depends_on that waits until it is healthy."""
    url = environment_of(collector).get("EBB_DATABASE_URL")
    if not url:
        return [f"{name}: no EBB_DATABASE_URL; collectors cannot share the SQLite default"]
    parts = urlsplit(resolve_defaults(url))
    if parts.scheme not in ("postgres", "postgresql"):
        return [f"{name}: EBB_DATABASE_URL is not a postgres:// URL"]
    if parts.hostname not in databases:
        return [f"{name}: EBB_DATABASE_URL names host {parts.hostname!r}, "
                "which is no PostgreSQL service"]

    found = []
    env = environment_of(databases[parts.hostname])
    user = resolve_defaults(env.get("POSTGRES_USER") or "postgres")
    database = resolve_defaults(env.get("POSTGRES_DB") or "") or user
    password = resolve_defaults(env.get("POSTGRES_PASSWORD") or "")
    if parts.username != user:
        found.append(f"{name}: EBB_DATABASE_URL's user {parts.username!r} is not "
                     f"POSTGRES_USER {user!r}")
    if parts.path.lstrip("/") != database:
        found.append(f"{name}: EBB_DATABASE_URL's database {parts.path.lstrip('/')!r} "
                     f"is not {database!r}")
    if parts.password != password:
        found.append(f"{name}: EBB_DATABASE_URL's password is not POSTGRES_PASSWORD")
    if depends_on_of(collector).get(parts.hostname) != "service_healthy":
        found.append(f"{name}: does not wait for {parts.hostname} to be service_healthy")
    return found


def listen_problems(name, collector, listen_port):
    """A collector publishes the port it listens on, on an address reachable from outside."""
    found = []
    listen = environment_of(collector).get("EBB_LISTEN")
    port = listen_port
    if listen:
        host, _, port_text = resolve_defaults(listen).rpartition(":")
        if host not in ("0.0.0.0", "[::]"):
            found.append(f"{name}: EBB_LISTEN={listen} cannot be reached from outside "
                         "the container")
        port = int(port_text) if port_text.isdigit() else None
    try:
        targets = {target for _, _, target in published_ports(collector)}
    except (KeyError, ValueError):
        targets = set()
    if not targets:
        found.append(f"{name}: publishes no port")
    elif port not in targets:
        found.append(f"{name}: publishes {sorted(targets)}, but the collector listens on "
                     f"{port}")
    return found


def collector_problems(services, listen_port):
    """The collectors: the one PostgreSQL they wait for, the settings they must share, the
    port they listen on."""
    found = []
    collectors = by_image(services, "ebb-collector")
    databases = by_image(services, "postgres")
    if len(collectors) < 2:
        found.append(f"expected two collectors or more (image ebb-collector), "
                     f"found {len(collectors)}")
    if len(databases) != 1:
        found.append(f"expected one PostgreSQL service (image postgres), "
                     f"found {len(databases)}")

    for name, database in databases.items():
        found += database_problems(name, database)
    for name, collector in collectors.items():
        found += database_url_problems(name, collector, databases)
        found += listen_problems(name, collector, listen_port)

    # One database, and the same keys everywhere: a request may reach any collector.
    for variable in ("EBB_DATABASE_URL", "EBB_WRITE_KEY", "EBB_ADMIN_TOKEN"):
        values = {name: environment_of(c).get(variable) for name, c in collectors.items()}
        if len(set(values.values())) > 1:
            found.append(f"the collectors do not share one {variable}: {sorted(values)}")
    if any(environment_of(c).get("EBB_ADMIN_TOKEN") is None for c in collectors.values()):
        found.append("a collector has no EBB_ADMIN_TOKEN; on a shared database only the "
                     "first start generates one, and it stays in that container")
    return found


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "deploy/compose.yaml"
    try:
        compose = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        print(f"check-compose: {path}: {error}", file=sys.stderr)
        return 1

    settings = load_settings()
    found = problems(compose, settings, image_listen_port())

    for problem in found:
        print(f"check-compose: {path}: {problem}", file=sys.stderr)
    if found:
        return 1
    services = compose["services"]
    names = sorted(
        v for s in services.values() for v in environment_of(s) if v.startswith("EBB_")
    )
    print(
        f"check-compose: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
        f"{len(services)} services coherent; {len(set(names))} EBB_* settings, all among "
        f"the collector's {len(settings)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
