"""
What pydoctor needs to know of twisted-plugmgr that it cannot read itself.

  - The public names are defined in private modules (C{_plugin},
    C{_manager}, ...) and re-exported by the C{__all__} of a public package
    (C{twisted_plugmgr}, C{twisted_plugmgr.irc}, ...). pydoctor documents a
    re-exported name where it is exported, but not when the module it comes
    from lists it in an C{__all__} of its own, as ours do: here a name a
    public module re-exports from a private one is documented where it is
    exported (C{twisted_plugmgr.Plugin}), as the users import it.
  - pydoctor tells an interface from a class by its bases: a class is an
    interface when one of its bases is C{zope.interface.Interface} or an
    interface it has read. It reads only twisted_plugmgr, so
    C{IPlugin(IService)} (IService is Twisted's) looks like a plain class,
    and every C{@implementer(IPlugin)} would be reported as "not an
    interface". Twisted's interfaces (C{twisted.*.I<Name>}, as Twisted names
    them) are taken as interfaces.

C{[tool.pydoctor]} in pyproject.toml names the L{System} below as its
C{system-class}; run pydoctor with this directory on the path::

    PYTHONPATH=docs .venv/bin/pydoctor --warnings-as-errors
"""

from __future__ import annotations

import ast
import re
from collections.abc import Collection

from pydoctor import astbuilder, extensions, model
from pydoctor.extensions.zopeinterface import ZopeInterfaceClass

_TWISTED_INTERFACE = re.compile(r"^twisted(\.\w+)*\.I[A-Z]\w*$")


class _ExternalInterfaces(extensions.ModuleVisitorExt):
    """
    Mark a class whose base is one of Twisted's interfaces as an interface.
    """

    def depart_ClassDef(self, node: ast.ClassDef) -> None:
        cls = self.visitor.builder.current.contents.get(node.name)
        if not isinstance(cls, ZopeInterfaceClass) or cls.isinterface:
            return
        bases = [self.visitor.builder.current.expandName(base) for base in cls.bases]
        if any(_TWISTED_INTERFACE.match(base) for base in bases):
            cls.isinterface = True
            cls.kind = model.DocumentableKind.INTERFACE
            cls.implementedby_directly = []


def setup_pydoctor_extension(r: extensions.ExtRegistrar) -> None:
    """
    Register the visitor and the mixin (pydoctor calls this when it loads
    the extension).

    @param r: pydoctor's registrar.
    """
    r.register_astbuilder_visitor(_ExternalInterfaces)
    r.register_mixin(_OriginScope)


def _private(module: model.Documentable) -> bool:
    return any(part.startswith("_") for part in module.fullName().split("."))


class _Visitor(astbuilder.ModuleVistor):
    """
    pydoctor's module visitor, moving what a public module re-exports from a
    private one into the public module.
    """

    def _handleReExport(self, curr_mod_exports: Collection[str], origin_name: str,
                        as_name: str, origin_module: model.Module) -> bool:
        listed = origin_module.all
        ob = origin_module.contents.get(origin_name)
        if (as_name in curr_mod_exports and listed is not None and origin_name in listed
                and _private(origin_module) and not _private(self.builder.current)
                and ob is not None):
            origin_module.all = None      # what pydoctor asks before it moves a name
        try:
            moved = super()._handleReExport(curr_mod_exports, origin_name, as_name,
                                            origin_module)
        finally:
            origin_module.all = listed
        if moved and ob is not None:
            # Its docstring's names are those of the module it was written in.
            ob._plugmgr_origin = origin_module
        return moved


class _OriginScope(extensions.ClassMixin, extensions.InheritableMixin):
    """
    A moved object resolves the names its package does not know in the module
    it comes from (C{L{Failure}} in a class of C{_errors}, which imports it).
    """

    def _localNameToFullName(self, name: str) -> str:
        full: str = super()._localNameToFullName(name)
        origin = getattr(self, "_plugmgr_origin", None)
        if origin is not None and full == name:
            return origin._localNameToFullName(name)
        return full

    def isNameDefined(self, name: str) -> bool:
        origin = getattr(self, "_plugmgr_origin", None)
        return bool(super().isNameDefined(name)
                    or (origin is not None and origin.isNameDefined(name)))


class _Builder(astbuilder.ASTBuilder):
    ModuleVistor = _Visitor


class System(model.System):
    """
    pydoctor's system, with the extension and the visitor above.
    """

    custom_extensions = [__name__]
    defaultBuilder = _Builder
