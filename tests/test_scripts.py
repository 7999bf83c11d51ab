"""The scripts a newcomer runs first: their --help, their set-up, and scripts/flask.

The set-up is checked on a copy of scripts/ beside a stand-in .venv whose python only records
how it was called: the real pip, apt-get and a fresh venv would take minutes and a network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["serve", "test", "demo", "flask"]
# What the stand-in python prints when asked to install: pip's own first line per package.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >>"$(dirname "$0")/../calls.log"
if [ "$4" != "--quiet" ]; then
    echo "Collecting flask==3.1.3 (from -r requirements.txt (line 1))"
    echo "  Downloading flask-3.1.3-py3-none-any.whl (103 kB)"
    echo "WARNING: noise a newcomer need not read"
    echo "Successfully installed flask-3.1.3"
fi
"""


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """Copy scripts/ and the requirement files into a folder with no .venv."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", copy / "scripts")
    for name in ("requirements.txt", "requirements-dev.txt"):
        shutil.copy(ROOT / name, copy / name)
    return copy


@pytest.fixture
def fake_venv(repo_copy: Path) -> Path:
    """Give the copy a .venv whose python records each call and installs nothing."""
    python = repo_copy / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return repo_copy / ".venv"


def run_setup(repo: Path, *calls: str) -> subprocess.CompletedProcess[str]:
    """Source the copy's setup.sh and run shell ``calls`` (e.g. ensure_venv requirements.txt)."""
    script = f'source "{repo}/scripts/setup.sh"\n' + "\n".join(calls)
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=30, check=False
    )


def pip_installs(venv: Path) -> list[str]:
    log = venv / "calls.log"
    calls = log.read_text().splitlines() if log.exists() else []
    return [call for call in calls if " -r " in call]


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_answers_help_without_setting_anything_up(repo_copy, name, flag):
    """GIVEN a clone with no .venv WHEN a script is asked for --help or -h THEN its usage,
    exit 0, and no .venv made (nothing installed, nothing started)."""
    done = subprocess.run(
        [str(repo_copy / "scripts" / name), flag],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: scripts/{name}")
    assert not (repo_copy / ".venv").exists()


def test_the_test_scripts_help_says_other_arguments_go_to_pytest():
    done = subprocess.run(
        [str(ROOT / "scripts" / "test"), "--help"], capture_output=True, text=True, check=True
    )

    assert "pytest" in done.stdout and "-k webhook" in done.stdout


def test_a_dev_install_also_satisfies_the_runtime_requirements(fake_venv, repo_copy):
    """GIVEN requirements-dev.txt installed (it includes requirements.txt) WHEN the runtime set
    is asked for, as scripts/serve does after scripts/test THEN nothing is installed again."""
    first = run_setup(repo_copy, "ensure_venv requirements-dev.txt")
    again = run_setup(repo_copy, "ensure_venv requirements.txt", "ensure_venv requirements-dev.txt")

    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    [install] = pip_installs(fake_venv)
    assert install.endswith("requirements-dev.txt")
    assert again.stderr == ""


def test_a_changed_runtime_requirement_is_installed_again(fake_venv, repo_copy):
    """GIVEN both sets installed WHEN requirements.txt changes THEN each set is installed once
    more, as it is asked for."""
    assert run_setup(repo_copy, "ensure_venv requirements-dev.txt").returncode == 0
    with (repo_copy / "requirements.txt").open("a") as requirements:
        requirements.write("six==1.17.0\n")

    done = run_setup(repo_copy, "ensure_venv requirements.txt", "ensure_venv requirements-dev.txt")

    assert done.returncode == 0, done.stderr
    assert [call.rsplit("/", 1)[1] for call in pip_installs(fake_venv)] == [
        "requirements-dev.txt",
        "requirements.txt",
        "requirements-dev.txt",
    ]


def test_an_install_says_what_it_does_on_stderr_one_line_a_package(fake_venv, repo_copy):
    """GIVEN requirements to install WHEN set-up runs THEN stderr says what is being installed
    and shows pip's line per package, without pip's noise, and stdout stays empty (so
    `TOKEN=$(scripts/flask … --token-only)` captures the token alone)."""
    done = run_setup(repo_copy, "ensure_venv requirements.txt")

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "setup: installing requirements.txt into .venv" in done.stderr
    assert "setup:   Collecting flask==3.1.3" in done.stderr
    assert "Downloading" not in done.stderr and "noise" not in done.stderr
    [install] = pip_installs(fake_venv)
    assert "--progress-bar off" in install and "--quiet" not in install


def test_a_failed_install_shows_the_end_of_pips_output(fake_venv, repo_copy):
    python = fake_venv / "bin" / "python"
    python.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$4" != "--quiet" ]; then echo "ERROR: No matching distribution found for x"; '
        "exit 1; fi\n"
    )

    done = run_setup(repo_copy, "ensure_venv requirements.txt")

    assert done.returncode != 0
    assert "pip failed" in done.stderr
    assert "ERROR: No matching distribution found for x" in done.stderr
    assert not list(fake_venv.glob(".requirements-*"))


def test_without_root_a_missing_chromium_is_explained(repo_copy, tmp_path):
    """GIVEN no Chromium at the paths the tests use and no apt-get to install it WHEN the set-up
    checks THEN it says how to install it and fails."""
    done = run_setup(
        repo_copy,
        f'CHROMIUM="{tmp_path}/no-chromium"',
        f'CHROMEDRIVER="{tmp_path}/no-chromedriver"',
        'PATH="/nonexistent"',
        "ensure_chromium",
    )

    assert done.returncode == 1
    assert "apt-get install chromium chromium-driver" in done.stderr


def test_scripts_flask_runs_a_flask_command_from_anywhere(tmp_path):
    """GIVEN a store WHEN `scripts/flask machines add … --token-only` runs from another folder
    THEN stdout is the token alone, ready for TOKEN=$(…)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'arcade.db'}",
        # Empty values shadow a developer's .env.local.
        "STRIPE_API_KEY": "",
        "STRIPE_WEBHOOK_SECRET": "",
        "EMQX_BROKER_URL": "",
    }

    done = subprocess.run(
        [str(ROOT / "scripts" / "flask"), "machines", "add", "cab001", "--token-only"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    [token] = done.stdout.splitlines()
    assert token.startswith("mt_")


def test_scripts_flask_hands_help_after_a_double_dash_to_flask(tmp_path):
    done = subprocess.run(
        [str(ROOT / "scripts" / "flask"), "--", "--help"],
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "machines" in done.stdout and "Usage: flask" in done.stdout
