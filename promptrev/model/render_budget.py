"""Render budgets: no template can hold a worker or fill its memory.

Jinja2's sandbox stops a template from reaching Python internals, but not from working
forever or building a string of gigabytes (``{{ 'a' * 10**8 }}``, ``|center(10**8)``,
``'{:>100000000}'.format(1)``, loops nested a million deep). Every render runs under a
:class:`Budget` made from :class:`RenderLimits`:

- **time**: checked at every loop iteration, call, filter, operator and output;
- **size**: a value or the whole output longer than ``max_chars`` characters is refused.
  Operations whose result size is known before they run (repeating a string, padding to
  a width, ``**``, printf and ``str.format`` widths, ``replace``) are refused *before*
  they allocate, so a single operation cannot allocate far past the limit either;
- **iterations**: loop iterations and items drawn by filters such as ``map`` or ``join``;
- **depth**: nested calls (macros calling macros, recursive loops).

The checks sit where Jinja2 lets a sandbox intercept (``call``, ``call_binop``, the str
formatter) plus two places instrumented in the parsed template: the iterable of every
``for`` loop and every ``~`` concatenation. A refusal is :class:`RenderLimitExceeded`, a
422 naming the limit and how to raise it.
"""

from __future__ import annotations

import contextvars
import functools
import re
import string
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

from promptrev.config import Settings
from promptrev.errors import RenderLimitExceeded

# Integers longer than this many bits are refused (about 30,000 decimal digits).
MAX_INT_BITS = 100_000
_WIDTHS = re.compile(r"(\d+)")
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


@dataclass(frozen=True)
class RenderLimits:
    """How much one render may use. The defaults suit a server; all are settings."""

    seconds: float = 1.0  # wall time of one render
    max_chars: int = 2_000_000  # length of any one value and of the whole output
    max_iterations: int = 1_000_000  # loop iterations and items drawn by filters
    max_depth: int = 50  # nested calls: macros calling macros, recursive loops

    @classmethod
    def from_settings(cls, settings: Settings) -> RenderLimits:
        """The limits the operator's settings ask for."""
        return cls(settings.render_seconds, settings.render_max_chars,
                   settings.render_max_iterations, settings.render_max_depth)


_default = RenderLimits()
_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("render_budget",
                                                                         default=None)


def configure(limits: RenderLimits) -> None:
    """Make ``limits`` the default of every render in this process (the edges call this)."""
    global _default
    _default = limits


def default_limits() -> RenderLimits:
    """The limits a render uses when it is given none."""
    return _default


class Budget:
    """What one render has used so far; refuses when a limit is crossed."""

    __slots__ = ("limits", "deadline", "iterations", "depth", "output")

    def __init__(self, limits: RenderLimits):
        self.limits = limits
        self.deadline = time.monotonic() + limits.seconds
        self.iterations = 0
        self.depth = 0
        self.output = 0

    # -- time and counts --------------------------------------------------------------
    def check_time(self) -> None:
        """Refuse once the render has run past its time."""
        if time.monotonic() > self.deadline:
            raise _exceeded("time", f"the render ran longer than {self.limits.seconds:g} s",
                            self.limits.seconds, "PROMPTREV_RENDER_SECONDS")

    def tick(self) -> None:
        """Count one loop iteration (or one item drawn by a filter)."""
        self.iterations += 1
        if self.iterations > self.limits.max_iterations:
            raise _exceeded("iterations", "the template iterated more than "
                            f"{self.limits.max_iterations:,} times",
                            self.limits.max_iterations, "PROMPTREV_RENDER_MAX_ITERATIONS")
        if not self.iterations & 7:
            self.check_time()

    def add_output(self, n: int) -> None:
        """Count ``n`` characters of output."""
        self.output += n
        if self.output > self.limits.max_chars:
            raise self._too_long("the rendered output")

    # -- sizes ------------------------------------------------------------------------
    def check_size(self, value: Any) -> Any:
        """Refuse a value longer than ``max_chars`` (or an integer too large); return it."""
        if isinstance(value, int):
            if value.bit_length() > MAX_INT_BITS:
                raise _exceeded("size", f"a number has more than {MAX_INT_BITS:,} bits",
                                MAX_INT_BITS, None)
        elif isinstance(value, (str, bytes)):
            if len(value) > self.limits.max_chars:
                raise self._too_long("a value")
        elif isinstance(value, (list, tuple, dict, set, frozenset)):
            self.expect_items(len(value))
            self.expect(weight(value, self.limits.max_chars), "a value")
        return value

    def expect_items(self, n: float) -> None:
        """Refuse a collection of more than a tenth of ``max_iterations`` items.

        Sorting or mapping a collection runs without the loop checks, so its size is what
        keeps one filter from running long past the time limit.
        """
        most = max(1, self.limits.max_iterations // 10)
        if n > most:
            raise _exceeded("size", f"a list would have more than {most:,} items",
                            self.limits.max_iterations, "PROMPTREV_RENDER_MAX_ITERATIONS")

    def expect(self, size: float, what: str) -> None:
        """Refuse before an operation that would make something of ``size`` elements."""
        if size > self.limits.max_chars:
            raise self._too_long(what)

    def _too_long(self, what: str) -> RenderLimitExceeded:
        return _exceeded("size", f"{what} would be longer than {self.limits.max_chars:,} "
                         "characters", self.limits.max_chars, "PROMPTREV_RENDER_MAX_CHARS")

    # -- guarded iteration --------------------------------------------------------------
    def iterate(self, iterable: Iterable) -> Iterator:
        """Yield from ``iterable``, counting every item against the budget."""
        for item in iterable:
            self.tick()
            yield item


def weight(value: Any, limit: int) -> int:
    """Characters and items in ``value``, counted through nested lists and mappings.

    A list of 100,000 references to one long string is cheap to build but not to compare,
    sort or print; its weight says what such operations cost. Each distinct container is
    counted once per place it appears (``[s] * n`` weighs n times ``s``). Stops counting
    once past ``limit``.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            total += 1
        if total > limit:
            return total
    return total


def _exceeded(limit: str, what: str, value: float, setting: str | None) -> RenderLimitExceeded:
    raise_it = f" (raise it with {setting})" if setting else ""
    return RenderLimitExceeded(f"render limit reached: {what}{raise_it}",
                               details={"limit": limit, "value": value})


def run(limits: RenderLimits | None, render: Callable[[Budget], Any]) -> Any:
    """Call ``render(budget)`` with a fresh budget installed for this render."""
    budget = Budget(limits or _default)
    token = _current.set(budget)
    try:
        return render(budget)
    except RecursionError:
        raise _exceeded("depth", "the template recursed too deeply", budget.limits.max_depth,
                        "PROMPTREV_RENDER_MAX_DEPTH") from None
    except MemoryError:
        raise _exceeded("size", "the render ran out of memory", budget.limits.max_chars,
                        "PROMPTREV_RENDER_MAX_CHARS") from None
    finally:
        _current.reset(token)


def current() -> Budget | None:
    """The budget of the render running in this context, if any."""
    return _current.get()


# -- size estimates made before an operation runs ---------------------------------------
def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _printf_size(fmt: str, args: Any) -> float:
    """An upper bound on the widths a printf-style format asks for."""
    size = float(len(fmt))
    star_args = [a for a in (args if isinstance(args, tuple) else (args,)) if _as_int(a)]
    for match in _PRINTF_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*":
                size += max((abs(_as_int(a)) for a in star_args), default=0)
            elif part:
                size += int(part)
    return size


def _format_size(fmt: str, args: tuple, kwargs: Mapping) -> float:
    """An upper bound on the widths a ``str.format`` string asks for."""
    size = float(len(fmt))
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return size  # str.format will refuse it itself
    nested = False
    for _literal, _name, spec, _conv in fields:
        if spec:
            nested = nested or "{" in spec
            size += sum(int(w) for w in _WIDTHS.findall(spec) if len(w) < 20) or 0
            if any(len(w) >= 20 for w in _WIDTHS.findall(spec)):
                return float("inf")
    if nested:  # widths taken from the arguments: '{:{}}'.format(1, 10**8)
        size += sum(abs(_as_int(a)) for a in (*args, *kwargs.values()))
    return size


def _replace_size(s: str, old: Any, new: Any, count: Any = -1) -> float:
    if not isinstance(s, str) or not isinstance(old, str) or not isinstance(new, str):
        return 0
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(0, len(new) - len(old))


def _lines(s: Any) -> int:
    return (s.count("\n") + 1) if isinstance(s, str) else 1


def _str_method_size(name: str, s: str, args: tuple, kwargs: Mapping) -> float:
    """Output size of the str methods that can grow a string, before they run."""
    if name in ("center", "ljust", "rjust", "zfill"):
        return _as_int(args[0] if args else kwargs.get("width"))
    if name == "expandtabs":
        return len(s) + s.count("\t") * _as_int(args[0] if args else kwargs.get("tabsize", 8))
    if name == "replace":
        return _replace_size(s, *args[:3])
    return 0


def _filter_size(name: str, args: tuple, kwargs: Mapping) -> float:
    """Output size of the filters that can grow a string, before they run."""
    value = args[0] if args else ""
    if name == "center":
        return _as_int(args[1] if len(args) > 1 else kwargs.get("width", 80))
    if name == "indent":
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        per_line = len(width) if isinstance(width, str) else _as_int(width)
        return len(str(value)) + per_line * _lines(value)
    if name == "format":
        return _printf_size(str(value), tuple(args[1:]) or tuple(kwargs.values()))
    if name == "replace":
        return _replace_size(*args[:4])
    if name == "wordwrap":
        width = _as_int(args[1] if len(args) > 1 else kwargs.get("width", 79)) or 1
        wrap = kwargs.get("wrapstring") or (args[4] if len(args) > 4 else None) or "\n"
        return len(str(value)) * (1 + len(str(wrap)) / width)
    return 0


# Filters written in Python that walk their input word by word: their input is capped so
# that one call cannot run long past the time limit.
SLOW_FILTER_INPUT = 200_000
_SLOW_FILTERS = frozenset({"wordwrap", "urlize", "truncate", "center", "indent"})


def _filter_count(name: str, args: tuple, kwargs: Mapping) -> int:
    """Iterations a filter makes of its own accord (not bounded by its input)."""
    if name == "slice":
        return _as_int(args[1] if len(args) > 1 else kwargs.get("slices"))
    if name == "batch":  # a batch is padded to its length with fill_with
        return _as_int(args[1] if len(args) > 1 else kwargs.get("linecount"))
    return 0


def _lorem_size(args: tuple, kwargs: Mapping) -> float:
    n = _as_int(args[0] if args else kwargs.get("n", 5))
    most = _as_int(args[3] if len(args) > 3 else kwargs.get("max", 100))
    return n * most * 16  # words of up to ~15 letters and a space


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every render held to its :class:`Budget`."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.filters = {name: _budgeted_filter(name, f) for name, f in self.filters.items()}

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        """Compile with every loop and concatenation instrumented (parsing alone, which
        validation does, is left as Jinja2 makes it)."""
        _instrument(source)
        return super()._generate(source, name, filename, defer_init=defer_init)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Run an operator that can grow a value, refusing growth past the budget."""
        budget = _current.get()
        if budget is not None:
            budget.check_time()
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, str) and _as_int(n) > 0:
                        budget.expect(len(seq) * _as_int(n), "a repeated value")
                    elif isinstance(seq, (list, tuple)) and _as_int(n) > 0:
                        budget.expect_items(len(seq) * _as_int(n))
                        budget.expect(weight(seq, budget.limits.max_chars) * _as_int(n),
                                      "a repeated value")
            elif operator == "**" and _as_int(left) and _as_int(right) > 0:
                if abs(left) > 1 and abs(left).bit_length() * right > MAX_INT_BITS:
                    raise _exceeded("size", f"a number would have more than {MAX_INT_BITS:,}"
                                    " bits", MAX_INT_BITS, None)
            elif operator == "%" and isinstance(left, str):
                budget.expect(_printf_size(left, right), "a formatted value")
        result = self.binop_table[operator](left, right)
        return budget.check_size(result) if budget is not None else result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Call from sandboxed code: count depth and time, size what can grow."""
        budget = _current.get()
        if budget is None:
            return super().call(__context, __obj, *args, **kwargs)
        budget.check_time()
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(
                getattr(__obj, "__self__", None), str):
            name = __obj.__name__
            if name == "join" and args:
                args = (list(budget.iterate(args[0])),)
                budget.expect(sum(len(x) for x in args[0] if isinstance(x, str)) +
                              len(__obj.__self__) * len(args[0]), "a joined value")
            else:
                budget.expect(_str_method_size(name, __obj.__self__, args, kwargs),
                              f"the result of str.{name}")
        elif __obj is generate_lorem_ipsum:
            budget.expect(_lorem_size(args, kwargs), "lipsum()")
        elif isinstance(__obj, LoopContext) and args:  # a recursive loop: loop(children)
            args = (budget.iterate(args[0]), *args[1:])
        budget.depth += 1
        try:
            if budget.depth > budget.limits.max_depth:
                raise _exceeded("depth", f"calls nested more than {budget.limits.max_depth} "
                                "deep (a macro that calls itself?)", budget.limits.max_depth,
                                "PROMPTREV_RENDER_MAX_DEPTH")
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        return budget.check_size(result)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` as the sandbox wraps it, refused when its widths are too large."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            budget = _current.get()
            if budget is not None:
                mapping = args[0] if is_map and args and isinstance(args[0], Mapping) else kwargs
                budget.expect(_format_size(fmt, () if is_map else args, mapping),
                              "a formatted value")
            result = wrapped(*args, **kwargs)
            return budget.check_size(result) if budget is not None else result

        return functools.update_wrapper(checked, wrapped)

    # Referenced from instrumented templates as environment attributes.
    @staticmethod
    def budget_iter(iterable: Any) -> Any:
        """The iterable of a ``for`` loop, counted against the budget."""
        budget = _current.get()
        return iterable if budget is None else budget.iterate(iterable)

    @staticmethod
    def budget_size(value: Any) -> Any:
        """A concatenation's result, refused if it is too long."""
        budget = _current.get()
        return budget.check_size(value) if budget is not None else value


def _instrument(tree: nodes.Template) -> None:
    """Route every loop's iterable and every ``~`` result through the budget."""
    for parent in [tree, *tree.find_all(nodes.Node)]:
        for field_name in parent.fields:
            value = getattr(parent, field_name, None)
            if isinstance(value, nodes.Concat):
                setattr(parent, field_name, _sized(value))
            elif isinstance(value, list):
                value[:] = [_sized(v) if isinstance(v, nodes.Concat) else v for v in value]
    for loop in list(tree.find_all(nodes.For)):
        loop.iter = nodes.Call(nodes.EnvironmentAttribute("budget_iter"), [loop.iter], [],
                               None, None, lineno=loop.lineno)


def _sized(node: nodes.Concat) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute("budget_size"), [node], [], None, None,
                      lineno=node.lineno)


def _budgeted_filter(name: str, func: Callable) -> Callable:
    """``func`` (a Jinja2 filter) held to the render's budget."""
    skip = 0
    pass_arg = getattr(func, "jinja_pass_arg", None)
    if pass_arg is not None:
        skip = 1  # the context / eval context / environment comes first

    @functools.wraps(func)
    def budgeted(*args: Any, **kwargs: Any) -> Any:
        budget = _current.get()
        if budget is None:
            return func(*args, **kwargs)
        budget.check_time()
        own = args[skip:]
        budget.expect(_filter_size(name, own, kwargs), f"the result of |{name}")
        if name in _SLOW_FILTERS and own and isinstance(own[0], str) and \
                len(own[0]) > SLOW_FILTER_INPUT:
            raise _exceeded("size", f"|{name} takes at most {SLOW_FILTER_INPUT:,} characters",
                            SLOW_FILTER_INPUT, None)
        count = _filter_count(name, own, kwargs)
        if count > budget.limits.max_iterations:
            raise _exceeded("iterations", f"|{name} would iterate {count:,} times",
                            budget.limits.max_iterations, "PROMPTREV_RENDER_MAX_ITERATIONS")
        if name == "sum" and not isinstance(
                kwargs.get("start", own[2] if len(own) > 2 else 0), (int, float)):
            raise RenderLimitExceeded("render limit reached: |sum adds numbers (summing lists "
                                      "or strings takes quadratic time): use |join or a loop",
                                      details={"limit": "size", "value": 0})
        if own and isinstance(own[0], Iterator):  # a lazy sequence (map, select, range…)
            args = (*args[:skip], budget.iterate(own[0]), *own[1:])
        if name == "join":
            return _join(budget, func, args, kwargs, skip)
        return budget.check_size(func(*args, **kwargs))

    return budgeted


def _join(budget: Budget, func: Callable, args: tuple, kwargs: dict, skip: int) -> str:
    """``|join``, refused as soon as the joined length passes the budget."""
    own = args[skip:]
    if own and not isinstance(own[0], (str, Mapping)):
        items = []
        total = 0
        for item in budget.iterate(own[0]):
            total += len(item) if isinstance(item, (str, Sized)) else 1
            budget.expect(total, "the result of |join")
            items.append(item)
        separator = own[1] if len(own) > 1 else kwargs.get("d", "")
        budget.expect(total + len(str(separator)) * len(items), "the result of |join")
        args = (*args[:skip], items, *own[1:])
    return budget.check_size(func(*args, **kwargs))
