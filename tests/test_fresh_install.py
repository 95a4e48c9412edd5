"""The README's Quickstart on a fresh machine: a new virtual environment, the
README's own install command, then every Quickstart line (issue 15).

What it proves: ``pip install -e .`` -- read from README.md, not written here --
installs everything the Quickstart's commands import, and each command runs as
written.  The lines are taken from the README's Quickstart block; long runs
get extra arguments appended that make them short (argparse keeps the last
value of an option), and nothing else is changed: the ``audit`` line runs
verbatim on the files the ``simulate`` line wrote.  ``privmeter demo`` is
started, its dashboard page fetched over HTTP, and stopped with Ctrl-C.

The venv does not see the machine's site-packages, and ``PYTHONPATH`` is
cleared, so the commands run the package the README's command installed, from
a copy of the checkout (``git ls-files``: what a clone has).  Speed: pip takes
wheels from its cache and from the machine's wheelhouse (``PIP_FIND_LINKS``)
when they are there, as it does for any user; on the project's CI machines the
whole test takes about 2 minutes, most of it the install.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# appended to a Quickstart line that would run for minutes (prefix -> extra arguments)
SHORTER = {
    "privmeter simulate": "--households 5 --days 1 --group-size 5 --max-intervals 4 --key-bits 2048",
    "privmeter privacy": "--households 4 --days 1 --group-sizes 2",
    "privmeter bench paillier": "--bits 2048 --min-seconds 0.01",
    "privmeter bench aggregation": "--quick",
    "privmeter bench comparison": "--quick",
}


def quickstart() -> list[str]:
    """The command lines of README.md's Quickstart block, comments removed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "README's Quickstart has no ```bash block"
    return [
        shlex.join(shlex.split(line, comments=True))
        for line in block.group(1).splitlines()
        if shlex.split(line, comments=True)
    ]


def test_readme_first_command_is_the_quickstart_install() -> None:
    first = (
        (ROOT / "README.md").read_text(encoding="utf-8").split("```bash\n", 1)[1].splitlines()[0]
    )
    install = quickstart()[0]
    assert install == "pip install -e ." and first.startswith(f"{install} && privmeter demo")


def _copy_checkout(dest: Path) -> None:
    """What a clone holds: the files git tracks, as they are in this working tree."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for name in files.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes((ROOT / name).read_bytes())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quickstart_in_a_fresh_venv(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.fail("run from a git checkout: the test installs what git tracks")
    clone = tmp_path / "privmeter"
    clone.mkdir()
    _copy_checkout(clone)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PRIVMETER_DEBUG", "VIRTUAL_ENV")
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        PRIVMETER_CACHE=str(tmp_path / "cache"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    lines = quickstart()
    timings: dict[str, float] = {}

    def sh(line: str, timeout: float) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        r = subprocess.run(
            ["bash", "-c", line],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        timings[line[:40]] = round(time.monotonic() - t0, 1)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (
            f"{line}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        )
        return r

    sh(lines[0], 600)  # the install, exactly as written
    where = sh(
        "python -c 'import privmeter, sys; print(privmeter.__file__, sys.prefix)'", 60
    ).stdout.split()
    assert where[0].startswith(str(clone / "src")) and where[1] == str(venv)
    ran = set()
    for line in lines[1:]:
        words = line.split()
        if words[:2] == ["privmeter", "demo"]:
            _demo(line, clone, env, tmp_path)
        else:
            extra = next((v for k, v in SHORTER.items() if line.startswith(k)), "")
            sh(f"{line} {extra}".strip(), 300)
        ran.add(" ".join(words[:3] if words[1] == "bench" else words[:2]))
    assert {
        "privmeter demo",
        "privmeter simulate",
        "privmeter audit",
        "privmeter privacy",
        "privmeter keygen",
    } <= ran
    assert (clone / "keys" / "household.json").is_file() and (
        clone / "runs" / "demo" / "report.html"
    ).is_file()
    print("fresh-install timings (s):", timings)


def _demo(line: str, clone: Path, env: dict[str, str], tmp: Path) -> None:
    """Start the demo as written (a small neighbourhood, a free port), fetch the page, Ctrl-C."""
    port = _free_port()
    cmd = f"{line} --port {port} --households 5 --group-size 5 --data-dir {shlex.quote(str(tmp / 'demo'))}"
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {cmd}"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        page = ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    page = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert "privmeter" in page, proc.stderr.read() if proc.poll() is not None else "no page"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "dashboard: " in err and "stopped" in err
