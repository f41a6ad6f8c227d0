"""Deployment files: deploy/ (Prometheus rules, Grafana dashboard, Kubernetes, compose), Dockerfile and debian/.

What can be checked without Prometheus, Docker or Kubernetes is: promtool on the rules, metric names the rules
and the dashboard use against a live /metrics, probe paths and ports against the admin server's routes and the
config defaults, the Dockerfile's packages and build commands against scripts/install-deps.sh and README.md,
and the packaged files against what `meson install` installs.
"""
import json
import os
import re
import shutil
import subprocess
import time

import pytest
import yaml

import pgr

REPO = pgr.REPO
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "pgrouter-rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "pgrouter-rules.test.yml"


def promtool():
    path = shutil.which("promtool")
    assert path, "promtool is missing: scripts/install-deps.sh installs Debian's prometheus package"
    return path


def test_prometheus_rules_check():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rules_unit_tests():
    # Every alert has input series that fire it and series that must not (pgrouter-rules.test.yml).
    result = subprocess.run([promtool(), "test", "rules", str(RULES_TEST)], capture_output=True, text=True,
                            timeout=30, cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------------
# Metric names in the rules and the dashboard

DASHBOARD = DEPLOY / "grafana" / "pgrouter-dashboard.json"
METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])pgrouter_[A-Za-z0-9_]*")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def rule_expressions():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels):
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def as_promql(grafana_expr):
    """A dashboard query with Grafana's variables replaced by what Prometheus would get."""
    expr = grafana_expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
    # label_values(metric, label) is Grafana's, not PromQL: the metric is what Prometheus is asked for.
    return re.sub(r"^label_values\((\w+),\s*\w+\)$", r"\1", expr)


def parse_exposition(text):
    """(sample names, {family: type}) of a Prometheus text-format page."""
    samples, types = set(), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(None, 3)
            types[family] = kind.strip()
        elif line and not line.startswith("#"):
            samples.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return samples, types


def missing_names(names, samples, types):
    """The names that /metrics lacks. A histogram's _bucket/_sum/_count series count only for a family of TYPE
    histogram; any other name must be a sample of its own family."""
    missing = []
    for name in sorted(names):
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base is not None and types.get(base) == "histogram":
            if name not in samples:
                missing.append(name)
        elif name not in types or name not in samples:
            missing.append(name)
    return missing


def test_missing_names_helper():
    text = ("# TYPE pgrouter_a_total counter\npgrouter_a_total 1\n"
            "# TYPE pgrouter_h_seconds histogram\npgrouter_h_seconds_bucket{le=\"1\"} 1\n"
            "pgrouter_h_seconds_sum 1\npgrouter_h_seconds_count 1\n")
    samples, types = parse_exposition(text)
    assert missing_names({"pgrouter_a_total", "pgrouter_h_seconds_bucket", "pgrouter_h_seconds_count"}, samples,
                         types) == []
    # a histogram's family name has no series; _count of a counter is not a histogram series; unknown names
    assert missing_names({"pgrouter_h_seconds", "pgrouter_a_total_count", "pgrouter_b"}, samples, types) == [
        "pgrouter_a_total_count", "pgrouter_b", "pgrouter_h_seconds"]


def test_dashboard_queries_parse(tmp_path):
    # promtool checks PromQL only inside rule files: each dashboard query becomes a recording rule.
    exprs = [as_promql(e) for e in dashboard_expressions()]
    assert len(exprs) >= 20, exprs
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": e}
                                                          for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_rules_and_dashboard_use_only_exported_metrics(pgrouter, cluster):
    # A replica makes the health probes run (pgrouter_backend_* series); transaction pooling with read/write
    # splitting moves the routing counters; a failed statement and a failed login create pgrouter_errors_total.
    router = pgrouter({
        "databases": [{"name": "app", "shards": [{"primary": cluster.endpoint("primary"),
                                                   "replicas": [cluster.endpoint("replica")]}],
                       "pool": {"mode": "transaction"}, "routing": {"probe_interval": "100ms"}}],
    })
    import psycopg
    with router.connect() as conn:
        for _ in range(5):
            conn.execute("select 1").fetchall()
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("select 1/0")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(router.dsn(password="wrong"), connect_timeout=10).close()

    needed = set()
    for expr in rule_expressions() + [as_promql(e) for e in dashboard_expressions()]:
        needed.update(METRIC_NAME.findall(expr))
    assert len(needed) >= 30, sorted(needed)

    deadline = time.monotonic() + 10
    while True:
        samples, types = parse_exposition(router.metrics())
        missing = missing_names(needed, samples, types)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # the first probe of the backends
    assert missing == [], f"used by deploy/ but not in /metrics: {missing}"


# ---------------------------------------------------------------------------------------------------------------
# Dockerfile, Kubernetes, compose

DOCKERFILE = REPO / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
CONF = yaml.safe_load((REPO / "conf" / "pgrouter.yaml").read_text())


def admin_routes():
    """The paths src/control/admin_http.cpp answers (its `target != "/..."` route check)."""
    source = (REPO / "src" / "control" / "admin_http.cpp").read_text()
    routes = set(re.findall(r'target (?:!=|==) "(/[a-z]+)"', source))
    assert {"/metrics", "/livez", "/readyz"} <= routes, routes
    return routes


def install_deps_packages():
    """Every package scripts/install-deps.sh may install: its packages=(...) list and its packages+=(...)."""
    text = (REPO / "scripts" / "install-deps.sh").read_text()
    body = re.search(r"^packages=\((.*?)^\)", text, re.S | re.M).group(1)
    names = [w for line in body.splitlines() for w in line.split("#", 1)[0].split()]
    names += re.findall(r"packages\+=\(([^)]+)\)", text)
    return set(names)


def dockerfile_stages():
    """[(stage name or None, [instructions with continuation lines joined])]"""
    stages = []
    logical = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            words = line.split()
            stages.append((words[3] if len(words) > 3 and words[2].upper() == "AS" else None, [line]))
        else:
            stages[-1][1].append(line)
    return stages


def apt_packages(instructions):
    packages = set()
    for line in instructions:
        for command in re.split(r"&&|;", line):
            words = command.split()
            if "apt-get" in words and "install" in words:
                packages.update(w for w in words[words.index("install") + 1:] if not w.startswith("-"))
    return packages


def duration_seconds(text):
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(text))
    value, unit = int(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def check_config(text, tmp_path, env=None):
    path = tmp_path / "check.yaml"
    path.write_text(text)
    result = subprocess.run([str(pgr.pgrouter_bin()), "--check-config", str(path)], capture_output=True, text=True,
                            timeout=30, env={**os.environ, **(env or {})})
    return result.returncode, result.stdout + result.stderr


def test_every_deploy_yaml_parses():
    files = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 8, files
    for path in files:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, f"{path} is empty"
    kinds = {d["kind"] for path in KUBERNETES.glob("*.yaml") for d in yaml.safe_load_all(path.read_text()) if d}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= kinds, kinds


def test_dockerfile_build_stage_matches_install_deps_and_readme():
    stages = dockerfile_stages()
    assert [s[0] for s in stages] == ["build", None], "a build stage, then the runtime stage"
    build = stages[0][1]
    assert build[0].split()[1] == "debian:bookworm-slim" and stages[1][1][0].split()[1] == "debian:bookworm-slim"
    packages = apt_packages(build)
    assert {"g++", "meson", "ninja-build", "libpq-dev"} <= packages, packages
    assert packages <= install_deps_packages(), f"not in scripts/install-deps.sh: {packages - install_deps_packages()}"
    # The meson and ninja commands are README.md's own.
    commands = [c.strip() for line in build if line.startswith("RUN ") for c in re.split(r"&&|;", line[4:])]
    build_commands = [" ".join(c.split()) for c in commands if c.split() and c.split()[0] in ("meson", "ninja")]
    assert build_commands == ["meson setup build", "ninja -C build"], build_commands
    readme = (REPO / "README.md").read_text()
    for command in build_commands:
        assert f"`{command}`" in readme, f"README.md does not show `{command}`"


def test_dockerfile_runtime_stage():
    runtime = dockerfile_stages()[1][1]
    text = "\n".join(runtime)
    # Exactly the packages of the libraries the binary links (libc6 is in every image).
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        subprocess.run(["readelf", "-d", str(pgr.pgrouter_bin())], capture_output=True, text=True,
                                       check=True).stdout)
    libs = {}
    for line in subprocess.run(["ldd", str(pgr.pgrouter_bin())], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
            libs[parts[0]] = os.path.realpath(parts[2])
    paths = [libs[soname] for soname in needed if not soname.startswith("ld-linux")]
    # merged /usr: dpkg may know a library under /lib rather than /usr/lib. One dpkg -S for all (it is slow).
    candidates = paths + [p[len("/usr"):] for p in paths if p.startswith("/usr/lib/")]
    search = subprocess.run(["dpkg", "-S", *candidates], capture_output=True, text=True, timeout=60).stdout
    owner_of = {}
    for line in search.splitlines():
        package, _, path = line.partition(": ")
        owner_of[path] = package.split(":")[0]
    owners = set()
    for path in paths:
        owner = owner_of.get(path) or owner_of.get(path[len("/usr"):])
        assert owner, f"no package owns {path}"
        owners.add(owner)
    assert apt_packages(runtime) == owners - {"libc6"}, (apt_packages(runtime), owners)
    assert "USER pgrouter" in runtime
    assert re.search(r"useradd .*--uid 10001 .*pgrouter", text)
    expose = next(line for line in runtime if line.startswith("EXPOSE")).split()[1:]
    assert expose == [str(CONF["listen"]["port"]), str(CONF["admin"]["port"])], expose
    assert "COPY deploy/docker/pgrouter.yaml /etc/pgrouter/pgrouter.yaml" in runtime
    assert 'CMD ["--config", "/etc/pgrouter/pgrouter.yaml"]' in runtime
    assert (REPO / ".dockerignore").is_file()


def dockerfile_healthcheck():
    line = next(line for line in dockerfile_stages()[1][1] if line.startswith("HEALTHCHECK"))
    return json.loads(line[line.index("CMD") + 3:].strip())


def test_dockerfile_healthcheck_probes_livez(pgrouter):
    command = dockerfile_healthcheck()
    assert "GET /livez " in command[-1] and "/livez" in admin_routes()
    assert f"/dev/tcp/127.0.0.1/{CONF['admin']['port']}" in command[-1]
    router = pgrouter()
    # The harness waits for the client port; the admin server may answer a moment later.
    deadline = time.monotonic() + 10
    while True:
        try:
            router.metrics("/livez")
            break
        except OSError:
            assert time.monotonic() < deadline, "/livez never answered"
            time.sleep(0.05)
    # The image's command against a running pgrouter (on the harness's admin port), then against a closed port.
    live = [c.replace(f"/{CONF['admin']['port']}", f"/{router.admin_port}") for c in command]
    assert subprocess.run(live, timeout=10).returncode == 0
    dead = [c.replace(f"/{CONF['admin']['port']}", f"/{pgr.free_port()}") for c in command]
    assert subprocess.run(dead, timeout=10, capture_output=True).returncode != 0


def test_image_config_is_valid(tmp_path):
    config_text = (DEPLOY / "docker" / "pgrouter.yaml").read_text()
    code, output = check_config(config_text, tmp_path, {"APP_PASSWORD": "x"})
    assert code == 0, output
    config = yaml.safe_load(config_text)
    assert config["listen"]["port"] == CONF["listen"]["port"] and config["admin"]["port"] == CONF["admin"]["port"]
    assert config["listen"]["host"] == config["admin"]["host"] == "0.0.0.0"


def kubernetes_objects():
    return {d["kind"]: d for path in sorted(KUBERNETES.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text())
            if d}


def test_kubernetes_probes_ports_and_grace(tmp_path):
    objects = kubernetes_objects()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "pgrouter")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config_text = objects["ConfigMap"]["data"]["pgrouter.yaml"]
    config = yaml.safe_load(config_text)
    assert ports == {"postgres": CONF["listen"]["port"], "admin": CONF["admin"]["port"]}, ports
    assert config["listen"]["port"] == ports["postgres"] and config["admin"]["port"] == ports["admin"]
    assert config["admin"]["host"] == "0.0.0.0", "the kubelet probes the pod IP"
    routes = admin_routes()
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert {"/livez", "/readyz"} <= routes
    # preStop pause + the drain (listen.shutdown_timeout) end before the kubelet's SIGKILL.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = duration_seconds(config["listen"].get("shutdown_timeout", CONF["listen"]["shutdown_timeout"]))
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain
    # The Service and the PodDisruptionBudget select the pods; the Service's target ports are named ports.
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert {p["targetPort"] for p in objects["Service"]["spec"]["ports"]} == set(ports)
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's pgrouter user (Dockerfile)
    # The ConfigMap's config is valid, with the Secret's variable set.
    code, output = check_config(config_text, tmp_path, {"APP_PASSWORD": "x"})
    assert code == 0, output


def test_kubernetes_config_reloader(tmp_path):
    pod = kubernetes_objects()["Deployment"]["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True, "the reloader signals pgrouter's process"
    reloader = next(c for c in pod["containers"] if c["name"] == "config-reloader")
    script = reloader["command"][-1]
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=10)
    assert syntax.returncode == 0, syntax.stderr
    assert "kill -HUP" in script and "--check-config /etc/pgrouter/pgrouter.yaml" in script
    mount = next(m for m in reloader["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/pgrouter"


def test_compose_services_and_pgrouter_config(tmp_path):
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"primary", "replica", "redis", "pgrouter"} <= set(services)
    assert "pg_basebackup" in services["replica"]["command"][-1]
    pgrouter_service = services["pgrouter"]
    target = next(c["target"] for c in pgrouter_service["configs"] if c["source"] == "pgrouter")
    assert target == "/etc/pgrouter/pgrouter.yaml"
    config_text = compose["configs"]["pgrouter"]["content"]
    config = yaml.safe_load(config_text)
    published = {p.rsplit(":", 1)[-1] for p in pgrouter_service["ports"]}
    assert published == {str(config["listen"]["port"]), str(config["admin"]["port"])}
    assert config["listen"]["port"] == CONF["listen"]["port"] and config["admin"]["port"] == CONF["admin"]["port"]
    shard = config["databases"][0]["shards"][0]
    assert shard["primary"]["host"] == "primary" and shard["replicas"][0]["host"] == "replica"
    drain = duration_seconds(config["listen"]["shutdown_timeout"])
    assert duration_seconds(pgrouter_service["stop_grace_period"]) > drain
    env = {k: "x" for k in pgrouter_service["environment"]}
    code, output = check_config(config_text, tmp_path, env)
    assert code == 0, output


# ---------------------------------------------------------------------------------------------------------------
# debian/

DEBIAN = REPO / "debian"
UNIT = REPO / "systemd" / "pgrouter.service"
# debian/rules lets dh configure meson with prefix /usr and sysconfdir /etc, and moves the unit from
# usr/lib/systemd/system to lib/systemd/system (Debian 12's place for units).
PACKAGE_PREFIX, PACKAGE_SYSCONFDIR = "/usr", "/etc"


def deb822_paragraphs(text):
    """debian/control's paragraphs as {field: value} (continuation lines joined, comments dropped)."""
    paragraphs, current, field = [], {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, field = {}, None
        elif line[0] in " \t":
            assert field, f"continuation line without a field: {line!r}"
            current[field] += "\n" + line.strip()
        else:
            field, _, value = line.partition(":")
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", field), f"bad field line: {line!r}"
            assert field not in current, f"field {field} twice"
            current[field] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def test_debian_control_and_rules():
    source, *binaries = deb822_paragraphs((DEBIAN / "control").read_text())
    assert source["Source"] == "pgrouter"
    assert "debhelper-compat (= 13)" in source["Build-Depends"]
    assert [b["Package"] for b in binaries] == ["pgrouter"]
    assert "adduser" in binaries[0]["Depends"] and "${shlibs:Depends}" in binaries[0]["Depends"]
    # The build dependencies are packages scripts/install-deps.sh installs (plus debhelper itself).
    build_deps = {re.split(r"[\s(<]", d.strip())[0] for d in source["Build-Depends"].split(",") if d.strip()}
    assert build_deps - {"debhelper-compat"} <= install_deps_packages(), build_deps - install_deps_packages()
    rules = DEBIAN / "rules"
    assert os.access(rules, os.X_OK), "debian/rules must be executable"
    assert "--buildsystem=meson" in rules.read_text()
    changelog_version = re.match(r"pgrouter \(([^)]+)\)", (DEBIAN / "changelog").read_text()).group(1)
    meson_version = re.search(r"version : '([^']+)'", (REPO / "meson.build").read_text()).group(1)
    assert changelog_version == meson_version
    postinst = (DEBIAN / "pgrouter.postinst").read_text()
    assert re.search(r"adduser --system .*pgrouter", postinst) and "#DEBHELPER#" in postinst
    assert (DEBIAN / "source" / "format").read_text().strip() == "3.0 (native)"


def test_debian_install_files_name_what_meson_installs(tmp_path):
    build = pgr.pgrouter_bin().resolve().parent
    if not (build / "build.ninja").is_file():
        pytest.skip(f"{build} is not a meson build directory")
    destdir = tmp_path / "root"
    result = subprocess.run(["meson", "install", "-C", str(build), "--no-rebuild", "--quiet", "--destdir",
                             str(destdir)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    options = {o["name"]: o["value"] for o in json.loads(subprocess.run(
        ["meson", "introspect", "--buildoptions", str(build)], capture_output=True, text=True, check=True).stdout)}
    prefix = options["prefix"]
    sysconfdir = options["sysconfdir"] if options["sysconfdir"].startswith("/") else f"{prefix}/{options['sysconfdir']}"

    def in_this_build(package_path):
        """Where this build installs what the package has at package_path."""
        if package_path.startswith("etc/"):
            return sysconfdir + package_path[len("etc"):]
        if package_path.startswith("lib/systemd/"):
            return f"{prefix}/{package_path}"
        assert package_path.startswith("usr/"), package_path
        return prefix + package_path[len("usr"):]

    listed = []
    for install in DEBIAN.glob("*.install"):
        for line in install.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                listed.append(line.split()[0])
    assert sorted(listed) == ["etc/pgrouter/pgrouter.yaml", "lib/systemd/system/pgrouter.service",
                              "lib/systemd/system/pgrouter@.service", "usr/bin/pgrouter"]
    for path in listed:
        assert (destdir / in_this_build(path).lstrip("/")).is_file(), f"{path} is not installed by meson"
    # Nothing else is installed (dh_missing would fail the package build).
    installed = sorted(str(p.relative_to(destdir)) for p in destdir.rglob("*") if p.is_file())
    assert len(installed) == len(listed), installed
    # The unit starts the binary where the package puts it, with the packaged config.
    exec_start = re.search(r"^ExecStart=(\S+) --config (\S+)$", UNIT.read_text(), re.M)
    assert exec_start.group(1) == f"{PACKAGE_PREFIX}/bin/pgrouter" == "/" + listed[listed.index("usr/bin/pgrouter")]
    assert exec_start.group(2) == f"{PACKAGE_SYSCONFDIR}/pgrouter/pgrouter.yaml"
    assert re.search(r"^User=pgrouter$", UNIT.read_text(), re.M)


def test_built_deb_contents():
    deb = os.environ.get("PGR_DEB")
    if not deb:
        pytest.skip("PGR_DEB is not set: CI does not build the package (scripts/package-deb.sh builds it)")
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True, timeout=30).stdout
    entries = {}
    for line in listing.splitlines():
        mode, owner, _size, _date, _time, path = line.split(None, 5)
        entries[path.split(" -> ")[0].lstrip(".")] = (mode, owner)
    assert entries["/usr/bin/pgrouter"][0] == "-rwxr-xr-x"
    assert "/etc/pgrouter/pgrouter.yaml" in entries
    assert "/lib/systemd/system/pgrouter.service" in entries
    assert "/lib/systemd/system/pgrouter@.service" in entries
    assert all(owner == "root/root" for _, owner in entries.values())
    conffiles = subprocess.run(["dpkg-deb", "--info", deb, "conffiles"], capture_output=True, text=True,
                               timeout=30).stdout.split()
    assert "/etc/pgrouter/pgrouter.yaml" in conffiles
    postinst = subprocess.run(["dpkg-deb", "--info", deb, "postinst"], capture_output=True, text=True,
                              timeout=30).stdout
    assert "adduser --system" in postinst and "pgrouter.service" in postinst
    fields = subprocess.run(["dpkg-deb", "--field", deb, "Package", "Version", "Depends"], capture_output=True,
                            text=True, check=True, timeout=30).stdout
    assert "Package: pgrouter" in fields and "libpq5" in fields and "adduser" in fields
