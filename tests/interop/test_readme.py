"""The README runs as written.

Starts `mayfly serve --dev` (embedded SQLite in a fresh directory, as a reader
would), runs the commands it printed (the demo mint, the `export` of the admin
secret, the admin-token command), then every ```sh block of README.md in
order, each with `set -euo pipefail`, in bash. Blocks share what they set
(ADMIN, the `api` function, CI_SECRET, RS_ID, …): after each block its shell
variables and functions are saved and loaded before the next one, as if
pasted into one terminal. The only change to the text is the address: the
README's 127.0.0.1:8420 becomes the free port the test's mayfly listens on.

A block needing something this machine does not have (a GitHub Actions
runner, an IdP, a PAT, PyPI, a foreground server) is skipped only when the
README marks it, on the line right before its fence:

    <!-- tour: skip (needs GitHub Actions) -->

Skips are reported with their reason (`pytest -rs`). An unmarked block that
fails fails its test; every later block is then skipped as not run. Block
output is shown only on failure, with secrets and tokens masked.
"""

import os
import pathlib
import re
import subprocess
import textwrap

import pytest

from httpkit import stop
from test_mcp_sdk import ROOT, SECRET_PATTERNS, free_port, wait_for

README = ROOT / "README.md"
README_ADDRESS = "127.0.0.1:8420"
SKIP_MARKER = re.compile(r"^\s*<!--\s*tour:\s*skip\s*\((?P<reason>.+)\)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\S*)\s*$")
BLOCK_TIMEOUT = 60


class Block:
    def __init__(self, line, text, skip):
        self.line, self.text, self.skip = line, text, skip
        self.id = f"L{line}"


def readme_blocks(text):
    """Every fenced block tagged `sh`, in order, with the skip marker before it."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, indent, lang = i, m.group("indent"), m.group("lang")
        j = i + 1
        while j < len(lines) and not re.match(rf"^{re.escape(indent)}```\s*$", lines[j]):
            j += 1
        assert j < len(lines), f"README.md:{start + 1}: unclosed code fence"
        if lang == "sh":
            prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            marker = SKIP_MARKER.match(prev)
            body = textwrap.dedent("\n".join(lines[start + 1:j]))
            blocks.append(Block(start + 1, body, marker.group("reason") if marker else None))
        i = j + 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def mask(text):
    for p in SECRET_PATTERNS:
        text = p.sub("<redacted>", text)
    return text


def printed_commands(stdout):
    """The paragraphs `mayfly --dev` printed for pasting (indented, starting with a command)."""
    out = []
    for para in re.split(r"\n\s*\n", stdout):
        lines = para.splitlines()
        if lines and all(ln.startswith("  ") for ln in lines) and lines[0].split()[0] in ("curl", "export"):
            out.append(textwrap.dedent(para))
    return out


class Tour:
    """mayfly --dev on a free port, and a bash 'terminal' whose state persists across blocks."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        binary = pathlib.Path(os.environ.get("MAYFLY_BIN", str(ROOT / "target" / "debug" / "mayfly"))).resolve()
        # A reader's shell: nothing of this process's MAYFLY_* settings, the binary on PATH.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAYFLY_")}
        self.env["PATH"] = f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        (tmp / "server").mkdir()
        self.stdout_path = tmp / "server" / "stdout"
        self.log = open(tmp / "server" / "log", "w")
        self.stdout = open(self.stdout_path, "w")
        self.proc = subprocess.Popen([str(binary), "serve", "--dev"], cwd=tmp / "server",
                                     env=dict(self.env, MAYFLY_LISTEN=self.address, RUST_LOG="info"),
                                     stdout=self.stdout, stderr=self.log)
        wait_for(f"http://{self.address}/readyz", self.proc, "mayfly --dev")
        self.state = tmp / "state.sh"
        self.state.write_text("")
        self.failed = None

    def run(self, name, text):
        """Runs `text` as one pasted block; returns (exit code, masked output)."""
        script = self.tmp / f"{name}.sh"
        script.write_text(
            "__tour_base=$(compgen -v | sort)\n"
            f"source {self.state}\n"
            "set -euo pipefail\n"
            f"{text.replace(README_ADDRESS, self.address)}\n"
            "set +eu\n"
            f"{{ for __v in $(comm -13 <(printf '%s\\n' \"$__tour_base\") <(compgen -v | sort)); do\n"
            "    case $__v in __*|BASH_*|PIPESTATUS|FUNCNAME|_) ;; *) declare -p \"$__v\" ;; esac\n"
            f"  done; declare -f; }} > {self.state}.new && mv {self.state}.new {self.state}\n")
        try:
            res = subprocess.run(["bash", "--noprofile", "--norc", str(script)], cwd=ROOT, env=self.env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return 124, mask(out + f"\n(still running after {BLOCK_TIMEOUT} s)")
        return res.returncode, mask(res.stdout)

    def close(self):
        stop(self.proc)
        self.log.close()
        self.stdout.close()


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    t = Tour(tmp_path_factory.mktemp("readme"))
    # Pasted as printed, in the order printed, before the README's blocks.
    t.printed = printed_commands(t.stdout_path.read_text())
    t.printed_rc, t.printed_out = t.run("printed", "\n".join(t.printed))
    if t.printed_rc != 0:
        t.failed = "the commands `mayfly serve --dev` printed"
    yield t
    t.close()
    leaked = [m for p in SECRET_PATTERNS for m in p.findall((t.tmp / "server" / "log").read_text())]
    assert not leaked, f"mayfly's log holds {len(leaked)} secrets or tokens"


def test_dev_start_prints_an_admin_export_and_commands_that_work(tour):
    stdout = mask(tour.stdout_path.read_text())
    assert any(c.startswith("export MAYFLY_ADMIN_SECRET=") for c in tour.printed), stdout
    assert any("ADMIN=$(" in c and "jq -er .access_token" in c for c in tour.printed), stdout
    assert any("demo-ci:" in c for c in tour.printed), stdout
    assert tour.printed_rc == 0, f"the commands `mayfly serve --dev` printed failed:\n{tour.printed_out}"
    assert '"access_token"' in tour.printed_out, tour.printed_out  # the demo mint's answer


def test_readme_has_shell_blocks_and_their_jq_stops_on_failure():
    assert len(BLOCKS) > 10
    for b in BLOCKS:
        for m in re.finditer(r"\bjq\s+((?:-\S+\s+)*)", b.text):
            flags = "".join(f.lstrip("-") for f in m.group(1).split())
            assert "e" in flags, f"README.md:{b.line}: `jq` without -e would let a failed call go on"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs_as_written(tour, block):
    if block.skip:
        pytest.skip(f"README.md:{block.line} marked: {block.skip}")
    if tour.failed:
        pytest.skip(f"README.md:{block.line} not run: {tour.failed} failed before it")
    rc, out = tour.run(block.id, block.text)
    if rc != 0:
        tour.failed = f"README.md:{block.line}"
    assert rc == 0, f"README.md:{block.line} failed (exit {rc}):\n{block.text}\n--- output ---\n{out[-4000:]}"
