"""The test dialect: what a `unit_tests` test may contain, and its rewrite for the harness.

A test is checked and rewritten here, on the server, before any sandbox starts; a test outside the
dialect makes its item an error naming the construct (never a pass, never a 0). The rewrite sends
every operation that could call a method of the completion's objects through the harness's own
functions (`__tandem_<name>`, defined in harness.py, reachable from the test only):

    assert X                  -> __tandem_assert(X)           strict truth, the message is dropped
    A == B, <, in, is, ...    -> __tandem_compare(('==',), A, B)   exact builtins only, else the test fails
    A and B, A or B           -> __tandem_and(lambda: A, lambda: B)  short-circuit, strict truth
    not X, `if X`, `... if X else ...`, comprehension filters -> __tandem_not(X) / __tandem_truth(X)
    f(x), obj.attr, a[i], a + b, -a -> __tandem_call / attr / item / binop / unary: a completion's
                                   callable runs on a separate worker thread, never on the test's
    for x in X, a, b = X      -> __tandem_iter(X), __tandem_unpack(X, 2): iterated as a snapshot
    {a, b}, {k: v}, set/dict comprehensions -> __tandem_set / __tandem_dict: hashed by the harness
    (generator expressions become list comprehensions: a generator frame would run test code
    wherever the completion resumed it)
    import m / from m import n -> __tandem_module('m', ...) / __tandem_from('m', 'n'): the module as
                                   imported before the completion ran, its namespace copied then

Allowed statements: assert, assignment to names (and tuples of names), augmented assignment to a
name, expression statements, `for` (with break/continue), `if`, import/from-import of absolute
modules, pass. Everything else (def, class, lambda, while, with, try, raise, del, global, walrus,
f-strings, starred arguments, attribute/subscript assignment, dunder names) is refused, because each
either runs completion code on the test's thread or lets the test reach the harness.

The rewritten body is wrapped in `try: <body>; __tandem_done(NONCE) except BaseException: pass`:
the pass is written by the test's own last statement (the harness puts the run's nonce in place of
NONCE_PLACEHOLDER among the test's constants; `__tandem_done` writes it only when given it), and no
exception from the test reaches a hook the completion may have installed.
"""

import ast
from dataclasses import dataclass

HELPER_PREFIX = "__tandem_"
# The argument of the test's last statement, `__tandem_done(NONCE_PLACEHOLDER)`: the harness swaps
# this constant of the compiled test for the run's nonce, so the nonce lives only among the test's
# own constants (frame.f_code is denied to user code) and `__tandem_done` alone cannot pass a run.
NONCE_PLACEHOLDER = "\x00tandem:nonce"


class DialectError(ValueError):
    """A test uses a construct outside the dialect; the message names it and its line."""


@dataclass(frozen=True, slots=True)
class PreparedTest:
    """A test rewritten for the harness: its source and the modules it imports (imported by the
    harness before the completion runs, so the completion cannot replace them)."""

    source: str
    modules: tuple[str, ...]


_STATEMENTS_REFUSED = {
    ast.FunctionDef: "function definitions (def)",
    ast.AsyncFunctionDef: "function definitions (async def)",
    ast.ClassDef: "class definitions",
    ast.Return: "return",
    ast.Delete: "del",
    ast.AnnAssign: "annotated assignments",
    ast.AsyncFor: "async for",
    ast.While: "while loops",
    ast.With: "with statements",
    ast.AsyncWith: "async with",
    ast.Raise: "raise",
    ast.Try: "try statements",
    ast.Global: "global",
    ast.Nonlocal: "nonlocal",
}
_EXPRESSIONS_REFUSED = {
    ast.Lambda: "lambda",
    ast.NamedExpr: "assignment expressions (:=)",
    ast.Yield: "yield",
    ast.YieldFrom: "yield from",
    ast.Await: "await",
    ast.JoinedStr: "f-strings",
    ast.FormattedValue: "f-strings",
    ast.Starred: "starred expressions (*x)",
}
_COMPARE_OPS = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is",
    ast.IsNot: "is not",
}
_BIN_OPS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.MatMult: "@",
}
_UNARY_OPS = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~"}


def prepare_test(source: str) -> PreparedTest:
    """Check `source` against the dialect and rewrite it; DialectError names what is refused.

    A SyntaxError (or ValueError for a null byte) propagates as such: the test is not Python.
    """
    tree = ast.parse(source, "<test>", "exec")
    modules: list[str] = []
    body = _Rewriter(modules).statements(tree.body)
    done = ast.Expr(_helper("done", ast.Constant(NONCE_PLACEHOLDER)))
    handler = ast.ExceptHandler(type=ast.Name("BaseException", ast.Load()), name=None, body=[ast.Pass()])
    wrapped = ast.Try(body=[*body, done], handlers=[handler], orelse=[], finalbody=[])
    module = ast.fix_missing_locations(ast.Module(body=[wrapped], type_ignores=[]))
    source = ast.unparse(module)
    # What only the compiler rejects (`break` outside a loop) is the test's error, found here
    # rather than as a sandbox that fails to start.
    compile(source, "<test>", "exec")
    return PreparedTest(source, tuple(dict.fromkeys(modules)))


def _helper(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(ast.Name(HELPER_PREFIX + name, ast.Load()), list(args), [])


def _refuse(node: ast.AST, what: str) -> DialectError:
    line = getattr(node, "lineno", None)
    where = f"line {line}: " if line is not None else ""
    return DialectError(f"{where}{what} are not allowed in tests (see docs/sandbox.md, test dialect)")


class _Rewriter:
    """One pass over a test's tree: refuses what is outside the dialect, rewrites the rest."""

    def __init__(self, modules: list[str]) -> None:
        self.modules = modules

    # --- statements -------------------------------------------------------------------------
    def statements(self, nodes: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for node in nodes:
            out.extend(self.statement(node))
        return out

    def statement(self, node: ast.stmt) -> list[ast.stmt]:
        if type(node) in _STATEMENTS_REFUSED:
            raise _refuse(node, _STATEMENTS_REFUSED[type(node)])
        if isinstance(node, ast.Assert):
            return [ast.Expr(_helper("assert", self.expr(node.test)))]
        if isinstance(node, ast.Assign):
            value = self.expr(node.value)
            targets = [self.target(target) for target in node.targets]
            if any(isinstance(target, ast.Tuple) for target in targets):
                if len(targets) != 1:
                    raise _refuse(node, "chained assignments to tuples")
                value = _helper("unpack", value, ast.Constant(len(targets[0].elts)))  # type: ignore[attr-defined]
            return [ast.Assign(targets, value)]
        if isinstance(node, ast.AugAssign):
            if not isinstance(node.target, ast.Name):
                raise _refuse(node, "augmented assignments to anything but a name")
            name = self.name(node.target)
            op = _BIN_OPS[type(node.op)]
            value = _helper("binop", ast.Constant(op), ast.Name(name.id, ast.Load()), self.expr(node.value))
            return [ast.Assign([ast.Name(name.id, ast.Store())], value)]
        if isinstance(node, ast.Expr):
            return [ast.Expr(self.expr(node.value))]
        if isinstance(node, ast.For):
            target, items = self.loop_target(node.target, self.expr(node.iter))
            return [ast.For(target, items, self.statements(node.body), self.statements(node.orelse))]
        if isinstance(node, ast.If):
            test = _helper("truth", self.expr(node.test))
            return [ast.If(test, self.statements(node.body), self.statements(node.orelse))]
        if isinstance(node, ast.Import):
            return [self.import_(alias) for alias in node.names]
        if isinstance(node, ast.ImportFrom):
            if node.level or node.module is None:
                raise _refuse(node, "relative imports")
            self.modules.append(node.module)
            out = []
            for alias in node.names:
                if alias.name == "*":
                    raise _refuse(node, "star imports")
                bound = self.checked_name(node, alias.asname or alias.name)
                # `from xml.etree import ElementTree` names a submodule: tried too (a name that is
                # not one fails to import, harmlessly, before user code).
                self.modules.append(f"{node.module}.{alias.name}")
                value = _helper("from", ast.Constant(node.module), ast.Constant(alias.name))
                out.append(ast.Assign([ast.Name(bound, ast.Store())], value))
            return out
        if isinstance(node, ast.Pass | ast.Break | ast.Continue):
            return [node]
        raise _refuse(node, f"{type(node).__name__} statements")

    def import_(self, alias: ast.alias) -> ast.stmt:
        self.modules.append(alias.name)
        if alias.asname:
            bound, value = alias.asname, _helper("module", ast.Constant(alias.name))
        else:
            # `import os.path` binds `os`, after importing os.path.
            bound = alias.name.partition(".")[0]
            value = _helper("module", ast.Constant(bound))
        return ast.Assign([ast.Name(self.checked_name(alias, bound), ast.Store())], value)

    def target(self, node: ast.expr) -> ast.expr:
        """An assignment target: a name or a flat tuple/list of names."""
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Tuple | ast.List):
            names = [self.name(element) if isinstance(element, ast.Name) else None for element in node.elts]
            if any(name is None for name in names):
                raise _refuse(node, "assignments to anything but names")
            return ast.Tuple(names, ast.Store())  # type: ignore[arg-type]
        raise _refuse(node, "assignments to attributes or subscripts")

    def loop_target(self, target: ast.expr, items: ast.expr) -> tuple[ast.expr, ast.expr]:
        """A `for` target and its iterable: a tuple target unpacks every item through the harness."""
        checked = self.target(target)
        if isinstance(checked, ast.Tuple):
            return checked, _helper("iter_unpack", items, ast.Constant(len(checked.elts)))
        return checked, _helper("iter", items)

    # --- expressions ------------------------------------------------------------------------
    def name(self, node: ast.Name) -> ast.Name:
        self.checked_name(node, node.id)
        return ast.Name(node.id, node.ctx)

    def checked_name(self, node: ast.AST, name: str) -> str:
        if name.startswith("__"):
            raise _refuse(node, f"dunder names ({name})")
        return name

    def exprs(self, nodes: list[ast.expr]) -> list[ast.expr]:
        return [self.expr(node) for node in nodes]

    def expr(self, node: ast.expr) -> ast.expr:
        if type(node) in _EXPRESSIONS_REFUSED:
            raise _refuse(node, _EXPRESSIONS_REFUSED[type(node)])
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and "\x00tandem" in node.value:
                raise _refuse(node, "strings holding the harness's placeholder")
            return node
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Compare):
            ops = ast.Tuple([ast.Constant(_COMPARE_OPS[type(op)]) for op in node.ops], ast.Load())
            return _helper("compare", ops, self.expr(node.left), *self.exprs(node.comparators))
        if isinstance(node, ast.BoolOp):
            thunks = [ast.Lambda(_no_arguments(), self.expr(value)) for value in node.values]
            return _helper("and" if isinstance(node.op, ast.And) else "or", *thunks)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return _helper("not", self.expr(node.operand))
            return _helper("unary", ast.Constant(_UNARY_OPS[type(node.op)]), self.expr(node.operand))
        if isinstance(node, ast.BinOp):
            op = ast.Constant(_BIN_OPS[type(node.op)])
            return _helper("binop", op, self.expr(node.left), self.expr(node.right))
        if isinstance(node, ast.IfExp):
            test = _helper("truth", self.expr(node.test))
            return ast.IfExp(test, self.expr(node.body), self.expr(node.orelse))
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Constant):
                raise _refuse(node, "calls of constants")
            if any(keyword.arg is None for keyword in node.keywords):
                raise _refuse(node, "keyword unpacking (**kwargs)")
            args = ast.Tuple(self.exprs(node.args), ast.Load())
            keys = [ast.Constant(keyword.arg) for keyword in node.keywords]
            kwargs = ast.Dict(keys, self.exprs([keyword.value for keyword in node.keywords]))  # type: ignore[arg-type]
            return _helper("call", self.expr(node.func), args, kwargs)
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("__"):
                raise _refuse(node, f"dunder attributes (.{node.attr})")
            return _helper("attr", self.expr(node.value), ast.Constant(node.attr))
        if isinstance(node, ast.Subscript):
            return _helper("item", self.expr(node.value), self.expr(node.slice))
        if isinstance(node, ast.Slice):
            bounds = (node.lower, node.upper, node.step)
            parts = [ast.Constant(None) if part is None else self.expr(part) for part in bounds]
            return _helper("slice", *parts)
        if isinstance(node, ast.List | ast.Tuple):
            return type(node)(self.exprs(node.elts), ast.Load())
        if isinstance(node, ast.Set):
            return _helper("set", *self.exprs(node.elts))
        if isinstance(node, ast.Dict):
            if any(key is None for key in node.keys):
                raise _refuse(node, "dict unpacking (**d)")
            pairs = [
                ast.Tuple([self.expr(key), self.expr(value)], ast.Load())  # type: ignore[arg-type]
                for key, value in zip(node.keys, node.values, strict=True)
            ]
            return _helper("dict", *pairs)
        if isinstance(node, ast.ListComp | ast.GeneratorExp):
            return ast.ListComp(self.expr(node.elt), self.comprehensions(node.generators))
        if isinstance(node, ast.SetComp):
            return _helper("set_of", ast.ListComp(self.expr(node.elt), self.comprehensions(node.generators)))
        if isinstance(node, ast.DictComp):
            pair = ast.Tuple([self.expr(node.key), self.expr(node.value)], ast.Load())
            return _helper("dict_of", ast.ListComp(pair, self.comprehensions(node.generators)))
        raise _refuse(node, f"{type(node).__name__} expressions")

    def comprehensions(self, generators: list[ast.comprehension]) -> list[ast.comprehension]:
        out = []
        for generator in generators:
            if generator.is_async:
                raise _refuse(generator.iter, "async comprehensions")
            target, items = self.loop_target(generator.target, self.expr(generator.iter))
            ifs = [_helper("truth", self.expr(condition)) for condition in generator.ifs]
            out.append(ast.comprehension(target, items, ifs, is_async=0))
        return out


def _no_arguments() -> ast.arguments:
    return ast.arguments(
        posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]
    )
