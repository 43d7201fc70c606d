"""`bie` as a Unix tool, run as users run it: the installed console script, in real shell pipelines.

These tests run twice in CI: with the newest Typer/Click pip resolves (`make test`) and with the
lowest versions pyproject.toml allows (`make test-lowest`, a second venv), because usage-error
handling depends on which Click classes Typer raises.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_safetensors

BIE = Path(sys.executable).parent / "bie"


def run(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIE), *args], input=stdin, capture_output=True, timeout=300, cwd=cwd)


def shell(command: str, cwd: Path, umask: str = "022") -> subprocess.CompletedProcess:
    """Run a pipeline with `bie` on PATH (the installed script) and pipefail, so any stage failing fails it."""
    env = {**os.environ, "PATH": f"{BIE.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"umask {umask} && {command}"],
        capture_output=True, timeout=300, cwd=cwd, env=env,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_console_script_is_installed_beside_python():
    assert BIE.exists(), f"no bie console script next to {sys.executable}; pip install the project"


# -- usage errors, --version, bare `bie` -----------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "m.cai", "--bogus"], "No such option: --bogus"),
        (["compres", "x"], "No such command 'compres'"),
        (["compress"], "Missing argument"),
        (["compress", "x.safetensors", "-o", "y.cai", "--threads", "two"], "--threads"),
        (["compress", "x.safetensors", "-o", "y.cai", "--threads", "0"], "--threads"),
        (["decompress", "m.cai"], "Missing option"),
        (["--bogus"], "No such option: --bogus"),
    ],
)
def test_usage_errors_exit_2_with_the_usage_line_on_stderr(args, message, tmp_path):
    result = run(*args, cwd=tmp_path)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert result.stdout == b""
    assert stderr.startswith("Usage: bie"), stderr
    assert message in stderr
    assert "internal error" not in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag):
    from bie_cli import __version__

    result = run(flag)
    assert (result.returncode, result.stdout.decode(), result.stderr) == (0, f"bie {__version__}\n", b"")


def test_bare_bie_prints_help_on_stderr_and_exits_2():
    """Click's convention for a group called without a command (a usage error), on every Click version."""
    result = run()
    assert result.returncode == 2
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert "Usage: bie" in stderr and "compress" in stderr and "decompress" in stderr


def test_help_exits_0_on_stdout():
    result = run("--help")
    assert result.returncode == 0 and b"Usage: bie" in result.stdout and result.stderr == b""


def test_bad_input_is_one_line_exit_2_and_corrupt_is_exit_3(tmp_path):
    result = run("inspect", str(tmp_path / "missing.cai"))
    assert result.returncode == 2
    assert result.stderr.decode().startswith("bie: error: ") and result.stderr.count(b"\n") == 1
    garbage = tmp_path / "garbage.cai"
    garbage.write_bytes(b"\0" * 200)
    result = run("inspect", str(garbage))
    assert result.returncode == 3, result.stderr


# -- `-` is stdin / stdout ----------------------------------------------------------------


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(11)
    return write_safetensors(tmp_path / "model.safetensors", {
        "b.weight": rng.standard_normal((300, 40)).astype(np.float32),  # several chunks at --chunk-size 8K
        "a.bias": rng.standard_normal(40).astype(np.float16),
        "ids": np.arange(50, dtype=np.int64),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }, metadata={"format": "pt"})


def test_safetensors_through_pipes_both_ways(model, tmp_path):
    command = (
        f"cat {model} | bie compress - -o - -q --chunk-size 8K --threads 2 "
        "| bie decompress - -o - --format safetensors -q | sha256sum"
    )
    result = shell(command, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split()[0] == sha256(model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no file named -


def test_compress_from_stdin_equals_compress_from_the_file(model, tmp_path):
    result = shell(f"bie compress {model} -o file.cai -q && cat {model} | bie compress - -o piped.cai -q "
                   "&& bie decompress piped.cai -o - --format safetensors -q | cmp - " + str(model), tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    # identical but for the source name recorded in the header
    assert abs((tmp_path / "file.cai").stat().st_size - (tmp_path / "piped.cai").stat().st_size) < 64


def test_inspect_and_verify_read_stdin_from_a_pipe_and_a_redirect(model, tmp_path):
    result = shell(
        f"bie compress {model} -o m.cai -q"
        " && cat m.cai | bie inspect - --json > piped.json"
        " && bie inspect - --json < m.cai > redirected.json"
        " && cat m.cai | bie verify - -q"
        f" && cat {model} | bie verify m.cai --against - -q"
        " && bie verify - -q < m.cai",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr.decode()
    import json

    piped = json.loads((tmp_path / "piped.json").read_text())
    assert piped == json.loads((tmp_path / "redirected.json").read_text())
    assert piped["tensors"] == 4 and piped["stored_bytes"] == (tmp_path / "m.cai").stat().st_size


def test_verify_against_a_different_stream_fails_with_exit_1(model, tmp_path):
    other = write_safetensors(tmp_path / "other.safetensors", {
        "b.weight": np.zeros((300, 40), np.float32), "a.bias": np.zeros(40, np.float16),
        "ids": np.arange(50, dtype=np.int64), "empty": np.zeros((0, 3), np.float32),
    })
    result = shell(f"bie compress {model} -o m.cai -q && cat {other} | bie verify m.cai --against - -q", tmp_path)
    assert result.returncode == 1, result.stderr.decode()
    assert b"MISMATCH b.weight" in result.stdout


def test_pytorch_to_stdout(model, tmp_path):
    import torch
    from safetensors.torch import load_file

    result = shell(f"bie compress {model} -o m.cai -q && bie decompress m.cai -o - --format pytorch -q | cat > m.pt",
                   tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    original, back = load_file(str(model)), torch.load(tmp_path / "m.pt", weights_only=True)
    assert sorted(back) == sorted(original)
    assert all(torch.equal(back[name], original[name]) for name in original)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("bie decompress m.cai -o - -q | cat", "--format"),
        ("bie decompress m.cai -o - --format onnx -q | cat", "no ONNX graph"),
        ("bie compress missing.safetensors -o x.cai | cat", "no such file"),
        ("cat m.cai | bie compress - -o x.cai", "not a safetensors file"),
        ("cat m.cai | bie compress - -o x.cai --format pytorch", "cannot be read from a pipe"),
        ("bie verify - --against - < m.cai", "both be read from stdin"),
        ("bie decompress m.cai -o - --format safetensors --json | cat", "both want stdout"),
        ("bie compress - -o x.cai < /dev/null", "stdin is empty"),
        ("bie bench -o - --quick", "cannot go to stdout"),
    ],
)
def test_stdio_refusals_exit_2_and_create_nothing(model, tmp_path, command, message):
    assert shell(f"bie compress {model} -o m.cai -q", tmp_path).returncode == 0
    before = sorted(p.name for p in tmp_path.iterdir())
    result = shell(command, tmp_path)
    assert result.returncode == 2, result.stderr.decode()
    assert message in result.stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_onnx_with_external_data_refuses_stdout(tmp_path):
    import onnx
    from onnx_helpers import synthetic_model

    onnx.save(synthetic_model(size=64), str(tmp_path / "m.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="m.onnx.data", size_threshold=0)
    result = shell("bie compress m.onnx -o m.cai -q && bie decompress m.cai -o - --format onnx -q | cat", tmp_path)
    assert result.returncode == 2
    assert "two files cannot go to stdout" in result.stderr.decode()
    result = shell("bie decompress m.cai -o - --format onnx --no-external-data -q > back.onnx", tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    back = onnx.load(str(tmp_path / "back.onnx"))
    assert len(back.graph.initializer) == len(onnx.load(str(tmp_path / "m.onnx")).graph.initializer)


def test_a_file_named_dash_is_dot_slash_dash(model, tmp_path):
    (tmp_path / "-").write_bytes(model.read_bytes())
    result = shell("bie compress ./- -o ./-.cai -q && bie decompress ./-.cai -o ./- --format safetensors -f -q"
                   " && bie verify ./-.cai --against ./- -q", tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert sha256(tmp_path / "-") == sha256(model)


# -- permissions follow the umask -----------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [("022", 0o644), ("027", 0o640)])
def test_every_output_gets_the_umask_permissions(model, tmp_path, umask, mode):
    from onnx_helpers import synthetic_model

    synthetic = synthetic_model(size=64)
    import onnx

    onnx.save(synthetic, str(tmp_path / "m.onnx"))
    result = shell(
        f"bie compress {model} -o m.cai -q"
        " && bie decompress m.cai -o out.safetensors -q && bie decompress m.cai -o out.pt -q"
        " && bie compress m.onnx -o onnx.cai -q && bie decompress onnx.cai -o out.onnx --external-data -q"
        f" && bie compress {model} -o m.cai -q --force",  # replacing a file gives it the umask mode too
        tmp_path, umask=umask,
    )
    assert result.returncode == 0, result.stderr.decode()
    outputs = ["m.cai", "out.safetensors", "out.pt", "onnx.cai", "out.onnx", "out.onnx.data"]
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in outputs}
    assert modes == dict.fromkeys(outputs, mode)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_bench_reports_get_the_umask_permissions(tmp_path, umask, mode):
    from bie_cli.paths import write_file_atomically

    previous = os.umask(umask)
    try:
        write_file_atomically(str(tmp_path / "report.html"), "<html></html>")
        write_file_atomically(str(tmp_path / "plot.png"), b"\x89PNG")
    finally:
        os.umask(previous)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {"report.html": mode, "plot.png": mode}


# -- errors name what the caller wrote: arguments for the library, flags for the CLI ----------


def test_library_errors_name_arguments_and_the_cli_names_flags(model, tmp_path):
    import bie_cli
    from bie_cli.errors import BadInputError

    with pytest.raises(BadInputError, match=r"^chunk_size must be a positive number of bytes, got 0$"):
        bie_cli.compress_model(model, tmp_path / "x.cai", chunk_size=0)
    with pytest.raises(BadInputError, match=r"^threads must be at least 1, got 0$"):
        bie_cli.decompress_model(tmp_path / "x.cai", tmp_path / "x.safetensors", threads=0)
    result = run("compress", str(model), "-o", str(tmp_path / "x.cai"), "--chunk-size", "0")
    assert (result.returncode, result.stderr.decode()) == (2, "bie: error: --chunk-size must be positive\n")
    result = run("decompress", "x.cai", "-o", "x.safetensors", "--bits", "0", cwd=tmp_path)
    assert result.returncode == 2 and "'--bits'" in result.stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


# -- start-up: what --help, --version and inspect import; the first run's numba cache ------


def test_help_version_inspect_and_small_verify_import_nothing_heavy(model, tmp_path):
    """The start-up budget (README, "Installing and the first run"): --help, --version and inspect import no numpy, pydantic or
    rich markdown; verifying a small lossless container decodes in numpy without importing numba."""
    assert run("compress", str(model), "-o", str(tmp_path / "m.cai"), "-q").returncode == 0
    probe = (
        "import sys\n"
        "from bie_cli.cli.app import main\n"
        "for args in (['--help'], ['--version'], ['inspect', sys.argv[1]], ['inspect', sys.argv[1], '--json']):\n"
        "    assert main(args) == 0, args\n"
        "light = ('numpy', 'pydantic', 'rich.markdown', 'importlib.metadata')\n"
        "print('LIGHT', sorted(m for m in light if m in sys.modules), file=sys.stderr)\n"
        "assert main(['verify', sys.argv[1], '-q']) == 0\n"
        "heavy = ('torch', 'onnx', 'numba', 'onnxruntime', 'scipy', 'ml_dtypes', 'safetensors', 'pydantic')\n"
        "print('HEAVY', sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "m.cai")], capture_output=True, timeout=120)
    # Typer before 0.24 imports its rich help (rich.markdown) whenever rich is installed: the budget
    # holds on the newest Typer pip resolves, the floor only has to work (make test-lowest).
    typer_version = tuple(int(part) for part in importlib.metadata.version("typer").split(".")[:2])
    expected_light = b"LIGHT []" if typer_version >= (0, 24) else b"LIGHT ['rich.markdown']"
    assert expected_light in completed.stderr, completed.stderr.decode()[-800:]
    assert b"HEAVY []" in completed.stderr, completed.stderr.decode()[-800:]


def test_the_process_ends_without_teardown_but_with_atexit_handlers_and_flushed_output(tmp_path):
    """`bie` skips the interpreter's teardown (0.3-0.5 s once numba is loaded) but still runs
    atexit handlers, flushes buffered stdout/stderr and keeps the exit code; a non-daemon thread
    still running makes it a normal exit that waits for the thread."""
    probe = (
        "import atexit, sys, threading, time\n"
        "from bie_cli.cli.app import exit_without_teardown\n"
        "atexit.register(lambda: open(sys.argv[1], 'w').write('ran'))\n"
        "sys.stdout.write('x' * 100000)\n"  # buffered, not flushed
        "sys.stderr.write('last words')\n"
        "if sys.argv[2] == 'thread':\n"
        "    threading.Thread(target=lambda: (time.sleep(0.3), open(sys.argv[1] + '.t', 'w').write('done'))).start()\n"
        "exit_without_teardown(3)\n"
        "print('not reached')\n"
    )
    for mode in ("plain", "thread"):
        marker = tmp_path / f"atexit-{mode}"
        completed = subprocess.run([sys.executable, "-c", probe, str(marker), mode], capture_output=True, timeout=60)
        assert completed.returncode == 3, completed.stderr.decode()[-800:]
        assert completed.stdout == b"x" * 100000
        assert completed.stderr.endswith(b"last words")
        assert marker.read_text() == "ran"
        if mode == "thread":
            assert Path(f"{marker}.t").read_text() == "done"


def test_precompiled_kernels_cover_compress_decompress_and_verify(model, tmp_path):
    """setup.py ships the cache bie_cli/_precompile.py fills; a run after it must compile nothing, and
    loads the cached kernels without numba's registries.

    Compilations are counted with numba's event API in the process that runs the commands."""
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    completed = subprocess.run([sys.executable, "-m", "bie_cli._precompile", "--quiet"], env=environment,
                               capture_output=True, timeout=900)
    assert completed.returncode == 0, completed.stderr.decode()[-800:]
    probe = (
        "import sys\n"
        "from numba.core import event\n"
        "compiled = []\n"
        "class Count(event.Listener):\n"
        "    def on_start(self, ev): pass\n"
        "    def on_end(self, ev): compiled.append(ev.data['dispatcher'].py_func.__qualname__)\n"
        "event.register('numba:compile', Count())\n"
        "from bie_cli.cli.app import main\n"
        "src, out = sys.argv[1], sys.argv[2]\n"
        "for args in (['compress', src, '-o', out + '.cai', '-q', '--threads', '2'],\n"
        "             ['compress', src, '-o', out + '-q.cai', '-q', '-s', 'quant:bits=8,step=0.2,granularity=tensor'],\n"
        "             ['decompress', out + '.cai', '-o', out + '.safetensors', '-q'],\n"
        "             ['decompress', out + '-q.cai', '-o', out + '-q.safetensors', '-q'],\n"
        "             ['verify', out + '.cai', '--against', src, '-q'], ['verify', out + '-q.cai', '-q']):\n"
        "    assert main(args) == 0, args\n"
        "print('COMPILED', sorted(set(compiled)), file=sys.stderr)\n"
        "refresh_only = ('numba.cpython.heapq', 'numba.np.random.generator_methods', 'numba.experimental.jitclass.base')\n"
        "print('REFRESHED', sorted(m for m in refresh_only if m in sys.modules), file=sys.stderr)\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe, str(model), str(tmp_path / "m")], env=environment,
                               capture_output=True, timeout=600)
    assert b"COMPILED []" in completed.stderr, completed.stderr.decode()[-800:]
    # cached kernels load without numba's target-context refresh (codecs/_jit.py), whose registries only compiling needs
    assert b"REFRESHED []" in completed.stderr, completed.stderr.decode()[-800:]
