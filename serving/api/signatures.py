"""Signature lookup and request validation, with TF Serving's rules and messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tensorflow.core.protobuf import meta_graph_pb2

from serving.errors import failed_precondition, invalid_argument

DEFAULT_SIGNATURE = "serving_default"

SignatureDef = meta_graph_pb2.SignatureDef


def signature_or_default(name: str) -> str:
    return name or DEFAULT_SIGNATURE


def find_signature(signatures: Mapping[str, SignatureDef], name: str) -> SignatureDef:
    """Predict's lookup: an unknown key is FAILED_PRECONDITION, as in predict_util.cc."""
    key = signature_or_default(name)
    try:
        return signatures[key]
    except KeyError:
        raise failed_precondition(f'Serving signature key "{key}" not found.') from None


def _braces(names: Sequence[str] | set[str]) -> str:
    return "{" + ",".join(sorted(names)) + "}"


def check_inputs(signature: SignatureDef, sent: Sequence[str]) -> None:
    """Every required input present, nothing unknown; inputs with defaults may be omitted."""
    expected = set(signature.inputs)
    sent_set = set(sent)
    required = expected - set(signature.defaults)
    extra = sent_set - expected
    missing = required - sent_set
    if not extra and not missing:
        return
    if len(sent_set) != len(expected) or extra:
        raise invalid_argument(
            f"input size does not match signature: {len(sent_set)}!={len(expected)} "
            f"len({_braces(sent_set)}) != len({_braces(expected)}). Sent extra: "
            f"{_braces(extra)}. Missing but required: {_braces(missing)}."
        )
    alias = sorted(missing)[0]
    raise invalid_argument(
        f"Signature input alias: {alias}(feed name: {signature.inputs[alias].name}) not found "
        f"in request and no default value provided. Inputs expected to be in the request "
        f"{_braces(sent_set)}, or default input alias set: {_braces(set(signature.defaults))}"
    )


def output_aliases(signature: SignatureDef, output_filter: Sequence[str]) -> list[str]:
    """The outputs to fetch: the filter (validated) or every output of the signature."""
    if not output_filter:
        return list(signature.outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {_braces(set(signature.outputs))}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)
