"""MemoryDenyWriteExecute=yes: the model runtimes work without writable+executable memory.

systemd 252 implements the setting as a seccomp filter: mmap with PROT_WRITE|PROT_EXEC and
mprotect/pkey_mprotect adding PROT_EXEC fail with EPERM. A child process installs the same
filter, proves it bites, then loads and runs ONNX Runtime and LiteRT on real model files.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "models" / "artifacts"

# (audit arch, mmap, mprotect, pkey_mprotect) from the kernel's syscall tables.
_ARCHES = {
    "x86_64": (0xC000003E, 9, 10, 329),
    "aarch64": (0xC00000B7, 222, 226, 288),
}
PROT_WRITE, PROT_EXEC = 2, 4


class _Filter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    )


class _Prog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter)))


def _deny_write_execute() -> None:
    """Install systemd's MemoryDenyWriteExecute filter on this process."""
    arch, mmap, mprotect, pkey = _ARCHES[platform.machine()]
    ld, jeq, and_, jset, ret = 0x20, 0x15, 0x54, 0x45, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | errno.EPERM
    args2 = 16 + 2 * 8  # seccomp_data.args[2], low word (little endian)
    program = [
        (ld, 0, 0, 4),  # 0: arch
        (jeq, 0, 10, arch),  # 1: foreign arch -> 12 allow
        (ld, 0, 0, 0),  # 2: syscall number
        (jeq, 3, 0, mmap),  # 3: -> 7
        (jeq, 5, 0, mprotect),  # 4: -> 10
        (jeq, 4, 0, pkey),  # 5: -> 10
        (ret, 0, 0, allow),  # 6
        (ld, 0, 0, args2),  # 7: mmap prot
        (and_, 0, 0, PROT_WRITE | PROT_EXEC),  # 8
        (jeq, 3, 2, PROT_WRITE | PROT_EXEC),  # 9: both -> 13 deny, else 12
        (ld, 0, 0, args2),  # 10: mprotect prot
        (jset, 1, 0, PROT_EXEC),  # 11: exec -> 13 deny, else 12
        (ret, 0, 0, allow),  # 12
        (ret, 0, 0, deny),  # 13
    ]
    filters = (_Filter * len(program))(*(_Filter(*i) for i in program))
    prog = _Prog(len(program), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def _child(onnx_files: list[str], tflite_files: list[str]) -> None:
    _deny_write_execute()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    )
    map_private_anonymous = 0x22
    wx = libc.mmap(None, 4096, 1 | PROT_WRITE | PROT_EXEC, map_private_anonymous, -1, 0)
    assert wx == ctypes.c_void_p(-1).value, "the filter let a W+X mapping through"
    assert ctypes.get_errno() == errno.EPERM

    import onnxruntime as ort  # noqa: PLC0415 - imported under the filter on purpose

    for path in onnx_files:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feeds = {
            i.name: np.zeros([d if isinstance(d, int) else 2 for d in i.shape], np.float32)
            for i in session.get_inputs()
        }
        outputs = session.run(None, feeds)
        assert all(np.all(np.isfinite(o)) for o in outputs), path
        print(f"onnx ok {path}")
    for path in tflite_files:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

        interpreter = Interpreter(model_path=path)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
        print(f"litert ok {path}")


def _tiny_onnx(path: Path) -> None:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [
            numpy_helper.from_array(rng.standard_normal((32, 64)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.standard_normal((64, 4)).astype(np.float32), "w2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.mark.skipif(platform.machine() not in _ARCHES, reason="syscall numbers known for 2 arches")
def test_runtimes_survive_memory_deny_write_execute(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.onnx"
    _tiny_onnx(tiny)
    onnx_files = [str(tiny), *map(str, sorted(ARTIFACTS.glob("*.onnx")))]
    tflite_files = list(map(str, sorted(ARTIFACTS.glob("*.tflite"))))
    done = subprocess.run(
        [sys.executable, __file__, repr((onnx_files, tflite_files))],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for path in onnx_files:
        assert f"onnx ok {path}" in done.stdout
    for path in tflite_files:
        assert f"litert ok {path}" in done.stdout


if __name__ == "__main__":
    import ast

    onnx_arg, tflite_arg = ast.literal_eval(sys.argv[1])
    _child(onnx_arg, tflite_arg)
