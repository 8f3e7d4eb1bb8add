"""A formula over several sensors' readings (KEDA scalingModifiers), with per-sensor fallbacks."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from policies.common import ceil_, check_number
from pool.core.model import Decision, DomainView, Reading

BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
}
UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
#: name -> (function, fewest arguments, most arguments)
FUNCTIONS: dict[str, tuple[Callable[..., float], int, int]] = {
    "min": (min, 1, 64),
    "max": (max, 1, 64),
    "ceil": (math.ceil, 1, 1),
    "floor": (math.floor, 1, 1),
}
ALLOWED = "numbers, reading names, + - * / //, parentheses and min() max() ceil() floor()"
MAX_FORMULA = 2000


#: Deepest nesting of a formula's expression tree (``a + b + c ...`` nests one level per term).
MAX_DEPTH = 64


def _bounded_depth(root: ast.AST) -> None:
    """``ValueError`` when the tree nests deeper than :data:`MAX_DEPTH` (checked without recursion)."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"formula nests deeper than {MAX_DEPTH} levels (a long chain of + or *?): "
                             "use fewer terms, or parentheses to balance them")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


class Formula:
    """A parsed arithmetic expression; anything outside :data:`ALLOWED` is refused when parsed."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"formula must be a non-empty expression of {ALLOWED}, got {text!r}")
        if len(text) > MAX_FORMULA:
            raise ValueError(
                f"formula is {len(text)} characters long; at most {MAX_FORMULA} are allowed"
            )
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ValueError(f"formula {text!r} is not an expression: {exc.msg}") from None
        except (RecursionError, MemoryError):
            raise ValueError(f"formula nests deeper than {MAX_DEPTH} levels") from None
        self.text = text
        self.names: set[str] = set()
        _bounded_depth(tree.body)
        self._check(tree.body)
        self.tree = tree.body

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return
        if isinstance(node, ast.Name) and node.id not in FUNCTIONS and not node.id.startswith("_"):
            self.names.add(node.id)
            return
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            self._check(node.left)
            self._check(node.right)
            return
        if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
            self._check(node.operand)
            return
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FUNCTIONS
            and not node.keywords
            and not any(isinstance(a, ast.Starred) for a in node.args)
        ):
            _, fewest, most = FUNCTIONS[node.func.id]
            if not fewest <= len(node.args) <= most:
                raise ValueError(
                    f"formula {self.text!r}: {node.func.id}() takes {fewest}"
                    f"{'' if fewest == most else f' to {most}'} argument(s), got {len(node.args)}"
                )
            for arg in node.args:
                self._check(arg)
            return
        raise ValueError(
            f"formula {self.text!r}: {ast.unparse(node)!r} is not allowed; use only {ALLOWED}"
        )

    def evaluate(self, values: Mapping[str, float]) -> float:
        """The value for ``values`` (one per name); ``ZeroDivisionError`` propagates."""

        def ev(node: ast.AST) -> float:
            if isinstance(node, ast.Constant):
                assert isinstance(node.value, (int, float))  # ensured by _check
                return float(node.value)
            if isinstance(node, ast.Name):
                return values[node.id]
            if isinstance(node, ast.BinOp):
                return BINARY[type(node.op)](ev(node.left), ev(node.right))
            if isinstance(node, ast.UnaryOp):
                return UNARY[type(node.op)](ev(node.operand))
            assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            return float(FUNCTIONS[node.func.id][0](*(ev(a) for a in node.args)))

        return ev(self.tree)


@dataclass(frozen=True)
class Composite:
    """``target = ceil(formula(readings) / target)``: one number from several sensors.

    KEDA's ``advanced.scalingModifiers`` (KEDA docs, "Scaling Deployments": scaling modifiers):
    the formula names readings (the sensor names) and combines them with arithmetic; the result
    is a composite metric scaled like an ``AverageValue`` metric, one worker per ``target``.
    Reading names used in the formula must be Python identifiers.

    A reading that failed (or is missing) takes its ``fallback`` value, as KEDA's ``fallback``
    keeps a ScaledObject sizing through a broken scaler; a failed reading with no fallback
    holds the intended size. Because it decides on failures itself, the policy sets
    ``handles_errors = True``: the manager passes failing readings through to it instead of
    applying the domain's ``scaling.fallback``. A formula that divides by zero or gives a
    non-finite number holds too, and says so.

    The formula is parsed once, when the policy is built: only numbers, reading names,
    ``+ - * / //``, parentheses and ``min() max() ceil() floor()`` are allowed; attribute
    access, calls of anything else, subscripts, comparisons, strings and names starting with
    ``_`` are refused with an error naming the offending part.

    Parameters:
        formula: the expression, e.g. ``"celery + 2 * max(spark, 0)"``.
        target: composite value one worker is meant to absorb (> 0; default 1).
        fallback: reading name -> value used while that reading fails.
        activation_target: from zero workers, start one only when the formula exceeds this
            (KEDA ``activationTarget``; >= 0, default 0).
    """

    handles_errors: ClassVar[bool] = True

    formula: str = ""
    target: float = 1.0
    fallback: Mapping[str, float] = field(default_factory=dict)
    activation_target: float = 0.0
    parsed: Formula = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_number("target", self.target, above=0)
        check_number("activation_target", self.activation_target, at_least=0)
        if not isinstance(self.fallback, Mapping):
            raise ValueError(f"fallback must map reading names to numbers, got {self.fallback!r}")
        for name, value in self.fallback.items():
            check_number(f"fallback[{name!r}]", value)
        object.__setattr__(self, "parsed", Formula(self.formula))

    def decide(self, view: DomainView, readings: Mapping[str, Reading], now: float) -> Decision:
        values: dict[str, float] = {}
        notes: list[str] = []
        for name in sorted(self.parsed.names):
            reading = readings.get(name)
            if reading is not None and reading.ok and reading.value is not None:
                values[name] = reading.value
            elif name in self.fallback:
                values[name] = float(self.fallback[name])
                notes.append(f"{name} fallback {values[name]:g}")
            else:
                why = reading.error if reading is not None and reading.error else "no reading"
                return Decision(
                    view.intended, f"{name} failed ({why}), no fallback: hold {view.intended}"
                )
        try:
            value = self.parsed.evaluate(values)
        except (ZeroDivisionError, OverflowError, ValueError) as exc:
            return Decision(
                view.intended,
                f"formula failed ({type(exc).__name__}): hold {view.intended}",
                values,
            )
        if not math.isfinite(value):
            return Decision(view.intended, f"formula gave {value}: hold {view.intended}", values)
        inputs: dict[str, Any] = {**values, "composite": value}
        label = f"{self.formula} = {value:g}{' (' + ', '.join(notes) + ')' if notes else ''}"
        if view.actual == 0 and value <= self.activation_target:
            return Decision(
                0, f"{label} <= activation {self.activation_target:g}: stay at 0", inputs
            )
        target = ceil_(max(0.0, value) / self.target)
        return Decision(target, f"{label} / {self.target:g} -> {target}", inputs)
