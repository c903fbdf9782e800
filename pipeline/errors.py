"""Errors a user can act on.

Every error the pipeline raises for bad input derives from :class:`AtrousError`. Its message is one line that
says what is wrong and how to fix it; the CLI prints it without a traceback and exits with the class's code.
"""


def message_lines(err: BaseException) -> list[str]:
    """The non-empty lines of an exception's message, stripped (TVM's errors carry a C++ traceback before the
    line that matters)."""
    return [line.strip() for line in str(err).splitlines() if line.strip()]


def first_line(err: BaseException) -> str:
    """An exception's first line, or its type's name when it has no message."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class AtrousError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class UnknownNameError(AtrousError):
    """A model, preset, target or other registry name that does not exist."""

    def __init__(self, kind: str, name: str, valid):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} '{name}'; valid {kind}s: {', '.join(self.valid)}")


class InvalidModelError(AtrousError):
    """An ONNX file that cannot be read, or a graph TVM cannot import."""


class UnsupportedOpError(InvalidModelError):
    """ONNX operators the importer has no conversion for (all of them, in one message)."""

    def __init__(self, ops, source: str):
        self.ops = sorted(set(ops))
        super().__init__(
            f"{source}: unsupported ONNX operator(s): {', '.join(self.ops)}. "
            "Re-export the model without them (or replace them with supported ops) and try again"
        )


class InputMismatchError(AtrousError):
    """Inputs given at run time that do not match the compiled model's shapes or dtypes."""


class ToolchainError(AtrousError):
    """A compiler, emulator or library the target needs is not installed."""


class DeviceError(AtrousError):
    """A device that cannot be reached, or a run on it that failed (not a mismatch)."""

    exit_code = 3


class VerificationError(AtrousError):
    """The compiled model's outputs differ from the reference beyond tolerance."""

    exit_code = 1


class CompilerBugError(AtrousError):
    """An exception inside the compiler that no check caught: a bug, reported in one line with its stage (the
    traceback is chained), never as a bare crash. The fuzzer (pipeline/fuzz.py) counts it as a failure."""

    exit_code = 4

    def __init__(self, stage: str, err: BaseException):
        lines = message_lines(err)
        detail = f"{type(err).__name__}: {lines[-1][:300]}" if lines else type(err).__name__
        super().__init__(f"internal compiler error while {stage} ({detail}); please report it with the model "
                         "and the traceback ATROUS_DEBUG=1 prints")
