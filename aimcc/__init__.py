"""aimcc: compile ONNX transformers onto analog in-memory-computing tiles and RISC-V clusters."""

__version__ = "0.1.0"
