"""The app's structured-data endpoints, declared once: both transports are generated from `ENDPOINTS`.

Each `Endpoint` names its request fields (type, default, the check that refuses a bad value) and the
`SearchService` method that answers it. From one entry come

* the **Gradio API endpoint** `/<name>_data` (`gradio_function`: a function with the fields as its typed, defaulted
  parameters, which `gr.api` turns into the API page's signature), and
* the **JSON route** `POST /api/v1/<name>` (`modeling.serving.http`: the body's fields checked against the same
  declaration, then the same call awaited on the service's threads).

Both run the same field checks and the same service method, so a value is refused with the same message whichever
way it comes, and the two transports cannot drift apart. Adding an endpoint: one `Endpoint` below and, when no
existing one fits, one `SearchService` method (docs/architecture.md, "Adding an endpoint").
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from modeling.retrieval.common.types import validate_text
from modeling.serving.service import ANY, SearchService, parse_item_id, parse_k, parse_weight

REQUIRED = inspect.Parameter.empty  # a field without a default must be sent
# The return annotation as the handlers wrote it under `from __future__ import annotations`: the string "dict",
# which the Gradio API page shows as "Any" (the real type would show as "dict(str, Any)").
RETURNS = "dict"


@dataclass(frozen=True)
class Field:
    """One request field: its name (the Gradio parameter and the JSON key), its type (the Gradio API page's type
    hint), its default (`REQUIRED`: none) and `check`, which returns the value the service gets or raises
    `QueryError` with a message for the user (None: the service method checks it, e.g. models and filters, which
    need the registry)."""

    name: str
    type: type
    default: object = REQUIRED
    check: Callable | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Endpoint:
    """A structured-data endpoint: `name` (the JSON route /api/v1/<name>; the Gradio API's /<name>_data), its
    `fields` in the Gradio API's argument order, the `SearchService` method called with the checked fields as
    keyword arguments (its `Answer.data` is the response), the description of the API page, and whether Gradio
    runs it through its queue."""

    name: str
    fields: tuple[Field, ...]
    method: str
    doc: str
    gradio_queue: bool = False

    @property
    def gradio_name(self) -> str:
        return f"{self.name}_data"

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.required)

    @property
    def optional(self) -> dict[str, object]:
        return {f.name: f.default for f in self.fields if not f.required}

    def arguments(self, values: Mapping) -> dict:
        """The service method's keyword arguments: every field (its default when absent), each through its check
        in field order."""
        out = {}
        for f in self.fields:
            value = values.get(f.name, f.default)
            out[f.name] = f.check(value) if f.check else value
        return out

    def call(self, service: SearchService, values: Mapping) -> dict:
        """The structured results of a request, on the caller's thread (the Gradio API), admitted as the JSON
        routes' are (`SearchService.call`)."""
        return service.call(self.method, **self.arguments(values)).data

    async def call_async(self, service: SearchService, values: Mapping) -> dict:
        """`call` for an asyncio server (the JSON routes): the same checks and the same service method, awaited
        (`SearchService.call_async`) without a thread per waiting request."""
        return (await service.call_async(self.method, **self.arguments(values))).data

    def signature(self) -> inspect.Signature:
        return inspect.Signature(
            [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default, annotation=f.type)
             for f in self.fields], return_annotation=RETURNS)


def gradio_function(endpoint: Endpoint, service: SearchService) -> Callable[..., dict]:
    """The function `gr.api` serves for `endpoint`: the fields as typed parameters with their defaults (what the API
    page shows), the endpoint's description as its docstring."""
    signature = endpoint.signature()

    def handler(*args, **kwargs) -> dict:
        bound = signature.bind(*args, **kwargs)
        return endpoint.call(service, bound.arguments)

    handler.__name__ = handler.__qualname__ = endpoint.gradio_name
    handler.__doc__ = endpoint.doc
    handler.__signature__ = signature
    handler.__annotations__ = {**{f.name: f.type for f in endpoint.fields}, "return": RETURNS}
    return handler


def _weight(what: str) -> Callable:
    return functools.partial(parse_weight, what=what)


# The filters every endpoint takes, and the fields they share.
FILTER_FIELDS = (Field("gender", str, ANY), Field("category", str, ANY), Field("colour", str, ANY))
K = Field("k", int, 10, parse_k)
MODEL = Field("model", str, "")
ITEM_ID = Field("item_id", str, check=parse_item_id)

ENDPOINTS: dict[str, Endpoint] = {e.name: e for e in [
    Endpoint("search_text", (Field("query", str, check=validate_text), K, MODEL, *FILTER_FIELDS), "text",
             "Text search returning only structured results: ids, titles, attributes, scores, VSC."),
    Endpoint("similar_items", (ITEM_ID, K, MODEL, *FILTER_FIELDS,
                               Field("rerank_weight", float, 0.0, _weight("re-ranking weight"))), "similar",
             "Products similar to a catalog item (by id), structured results only; rerank_weight > 0 = hybrid."),
    Endpoint("composed_item", (ITEM_ID, Field("text", str, check=validate_text), K, MODEL, *FILTER_FIELDS),
             "composed",
             "A catalog item + modification text, structured results only (the model's default composition).",
             gradio_queue=True),
]}

__all__ = ["ENDPOINTS", "REQUIRED", "Endpoint", "Field", "gradio_function"]
