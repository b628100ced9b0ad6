"""Build the local cluster on first use: ``python -m stack.cluster.build`` (``make cluster-build``).

Kubernetes from the Go module proxy (its go.mod points the k8s.io/* staging modules at
directories the module zip lacks, so they are pinned to their published versions instead),
etcd and CoreDNS from the small modules in ``go/``, the pause binary from the ``pause.c`` inside
the Kubernetes module, and three images as OCI archives. The Go module and build caches live in
``stack/cache/k8s``, so a second build takes seconds; nothing is rebuilt whose inputs did not change.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from clover.config import Config
from stack.cluster import images, versions
from stack.cluster.layout import kubernetes_cache
from stack.cluster.steps import BuildError, Step, command, digest, run_steps
from stack.hostsetup import Progress

GO_DIR = Path(__file__).resolve().parent / "go"
VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")


class Build:
    """The build's paths and steps for one stack cache."""

    def __init__(self, cfg: Config):
        self.cache = kubernetes_cache(cfg)
        self.bin = self.cache / "bin"
        self.images = self.cache / "images"
        self.source = self.cache / "src" / f"kubernetes-{versions.KUBERNETES}"

    def binary(self, name: str) -> Path:
        return self.bin / name

    def image_archive(self, image: str) -> Path:
        return self.images / (image.split("/")[-1].replace(":", "-") + ".oci.tar")

    def go_env(self, mod: str = "readonly") -> dict[str, str]:
        """``mod``: ``mod`` for the Kubernetes copy (its go.mod is edited), ``readonly`` for the
        project's own modules in ``go/`` (their go.sum is complete)."""
        return {
            **os.environ,
            "GOMODCACHE": str(self.cache / "gomod"),
            "GOCACHE": str(self.cache / "gocache"),
            "GOTOOLCHAIN": "local",
            "GOFLAGS": f"-mod={mod}",
            "GOWORK": "off",
            "CGO_ENABLED": "0",
        }

    def go_version(self) -> str:
        return command("go", ["go", "version"], env=self.go_env()).strip()

    # -- steps ---------------------------------------------------------------------------------

    def steps(self) -> list[Step]:
        go = self.go_version()
        source_inputs = digest(versions.KUBERNETES, versions.KUBERNETES_STAGING, *versions.KUBERNETES_UNUSED, go)
        steps = [
            Step("debian packages", digest(*versions.DEBIAN_PACKAGES), tuple(map(Path, versions.DEBIAN_FILES)),
                 self.debian_packages),
            Step(f"kubernetes {versions.KUBERNETES} source", source_inputs, (self.source / "go.mod",),
                 self.kubernetes_source),
        ]  # fmt: skip
        for name in versions.BINARIES:
            built = (self.binary(name),)
            steps.append(Step(name, digest(source_inputs, name), built, functools.partial(self.kubernetes, name)))
        steps += [
            Step(f"etcd {versions.ETCD}", digest(*self._module_files("etcd"), go), (self.binary("etcd"),), self.etcd),
            Step(f"coredns {versions.COREDNS}", digest(*self._module_files("coredns"), go), (self.binary("coredns"),),
                 self.coredns),
            Step("pause", digest(source_inputs, "gcc -Os -static"), (self.binary("pause"),), self.pause),
        ]  # fmt: skip
        # The binaries are made from their steps' inputs: those stand for them here.
        image_inputs = digest(Path(images.__file__), Path(__file__).parent / "oci.py", steps[-1].inputs,
                              steps[-2].inputs, *versions.DEBIAN_PACKAGES)  # fmt: skip
        archives = tuple(self.image_archive(i) for i in images.IMAGES)
        steps.append(Step("images", image_inputs, archives, self.make_images))
        return steps

    def _module_files(self, name: str) -> list[Path]:
        return sorted(p for p in (GO_DIR / name).iterdir() if p.is_file())

    def debian_packages(self) -> str:
        missing = [p for p in versions.DEBIAN_PACKAGES if not _installed(p)]
        if not missing:
            return "present"
        if os.geteuid() != 0:
            raise BuildError(f"debian packages: installing {' '.join(missing)} needs root")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
        try:
            command("debian packages", install, env=env)
        except BuildError:
            command("debian packages", ["apt-get", "update", "-q"], env=env)
            command("debian packages", install, env=env)
        # Debian may start containerd; the cluster runs its own.
        subprocess.run(["service", "containerd", "stop"], capture_output=True)
        return "installed " + " ".join(missing)

    def kubernetes_source(self) -> str:
        """A writable copy of the release's module with its go.mod pointed at published modules."""
        env = self.go_env("mod")
        module = f"k8s.io/kubernetes@{versions.KUBERNETES}"
        found = json.loads(command("go mod download", ["go", "mod", "download", "-json", module], env=env))
        if found.get("Error"):
            raise BuildError(f"go mod download {module}: {found['Error']}")
        shutil.rmtree(self.source, ignore_errors=True)
        shutil.copytree(found["Dir"], self.source)
        for path in [self.source, *self.source.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o200)
        for name in ("go.work", "go.work.sum"):
            (self.source / name).unlink(missing_ok=True)
        staged = [line.split()[0] for line in (self.source / "go.mod").read_text().splitlines()
                  if "=> ./staging/" in line]  # fmt: skip
        edits = [f"-dropreplace={m}" for m in staged]
        edits += [f"-require={m}@{versions.KUBERNETES_STAGING}" for m in staged if m not in versions.KUBERNETES_UNUSED]
        edits += [f"-droprequire={m}" for m in versions.KUBERNETES_UNUSED]
        command("go mod edit", ["go", "mod", "edit", *edits], cwd=self.source, env=env)
        command("go mod download", ["go", "mod", "download"], cwd=self.source, env=env)
        return f"{len(staged)} staging modules pinned to {versions.KUBERNETES_STAGING}"

    def kubernetes(self, name: str) -> str:
        v = versions.KUBERNETES
        major, minor = v.lstrip("v").split(".")[:2]
        flags = ["-s", "-w"]
        for package in VERSION_PACKAGES:
            flags += [f"-X {package}.gitVersion={v}", f"-X {package}.gitMajor={major}",
                      f"-X {package}.gitMinor={minor}"]  # fmt: skip
        return self._go_build(name, ["-ldflags", " ".join(flags), f"./cmd/{name}"], self.source, mod="mod")

    def etcd(self) -> str:
        return self._go_build("etcd", ["-ldflags", "-s -w", "."], GO_DIR / "etcd")

    def coredns(self) -> str:
        return self._go_build("coredns", ["-ldflags", "-s -w", "github.com/coredns/coredns"], GO_DIR / "coredns")

    def _go_build(self, name: str, args: list[str], cwd: Path, mod: str = "readonly") -> str:
        self.bin.mkdir(parents=True, exist_ok=True)
        draft = self.binary(name).with_suffix(".draft")
        command(f"go build {name}", ["go", "build", "-trimpath", "-o", str(draft), *args], cwd=cwd,
                env=self.go_env(mod), nice=True)  # fmt: skip
        draft.replace(self.binary(name))
        return f"built {self.binary(name)} ({self.binary(name).stat().st_size / 2**20:.0f} MiB)"

    def pause(self) -> str:
        self.bin.mkdir(parents=True, exist_ok=True)
        source = self.source / "build" / "pause" / "linux" / "pause.c"
        draft = self.binary("pause").with_suffix(".draft")
        command("pause", ["gcc", "-Os", "-static", "-Wall", "-o", str(draft), str(source)])
        command("pause", ["strip", str(draft)])
        draft.replace(self.binary("pause"))
        return f"built {self.binary('pause')}"

    def make_images(self) -> str:
        for image, entries in images.IMAGES.items():
            spec = entries(self.bin)
            images.write(self.image_archive(image), image, spec)
        return "wrote " + ", ".join(images.IMAGES)

    def built(self) -> bool:
        """Whether every output of the build exists (not whether it is up to date)."""
        return all(p.exists() for step in self.steps() for p in step.outputs)


def _installed(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return done.returncode == 0 and "install ok installed" in done.stdout


def build(cfg: Config, progress: Progress) -> list[str]:
    """Build whatever is missing or out of date; returns the steps that ran."""
    if shutil.which("go") is None:
        raise BuildError("Go is not installed (the cluster is built with the Go toolchain)")
    b = Build(cfg)
    return run_steps(b.steps(), b.cache / "stamps", progress)


def main() -> int:
    import time

    started = time.monotonic()
    cfg = Config.from_env()
    print(f"Building the local cluster in {kubernetes_cache(cfg)}", flush=True)
    try:
        build(cfg, lambda line: print(f"  {line}", flush=True))
    except BuildError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"Built in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
