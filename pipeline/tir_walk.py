"""Walking lowered TIR statements (TVM 0.27 has no Python statement visitor for ``tirx``)."""

from __future__ import annotations


def statements(stmt):
    """``stmt`` and every statement nested in it, depth first, parents before children."""
    yield stmt
    kind = type(stmt).__name__
    if kind == "SeqStmt":
        children = list(stmt.seq)
    elif kind == "IfThenElse":
        children = [stmt.then_case, stmt.else_case]
    else:  # AttrStmt, For, While, ... carry one body; DeclBuffer, Bind, BufferStore carry none
        children = [getattr(stmt, "body", None)]
    for child in children:
        if child is not None:
            yield from statements(child)
