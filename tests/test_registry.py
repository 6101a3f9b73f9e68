"""The backend registry hides a built-in backend only when an optional extra is not installed: any other
import failure inside a built-in backend module is a bug and propagates (it never reads "unknown backend")."""

from __future__ import annotations

from pathlib import Path

import pytest

from lovr_hf.failures import UnknownName
from lovr_hf.registry import Registry


def _module(folder: Path, name: str, body: str) -> str:
    (folder / f"{name}.py").write_text(body)
    return name


@pytest.fixture
def mods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_missing_optional_extra_hides_only_its_backend(mods: Path) -> None:
    reg: Registry[object] = Registry("thing")
    ok = _module(mods, "lovr_reg_ok_mod", "from lovr_hf.registry import Registry\n")
    extra = _module(mods, "lovr_reg_extra_mod", "import lovr_no_such_extra_pkg_zz  # an extra not installed\n")
    reg._modules = (extra, ok)

    @reg.register("present")
    class Present:
        pass

    assert reg.names() == ["present"]
    with pytest.raises(UnknownName, match="unknown thing 'gone'"):
        reg.get("gone")


@pytest.mark.parametrize("body", [
    "from lovr_hf.schema import no_such_name_in_schema\n",  # ImportError (a name a lovr_hf module lacks)
    "import lovr_hf.no_such_submodule_zz\n",  # ModuleNotFoundError of a lovr_hf module
])
def test_a_broken_import_inside_a_builtin_backend_propagates(mods: Path, body: str) -> None:
    name = _module(mods, "lovr_reg_broken_" + ("name" if "schema" in body else "module"), body)
    reg: Registry[object] = Registry("thing", (name,))
    with pytest.raises(ImportError) as exc:
        reg.get("anything")
    assert not isinstance(exc.value, UnknownName)
    with pytest.raises(ImportError):  # again on the next lookup: never silently "unknown" the second time
        reg.names()
