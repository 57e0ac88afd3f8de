"""Signature lookup and request validation, with TF Serving's rules and messages.

No TensorFlow here: front ends validate requests with these rules too. A loaded SavedModel's
signatures are TensorFlow's own ``SignatureDef`` messages, a front-end process holds
``serving.protos``' wire-identical ones; everything here only reads their fields, so both work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from serving import protos
from serving.errors import failed_precondition, invalid_argument

DEFAULT_SIGNATURE = "serving_default"

# The annotation for either class above (they share every field); build new ones with the
# class of the signatures at hand (``type(signature)()``), since messages of the two
# descriptor pools cannot be copied into each other.
SignatureDef = protos.SignatureDef


class SignatureInfo:
    """The parts of a SignatureDef every request reads, as plain dicts.

    Reading a protobuf map costs about a microsecond per key; a request touched the inputs and
    outputs maps half a dozen times (decode, validation, batch queue key, feed names), which
    showed up as ~8 % of the REST predict path in a profile under load.
    """

    __slots__ = ("defaults", "input_dtypes", "input_names", "output_names")

    def __init__(self, signature: SignatureDef) -> None:
        aliases = sorted(signature.inputs)
        self.input_names = {alias: signature.inputs[alias].name for alias in aliases}
        self.input_dtypes = {alias: signature.inputs[alias].dtype for alias in aliases}
        self.output_names = {alias: info.name for alias, info in signature.outputs.items()}
        self.defaults = frozenset(signature.defaults)


# id -> (signature, info). Keeping the signature alive keeps its id from being reused; the
# cache is dropped whole when it grows past what any set of loaded models needs.
_INFO_CACHE: dict[int, tuple[SignatureDef, SignatureInfo]] = {}
_INFO_CACHE_LIMIT = 4096


def signature_info(signature: SignatureDef) -> SignatureInfo:
    entry = _INFO_CACHE.get(id(signature))
    if entry is not None and entry[0] is signature:
        return entry[1]
    info = SignatureInfo(signature)
    if len(_INFO_CACHE) >= _INFO_CACHE_LIMIT:
        _INFO_CACHE.clear()
    _INFO_CACHE[id(signature)] = (signature, info)
    return info


def signature_or_default(name: str) -> str:
    return name or DEFAULT_SIGNATURE


def find_signature(signatures: Mapping[str, SignatureDef], name: str) -> SignatureDef:
    """Predict's lookup: an unknown key is FAILED_PRECONDITION, as in predict_util.cc."""
    key = signature_or_default(name)
    try:
        return signatures[key]
    except KeyError:
        raise failed_precondition(f'Serving signature key "{key}" not found.') from None


def find_signature_rest(signatures: Mapping[str, SignatureDef], name: str) -> SignatureDef:
    """REST's predict reports an unknown signature in its own words (json_tensor.cc)."""
    key = signature_or_default(name)
    if key not in signatures:
        raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
    return signatures[key]


def _braces(names: Iterable[str]) -> str:
    return "{" + ",".join(sorted(names)) + "}"


def check_inputs(signature: SignatureDef, sent: Sequence[str]) -> None:
    """Every required input present, nothing unknown; inputs with defaults may be omitted."""
    info = signature_info(signature)
    expected = info.input_names.keys()
    sent_set = set(sent)
    required = expected - info.defaults
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
        f"Signature input alias: {alias}(feed name: {info.input_names[alias]}) not found "
        f"in request and no default value provided. Inputs expected to be in the request "
        f"{_braces(sent_set)}, or default input alias set: {_braces(info.defaults)}"
    )


def output_aliases(signature: SignatureDef, output_filter: Sequence[str]) -> list[str]:
    """The outputs to fetch: the filter (validated) or every output of the signature."""
    outputs = signature_info(signature).output_names
    if not output_filter:
        return list(outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {_braces(outputs.keys())}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)
