"""scripts/browser.py: the browser tests find a Chromium the user has, and never need root."""
import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "browser.py"


def _executable(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def _find(tmp_path, **env):
    """``browser.py --find`` with only ``env`` to go on (PATH holding nothing else)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("CHROMIUM",
                                                                "PLAYWRIGHT_BROWSERS_PATH")}
    clean.update(HOME=str(tmp_path / "home"), PATH=str(tmp_path / "bin"), **env)
    return subprocess.run([sys.executable, str(SCRIPT), "--find"], capture_output=True,
                          text=True, env=clean, timeout=60)


def test_a_chromium_on_path_is_used(tmp_path):
    chrome = _executable(tmp_path / "bin" / "google-chrome")
    result = _find(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(chrome)


def test_a_chromium_playwright_installed_for_the_user_is_used(tmp_path):
    """The newest of its builds (a build 999 was taken over 1200: names sorted as text),
    also from the folder PLAYWRIGHT_BROWSERS_PATH names, where Playwright puts them then."""
    for cache, env in ((tmp_path / "home" / ".cache" / "ms-playwright", {}),
                       (tmp_path / "pw", {"PLAYWRIGHT_BROWSERS_PATH": str(tmp_path / "pw")})):
        for build in ("chromium-999", "chromium-1200", "chromium-1100"):
            _executable(cache / build / "chrome-linux" / "chrome")
        result = _find(tmp_path, **env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(cache / "chromium-1200" / "chrome-linux" /
                                             "chrome")


def test_a_playwright_folder_with_a_bracket_in_its_name_is_searched(tmp_path):
    """Its path was a glob pattern: in pw[1] none was found (or, with a folder pw1 beside
    it, pw1's, and a ValueError traceback)."""
    for cache in (tmp_path / "pw[1]", tmp_path / "pw1"):
        _executable(cache / "chromium-1200" / "chrome-linux" / "chrome")
    result = _find(tmp_path, PLAYWRIGHT_BROWSERS_PATH=str(tmp_path / "pw[1]"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "pw[1]" / "chromium-1200" / "chrome-linux" /
                                         "chrome")


def test_no_browser_is_one_line_saying_how_to_get_one(tmp_path):
    (tmp_path / "bin").mkdir()
    result = _find(tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no Chromium")
    assert "playwright install chromium" in lines[0] and "CHROMIUM=" in lines[0]


def test_a_user_without_root_never_calls_apt_get(monkeypatch):
    import browser
    commands = []

    def refuse(command, **kwargs):  # PyPI answers, the browser download does not
        commands.append(list(command))
        return subprocess.CompletedProcess(command, 0 if "pip" in command else 1)

    monkeypatch.setattr(browser.subprocess, "run", refuse)
    monkeypatch.setattr(browser, "find", lambda: None)
    monkeypatch.setattr(browser.os, "geteuid", lambda: 1000)
    assert browser.main([]) == 1
    assert commands and all("apt-get" not in c for c in commands)
    assert ["playwright", "install", "chromium"] == commands[-1][-3:]  # tried the user's way
    commands.clear()
    monkeypatch.setattr(browser.os, "geteuid", lambda: 0)  # root falls back to the package
    browser.main([])
    assert any(c[0] == "apt-get" for c in commands) or not browser.shutil.which("apt-get")


def test_a_chromium_variable_pointing_at_nothing_is_one_line(tmp_path):
    (tmp_path / "bin").mkdir()
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                            env=dict(os.environ, CHROMIUM=str(tmp_path / "nope")), timeout=60)
    assert result.returncode == 1  # at once: no install is tried for a wrong variable
    assert result.stderr.strip() == (f"error: CHROMIUM={tmp_path / 'nope'} is not an "
                                     f"executable: point it at a Chromium or Chrome, or unset it")
