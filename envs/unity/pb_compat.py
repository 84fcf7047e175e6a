"""Makes mlagents-envs 1.1.0's generated protobuf modules load under the protobuf the rest of the stack needs.

mlagents-envs ships legacy-style `*_pb2.py` files (descriptors built by hand from `serialized_pb`), which protobuf
>= 4 refuses ("Descriptors cannot be created directly") and protobuf 6/7 cannot import at all; wandb needs
protobuf >= 5. `install()` puts an import hook in front of those modules: it reads the serialized file descriptor out
of the installed file without running it, adds it to protobuf's default pool and builds the module's messages and
enums with protobuf's own builder, as modern generated code does. Installed files are not edited and no ML-Agents
code is copied.

Example:
    >>> from envs.unity import pb_compat
    >>> pb_compat.install()
    >>> from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
    >>> UnityMessageProto().header.status
    0
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

PACKAGE = "mlagents_envs.communicator_objects"


def _serialized_descriptor(tree: ast.Module) -> bytes | None:
    """The `serialized_pb=_b('...')` bytes of a legacy generated module, or None for modern ones."""
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "serialized_pb":
            value = node.value
            if isinstance(value, ast.Call) and value.args and isinstance(value.args[0], ast.Constant):
                value = value.args[0]  # _b('...'): latin-1 text standing for bytes
            if isinstance(value, ast.Constant):
                text = value.value
                return text.encode("latin1") if isinstance(text, str) else text
    return None


def _dependencies(tree: ast.Module) -> list[str]:
    return [f"{PACKAGE}.{alias.name}" for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.module == PACKAGE for alias in node.names]


class LegacyPb2Loader(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `mlagents_envs.communicator_objects.*_pb2` and builds them from their serialized descriptors."""

    def find_spec(self, fullname, path, target=None):
        if not (fullname.startswith(PACKAGE + ".") and fullname.endswith("_pb2")):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        tree = ast.parse(Path(spec.origin).read_text())
        serialized = _serialized_descriptor(tree)
        if serialized is None:  # already modern generated code: import it as it is
            return None
        spec = importlib.util.spec_from_file_location(fullname, spec.origin, loader=self)
        spec.loader_state = (serialized, _dependencies(tree))
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        from google.protobuf import descriptor_pool
        from google.protobuf.internal import builder

        serialized, dependencies = module.__spec__.loader_state
        for dependency in dependencies:
            importlib.import_module(dependency)
        pool = descriptor_pool.Default()
        name = _file_name(serialized)
        try:
            descriptor = pool.FindFileByName(name)
        except KeyError:
            descriptor = pool.AddSerializedFile(serialized)
        namespace = module.__dict__
        namespace["DESCRIPTOR"] = descriptor
        builder.BuildMessageAndEnumDescriptors(descriptor, namespace)
        builder.BuildTopDescriptorsAndMessages(descriptor, module.__name__, namespace)


def _file_name(serialized: bytes) -> str:
    from google.protobuf import descriptor_pb2

    return descriptor_pb2.FileDescriptorProto.FromString(serialized).name


def install() -> None:
    """Puts the loader first on `sys.meta_path` (once); call before importing mlagents_envs."""
    if not any(isinstance(finder, LegacyPb2Loader) for finder in sys.meta_path):
        sys.meta_path.insert(0, LegacyPb2Loader())
