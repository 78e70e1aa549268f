"""PeachPy ``Function`` -> :class:`~bitsearch.records.MachineCode`: encode for the System V ABI
and derive the signature from the function's declared arguments (as PeachPy itself does)."""

from __future__ import annotations

from peachpy.x86_64 import Function
from peachpy.x86_64.abi import system_v_x86_64_abi

from bitsearch.records import Arg, MachineCode, Signature


def signature_of(function: Function) -> Signature:
    """The C signature PeachPy's declared arguments give ``function``."""
    returns = "void" if function.result_type is None else str(function.result_type)
    return Signature(tuple(Arg(a.name, str(a.c_type)) for a in function.arguments), returns)


def encode(function: Function) -> MachineCode:
    """Position-independent bytes, GNU listing, loop counts (``bitsearch_loops``, set by emitters
    that count their loops) and signature of an emitted function."""
    abi_function = function.finalize(system_v_x86_64_abi)
    encoded = abi_function.encode()
    if encoded.code_section.relocations or len(encoded.const_section.content):
        raise RuntimeError(f"{function.name}: emitted code is not position-independent")
    return MachineCode(
        name=function.name,
        code=bytes(encoded.code_section.content),
        listing=abi_function.format(assembly_format="gas"),
        loops=tuple(getattr(function, "bitsearch_loops", ())),
        signature=signature_of(function),
    )


__all__ = ["encode", "signature_of"]
